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
 * plus one reply (at most max_frame) plus what its pending work is owed
 * (CONN_MAX_STREAMS, common/ackwin.h ACKWIN_MARKS_MAX).
 *
 * Pending work. Whatever will still answer on a connection (a log reader, a
 * `wait`, a stdin acknowledgement, a file operation, a sync) or must know
 * when it goes (the owner of kill_on_disconnect commands, a connect in
 * progress) embeds a struct conn_pending and adds it to the connection. The
 * connection is its one bookkeeper:
 *   - conn_close() takes every pending off its list and calls its closed()
 *     (p->conn is NULL by then: nothing may be written);
 *   - a pending that stopped for lack of room calls conn_pending_starve();
 *     its drained() runs once the output is below CONN_OUT_LOW again;
 *   - a half-closed connection (the client shut down its sending side) is
 *     closed once its output is written and no pending that `holds` it is
 *     left; conn_pending_remove() is where that is checked.
 * Holding pendings are at most CONN_MAX_STREAMS per connection for requests
 * that open one at will (exec streams, logs, wait: conn_pending_room); stdin
 * acknowledgements are bounded per command instead (ACKWIN_MARKS_MAX), file
 * operations agent-wide (FOP_MAX).
 */
#ifndef SA_CONN_H
#define SA_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "buf.h"
#include "err.h"

/* Stop reading requests (and the pipes of commands that stream to the
 * connection) above CONN_OUT_HIGH bytes of pending output; resume below
 * CONN_OUT_LOW. */
#define CONN_OUT_HIGH (1u << 20)
#define CONN_OUT_LOW (256u << 10)
/* Holding pendings opened by exec streams, logs and wait on one connection
 * at once: each may owe an event, so their number bounds the output the
 * connection can be owed beyond CONN_OUT_HIGH (too_many beyond). */
#define CONN_MAX_STREAMS 4096
#define CONN_READ_CHUNK (64u << 10)
#define CONN_READS_PER_CB 4
#define CONN_LINGER_S 5.0       /* how long a connection closing after an error may take to flush */

struct agent;
struct conn;
struct conn_pending;

#ifndef container_of
#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))
#endif

struct conn_pending_ops {
    /* The connection went away; p is off its list already. NULL: nothing to do. */
    void (*closed)(struct conn_pending *p);
    /* The output drained below CONN_OUT_LOW after conn_pending_starve(p).
     * It may remove p, never another pending of the connection. */
    void (*drained)(struct conn_pending *p);
};

struct conn_pending {
    const struct conn_pending_ops *ops;
    struct conn *conn;         /* NULL while on no connection */
    uint64_t req_id;           /* the request it answers */
    bool holds;                /* a half-closed connection stays open for it */
    bool starved;              /* drained() is owed */
    TAILQ_ENTRY(conn_pending) link;
};

/* What transport hands the services, wired by main (as redis's ae takes a
 * proc and its client data): transport knows no service. */
struct conn_ops {
    /* A new connection: queue its greeting. */
    void (*opened)(struct conn *c);
    /* The payload of one whole frame (valid during the call): handle it,
     * replies to conn_out(c). */
    void (*frame)(struct conn *c, const uint8_t *payload, size_t len);
};

/* The open connections and what transport needs to run them. */
struct conn_set {
    struct ev_loop *loop;
    const struct conn_ops *ops;
    struct agent *a;           /* client data: every connection's `a`, never read here */
    uint32_t max_frame;        /* --max-frame */
    unsigned max;              /* --max-connections */
    TAILQ_HEAD(, conn) list;
    unsigned n;                /* in the list */
    uint64_t next_serial;
};

struct conn {
    struct agent *a;           /* the services' state (conn_set.a) */
    struct conn_set *set;
    TAILQ_ENTRY(conn) link;    /* in set->list */
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
    bool starved;              /* a pending starved: run the write callback even when empty */
    bool no_frames;            /* after `connect`: read no more frames (tunnel.c) */
    bool authed;               /* may make requests: token presented, or none configured */
    bool auth_refused;         /* a request was refused for lack of auth (logged once) */
    unsigned holding;          /* pendings that hold the connection open */
    TAILQ_HEAD(, conn_pending) pending;
    char peer[64];
};

void conn_set_init(struct conn_set *s, struct ev_loop *loop, const struct conn_ops *ops,
                   struct agent *a, uint32_t max_frame, unsigned max);
/* A connection on fd (non-blocking, close-on-exec), peer naming it for the
 * log. Over s->max: an error frame (too_many, no id), then fd is closed. */
void conn_accept(struct conn_set *s, int fd, const char *peer);
/* Frames for the client go here; then conn_kick(). */
static inline struct buf *conn_out(struct conn *c) { return &c->out; }
/* Write what is pending (never frees c: a write error closes it later). */
void conn_kick(struct conn *c);
bool conn_congested(const struct conn *c);
/* Whether one more holding pending may be opened (CONN_MAX_STREAMS); else
 * too_many. */
int conn_pending_room(const struct conn *c, struct sa_err *e);
/* Put p on c (p not on any connection). */
void conn_pending_add(struct conn *c, struct conn_pending *p, const struct conn_pending_ops *ops,
                      uint64_t req_id, bool holds);
/* Take p off its connection, if on one: its work is done. A half-closed
 * connection left with nothing to do closes (later, from the loop). */
void conn_pending_remove(struct conn_pending *p);
/* p stopped for lack of room: call its drained() when there is room again. */
void conn_pending_starve(struct conn_pending *p);
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
void conn_close_all(struct conn_set *s);
/* Every connection has written what it was owed (its output, the answers of
 * its holding pendings), or cannot take it (broken). */
bool conn_all_flushed(const struct conn_set *s);

#endif
