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
#define CFG_TOKEN_MAX 4096       /* bytes of the shared token (--token-file) */
#define CFG_DEFAULT_HOSTNAME "sandbox"
#define CFG_DEFAULT_GRACE_MS 3000

/* cfg.flags_set: settings given as flags, which the kernel command line
 * (cfg_apply_cmdline) does not override. */
#define CFG_SET_LISTEN (1u << 0)
#define CFG_SET_WORKDIR (1u << 1)
#define CFG_SET_USER (1u << 2)
#define CFG_SET_HOSTNAME (1u << 3)

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
    const char *token_file;   /* --token-file, or NULL: no token */
    char token[CFG_TOKEN_MAX];/* its content (trailing newline stripped), once loaded */
    size_t token_len;         /* 0: no token required */
    /* PID-1 mode (init.h) */
    bool init;                /* --init: init mode even when not PID 1 */
    bool no_mount;            /* --no-mount: no mounts, hostname, loopback, kmsg */
    const char *hostname;     /* --hostname (PID 1 sets it) */
    uint32_t grace_ms;        /* --grace-ms: shutdown SIGTERM -> SIGKILL */
    const char *token_inline; /* sandbox_agent.token= from the kernel command line, or NULL */
    unsigned flags_set;       /* CFG_SET_* */
    char *cmdline_buf;        /* cfg_apply_cmdline's copy; its values point into it */
};

/* 0: run; 1: --help/--version printed, exit 0; -1: bad usage (e filled). */
int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e);
/* Read --token-file (if given; else sandbox_agent.token= from the kernel
 * command line) into c->token: 1..CFG_TOKEN_MAX bytes after
 * one trailing "\n" (or "\r\n") is stripped. A missing, empty or oversize
 * file is an error. */
int cfg_load_token(struct cfg *c, struct sa_err *e);
/* Apply the kernel command line's sandbox_agent.* keys (listen, repeatable;
 * workdir, user, hostname, token) to a parsed cfg, except for what flags set
 * (flags > kernel command line > defaults). Pure: no I/O but log warnings.
 * Words are separated by blanks, no quoting; other words and unknown
 * sandbox_agent.* keys are ignored (the latter with a warning). Call once.
 * Returns -1 (e: the first problem) when a value was rejected; every valid
 * key is applied all the same. */
int cfg_apply_cmdline(struct cfg *c, const char *cmdline, struct sa_err *e);
/* What cfg_apply_cmdline allocated. */
void cfg_free(struct cfg *c);

#endif
