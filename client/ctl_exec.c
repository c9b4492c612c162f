/* ctl_exec.c — sandboxctl exec: start a command and stream its stdin, stdout
 * and stderr (and, with -t, run it on a pseudo-terminal in raw mode), then
 * exit with its status; or with --detach print its id. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "ackwin.h"
#include "addr.h"
#include "buf.h"
#include "client.h"
#include "ctl.h"
#include "err.h"
#include "wire.h"

#define STDIN_CHUNK 65536               /* largest stdin request */
#define FRAME_OVERHEAD 128              /* a stdin request's bytes besides its data */
#define SEND_QUEUE_MAX (256u << 10)     /* stop reading stdin while this much is queued */
#define SIGNAL_GIVE_UP 3                /* forwarded signals before leaving anyway */

static struct termios tty_saved;        /* the terminal's mode before exec -t */

/* --- exec: options -------------------------------------------------------- */

struct exec_opts {
    const char *cwd;
    const char *user;
    bool sudo;
    bool stdin_null;
    bool tty;
    bool detach;
    uint64_t timeout_ms;        /* 0: none */
    const char **env;           /* "KEY=VAL" */
    size_t nenv;
    char **argv;                /* PROG ARGS..., NULL-terminated */
    size_t argc;
};

/* 0, or an exit status for a usage error. */
static int exec_parse(int argc, char **argv, struct exec_opts *o)
{
    enum { OPT_CWD = 256, OPT_USER, OPT_SUDO, OPT_DETACH, OPT_TIMEOUT };
    static const struct option longopts[] = {
        { "cwd", required_argument, NULL, OPT_CWD },
        { "user", required_argument, NULL, OPT_USER },
        { "sudo", no_argument, NULL, OPT_SUDO },
        { "detach", no_argument, NULL, OPT_DETACH },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    o->env = xcalloc((size_t)argc, sizeof *o->env);
    optind = 0;     /* GNU: re-initialise for the sub-command's arguments */
    while ((ch = getopt_long(argc, argv, "+:e:nt", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_CWD: o->cwd = optarg; break;
        case OPT_USER: o->user = optarg; break;
        case OPT_SUDO: o->sudo = true; break;
        case OPT_DETACH: o->detach = true; break;
        case 'n': o->stdin_null = true; break;
        case 't': o->tty = true; break;
        case OPT_TIMEOUT:
            if (client_parse_secs(optarg, &o->timeout_ms) < 0)
                return usage_error("exec: --timeout wants a positive number of seconds, not '%s'",
                                   optarg);
            break;
        case 'e':
            if (optarg[0] == '=' || !strchr(optarg, '='))
                return usage_error("-e wants KEY=VAL, not '%s'", optarg);
            o->env[o->nenv++] = optarg;
            break;
        case ':':
            return usage_error("exec: option %s needs an argument", opt_name(argv));
        default:
            return usage_error("exec: unknown option %s", opt_name(argv));
        }
    }
    if (o->user && o->sudo)
        return usage_error("exec: --user and --sudo exclude each other");
    if (optind >= argc)
        return usage_error("exec: no program given (exec [OPTIONS] -- PROG ARGS...)");
    if (o->detach && !o->tty)
        o->stdin_null = true;   /* nobody would ever write to or close its stdin */
    o->argv = argv + optind;
    o->argc = (size_t)(argc - optind);
    return 0;
}

/* --- exec: terminal ------------------------------------------------------- */

static void tty_restore(void)
{
    if (tty_raw) {
        tcsetattr(STDIN_FILENO, TCSADRAIN, &tty_saved);
        tty_raw = false;
    }
}

static void tty_make_raw(void)
{
    struct termios t;
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &tty_saved) < 0)
        return;
    t = tty_saved;
    cfmakeraw(&t);
    if (tcsetattr(STDIN_FILENO, TCSADRAIN, &t) == 0) {
        tty_raw = true;
        atexit(tty_restore);
    }
}

static void tty_size(uint16_t *rows, uint16_t *cols)
{
    struct winsize ws;
    *rows = 24;
    *cols = 80;
    for (int fd = 0; fd <= 2; fd++) {
        if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
            *rows = ws.ws_row;
            *cols = ws.ws_col;
            return;
        }
    }
}

/* --- exec: signals ---------------------------------------------------------- */

/* Signals become bytes on a self-pipe that the poll loop reads. */
static int sig_pipe[2] = { -1, -1 };

static void sig_cb(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(sig_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

static int sig_setup(bool tty, struct sa_err *e)
{
    static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH };
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return err_sys(e, errno, "pipe2");
    struct sigaction sa = { .sa_handler = sig_cb };
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        if (forwarded[i] == SIGWINCH && !tty)
            continue;
        sigaction(forwarded[i], &sa, NULL);
    }
    return 0;
}

/* --- exec: the session ---------------------------------------------------- */

struct session {
    struct client *c;
    uint64_t id;                /* the exec request: events carry it */
    uint64_t cmd;
    bool stdin_open;            /* still forwarding our stdin */
    struct ackwin_sender *win;  /* stdin requests awaiting their ok (hello's stdin_window) */
    size_t chunk;               /* largest stdin request data */
    uint64_t offset[2];         /* bytes received per stream: stdout, stderr */
    bool sink_gone[2];          /* our stdout/stderr reader has gone away */
    bool resync[2];             /* a gap was reported: offsets may jump once */
    int nsignals;
    bool exited;
    int code;
    uint8_t *inbuf;
    uint64_t timeout_ms;        /* --timeout, for the message; 0: none */
};

static int fail_conn(struct session *s, const struct sa_err *e)
{
    warnmsg("%s", e->msg);
    s->exited = true;
    s->code = EXIT_CONN;
    return -1;
}

/* Start a request about our command: type, id and cmd; the caller adds the
 * rest. Returns the request id. */
static uint64_t session_req_begin(struct session *s, struct wire_enc *w, const char *type)
{
    uint64_t id = client_begin(s->c, w, type);
    wire_kv_uint(w, "cmd", s->cmd);
    return id;
}

static int session_req_end(struct session *s, struct wire_enc *w)
{
    struct sa_err e;
    return client_end(s->c, w, &e) < 0 ? fail_conn(s, &e) : 0;
}

static int send_stdin(struct session *s, const uint8_t *p, size_t n)
{
    struct wire_enc w;
    uint64_t id = session_req_begin(s, &w, "stdin");
    wire_kv_bin(&w, "data", p, n);
    if (session_req_end(s, &w) < 0)
        return -1;
    ackwin_sent(s->win, id, n);
    return 0;
}

static int send_close_stdin(struct session *s)
{
    struct wire_enc w;
    s->stdin_open = false;
    session_req_begin(s, &w, "close_stdin");
    return session_req_end(s, &w);
}

static int send_signal(struct session *s, int sig)
{
    struct wire_enc w;
    session_req_begin(s, &w, "signal");
    wire_kv_uint(&w, "signal", (uint64_t)sig);
    return session_req_end(s, &w);
}

static int send_resize(struct session *s)
{
    struct wire_enc w;
    uint16_t rows, cols;
    tty_size(&rows, &cols);
    session_req_begin(s, &w, "resize");
    wire_kv_uint(&w, "rows", rows);
    wire_kv_uint(&w, "cols", cols);
    return session_req_end(s, &w);
}

/* Our stdin is readable (or at EOF, or gone). */
static int on_stdin(struct session *s)
{
    size_t n = s->chunk;
    if (ackwin_room(s->win) < n)
        n = (size_t)ackwin_room(s->win);
    ssize_t r = read(STDIN_FILENO, s->inbuf, n);
    if (r > 0)
        return send_stdin(s, s->inbuf, (size_t)r);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (r < 0 && errno != EBADF)    /* EBADF: started with stdin closed */
        warnmsg("stdin: %s; closing the command's stdin", strerror(errno));
    return send_close_stdin(s);
}

static bool want_stdin(const struct session *s)
{
    return s->stdin_open && ackwin_room(s->win) > 0 && client_pending(s->c) < SEND_QUEUE_MAX;
}

static int on_signals(struct session *s)
{
    unsigned char sigs[16];
    ssize_t n = read(sig_pipe[0], sigs, sizeof sigs);
    for (ssize_t i = 0; i < n; i++) {
        if (sigs[i] == SIGWINCH) {
            if (send_resize(s) < 0)
                return -1;
            continue;
        }
        if (++s->nsignals >= SIGNAL_GIVE_UP) {
            tty_restore();
            warnmsg("giving up after %d signals; command %" PRIu64 " may still be running",
                    s->nsignals, s->cmd);
            s->exited = true;
            s->code = 128 + sigs[i];
            return -1;
        }
        if (send_signal(s, sigs[i]) < 0)
            return -1;
    }
    return 0;
}

/* An output event: its bytes to our stdout or stderr. */
static int on_output(struct session *s, const msgpack_object *m)
{
    const msgpack_object *st = wire_get(m, "stream");
    int k = wire_obj_is(st, "stdout") ? 0 : wire_obj_is(st, "stderr") ? 1 : -1;
    const char *data;
    size_t n;
    if (k < 0 || !wire_obj_bytes(wire_get(m, "data"), &data, &n)) {
        struct sa_err e;
        err_set(&e, EPROTO, "bad_frame", "malformed output event from the agent");
        return fail_conn(s, &e);
    }
    uint64_t off = s->offset[k];
    wire_obj_uint(wire_get(m, "offset"), &off);
    if (off != s->offset[k] && !s->resync[k])  /* no holes: report, never hide, a loss */
        warnmsg("%s: bytes %" PRIu64 "..%" PRIu64 " were lost", k ? "stderr" : "stdout",
                s->offset[k], off);
    s->offset[k] = off + n;
    s->resync[k] = false;
    if (s->sink_gone[k])
        return 0;
    int r = write_full(k ? STDERR_FILENO : STDOUT_FILENO, data, n);
    if (r < 0) {
        s->sink_gone[k] = true;     /* keep going until the exit */
        if (r != -EPIPE && k == 0)
            warnmsg("stdout: %s", strerror(-r));
    }
    return 0;
}

static int on_exit_event(struct session *s, const msgpack_object *m)
{
    int64_t code = EXIT_CONN;
    if (!wire_obj_int(wire_get(m, "code"), &code))
        warnmsg("exit event without a code");
    bool timed_out = false;
    if (wire_obj_bool(wire_get(m, "timed_out"), &timed_out) && timed_out) {
        char secs[32];
        client_fmt_secs(s->timeout_ms, secs, sizeof secs);
        if (s->timeout_ms)
            warnmsg("command timed out after %s s", secs);
        else
            warnmsg("command timed out");
    }
    s->exited = true;
    s->code = code >= 0 && code <= 255 ? (int)code : EXIT_CONN;
    return 0;
}

/* A message about our exec request. */
static int on_event(struct session *s, const msgpack_object *m)
{
    struct sa_err e;
    if (client_msg_is(m, "output"))
        return on_output(s, m);
    if (client_msg_is(m, "exit"))
        return on_exit_event(s, m);
    if (client_msg_is(m, "gap")) {
        uint64_t from = 0, to = 0;
        wire_obj_uint(wire_get(m, "from"), &from);
        wire_obj_uint(wire_get(m, "to"), &to);
        report_gap(from, to > from ? to : from);
        s->resync[0] = s->resync[1] = true;
        return 0;
    }
    if (client_msg_is(m, "error"))
        client_reply_err(m, &e);
    else
        err_set(&e, EPROTO, "bad_frame", "unexpected message before the command's exit");
    return fail_conn(s, &e);
}

/* A reply to one of our stdin, close_stdin, signal or resize requests. */
static void on_reply(struct session *s, const msgpack_object *m, uint64_t id)
{
    bool was_stdin = ackwin_acked(s->win, id);
    if (!client_msg_is(m, "error"))
        return;
    struct sa_err e;
    client_reply_err(m, &e);
    /* the command finished or stopped reading: our input is simply not wanted */
    bool benign = strcmp(e.code, "exited") == 0 || strcmp(e.code, "stdin_closed") == 0 ||
                  strcmp(e.code, "EPIPE") == 0;
    if (benign) {
        s->stdin_open = false;      /* the command no longer takes input */
        return;
    }
    warnmsg("%s%s", was_stdin ? "stdin: " : "", e.msg);
    if (was_stdin && s->stdin_open)
        send_close_stdin(s);        /* rather than leave the command waiting for more */
}

static int on_message(struct session *s, const msgpack_object *m)
{
    uint64_t id;
    if (!wire_obj_uint(wire_get(m, "id"), &id)) {
        if (client_msg_is(m, "error")) {
            struct sa_err e;
            client_reply_err(m, &e);
            warnmsg("agent: %s", e.msg);
        }
        return 0;   /* the agent closes the connection after such errors */
    }
    if (id == s->id)
        return on_event(s, m);
    on_reply(s, m, id);
    return 0;
}

/* Handle every complete frame already received. */
static int drain_frames(struct session *s)
{
    struct sa_err e;
    msgpack_object m;
    int k;
    while (!s->exited && (k = client_next(s->c, &m, &e)) != 0) {
        if (k < 0)
            return fail_conn(s, &e);
        if (on_message(s, &m) < 0)
            return -1;
    }
    return 0;
}

static int on_socket(struct session *s, short revents)
{
    struct sa_err e;
    if ((revents & POLLOUT) && client_flush(s->c, &e) < 0)
        return fail_conn(s, &e);
    if (!(revents & (POLLIN | POLLHUP | POLLERR)))
        return 0;
    int r = client_read(s->c, &e);
    if (r < 0)
        return fail_conn(s, &e);
    if (drain_frames(s) < 0)
        return -1;
    if (r == 0 && !s->exited) {
        err_set(&e, ECONNRESET, "closed",
                "the agent closed the connection before command %" PRIu64
                " exited (it may still be running)", s->cmd);
        return fail_conn(s, &e);
    }
    return 0;
}

static int session_run(struct session *s)
{
    struct pollfd p[3];
    /* events may have arrived together with the exec's ok */
    if (drain_frames(s) < 0)
        return -1;
    while (!s->exited) {
        struct sa_err e;
        if (client_flush(s->c, &e) < 0)
            return fail_conn(s, &e);
        p[0] = (struct pollfd){ .fd = client_fd(s->c),
                                .events = POLLIN | (client_pending(s->c) ? POLLOUT : 0) };
        p[1] = (struct pollfd){ .fd = sig_pipe[0], .events = POLLIN };
        p[2] = (struct pollfd){ .fd = want_stdin(s) ? STDIN_FILENO : -1, .events = POLLIN };
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            return fail_conn(s, (err_sys(&e, errno, "poll"), &e));
        }
        if (p[1].revents && on_signals(s) < 0)
            return -1;
        if (p[0].revents && on_socket(s, p[0].revents) < 0)
            return -1;
        if (!s->exited && p[2].revents && want_stdin(s) && on_stdin(s) < 0)
            return -1;
    }
    return 0;
}

/* --- exec: the request ---------------------------------------------------- */

static void pack_env(struct wire_enc *w, const struct exec_opts *o)
{
    wire_key(w, "env");
    unsigned env = wire_map_begin(w);
    for (size_t i = 0; i < o->nenv; i++) {
        const char *eq = strchr(o->env[i], '=');
        wire_key_n(w, o->env[i], (size_t)(eq - o->env[i]));
        wire_str(w, eq + 1);
    }
    wire_map_end(w, env);
}

static void pack_pty(struct wire_enc *w)
{
    uint16_t rows, cols;
    const char *term = getenv("TERM");
    bool has_term = term && *term;
    tty_size(&rows, &cols);
    wire_key(w, "pty");
    unsigned pty = wire_map_begin(w);
    wire_kv_uint(w, "rows", rows);
    wire_kv_uint(w, "cols", cols);
    if (has_term)
        wire_kv_str(w, "term", term);
    wire_map_end(w, pty);
}

static uint64_t exec_request(struct client *c, const struct exec_opts *o, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "exec");
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, (uint32_t)o->argc);
    for (size_t i = 0; i < o->argc; i++)
        wire_str(&w, o->argv[i]);
    if (o->nenv > 0)
        pack_env(&w, o);
    if (o->cwd)
        wire_kv_str(&w, "cwd", o->cwd);
    if (o->user)
        wire_kv_str(&w, "user", o->user);
    if (o->sudo)
        wire_kv_bool(&w, "sudo", true);
    if (o->stdin_null)
        wire_kv_str(&w, "stdin", "null");
    if (o->detach)
        wire_kv_bool(&w, "detached", true);
    if (o->timeout_ms > 0)
        wire_kv_uint(&w, "timeout_ms", o->timeout_ms);
    if (o->tty)
        pack_pty(&w);
    return client_end(c, &w, e) < 0 ? 0 : id;
}

/* The exit status for an error reply to exec. */
static int spawn_error_status(const msgpack_object *reply, const struct sa_err *e)
{
    warnmsg("%s", e->msg);
    if (strcmp(e->code, "ENOENT") == 0 && wire_obj_is(wire_get(reply, "stage"), "exec"))
        return EXIT_NOT_FOUND;
    return EXIT_CANNOT_EXEC;
}

static void session_init(struct session *s, struct client *c, uint64_t id, uint64_t cmd,
                         const struct exec_opts *o)
{
    const struct client_hello *h = client_hello(c);
    memset(s, 0, sizeof *s);
    s->c = c;
    s->id = id;
    s->cmd = cmd;
    s->stdin_open = !o->stdin_null;
    s->timeout_ms = o->timeout_ms;
    s->win = xmalloc(sizeof *s->win);
    ackwin_sender_init(s->win, h->stdin_window);
    s->chunk = STDIN_CHUNK;
    if (s->chunk > h->max_frame - FRAME_OVERHEAD)
        s->chunk = h->max_frame - FRAME_OVERHEAD;
    s->inbuf = xmalloc(s->chunk);
}

static void session_free(struct session *s)
{
    free(s->win);
    free(s->inbuf);
}

/* Send the exec request and see it through: its exit status. */
static int exec_start(struct client *c, const struct exec_opts *o)
{
    struct sa_err e;
    msgpack_object reply;
    int rc;
    uint64_t id = exec_request(c, o, &e);
    if (id == 0 || (rc = client_call(c, id, -1, &reply, &e)) < 0) {
        warnmsg("exec: %s", e.msg);
        return EXIT_CONN;
    }
    if (rc == 1)
        return spawn_error_status(&reply, &e);
    uint64_t cmd = 0;
    if (!wire_obj_uint(wire_get(&reply, "cmd"), &cmd)) {
        warnmsg("exec: the agent's reply has no command id");
        return EXIT_CONN;
    }
    if (o->detach) {
        printf("%" PRIu64 "\n", cmd);
        return fflush(stdout) == 0 ? 0 : EXIT_CONN;
    }
    if (sig_setup(o->tty, &e) < 0) {
        warnmsg("%s", e.msg);
        return EXIT_CONN;
    }
    struct session s;
    session_init(&s, c, id, cmd, o);
    if (o->tty)
        tty_make_raw();
    session_run(&s);
    tty_restore();
    session_free(&s);
    return s.code;
}

int verb_exec(const char *addr, int argc, char **argv)
{
    struct exec_opts o;
    int rc = exec_parse(argc, argv, &o);
    if (rc == 0)
        rc = need_addr(addr);
    if (rc != 0) {
        free(o.env);
        return rc;
    }
    struct client *c = connect_or_die(addr);
    if (o.tty)
        rc = need_cap(c, "pty", "exec -t");
    if (rc == 0 && o.detach)
        rc = need_cap(c, "lifecycle", "exec --detach");
    if (rc == 0 && o.timeout_ms > 0)
        rc = need_cap(c, "lifecycle", "exec --timeout");
    if (rc == 0)
        rc = exec_start(c, &o);
    free(o.env);
    client_free(c);
    return rc;
}
