/* init.h — PID-1 duties (docs/agent.md "PID 1").
 *
 * Init mode is on when the agent is PID 1 or runs with --init. In init mode:
 *   - the kernel command line's sandbox_agent.* keys are read (flags win);
 *   - SIGTERM, SIGINT and SIGPWR start a graceful shutdown (so does the
 *     `shutdown` request, in every mode): SIGTERM to every
 *     command's tree, --grace-ms for them to exit (the loop keeps serving and
 *     reaping), SIGKILL to what is left, up to INIT_FLUSH_S for every
 *     connection to take its pending output (exits, replies), sync, then
 *     power off as PID 1
 *     (reboot(RB_POWER_OFF)) or exit 0 with --init when not PID 1.
 * As PID 1 without --no-mount ("system duties") it also mounts what is
 * missing of /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and
 * /sys/fs/cgroup, sets the hostname, brings up loopback and logs to
 * /dev/kmsg. Nothing of that ever fails hard: a failure is logged.
 *
 * As PID 1 the agent never exits (the kernel would panic): listeners that
 * cannot be opened are retried every second, and a start-up failure leaves
 * it in init_hold(), reaping and waiting for a shutdown signal.
 */
#ifndef SA_INIT_H
#define SA_INIT_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "err.h"

#define INIT_RETRY_S 1.0       /* failed listeners are retried this often (PID 1) */
#define INIT_FINAL_S 1.0       /* after SIGKILL, at most this long for exits to be reported */
#define INIT_FLUSH_S 2.0       /* then at most this long for connections to take their output */

struct agent;

enum init_phase { INIT_RUNNING, INIT_GRACE, INIT_KILLED, INIT_FLUSH, INIT_DOWN };

struct init_state {
    bool on;                   /* init mode: PID 1 or --init */
    bool pid1;
    bool system;               /* PID 1 without --no-mount: mounts, hostname, lo, kmsg */
    enum init_phase phase;
    ev_signal sig[3];          /* SIGTERM, SIGINT, SIGPWR */
    ev_timer phase_w;          /* end of the grace period / of the final flush */
    ev_check idle_w;           /* ends a phase early once no command runs */
    ev_timer retry_w;          /* PID 1: listeners that failed to open */
    const char *pending[CFG_MAX_LISTEN];
    int npending;
};

/* Before anything else (after cfg_parse): decide init mode; in init mode do
 * the system duties (when PID 1) and apply the kernel command line to a->cfg. */
void init_setup(struct agent *a);
/* Once the loop exists, in every mode: the shutdown's watchers; in init mode
 * also the shutdown signals. */
void init_start(struct agent *a);
/* The graceful shutdown (SIGTERM to the commands, --grace-ms, SIGKILL, sync,
 * then power off as PID 1 or end the loop: exit 0). Started by the init-mode
 * signals and, in every mode, by the `shutdown` request. Idempotent; why is
 * for the log. */
void init_shutdown(struct agent *a, const char *why);
/* PID 1: a listener that failed to open is retried every INIT_RETRY_S. */
void init_listen_later(struct agent *a, const char *addr, const struct sa_err *e);
/* PID 1 after a fatal start-up error: never returns; reaps orphans and powers
 * off on SIGTERM/SIGINT/SIGPWR. */
__attribute__((noreturn)) void init_hold(struct agent *a, const char *why);
void init_free(struct agent *a);

#endif
