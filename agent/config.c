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
    "  --upload-max-bytes BYTES\n"
    "                         cap on one upload's file data, written or skipped:\n"
    "                         stops decompression bombs (default 8 GiB)\n"
    "  --upload-max-entries N cap on one upload's entries (default 1048576)\n"
    "  --xfer-helper PATH     the archive helper run for uploads and downloads\n"
    "                         (default: sandbox-agent-xfer beside this binary)\n"
    "  --helper-idle-ms MS    kill a file helper that shows no progress this long\n"
    "                         (1000..86400000, default 600000)\n"
    "  --max-connections N    open connections at once; one more is told too_many\n"
    "                         and closed (1..65536, default 1024)\n"
    "  --max-commands N       running commands at once; an exec beyond is told\n"
    "                         too_many (1..65536, default 4096)\n"
    "  --keep-exited N        exited commands remembered, the oldest exit forgotten\n"
    "                         first (1..65536, default 4096)\n"
    "  --tunnel off|loopback|any\n"
    "                         what a `connect` request (a tunnel to a TCP port in the\n"
    "                         guest) may reach: nothing, loopback addresses, or\n"
    "                         loopback and the guest's own addresses (default any)\n"
    "  --max-tunnels N        tunnels open at once (1..65536, default 128)\n"
    "  --token-file PATH      require every connection to present the token in PATH\n"
    "                         (1..4096 bytes, one trailing newline stripped) with an\n"
    "                         `auth` request before any other request; a tcp:\n"
    "                         listener needs it (or --insecure-tcp)\n"
    "  --insecure-tcp         allow tcp: listeners without a token: every process\n"
    "                         that reaches the port can run commands as root\n"
    "  --allow-uid UID        unix listeners: also serve peers of this uid (root and\n"
    "                         the agent's own uid always are); repeatable (16)\n"
    "  --vsock-allow-cid CID  vsock listeners: serve peers of this CID; repeatable\n"
    "                         (16), replaces the default 2 (the host); `any`: all\n"
    "  --config FILE          read settings from FILE: `key = value` lines, keys are\n"
    "                         the long option names (listen, workdir, ..., `dev = true`),\n"
    "                         `#` comment lines; at most 64 KiB, lines at most 4 KiB.\n"
    "                         Flags win over the file, the file over the kernel\n"
    "                         command line (init mode), that over the defaults\n"
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
    "                         .token=, .token_file=, .vsock_allow_cid=,\n"
    "                         .insecure_tcp=, .tunnel=; flags and --config win),\n"
    "                         graceful shutdown on SIGTERM/SIGINT/SIGPWR, then exit 0\n"
    "  --no-mount             as PID 1: skip the system duties (mounts, hostname,\n"
    "                         loopback, /dev/kmsg logging), e.g. in a PID namespace\n"
    "  --hostname NAME        hostname set as PID 1 (default sandbox)\n"
    "  --grace-ms MS          shutdown: time between SIGTERM and SIGKILL to the\n"
    "                         commands (0..600000, default 3000); also the `shutdown`\n"
    "                         request's grace period outside init mode\n";

/* Long names are also the config file's keys. */
static const struct option cfg_opts[] = {
    {"listen", required_argument, NULL, CFG_O_LISTEN},
    {"workdir", required_argument, NULL, CFG_O_WORKDIR},
    {"user", required_argument, NULL, CFG_O_USER},
    {"dev", no_argument, NULL, CFG_O_DEV},
    {"max-frame", required_argument, NULL, CFG_O_MAXFRAME},
    {"drain-ms", required_argument, NULL, CFG_O_DRAIN},
    {"stdin-window", required_argument, NULL, CFG_O_WINDOW},
    {"insecure-tcp-any-address", no_argument, NULL, CFG_O_TCPANY},
    {"insecure-tcp", no_argument, NULL, CFG_O_INSECURETCP},
    {"log-cap", required_argument, NULL, CFG_O_LOGCAP},
    {"log-total-cap", required_argument, NULL, CFG_O_LOGTOTAL},
    {"upload-max-bytes", required_argument, NULL, CFG_O_UPBYTES},
    {"upload-max-entries", required_argument, NULL, CFG_O_UPENTRIES},
    {"xfer-helper", required_argument, NULL, CFG_O_XFERHELPER},
    {"helper-idle-ms", required_argument, NULL, CFG_O_HELPERIDLE},
    {"max-connections", required_argument, NULL, CFG_O_MAXCONN},
    {"max-commands", required_argument, NULL, CFG_O_MAXCMDS},
    {"keep-exited", required_argument, NULL, CFG_O_KEEPEXITED},
    {"tunnel", required_argument, NULL, CFG_O_TUNNEL},
    {"max-tunnels", required_argument, NULL, CFG_O_MAXTUNNELS},
    {"token-file", required_argument, NULL, CFG_O_TOKEN},
    {"init", no_argument, NULL, CFG_O_INIT},
    {"no-mount", no_argument, NULL, CFG_O_NOMOUNT},
    {"hostname", required_argument, NULL, CFG_O_HOSTNAME},
    {"grace-ms", required_argument, NULL, CFG_O_GRACE},
    {"allow-uid", required_argument, NULL, CFG_O_ALLOWUID},
    {"vsock-allow-cid", required_argument, NULL, CFG_O_VSOCKCID},
    {"config", required_argument, NULL, CFG_O_CONFIG},
    {"verbose", no_argument, NULL, CFG_O_VERBOSE},
    {"quiet", no_argument, NULL, CFG_O_QUIET},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

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
    uint64_t v;
    if (parse_u64(s, lo, hi, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int cfg_hostname_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64;           /* HOST_NAME_MAX */
}

/* A boolean: no value (a flag), or a config file's true/false/yes/no/1/0. */
static int cfg_bool(const char *arg, bool *out)
{
    if (!arg || !strcmp(arg, "true") || !strcmp(arg, "yes") || !strcmp(arg, "1"))
        *out = true;
    else if (!strcmp(arg, "false") || !strcmp(arg, "no") || !strcmp(arg, "0"))
        *out = false;
    else
        return -1;
    return 0;
}

static int cfg_set_bool(struct cfg *c, int o, const char *arg, struct sa_err *e)
{
    bool v;
    if (cfg_bool(arg, &v) < 0)
        return err_set(e, EINVAL, NULL, "expected true or false");
    switch (o) {
    case CFG_O_DEV: c->dev = v; break;
    case CFG_O_TCPANY: c->tcp_any = v; break;
    case CFG_O_INSECURETCP: c->insecure_tcp = v; break;
    case CFG_O_INIT: c->init = v; break;
    case CFG_O_NOMOUNT: c->no_mount = v; break;
    case CFG_O_VERBOSE: if (v) c->log_level = LOG_DEBUG; break;
    case CFG_O_QUIET: if (v) c->log_level = LOG_WARN; break;
    }
    return 0;
}

/* --allow-uid and --vsock-allow-cid: one more entry. */
static int cfg_add_id(uint32_t *list, int *n, const char *arg, const char *what, struct sa_err *e)
{
    if (*n == CFG_MAX_ALLOW)
        return err_set(e, EINVAL, NULL, "at most %d %s entries", CFG_MAX_ALLOW, what);
    if (parse_u32(arg, 0, 0xfffffffeu, &list[*n]) < 0)
        return err_set(e, EINVAL, NULL, "%s: expected a number 0..4294967294, not '%s'", what, arg);
    (*n)++;
    return 0;
}

static int cfg_add_cid(struct cfg *c, const char *arg, struct sa_err *e)
{
    if (strcmp(arg, "any") == 0) {
        c->vsock_any = true;
        return 0;
    }
    return cfg_add_id(c->vsock_cids, &c->nvsock_cids, arg, "--vsock-allow-cid", e);
}

static int cfg_set_num(struct cfg *c, int o, const char *arg, struct sa_err *e)
{
    switch (o) {
    case CFG_O_MAXFRAME:
        if (parse_u32(arg, WIRE_MAX_FRAME_MIN, WIRE_MAX_FRAME_LIMIT, &c->max_frame) < 0)
            return err_set(e, EINVAL, NULL, "--max-frame: expected %u..%u bytes",
                           WIRE_MAX_FRAME_MIN, WIRE_MAX_FRAME_LIMIT);
        break;
    case CFG_O_DRAIN:
        if (parse_u32(arg, 0, 600000, &c->drain_ms) < 0)
            return err_set(e, EINVAL, NULL, "--drain-ms: expected 0..600000");
        break;
    case CFG_O_WINDOW:
        if (parse_u32(arg, 4096, 64u << 20, &c->stdin_window) < 0)
            return err_set(e, EINVAL, NULL, "--stdin-window: expected 4096..67108864");
        break;
    case CFG_O_LOGCAP:
        if (parse_u64(arg, 64u << 10, 1ull << 40, &c->log_cap) < 0)
            return err_set(e, EINVAL, NULL, "--log-cap: expected 65536..2^40 bytes");
        break;
    case CFG_O_LOGTOTAL:
        if (parse_u64(arg, 64u << 10, 1ull << 40, &c->log_total_cap) < 0)
            return err_set(e, EINVAL, NULL, "--log-total-cap: expected 65536..2^40 bytes");
        break;
    case CFG_O_UPBYTES:
        if (parse_u64(arg, 1, 1ull << 50, &c->upload_max_bytes) < 0)
            return err_set(e, EINVAL, NULL, "--upload-max-bytes: expected 1..2^50 bytes");
        break;
    case CFG_O_UPENTRIES:
        if (parse_u64(arg, 1, 1ull << 32, &c->upload_max_entries) < 0)
            return err_set(e, EINVAL, NULL, "--upload-max-entries: expected 1..2^32");
        break;
    case CFG_O_HELPERIDLE:
        if (parse_u32(arg, 1000, 86400000, &c->helper_idle_ms) < 0)
            return err_set(e, EINVAL, NULL, "--helper-idle-ms: expected 1000..86400000");
        break;
    case CFG_O_GRACE:
        if (parse_u32(arg, 0, 600000, &c->grace_ms) < 0)
            return err_set(e, EINVAL, NULL, "--grace-ms: expected 0..600000");
        break;
    case CFG_O_MAXCONN: case CFG_O_MAXCMDS: case CFG_O_KEEPEXITED: case CFG_O_MAXTUNNELS: {
        uint32_t *v = o == CFG_O_MAXCONN ? &c->max_connections
                    : o == CFG_O_MAXCMDS ? &c->max_commands
                    : o == CFG_O_MAXTUNNELS ? &c->max_tunnels : &c->keep_exited;
        if (parse_u32(arg, 1, CFG_LIMIT_MAX, v) < 0)
            return err_set(e, EINVAL, NULL, "expected 1..%u", CFG_LIMIT_MAX);
        break;
    }
    }
    return 0;
}

static int cfg_set_tunnel(struct cfg *c, const char *arg, struct sa_err *e)
{
    if (strcmp(arg, "off") == 0)
        c->tunnel = CFG_TUNNEL_OFF;
    else if (strcmp(arg, "loopback") == 0)
        c->tunnel = CFG_TUNNEL_LOOPBACK;
    else if (strcmp(arg, "any") == 0)
        c->tunnel = CFG_TUNNEL_ANY;
    else
        return err_set(e, EINVAL, NULL, "--tunnel: expected off, loopback or any");
    return 0;
}

/* One setting, from a flag or a config file line. arg points into argv or
 * c->file_buf (it must outlive c). */
static int cfg_set(struct cfg *c, int o, const char *arg, struct sa_err *e)
{
    switch (o) {
    case CFG_O_LISTEN:
        if (c->nlisten == CFG_MAX_LISTEN)
            return err_set(e, EINVAL, NULL, "at most %d --listen addresses", CFG_MAX_LISTEN);
        c->listen[c->nlisten++] = arg;
        return 0;
    case CFG_O_WORKDIR: c->workdir = arg; return 0;
    case CFG_O_USER: c->user = arg; return 0;
    case CFG_O_TOKEN: c->token_file = arg; return 0;
    case CFG_O_CONFIG: c->config_file = arg; return 0;
    case CFG_O_XFERHELPER: c->xfer_helper = arg; return 0;
    case CFG_O_HOSTNAME:
        if (!cfg_hostname_ok(arg))
            return err_set(e, EINVAL, NULL, "--hostname: expected 1..64 characters");
        c->hostname = arg;
        return 0;
    case CFG_O_ALLOWUID: return cfg_add_id(c->allow_uids, &c->nallow_uids, arg, "--allow-uid", e);
    case CFG_O_VSOCKCID: return cfg_add_cid(c, arg, e);
    case CFG_O_TUNNEL: return cfg_set_tunnel(c, arg, e);
    case CFG_O_DEV: case CFG_O_TCPANY: case CFG_O_INIT: case CFG_O_NOMOUNT:
    case CFG_O_VERBOSE: case CFG_O_QUIET: case CFG_O_INSECURETCP:
        return cfg_set_bool(c, o, arg, e);
    default:
        return cfg_set_num(c, o, arg, e);
    }
}

static void cfg_defaults(struct cfg *c)
{
    memset(c, 0, sizeof *c);
    c->workdir = CFG_DEFAULT_WORKDIR;
    c->user = CFG_DEFAULT_USER;
    c->max_frame = WIRE_MAX_FRAME_DEFAULT;
    c->drain_ms = CFG_DEFAULT_DRAIN_MS;
    c->stdin_window = 1u << 20;
    c->log_cap = CFG_DEFAULT_LOG_CAP;
    c->log_total_cap = CFG_DEFAULT_LOG_TOTAL_CAP;
    c->upload_max_bytes = CFG_DEFAULT_UPLOAD_MAX_BYTES;
    c->upload_max_entries = CFG_DEFAULT_UPLOAD_MAX_ENTRIES;
    c->log_level = LOG_INFO;
    c->hostname = CFG_DEFAULT_HOSTNAME;
    c->grace_ms = CFG_DEFAULT_GRACE_MS;
    c->helper_idle_ms = CFG_DEFAULT_HELPER_IDLE_MS;
    c->max_connections = CFG_DEFAULT_MAX_CONNECTIONS;
    c->max_commands = CFG_DEFAULT_MAX_COMMANDS;
    c->keep_exited = CFG_DEFAULT_KEEP_EXITED;
    c->tunnel = CFG_TUNNEL_ANY;
    c->max_tunnels = CFG_DEFAULT_MAX_TUNNELS;
}

/* After flags and the config file: the defaults of the lists, the checks. */
static int cfg_finish(struct cfg *c, struct sa_err *e)
{
    if (c->log_total_cap < c->log_cap)
        c->log_total_cap = c->log_cap;
    if (c->workdir[0] == '\0')
        return err_set(e, EINVAL, NULL, "--workdir is empty");
    if (c->nlisten == 0)
        c->listen[c->nlisten++] = CFG_DEFAULT_LISTEN;
    if (c->nvsock_cids == 0 && !c->vsock_any)
        c->vsock_cids[c->nvsock_cids++] = CFG_HOST_CID;
    return 0;
}

int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e)
{
    cfg_defaults(c);
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "vqhV", cfg_opts, NULL)) != -1) {
        if (o == 'v' || o == 'q')
            o = o == 'v' ? CFG_O_VERBOSE : CFG_O_QUIET;
        if (o == 'h') {
            fputs(usage, stdout);
            return 1;
        }
        if (o == 'V') {
            printf("sandbox-agent %s (protocol %d)\n", SA_VERSION, WIRE_PROTOCOL_VERSION);
            return 1;
        }
        if (o < CFG_O_LISTEN || o > CFG_O_LAST)
            return err_set(e, EINVAL, NULL, "bad usage (see --help)");
        if (cfg_set(c, o, optarg, e) < 0)
            return -1;
        c->flags_set |= CFG_BIT(o);
    }
    if (optind < argc)
        return err_set(e, EINVAL, NULL, "unexpected argument '%s' (see --help)", argv[optind]);
    if (c->config_file && cfg_load_file(c, c->config_file, e) < 0)
        return -1;
    return cfg_finish(c, e);
}

/* ---- the config file ------------------------------------------------------ */

static char *cfg_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int cfg_file_key(const char *key)
{
    for (const struct option *op = cfg_opts; op->name; op++)
        if (strcmp(op->name, key) == 0 && op->val >= CFG_O_LISTEN && op->val != CFG_O_CONFIG)
            return op->val;
    return -1;
}

/* A repeatable key's first line in the file replaces the list (the default,
 * or what an earlier source put there). */
static void cfg_list_reset(struct cfg *c, int o)
{
    if (o == CFG_O_LISTEN)
        c->nlisten = 0;
    else if (o == CFG_O_ALLOWUID)
        c->nallow_uids = 0;
    else if (o == CFG_O_VSOCKCID) {
        c->nvsock_cids = 0;
        c->vsock_any = false;
    }
}

/* One line (NUL-terminated, newline stripped). `given`: what flags set. */
static int cfg_file_line(struct cfg *c, char *line, unsigned given, unsigned *seen,
                         struct sa_err *e)
{
    char *s = cfg_trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq)
        return err_set(e, EINVAL, NULL, "expected `key = value`");
    *eq = '\0';
    char *key = cfg_trim(s), *val = cfg_trim(eq + 1);
    int o = cfg_file_key(key);
    if (o < 0)
        return err_set(e, EINVAL, NULL, "unknown key '%.64s'", key);
    if (given & CFG_BIT(o))
        return 0;                  /* a flag set it: flags win */
    if (*val == '\0')
        return err_set(e, EINVAL, NULL, "%s: empty value", key);
    if (!(*seen & CFG_BIT(o)))
        cfg_list_reset(c, o);
    *seen |= CFG_BIT(o);
    return cfg_set(c, o, val, e);
}

int cfg_apply_file(struct cfg *c, const char *text, size_t n, const char *name, struct sa_err *e)
{
    if (memchr(text, '\0', n))
        return err_set(e, EINVAL, NULL, "%s: a NUL byte in the file", name);
    free(c->file_buf);
    c->file_buf = xstrndup(text, n);
    unsigned given = c->flags_set, seen = 0;
    char *p = c->file_buf;
    for (unsigned lineno = 1; *p; lineno++) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (len > CFG_LINE_MAX)
            return err_set(e, EINVAL, NULL, "%s:%u: line longer than %d bytes", name, lineno,
                           CFG_LINE_MAX);
        if (nl)
            *nl = '\0';
        if (cfg_file_line(c, p, given, &seen, e) < 0)
            return err_wrap(e, "%s:%u", name, lineno);
        p += len;
    }
    c->flags_set |= seen;
    return 0;
}

int cfg_load_file(struct cfg *c, const char *path, struct sa_err *e)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_sys(e, errno, "--config %s", path);
    cleanup_free char *buf = xmalloc(CFG_FILE_MAX + 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, CFG_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_sys(e, errno, "reading --config %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > CFG_FILE_MAX)
            return err_set(e, EFBIG, NULL, "--config %s: larger than %u bytes", path,
                           CFG_FILE_MAX);
    }
    return cfg_apply_file(c, buf, n, path, e);
}

/* ---- peer checks ------------------------------------------------------------ */

bool cfg_vsock_cid_allowed(const struct cfg *c, uint32_t cid)
{
    if (c->vsock_any)
        return true;
    for (int i = 0; i < c->nvsock_cids; i++)
        if (c->vsock_cids[i] == cid)
            return true;
    return false;
}

bool cfg_uid_allowed(const struct cfg *c, uint32_t uid, uint32_t self)
{
    if (uid == 0 || uid == self)
        return true;
    for (int i = 0; i < c->nallow_uids; i++)
        if (c->allow_uids[i] == uid)
            return true;
    return false;
}

int cfg_load_token(struct cfg *c, struct sa_err *e)
{
    if (!c->token_file && c->token_inline) {
        /* sandbox_agent.token= on the kernel command line (init mode) */
        log_warn("THE TOKEN IS ON THE KERNEL COMMAND LINE: every user in the VM can read it "
                 "in /proc/cmdline and connect as the host; use a root-only token file "
                 "(--token-file, or sandbox_agent.token_file=) instead");
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

/* sandbox_agent.listen / .vsock_allow_cid: repeatable; the kernel's list
 * replaces the default (flags and the config file win over both). */
static int cfg_cmdline_list(struct cfg *c, int o, const char *val, unsigned *reset,
                            struct sa_err *e)
{
    if (c->flags_set & CFG_BIT(o))
        return 0;
    if (!(*reset & CFG_BIT(o)))
        cfg_list_reset(c, o);
    *reset |= CFG_BIT(o);
    if (o == CFG_O_VSOCKCID)
        return cfg_add_cid(c, val, e) < 0 ? err_wrap(e, "sandbox_agent.vsock_allow_cid") : 0;
    if (c->nlisten == CFG_MAX_LISTEN)
        return err_set(e, EINVAL, NULL, "sandbox_agent.listen: at most %d addresses",
                       CFG_MAX_LISTEN);
    c->listen[c->nlisten++] = val;
    return 0;
}

/* One sandbox_agent.KEY=VALUE word. 0, or -1 with e filled. */
static int cfg_cmdline_key(struct cfg *c, const char *key, const char *val, unsigned *reset,
                           struct sa_err *e)
{
    if (strcmp(key, "token") == 0) {
        if (!*val)
            return err_set(e, EINVAL, NULL, "sandbox_agent.token is empty");
        c->token_inline = val;
        return 0;
    }
    if (strcmp(key, "modules") == 0 || strcmp(key, "net") == 0) {
        if (!*val)
            return err_set(e, EINVAL, NULL, "sandbox_agent.%s is empty", key);
        *(key[0] == 'm' ? &c->modules : &c->net) = val;
        return 0;
    }
    if (strcmp(key, "insecure_tcp_any_address") == 0 || strcmp(key, "insecure_tcp") == 0) {
        int o = key[12] == '\0' ? CFG_O_INSECURETCP : CFG_O_TCPANY;
        if (strcmp(val, "1") != 0 && strcmp(val, "true") != 0 && strcmp(val, "0") != 0 &&
            strcmp(val, "false") != 0)
            return err_set(e, EINVAL, NULL, "sandbox_agent.%s: 1 or 0", key);
        if (!(c->flags_set & CFG_BIT(o)))
            *(o == CFG_O_TCPANY ? &c->tcp_any : &c->insecure_tcp) = val[0] == '1' || val[0] == 't';
        return 0;
    }
    if (strcmp(key, "tunnel") == 0) {
        if (c->flags_set & CFG_BIT(CFG_O_TUNNEL))
            return 0;
        return cfg_set(c, CFG_O_TUNNEL, val, e) < 0 ? err_wrap(e, "sandbox_agent.%s", key) : 0;
    }
    if (strcmp(key, "token_file") == 0) {
        if (!*val)
            return err_set(e, EINVAL, NULL, "sandbox_agent.token_file is empty");
        if (!(c->flags_set & CFG_BIT(CFG_O_TOKEN)))
            c->token_file = val;
        return 0;
    }
    int lim = strcmp(key, "max_connections") == 0 ? CFG_O_MAXCONN
            : strcmp(key, "max_commands") == 0 ? CFG_O_MAXCMDS
            : strcmp(key, "keep_exited") == 0 ? CFG_O_KEEPEXITED
            : strcmp(key, "max_tunnels") == 0 ? CFG_O_MAXTUNNELS : 0;
    if (lim) {
        if (c->flags_set & CFG_BIT(lim))
            return 0;
        return cfg_set_num(c, lim, val, e) < 0 ? err_wrap(e, "sandbox_agent.%s", key) : 0;
    }
    if (strcmp(key, "listen") != 0 && strcmp(key, "workdir") != 0 && strcmp(key, "user") != 0 &&
        strcmp(key, "hostname") != 0 && strcmp(key, "vsock_allow_cid") != 0) {
        log_warn("kernel command line: unknown key sandbox_agent.%s ignored", key);
        return 0;
    }
    if (!*val)
        return err_set(e, EINVAL, NULL, "sandbox_agent.%s is empty", key);
    if (strcmp(key, "listen") == 0) {
        return cfg_cmdline_list(c, CFG_O_LISTEN, val, reset, e);
    } else if (strcmp(key, "vsock_allow_cid") == 0) {
        return cfg_cmdline_list(c, CFG_O_VSOCKCID, val, reset, e);
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
    free(c->cmdline_buf);
    c->cmdline_buf = xstrdup(cmdline);
    unsigned reset = 0;
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
        if (cfg_cmdline_key(c, key, eq + 1, &reset, &e1) < 0 && rc == 0) {
            *e = e1;
            rc = -1;
        }
    }
    /* a bad sandbox_agent.vsock_allow_cid must not leave nobody allowed */
    if (c->nvsock_cids == 0 && !c->vsock_any)
        c->vsock_cids[c->nvsock_cids++] = CFG_HOST_CID;
    if (c->nlisten == 0)
        c->listen[c->nlisten++] = CFG_DEFAULT_LISTEN;
    return rc;
}

void cfg_free(struct cfg *c)
{
    free(c->cmdline_buf);
    free(c->file_buf);
    c->cmdline_buf = NULL;
    c->file_buf = NULL;
}
