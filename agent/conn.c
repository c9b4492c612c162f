#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "msg.h"

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_linger_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_reap_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_idle_check(struct conn *c);
static void conn_pending_unlink(struct conn_pending *p);

void conn_set_init(struct conn_set *s, struct ev_loop *loop, const struct conn_ops *ops,
                   struct agent *a, uint32_t max_frame, unsigned max)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->ops = ops;
    s->a = a;
    s->max_frame = max_frame;
    s->max = max;
    TAILQ_INIT(&s->list);
}

static void conn_refuse(struct conn_set *s, int fd, const char *peer);

void conn_accept(struct conn_set *s, int fd, const char *peer)
{
    if (s->n >= s->max) {
        conn_refuse(s, fd, peer);
        return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->a = s->a;
    c->set = s;
    c->fd = fd;
    c->serial = ++s->next_serial;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    buf_init(&c->in);
    buf_init(&c->out);
    TAILQ_INIT(&c->pending);
    c->out.frame_max = s->max_frame;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_timer_init(&c->linger, conn_linger_cb, CONN_LINGER_S, 0.);
    ev_timer_init(&c->reap, conn_reap_cb, 0., 0.);
    c->rio.data = c->wio.data = c->linger.data = c->reap.data = c;
    TAILQ_INSERT_HEAD(&s->list, c, link);
    s->n++;
    log_debug("conn %llu: connected (%s)", (unsigned long long)c->serial, c->peer);
    ev_io_start(s->loop, &c->rio);
    s->ops->opened(c);
    conn_kick(c);
}

/* Over --max-connections: an error frame (too_many, no id), then close fd. */
static void conn_refuse(struct conn_set *s, int fd, const char *peer)
{
    struct buf b;
    struct sa_err e;
    buf_init(&b);
    err_set(&e, 0, "too_many", "%u connections are open (--max-connections)", s->n);
    wire_msg_error(&b, false, 0, &e);
    /* a fresh socket's buffer takes these few bytes; if not, closing says enough */
    ssize_t n = write(fd, buf_ptr(&b), buf_size(&b));
    (void)n;
    close(fd);
    buf_free(&b);
    log_warn("refused a connection from %s: %s", peer, e.msg);
}

void conn_close(struct conn *c)
{
    struct conn_set *s = c->set;
    log_debug("conn %llu: closed", (unsigned long long)c->serial);
    c->closed = true;          /* from here on nothing is written or scheduled */
    struct conn_pending *p;
    while ((p = TAILQ_FIRST(&c->pending)) != NULL) {
        conn_pending_unlink(p);
        if (p->ops->closed)
            p->ops->closed(p);
    }
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->linger);
    ev_timer_stop(s->loop, &c->reap);
    if (c->fd >= 0)           /* -1: handed over (conn_detach) */
        close(c->fd);
    TAILQ_REMOVE(&s->list, c, link);
    s->n--;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

int conn_pending_room(const struct conn *c, struct sa_err *e)
{
    if (c->holding >= CONN_MAX_STREAMS)
        return err_set(e, 0, "too_many", "%u requests are pending on this connection",
                       c->holding);
    return 0;
}

void conn_pending_add(struct conn *c, struct conn_pending *p, const struct conn_pending_ops *ops,
                      uint64_t req_id, bool holds)
{
    p->ops = ops;
    p->conn = c;
    p->req_id = req_id;
    p->holds = holds;
    p->starved = false;
    TAILQ_INSERT_TAIL(&c->pending, p, link);
    c->holding += holds;
}

static void conn_pending_unlink(struct conn_pending *p)
{
    struct conn *c = p->conn;
    TAILQ_REMOVE(&c->pending, p, link);
    c->holding -= p->holds;
    p->conn = NULL;
    p->starved = false;
}

void conn_pending_remove(struct conn_pending *p)
{
    struct conn *c = p->conn;
    if (!c)
        return;
    conn_pending_unlink(p);
    conn_idle_check(c);
}

void conn_pending_starve(struct conn_pending *p)
{
    p->starved = true;
    p->conn->starved = true;   /* conn_kick keeps the write watcher for it */
}

/* Room again: the pendings that starved go on (they may starve again). */
static void conn_pending_drained(struct conn *c)
{
    if (!c->starved)
        return;
    c->starved = false;
    for (struct conn_pending *p = TAILQ_FIRST(&c->pending), *next; p; p = next) {
        next = TAILQ_NEXT(p, link);
        if (!p->starved)
            continue;
        p->starved = false;
        p->ops->drained(p);
    }
}

void conn_stop_frames(struct conn *c)
{
    c->no_frames = true;
    ev_io_stop(c->set->loop, &c->rio);
}

int conn_detach(struct conn *c, struct buf *in, struct buf *out)
{
    int fd = c->fd;
    *in = c->in;
    *out = c->out;
    buf_init(&c->in);
    buf_init(&c->out);
    c->fd = -1;
    conn_close(c);
    return fd;
}

void conn_close_all(struct conn_set *s)
{
    while (!TAILQ_EMPTY(&s->list))
        conn_close(TAILQ_FIRST(&s->list));
}

bool conn_all_flushed(const struct conn_set *s)
{
    const struct conn *c;
    TAILQ_FOREACH(c, &s->list, link)
        if (!c->broken && (buf_size(&c->out) > 0 || c->holding > 0))
            return false;
    return true;
}

bool conn_congested(const struct conn *c)
{
    return c->closed || buf_size(&c->out) > CONN_OUT_HIGH;
}

/* A whole frame (or a bad header) waits in c->in: requests left unread
 * while the connection was congested. */
static bool conn_frame_ready(const struct conn *c)
{
    uint32_t len;
    struct sa_err e;
    int r = wire_frame_peek(buf_ptr(&c->in), buf_size(&c->in), c->set->max_frame, &len, &e);
    return r < 0 || (r == 1 && buf_size(&c->in) >= WIRE_HDR_LEN + (size_t)len);
}

/* Output drained below CONN_OUT_LOW: read requests again, and handle
 * those already buffered (from conn_read_cb, never from inside a handler). */
static void conn_resume(struct conn *c)
{
    c->rpaused = false;
    if (!c->rd_eof)
        ev_io_start(c->set->loop, &c->rio);
    if (conn_frame_ready(c))
        ev_feed_event(c->set->loop, &c->rio, EV_READ);
}

static void conn_break(struct conn *c)
{
    c->broken = true;
    buf_reset(&c->out, 0);
    ev_io_stop(c->set->loop, &c->rio);
    ev_io_stop(c->set->loop, &c->wio);
    ev_timer_start(c->set->loop, &c->reap);
}

/* The output is all written: give back a burst's memory, unless pendings
 * that hold the connection (exec streams, logs, waits) may still write to
 * it. A stream's next burst would grow the buffer again, a realloc copy and
 * fresh pages at each doubling (most of the agent's ~50,000 page faults per
 * GiB in bench item 2); the buffer stays within its bound (conn.h) and is
 * given back once the last of them is done. */
static void conn_out_release(struct conn *c)
{
    if (c->holding == 0)
        buf_reset(&c->out, 64u << 10);
}

/* Write as much as the socket takes. Returns -1 when the connection broke. */
static int conn_flush(struct conn *c)
{
    while (buf_size(&c->out) > 0) {
        ssize_t n = write(c->fd, buf_ptr(&c->out), buf_size(&c->out));
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        log_debug("conn %llu: write: %s", (unsigned long long)c->serial, err_str(errno));
        conn_break(c);
        return -1;
    }
    return 0;
}

void conn_kick(struct conn *c)
{
    struct conn_set *s = c->set;
    if (c->broken || c->closed) {
        buf_reset(&c->out, 0);
        return;
    }
    /* While the write watcher waits for room in the socket, a write now
     * would mostly fail with EAGAIN or move a few bytes: the watcher's
     * callback writes it all in one go. Output to an idle socket (a lone
     * echo) still goes out at once. */
    if (!ev_is_active(&c->wio) && conn_flush(c) < 0)
        return;
    size_t pending = buf_size(&c->out);
    if (conn_congested(c) && !c->rpaused) {
        c->rpaused = true;
        ev_io_stop(s->loop, &c->rio);
    } else if (pending < CONN_OUT_LOW && c->rpaused && !c->closing) {
        conn_resume(c);                    /* drained by this flush, not the write callback */
    }
    if (pending > 0 || c->starved) {
        ev_io_start(s->loop, &c->wio);   /* starved pendings go on from the write callback */
    } else {
        ev_io_stop(s->loop, &c->wio);
        conn_out_release(c);
        conn_idle_check(c);
    }
}

/* A connection closing, or half-closed with nothing pending, closes once
 * its output is written. */
static void conn_idle_check(struct conn *c)
{
    if (c->broken || c->closed || buf_size(&c->out) > 0)
        return;
    if (c->closing || (c->rd_eof && c->holding == 0 && !conn_frame_ready(c)))
        ev_timer_start(c->set->loop, &c->reap);   /* not from inside a caller's loop */
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (conn_flush(c) < 0)
        return;
    if (buf_size(&c->out) < CONN_OUT_LOW && !c->closing) {
        if (c->rpaused)
            conn_resume(c);
        conn_pending_drained(c);       /* may queue more and starve again */
    }
    if (buf_size(&c->out) == 0 && !c->starved && !c->broken) {
        ev_io_stop(c->set->loop, &c->wio);
        conn_out_release(c);
        if (c->closing || (c->rd_eof && c->holding == 0 && !conn_frame_ready(c)))
            conn_close(c);
    }
}

void conn_fail(struct conn *c, const struct sa_err *e)
{
    log_info("conn %llu: %s: %s; closing", (unsigned long long)c->serial, e->code, e->msg);
    wire_msg_error(&c->out, false, 0, e);
    conn_close_soon(c);
    conn_kick(c);
}

void conn_close_soon(struct conn *c)
{
    c->closing = true;
    ev_io_stop(c->set->loop, &c->rio);
    ev_timer_start(c->set->loop, &c->linger);
}

static void conn_linger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

static void conn_reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

/* Handle the complete frames in c->in while the connection's output is
 * below CONN_OUT_HIGH: a client that does not read its replies gets no more
 * of them (its requests wait in c->in, and reading stops). */
static void conn_process(struct conn *c)
{
    struct conn_set *s = c->set;
    while (!c->closing && !c->broken && !c->no_frames && !conn_congested(c)) {
        uint32_t len;
        struct sa_err e;
        int r = wire_frame_peek(buf_ptr(&c->in), buf_size(&c->in), s->max_frame, &len, &e);
        if (r < 0) {
            conn_fail(c, &e);
            return;
        }
        if (r == 0 || buf_size(&c->in) < WIRE_HDR_LEN + (size_t)len)
            return;
        s->ops->frame(c, buf_ptr(&c->in) + WIRE_HDR_LEN, len);
        buf_consume(&c->in, WIRE_HDR_LEN + (size_t)len);
    }
    if (!c->closed && !c->rpaused && conn_congested(c) && conn_frame_ready(c)) {
        /* frames wait: only a drain below CONN_OUT_LOW (conn_resume) may
         * take them up, whatever the next flush achieves */
        c->rpaused = true;
        ev_io_stop(s->loop, &c->rio);
    }
}

static bool conn_peer_gone(const struct conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    if (c->no_frames) {        /* a tunnel's bytes wait in the socket for tunnel.c */
        ev_io_stop(loop, w);
        return;
    }
    conn_process(c);                 /* frames left from a congested spell first */
    for (int i = 0; i < CONN_READS_PER_CB && !c->closing && !c->broken && !c->rpaused &&
                    !c->rd_eof && !conn_congested(c) && !c->no_frames; i++) {
        ssize_t n = read(c->fd, buf_reserve(&c->in, CONN_READ_CHUNK), CONN_READ_CHUNK);
        if (n > 0) {
            buf_commit(&c->in, (size_t)n);
            conn_process(c);
            if ((size_t)n < CONN_READ_CHUNK)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            log_debug("conn %llu: read: %s", (unsigned long long)c->serial, err_str(errno));
            conn_close(c);
            return;
        }
        /* EOF. A peer that closed entirely shows POLLHUP (Unix and vsock
         * sockets); one that only shut down its sending side (socat at the end
         * of its input) does not: keep writing its streams, close after them.
         * TCP cannot tell the two apart until a write fails. */
        if (conn_peer_gone(c)) {
            conn_close(c);
            return;
        }
        c->rd_eof = true;
        ev_io_stop(c->set->loop, &c->rio);
        break;
    }
    if (buf_size(&c->in) == 0)
        buf_reset(&c->in, 64u << 10);
    conn_kick(c);
}
