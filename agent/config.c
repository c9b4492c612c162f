#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "wire.h"

static const char usage[] =
    "usage: sandbox-agent [OPTIONS]\n"
    "\n"
    "The in-guest agent of a microVM sandbox: runs commands for the host over\n"
    "a msgpack protocol (protocol/PROTOCOL.md).\n"
    "\n"
    "  --listen ADDR          listen on ADDR; repeatable (at most 16). ADDR is\n"
    "                         vsock:PORT (any CID), unix:PATH (mode 0600, a stale\n"
    "                         socket is replaced) or tcp:127.0.0.1:PORT.\n"
    "                         default: vsock:7071\n"
    "  --workdir DIR          default cwd of commands (default /vercel/sandbox)\n"
    "  --user NAME            default user of commands (default vercel-sandbox)\n"
    "  --dev                  dev mode: run every command as the agent's own user\n"
    "                         (always on when the agent is not root)\n"
    "  --max-frame BYTES      largest frame accepted (4096..16777216, default 1048576)\n"
    "  --drain-ms MS          after a command exits, how long to keep reading output\n"
    "                         that descendants still write (default 1000)\n"
    "  --stdin-window BYTES   unacknowledged stdin per command (default 1048576)\n"
    "  --log-cap BYTES        output kept per command for replay (default 16 MiB)\n"
    "  --log-total-cap BYTES  output kept for all commands together (default 128 MiB)\n"
    "  --token-file PATH      require every connection to present the token in PATH\n"
    "                         (1..4096 bytes, one trailing newline stripped) with an\n"
    "                         `auth` request before any other request\n"
    "  --insecure-tcp-any-address\n"
    "                         allow tcp: listeners on non-loopback addresses\n"
    "                         (anyone who reaches the port can run commands as root)\n"
    "  -v, --verbose          log debug messages\n"
    "  -q, --quiet            log only warnings and errors\n"
    "  -h, --help             this text\n"
    "  -V, --version          print the version\n"
    "\n"
    "PID-1 mode (when the agent is PID 1, or with --init; docs/agent.md \"PID 1\"):\n"
    "  --init                 init mode even when not PID 1: kernel command line\n"
    "                         (sandbox_agent.listen=, .workdir=, .user=, .hostname=,\n"
    "                         .token=; flags win), graceful shutdown on\n"
    "                         SIGTERM/SIGINT/SIGPWR, then exit 0\n"
    "  --no-mount             as PID 1: skip the system duties (mounts, hostname,\n"
    "                         loopback, /dev/kmsg logging), e.g. in a PID namespace\n"
    "  --hostname NAME        hostname set as PID 1 (default sandbox)\n"
    "  --grace-ms MS          shutdown: time between SIGTERM and SIGKILL to the\n"
    "                         commands (0..600000, default 3000)\n";

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* PID-1 mode options (init.h), kept apart from the others. */
enum { O_INIT = 512, O_NOMOUNT, O_HOSTNAME, O_GRACE };

static int cfg_hostname_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64;           /* HOST_NAME_MAX */
}

static int cfg_parse_init_opt(struct cfg *c, int o, const char *arg, struct sa_err *e)
{
    switch (o) {
    case O_INIT: c->init = true; break;
    case O_NOMOUNT: c->no_mount = true; break;
    case O_HOSTNAME:
        if (!cfg_hostname_ok(arg))
            return err_set(e, EINVAL, NULL, "--hostname: expected 1..64 characters");
        c->hostname = arg;
        c->flags_set |= CFG_SET_HOSTNAME;
        break;
    case O_GRACE:
        if (parse_u32(arg, 0, 600000, &c->grace_ms) < 0)
            return err_set(e, EINVAL, NULL, "--grace-ms: expected 0..600000");
        break;
    }
    return 0;
}

int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e)
{
    enum { O_LISTEN = 256, O_WORKDIR, O_USER, O_DEV, O_MAXFRAME, O_DRAIN, O_WINDOW, O_TCPANY,
           O_LOGCAP, O_LOGTOTAL, O_TOKEN };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"workdir", required_argument, NULL, O_WORKDIR},
        {"user", required_argument, NULL, O_USER},
        {"dev", no_argument, NULL, O_DEV},
        {"max-frame", required_argument, NULL, O_MAXFRAME},
        {"drain-ms", required_argument, NULL, O_DRAIN},
        {"stdin-window", required_argument, NULL, O_WINDOW},
        {"insecure-tcp-any-address", no_argument, NULL, O_TCPANY},
        {"log-cap", required_argument, NULL, O_LOGCAP},
        {"log-total-cap", required_argument, NULL, O_LOGTOTAL},
        {"token-file", required_argument, NULL, O_TOKEN},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"init", no_argument, NULL, O_INIT},
        {"no-mount", no_argument, NULL, O_NOMOUNT},
        {"hostname", required_argument, NULL, O_HOSTNAME},
        {"grace-ms", required_argument, NULL, O_GRACE},
        {NULL, 0, NULL, 0},
    };
    memset(c, 0, sizeof *c);
    c->workdir = CFG_DEFAULT_WORKDIR;
    c->user = CFG_DEFAULT_USER;
    c->max_frame = WIRE_MAX_FRAME_DEFAULT;
    c->drain_ms = CFG_DEFAULT_DRAIN_MS;
    c->stdin_window = 1u << 20;
    c->log_cap = CFG_DEFAULT_LOG_CAP;
    c->log_total_cap = CFG_DEFAULT_LOG_TOTAL_CAP;
    c->log_level = LOG_INFO;
    c->hostname = CFG_DEFAULT_HOSTNAME;
    c->grace_ms = CFG_DEFAULT_GRACE_MS;

    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "vqhV", opts, NULL)) != -1) {
        c->flags_set |= o == O_LISTEN ? CFG_SET_LISTEN : o == O_WORKDIR ? CFG_SET_WORKDIR
                      : o == O_USER ? CFG_SET_USER : 0;
        if (o >= O_INIT) {
            if (cfg_parse_init_opt(c, o, optarg, e) < 0)
                return -1;
            continue;
        }
        switch (o) {
        case O_LISTEN:
            if (c->nlisten == CFG_MAX_LISTEN)
                return err_set(e, EINVAL, NULL, "at most %d --listen addresses", CFG_MAX_LISTEN);
            c->listen[c->nlisten++] = optarg;
            break;
        case O_WORKDIR: c->workdir = optarg; break;
        case O_USER: c->user = optarg; break;
        case O_DEV: c->dev = true; break;
        case O_TCPANY: c->tcp_any = true; break;
        case O_TOKEN: c->token_file = optarg; break;
        case O_MAXFRAME:
            if (parse_u32(optarg, WIRE_MAX_FRAME_MIN, WIRE_MAX_FRAME_LIMIT, &c->max_frame) < 0)
                return err_set(e, EINVAL, NULL, "--max-frame: expected %u..%u bytes",
                               WIRE_MAX_FRAME_MIN, WIRE_MAX_FRAME_LIMIT);
            break;
        case O_DRAIN:
            if (parse_u32(optarg, 0, 600000, &c->drain_ms) < 0)
                return err_set(e, EINVAL, NULL, "--drain-ms: expected 0..600000");
            break;
        case O_WINDOW:
            if (parse_u32(optarg, 4096, 64u << 20, &c->stdin_window) < 0)
                return err_set(e, EINVAL, NULL, "--stdin-window: expected 4096..67108864");
            break;
        case O_LOGCAP:
            if (parse_u64(optarg, 64u << 10, 1ull << 40, &c->log_cap) < 0)
                return err_set(e, EINVAL, NULL, "--log-cap: expected 65536..2^40 bytes");
            break;
        case O_LOGTOTAL:
            if (parse_u64(optarg, 64u << 10, 1ull << 40, &c->log_total_cap) < 0)
                return err_set(e, EINVAL, NULL, "--log-total-cap: expected 65536..2^40 bytes");
            break;
        case 'v': c->log_level = LOG_DEBUG; break;
        case 'q': c->log_level = LOG_WARN; break;
        case 'h': fputs(usage, stdout); return 1;
        case 'V': printf("sandbox-agent %s (protocol %d)\n", SA_VERSION, WIRE_PROTOCOL_VERSION); return 1;
        default: return err_set(e, EINVAL, NULL, "bad usage (see --help)");
        }
    }
    if (optind < argc)
        return err_set(e, EINVAL, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (c->log_total_cap < c->log_cap)
        c->log_total_cap = c->log_cap;
    if (c->workdir[0] == '\0')
        return err_set(e, EINVAL, NULL, "--workdir is empty");
    if (c->nlisten == 0)
        c->listen[c->nlisten++] = CFG_DEFAULT_LISTEN;
    return 0;
}

int cfg_load_token(struct cfg *c, struct sa_err *e)
{
    if (!c->token_file && c->token_inline) {
        /* sandbox_agent.token= on the kernel command line (init mode) */
        size_t n = strlen(c->token_inline);
        if (n == 0 || n > CFG_TOKEN_MAX)
            return err_set(e, EINVAL, NULL, "sandbox_agent.token: the token must be 1..%d bytes",
                           CFG_TOKEN_MAX);
        memcpy(c->token, c->token_inline, n);
        c->token_len = n;
        return 0;
    }
    if (!c->token_file)
        return 0;
    cleanup_close int fd = open(c->token_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_sys(e, errno, "--token-file %s", c->token_file);
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        log_warn("--token-file %s is readable by others (mode %03o)", c->token_file,
                 (unsigned)(st.st_mode & 0777));
    char buf[CFG_TOKEN_MAX + 3];          /* the token, "\r\n", and one byte too many */
    size_t n = 0;
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_sys(e, errno, "reading --token-file %s", c->token_file);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n > 0 && n <= CFG_TOKEN_MAX) {
        memcpy(c->token, buf, n);
        c->token_len = n;
    }
    explicit_bzero(buf, sizeof buf);
    if (c->token_len == 0)
        return err_set(e, EINVAL, NULL, "--token-file %s: the token must be 1..%d bytes",
                       c->token_file, CFG_TOKEN_MAX);
    return 0;
}

/* One sandbox_agent.KEY=VALUE word. 0, or -1 with e filled. */
static int cfg_cmdline_key(struct cfg *c, const char *key, const char *val, bool *listen_reset,
                           struct sa_err *e)
{
    if (strcmp(key, "token") == 0) {
        if (!*val)
            return err_set(e, EINVAL, NULL, "sandbox_agent.token is empty");
        c->token_inline = val;
        return 0;
    }
    if (strcmp(key, "listen") != 0 && strcmp(key, "workdir") != 0 && strcmp(key, "user") != 0 &&
        strcmp(key, "hostname") != 0) {
        log_warn("kernel command line: unknown key sandbox_agent.%s ignored", key);
        return 0;
    }
    if (!*val)
        return err_set(e, EINVAL, NULL, "sandbox_agent.%s is empty", key);
    if (strcmp(key, "listen") == 0) {
        if (c->flags_set & CFG_SET_LISTEN)
            return 0;
        if (!*listen_reset) {          /* the kernel's list replaces the default */
            c->nlisten = 0;
            *listen_reset = true;
        }
        if (c->nlisten == CFG_MAX_LISTEN)
            return err_set(e, EINVAL, NULL, "sandbox_agent.listen: at most %d addresses",
                           CFG_MAX_LISTEN);
        c->listen[c->nlisten++] = val;
    } else if (strcmp(key, "workdir") == 0) {
        if (!(c->flags_set & CFG_SET_WORKDIR))
            c->workdir = val;
    } else if (strcmp(key, "user") == 0) {
        if (!(c->flags_set & CFG_SET_USER))
            c->user = val;
    } else {
        if (!cfg_hostname_ok(val))
            return err_set(e, EINVAL, NULL, "sandbox_agent.hostname: expected 1..64 characters");
        if (!(c->flags_set & CFG_SET_HOSTNAME))
            c->hostname = val;
    }
    return 0;
}

int cfg_apply_cmdline(struct cfg *c, const char *cmdline, struct sa_err *e)
{
    static const char prefix[] = "sandbox_agent.";
    cfg_free(c);
    c->cmdline_buf = xstrdup(cmdline);
    bool listen_reset = false;
    int rc = 0;
    struct sa_err e1;
    char *save = NULL;
    for (char *w = strtok_r(c->cmdline_buf, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(w, prefix, sizeof prefix - 1) != 0)
            continue;
        char *key = w + sizeof prefix - 1;
        char *eq = strchr(key, '=');
        if (!eq) {
            log_warn("kernel command line: sandbox_agent.%s without a value ignored", key);
            continue;
        }
        *eq = '\0';
        if (cfg_cmdline_key(c, key, eq + 1, &listen_reset, &e1) < 0 && rc == 0) {
            *e = e1;
            rc = -1;
        }
    }
    return rc;
}

void cfg_free(struct cfg *c)
{
    free(c->cmdline_buf);
    c->cmdline_buf = NULL;
}
