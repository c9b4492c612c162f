/* config.h — the agent's settings, from the command line (docs/agent.md). */
#ifndef SA_CONFIG_H
#define SA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define CFG_DEFAULT_LISTEN "vsock:7071"
#define CFG_DEFAULT_WORKDIR "/vercel/sandbox"
#define CFG_DEFAULT_USER "vercel-sandbox"
#define CFG_DEFAULT_DRAIN_MS 1000
#define CFG_DEFAULT_LOG_CAP (16ull << 20)
#define CFG_DEFAULT_LOG_TOTAL_CAP (128ull << 20)
#define CFG_MAX_LISTEN 16

struct cfg {
    const char *listen[CFG_MAX_LISTEN];
    int nlisten;
    const char *workdir;
    const char *user;
    bool dev;                 /* run commands as ourselves; forced when not root */
    bool tcp_any;             /* --insecure-tcp-any-address */
    uint32_t max_frame;
    uint32_t drain_ms;
    uint32_t stdin_window;
    uint64_t log_cap;         /* per-command log bytes (outlog.h accounting) */
    uint64_t log_total_cap;   /* all logs together */
    int log_level;
};

/* 0: run; 1: --help/--version printed, exit 0; -1: bad usage (e filled). */
int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e);

#endif
