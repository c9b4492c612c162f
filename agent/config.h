/* config.h — the agent's settings (docs/agent.md "Settings"): command-line
 * flags, an optional config file (--config), and in init mode the kernel
 * command line. Precedence: flags > config file > kernel command line >
 * defaults, kept with cfg.flags_set. */
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
#define CFG_DEFAULT_UPLOAD_MAX_BYTES (8ull << 30)      /* xfer.h XFER_DEFAULT_MAX_BYTES */
#define CFG_DEFAULT_UPLOAD_MAX_ENTRIES (1ull << 20)   /* xfer.h XFER_DEFAULT_MAX_ENTRIES */
#define CFG_MAX_LISTEN 16
#define CFG_TOKEN_MAX 4096       /* bytes of the shared token (--token-file) */
#define CFG_DEFAULT_HOSTNAME "sandbox"
#define CFG_DEFAULT_GRACE_MS 3000
#define CFG_DEFAULT_HELPER_IDLE_MS 600000   /* --helper-idle-ms (fop.c) */
#define CFG_DEFAULT_MAX_CONNECTIONS 1024   /* open connections (too_many beyond) */
#define CFG_DEFAULT_MAX_COMMANDS 4096      /* running commands (too_many beyond) */
#define CFG_DEFAULT_KEEP_EXITED 4096      /* exited commands remembered */
#define CFG_DEFAULT_MAX_TUNNELS 128        /* tunnels open or connecting (tunnel.h) */
#define CFG_LIMIT_MAX 65536                /* ceiling of the count settings */
#define CFG_MAX_ALLOW 16         /* --allow-uid and --vsock-allow-cid entries (each) */
#define CFG_HOST_CID 2           /* VMADDR_CID_HOST: the default vsock allow-list */
#define CFG_FILE_MAX (64u << 10) /* --config: bytes of the file */
#define CFG_LINE_MAX 4096        /* --config: bytes of one line, newline included */

/* --tunnel: what a `connect` may reach (tunnel.c). */
enum cfg_tunnel { CFG_TUNNEL_OFF, CFG_TUNNEL_LOOPBACK, CFG_TUNNEL_ANY };

/* The settings, as getopt values and as config file keys (their long names). */
enum cfg_opt {
    CFG_O_LISTEN = 256, CFG_O_WORKDIR, CFG_O_USER, CFG_O_DEV, CFG_O_MAXFRAME, CFG_O_DRAIN,
    CFG_O_WINDOW, CFG_O_TCPANY, CFG_O_LOGCAP, CFG_O_LOGTOTAL, CFG_O_TOKEN, CFG_O_INIT,
    CFG_O_NOMOUNT, CFG_O_HOSTNAME, CFG_O_GRACE, CFG_O_ALLOWUID, CFG_O_VSOCKCID, CFG_O_CONFIG,
    CFG_O_VERBOSE, CFG_O_QUIET, CFG_O_UPBYTES, CFG_O_UPENTRIES, CFG_O_XFERHELPER,
    CFG_O_INSECURETCP, CFG_O_HELPERIDLE, CFG_O_MAXCONN, CFG_O_MAXCMDS, CFG_O_KEEPEXITED,
    CFG_O_TUNNEL, CFG_O_MAXTUNNELS,
    CFG_O_LAST = CFG_O_MAXTUNNELS,      /* keep last: the range getopt accepts */
};
#define CFG_BIT(o) (1u << ((o) - CFG_O_LISTEN))

/* cfg.flags_set: settings given as flags or in the config file, which a
 * lower source (the config file for flags; the kernel command line for both)
 * does not override. */
#define CFG_SET_LISTEN CFG_BIT(CFG_O_LISTEN)
#define CFG_SET_WORKDIR CFG_BIT(CFG_O_WORKDIR)
#define CFG_SET_USER CFG_BIT(CFG_O_USER)
#define CFG_SET_HOSTNAME CFG_BIT(CFG_O_HOSTNAME)
#define CFG_SET_VSOCKCID CFG_BIT(CFG_O_VSOCKCID)

struct cfg {
    const char *listen[CFG_MAX_LISTEN];
    int nlisten;
    const char *workdir;
    const char *user;
    bool dev;                 /* run commands as ourselves; forced when not root */
    bool tcp_any;             /* --insecure-tcp-any-address */
    bool insecure_tcp;        /* --insecure-tcp: tcp: listeners without a token */
    uint32_t max_frame;
    uint32_t drain_ms;
    uint32_t stdin_window;
    uint64_t log_cap;         /* per-command log bytes (outlog.h accounting) */
    uint64_t log_total_cap;   /* all logs together */
    uint64_t upload_max_bytes;   /* an upload's entry data, written or skipped */
    uint64_t upload_max_entries; /* an upload's entries */
    uint32_t max_connections; /* --max-connections: open connections */
    uint32_t max_commands;    /* --max-commands: running commands */
    uint32_t keep_exited;     /* --keep-exited: exited commands remembered */
    const char *xfer_helper;     /* --xfer-helper, or NULL: beside the agent (fop.h) */
    uint32_t helper_idle_ms;     /* a file helper without progress this long is killed */
    enum cfg_tunnel tunnel;      /* --tunnel: off, loopback, any (loopback + own addresses) */
    uint32_t max_tunnels;        /* --max-tunnels: open at once */
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
    const char *modules;      /* sandbox_agent.modules=: kernel modules PID 1 loads, or NULL */
    const char *net;          /* sandbox_agent.net=IFACE,ADDR/PREFIX[,GATEWAY], or NULL */
    /* who may connect (listen.c) */
    uint32_t allow_uids[CFG_MAX_ALLOW];  /* --allow-uid: besides root and our own uid */
    int nallow_uids;
    uint32_t vsock_cids[CFG_MAX_ALLOW];  /* --vsock-allow-cid; default {CFG_HOST_CID} */
    int nvsock_cids;
    bool vsock_any;           /* --vsock-allow-cid any */
    const char *config_file;  /* --config, or NULL */
    unsigned flags_set;       /* CFG_BIT(CFG_O_*) of flags and config-file keys */
    char *cmdline_buf;        /* cfg_apply_cmdline's copy; its values point into it */
    char *file_buf;           /* the config file's text; its values point into it */
};

/* Flags, then the --config file if given (cfg_apply_file), then defaults
 * for what neither set. 0: run; 1: --help/--version printed, exit 0; -1: bad
 * usage or a bad config file (e filled). Call cfg_free() after, in any case. */
int cfg_parse(struct cfg *c, int argc, char **argv, struct sa_err *e);
/* Apply a config file's text (`key = value` lines, `#` comment lines, blank
 * lines; keys are the long flag names) except for the settings flags set.
 * name is for messages ("FILE:LINE: ..."). Takes a copy; values point into
 * it (c->file_buf). Pure. -1 on the first bad line (unknown key, bad value,
 * no '=', a line over CFG_LINE_MAX bytes, a NUL byte). */
int cfg_apply_file(struct cfg *c, const char *text, size_t n, const char *name, struct sa_err *e);
/* Read FILE (at most CFG_FILE_MAX bytes) and cfg_apply_file it. */
int cfg_load_file(struct cfg *c, const char *path, struct sa_err *e);
/* The peer checks (listen.c), pure: a vsock peer CID on the allow-list; a
 * unix peer uid that is root, self (the agent's euid) or on --allow-uid. */
bool cfg_vsock_cid_allowed(const struct cfg *c, uint32_t cid);
bool cfg_uid_allowed(const struct cfg *c, uint32_t uid, uint32_t self);
/* Read --token-file (if given; else sandbox_agent.token= from the kernel
 * command line) into c->token: 1..CFG_TOKEN_MAX bytes after
 * one trailing "\n" (or "\r\n") is stripped. A missing, empty or oversize
 * file is an error. */
int cfg_load_token(struct cfg *c, struct sa_err *e);
/* Apply the kernel command line's sandbox_agent.* keys (listen and
 * vsock_allow_cid, repeatable; workdir, user, hostname, token, token_file,
 * insecure_tcp) to a parsed
 * cfg, also max_connections, max_commands, keep_exited, tunnel and
 * max_tunnels, except for what flags or the config file set (flags > config file >
 * kernel command line > defaults), and the cmdline-only keys modules, net
 * and insecure_tcp_any_address. Pure: no I/O but log warnings.
 * Words are separated by blanks, no quoting; other words and unknown
 * sandbox_agent.* keys are ignored (the latter with a warning). Call once.
 * Returns -1 (e: the first problem) when a value was rejected; every valid
 * key is applied all the same. */
int cfg_apply_cmdline(struct cfg *c, const char *cmdline, struct sa_err *e);
/* What cfg_parse, cfg_apply_file and cfg_apply_cmdline allocated. */
void cfg_free(struct cfg *c);

#endif
