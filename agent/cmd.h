/* cmd.h — the command table: spawned commands, their output, stdin and exit.
 *
 * A command streams to at most one connection (the one that ran `exec`);
 * when that connection closes the command keeps running detached (or is
 * killed, with kill_on_disconnect) and its output is read and dropped until
 * the lifecycle work gives it a replayable log. Exit is reported only after
 * both pipes reached EOF, or after the drain window (cfg.drain_ms) that
 * follows the leader's death, whichever comes first.
 */
#ifndef SA_CMD_H
#define SA_CMD_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "msg.h"

struct agent;
struct conn;

struct stdin_ack {             /* a stdin request waiting for its bytes to be written */
    struct stdin_ack *next;
    struct conn *conn;         /* NULL once that connection closed */
    uint64_t req_id;
    uint64_t upto;             /* acknowledged when this many bytes were written */
};

struct cmd {
    struct agent *a;
    struct cmd *prev, *next;
    uint64_t id;
    pid_t pid;
    uint64_t started_ms;
    ev_tstamp t0;

    /* output: [0] stdout, [1] stderr */
    int out_fd[2];
    ev_io out_w[2];
    uint64_t nbytes[2];
    uint64_t pos;
    uint64_t dropped;          /* bytes read while no client was attached */
    bool paused;               /* the attached connection is congested */

    /* stdin */
    int in_fd;
    ev_io in_w;
    struct buf in_buf;
    uint64_t in_accepted, in_written;
    bool in_eof;               /* close once in_buf is written */
    struct stdin_ack *acks, **acks_tail;

    /* the stream of the exec request, if attached */
    struct conn *conn;
    uint64_t req_id;
    bool kill_on_disconnect;

    /* exit */
    ev_child child_w;
    ev_timer drain_w;
    ev_timer timeout_w;
    bool reaped, done, timed_out;
    int status;
    uint64_t duration_ms;
};

/* Start a command for request req_id on c; sends the ok reply (or returns -1
 * with e filled, stage set for spawn errors). */
int cmd_exec(struct conn *c, uint64_t req_id, const struct wire_exec_req *x, struct sa_err *e);
/* Queue bytes for stdin (eof: close afterwards); the ok reply goes out once
 * written. */
int cmd_stdin(struct conn *c, uint64_t req_id, uint64_t cmd_id, const char *p, size_t n,
              bool eof, struct sa_err *e);
int cmd_signal(struct agent *a, uint64_t cmd_id, int sig, bool group, struct sa_err *e);

void cmd_conn_closed(struct agent *a, struct conn *c);
void cmd_conn_drained(struct agent *a, struct conn *c);
/* Signal every running command's process group. */
void cmd_kill_all(struct agent *a, int sig);
void cmd_free_all(struct agent *a);

#endif
