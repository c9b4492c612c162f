#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    "  --insecure-tcp-any-address\n"
    "                         allow tcp: listeners on non-loopback addresses\n"
    "                         (anyone who reaches the port can run commands as root)\n"
    "  -v, --verbose          log debug messages\n"
    "  -q, --quiet            log only warnings and errors\n"
    "  -h, --help             this text\n"
    "  -V, --version          print the version\n";

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

int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e)
{
    enum { O_LISTEN = 256, O_WORKDIR, O_USER, O_DEV, O_MAXFRAME, O_DRAIN, O_WINDOW, O_TCPANY,
           O_LOGCAP, O_LOGTOTAL };
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
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
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

    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "vqhV", opts, NULL)) != -1) {
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
