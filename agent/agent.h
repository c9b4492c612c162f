/* agent.h — the one explicit state of the daemon, passed down everywhere.
 *
 * Module map, one file per concern, by layer: a file calls into the layers
 * below it and, one way, into its own; never up (docs/agent.md "Source map").
 *   protocol/, common/   frames, msgpack, errors; fd helpers, clocks, the tar
 *                        engine (shared with sandboxctl and the gateway)
 *   OS adapters
 *     log.c      the log sink               config.c  settings: flags, --config,
 *     spawn.c    fork/exec of a command               kernel cmdline; allow-lists
 *     cgroup.c   per-command cgroups, group signals, cgroup.kill
 *     ident.c    users and groups; who a request runs as (ident_choose)
 *     outlog.c   a command's output log (chunks, positions)
 *     logstore.c the logs' memory policy: caps, eviction, what followers
 *                protect, their share, when a writer stops, trim accounting
 *     stats.c    /proc and statvfs reads    notify.c  readiness ($NOTIFY_SOCKET)
 *   transport (knows no service: main wires conn_ops)
 *     listen.c   listeners, accept, peer checks
 *     conn.c     connections: frames in/out; the work pending on each
 *                (struct conn_pending: closed, drained, holds)
 *   services
 *     cmd.c      the command table, output, stdin, exit   } the one pair
 *     reader.c   its log's readers (logs, attached exec)   } that call each other
 *     fop.c      file operations: helper processes, relaying; the helper's
 *                side: fop_child.c (operations, as the user), fop_io.c (its
 *                framed I/O), fop_xfer.c (uploads and downloads over xfer.c)
 *     guest_*.c  guest duties (guest.h), one file per concern:
 *       guest_auth.c      the token: the gate in front of every request, `auth`
 *       guest_session.c   session defaults (`set_defaults`: env, cwd, user)
 *       guest_snap.c      snapshot/restore: `sync`, clock, entropy, `restored`
 *       guest_stats.c     the `stats` reply
 *       guest_shutdown.c  `shutdown`; the agent's OOM protection
 *     init.c     PID-1 mode: mounts, kernel cmdline, graceful shutdown
 *     tunnel.c   `connect`: TCP connections in the guest relayed over the
 *                agent connection that asked
 *   request.c    the request table, the auth gate, every request's field
 *                parsing; the hello (conn_ops)
 *   main.c       wiring: settings, each subsystem's init/free, conn_ops, signals
 *   xfer_main.c  sandbox-agent-xfer, the archive helper binary (regular build)
 *
 * Shared with sandboxctl and the gateway, in common/ (common/README.md): the
 * tar engine (xfer.c, run by the helper), fd helpers (fdio.c), the clocks
 * (clock.c), the acknowledged input window of stdin and chunks (ackwin.c).
 */
#ifndef SA_AGENT_H
#define SA_AGENT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "config.h"
#include "conn.h"
#include "cgroup.h"
#include "ident.h"
#include "init.h"
#include "listen.h"
#include "logstore.h"
#include "notify.h"
#include "spawn.h"
#include "tunnel.h"
#include "wire.h"

/* One read(2) of command output; the agent reads at most
 * CMD_READS_PER_CB of them per pipe per loop iteration (fairness). */
#define CMD_READ_CHUNK (64u << 10)
#define CMD_READS_PER_CB 4
/* The capacity asked for a command's stdout pipe (F_SETPIPE_SZ; the
 * kernel's default is 64 KiB, its limit /proc/sys/fs/pipe-max-size). */
#define CMD_PIPE_SIZE (256u << 10)
/* Exited commands remembered: cfg.keep_exited (--keep-exited, default
 * CFG_DEFAULT_KEEP_EXITED; records and exit status; logs may be evicted
 * earlier by the global log cap). Forgotten oldest exit first. */
/* Records' strings (argv, cwd, user) of all commands together stay within
 * CMD_RECORD_BYTES: an exited record's argv is cut to CMD_EXITED_ARGV_MAX
 * bytes when its exit is final (`argv_cut`), the oldest exited records are
 * forgotten to make room for a new command, and an exec that does not fit
 * even then is refused (too_many). One record's strings must also fit one
 * reply: at most max_frame - CMD_RECORD_SLACK bytes (else E2BIG). */
#define CMD_RECORD_BYTES (64u << 20)
#define CMD_EXITED_ARGV_MAX 4096u
#define CMD_RECORD_SLACK 1024u
/* Once the logs freed LSTORE_TRIM_MIN bytes (logstore.h), malloc_trim()
 * runs once no log memory has been freed for this long. A stream cycling
 * through its log cap reuses what it frees; trimming under it (it used to
 * run once a second) only handed the pages back to be faulted in again
 * (20,000-50,000 faults per GiB of bench item 2). The followers' share of
 * --log-total-cap: LSTORE_FOLLOWED_SHARE_* (logstore.h). */
#define CMD_TRIM_DELAY_S 1.0

struct conn;
struct cmd;
struct listener;
struct guest_sync;
struct fop;

struct agent {
    struct ev_loop *loop;
    struct cfg cfg;
    const char *workdir;          /* absolute */
    bool dev;                     /* commands run as ourselves */
    const char *default_user;     /* cfg.user or set_defaults' user; our own name in dev mode */
    char *default_cwd;            /* set_defaults' cwd (absolute), or NULL: the workdir */
    char **default_env;           /* set_defaults' env, "K=V", NULL-terminated (or NULL) */
    size_t default_envc;
    uint64_t generation;          /* `restored` notifications so far */
    char boot_id[64];
    struct ident_cache idents;
    msgpack_zone zone;            /* decode zone, cleared after every frame */
    uint8_t *scratch;             /* CMD_READ_CHUNK bytes for pipe reads */
    struct rlimit nofile;         /* RLIMIT_NOFILE at start-up, restored in commands */
    void *spawn_stack;            /* stack of the CLONE_VFORK child */
    size_t spawn_stack_size;
    struct spawn_slots spawn_slots; /* low fds a spawn goes through (spawn.h) */
    struct listeners lsn;         /* listen.h */
    struct conn_set conns;        /* the open connections (conn.h) */
    struct cmd *cmds, *cmds_tail; /* running and remembered commands, newest first */
    struct cmd *exited, *exited_tail; /* exited commands, oldest exit first */
    uint64_t record_bytes;        /* every record's strings (CMD_RECORD_BYTES) */
    uint64_t next_cmd_id;
    uint64_t next_exit_seq;
    struct lstore logs;           /* all commands' logs: caps, eviction (logstore.h) */
    ev_timer trim;                /* hands freed log memory back to the kernel */
    ev_tstamp trim_freed_at;      /* when log bytes were last freed (cmd_log_trim_due) */
    struct cg_state cg;           /* per-command cgroups, when available */
    ev_timer cg_sweep;
    ev_idle cg_prepare;           /* makes the next command's cgroup when idle */
    unsigned ncmds_running, ncmds_exited;
    LIST_HEAD(, guest_sync) syncs; /* sync(2) children not yet reaped */
    LIST_HEAD(, fop) fops;        /* file operations' helpers (fop.h) */
    char *xfer_helper;            /* the archive helper's path, once needed */
    unsigned nfops;
    struct tunnels tunnels;       /* `connect` (tunnel.h) */
    ev_signal sigterm, sigint;    /* not in init mode: init.sig instead */
    struct init_state init;       /* PID-1 mode */
    struct notify notify;         /* $NOTIFY_SOCKET: READY=1, STOPPING=1 */
    bool stopping;
};

/* The default cwd of commands: set_defaults' cwd, else the workdir. */
static inline const char *agent_default_cwd(const struct agent *a)
{
    return a->default_cwd ? a->default_cwd : a->workdir;
}

#endif
