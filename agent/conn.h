/* conn.h — one client connection: frames in, frames out.
 *
 * Reading: at most CONN_READS_PER_CB reads of CONN_READ_CHUNK bytes per loop
 * iteration; a frame's length is checked against max_frame as soon as its
 * 4-byte header is in, so the input buffer never exceeds
 * 4 + max_frame + CONN_READ_CHUNK bytes. Writing: replies and events are
 * appended to `out` and written at once when the socket takes them; the write
 * watcher runs only while output is pending. Above CONN_OUT_HIGH pending bytes
 * the connection stops reading and handling requests (whole frames already
 * read wait in `in`) and the commands streaming to it stop reading their
 * pipes; below CONN_OUT_LOW they resume. So `out` holds at most CONN_OUT_HIGH
 * plus one reply (at most max_frame) plus what its streams and waiting
 * acknowledgements are owed (CONN_MAX_STREAMS, common/ackwin.h ACKWIN_MARKS_MAX).
 */
#ifndef SA_CONN_H
#define SA_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define CONN_READ_CHUNK (64u << 10)
#define CONN_READS_PER_CB 4
#define CONN_LINGER_S 5.0       /* how long a connection closing after an error may take to flush */

struct agent;
struct reader;

struct conn {
    struct agent *a;
    struct conn *prev, *next;
    uint64_t serial;
    int fd;
    ev_io rio, wio;
    ev_timer linger;           /* close deadline while closing */
    ev_timer reap;             /* deferred close after a write error */
    struct buf in, out;
    bool closing;              /* close once out is flushed */
    bool broken;               /* write failed: close soon, write nothing more */
    bool closed;               /* being freed */
    bool rpaused;              /* request reading paused: out above CONN_OUT_HIGH */
    bool rd_eof;               /* the client half-closed: finish streams, then close */
    bool starved;              /* a reader stopped for lack of room: pump it when writable */
    bool no_frames;            /* after `connect`: read no more frames (tunnel.c) */
    bool authed;               /* may make requests: token presented, or none configured */
    bool auth_refused;         /* a request was refused for lack of auth (logged once) */
    unsigned streams;          /* readers and waiters answering on this connection */
    struct reader *readers;    /* log readers on this connection */
    char peer[64];
};

void conn_accept(struct agent *a, int fd, const char *peer);
/* Over --max-connections: an error frame (too_many, no id), then close fd. */
void conn_refuse(struct agent *a, int fd, const char *peer);
/* Frames for the client go here; then conn_kick(). */
static inline struct buf *conn_out(struct conn *c) { return &c->out; }
/* Write what is pending (never frees c: a write error closes it later). */
void conn_kick(struct conn *c);
bool conn_congested(const struct conn *c);
/* A half-closed connection closes once nothing is pending; call after a
 * stream of this connection ended. */
void conn_idle_check(struct conn *c);
/* Send an error without id, then close this connection (bad frame). */
void conn_fail(struct conn *c, const struct sa_err *e);
/* Read no more requests; close once what is queued, and the reply being
 * built, is written (or after CONN_LINGER_S). */
void conn_close_soon(struct conn *c);
void conn_close(struct conn *c);
/* Tunnels (tunnel.c): read no more frames from c; what follows stays in c->in. */
void conn_stop_frames(struct conn *c);
/* Hand c's socket over and free c (as a close: its streams end): returns the
 * fd; *in gets the bytes read and not processed, *out those not written. */
int conn_detach(struct conn *c, struct buf *in, struct buf *out);
void conn_close_all(struct agent *a);

#endif
