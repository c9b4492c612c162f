#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "cgroup.h"
#include "conn.h"
#include "clock.h"
#include "fdio.h"
#include "log.h"
#include "reader.h"
#include "spawn.h"
#include "stats.h"

static void cmd_out_cb(struct ev_loop *loop, ev_io *w, int revents);
static void cmd_in_cb(struct ev_loop *loop, ev_io *w, int revents);
static void cmd_child_cb(struct ev_loop *loop, ev_child *w, int revents);
static void cmd_drain_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void cmd_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void cmd_cg_prepare_soon(struct agent *a);
static const struct conn_pending_ops cmd_owner_ops;

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

/* Exited commands in exit order (eviction: PROTOCOL.md "get, list, wait"). */
static void cmd_xlink(struct agent *a, struct cmd *c)
{
    c->xprev = a->exited_tail;
    c->xnext = NULL;
    if (a->exited_tail)
        a->exited_tail->xnext = c;
    else
        a->exited = c;
    a->exited_tail = c;
}

static void cmd_xunlink(struct agent *a, struct cmd *c)
{
    if (c->xprev)
        c->xprev->xnext = c->xnext;
    else
        a->exited = c->xnext;
    if (c->xnext)
        c->xnext->xprev = c->xprev;
    else
        a->exited_tail = c->xprev;
    c->xprev = c->xnext = NULL;
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

static void cmd_trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct agent *a = w->data;
    ev_tstamp quiet = ev_now(loop) - a->trim_freed_at;
    if (quiet < CMD_TRIM_DELAY_S) {        /* still freeing: wait for the stream to end */
        ev_timer_set(w, CMD_TRIM_DELAY_S - quiet, 0.);
        ev_timer_start(loop, w);
        return;
    }
    lstore_trim(&a->logs);
}

/* Free a finished command's record (no readers can remain: they all got
 * their exit, or were closed with their connection). */
static void cmd_free(struct cmd *c)
{
    struct agent *a = c->a;
    while (!LIST_EMPTY(&c->readers))
        rd_close(LIST_FIRST(&c->readers));
    lstore_remove(&a->logs, &c->log);
    buf_free(&c->in_buf);
    struct stdin_ack *k;
    while ((k = STAILQ_FIRST(&c->acks)) != NULL) {
        STAILQ_REMOVE_HEAD(&c->acks, link);
        conn_pending_remove(&k->pend);
        free(k);
    }
    struct waiter *w;
    while ((w = LIST_FIRST(&c->waiters)) != NULL) {
        LIST_REMOVE(w, link);
        conn_pending_remove(&w->pend);
        free(w);
    }
    conn_pending_remove(&c->owner);
    if (c->in_cgroup)
        cg_release(&a->cg, c->id, -1);
    a->record_bytes -= c->rec_bytes;
    free(c->argv);
    free(c->cwd);
    free(c->user);
    free(c);
}

/* Unlink and free an exited command. */
static void cmd_forget(struct agent *a, struct cmd *c)
{
    cmd_unlink(a, c);
    cmd_xunlink(a, c);
    cmd_free(c);
    a->ncmds_exited--;
}

/* Forget exited commands, oldest exit first (skipping those whose log is
 * being read), while there are more than keep_exited of them or their
 * strings and `extra` more bytes would pass CMD_RECORD_BYTES. */
static void cmd_evict(struct agent *a, size_t extra)
{
    for (struct cmd *c = a->exited, *next; c; c = next) {
        next = c->xnext;
        if (a->ncmds_exited <= a->cfg.keep_exited && a->record_bytes + extra <= CMD_RECORD_BYTES)
            break;
        if (LIST_EMPTY(&c->readers))
            cmd_forget(a, c);
    }
}

/* Forget exited commands the host no longer needs (the `release` request):
 * one by id, or every exited one nobody is reading. */
int cmd_release(struct agent *a, bool all, uint64_t cmd_id, uint64_t *released, struct sa_err *e)
{
    *released = 0;
    if (!all) {
        struct cmd *c;
        if (cmd_lookup(a, cmd_id, &c, e) < 0)
            return -1;
        if (!c->done)
            return err_set(e, 0, "running", "command %llu is still running",
                           (unsigned long long)cmd_id);
        if (!LIST_EMPTY(&c->readers))
            return err_set(e, 0, "busy", "the log of command %llu is being read",
                           (unsigned long long)cmd_id);
        cmd_forget(a, c);
        *released = 1;
        return 0;
    }
    for (struct cmd *c = a->cmds, *next; c; c = next) {
        next = c->next;
        if (c->done && LIST_EMPTY(&c->readers)) {
            cmd_forget(a, c);
            (*released)++;
        }
    }
    return 0;
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

/* Set "K=V" in env[0..*n), replacing an entry with the same key. */
static void env_put(char **env, size_t *n, char *kv)
{
    size_t j = 0;
    while (j < *n && !env_key_eq(env[j], kv))
        j++;
    env[j] = kv;
    if (j == *n)
        (*n)++;
}

/* The default environment, then the session's (set_defaults), then the
 * request's env on top (its keys win); clear_env keeps only the request's. */
static char **cmd_build_env(struct agent *a, const struct wire_exec_req *x,
                            const struct ident *id, const char **path)
{
    msgpack_zone *z = &a->zone;
    size_t cap = 7 + a->default_envc + x->envc + 1, n = 0;
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
        for (size_t i = 0; i < a->default_envc; i++)
            env_put(env, &n, a->default_env[i]);
    }
    if (x->pty)
        env_put(env, &n, zone_printf(z, "TERM=%s", x->term ? x->term : "xterm-256color"));
    for (size_t i = 0; i < x->envc; i++)
        env_put(env, &n, x->env[i]);
    env[n] = NULL;
    *path = NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], "PATH=", 5) == 0)
            *path = env[i] + 5;
    return env;
}

/* The request's cwd; absent, or relative, against the default cwd. */
static const char *cmd_cwd(struct agent *a, const struct wire_exec_req *x)
{
    if (!x->cwd)
        return agent_default_cwd(a);
    if (x->cwd[0] == '/')
        return x->cwd;
    return zone_printf(&a->zone, "%s/%s", agent_default_cwd(a), x->cwd);
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* --- the log's writer ------------------------------------------------------ */

/* Start or stop reading c's pipes (the log store decides: logstore.h). */
static void cmd_pause(struct cmd *c, bool pause)
{
    for (int s = 0; s < 2; s++) {
        if (c->out_fd[s] < 0)
            continue;
        if (pause)
            ev_io_stop(c->a->loop, &c->out_w[s]);
        else
            ev_io_start(c->a->loop, &c->out_w[s]);
    }
}

/* lstore_ops.resume: the log has room again. */
static void cmd_log_resume(struct lstore_log *l)
{
    cmd_pause((struct cmd *)(void *)((char *)l - offsetof(struct cmd, log)), false);
}

/* lstore_ops.trim_due: malloc_trim() once no log memory has been freed for
 * CMD_TRIM_DELAY_S (agent.h). */
static void cmd_log_trim_due(struct lstore *s)
{
    struct agent *a = (struct agent *)(void *)((char *)s - offsetof(struct agent, logs));
    a->trim_freed_at = ev_now(a->loop);
    if (!ev_is_active(&a->trim)) {
        ev_timer_set(&a->trim, CMD_TRIM_DELAY_S, 0.);
        ev_timer_start(a->loop, &a->trim);
    }
}

static const struct lstore_ops cmd_log_ops = {cmd_log_resume, cmd_log_trim_due};

/* The log store (a->logs) with the caps of a->cfg, before any command. */
static void cmd_logs_init(struct agent *a)
{
    /* one read: at most 64 KiB, and small enough for an output event to fit
     * a frame (the event's own fields take less than 256 bytes) */
    size_t read_max = CMD_READ_CHUNK;
    if (a->cfg.max_frame - 256 < read_max)
        read_max = a->cfg.max_frame - 256;
    lstore_init(&a->logs, a->cfg.log_cap, a->cfg.log_total_cap, read_max, &cmd_log_ops);
}

/* --- records -------------------------------------------------------------- */

/* Bytes of argv's strings as a record holds them (NULs included). */
static size_t argv_bytes(char *const *argv)
{
    size_t n = 0;
    for (size_t i = 0; argv[i]; i++)
        n += strlen(argv[i]) + 1;
    return n;
}

/* A copy of argv in one allocation (its size in *alloc) whose strings take at
 * most max bytes: the argument that crosses max is cut (at a UTF-8 character
 * boundary) and the ones after it dropped; *cut says whether that happened. */
static char **argv_copy(char *const *argv, size_t max, size_t *alloc, bool *cut)
{
    size_t argc = 0, total = 0, keep[2] = {0, 0};   /* args kept whole, bytes of the cut one */
    *cut = false;
    for (; argv[argc]; argc++) {
        size_t n = strlen(argv[argc]);
        if (*cut)
            continue;
        if (total + n + 1 > max) {
            size_t room = max > total + 1 ? max - total - 1 : 0;
            while (room > 0 && ((unsigned char)argv[argc][room] & 0xc0) == 0x80)
                room--;         /* not in the middle of a character */
            keep[1] = room;
            *cut = true;
            continue;
        }
        total += n + 1;
        keep[0]++;
    }
    size_t nv = keep[0] + (*cut && keep[1] > 0);
    *alloc = (nv + 1) * sizeof(char *) + total + (*cut ? keep[1] + 1 : 0);
    char **v = xmalloc(*alloc);
    char *p = (char *)(v + nv + 1);
    for (size_t i = 0; i < nv; i++) {
        size_t n = i < keep[0] ? strlen(argv[i]) : keep[1];
        memcpy(p, argv[i], n);
        p[n] = '\0';
        v[i] = p;
        p += n + 1;
    }
    v[nv] = NULL;
    return v;
}

/* An exited record keeps at most CMD_EXITED_ARGV_MAX bytes of argv. */
static void cmd_cut_argv(struct cmd *c)
{
    if (argv_bytes(c->argv) <= CMD_EXITED_ARGV_MAX)
        return;
    size_t alloc, old = c->rec_bytes;
    bool cut;
    char **v = argv_copy(c->argv, CMD_EXITED_ARGV_MAX, &alloc, &cut);
    c->rec_bytes = alloc + strlen(c->cwd) + 1 + strlen(c->user) + 1;
    c->a->record_bytes = c->a->record_bytes - old + c->rec_bytes;
    free(c->argv);
    c->argv = v;
    c->argv_cut = cut;
}

void cmd_exit_info(const struct cmd *c, struct wire_exit *x)
{
    x->cmd = c->id;
    x->code = WIFSIGNALED(c->status) ? 128 + WTERMSIG(c->status) : WEXITSTATUS(c->status);
    x->signal = WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0;
    x->duration_ms = c->duration_ms;
    x->timed_out = c->timed_out;
    x->stdout_bytes = c->log.o.next_offset[0];
    x->stderr_bytes = c->log.o.next_offset[1];
}

static void cmd_kv_exit(struct wire_enc *w, const struct cmd *c)
{
    struct wire_exit x;
    cmd_exit_info(c, &x);
    wire_kv_int(w, "code", x.code);
    wire_kv_int(w, "signal", x.signal);
    wire_kv_uint(w, "duration_ms", x.duration_ms);
    wire_kv_bool(w, "timed_out", x.timed_out);
    wire_kv_uint(w, "stdout_bytes", x.stdout_bytes);
    wire_kv_uint(w, "stderr_bytes", x.stderr_bytes);
}

/* A command record's keys (PROTOCOL.md "get, list, wait"), so that it can
 * stand alone in a map or share the reply's. */
static void cmd_record_kv(struct wire_enc *w, const struct cmd *c)
{
    uint32_t argc = 0;
    while (c->argv[argc])
        argc++;
    wire_kv_uint(w, "cmd", c->id);
    wire_key(w, "argv");
    msgpack_pack_array(&w->pk, argc);
    for (uint32_t i = 0; i < argc; i++)
        wire_str(w, c->argv[i]);
    wire_kv_str(w, "cwd", c->cwd);
    wire_kv_str(w, "user", c->user);
    wire_kv_uint(w, "pid", (uint64_t)c->pid);
    wire_kv_uint(w, "started_ms", c->started_ms);
    wire_kv_str(w, "state", c->done ? "exited" : "running");
    wire_kv_bool(w, "detached", !rd_has_exec_stream(c));
    wire_kv_bool(w, "pty", c->pty);
    wire_kv_uint(w, "log_start", c->log.o.start);
    wire_kv_uint(w, "log_end", c->log.o.end);
    if (c->argv_cut)
        wire_kv_bool(w, "argv_cut", true);
    if (c->done)
        cmd_kv_exit(w, c);
}

int cmd_get(struct conn *conn, uint64_t req_id, uint64_t cmd_id, struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(conn->a, cmd_id, &c, e) < 0)
        return -1;
    struct wire_enc w;
    wire_begin(&w, conn_out(conn));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    cmd_record_kv(&w, c);
    wire_end(&w);
    return 0;
}

/* The reply's own fields around the records: type, id, more, cursor, and
 * the array header (well below these), in bytes and in msgpack objects. */
#define CMD_LIST_OVERHEAD 128u
#define CMD_LIST_OVERHEAD_OBJECTS 16u

/* argv's elements: with the record's map, keys and values, what a record
 * adds to a page's objects, which must stay within WIRE_MAX_OBJECTS or no
 * client could decode the page (PROTOCOL.md §1): about 2,600 records of
 * two-word argvs. */
static size_t cmd_argc(const struct cmd *c)
{
    size_t argc = 0;
    while (c->argv[argc])
        argc++;
    return argc;
}

void cmd_list(struct conn *conn, uint64_t req_id, bool running_only, uint64_t cursor,
              uint64_t limit)
{
    struct agent *a = conn->a;
    struct buf recs;
    struct wire_enc r;
    buf_init(&recs);
    wire_enc_raw(&r, &recs);
    uint32_t n = 0;
    size_t objects = CMD_LIST_OVERHEAD_OBJECTS;
    const struct cmd *c = a->cmds, *last = NULL;
    for (; c; c = c->next) {
        if ((cursor && c->id >= cursor) || (running_only && c->done))
            continue;
        if (limit && n == limit)
            break;
        size_t before = buf_size(&recs);
        unsigned rec = wire_map_begin(&r);
        cmd_record_kv(&r, c);
        objects += 1 + 2 * (size_t)wire_map_entries(&r) + cmd_argc(c);
        wire_map_end(&r, rec);
        if ((buf_size(&recs) + CMD_LIST_OVERHEAD > a->cfg.max_frame ||
             objects > WIRE_MAX_OBJECTS) && n > 0) {
            recs.len = recs.head + before;       /* this one starts the next page */
            break;
        }
        n++;
        last = c;
    }
    while (c && running_only && c->done)     /* `more` only when a record follows */
        c = c->next;
    bool more = c != NULL && last != NULL;
    struct wire_enc w;
    wire_begin(&w, conn_out(conn));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    wire_kv_bool(&w, "more", more);
    if (more)
        wire_kv_uint(&w, "cursor", last->id);
    wire_key(&w, "commands");
    msgpack_pack_array(&w.pk, n);
    buf_append(conn_out(conn), buf_ptr(&recs), buf_size(&recs));
    wire_end(&w);
    buf_free(&recs);
}

static void cmd_reply_exit(struct conn *conn, uint64_t req_id, const struct cmd *c)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(conn));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    wire_kv_uint(&w, "cmd", c->id);
    cmd_kv_exit(&w, c);
    wire_end(&w);
    conn_kick(conn);
}

/* The connection of a `wait` closed: nobody to answer. */
static void cmd_waiter_closed(struct conn_pending *p)
{
    struct waiter *w = container_of(p, struct waiter, pend);
    LIST_REMOVE(w, link);
    free(w);
}

static const struct conn_pending_ops cmd_waiter_ops = {cmd_waiter_closed, NULL};

int cmd_wait(struct conn *conn, uint64_t req_id, uint64_t cmd_id, struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(conn->a, cmd_id, &c, e) < 0)
        return -1;
    if (c->done) {
        cmd_reply_exit(conn, req_id, c);
        return 0;
    }
    if (conn_pending_room(conn, e) < 0)
        return -1;
    struct waiter *w = xcalloc(1, sizeof *w);
    w->cmd = c;
    LIST_INSERT_HEAD(&c->waiters, w, link);
    conn_pending_add(conn, &w->pend, &cmd_waiter_ops, req_id, true);
    return 0;
}

int cmd_logs(struct conn *conn, uint64_t req_id, uint64_t cmd_id, uint64_t from, bool follow,
             struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(conn->a, cmd_id, &c, e) < 0)
        return -1;
    if (conn_pending_room(conn, e) < 0)
        return -1;
    struct wire_enc w;
    wire_begin(&w, conn_out(conn));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    wire_kv_uint(&w, "cmd", c->id);
    wire_kv_uint(&w, "log_start", c->log.o.start);
    wire_kv_uint(&w, "log_end", c->log.o.end);
    wire_end(&w);
    rd_pump(rd_open(c, conn, req_id, from, follow, false));
    return 0;
}

/* --- starting -------------------------------------------------------------- */

/* The agent's ends (non-blocking) and the child's ends (blocking) of stdio. */
struct cmd_fds {
    int out_r, err_r, in_w;       /* ours */
    int out_w, err_w, in_r;       /* the child's; may all be one pty slave */
};

static void cmd_fds_close_child(struct cmd_fds *f)
{
    if (f->err_w >= 0 && f->err_w != f->out_w)
        close(f->err_w);
    if (f->in_r >= 0 && f->in_r != f->out_w)
        close(f->in_r);
    if (f->out_w >= 0)
        close(f->out_w);
    f->out_w = f->err_w = f->in_r = -1;
}

static void cmd_fds_close_all(struct cmd_fds *f)
{
    cmd_fds_close_child(f);
    int ours[3] = {f->out_r, f->err_r, f->in_w};
    close_fds(ours, 3);
    f->out_r = f->err_r = f->in_w = -1;
}

static int cmd_pipes(struct cmd_fds *f, bool stdin_null, struct sa_err *e)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        goto fail;
    f->out_r = p[0], f->out_w = p[1];
    if (pipe2(p, O_CLOEXEC) < 0)
        goto fail;
    f->err_r = p[0], f->err_w = p[1];
    if (stdin_null) {
        f->in_r = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (f->in_r < 0)
            goto fail;
    } else {
        if (pipe2(p, O_CLOEXEC) < 0)
            goto fail;
        f->in_r = p[0], f->in_w = p[1];
        if (fd_set_nonblock(f->in_w, true) < 0)
            goto fail;
    }
    if (fd_set_nonblock(f->out_r, true) < 0 || fd_set_nonblock(f->err_r, true) < 0)
        goto fail;
    /* a bulk writer fills a bigger pipe in fewer wake-ups (best effort) */
    (void)fcntl(f->out_r, F_SETPIPE_SZ, (int)CMD_PIPE_SIZE);
    return 0;
fail:
    err_sys(e, errno, "creating pipes");
    cmd_fds_close_all(f);
    return -1;
}

/* A pty: the master is our output and (through a second fd) our input; the
 * slave is the child's stdin, stdout, stderr and controlling terminal. */
static int cmd_pty(struct cmd_fds *f, uint16_t rows, uint16_t cols, uid_t uid, struct sa_err *e)
{
    char name[128];
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return err_sys(e, errno, "posix_openpt");
    f->out_r = m;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0)
        goto fail;
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0)
        goto fail;
    f->out_w = f->err_w = f->in_r = s;
    /* the slave is the command's terminal: its user's, as login would make
     * it (group kept: tty when devpts has gid=5), mode 0620, so the command
     * can reopen its own tty (/dev/tty, `tty`) after the identity switch */
    if (fchown(s, uid, (gid_t)-1) < 0 || fchmod(s, 0620) < 0)
        goto fail;
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    if (ioctl(m, TIOCSWINSZ, &ws) < 0)
        goto fail;
    f->in_w = fcntl(m, F_DUPFD_CLOEXEC, 3);
    if (f->in_w < 0 || fd_set_nonblock(m, true) < 0)   /* one file description: both fds */
        goto fail;
    return 0;
fail:
    err_sys(e, errno, "setting up the pty");
    cmd_fds_close_all(f);
    return -1;
}

static void cmd_reply_started(struct conn *conn, uint64_t req_id, const struct cmd *c)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(conn));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", req_id);
    wire_kv_uint(&w, "cmd", c->id);
    wire_kv_uint(&w, "pid", (uint64_t)c->pid);
    wire_kv_uint(&w, "started_ms", c->started_ms);
    wire_kv_str(&w, "cwd", c->cwd);
    wire_kv_str(&w, "user", c->user);
    wire_end(&w);
}

static struct cmd *cmd_new(struct agent *a, uint64_t id, pid_t pid, struct cmd_fds *f,
                           const struct wire_exec_req *x, const char *cwd, const char *user)
{
    struct cmd *c = xcalloc(1, sizeof *c);
    c->a = a;
    c->id = id;
    c->pid = pid;
    c->started_ms = clock_wall_ms();
    c->t0 = ev_now(a->loop);
    size_t alloc;
    bool cut;
    c->argv = argv_copy(x->argv, SIZE_MAX, &alloc, &cut);
    c->cwd = xstrdup(cwd);
    c->user = xstrdup(user);
    c->rec_bytes = alloc + strlen(cwd) + 1 + strlen(user) + 1;
    a->record_bytes += c->rec_bytes;
    c->out_fd[0] = f->out_r;
    c->out_fd[1] = f->err_r;
    c->in_fd = f->in_w;
    c->pty = x->pty;
    c->pty_fd = x->pty ? f->out_r : -1;
    lstore_add(&a->logs, &c->log);
    buf_init(&c->in_buf);
    ackwin_init(&c->in_win, a->cfg.stdin_window);
    STAILQ_INIT(&c->acks);
    LIST_INIT(&c->readers);
    LIST_INIT(&c->waiters);
    for (int s = 0; s < 2; s++) {
        ev_io_init(&c->out_w[s], cmd_out_cb, c->out_fd[s], EV_READ);
        c->out_w[s].data = c;
        if (c->out_fd[s] >= 0)
            ev_io_start(a->loop, &c->out_w[s]);
    }
    ev_io_init(&c->in_w, cmd_in_cb, c->in_fd, EV_WRITE);
    c->in_w.data = c;
    ev_child_init(&c->child_w, cmd_child_cb, pid, 0);
    c->child_w.data = c;
    ev_child_start(a->loop, &c->child_w);
    ev_init(&c->drain_w, cmd_drain_cb);
    c->drain_w.data = c;
    ev_init(&c->timeout_w, cmd_timeout_cb);
    c->timeout_w.data = c;
    if (x->timeout_ms) {
        ev_timer_set(&c->timeout_w, (ev_tstamp)x->timeout_ms / 1000., 0.);
        ev_timer_start(a->loop, &c->timeout_w);
    }
    cmd_link(a, c);
    a->ncmds_running++;
    return c;
}

/* The limits an exec must pass before anything is spawned: --max-commands,
 * the connection's pending requests, one record per frame, CMD_RECORD_BYTES. */
static int cmd_admit(struct conn *conn, const struct wire_exec_req *x, const char *cwd,
                     const char *user, struct sa_err *e)
{
    struct agent *a = conn->a;
    if (a->ncmds_running >= a->cfg.max_commands)
        return err_set(e, 0, "too_many", "%u commands are running (--max-commands)",
                       a->ncmds_running);
    if (!x->detached && conn_pending_room(conn, e) < 0)
        return -1;
    size_t strings = argv_bytes(x->argv), need;
    size_t wire = strings + 5 * x->argc + strlen(cwd) + strlen(user);
    if (wire > a->cfg.max_frame - CMD_RECORD_SLACK)
        return err_set(e, E2BIG, NULL, "argv, cwd and user take %zu bytes: a command's record "
                       "must fit a frame (max_frame %u less %u)", wire, a->cfg.max_frame,
                       CMD_RECORD_SLACK);
    need = (x->argc + 1) * sizeof(char *) + strings + strlen(cwd) + 1 + strlen(user) + 1;
    cmd_evict(a, need);
    if (a->record_bytes + need > CMD_RECORD_BYTES)
        return err_set(e, 0, "too_many", "the records of running commands hold %llu bytes "
                       "(at most %u)", (unsigned long long)a->record_bytes, CMD_RECORD_BYTES);
    return 0;
}

int cmd_exec(struct conn *conn, uint64_t req_id, const struct wire_exec_req *x, struct sa_err *e)
{
    struct agent *a = conn->a;
    const struct ident *env_id, *run;
    if (ident_choose(&a->idents, a->dev, a->default_user, x->user, x->sudo, &env_id, &run,
                     e) < 0)
        return -1;
    const char *path;
    char **envp = cmd_build_env(a, x, env_id, &path);
    const char *cwd = cmd_cwd(a, x);
    cleanup_free char *user = xstrdup(env_id->name);   /* the cache may move on */
    if (cmd_admit(conn, x, cwd, user, e) < 0)
        return -1;

    struct cmd_fds f = {-1, -1, -1, -1, -1, -1};
    if ((x->pty ? cmd_pty(&f, x->rows, x->cols, run ? run->uid : geteuid(), e)
                : cmd_pipes(&f, x->stdin_null, e)) < 0)
        return -1;
    uint64_t id = a->next_cmd_id + 1;
    int cg_procs = -1, cg_dir = -1;
    if (a->cg.enabled && cg_create(&a->cg, id, &cg_procs, &cg_dir, e) < 0) {
        log_warn("cmd %llu: no cgroup (%s); process-group signals only",
                 (unsigned long long)id, e->msg);
        cg_procs = cg_dir = -1;
    }
    struct spawn_req sr = {
        .argv = x->argv, .envp = envp, .cwd = cwd, .path = path, .id = run,
        .fd_in = f.in_r, .fd_out = f.out_w, .fd_err = f.err_w, .ctty = x->pty,
        .cgroup_procs_fd = cg_procs, .cgroup_dir_fd = cg_dir, .nofile = a->nofile.rlim_cur ? &a->nofile : NULL,
        .stack = a->spawn_stack, .stack_size = a->spawn_stack_size, .slots = &a->spawn_slots,
    };
    pid_t pid;
    enum spawn_stage stage;
    int r = spawn_start(&sr, &pid, &stage, e);
    cmd_fds_close_child(&f);
    if (cg_procs >= 0)
        close(cg_procs);
    if (r < 0) {
        cmd_fds_close_all(&f);
        if (cg_dir >= 0)
            cg_release(&a->cg, id, cg_dir);
        e->stage = spawn_stage_name(stage);
        return -1;
    }
    if (cg_dir >= 0)
        close(cg_dir);          /* reopened by name when needed: cgroup.h */
    a->next_cmd_id = id;
    cmd_cg_prepare_soon(a);             /* while this one runs */
    struct cmd *c = cmd_new(a, id, pid, &f, x, cwd, user);
    c->in_cgroup = cg_dir >= 0;
    if (x->kill_on_disconnect)
        conn_pending_add(conn, &c->owner, &cmd_owner_ops, req_id, false);
    log_debug("cmd %llu: started %s as pid %d (%s)", (unsigned long long)c->id, x->argv[0],
              (int)pid, user);
    cmd_reply_started(conn, req_id, c);
    if (!x->detached)
        rd_open(c, conn, req_id, 0, true, true);
    return 0;
}

/* --- output --------------------------------------------------------------- */

static void cmd_close_out(struct cmd *c, int s)
{
    ev_io_stop(c->a->loop, &c->out_w[s]);
    if (c->pty && s == 0)
        c->pty_fd = -1;
    close(c->out_fd[s]);
    c->out_fd[s] = -1;
}

/* Read up to `reads` chunks from stream s into the log. Returns 1 at EOF. */
static int cmd_read(struct cmd *c, int s, int reads)
{
    struct agent *a = c->a;
    size_t chunk = lstore_read_size(&a->logs);
    for (int i = 0; i < reads; i++) {
        if (!lstore_reserve(&a->logs, &c->log)) {
            cmd_pause(c, true);
            return 0;
        }
        ssize_t n = read(c->out_fd[s], a->scratch, chunk);
        if (n > 0) {
            lstore_append(&a->logs, &c->log, s, a->scratch, (size_t)n);
            if ((size_t)n < chunk)
                return 0;   /* the pipe is empty for now */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        /* EOF, or EIO from a pty master once every slave fd is closed */
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
    int eof = cmd_read(c, s, CMD_READS_PER_CB);
    rd_pump_cmd(c);
    if (eof)
        cmd_maybe_finish(c);
}

/* --- stdin ---------------------------------------------------------------- */

static void cmd_ack_reply(struct stdin_ack *k, const char *code, const char *msg)
{
    struct conn *conn = k->pend.conn;
    if (!conn)
        return;
    if (!code) {
        wire_msg_ok(conn_out(conn), k->pend.req_id);
    } else {
        struct sa_err e;
        err_set(&e, 0, code, "%s", msg);
        wire_msg_error(conn_out(conn), true, k->pend.req_id, &e);
    }
    conn_pending_remove(&k->pend);
    conn_kick(conn);
}

/* A stdin request's connection closed: its acknowledgement stays queued (it
 * still marks where the bytes end) and is answered to nobody. */
static const struct conn_pending_ops cmd_ack_ops = {NULL, NULL};

/* Answer every waiting stdin request whose bytes are written, or all of them
 * with an error when code is set. */
static void cmd_acks_settle(struct cmd *c, const char *code, const char *msg)
{
    struct stdin_ack *k;
    while ((k = STAILQ_FIRST(&c->acks)) != NULL && (code || ackwin_reached(&c->in_win, k->upto))) {
        STAILQ_REMOVE_HEAD(&c->acks, link);
        ackwin_answered(&c->in_win);
        cmd_ack_reply(k, code, msg);
        free(k);
    }
}

static void cmd_stdin_close(struct cmd *c)
{
    if (c->in_fd < 0)
        return;
    ev_io_stop(c->a->loop, &c->in_w);
    close(c->in_fd);
    c->in_fd = -1;
}

/* Write queued stdin; close (or, on a pty, send ^D) once asked to and
 * everything is written. */
static void cmd_stdin_flush(struct cmd *c)
{
    while (buf_size(&c->in_buf) > 0) {
        ssize_t n = write(c->in_fd, buf_ptr(&c->in_buf), buf_size(&c->in_buf));
        if (n > 0) {
            buf_consume(&c->in_buf, (size_t)n);
            ackwin_wrote(&c->in_win, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(c->a->loop, &c->in_w);
            cmd_acks_settle(c, NULL, NULL);
            return;
        }
        /* EPIPE/EIO: the command closed its stdin; what is queued cannot arrive */
        buf_reset(&c->in_buf, 0);
        cmd_stdin_close(c);
        cmd_acks_settle(c, "EPIPE", "the command closed its stdin");
        return;
    }
    ev_io_stop(c->a->loop, &c->in_w);
    buf_reset(&c->in_buf, 64u << 10);
    if (c->in_eof && !c->pty)
        cmd_stdin_close(c);
    cmd_acks_settle(c, NULL, NULL);
}

static void cmd_in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    cmd_stdin_flush(w->data);
}

/* Queue bytes (and, for a pty's EOF, the VEOF character ^D: a terminal has
 * no "close") with one acknowledgement for the request. */
static void cmd_stdin_queue(struct cmd *c, struct conn *conn, uint64_t req_id, const char *p,
                            size_t n, bool veof)
{
    static const char eot[2] = {4, 4};
    buf_append(&c->in_buf, p, n);
    if (n > 0)
        c->in_last = p[n - 1];
    /* in canonical mode ^D after a partial line only hands the line over:
     * a second one is the end of file */
    size_t neot = veof ? (c->in_last == '\n' || c->in_last == 0 ? 1 : 2) : 0;
    buf_append(&c->in_buf, eot, neot);
    if (neot)
        c->in_last = 0;
    struct stdin_ack *k = xcalloc(1, sizeof *k);
    k->upto = ackwin_take(&c->in_win, n + neot);
    STAILQ_INSERT_TAIL(&c->acks, k, link);
    conn_pending_add(conn, &k->pend, &cmd_ack_ops, req_id, true);
}

int cmd_stdin(struct conn *conn, uint64_t req_id, uint64_t cmd_id, const char *p, size_t n,
              bool eof, struct sa_err *e)
{
    struct agent *a = conn->a;
    struct cmd *c;
    if (cmd_lookup(a, cmd_id, &c, e) < 0)
        return -1;
    if (n == 0 && eof && (c->done || c->in_fd < 0 || c->in_eof)) {
        wire_msg_ok(conn_out(conn), req_id);     /* closing what is closed is not an error */
        conn_kick(conn);
        return 0;
    }
    if (c->done)
        return err_set(e, 0, "exited", "command %llu has exited", (unsigned long long)cmd_id);
    if (c->in_fd < 0 || c->in_eof)
        return err_set(e, 0, "stdin_closed", "stdin of command %llu is closed",
                       (unsigned long long)cmd_id);
    enum ackwin_fit fit = ackwin_admit(&c->in_win, n);
    if (fit == ACKWIN_OVER_BYTES)
        return err_set(e, 0, "window_exceeded",
                       "%zu bytes would exceed the stdin window of %u unacknowledged bytes",
                       n, a->cfg.stdin_window);
    if (fit == ACKWIN_OVER_MARKS)
        return err_set(e, 0, "window_exceeded",
                       "%u stdin requests of command %llu wait for their acknowledgement",
                       c->in_win.nmarks, (unsigned long long)cmd_id);
    cmd_stdin_queue(c, conn, req_id, p, n, eof && c->pty);
    c->in_eof |= eof && !c->pty;
    cmd_stdin_flush(c);
    return 0;
}

/* --- signals, resize, exit ------------------------------------------------------ */

static int cmd_cg_open(const struct cmd *c)
{
    return c->in_cgroup ? cg_open(&c->a->cg, c->id) : -1;
}

uint64_t cmd_cpu_ms(const struct cmd *c, pid_t pid)
{
    uint64_t usec;
    if (c->in_cgroup && cg_cpu_usec_of(&c->a->cg, c->id, &usec) == 0)
        return usec / 1000u;
    return stats_cpu_ms(pid, -1);
}

static bool cmd_cg_populated(const struct cmd *c)
{
    cleanup_close int fd = cmd_cg_open(c);
    return fd >= 0 && cg_populated(fd);
}

static int cmd_kill_tree(struct cmd *c, int sig, struct sa_err *e)
{
    if (c->in_cgroup) {
        cleanup_close int fd = cmd_cg_open(c);
        if (fd >= 0) {
            if (sig == SIGKILL)
                return cg_kill(fd, e);
            return cg_signal(fd, sig, e) < 0 ? -1 : 0;
        }
        /* out of fds, say: the process group still reaches most of it */
        if (c->reaped)
            return err_sys(e, errno, "opening the cgroup of command %llu",
                           (unsigned long long)c->id);
    }
    if (kill(-c->pid, sig) < 0 && !(errno == ESRCH && c->reaped))
        return err_sys(e, errno, "kill -%d", (int)c->pid);
    return 0;
}

int cmd_signal(struct agent *a, uint64_t cmd_id, int sig, bool group, struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(a, cmd_id, &c, e) < 0)
        return -1;
    /* After the leader is reaped its pid may be reused; its process group
     * stays pinned only while members remain, i.e. while we still drain. A
     * cgroup is addressed by its own fd and never reused. */
    bool reachable = group ? (!c->done || cmd_cg_populated(c))
                           : !c->reaped;
    if (!reachable)
        return err_set(e, 0, "exited", "command %llu has exited", (unsigned long long)cmd_id);
    if (group)
        return cmd_kill_tree(c, sig, e);
    if (kill(c->pid, sig) < 0)
        return err_sys(e, errno, "kill %d", (int)c->pid);
    return 0;
}

int cmd_resize(struct agent *a, uint64_t cmd_id, uint16_t rows, uint16_t cols, struct sa_err *e)
{
    struct cmd *c;
    if (cmd_lookup(a, cmd_id, &c, e) < 0)
        return -1;
    if (!c->pty)
        return err_set(e, 0, "bad_request", "command %llu has no pty", (unsigned long long)cmd_id);
    if (c->done || c->pty_fd < 0)
        return err_set(e, 0, "exited", "command %llu has exited", (unsigned long long)cmd_id);
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    if (ioctl(c->pty_fd, TIOCSWINSZ, &ws) < 0)
        return err_sys(e, errno, "TIOCSWINSZ");
    return 0;
}

void cmd_kill_all(struct agent *a, int sig)
{
    struct sa_err e;
    for (struct cmd *c = a->cmds; c; c = c->next)
        if (!c->done)
            cmd_kill_tree(c, sig, &e);
}

/* kill_on_disconnect: the exec's connection closed while the command runs. */
static void cmd_owner_closed(struct conn_pending *p)
{
    struct cmd *c = container_of(p, struct cmd, owner);
    struct sa_err e;
    if (c->reaped)
        return;                      /* exited: only its output is being drained */
    log_info("cmd %llu: connection closed; killing (kill_on_disconnect)",
             (unsigned long long)c->id);
    cmd_kill_tree(c, SIGKILL, &e);
}

static const struct conn_pending_ops cmd_owner_ops = {cmd_owner_closed, NULL};

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
    for (int s = 0; s < 2; s++) {
        if (c->out_fd[s] < 0)
            continue;
        if (cmd_read(c, s, 16) == 0 && c->log.paused) {
            /* a follower is still owed bytes that are in the pipe: wait for it */
            rd_pump_cmd(c);
            ev_timer_set(w, 0.1, 0.);
            ev_timer_start(loop, w);
            return;
        }
        if (c->out_fd[s] >= 0)
            cmd_close_out(c, s);
    }
    rd_pump_cmd(c);
    cmd_maybe_finish(c);
}

static void cmd_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cmd *c = w->data;
    struct sa_err e;
    if (c->reaped)
        return;
    log_info("cmd %llu: timed out; killing it", (unsigned long long)c->id);
    c->timed_out = true;
    if (cmd_kill_tree(c, SIGKILL, &e) < 0)
        log_warn("cmd %llu: %s", (unsigned long long)c->id, e.msg);
}

static void cmd_finish(struct cmd *c)
{
    struct agent *a = c->a;
    ev_timer_stop(a->loop, &c->drain_w);
    ev_timer_stop(a->loop, &c->timeout_w);
    c->done = true;
    c->exit_seq = ++a->next_exit_seq;
    a->ncmds_running--;
    a->ncmds_exited++;
    cmd_xlink(a, c);
    lstore_exited(&a->logs, &c->log);
    cmd_cut_argv(c);
    cmd_stdin_close(c);
    buf_free(&c->in_buf);
    cmd_acks_settle(c, "exited", "the command exited before its stdin was written");
    log_debug("cmd %llu: exited (status 0x%x)", (unsigned long long)c->id, (unsigned)c->status);
    conn_pending_remove(&c->owner);     /* reaped: nothing left to kill */
    struct waiter *w;
    while ((w = LIST_FIRST(&c->waiters)) != NULL) {
        LIST_REMOVE(w, link);
        cmd_reply_exit(w->pend.conn, w->pend.req_id, c);
        conn_pending_remove(&w->pend);
        free(w);
    }
    rd_pump_cmd(c);
    if (c->in_cgroup && !cmd_cg_populated(c)) {
        cg_release(&a->cg, c->id, -1);
        c->in_cgroup = false;
    }
    cmd_evict(a, 0);
}

static void cmd_cg_prepare_soon(struct agent *a)
{
    if (a->cg.enabled)
        ev_idle_start(a->loop, &a->cg_prepare);
}

static void cmd_cg_prepare_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct agent *a = w->data;
    ev_idle_stop(loop, w);
    cg_prepare(&a->cg, a->next_cmd_id + 1);
}

/* The periodic sweep (CMD_CG_SWEEP_S): the kernel closes a dying process's
 * pipes before it leaves its cgroup, so a cgroup can still look populated
 * when the command finishes. */
static void cmd_cg_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    for (struct cmd *c = a->exited; c; c = c->xnext)
        if (c->in_cgroup && !cmd_cg_populated(c)) {
            cg_release(&a->cg, c->id, -1);
            c->in_cgroup = false;
        }
    cg_sweep(&a->cg);
}

int cmd_init(struct agent *a, struct sa_err *e)
{
    a->scratch = xmalloc(CMD_READ_CHUNK);
    a->spawn_stack_size = CMD_SPAWN_STACK_SIZE;
    a->spawn_stack = mmap(NULL, a->spawn_stack_size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (a->spawn_stack == MAP_FAILED)
        return err_sys(e, errno, "mmap spawn stack");
    spawn_slots_init(&a->spawn_slots);       /* early, while fd numbers are low */
    const char *why_not = NULL;
    cg_init(&a->cg, &why_not);
    if (a->cg.enabled)
        log_info("per-command cgroups under %s", a->cg.base_path);
    else
        log_info("no per-command cgroups (%s): kill reaches process groups only",
                 why_not ? why_not : "unavailable");
    ev_timer_init(&a->cg_sweep, cmd_cg_sweep_cb, CMD_CG_SWEEP_S, CMD_CG_SWEEP_S);
    a->cg_sweep.data = a;
    if (a->cg.enabled)
        ev_timer_start(a->loop, &a->cg_sweep);
    cmd_logs_init(a);
    ev_timer_init(&a->trim, cmd_trim_cb, CMD_TRIM_DELAY_S, 0.);
    a->trim.data = a;
    ev_idle_init(&a->cg_prepare, cmd_cg_prepare_cb);
    a->cg_prepare.data = a;
    cmd_cg_prepare_soon(a);
    return 0;
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
    if (a->loop) {           /* NULL: start-up failed before the loop */
        ev_timer_stop(a->loop, &a->cg_sweep);
        ev_idle_stop(a->loop, &a->cg_prepare);
        ev_timer_stop(a->loop, &a->trim);
    }
    cg_free(&a->cg);
    free(a->scratch);
    a->scratch = NULL;
    if (a->spawn_stack && a->spawn_stack != MAP_FAILED)
        munmap(a->spawn_stack, a->spawn_stack_size);
    a->spawn_stack = NULL;
    spawn_slots_free(&a->spawn_slots);
}
