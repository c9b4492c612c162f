#include "fop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ackwin.h"
#include "agent.h"
#include "cmd.h"
#include "fop_io.h"
#include "conn.h"
#include "fdio.h"
#include "log.h"
#include "spawn.h"

/* One chunk waiting for its acknowledgement: sent once the helper's input
 * has taken everything up to `upto`, its mark in the fop's in_win. */
struct fop_ack {
    struct fop_ack *next;
    uint64_t req_id;
    uint64_t upto;
};

struct fop {
    LIST_ENTRY(fop) link;        /* in a->fops */
    struct agent *a;
    struct conn_pending pend;    /* holds its connection; off it once that closed */
    uint64_t id;                 /* the request's id (chunks' ref) */
    enum fop_kind kind;
    pid_t pid;
    ev_child child_w;
    bool reaped;
    int status;
    /* input: upload and write */
    bool has_input;
    int in_fd, ctl_fd;           /* -1 once closed */
    ev_io in_w;
    struct buf in_buf;           /* accepted, not yet written: at most the stdin window */
    struct ackwin in_win;        /* accepted vs written; stdin_window, ACKWIN_MARKS_MAX */
    struct fop_ack *acks, **acks_tail;
    bool in_eof;                 /* the client sent eof: close after in_buf */
    bool in_stopped;             /* the helper stopped reading */
    /* output: the helper's frames */
    int out_fd;
    ev_io out_w;
    struct buf obuf;             /* at most one partial frame + one read */
    bool out_eof, paused;
    bool oneshot;                /* answered by one ok or error (stat, mkdir, ...) */
    bool terminal;               /* the last frame for the request went out */
    /* a helper that makes no progress is killed (--helper-idle-ms), as is a
     * cancelled one (FOP_CANCEL_GRACE_S after its connection closed) */
    ev_timer idle_w, cancel_w;
    ev_tstamp last_progress;     /* a byte from or to it, or its client holding it back */
};

static void fop_out_cb(struct ev_loop *loop, ev_io *w, int revents);
static void fop_in_cb(struct ev_loop *loop, ev_io *w, int revents);
static void fop_child_cb(struct ev_loop *loop, ev_child *w, int revents);
static void fop_idle_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void fop_cancel_cb(struct ev_loop *loop, ev_timer *w, int revents);
static const struct conn_pending_ops fop_pending_ops;

/* --- helper processes ---------------------------------------------------------- */

static void pipe_size(int fd)
{
    (void)fcntl(fd, F_SETPIPE_SZ, (int)FOP_PIPE_SIZE);   /* a bigger pipe, fewer wake-ups */
}

/* The helper's fds: in, out, ctl become 0, 1, 3 (a missing input: /dev/null);
 * everything else above 2 is closed, so the helper holds no connection or
 * command pipe open. */
static int child_fds(int in_fd, int out_fd, int ctl_fd)
{
    enum { HIGH = 64 };
    int fds[3] = { in_fd, out_fd, ctl_fd };
    for (int i = 0; i < 3; i++)       /* out of the way of 0, 1, 3 first */
        if (fds[i] >= 0 && (fds[i] = fcntl(fds[i], F_DUPFD, HIGH)) < 0)
            return -1;
    if (fds[0] < 0 && (fds[0] = open("/dev/null", O_RDONLY)) < 0)
        return -1;
    if (dup2(fds[0], 0) < 0 || dup2(fds[1], 1) < 0)
        return -1;
    if (fds[2] >= 0 && dup2(fds[2], 3) < 0)
        return -1;
    int first = fds[2] >= 0 ? 4 : 3;
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0u) < 0)
        for (int fd = first; fd < 65536; fd++)
            close(fd);
    return 0;
}

static __attribute__((noreturn)) void fop_child(const struct fop_job *j, const struct ident *id,
                                                int in_fd, int out_fd, int ctl_fd, pid_t parent,
                                                const char *helper)
{
    spawn_reset_signals();
    signal(SIGPIPE, SIG_IGN);            /* a gone reader is EPIPE, handled (kept across exec) */
    spawn_oom_default();
    if (child_fds(in_fd, out_fd, ctl_fd) < 0)
        _exit(1);
    if (helper) {                        /* uploads and downloads: sandbox-agent-xfer */
        char **argv = fio_job_argv(helper, j, id, parent);
        char *envp[] = { NULL };
        execve(helper, argv, envp);
        int err = errno;
        fio_init(j, 0);
        fio_fail(err, NULL, helper, "run the archive helper %s", helper);
    }
    if (id && spawn_set_identity(id) < 0)
        _exit(1);                        /* the agent reports "helper died" */
    /* after the identity: a change of credentials clears the death signal */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);                        /* the agent died: nobody to answer */
    umask(0);                            /* every mode is given explicitly */
    fop_child_run(j);
}

#if SA_XFER_EXEC
/* Where sandbox-agent-xfer is: --xfer-helper, else beside our own binary. */
static const char *fop_helper_path(struct agent *a)
{
    if (a->xfer_helper)
        return a->xfer_helper;
    if (a->cfg.xfer_helper) {
        a->xfer_helper = xstrdup(a->cfg.xfer_helper);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            a->xfer_helper = xstrdup(FOP_XFER_HELPER_DEFAULT);
        } else {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            char path[PATH_MAX + sizeof FOP_XFER_HELPER_NAME + 1];
            snprintf(path, sizeof path, "%.*s/%s", (int)(slash - self), self,
                     FOP_XFER_HELPER_NAME);
            a->xfer_helper = xstrdup(path);
        }
    }
    log_info("archive helper: %s", a->xfer_helper);
    return a->xfer_helper;
}
#endif

static struct fop *fop_new(struct conn *c, const struct fop_job *j, pid_t pid, int in_fd,
                           int ctl_fd, int out_fd)
{
    struct agent *a = c->a;
    struct fop *f = xcalloc(1, sizeof *f);
    f->a = a;
    f->id = j->id;
    f->kind = j->kind;
    f->pid = pid;
    f->has_input = in_fd >= 0;
    f->oneshot = j->kind == FOP_STAT || j->kind == FOP_MKDIR || j->kind == FOP_REMOVE ||
                 j->kind == FOP_RENAME || j->kind == FOP_CHMOD;
    f->in_fd = in_fd;
    f->ctl_fd = ctl_fd;
    f->out_fd = out_fd;
    f->acks_tail = &f->acks;
    ackwin_init(&f->in_win, a->cfg.stdin_window);
    buf_init(&f->in_buf);
    buf_init(&f->obuf);
    ev_child_init(&f->child_w, fop_child_cb, pid, 0);
    f->child_w.data = f;
    ev_child_start(a->loop, &f->child_w);
    ev_io_init(&f->out_w, fop_out_cb, out_fd, EV_READ);
    f->out_w.data = f;
    ev_io_start(a->loop, &f->out_w);
    if (in_fd >= 0) {
        ev_io_init(&f->in_w, fop_in_cb, in_fd, EV_WRITE);
        f->in_w.data = f;
    }
    f->last_progress = ev_now(a->loop);
    ev_tstamp check = a->cfg.helper_idle_ms / 1000. / FOP_IDLE_CHECKS;
    ev_timer_init(&f->idle_w, fop_idle_cb, check, check);
    f->idle_w.data = f;
    ev_timer_start(a->loop, &f->idle_w);
    ev_timer_init(&f->cancel_w, fop_cancel_cb, FOP_CANCEL_GRACE_S, 0.);
    f->cancel_w.data = f;
    LIST_INSERT_HEAD(&a->fops, f, link);
    a->nfops++;
    conn_pending_add(c, &f->pend, &fop_pending_ops, j->id, true);
    return f;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int fop_start(struct conn *c, const struct fop_job *j, const struct ident *id,
                     struct sa_err *e)
{
    bool input = j->kind == FOP_UPLOAD || j->kind == FOP_WRITE;
    int in[2] = { -1, -1 }, ctl[2] = { -1, -1 }, out[2] = { -1, -1 };
    if (pipe2(out, O_CLOEXEC) < 0 ||
        (input && (pipe2(in, O_CLOEXEC) < 0 || pipe2(ctl, O_CLOEXEC) < 0))) {
        int err = errno;
        for (int i = 0; i < 2; i++) {
            close_fd(&in[i]);
            close_fd(&ctl[i]);
            close_fd(&out[i]);
        }
        return err_sys(e, err, "pipe for a file helper");
    }
    pipe_size(out[0]);
    if (input)
        pipe_size(in[1]);
    const char *helper = NULL;
#if SA_XFER_EXEC
    if (j->kind == FOP_UPLOAD || j->kind == FOP_DOWNLOAD)
        helper = fop_helper_path(c->a);
#endif
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        fop_child(j, id, in[0], out[1], ctl[0], parent, helper);
    int err = errno;
    close_fd(&in[0]);
    close_fd(&ctl[0]);
    close_fd(&out[1]);
    if (pid < 0) {
        close_fd(&in[1]);
        close_fd(&ctl[1]);
        close_fd(&out[0]);
        return err_sys(e, err, "fork a file helper");
    }
    (void)fd_set_nonblock(out[0], true);
    if (input)
        (void)fd_set_nonblock(in[1], true);
    fop_new(c, j, pid, in[1], ctl[1], out[0]);
    log_debug("conn %llu: request %llu: file helper %d", (unsigned long long)c->serial,
              (unsigned long long)j->id, (int)pid);
    return 0;
}

int fop_request(struct conn *c, const struct wire_req *r, const struct fop_req *q,
                struct sa_err *e)
{
    struct agent *a = c->a;
    struct fop_job j = q->job;
    j.id = r->id;
    j.max_frame = a->cfg.max_frame;
    j.cwd = agent_default_cwd(a);
    j.max_bytes = a->cfg.upload_max_bytes;
    j.max_entries = a->cfg.upload_max_entries;
    if (a->nfops >= FOP_MAX)
        return err_set(e, 0, "too_many", "%d file operations are running", FOP_MAX);
    const struct ident *env_id, *run;
    if (ident_choose(&a->idents, a->dev, a->default_user, q->user, q->sudo, &env_id, &run,
                     e) < 0)
        return -1;
    j.privileged = (run ? run->uid : geteuid()) == 0;
    if ((j.keep_owners || j.allow_devices) && !j.privileged)
        return err_set(e, EPERM, NULL, "keep_owners and allow_devices need a root upload (sudo)");
    return fop_start(c, &j, run, e);
}

/* --- relaying frames ------------------------------------------------------------ */

static struct fop *fop_find(struct conn *c, uint64_t id)
{
    struct fop *f;
    LIST_FOREACH(f, &c->a->fops, link)
        if (f->pend.conn == c && f->id == id && !f->terminal)
            return f;
    return NULL;
}

static void fop_unlink(struct fop *f)
{
    LIST_REMOVE(f, link);
    f->a->nfops--;
}

static void fop_ack_reply(struct fop *f, uint64_t req_id, const char *code, const char *msg)
{
    if (!f->pend.conn)
        return;
    if (!code) {
        wire_msg_ok(conn_out(f->pend.conn), req_id);
    } else {
        struct sa_err e;
        err_set(&e, 0, code, "%s", msg);
        wire_msg_error(conn_out(f->pend.conn), true, req_id, &e);
    }
}

/* Acknowledge the chunks whose bytes are written; with code, all of them
 * (with that error). */
static void fop_acks_settle(struct fop *f, const char *code, const char *msg)
{
    while (f->acks && (code || ackwin_reached(&f->in_win, f->acks->upto))) {
        struct fop_ack *k = f->acks;
        f->acks = k->next;
        ackwin_answered(&f->in_win);
        fop_ack_reply(f, k->req_id, code, msg);
        free(k);
    }
    if (!f->acks)
        f->acks_tail = &f->acks;
    if (f->pend.conn)
        conn_kick(f->pend.conn);
}

static void fop_close_input(struct fop *f, bool complete)
{
    if (!f->has_input)
        return;
    ev_io_stop(f->a->loop, &f->in_w);
    if (complete && f->ctl_fd >= 0) {
        ssize_t n;
        do
            n = write(f->ctl_fd, "E", 1);    /* the pipe is empty: never blocks */
        while (n < 0 && errno == EINTR);
    }
    close_fd(&f->ctl_fd);
    close_fd(&f->in_fd);
    buf_reset(&f->in_buf, 0);
}

static void fop_close_output(struct fop *f)
{
    ev_io_stop(f->a->loop, &f->out_w);
    close_fd(&f->out_fd);
    f->out_eof = true;
    buf_reset(&f->obuf, 0);
}

static void fop_free(struct fop *f)
{
    ev_timer_stop(f->a->loop, &f->idle_w);
    ev_timer_stop(f->a->loop, &f->cancel_w);
    while (f->acks) {
        struct fop_ack *k = f->acks;
        f->acks = k->next;
        free(k);
    }
    buf_free(&f->in_buf);
    buf_free(&f->obuf);
    free(f);
}

static void fop_status_text(int status, char *out, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
}

/* Finished when the helper is reaped and its frames are all relayed. */
static void fop_maybe_done(struct fop *f)
{
    if (!f->reaped || !f->out_eof)
        return;
    struct conn *c = f->pend.conn;
    if (c && !f->terminal) {
        char why[96];
        fop_status_text(f->status, why, sizeof why);
        struct sa_err e;
        err_set(&e, EIO, NULL, "the file helper of request %llu %s", (unsigned long long)f->id,
                why);
        wire_msg_error(conn_out(c), true, f->id, &e);
        log_warn("conn %llu: request %llu: file helper %d %s", (unsigned long long)c->serial,
                 (unsigned long long)f->id, (int)f->pid, why);
    }
    fop_close_input(f, false);
    fop_acks_settle(f, "stopped", "the transfer has stopped; its final reply says why");
    fop_unlink(f);
    if (c) {
        conn_pending_remove(&f->pend);
        conn_kick(c);
    }
    fop_free(f);
}

static void fop_kill(struct fop *f)
{
    if (!f->reaped)
        kill(f->pid, SIGKILL);          /* reaped by fop_child_cb, the one reaper */
}

/* Idle: neither a byte from it nor one taken by it for --helper-idle-ms, while
 * nothing on the client's side held it back (a congested connection, an
 * upload or write waiting for chunks). A helper stuck in the kernel (a hung
 * file system) would otherwise keep one of the FOP_MAX slots forever. */
static void fop_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct fop *f = w->data;
    ev_tstamp now = ev_now(loop);
    bool waiting_input = f->has_input && f->in_fd >= 0 && buf_size(&f->in_buf) == 0 && !f->in_eof;
    if (f->reaped || f->paused || waiting_input) {
        f->last_progress = now;
        return;
    }
    ev_tstamp idle = f->a->cfg.helper_idle_ms / 1000.;
    if (now - f->last_progress < idle)
        return;
    log_warn("request %llu: file helper %d made no progress for %.1f s; killing it",
             (unsigned long long)f->id, (int)f->pid, idle);
    ev_timer_stop(loop, w);
    fop_kill(f);
}

static void fop_cancel_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    fop_kill(w->data);
}

/* A frame the helper wrote that the protocol does not allow: stop it. */
static void fop_broken(struct fop *f, const char *why)
{
    log_err("request %llu: file helper %d: %s; killing it", (unsigned long long)f->id,
            (int)f->pid, why);
    fop_kill(f);
    fop_close_output(f);
}

/* Move every complete frame from the helper to the connection. */
static void fop_relay(struct fop *f)
{
    struct agent *a = f->a;
    while (!f->out_eof) {
        uint32_t len;
        struct sa_err e;
        int r = wire_frame_peek(buf_ptr(&f->obuf), buf_size(&f->obuf), a->cfg.max_frame, &len, &e);
        if (r < 0) {
            fop_broken(f, e.msg);
            return;
        }
        if (r == 0 || buf_size(&f->obuf) < WIRE_HDR_LEN + (size_t)len)
            break;
        const char *t;
        size_t tn;
        if (!wire_peek_type(buf_ptr(&f->obuf) + WIRE_HDR_LEN, len, &t, &tn)) {
            fop_broken(f, "a frame without a type");
            return;
        }
        if (f->terminal) {
            fop_broken(f, "a frame after its final reply");
            return;
        }
        f->terminal = (tn == 3 && memcmp(t, "end", 3) == 0) ||
                      (tn == 5 && memcmp(t, "error", 5) == 0) ||
                      (f->oneshot && tn == 2 && memcmp(t, "ok", 2) == 0);
        if (f->pend.conn)
            buf_append(conn_out(f->pend.conn), buf_ptr(&f->obuf),
                       WIRE_HDR_LEN + (size_t)len);
        buf_consume(&f->obuf, WIRE_HDR_LEN + (size_t)len);
    }
    if (buf_size(&f->obuf) == 0)
        buf_reset(&f->obuf, 64u << 10);
    if (f->pend.conn)
        conn_kick(f->pend.conn);
}

static void fop_out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fop *f = w->data;
    for (int i = 0; i < FOP_READS_PER_CB && !f->out_eof; i++) {
        if (f->pend.conn && conn_congested(f->pend.conn)) {
            f->paused = true;
            ev_io_stop(f->a->loop, &f->out_w);
            conn_pending_starve(&f->pend);   /* fop_drained resumes it */
            break;
        }
        ssize_t n = read(f->out_fd, buf_reserve(&f->obuf, FOP_READ_CHUNK), FOP_READ_CHUNK);
        if (n > 0) {
            f->last_progress = ev_now(f->a->loop);
            buf_commit(&f->obuf, (size_t)n);
            fop_relay(f);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (buf_size(&f->obuf) > 0 && !f->terminal)
            log_warn("request %llu: file helper %d left %zu bytes of a frame",
                     (unsigned long long)f->id, (int)f->pid, buf_size(&f->obuf));
        fop_close_output(f);         /* EOF (or an error: the same to us) */
    }
    fop_maybe_done(f);
}

static void fop_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct fop *f = w->data;
    ev_child_stop(loop, w);
    f->reaped = true;
    f->status = w->rstatus;
    fop_maybe_done(f);
}

/* The connection has room again: relay on. */
static void fop_drained(struct conn_pending *p)
{
    struct fop *f = container_of(p, struct fop, pend);
    if (!f->paused)
        return;
    if (conn_congested(p->conn)) {       /* filled again by another pending */
        conn_pending_starve(p);
        return;
    }
    f->paused = false;
    ev_io_start(f->a->loop, &f->out_w);
}

/* --- input: chunks ------------------------------------------------------------- */

static void fop_in_flush(struct fop *f)
{
    while (buf_size(&f->in_buf) > 0) {
        ssize_t n = write(f->in_fd, buf_ptr(&f->in_buf), buf_size(&f->in_buf));
        if (n > 0) {
            f->last_progress = ev_now(f->a->loop);
            buf_consume(&f->in_buf, (size_t)n);
            ackwin_wrote(&f->in_win, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(f->a->loop, &f->in_w);
            fop_acks_settle(f, NULL, NULL);
            return;
        }
        /* EPIPE: the helper stopped reading (it failed, or the archive ended) */
        f->in_stopped = true;
        fop_close_input(f, false);
        fop_acks_settle(f, "stopped", "the transfer has stopped; its final reply says why");
        return;
    }
    ev_io_stop(f->a->loop, &f->in_w);
    buf_reset(&f->in_buf, 64u << 10);
    if (f->in_eof)
        fop_close_input(f, true);
    fop_acks_settle(f, NULL, NULL);
}

static void fop_in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    fop_in_flush(w->data);
}

int fop_chunk(struct conn *c, const struct wire_req *r, const struct fop_chunk_req *q,
              struct sa_err *e)
{
    uint64_t ref = q->ref;
    const char *data = q->data;
    size_t n = q->n;
    bool eof = q->eof;
    struct fop *f = fop_find(c, ref);
    if (!f)
        return err_set(e, 0, "not_found", "no upload or write %llu on this connection",
                       (unsigned long long)ref);
    if (!f->has_input)
        return err_set(e, 0, "bad_request", "request %llu takes no chunks",
                       (unsigned long long)ref);
    if (f->in_stopped || (f->in_fd < 0 && !f->in_eof))
        return err_set(e, 0, "stopped", "transfer %llu has stopped; its final reply says why",
                       (unsigned long long)ref);
    if (f->in_eof)
        return err_set(e, 0, "bad_request", "transfer %llu has had its eof",
                       (unsigned long long)ref);
    enum ackwin_fit fit = ackwin_admit(&f->in_win, n);
    if (fit == ACKWIN_OVER_BYTES)
        return err_set(e, 0, "window_exceeded",
                       "%zu bytes would exceed the window of %u unacknowledged bytes", n,
                       c->a->cfg.stdin_window);
    if (fit == ACKWIN_OVER_MARKS)
        return err_set(e, 0, "window_exceeded", "%u chunks wait for their acknowledgement",
                       f->in_win.nmarks);
    buf_append(&f->in_buf, data, n);
    f->in_eof = eof;
    struct fop_ack *k = xcalloc(1, sizeof *k);
    k->req_id = r->id;
    k->upto = ackwin_take(&f->in_win, n);
    *f->acks_tail = k;
    f->acks_tail = &k->next;
    fop_in_flush(f);
    return 0;
}

/* --- connections going away, exit -------------------------------------------------- */

/* Its connection closed. Nobody wants its result: an upload or write sees
 * the cancellation (input closed without the eof byte) and gets
 * FOP_CANCEL_GRACE_S to remove its temporary file; any other helper is
 * killed now, whatever it is blocked in. */
static void fop_closed(struct conn_pending *p)
{
    struct fop *f = container_of(p, struct fop, pend);
    if (f->has_input)
        ev_timer_start(f->a->loop, &f->cancel_w);
    else
        fop_kill(f);
    fop_close_input(f, false);
    fop_acks_settle(f, "stopped", "");
    fop_close_output(f);                 /* a helper still writing gets EPIPE and ends */
    fop_maybe_done(f);
}

static const struct conn_pending_ops fop_pending_ops = {fop_closed, fop_drained};

void fop_free_all(struct agent *a)
{
    struct fop *f;
    while ((f = LIST_FIRST(&a->fops)) != NULL) {
        fop_kill(f);
        ev_child_stop(a->loop, &f->child_w);
        conn_pending_remove(&f->pend);
        fop_close_input(f, false);
        fop_close_output(f);
        fop_unlink(f);
        fop_free(f);
    }
    free(a->xfer_helper);
    a->xfer_helper = NULL;
}
