#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "conn.h"
#include "log.h"
#include "request.h"
#include "spawn.h"

static void cmd_out_cb(struct ev_loop *loop, ev_io *w, int revents);
static void cmd_in_cb(struct ev_loop *loop, ev_io *w, int revents);
static void cmd_child_cb(struct ev_loop *loop, ev_child *w, int revents);
static void cmd_drain_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void cmd_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* --- the table ----------------------------------------------------------- */

static struct cmd *cmd_find(struct agent *a, uint64_t id)
{
    for (struct cmd *c = a->cmds; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static int cmd_lookup(struct agent *a, uint64_t id, struct cmd **out, struct sa_err *e)
{
    *out = cmd_find(a, id);
    if (!*out)
        return err_set(e, 0, "not_found", "no command %llu", (unsigned long long)id);
    return 0;
}

static void cmd_link(struct agent *a, struct cmd *c)
{
    c->next = a->cmds;
    if (a->cmds)
        a->cmds->prev = c;
    else
        a->cmds_tail = c;
    a->cmds = c;
}

static void cmd_unlink(struct agent *a, struct cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->cmds = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->cmds_tail = c->prev;
}

static void cmd_free(struct cmd *c)
{
    buf_free(&c->in_buf);
    while (c->acks) {
        struct stdin_ack *k = c->acks;
        c->acks = k->next;
        free(k);
    }
    free(c);
}

/* Forget the oldest exited commands beyond CMD_EXITED_KEEP. */
static void cmd_evict(struct agent *a)
{
    for (struct cmd *c = a->cmds_tail; c && a->ncmds_exited > CMD_EXITED_KEEP;) {
        struct cmd *prev = c->prev;
        if (c->done) {
            cmd_unlink(a, c);
            cmd_free(c);
            a->ncmds_exited--;
        }
        c = prev;
    }
}

/* --- preparing a spawn --------------------------------------------------- */

static char *zone_printf(msgpack_zone *z, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *zone_printf(msgpack_zone *z, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = msgpack_zone_malloc(z, (size_t)n + 1);
    if (!s)
        abort();
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static bool env_key_eq(const char *a, const char *b)
{
    while (*a && *a != '=' && *a == *b)
        a++, b++;
    return (*a == '=' || *a == '\0') && (*b == '=' || *b == '\0');
}

/* The default environment, then the request's env on top (its keys win). */
static char **cmd_build_env(struct agent *a, const struct wire_exec_req *x,
                            const struct ident *id, const char **path)
{
    msgpack_zone *z = &a->zone;
    size_t cap = 6 + x->envc + 1, n = 0;
    char **env = msgpack_zone_malloc(z, cap * sizeof(char *));
    if (!env)
        abort();
    if (!x->clear_env) {
        env[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        env[n++] = zone_printf(z, "HOME=%s", id->home);
        env[n++] = zone_printf(z, "USER=%s", id->name);
        env[n++] = zone_printf(z, "LOGNAME=%s", id->name);
        env[n++] = zone_printf(z, "SHELL=%s", id->shell);
        env[n++] = "LANG=C.UTF-8";
    }
    for (size_t i = 0; i < x->envc; i++) {
        size_t j = 0;
        while (j < n && !env_key_eq(env[j], x->env[i]))
            j++;
        env[j] = x->env[i];
        if (j == n)
            n++;
    }
    env[n] = NULL;
    *path = NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], "PATH=", 5) == 0)
            *path = env[i] + 5;
    return env;
}

/* Which identity runs the command; NULL in *run means "stay as we are". */
static int cmd_identity(struct agent *a, const struct wire_exec_req *x, const struct ident **env_id,
                        const struct ident **run, struct sa_err *e)
{
    if (a->dev) {
        if (x->sudo || (x->user && strcmp(x->user, a->default_user) != 0)) {
            err_set(e, EPERM, NULL, "dev mode: the agent is not root and runs every command as "
                                    "itself (%s)", a->default_user);
            e->stage = "user";
            return -1;
        }
        *run = NULL;
        return ident_lookup_uid(&a->idents, getuid(), env_id, e);
    }
    const char *name = x->sudo ? "root" : x->user ? x->user : a->cfg.user;
    if (ident_lookup(&a->idents, name, run, e) < 0) {
        e->stage = "user";
        return -1;
    }
    *env_id = *run;
    return 0;
}

static const char *cmd_cwd(struct agent *a, const struct wire_exec_req *x)
{
    if (!x->cwd)
        return a->workdir;
    if (x->cwd[0] == '/')
        return x->cwd;
    return zone_printf(&a->zone, "%s/%s", a->workdir, x->cwd);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* Pipes: [0,1] stdout r/w, [2,3] stderr r/w, [4,5] stdin r/w (or /dev/null in 4).
 * The agent's ends are non-blocking; the child's ends stay blocking. */
static int cmd_pipes(int p[6], bool stdin_null, struct sa_err *e)
{
    for (int i = 0; i < 6; i++)
        p[i] = -1;
    if (pipe2(p, O_CLOEXEC) < 0 || pipe2(p + 2, O_CLOEXEC) < 0)
        goto fail;
    if (stdin_null) {
        p[4] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (p[4] < 0)
            goto fail;
    } else if (pipe2(p + 4, O_CLOEXEC) < 0 || set_nonblock(p[5]) < 0) {
        goto fail;
    }
    if (set_nonblock(p[0]) < 0 || set_nonblock(p[2]) < 0)
        goto fail;
    return 0;
fail:
    err_sys(e, errno, "creating pipes");
    close_fds(p, 6);
    return -1;
}

static void cmd_reply_started(struct conn *conn, uint64_t req_id, const struct cmd *c,
                              const char *cwd, const char *user)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(conn), 7);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    wire_kv_uint(&w, "cmd", c->id);
    wire_kv_uint(&w, "pid", (uint64_t)c->pid);
    wire_kv_uint(&w, "started_ms", c->started_ms);
    wire_kv_str(&w, "cwd", cwd);
    wire_kv_str(&w, "user", user);
    wire_end(&w);
}

static struct cmd *cmd_new(struct agent *a, pid_t pid, const int p[6])
{
    struct cmd *c = xcalloc(1, sizeof *c);
    c->a = a;
    c->id = ++a->next_cmd_id;
    c->pid = pid;
    c->started_ms = agent_now_ms();
    c->t0 = ev_now(a->loop);
    c->out_fd[0] = p[0];
    c->out_fd[1] = p[2];
    c->in_fd = p[5];
    buf_init(&c->in_buf);
    c->acks_tail = &c->acks;
    for (int s = 0; s < 2; s++) {
        ev_io_init(&c->out_w[s], cmd_out_cb, c->out_fd[s], EV_READ);
        c->out_w[s].data = c;
        ev_io_start(a->loop, &c->out_w[s]);
    }
    if (c->in_fd >= 0) {
        ev_io_init(&c->in_w, cmd_in_cb, c->in_fd, EV_WRITE);
        c->in_w.data = c;
    }
    ev_child_init(&c->child_w, cmd_child_cb, pid, 0);
    c->child_w.data = c;
    ev_child_start(a->loop, &c->child_w);
    ev_init(&c->drain_w, cmd_drain_cb);
    c->drain_w.data = c;
    ev_init(&c->timeout_w, cmd_timeout_cb);
    c->timeout_w.data = c;
    cmd_link(a, c);
    a->ncmds_running++;
    return c;
}

int cmd_exec(struct conn *conn, uint64_t req_id, const struct wire_exec_req *x, struct sa_err *e)
{
    struct agent *a = conn->a;
    const struct ident *env_id, *run;
    if (cmd_identity(a, x, &env_id, &run, e) < 0)
        return -1;
    const char *user = env_id->name;
    const char *path;
    char **envp = cmd_build_env(a, x, env_id, &path);
    const char *cwd = cmd_cwd(a, x);

    int p[6];
    if (cmd_pipes(p, x->stdin_null, e) < 0)
        return -1;
    struct spawn_req sr = {
        .argv = x->argv, .envp = envp, .cwd = cwd, .path = path, .id = run,
        .fd_in = p[4], .fd_out = p[1], .fd_err = p[3],
        .stack = a->spawn_stack, .stack_size = a->spawn_stack_size,
    };
    pid_t pid;
    enum spawn_stage stage;
    int r = spawn_start(&sr, &pid, &stage, e);
    close(p[1]);
    close(p[3]);
    close(p[4]);
    p[1] = p[3] = p[4] = -1;
    if (r < 0) {
        close_fds(p, 6);
        e->stage = spawn_stage_name(stage);
        return -1;
    }

    struct cmd *c = cmd_new(a, pid, p);
    log_debug("cmd %llu: started %s as pid %d (%s)", (unsigned long long)c->id, x->argv[0],
              (int)pid, user);
    cmd_reply_started(conn, req_id, c, cwd, user);
    if (!x->detached) {
        c->conn = conn;
        c->req_id = req_id;
        conn->streams++;
    }
    c->kill_on_disconnect = x->kill_on_disconnect;
    if (x->timeout_ms) {
        ev_timer_set(&c->timeout_w, (ev_tstamp)x->timeout_ms / 1000., 0.);
        ev_timer_start(a->loop, &c->timeout_w);
    }
    return 0;
}

/* --- output --------------------------------------------------------------- */

static void cmd_pause(struct cmd *c, bool pause)
{
    c->paused = pause;
    for (int s = 0; s < 2; s++) {
        if (c->out_fd[s] < 0)
            continue;
        if (pause)
            ev_io_stop(c->a->loop, &c->out_w[s]);
        else
            ev_io_start(c->a->loop, &c->out_w[s]);
    }
}

static void cmd_emit(struct cmd *c, int s, const uint8_t *p, size_t n)
{
    if (c->conn)
        wire_msg_output(conn_out(c->conn), c->req_id, c->id, s ? WIRE_STDERR : WIRE_STDOUT,
                        c->nbytes[s], c->pos, p, n);
    else
        c->dropped += n;
    c->nbytes[s] += n;
    c->pos += n;
}

static void cmd_close_out(struct cmd *c, int s)
{
    ev_io_stop(c->a->loop, &c->out_w[s]);
    close(c->out_fd[s]);
    c->out_fd[s] = -1;
}

static size_t cmd_chunk(const struct agent *a)
{
    size_t room = a->cfg.max_frame - 256;   /* the output event's own fields */
    return room < CMD_READ_CHUNK ? room : CMD_READ_CHUNK;
}

/* Read up to `reads` chunks from stream s. Returns 1 at EOF, 0 otherwise. */
static int cmd_read(struct cmd *c, int s, int reads)
{
    struct agent *a = c->a;
    size_t chunk = cmd_chunk(a);
    for (int i = 0; i < reads; i++) {
        if (c->conn && conn_congested(c->conn)) {
            cmd_pause(c, true);
            return 0;
        }
        ssize_t n = read(c->out_fd[s], a->scratch, chunk);
        if (n > 0) {
            cmd_emit(c, s, a->scratch, (size_t)n);
            if ((size_t)n < chunk)
                return 0;   /* the pipe is empty for now */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        cmd_close_out(c, s);
        return 1;
    }
    return 0;
}

static void cmd_finish(struct cmd *c);

static void cmd_maybe_finish(struct cmd *c)
{
    if (c->reaped && c->out_fd[0] < 0 && c->out_fd[1] < 0)
        cmd_finish(c);
}

static void cmd_out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cmd *c = w->data;
    int s = w == &c->out_w[1];
    struct conn *conn = c->conn;
    int eof = cmd_read(c, s, CMD_READS_PER_CB);
    if (conn)
        conn_kick(conn);
    if (eof)
        cmd_maybe_finish(c);
}

void cmd_conn_drained(struct agent *a, struct conn *conn)
{
    for (struct cmd *c = a->cmds; c; c = c->next)
        if (c->conn == conn && c->paused)
            cmd_pause(c, false);
}

/* --- stdin ---------------------------------------------------------------- */

static void cmd_ack_reply(struct stdin_ack *k, const char *code, const char *msg)
{
    if (!k->conn)
        return;
    if (!code) {
        req_reply_ok(k->conn, k->req_id);
    } else {
        struct sa_err e;
        err_set(&e, 0, code, "%s", msg);
        wire_msg_error(conn_out(k->conn), true, k->req_id, &e);
    }
    conn_kick(k->conn);
}

/* Answer every waiting stdin request whose bytes are written, or all of them
 * with an error when code is set. */
static void cmd_acks_settle(struct cmd *c, const char *code, const char *msg)
{
    while (c->acks && (code || c->acks->upto <= c->in_written)) {
        struct stdin_ack *k = c->acks;
        c->acks = k->next;
        cmd_ack_reply(k, code, msg);
        free(k);
    }
    if (!c->acks)
        c->acks_tail = &c->acks;
}

static void cmd_stdin_close(struct cmd *c)
{
    if (c->in_fd < 0)
        return;
    ev_io_stop(c->a->loop, &c->in_w);
    close(c->in_fd);
    c->in_fd = -1;
}

/* Write queued stdin; close when asked to and everything is written. */
static void cmd_stdin_flush(struct cmd *c)
{
    while (buf_size(&c->in_buf) > 0) {
        ssize_t n = write(c->in_fd, buf_ptr(&c->in_buf), buf_size(&c->in_buf));
        if (n > 0) {
            buf_consume(&c->in_buf, (size_t)n);
            c->in_written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(c->a->loop, &c->in_w);
            cmd_acks_settle(c, NULL, NULL);
            return;
        }
        /* EPIPE: the command closed its stdin; what is queued cannot arrive */
        buf_reset(&c->in_buf, 0);
        cmd_stdin_close(c);
        cmd_acks_settle(c, "EPIPE", "the command closed its stdin");
        return;
    }
    ev_io_stop(c->a->loop, &c->in_w);
    buf_reset(&c->in_buf, 64u << 10);
    if (c->in_eof)
        cmd_stdin_close(c);
    cmd_acks_settle(c, NULL, NULL);
}

static void cmd_in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    cmd_stdin_flush(w->data);
}

int cmd_stdin(struct conn *conn, uint64_t req_id, uint64_t cmd_id, const char *p, size_t n,
              bool eof, struct sa_err *e)
{
    struct agent *a = conn->a;
    struct cmd *c;
    if (cmd_lookup(a, cmd_id, &c, e) < 0)
        return -1;
    if (n == 0 && eof && (c->done || c->in_fd < 0 || c->in_eof)) {
        req_reply_ok(conn, req_id);     /* closing what is closed is not an error */
        conn_kick(conn);
        return 0;
    }
    if (c->done)
        return err_set(e, 0, "exited", "command %llu has exited", (unsigned long long)cmd_id);
    if (c->in_fd < 0 || c->in_eof)
        return err_set(e, 0, "stdin_closed", "stdin of command %llu is closed",
                       (unsigned long long)cmd_id);
    if (buf_size(&c->in_buf) + n > a->cfg.stdin_window)
        return err_set(e, 0, "window_exceeded",
                       "%zu bytes would exceed the stdin window of %u unacknowledged bytes",
                       n, a->cfg.stdin_window);
    buf_append(&c->in_buf, p, n);
    c->in_accepted += n;
    c->in_eof |= eof;
    struct stdin_ack *k = xcalloc(1, sizeof *k);
    k->conn = conn;
    k->req_id = req_id;
    k->upto = c->in_accepted;
    *c->acks_tail = k;
    c->acks_tail = &k->next;
    cmd_stdin_flush(c);
    return 0;
}

/* --- signals and exit ------------------------------------------------------ */

int cmd_signal(struct agent *a, uint64_t cmd_id, int sig, bool group, struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(a, cmd_id, &c, e) < 0)
        return -1;
    /* After the leader is reaped its pid may be reused; its process group
     * stays pinned only while members remain, i.e. while we still drain. */
    if (c->done || (c->reaped && !group))
        return err_set(e, 0, "exited", "command %llu has exited", (unsigned long long)cmd_id);
    if (kill(group ? -c->pid : c->pid, sig) < 0 && !(errno == ESRCH && c->reaped))
        return err_sys(e, errno, "kill %s%d", group ? "-" : "", (int)c->pid);
    return 0;
}

void cmd_kill_all(struct agent *a, int sig)
{
    for (struct cmd *c = a->cmds; c; c = c->next)
        if (!c->done)
            kill(-c->pid, sig);
}

static void cmd_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct cmd *c = w->data;
    ev_child_stop(loop, w);
    c->reaped = true;
    c->status = w->rstatus;
    c->duration_ms = (uint64_t)((ev_now(loop) - c->t0) * 1000.);
    ev_timer_stop(loop, &c->timeout_w);
    if (c->out_fd[0] < 0 && c->out_fd[1] < 0) {
        cmd_finish(c);
        return;
    }
    ev_timer_set(&c->drain_w, (ev_tstamp)c->a->cfg.drain_ms / 1000., 0.);
    ev_timer_start(loop, &c->drain_w);
}

/* The drain window is over: take what the pipes hold now, then stop. */
static void cmd_drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct cmd *c = w->data;
    if (c->paused) {
        /* we still owe a reader bytes that are already in the pipe */
        ev_timer_set(w, 0.1, 0.);
        ev_timer_start(loop, w);
        return;
    }
    for (int s = 0; s < 2; s++) {
        if (c->out_fd[s] < 0)
            continue;
        if (cmd_read(c, s, 16) == 0 && c->paused) {
            if (c->conn)
                conn_kick(c->conn);
            ev_timer_set(w, 0.1, 0.);
            ev_timer_start(loop, w);
            return;
        }
        if (c->out_fd[s] >= 0)
            cmd_close_out(c, s);
    }
    if (c->conn)
        conn_kick(c->conn);
    cmd_maybe_finish(c);
}

static void cmd_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cmd *c = w->data;
    if (c->reaped)
        return;
    log_info("cmd %llu: timed out; killing its process group", (unsigned long long)c->id);
    c->timed_out = true;
    kill(-c->pid, SIGKILL);
}

static void cmd_finish(struct cmd *c)
{
    struct agent *a = c->a;
    ev_timer_stop(a->loop, &c->drain_w);
    ev_timer_stop(a->loop, &c->timeout_w);
    c->done = true;
    a->ncmds_running--;
    a->ncmds_exited++;
    cmd_stdin_close(c);
    buf_free(&c->in_buf);
    cmd_acks_settle(c, "exited", "the command exited before its stdin was written");

    struct wire_exit x = {
        .cmd = c->id,
        .code = WIFSIGNALED(c->status) ? 128 + WTERMSIG(c->status) : WEXITSTATUS(c->status),
        .signal = WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0,
        .duration_ms = c->duration_ms,
        .timed_out = c->timed_out,
        .stdout_bytes = c->nbytes[0],
        .stderr_bytes = c->nbytes[1],
    };
    log_debug("cmd %llu: exited with %d", (unsigned long long)c->id, x.code);
    if (c->conn) {
        struct conn *conn = c->conn;
        wire_msg_exit(conn_out(conn), c->req_id, &x);
        c->conn = NULL;
        conn->streams--;
        conn_kick(conn);
        conn_idle_check(conn);
    }
    cmd_evict(a);
}

void cmd_conn_closed(struct agent *a, struct conn *conn)
{
    for (struct cmd *c = a->cmds; c; c = c->next) {
        for (struct stdin_ack *k = c->acks; k; k = k->next)
            if (k->conn == conn)
                k->conn = NULL;
        if (c->conn != conn)
            continue;
        c->conn = NULL;
        conn->streams--;
        if (c->paused)
            cmd_pause(c, false);
        if (c->kill_on_disconnect && !c->reaped) {
            log_info("cmd %llu: connection closed; killing (kill_on_disconnect)",
                     (unsigned long long)c->id);
            kill(-c->pid, SIGKILL);
        }
    }
}

void cmd_free_all(struct agent *a)
{
    while (a->cmds) {
        struct cmd *c = a->cmds;
        cmd_unlink(a, c);
        for (int s = 0; s < 2; s++)
            if (c->out_fd[s] >= 0)
                cmd_close_out(c, s);
        cmd_stdin_close(c);
        ev_child_stop(a->loop, &c->child_w);
        ev_timer_stop(a->loop, &c->drain_w);
        ev_timer_stop(a->loop, &c->timeout_w);
        cmd_free(c);
    }
}
