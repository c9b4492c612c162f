/* sandboxctl — drive a sandbox-agent by hand (docs/sandboxctl.md).
 *
 *   sandboxctl [-c ADDR] ping
 *   sandboxctl [-c ADDR] exec [OPTIONS] -- PROG ARGS...
 *   sandboxctl encode      JSON lines on stdin -> frames on stdout
 *   sandboxctl decode      frames on stdin -> JSON lines on stdout
 *
 * Exit status: the command's own for exec; 0 success; 1 bad input to
 * encode/decode; 2 usage; 126 the command could not be started; 127 program
 * not found; 255 connection or protocol failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "client.h"
#include "err.h"
#include "json.h"
#include "wire.h"

#ifndef SA_VERSION
#define SA_VERSION "unknown"
#endif

#define EXIT_BAD_INPUT 1
#define EXIT_USAGE 2
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define EXIT_CONN 255

#define STDIN_CHUNK 65536               /* largest stdin request */
#define FRAME_OVERHEAD 128              /* a stdin request's bytes besides its data */
#define SEND_QUEUE_MAX (256u << 10)     /* stop reading stdin while this much is queued */
#define LINE_MAX_BYTES (64u << 20)      /* longest JSON line encode accepts */
#define SIGNAL_GIVE_UP 3                /* forwarded signals before leaving anyway */

static const char usage_text[] =
    "usage: sandboxctl [-c ADDR] COMMAND [ARGS...]\n"
    "\n"
    "commands:\n"
    "  ping                       print the agent's version and protocol\n"
    "  exec [OPTIONS] -- PROG ARGS...\n"
    "                             run PROG in the sandbox, streaming its stdin,\n"
    "                             stdout and stderr; exit with its status\n"
    "      --cwd DIR              working directory (default: the agent's workdir)\n"
    "      -e KEY=VAL             set an environment variable (repeatable)\n"
    "      --user NAME            run as this user\n"
    "      --sudo                 run as root\n"
    "      -n                     stdin from /dev/null instead of ours\n"
    "      -t                     run on a pseudo-terminal (interactive)\n"
    "      --timeout SECS         kill the command after SECS seconds\n"
    "      --detach               start it, print its command id, exit\n"
    "  encode                     JSON objects (one per line) on stdin -> frames on stdout\n"
    "  decode                     frames on stdin -> JSON objects (one per line) on stdout\n"
    "\n"
    "options:\n"
    "  -c ADDR                    agent address (default: $SANDBOX_AGENT_ADDR):\n"
    "                             unix:PATH, vsock:CID:PORT, tcp:HOST:PORT, fc:UDS_PATH:PORT\n"
    "  -h, --help                 show this help\n"
    "      --version              show the version\n"
    "\n"
    "exit status: the command's for exec; 1 bad encode/decode input; 2 usage;\n"
    "126 command could not be started; 127 program not found;\n"
    "255 connection or protocol failure.\n";

/* --- messages ------------------------------------------------------------- */

static struct termios tty_saved;
static bool tty_raw;            /* our terminal is in raw mode (exec -t) */

static void warnmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warnmsg(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* in raw mode "\n" does not return the carriage */
    fprintf(stderr, "sandboxctl: %s%s", line, tty_raw ? "\r\n" : "\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sandboxctl: %s\nTry 'sandboxctl --help'.\n", line);
    return EXIT_USAGE;
}

/* The option getopt_long just stumbled on, for a message. */
static const char *opt_name(char **argv)
{
    static char name[4];
    if (optopt > 0 && optopt < 256) {
        snprintf(name, sizeof name, "-%c", optopt);
        return name;
    }
    return argv[optind - 1];
}

/* --- output --------------------------------------------------------------- */

/* Write all of p to fd, waiting when fd is non-blocking. 0, or -errno (the
 * caller decides: EPIPE means the reader is gone). */
static int write_full(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                poll(&pf, 1, -1);
                continue;
            }
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* --- connecting ----------------------------------------------------------- */

/* 0 when there is an address to connect to, else a usage error's status. */
static int need_addr(const char *addr)
{
    if (addr && *addr)
        return 0;
    return usage_error("no agent address: give -c ADDR or set SANDBOX_AGENT_ADDR");
}

static struct client *connect_or_die(const char *addr)
{
    struct client *c;
    struct sa_err e;
    if (client_connect(addr, -1, &c, &e) < 0) {
        warnmsg("%s", e.msg);
        exit(EXIT_CONN);
    }
    return c;
}

/* --- ping ----------------------------------------------------------------- */

static int cmd_ping(const char *addr, int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("ping takes no arguments");
    if (need_addr(addr) != 0)
        return EXIT_USAGE;
    struct client *c = connect_or_die(addr);
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "ping", 0);
    if (client_end(c, &w, &e) < 0 || client_call(c, id, addr_timeout_from_env(), &reply, &e) != 0) {
        warnmsg("ping: %s", e.msg);
        client_free(c);
        return EXIT_CONN;
    }
    const struct client_hello *h = client_hello(c);
    printf("%s protocol %" PRIu64 "\n", h->agent[0] ? h->agent : "(unnamed agent)", h->protocol);
    client_free(c);
    return fflush(stdout) == 0 ? 0 : EXIT_CONN;
}

/* --- encode --------------------------------------------------------------- */

/* Lines of a file descriptor, each bounded by LINE_MAX_BYTES. */
struct lines {
    int fd;
    struct buf b;
    size_t scanned;     /* bytes of b known to hold no '\n' */
    size_t lineno;
    bool eof;
};

/* The next line (without '\n') in *p, *n: 1, 0 at the end, -1 with e. The
 * line stays valid until the next call. */
static int lines_next(struct lines *l, const char **p, size_t *n, struct sa_err *e)
{
    for (;;) {
        uint8_t *start = buf_ptr(&l->b);
        size_t unscanned = buf_size(&l->b) - l->scanned;
        uint8_t *nl = unscanned ? memchr(start + l->scanned, '\n', unscanned) : NULL;
        size_t len = nl ? (size_t)(nl - start) : buf_size(&l->b);
        if (nl || (l->eof && len > 0)) {
            l->lineno++;
            *p = (const char *)start;
            *n = len;
            l->scanned = 0;
            return 1;   /* the caller consumes len + 1 via lines_done */
        }
        if (l->eof)
            return 0;
        l->scanned = len;
        if (len > LINE_MAX_BYTES)
            return err_set(e, EFBIG, "bad_json", "line %zu: longer than %u bytes",
                           l->lineno + 1, LINE_MAX_BYTES);
        ssize_t r = read(l->fd, buf_reserve(&l->b, 65536), 65536);
        if (r < 0 && errno != EINTR)
            return err_sys(e, errno, "read stdin");
        if (r == 0)
            l->eof = true;
        if (r > 0)
            buf_commit(&l->b, (size_t)r);
    }
}

static void lines_done(struct lines *l, size_t n)
{
    buf_consume(&l->b, n < buf_size(&l->b) ? n + 1 : n);
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* One JSON object -> one frame at the tail of out. */
static int encode_line(const char *p, size_t n, msgpack_zone *z, struct buf *out,
                       struct sa_err *e)
{
    msgpack_object o;
    msgpack_zone_clear(z);
    if (json_parse(p, n, z, &o, e) < 0)
        return -1;
    if (o.type != MSGPACK_OBJECT_MAP)
        return err_set(e, EINVAL, "bad_json", "a frame must be a JSON object");
    struct wire_enc w;
    wire_begin(&w, out, o.via.map.size);
    for (uint32_t i = 0; i < o.via.map.size; i++) {
        msgpack_pack_object(&w.pk, o.via.map.ptr[i].key);
        msgpack_pack_object(&w.pk, o.via.map.ptr[i].val);
    }
    wire_end(&w);   /* a line of at most 64 MiB packs into far less than 4 GiB */
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("encode takes no arguments (it reads stdin)");
    struct lines l = { .fd = STDIN_FILENO };
    struct buf out;
    msgpack_zone z;
    struct sa_err e;
    const char *p = NULL;
    size_t n = 0;
    int r, rc = 0;
    buf_init(&l.b);
    buf_init(&out);
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    while ((r = lines_next(&l, &p, &n, &e)) > 0) {
        if (!blank(p, n) && encode_line(p, n, &z, &out, &e) < 0) {
            warnmsg("encode: line %zu: %s", l.lineno, e.msg);
            rc = EXIT_BAD_INPUT;
            break;
        }
        lines_done(&l, n);
        int w = write_full(STDOUT_FILENO, buf_ptr(&out), buf_size(&out));
        buf_reset(&out, 1u << 20);
        if (w < 0) {
            warnmsg("encode: write: %s", strerror(-w));
            rc = EXIT_BAD_INPUT;
            break;
        }
    }
    if (r < 0) {
        warnmsg("encode: %s", e.msg);
        rc = EXIT_BAD_INPUT;
    }
    msgpack_zone_destroy(&z);
    buf_free(&out);
    buf_free(&l.b);
    return rc;
}

/* --- decode --------------------------------------------------------------- */

/* Every complete frame at the head of in -> a JSON line in out. 0 or -1. */
static int decode_frames(struct buf *in, struct buf *out, msgpack_zone *z, size_t *nframe,
                         struct sa_err *e)
{
    uint32_t len;
    int r;
    while ((r = wire_frame_peek(buf_ptr(in), buf_size(in), WIRE_MAX_FRAME_LIMIT, &len, e)) > 0) {
        if (buf_size(in) - WIRE_HDR_LEN < len)
            return 0;
        msgpack_object o;
        msgpack_zone_clear(z);
        ++*nframe;
        if (wire_decode(buf_ptr(in) + WIRE_HDR_LEN, len, z, &o, e) < 0)
            return -1;
        json_write(out, &o);
        buf_append(out, "\n", 1);
        buf_consume(in, WIRE_HDR_LEN + (size_t)len);
    }
    if (r < 0)
        ++*nframe;
    return r;
}

static int decode_loop(struct buf *in, struct buf *out, msgpack_zone *z, struct sa_err *e)
{
    size_t nframe = 0;
    for (;;) {
        ssize_t r = read(STDIN_FILENO, buf_reserve(in, 65536), 65536);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return err_sys(e, errno, "read stdin");
        }
        if (r == 0)
            break;
        buf_commit(in, (size_t)r);
        int d = decode_frames(in, out, z, &nframe, e);
        int w = write_full(STDOUT_FILENO, buf_ptr(out), buf_size(out));
        buf_reset(out, 1u << 20);
        if (d < 0)
            return err_wrap(e, "frame %zu", nframe);
        if (w < 0)
            return err_sys(e, -w, "write");
    }
    if (buf_size(in) > 0)
        return err_set(e, EINVAL, "bad_frame", "frame %zu: truncated: input ends %zu bytes into it",
                       nframe + 1, buf_size(in));
    return 0;
}

static int cmd_decode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("decode takes no arguments (it reads stdin)");
    struct buf in, out;
    msgpack_zone z;
    struct sa_err e;
    buf_init(&in);
    buf_init(&out);
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    int rc = 0;
    if (decode_loop(&in, &out, &z, &e) < 0) {
        warnmsg("decode: %s", e.msg);
        rc = EXIT_BAD_INPUT;
    }
    msgpack_zone_destroy(&z);
    buf_free(&in);
    buf_free(&out);
    return rc;
}

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

static int parse_timeout(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 1e12)
        return -1;
    double want = v * 1000.0;
    *ms = (uint64_t)want;
    if ((double)*ms < want)     /* round up (no libm): 0.0001 s is 1 ms, not none */
        ++*ms;
    return 0;
}

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
            if (parse_timeout(optarg, &o->timeout_ms) < 0)
                return usage_error("--timeout wants a positive number of seconds, not '%s'",
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

struct inflight {
    uint64_t id;                /* the stdin request */
    uint32_t n;                 /* its data bytes */
};

struct session {
    struct client *c;
    uint64_t id;                /* the exec request: events carry it */
    uint64_t cmd;
    bool stdin_open;            /* still forwarding our stdin */
    uint64_t unacked;           /* stdin bytes sent, not acknowledged */
    uint64_t window;
    size_t chunk;               /* largest stdin request data */
    struct inflight *fl;        /* stdin requests awaiting their ok, oldest first */
    size_t nfl, capfl;
    uint64_t offset[2];         /* bytes received per stream: stdout, stderr */
    bool sink_gone[2];          /* our stdout/stderr reader has gone away */
    int nsignals;
    bool exited;
    int code;
    uint8_t *inbuf;
};

static int fail_conn(struct session *s, const struct sa_err *e)
{
    warnmsg("%s", e->msg);
    s->exited = true;
    s->code = EXIT_CONN;
    return -1;
}

static void inflight_push(struct session *s, uint64_t id, uint32_t n)
{
    if (s->nfl == s->capfl) {
        s->capfl = s->capfl ? s->capfl * 2 : 16;
        s->fl = xrealloc(s->fl, s->capfl * sizeof *s->fl);
    }
    s->fl[s->nfl++] = (struct inflight){ id, n };
    s->unacked += n;
}

/* Forget stdin request id; false when it is not one of ours. */
static bool inflight_ack(struct session *s, uint64_t id)
{
    for (size_t i = 0; i < s->nfl; i++) {
        if (s->fl[i].id != id)
            continue;
        s->unacked -= s->fl[i].n;
        memmove(&s->fl[i], &s->fl[i + 1], (s->nfl - i - 1) * sizeof *s->fl);
        s->nfl--;
        return true;
    }
    return false;
}

/* Start a request about our command: type, id and cmd, then nfields more.
 * Returns the request id. */
static uint64_t cmd_begin(struct session *s, struct wire_enc *w, const char *type,
                          uint32_t nfields)
{
    uint64_t id = client_begin(s->c, w, type, nfields + 1);
    wire_kv_uint(w, "cmd", s->cmd);
    return id;
}

static int cmd_end(struct session *s, struct wire_enc *w)
{
    struct sa_err e;
    return client_end(s->c, w, &e) < 0 ? fail_conn(s, &e) : 0;
}

static int send_stdin(struct session *s, const uint8_t *p, size_t n)
{
    struct wire_enc w;
    uint64_t id = cmd_begin(s, &w, "stdin", 1);
    wire_kv_bin(&w, "data", p, n);
    if (cmd_end(s, &w) < 0)
        return -1;
    inflight_push(s, id, (uint32_t)n);
    return 0;
}

static int send_close_stdin(struct session *s)
{
    struct wire_enc w;
    s->stdin_open = false;
    cmd_begin(s, &w, "close_stdin", 0);
    return cmd_end(s, &w);
}

static int send_signal(struct session *s, int sig)
{
    struct wire_enc w;
    cmd_begin(s, &w, "signal", 1);
    wire_kv_uint(&w, "signal", (uint64_t)sig);
    return cmd_end(s, &w);
}

static int send_resize(struct session *s)
{
    struct wire_enc w;
    uint16_t rows, cols;
    tty_size(&rows, &cols);
    cmd_begin(s, &w, "resize", 2);
    wire_kv_uint(&w, "rows", rows);
    wire_kv_uint(&w, "cols", cols);
    return cmd_end(s, &w);
}

/* Our stdin is readable (or at EOF, or gone). */
static int on_stdin(struct session *s)
{
    size_t n = s->chunk;
    if (s->window - s->unacked < n)
        n = (size_t)(s->window - s->unacked);
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
    return s->stdin_open && s->unacked < s->window && client_pending(s->c) < SEND_QUEUE_MAX;
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
    if (off != s->offset[k])    /* offsets have no holes: report, never hide, a loss */
        warnmsg("%s: bytes %" PRIu64 "..%" PRIu64 " were lost", k ? "stderr" : "stdout",
                s->offset[k], off);
    s->offset[k] = off + n;
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
    if (wire_obj_bool(wire_get(m, "timed_out"), &timed_out) && timed_out)
        warnmsg("command %" PRIu64 " timed out and was killed", s->cmd);
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
        warnmsg("the agent dropped part of the output log");
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
    bool was_stdin = inflight_ack(s, id);
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
    msgpack_pack_map(&w->pk, (uint32_t)o->nenv);
    for (size_t i = 0; i < o->nenv; i++) {
        const char *eq = strchr(o->env[i], '=');
        size_t kn = (size_t)(eq - o->env[i]), vn = strlen(eq + 1);
        msgpack_pack_str(&w->pk, kn);
        msgpack_pack_str_body(&w->pk, o->env[i], kn);
        msgpack_pack_str(&w->pk, vn);
        msgpack_pack_str_body(&w->pk, eq + 1, vn);
    }
}

static void pack_pty(struct wire_enc *w)
{
    uint16_t rows, cols;
    const char *term = getenv("TERM");
    bool has_term = term && *term;
    tty_size(&rows, &cols);
    wire_key(w, "pty");
    msgpack_pack_map(&w->pk, has_term ? 3 : 2);
    wire_kv_uint(w, "rows", rows);
    wire_kv_uint(w, "cols", cols);
    if (has_term)
        wire_kv_str(w, "term", term);
}

static uint64_t exec_request(struct client *c, const struct exec_opts *o, struct sa_err *e)
{
    struct wire_enc w;
    uint32_t n = (uint32_t)(1 + (o->nenv > 0) + (o->cwd != NULL) + (o->user != NULL) +
                            o->sudo + o->stdin_null + o->detach + (o->timeout_ms > 0) + o->tty);
    uint64_t id = client_begin(c, &w, "exec", n);
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
    s->window = h->stdin_window;
    s->chunk = STDIN_CHUNK;
    if (s->chunk > h->max_frame - FRAME_OVERHEAD)
        s->chunk = h->max_frame - FRAME_OVERHEAD;
    s->inbuf = xmalloc(s->chunk);
}

static void session_free(struct session *s)
{
    free(s->fl);
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

static int cmd_exec(const char *addr, int argc, char **argv)
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
    if (o.tty && !client_has_cap(c, "pty")) {
        warnmsg("exec -t: not supported by this agent (no 'pty' capability)");
        rc = EXIT_USAGE;
    } else {
        rc = exec_start(c, &o);
    }
    free(o.env);
    client_free(c);
    return rc;
}

/* --- main ----------------------------------------------------------------- */

/* Started with fd 0, 1 or 2 closed, the agent's socket would take its number
 * and be read as our stdin: put /dev/null there first. */
static void std_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n < 0 || (n != fd && (dup2(n, fd) < 0 || close(n) < 0)))
            _exit(EXIT_CONN);
    }
}

int main(int argc, char **argv)
{
    enum { OPT_VERSION = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { NULL, 0, NULL, 0 },
    };
    const char *addr = getenv("SANDBOX_AGENT_ADDR");
    int ch;
    std_fds_open();
    signal(SIGPIPE, SIG_IGN);
    while ((ch = getopt_long(argc, argv, "+:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': addr = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("sandboxctl %s (protocol %d)\n", SA_VERSION, WIRE_PROTOCOL_VERSION); return 0;
        case ':': return usage_error("option %s needs an argument", opt_name(argv));
        default: return usage_error("unknown option %s", opt_name(argv));
        }
    }
    if (optind >= argc)
        return usage_error("no command given");
    const char *cmd = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    if (strcmp(cmd, "encode") == 0)
        return cmd_encode(sub_argc, sub_argv);
    if (strcmp(cmd, "decode") == 0)
        return cmd_decode(sub_argc, sub_argv);
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "ping") == 0)
        return cmd_ping(addr, sub_argc, sub_argv);
    if (strcmp(cmd, "exec") == 0)
        return cmd_exec(addr, sub_argc, sub_argv);
    return usage_error("unknown command '%s'", cmd);
}
