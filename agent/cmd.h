/* cmd.h — the command table: spawned commands, their logs, stdin and exit.
 *
 * Every command's stdout and stderr go into its log (outlog.h), kept within
 * the caps by the log store (logstore.h, which says when to stop reading the
 * pipes), and read by any number of readers (reader.h); the exec request's
 * own stream is just the first reader. Commands outlive connections (unless
 * kill_on_disconnect). Exit is final only after both pipes reached EOF, or
 * after the drain window (cfg.drain_ms) that follows the leader's death.
 * Records of exited commands are kept (cfg.keep_exited, oldest exit
 * forgotten first) so their status stays queryable; their strings are
 * bounded (agent.h CMD_RECORD_BYTES).
 */
#ifndef SA_CMD_H
#define SA_CMD_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "ackwin.h"
#include "buf.h"
#include "conn.h"
#include "msg.h"
#include "ident.h"
#include "logstore.h"

#define CMD_SPAWN_STACK_SIZE (256u << 10)   /* the CLONE_VFORK child's stack */
#define CMD_CG_SWEEP_S 2.0                  /* cgroups of finished commands, removed */

struct agent;
struct reader;

struct stdin_ack {             /* a stdin request waiting for its bytes to be written */
    STAILQ_ENTRY(stdin_ack) link;
    struct conn_pending pend;  /* holds its connection; off it once that closed */
    uint64_t upto;             /* its mark in the cmd's in_win (ackwin.h) */
};

struct waiter {                /* a `wait` request */
    LIST_ENTRY(waiter) link;
    struct cmd *cmd;
    struct conn_pending pend;  /* holds its connection */
};

struct cmd {
    struct agent *a;
    struct cmd *prev, *next;
    uint64_t id;
    pid_t pid;
    uint64_t started_ms;
    ev_tstamp t0;
    char **argv;               /* one allocation: pointers then strings */
    char *cwd, *user;
    size_t rec_bytes;          /* argv, cwd, user: counted in a->record_bytes */
    bool argv_cut;             /* argv cut to CMD_EXITED_ARGV_MAX at exit */
    struct cmd *xprev, *xnext; /* in a->exited once done */

    /* output: [0] stdout (or the pty), [1] stderr */
    int out_fd[2];
    ev_io out_w[2];
    struct lstore_log log;     /* in a->logs; log.paused: pipes not read */
    LIST_HEAD(, reader) readers;
    LIST_HEAD(, waiter) waiters;

    /* stdin */
    int in_fd;
    ev_io in_w;
    struct buf in_buf;
    struct ackwin in_win;      /* queued vs written; stdin_window, ACKWIN_MARKS_MAX */
    bool in_eof;               /* close once in_buf is written */
    char in_last;              /* last byte queued (pty: is a line pending?) */
    STAILQ_HEAD(, stdin_ack) acks;

    bool pty;
    int pty_fd;                /* the master, for resize (-1 without pty) */
    bool in_cgroup;            /* its cgroup cmd-<id> exists: cg_open() it when needed */
    struct conn_pending owner; /* kill_on_disconnect: on the exec's connection */

    /* exit */
    ev_child child_w;
    ev_timer drain_w;
    ev_timer timeout_w;
    bool reaped, done, timed_out;
    int status;
    uint64_t duration_ms;
    uint64_t exit_seq;         /* order of exits, for log eviction */
};

/* Start a command for request req_id on conn; sends the ok reply (or returns
 * -1 with e filled, stage set for spawn errors). */
int cmd_exec(struct conn *conn, uint64_t req_id, const struct wire_exec_req *x, struct sa_err *e);
int cmd_stdin(struct conn *conn, uint64_t req_id, uint64_t cmd_id, const char *p, size_t n,
              bool eof, struct sa_err *e);
int cmd_signal(struct agent *a, uint64_t cmd_id, int sig, bool group, struct sa_err *e);
int cmd_resize(struct agent *a, uint64_t cmd_id, uint16_t rows, uint16_t cols, struct sa_err *e);
/* Forget exited commands, logs and records: cmd_id, or all (those nobody
 * reads). Errors: not_found, running, busy (a reader follows its log). */
int cmd_release(struct agent *a, bool all, uint64_t cmd_id, uint64_t *released, struct sa_err *e);
int cmd_get(struct conn *conn, uint64_t req_id, uint64_t cmd_id, struct sa_err *e);
/* One page of records, newest first, with ids below cursor (0: from the
 * newest), at most limit (0: no limit) and within one frame. */
void cmd_list(struct conn *conn, uint64_t req_id, bool running_only, uint64_t cursor,
              uint64_t limit);
int cmd_wait(struct conn *conn, uint64_t req_id, uint64_t cmd_id, struct sa_err *e);
int cmd_logs(struct conn *conn, uint64_t req_id, uint64_t cmd_id, uint64_t from, bool follow,
             struct sa_err *e);

void cmd_exit_info(const struct cmd *c, struct wire_exit *x);

/* CPU time of the command (stats): its cgroup's, or that of pid (its
 * leader; 0: none) without one. 0 when it cannot be read. */
uint64_t cmd_cpu_ms(const struct cmd *c, pid_t pid);
/* Signal every running command (its cgroup, or its process group). */
void cmd_kill_all(struct agent *a, int sig);
/* Once the loop exists: the pipe-read scratch buffer, the spawn stack
 * (CMD_SPAWN_STACK_SIZE), per-command cgroups when available, and the
 * table's own timers: the cgroup sweep (CMD_CG_SWEEP_S: cgroups of finished
 * commands that have emptied), the malloc_trim timer (CMD_TRIM_DELAY_S) and
 * the idle watcher that makes the next command's cgroup ahead of its exec. */
int cmd_init(struct agent *a, struct sa_err *e);
/* Free every command and what cmd_init made (after start-up failures too). */
void cmd_free_all(struct agent *a);

#endif
