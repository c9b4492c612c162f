/* sandboxctl — drive a sandbox-agent by hand (docs/sandboxctl.md).
 *
 *   sandboxctl [-c ADDR] ping
 *   sandboxctl [-c ADDR] exec [OPTIONS] -- PROG ARGS...
 *   sandboxctl [-c ADDR] logs [-f] [--from POS] ID
 *   sandboxctl [-c ADDR] wait [--timeout SECS] ID
 *   sandboxctl [-c ADDR] kill [-s SIGNAL] ID
 *   sandboxctl [-c ADDR] ps [--all] [--json]
 *   sandboxctl [-c ADDR] inspect ID
 *   sandboxctl [-c ADDR] upload|download|get|put|stat|ls|mkdir|rm|mv|chmod ...
 *                        (files: ctl_files.c)
 *   sandboxctl [-c ADDR] stats [--json]
 *   sandboxctl [-c ADDR] forward [BIND:]LOCAL_PORT:GUEST_PORT... | --stdio GUEST_PORT
 *                        (tunnels: ctl_forward.c)
 *   sandboxctl encode      JSON lines on stdin -> frames on stdout
 *   sandboxctl decode      frames on stdin -> JSON lines on stdout
 *
 * Exit status: the command's own for exec and wait; 0 success; 1 bad input
 * to encode/decode, an error reply to kill/logs/get, output not writable;
 * 2 usage; 124 wait --timeout ran out; 126 the command could not be started;
 * 127 program not found (exec), no such command (wait); 255 connection or
 * protocol failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
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
#include "ctl.h"
#include "err.h"
#include "json.h"
#include "wire.h"

#ifndef SA_VERSION
#define SA_VERSION "unknown"
#endif

#define STDIN_CHUNK 65536               /* largest stdin request */
#define FRAME_OVERHEAD 128              /* a stdin request's bytes besides its data */
#define SEND_QUEUE_MAX (256u << 10)     /* stop reading stdin while this much is queued */
#define LINE_MAX_BYTES (64u << 20)      /* longest JSON line encode accepts */
#define SIGNAL_GIVE_UP 3                /* forwarded signals before leaving anyway */
#define SIGTERM_LINUX 15                /* kill's default, in the guest's numbering */

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
    "      --detach               start it with stdin /dev/null, print its command\n"
    "                             id, exit; read its output with logs\n"
    "  logs [OPTIONS] ID          print the output of command ID that the agent kept\n"
    "      -f, --follow           keep printing new output until the command exits\n"
    "      --from POS             start at this combined log position (default 0)\n"
    "  wait [--timeout SECS] ID   wait for command ID to exit; exit with its status\n"
    "  kill [-s SIGNAL] ID        signal command ID's process group; SIGNAL is a name\n"
    "                             (TERM, SIGKILL, RTMIN+1) or a number; default TERM\n"
    "  release ID... | --all      forget exited commands: their logs and records\n"
    "  ps [OPTIONS]               list the agent's running commands (STARTED is UTC)\n"
    "      -a, --all              also the exited ones it remembers\n"
    "      --json                 one JSON object per command and line, as sent\n"
    "  inspect ID                 print command ID's record as one JSON line\n"
    "  stats [--json]             the sandbox's uptime, load, memory, disk, the agent's\n"
    "                             own use, and CPU and memory of running commands\n"
    "      --json                 the agent's reply as one JSON object on one line\n"
    "\n"
    "files (as the agent's default user; --user NAME or --sudo before the paths;\n"
    "relative remote paths start in the agent's workdir):\n"
    "  upload [--parents] SRC DEST  SRC (a local directory: its contents; a file;\n"
    "                             a .tar/.tar.gz/.tar.zst; - for a tar on stdin)\n"
    "                             extracted into the remote directory DEST\n"
    "      --parents, -p          create DEST if missing\n"
    "      --keep-owners          (--sudo) keep the archive's owners\n"
    "  download [-z] PATH...      a tar of the remote PATHs on stdout (-z: gzip'd)\n"
    "  get REMOTE [LOCAL]         a remote file's bytes into LOCAL (default: stdout)\n"
    "  put [--mode M] [--append] LOCAL REMOTE\n"
    "                             LOCAL's bytes (- for stdin) into the remote file,\n"
    "                             replaced atomically; missing parents are created\n"
    "  stat [-L] [--json] PATH    a remote path's type, size, mode, owner, mtime\n"
    "  ls [-l] [--json] PATH...   a remote directory's entries, sorted\n"
    "  mkdir [-p] [-m MODE] PATH...\n"
    "  rm [-r] [-f] PATH...\n"
    "  mv [-n] FROM TO            rename (-n: fail if TO exists)\n"
    "  chmod MODE PATH...         MODE in octal\n"
    "\n"
    "ports (the agent's `tunnel` capability):\n"
    "  forward [OPTIONS] [BIND:]LOCAL_PORT:GUEST_PORT...\n"
    "                             listen on BIND:LOCAL_PORT (default 127.0.0.1; port 0:\n"
    "                             any free one, printed) and relay each connection to\n"
    "                             GUEST_PORT inside the sandbox, until SIGINT/SIGTERM\n"
    "      --guest-host IP        the address connected to in the guest (default\n"
    "                             127.0.0.1)\n"
    "  forward --stdio GUEST_PORT relay stdin/stdout to GUEST_PORT (ssh ProxyCommand)\n"
    "\n"
    "  encode                     JSON objects (one per line) on stdin -> frames on stdout\n"
    "  decode                     frames on stdin -> JSON objects (one per line) on stdout\n"
    "\n"
    "options:\n"
    "  -c ADDR                    agent address (default: $SANDBOX_AGENT_ADDR):\n"
    "                             unix:PATH, vsock:CID:PORT, tcp:HOST:PORT, fc:UDS_PATH:PORT\n"
    "      --token-file FILE      the shared token, sent when the agent asks for one\n"
    "                             (default: $SANDBOX_AGENT_TOKEN_FILE)\n"
    "  -h, --help                 show this help\n"
    "      --version              show the version\n"
    "\n"
    "exit status: the command's for exec and wait; 0 success; 1 the agent refused\n"
    "(kill, logs, inspect: no such command, a file error, already exited, ...), bad encode/decode\n"
    "input, or output not writable; 2 usage, or a feature this agent lacks;\n"
    "124 wait --timeout ran out; 126 command could not be started; 127 program\n"
    "not found (exec), no such command (wait); 255 connection or protocol failure.\n";

/* --- messages ------------------------------------------------------------- */

static struct termios tty_saved;
static bool tty_raw;            /* our terminal is in raw mode (exec -t) */

void warnmsg(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* in raw mode "\n" does not return the carriage */
    fprintf(stderr, "sandboxctl: %s%s", line, tty_raw ? "\r\n" : "\n");
}

int usage_error(const char *fmt, ...)
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
const char *opt_name(char **argv)
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
int write_full(int fd, const void *p, size_t n)
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

/* Log positions [from, to) of a command's output are gone (a gap event, or
 * positions the agent skipped without one). */
static void report_gap(uint64_t from, uint64_t to)
{
    warnmsg("%" PRIu64 " bytes of output were dropped (log positions %" PRIu64 "..%" PRIu64 ")",
            to - from, from, to);
}

/* --- connecting ----------------------------------------------------------- */

/* 0 when there is an address to connect to, else a usage error's status. */
int need_addr(const char *addr)
{
    if (addr && *addr)
        return 0;
    return usage_error("no agent address: give -c ADDR or set SANDBOX_AGENT_ADDR");
}

/* --token-file, or $SANDBOX_AGENT_TOKEN_FILE: presented when the agent asks. */
static const char *token_file;

int ctl_connect(const char *addr, struct client **out, struct sa_err *e)
{
    struct client *c;
    if (client_connect(addr, -1, &c, e) < 0)
        return -1;
    if (client_hello(c)->auth_required) {
        char token[4096 + 2];
        size_t len = 0;
        int r = (token_file && client_read_token(token_file, token, sizeof token, &len, e) < 0) ||
                client_auth(c, token, len, e) < 0;
        explicit_bzero(token, sizeof token);
        if (r) {
            client_free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

struct client *connect_or_die(const char *addr)
{
    struct client *c;
    struct sa_err e;
    if (ctl_connect(addr, &c, &e) < 0) {
        warnmsg("%s", e.msg);
        exit(EXIT_CONN);
    }
    return c;
}

/* 0 when the agent lists capability cap, else a message and EXIT_USAGE. */
int need_cap(struct client *c, const char *cap, const char *what)
{
    if (client_has_cap(c, cap))
        return 0;
    warnmsg("%s: not supported by this agent (no '%s' capability)", what, cap);
    return EXIT_USAGE;
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
    s->timeout_ms = o->timeout_ms;
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

/* --- commands about one command id: shared ---------------------------------- */

/* The single ID argument left after the options: 0, or a usage error's status. */
static int one_id(const char *what, int argc, char **argv, uint64_t *id)
{
    if (optind >= argc)
        return usage_error("%s: no command id given", what);
    if (argc - optind > 1)
        return usage_error("%s: unexpected argument '%s'", what, argv[optind + 1]);
    if (client_parse_id(argv[optind], id) < 0)
        return usage_error("%s: '%s' is not a command id (a number > 0)", what, argv[optind]);
    return 0;
}

/* A decimal u64 (0 allowed), nothing else. 0 or -1. */
int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
}

/* poll() milliseconds for a timeout in ms; 0 (none) is -1 (forever). */
static int poll_ms(uint64_t ms)
{
    return ms == 0 ? -1 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

struct client *connect_cap(const char *addr, const char *cap, const char *what, int *rc)
{
    *rc = need_addr(addr);
    if (*rc != 0)
        return NULL;
    struct client *c = connect_or_die(addr);
    *rc = need_cap(c, cap, what);
    if (*rc == 0)
        return c;
    client_free(c);
    return NULL;
}

/* Send {type, cmd} and wait for the reply: client_call's result. */
static int call_cmd(struct client *c, const char *type, uint64_t cmd, int timeout_ms,
                    msgpack_object *reply, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, type, 1);
    wire_kv_uint(&w, "cmd", cmd);
    if (client_end(c, &w, e) < 0)
        return -1;
    return client_call(c, id, timeout_ms, reply, e);
}

/* Exit status after a call that did not succeed (message printed): 1 for an
 * error reply, 255 for a failed connection. */
int call_failed(const char *what, int rc, const struct sa_err *e)
{
    warnmsg("%s: %s", what, e->msg);
    return rc < 0 ? EXIT_CONN : EXIT_FAILED;
}

/* Write b to stdout: 0, or EXIT_FAILED (quietly when the reader left). */
int out_flush(struct buf *b, const char *what)
{
    int r = write_full(STDOUT_FILENO, buf_ptr(b), buf_size(b));
    buf_reset(b, 1u << 20);
    if (r == 0)
        return 0;
    if (r != -EPIPE)
        warnmsg("%s: stdout: %s", what, strerror(-r));
    return EXIT_FAILED;
}

/* --- logs ----------------------------------------------------------------- */

struct logs_opts {
    bool follow;
    uint64_t from;
    uint64_t cmd;
};

static int logs_parse(int argc, char **argv, struct logs_opts *o)
{
    enum { OPT_FROM = 256 };
    static const struct option longopts[] = {
        { "follow", no_argument, NULL, 'f' },
        { "from", required_argument, NULL, OPT_FROM },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":f", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f': o->follow = true; break;
        case OPT_FROM:
            if (parse_u64(optarg, &o->from) < 0)
                return usage_error("logs: --from wants a log position (a number), not '%s'",
                                   optarg);
            break;
        case ':': return usage_error("logs: option %s needs an argument", opt_name(argv));
        default: return usage_error("logs: unknown option %s", opt_name(argv));
        }
    }
    return one_id("logs", argc, argv, &o->cmd);
}

struct logs_state {
    uint64_t pos;               /* the next combined log position we expect */
    bool err_gone;              /* our stderr's reader left: drop stderr chunks */
};

/* The stream has reached position pos: anything skipped silently is reported. */
static void logs_reach(struct logs_state *st, uint64_t pos)
{
    if (pos > st->pos) {
        report_gap(st->pos, pos);
        st->pos = pos;
    }
}

/* An output event: 0 to go on, 1 with *status to stop. */
static int logs_output(struct logs_state *st, const msgpack_object *m, int *status)
{
    const msgpack_object *sm = wire_get(m, "stream");
    int fd = wire_obj_is(sm, "stdout") ? STDOUT_FILENO
           : wire_obj_is(sm, "stderr") ? STDERR_FILENO : -1;
    const char *data;
    size_t n;
    uint64_t pos;
    if (fd < 0 || !wire_obj_bytes(wire_get(m, "data"), &data, &n) ||
        !wire_obj_uint(wire_get(m, "pos"), &pos)) {
        warnmsg("logs: malformed output event from the agent");
        *status = EXIT_CONN;
        return 1;
    }
    logs_reach(st, pos);
    st->pos = pos + n;
    if (fd == STDERR_FILENO && st->err_gone)
        return 0;
    int r = write_full(fd, data, n);
    if (r == 0)
        return 0;
    if (fd == STDERR_FILENO) {
        st->err_gone = true;
        return 0;
    }
    if (r != -EPIPE)
        warnmsg("logs: stdout: %s", strerror(-r));
    *status = r == -EPIPE ? 0 : EXIT_FAILED;   /* `logs -f ID | head` just ends */
    return 1;
}

/* One message of the logs stream: 0 to go on, 1 with *status at its end. */
static int logs_event(struct logs_state *st, const msgpack_object *m, int *status)
{
    uint64_t a = 0, b = 0;
    if (client_msg_is(m, "output"))
        return logs_output(st, m, status);
    *status = 0;
    if (client_msg_is(m, "gap")) {
        if (wire_obj_uint(wire_get(m, "from"), &a) && wire_obj_uint(wire_get(m, "to"), &b) &&
            b > a) {
            report_gap(a, b);
            st->pos = b;
        }
        return 0;
    }
    if (client_msg_is(m, "end")) {
        if (wire_obj_uint(wire_get(m, "pos"), &a))
            logs_reach(st, a);
        return 1;
    }
    if (client_msg_is(m, "exit")) {
        /* the log holds every byte the command wrote: both streams' totals */
        if (wire_obj_uint(wire_get(m, "stdout_bytes"), &a) &&
            wire_obj_uint(wire_get(m, "stderr_bytes"), &b))
            logs_reach(st, a + b);
        return 1;
    }
    struct sa_err e;
    if (client_msg_is(m, "error"))
        client_reply_err(m, &e);
    else
        err_set(&e, EPROTO, "bad_frame", "unexpected message in the log stream");
    warnmsg("logs: %s", e.msg);
    *status = EXIT_CONN;
    return 1;
}

static uint64_t logs_request(struct client *c, const struct logs_opts *o, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "logs", 3);
    wire_kv_uint(&w, "cmd", o->cmd);
    wire_kv_uint(&w, "from", o->from);
    wire_kv_bool(&w, "follow", o->follow);
    return client_end(c, &w, e) < 0 ? 0 : id;
}

static int logs_run(struct client *c, const struct logs_opts *o)
{
    struct sa_err e;
    msgpack_object m;
    struct logs_state st = { .pos = o->from };
    uint64_t id = logs_request(c, o, &e);
    int rc = id ? client_call(c, id, -1, &m, &e) : -1;
    if (rc != 0)
        return call_failed("logs", rc, &e);
    int status = 0;
    for (;;) {
        if (client_recv(c, -1, &m, &e) < 0) {
            warnmsg("logs: %s", e.msg);
            return EXIT_CONN;
        }
        if (client_msg_id(&m, id) && logs_event(&st, &m, &status) != 0)
            return status;
    }
}

static int cmd_logs(const char *addr, int argc, char **argv)
{
    struct logs_opts o;
    int rc = logs_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "logs", &rc);
    if (!c)
        return rc;
    rc = logs_run(c, &o);
    client_free(c);
    return rc;
}

/* --- wait ----------------------------------------------------------------- */

struct wait_opts {
    uint64_t cmd;
    uint64_t timeout_ms;        /* 0: wait forever */
};

static int wait_parse(int argc, char **argv, struct wait_opts *o)
{
    enum { OPT_TIMEOUT = 256 };
    static const struct option longopts[] = {
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_TIMEOUT:
            if (client_parse_secs(optarg, &o->timeout_ms) < 0)
                return usage_error("wait: --timeout wants a positive number of seconds, not '%s'",
                                   optarg);
            break;
        case ':': return usage_error("wait: option %s needs an argument", opt_name(argv));
        default: return usage_error("wait: unknown option %s", opt_name(argv));
        }
    }
    return one_id("wait", argc, argv, &o->cmd);
}

/* The exit status wait ends with, from the wait reply. */
static int wait_status(const struct wait_opts *o, const msgpack_object *reply)
{
    int64_t code;
    bool timed_out = false;
    if (!wire_obj_int(wire_get(reply, "code"), &code)) {
        warnmsg("wait: the agent's reply has no exit code");
        return EXIT_CONN;
    }
    if (wire_obj_bool(wire_get(reply, "timed_out"), &timed_out) && timed_out)
        warnmsg("command %" PRIu64 " timed out", o->cmd);
    return code >= 0 && code <= 255 ? (int)code : EXIT_CONN;
}

static int cmd_wait(const char *addr, int argc, char **argv)
{
    struct wait_opts o;
    struct sa_err e;
    msgpack_object reply;
    int rc = wait_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "wait", &rc);
    if (!c)
        return rc;
    rc = call_cmd(c, "wait", o.cmd, poll_ms(o.timeout_ms), &reply, &e);
    if (rc == 0) {
        rc = wait_status(&o, &reply);
    } else if (rc < 0 && o.timeout_ms && e.errnum == ETIMEDOUT) {
        char secs[32];
        client_fmt_secs(o.timeout_ms, secs, sizeof secs);
        warnmsg("wait: command %" PRIu64 " is still running after %s s", o.cmd, secs);
        rc = EXIT_WAIT_TIMEOUT;
    } else {
        warnmsg("wait: %s", e.msg);
        rc = rc == 1 && strcmp(e.code, "not_found") == 0 ? EXIT_NOT_FOUND : EXIT_CONN;
    }
    client_free(c);
    return rc;
}

/* --- kill ----------------------------------------------------------------- */

static int kill_parse(int argc, char **argv, int *sig, uint64_t *cmd)
{
    int ch;
    *sig = SIGTERM_LINUX;
    optind = 0;
    while ((ch = getopt(argc, argv, ":s:")) != -1) {
        switch (ch) {
        case 's':
            *sig = client_signal_parse(optarg);
            if (*sig < 0)
                return usage_error("kill: unknown signal '%s' (a name such as TERM, KILL, "
                                   "SIGINT, RTMIN+1, or a number 1..64)", optarg);
            break;
        case ':': return usage_error("kill: option %s needs an argument", opt_name(argv));
        default: return usage_error("kill: unknown option %s", opt_name(argv));
        }
    }
    return one_id("kill", argc, argv, cmd);
}

/* release --all | release ID...: the agent forgets exited commands. */
static int cmd_release(const char *addr, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "all", no_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    bool all = false;
    int ch, rc;
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":a", longopts, NULL)) != -1) {
        if (ch != 'a')
            return usage_error("release: unknown option %s", opt_name(argv));
        all = true;
    }
    if (all == (optind < argc))
        return usage_error("release: give command ids or --all");
    for (int i = optind; i < argc; i++) {
        uint64_t id;
        if (client_parse_id(argv[i], &id) < 0)
            return usage_error("release: '%s' is not a command id (a number > 0)", argv[i]);
    }
    struct client *c = connect_cap(addr, "lifecycle", "release", &rc);
    if (!c)
        return rc;
    for (int i = all ? argc - 1 : optind; i < argc; i++) {
        struct wire_enc w;
        struct sa_err e;
        msgpack_object reply;
        uint64_t cmd = 0, id = client_begin(c, &w, "release", 1);
        if (all) {
            wire_kv_bool(&w, "all", true);
        } else {
            client_parse_id(argv[i], &cmd);
            wire_kv_uint(&w, "cmd", cmd);
        }
        int r = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
        if (r != 0)
            rc = call_failed("release", r, &e);
        if (r < 0)
            break;
    }
    client_free(c);
    return rc;
}

static int cmd_kill(const char *addr, int argc, char **argv)
{
    int sig;
    uint64_t cmd;
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    int rc = kill_parse(argc, argv, &sig, &cmd);
    if (rc == 0)
        rc = need_addr(addr);
    if (rc != 0)
        return rc;
    struct client *c = connect_or_die(addr);
    uint64_t id = client_begin(c, &w, "signal", 2);
    wire_kv_uint(&w, "cmd", cmd);
    wire_kv_uint(&w, "signal", (uint64_t)sig);
    rc = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
    if (rc != 0)
        rc = call_failed("kill", rc, &e);
    client_free(c);
    return rc;
}

/* --- get ------------------------------------------------------------------ */

/* Append m as a JSON line without its "type" and "id" (a reply -> a record). */
static void record_json(struct buf *b, const msgpack_object *m)
{
    uint32_t n = m->type == MSGPACK_OBJECT_MAP ? m->via.map.size : 0, k = 0;
    msgpack_object_kv *kv = xcalloc(n + 1, sizeof *kv);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        if (!wire_obj_is(key, "type") && !wire_obj_is(key, "id"))
            kv[k++] = m->via.map.ptr[i];
    }
    msgpack_object rec = { .type = MSGPACK_OBJECT_MAP, .via.map = { .size = k, .ptr = kv } };
    json_write(b, &rec);
    buf_append(b, "\n", 1);
    free(kv);
}

static int cmd_inspect(const char *addr, int argc, char **argv)
{
    uint64_t cmd;
    struct sa_err e;
    msgpack_object reply;
    struct buf b;
    optind = 0;
    if (getopt(argc, argv, ":") != -1)
        return usage_error("inspect: unknown option %s", opt_name(argv));
    int rc = one_id("inspect", argc, argv, &cmd);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "inspect", &rc);
    if (!c)
        return rc;
    rc = call_cmd(c, "get", cmd, addr_timeout_from_env(), &reply, &e);
    if (rc == 0) {
        buf_init(&b);
        record_json(&b, &reply);
        rc = out_flush(&b, "inspect");
        buf_free(&b);
    } else {
        rc = call_failed("inspect", rc, &e);
    }
    client_free(c);
    return rc;
}

/* --- ps ------------------------------------------------------------------- */

enum { PS_ID, PS_PID, PS_STATE, PS_CODE, PS_STARTED, PS_DURATION, PS_NFIELDS };
#define PS_FIELD_MAX 32

static const char *const ps_head[PS_NFIELDS] = {
    "ID", "PID", "STATE", "CODE", "STARTED", "DURATION",
};
static const bool ps_right[PS_NFIELDS] = { true, true, false, true, false, true };

struct ps_row {
    char f[PS_NFIELDS][PS_FIELD_MAX];
    struct buf cmd;             /* the CMD column: argv joined */
};

struct ps_opts {
    bool all;
    bool json;
};

static int ps_parse(int argc, char **argv, struct ps_opts *o)
{
    enum { OPT_ALL = 256, OPT_JSON };
    static const struct option longopts[] = {
        { "all", no_argument, NULL, OPT_ALL },
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":a", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a':
        case OPT_ALL: o->all = true; break;
        case OPT_JSON: o->json = true; break;
        default: return usage_error("ps: unknown option %s", opt_name(argv));
        }
    }
    if (optind < argc)
        return usage_error("ps: unexpected argument '%s'", argv[optind]);
    return 0;
}

/* A uint field as text, or "-". */
static void ps_uint(char *out, const msgpack_object *rec, const char *key)
{
    uint64_t v;
    if (wire_obj_uint(wire_get(rec, key), &v))
        snprintf(out, PS_FIELD_MAX, "%" PRIu64, v);
    else
        snprintf(out, PS_FIELD_MAX, "-");
}

/* STATE: the agent's state word (only [a-z_-] kept), "timed-out" for an
 * exit by timeout. */
static void ps_state(char *out, const msgpack_object *rec)
{
    const char *s = "";
    size_t n = 0, k = 0;
    bool timed_out = false;
    if (wire_obj_bool(wire_get(rec, "timed_out"), &timed_out) && timed_out) {
        snprintf(out, PS_FIELD_MAX, "timed-out");
        return;
    }
    wire_obj_str(wire_get(rec, "state"), &s, &n);
    for (size_t i = 0; i < n && k + 1 < PS_FIELD_MAX; i++)
        out[k++] = (s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' || s[i] == '-' ? s[i] : '?';
    out[k] = '\0';
    if (k == 0)
        snprintf(out, PS_FIELD_MAX, "?");
}

/* DURATION: the exit's duration, or for a running command the time since its
 * start by the agent's clock (now_ms). */
static void ps_duration(char *out, const msgpack_object *rec, uint64_t now_ms)
{
    uint64_t ms, started;
    if (wire_obj_uint(wire_get(rec, "duration_ms"), &ms))
        client_fmt_duration(ms, out, PS_FIELD_MAX);
    else if (wire_obj_uint(wire_get(rec, "started_ms"), &started) && now_ms >= started)
        client_fmt_duration(now_ms - started, out, PS_FIELD_MAX);
    else
        snprintf(out, PS_FIELD_MAX, "-");
}

static void ps_fill(struct ps_row *r, const msgpack_object *rec, uint64_t now_ms)
{
    int64_t code;
    uint64_t started;
    ps_uint(r->f[PS_ID], rec, "cmd");
    ps_uint(r->f[PS_PID], rec, "pid");
    ps_state(r->f[PS_STATE], rec);
    if (wire_obj_int(wire_get(rec, "code"), &code))
        snprintf(r->f[PS_CODE], PS_FIELD_MAX, "%" PRId64, code);
    else
        snprintf(r->f[PS_CODE], PS_FIELD_MAX, "-");
    if (wire_obj_uint(wire_get(rec, "started_ms"), &started))
        client_fmt_utc(started, r->f[PS_STARTED], PS_FIELD_MAX);
    else
        snprintf(r->f[PS_STARTED], PS_FIELD_MAX, "-");
    ps_duration(r->f[PS_DURATION], rec, now_ms);
    buf_init(&r->cmd);
    client_join_argv(&r->cmd, wire_get(rec, "argv"));
}

/* Columns of stdout when it is a terminal, else 0 (no truncation). */
static size_t ps_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
        return ws.ws_col;
    return 0;
}

/* One line: the fields padded to widths, then cmd cut to the terminal. */
static void ps_line(struct buf *b, const char *const *f, const size_t *widths, const char *cmd,
                    size_t cmdlen, size_t term_cols)
{
    size_t col = 0;
    char cell[PS_FIELD_MAX + 8];
    for (int i = 0; i < PS_NFIELDS; i++) {
        int w = (int)widths[i];
        int n = snprintf(cell, sizeof cell, ps_right[i] ? "%*s  " : "%-*s  ", w, f[i]);
        buf_append(b, cell, (size_t)n);
        col += (size_t)n;
    }
    if (term_cols)
        cmdlen = col < term_cols ? client_fit_width(cmd, cmdlen, term_cols - col) : 0;
    buf_append(b, cmd, cmdlen);
    buf_append(b, "\n", 1);
}

static void ps_table(struct buf *b, struct ps_row *rows, size_t n)
{
    size_t widths[PS_NFIELDS], cols = ps_width();
    for (int i = 0; i < PS_NFIELDS; i++) {
        widths[i] = strlen(ps_head[i]);
        for (size_t r = 0; r < n; r++)
            if (strlen(rows[r].f[i]) > widths[i])
                widths[i] = strlen(rows[r].f[i]);
    }
    ps_line(b, ps_head, widths, "CMD", 3, cols);
    for (size_t r = 0; r < n; r++) {
        const char *f[PS_NFIELDS];
        for (int i = 0; i < PS_NFIELDS; i++)
            f[i] = rows[r].f[i];
        ps_line(b, f, widths, (const char *)buf_ptr(&rows[r].cmd), buf_size(&rows[r].cmd), cols);
    }
}

/* The rows of every page, rendered once all have come (column widths). */
struct ps_rows {
    struct ps_row *v;
    size_t n, cap;
};

static void ps_add(struct ps_rows *rs, const msgpack_object *list, uint64_t now_ms)
{
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        if (rs->n == rs->cap) {
            rs->cap = rs->cap ? 2 * rs->cap : 64;
            rs->v = xrealloc(rs->v, rs->cap * sizeof *rs->v);
        }
        memset(&rs->v[rs->n], 0, sizeof *rs->v);
        ps_fill(&rs->v[rs->n++], &list->via.array.ptr[i], now_ms);
    }
}

static void ps_rows_free(struct ps_rows *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        buf_free(&rs->v[i].cmd);
    free(rs->v);
}

/* The agent's clock, ms since the epoch (ping), so that running commands'
 * durations do not depend on the host's clock agreeing with the guest's. */
static int agent_time(struct client *c, uint64_t *now_ms, struct sa_err *e)
{
    struct wire_enc w;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "ping", 0);
    int rc = client_end(c, &w, e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, e);
    if (rc == 0 && !wire_obj_uint(wire_get(&reply, "time_ms"), now_ms))
        *now_ms = 0;
    return rc;
}

/* One page of `list` (PROTOCOL.md "get, list, wait"): records with ids below
 * cursor (0: from the newest). */
static int ps_list(struct client *c, const struct ps_opts *o, uint64_t cursor,
                   msgpack_object *reply, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "list", cursor ? 2 : 1);
    wire_kv_bool(&w, "running", !o->all);
    if (cursor)
        wire_kv_uint(&w, "cursor", cursor);
    if (client_end(c, &w, e) < 0)
        return -1;
    int rc = client_call(c, id, addr_timeout_from_env(), reply, e);
    const msgpack_object *list = rc == 0 ? wire_get(reply, "commands") : NULL;
    if (rc == 0 && (!list || list->type != MSGPACK_OBJECT_ARRAY))
        return err_set(e, EPROTO, "bad_frame", "the agent's list reply has no commands array");
    return rc;
}

static int cmd_ps(const char *addr, int argc, char **argv)
{
    struct ps_opts o;
    struct sa_err e;
    msgpack_object reply;
    uint64_t now_ms = 0;
    struct buf b;
    int rc = ps_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "ps", &rc);
    if (!c)
        return rc;
    if (!o.json && (rc = agent_time(c, &now_ms, &e)) != 0) {
        rc = call_failed("ps", rc, &e);
        client_free(c);
        return rc;
    }
    struct ps_rows rows = {0};
    uint64_t cursor = 0;
    bool more = true;
    buf_init(&b);
    while (more) {                       /* every page, newest first */
        if ((rc = ps_list(c, &o, cursor, &reply, &e)) != 0) {
            rc = call_failed("ps", rc, &e);
            goto out;
        }
        const msgpack_object *list = wire_get(&reply, "commands");
        if (!o.json)
            ps_add(&rows, list, now_ms);
        for (uint32_t i = 0; o.json && i < list->via.array.size; i++) {
            json_write(&b, &list->via.array.ptr[i]);
            buf_append(&b, "\n", 1);
        }
        more = wire_obj_bool(wire_get(&reply, "more"), &more) && more &&
               wire_obj_uint(wire_get(&reply, "cursor"), &cursor) && cursor > 0;
    }
    if (!o.json)
        ps_table(&b, rows.v, rows.n);
    rc = out_flush(&b, "ps");
out:
    ps_rows_free(&rows);
    buf_free(&b);
    client_free(c);
    return rc;
}

/* --- stats ---------------------------------------------------------------- */

static uint64_t stats_u(const msgpack_object *m, const char *key)
{
    uint64_t v;
    return wire_obj_uint(wire_get(m, key), &v) ? v : 0;
}

/* One formatted line (at most 255 bytes) appended to b. */
static void stats_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stats_printf(struct buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Bytes for people: "512 B", "3.1 KiB" ... "1.2 TiB". */
static void stats_fmt_bytes(uint64_t v, char *out, size_t n)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double d = (double)v;
    size_t u = 0;
    while (d >= 1024. && u + 1 < sizeof unit / sizeof unit[0]) {
        d /= 1024.;
        u++;
    }
    if (u == 0)
        snprintf(out, n, "%" PRIu64 " B", v);
    else
        snprintf(out, n, "%.1f %s", d, unit[u]);
}

static void stats_load(struct buf *b, const msgpack_object *reply)
{
    const msgpack_object *l = wire_get(reply, "load");
    stats_printf(b, "load        ");
    for (uint32_t i = 0; l && l->type == MSGPACK_OBJECT_ARRAY && i < l->via.array.size && i < 3; i++) {
        const msgpack_object *x = &l->via.array.ptr[i];
        double d = x->type == MSGPACK_OBJECT_FLOAT64 || x->type == MSGPACK_OBJECT_FLOAT32
                       ? x->via.f64 : 0.;
        stats_printf(b, "%s%.2f", i ? " " : "", d);
    }
    stats_printf(b, "\n");
}

static void stats_render(struct buf *b, const msgpack_object *r)
{
    char t1[32], t2[32], t3[32];
    client_fmt_duration(stats_u(r, "uptime_ms"), t1, sizeof t1);
    stats_printf(b, "uptime      %s\n", t1);
    stats_load(b, r);
    stats_fmt_bytes(stats_u(r, "mem_available"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "mem_total"), t2, sizeof t2);
    stats_printf(b, "memory      %s available of %s\n", t1, t2);
    stats_fmt_bytes(stats_u(r, "disk_free"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "disk_total"), t2, sizeof t2);
    stats_printf(b, "disk        %s free of %s (the workdir's filesystem)\n", t1, t2);
    stats_fmt_bytes(stats_u(r, "agent_rss"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "log_bytes"), t2, sizeof t2);
    stats_printf(b, "agent       rss %s, %" PRIu64 " fds, %" PRIu64 " connections, logs %s, "
               "generation %" PRIu64 "\n", t1, stats_u(r, "agent_fds"),
               stats_u(r, "connections"), t2, stats_u(r, "generation"));
    stats_printf(b, "commands    %" PRIu64 " running, %" PRIu64 " exited\n",
               stats_u(r, "commands_running"), stats_u(r, "commands_exited"));
    if (wire_get(r, "tunnels_open")) {           /* agents with the tunnel capability */
        stats_fmt_bytes(stats_u(r, "tunnel_bytes_in"), t1, sizeof t1);
        stats_fmt_bytes(stats_u(r, "tunnel_bytes_out"), t2, sizeof t2);
        stats_printf(b, "tunnels     %" PRIu64 " open, %" PRIu64 " total, %s in, %s out\n",
                     stats_u(r, "tunnels_open"), stats_u(r, "tunnels_total"), t1, t2);
    }
    const msgpack_object *l = wire_get(r, "commands");
    if (!l || l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size == 0)
        return;
    stats_printf(b, "%8s %8s %8s %10s\n", "ID", "PID", "CPU", "RSS");
    for (uint32_t i = 0; i < l->via.array.size; i++) {
        const msgpack_object *c = &l->via.array.ptr[i];
        client_fmt_duration(stats_u(c, "cpu_ms"), t1, sizeof t1);
        stats_fmt_bytes(stats_u(c, "rss"), t3, sizeof t3);
        stats_printf(b, "%8" PRIu64 " %8" PRIu64 " %8s %10s\n", stats_u(c, "cmd"), stats_u(c, "pid"),
                   t1, t3);
    }
}

static int cmd_stats(const char *addr, int argc, char **argv)
{
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 },
    };
    bool json = false;
    int ch, rc;
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (ch != OPT_JSON)
            return usage_error("stats: unknown option %s", opt_name(argv));
        json = true;
    }
    if (optind < argc)
        return usage_error("stats: unexpected argument '%s'", argv[optind]);
    if ((rc = need_addr(addr)) != 0)
        return rc;
    struct client *c = connect_or_die(addr);
    if ((rc = need_cap(c, "guest", "stats")) != 0) {
        client_free(c);
        return rc;
    }
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "stats", 0);
    rc = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
    if (rc != 0) {
        rc = call_failed("stats", rc, &e);
        client_free(c);
        return rc;
    }
    struct buf b;
    buf_init(&b);
    if (json) {
        json_write(&b, &reply);
        buf_append(&b, "\n", 1);
    } else {
        stats_render(&b, &reply);
    }
    rc = out_flush(&b, "stats");
    buf_free(&b);
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
    enum { OPT_VERSION = 256, OPT_TOKEN_FILE };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
        { NULL, 0, NULL, 0 },
    };
    const char *addr = getenv("SANDBOX_AGENT_ADDR");
    token_file = getenv("SANDBOX_AGENT_TOKEN_FILE");
    int ch;
    std_fds_open();
    signal(SIGPIPE, SIG_IGN);
    while ((ch = getopt_long(argc, argv, "+:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': addr = optarg; break;
        case OPT_TOKEN_FILE: token_file = optarg; break;
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
    static const struct {
        const char *name;
        int (*fn)(const char *addr, int argc, char **argv);
    } cmds[] = {
        { "ping", cmd_ping }, { "exec", cmd_exec }, { "logs", cmd_logs }, { "wait", cmd_wait },
        { "kill", cmd_kill }, { "ps", cmd_ps },     { "inspect", cmd_inspect },
        { "release", cmd_release },
        { "stats", cmd_stats },
        { "upload", cmd_upload }, { "download", cmd_download }, { "get", cmd_fget },
        { "put", cmd_put }, { "stat", cmd_stat }, { "ls", cmd_ls }, { "mkdir", cmd_mkdir },
        { "rm", cmd_rm }, { "mv", cmd_mv }, { "chmod", cmd_chmod },
        { "forward", cmd_forward },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(addr, sub_argc, sub_argv);
    return usage_error("unknown command '%s'", cmd);
}
