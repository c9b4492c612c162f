#include "tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "conn.h"
#include "log.h"
#include "msg.h"

/* One direction of a tunnel: bytes read from `from`, written to `to`. */
struct tun_dir {
    struct tunnel *t;
    int from, to;
    ev_io rio, wio;            /* rio on from, wio on to */
    uint8_t *data;             /* pending bytes are data[off..len); NULL when none */
    size_t off, len, cap;
    bool eof;                  /* from reached EOF (or is gone) */
    bool shut;                 /* to is shut down for writing: this direction is done */
    size_t uncounted;          /* leading bytes that are not payload (replies at hand-over) */
    uint64_t *bytes;           /* the agent-wide counter of this direction */
};

struct tunnel {
    struct agent *a;
    struct tunnel *prev, *next;
    struct conn_pending pend;  /* while connecting: on the connection that asked */
    uint64_t serial;           /* the connection's, for the log */
    bool half_close;           /* false: an EOF ends the whole tunnel once written */
    int cfd, sfd;              /* the agent connection; the guest TCP connection */
    ev_io connect_w;           /* sfd writable: the connect finished */
    ev_timer timeout;
    struct tun_dir up;         /* host -> guest port */
    struct tun_dir down;       /* guest port -> host */
    char where[INET6_ADDRSTRLEN + 8];
};

static void tun_io_cb(struct ev_loop *loop, ev_io *w, int revents);

/* --- the list ---------------------------------------------------------------- */

static struct tunnel *tun_new(struct agent *a)
{
    struct tunnel *t = xcalloc(1, sizeof *t);
    t->a = a;
    t->cfd = t->sfd = -1;
    t->next = a->tunnels.list;
    if (t->next)
        t->next->prev = t;
    a->tunnels.list = t;
    a->tunnels.open++;
    return t;
}

static void tun_dir_stop(struct ev_loop *loop, struct tun_dir *d)
{
    ev_io_stop(loop, &d->rio);
    ev_io_stop(loop, &d->wio);
    free(d->data);
    d->data = NULL;
    d->off = d->len = d->cap = 0;
}

static void tun_free(struct tunnel *t)
{
    struct agent *a = t->a;
    ev_io_stop(a->loop, &t->connect_w);
    ev_timer_stop(a->loop, &t->timeout);
    tun_dir_stop(a->loop, &t->up);
    tun_dir_stop(a->loop, &t->down);
    conn_pending_remove(&t->pend);
    if (t->cfd >= 0)
        close(t->cfd);
    if (t->sfd >= 0)
        close(t->sfd);
    if (t->prev)
        t->prev->next = t->next;
    else
        a->tunnels.list = t->next;
    if (t->next)
        t->next->prev = t->prev;
    a->tunnels.open--;
    free(t);
}

void tunnel_close_all(struct agent *a)
{
    while (a->tunnels.list)
        tun_free(a->tunnels.list);
}

/* The connection of a connect in progress closed: drop the connect. */
static void tun_conn_closed(struct conn_pending *p)
{
    tun_free(container_of(p, struct tunnel, pend));
}

static const struct conn_pending_ops tun_pending_ops = {tun_conn_closed, NULL};

void tunnel_stats(struct wire_enc *w, const struct agent *a)
{
    wire_kv_uint(w, "tunnels_open", a->tunnels.open);
    wire_kv_uint(w, "tunnels_total", a->tunnels.total);
    wire_kv_uint(w, "tunnel_bytes_in", a->tunnels.bytes_in);
    wire_kv_uint(w, "tunnel_bytes_out", a->tunnels.bytes_out);
}

/* --- relaying -------------------------------------------------------------------- */

static size_t tun_pending(const struct tun_dir *d)
{
    return d->len - d->off;
}

/* Room to read into, allocating the buffer when there is none. */
static size_t tun_room(struct tun_dir *d)
{
    if (!d->data) {
        d->data = xmalloc(TUNNEL_BUF);
        d->cap = TUNNEL_BUF;
        d->off = d->len = 0;
    }
    if (d->off == d->len)
        d->off = d->len = 0;
    size_t pending = tun_pending(d);
    size_t room = d->cap - d->len;
    return pending >= TUNNEL_BUF ? 0 : room < TUNNEL_BUF - pending ? room : TUNNEL_BUF - pending;
}

static bool tun_readable(const struct tun_dir *d)
{
    return !d->eof && tun_pending(d) < TUNNEL_BUF && (!d->data || d->len < d->cap);
}

static void tun_watch(struct tun_dir *d)
{
    struct ev_loop *loop = d->t->a->loop;
    if (tun_readable(d))
        ev_io_start(loop, &d->rio);
    else
        ev_io_stop(loop, &d->rio);
    if (tun_pending(d) > 0) {
        ev_io_start(loop, &d->wio);
    } else {
        ev_io_stop(loop, &d->wio);
        free(d->data);              /* an idle tunnel holds no buffer */
        d->data = NULL;
        d->off = d->len = d->cap = 0;
    }
}

/* Write what `to` takes. 0, or -1 with errno (the peer is gone). */
static int tun_write(struct tun_dir *d)
{
    while (tun_pending(d) > 0) {
        ssize_t n = send(d->to, d->data + d->off, tun_pending(d), MSG_NOSIGNAL);
        if (n > 0) {
            size_t skip = (size_t)n < d->uncounted ? (size_t)n : d->uncounted;
            d->off += (size_t)n;
            d->uncounted -= skip;
            *d->bytes += (uint64_t)n - skip;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
    d->off = d->len = 0;              /* all written: the whole buffer is room again */
    return 0;
}

/* fd's peer closed both directions (a Unix or vsock peer that close()d,
 * not one that only shut down its sending side). */
static bool tun_peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* from reached EOF. If its peer is gone altogether, nothing can be written
 * back to it: the other direction ends now (its bytes are dropped). */
static void tun_eof(struct tun_dir *d)
{
    d->eof = true;
    struct tun_dir *back = d == &d->t->up ? &d->t->down : &d->t->up;
    if (!back->shut && tun_peer_gone(d->from)) {
        tun_dir_stop(d->t->a->loop, back);
        back->eof = back->shut = true;
    }
}

static void tun_abort(struct tunnel *t, const char *what, int err)
{
    log_debug("tunnel %llu (%s): %s: %s; closing both sides", (unsigned long long)t->serial,
              t->where, what, err_str(err));
    tun_free(t);
}

/* Move what can be moved in direction d. -1 when the tunnel is gone. */
static int tun_pump(struct tun_dir *d)
{
    struct tunnel *t = d->t;
    for (int i = 0; i < TUNNEL_READS_PER_CB && tun_readable(d); i++) {
        size_t room = tun_room(d);
        ssize_t n = read(d->from, d->data + d->len, room);
        if (n > 0) {
            d->len += (size_t)n;
            if (tun_write(d) < 0) {
                tun_abort(t, "write", errno);
                return -1;
            }
            if ((size_t)n < room)
                break;
            continue;
        }
        if (n == 0) {
            tun_eof(d);
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        tun_abort(t, "read", errno);   /* ECONNRESET: a reset closes both sides */
        return -1;
    }
    if (!d->shut && tun_write(d) < 0) {
        tun_abort(t, "write", errno);
        return -1;
    }
    if (d->eof && !d->shut && tun_pending(d) == 0) {
        if (!t->half_close) {          /* a transport that cannot carry half-closes */
            log_debug("tunnel %llu (%s): EOF; closing both sides (half_close false)",
                      (unsigned long long)t->serial, t->where);
            tun_free(t);
            return -1;
        }
        shutdown(d->to, SHUT_WR);      /* pass the half-close on */
        d->shut = true;
    }
    if (t->up.shut && t->down.shut) {
        log_debug("tunnel %llu (%s): closed", (unsigned long long)t->serial, t->where);
        tun_free(t);
        return -1;
    }
    if (!d->shut)
        tun_watch(d);
    return 0;
}

/* Readable `from` or writable `to`: the same pump either way. */
static void tun_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    tun_pump(w->data);
}

/* A direction starting with the bytes of b (taken over, may be empty;
 * `replies`: they are protocol frames, not payload, for the counters). */
static void tun_dir_init(struct tun_dir *d, struct tunnel *t, int from, int to, struct buf *b,
                         bool replies, uint64_t *bytes)
{
    d->uncounted = replies ? buf_size(b) : 0;
    d->t = t;
    d->from = from;
    d->to = to;
    d->bytes = bytes;
    ev_io_init(&d->rio, tun_io_cb, from, EV_READ);
    ev_io_init(&d->wio, tun_io_cb, to, EV_WRITE);
    d->rio.data = d->wio.data = d;
    if (buf_size(b) > 0) {
        d->data = b->data;
        d->off = b->head;
        d->len = b->len;
        d->cap = b->cap;
    } else {
        buf_free(b);
    }
}

/* --- connecting ------------------------------------------------------------------ */

static void tun_fail(struct tunnel *t, int err)
{
    struct conn *c = t->pend.conn;
    struct sa_err e;
    err_sys(&e, err, "connect %s", t->where);
    log_debug("conn %llu: %s", (unsigned long long)t->serial, e.msg);
    wire_msg_error(conn_out(c), true, t->pend.req_id, &e);
    conn_close_soon(c);
    conn_kick(c);
    tun_free(t);
}

/* The connect succeeded: `ok`, then the connection becomes the tunnel. */
static void tun_established(struct tunnel *t)
{
    struct agent *a = t->a;
    struct conn *c = t->pend.conn;
    if (c->closing || c->broken || c->closed) {     /* nobody to relay to */
        tun_free(t);
        return;
    }
    wire_msg_ok(conn_out(c), t->pend.req_id);
    conn_pending_remove(&t->pend);  /* before the hand-over closes c */
    struct buf in, out;
    t->cfd = conn_detach(c, &in, &out);
    tun_dir_init(&t->up, t, t->cfd, t->sfd, &in, false, &a->tunnels.bytes_in);
    tun_dir_init(&t->down, t, t->sfd, t->cfd, &out, true, &a->tunnels.bytes_out);
    a->tunnels.total++;
    log_debug("tunnel %llu: connected to %s", (unsigned long long)t->serial, t->where);
    /* the pipelined bytes and the ok go out first */
    if (tun_pump(&t->up) == 0)
        tun_pump(&t->down);
}

static void tun_connect_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tunnel *t = w->data;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(t->sfd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    ev_io_stop(t->a->loop, &t->connect_w);
    ev_timer_stop(t->a->loop, &t->timeout);
    if (err)
        tun_fail(t, err);
    else
        tun_established(t);
}

static void tun_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    tun_fail(w->data, ETIMEDOUT);
}

/* --- the request ----------------------------------------------------------------- */

static bool tun_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

/* ss is an address of one of the guest's interfaces. */
static bool tun_own_address(const struct sockaddr_storage *ss)
{
    struct ifaddrs *ifa;
    if (getifaddrs(&ifa) < 0)
        return false;
    bool found = false;
    for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != ss->ss_family)
            continue;
        if (ss->ss_family == AF_INET)
            found = ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
                    ((const struct sockaddr_in *)ss)->sin_addr.s_addr;
        else
            found = memcmp(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                           &((const struct sockaddr_in6 *)ss)->sin6_addr, 16) == 0;
    }
    freeifaddrs(ifa);
    return found;
}

/* host and port of the request as an address the settings allow. */
static int tun_target(struct agent *a, const msgpack_object *m, struct sockaddr_storage *ss,
                      socklen_t *len, char *where, size_t wn, struct sa_err *e)
{
    uint64_t port;
    char *host = NULL;
    if (!wire_obj_uint(wire_get(m, "port"), &port) || port < 1 || port > 65535)
        return err_set(e, 0, "bad_request", "field 'port' (1..65535) is required");
    if (wire_opt_cstr(m, "host", &a->zone, &host, e) < 0)
        return -1;
    if (!host)
        host = "127.0.0.1";
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        snprintf(where, wn, "%s:%u", host, (unsigned)port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        snprintf(where, wn, "[%s]:%u", host, (unsigned)port);
    } else {
        return err_set(e, 0, "bad_request", "host '%.64s': expected a numeric IPv4 or IPv6 address",
                       host);
    }
    if (tun_loopback(ss))
        return 0;
    if (a->cfg.tunnel == CFG_TUNNEL_ANY && tun_own_address(ss))
        return 0;
    return err_set(e, EPERM, NULL, "connect %s: %s", where,
                   a->cfg.tunnel == CFG_TUNNEL_ANY
                       ? "only loopback and the guest's own addresses may be reached"
                       : "only loopback addresses may be reached (--tunnel loopback)");
}

/* Check, then start a non-blocking connect; the reply comes from
 * tun_connect_cb (never from here: the connection must not be handed over
 * while its frames are being processed). */
static int tun_start(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                     struct sa_err *e)
{
    struct agent *a = c->a;
    if (a->cfg.tunnel == CFG_TUNNEL_OFF)
        return err_set(e, EPERM, NULL, "tunnels are disabled (--tunnel off)");
    if (c->holding > 0)
        return err_set(e, 0, "busy", "connect must be the only request outstanding on its "
                                     "connection (%u pending)", c->holding);
    if (a->tunnels.open >= a->cfg.max_tunnels)
        return err_set(e, 0, "too_many", "%u tunnels are open (--max-tunnels)", a->tunnels.open);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char where[sizeof ((struct tunnel *)0)->where];
    bool half_close = true;
    if (wire_opt_bool(m, "half_close", &half_close, e) < 0 ||
        tun_target(a, m, &ss, &len, where, sizeof where, e) < 0)
        return -1;
    cleanup_close int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_sys(e, errno, "socket");
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS)
        return err_sys(e, errno, "connect %s", where);
    struct tunnel *t = tun_new(a);
    conn_pending_add(c, &t->pend, &tun_pending_ops, r->id, false);
    t->serial = c->serial;
    t->half_close = half_close;
    t->sfd = steal_fd(&fd);
    snprintf(t->where, sizeof t->where, "%s", where);
    /* writable at once when the connect already finished */
    ev_io_init(&t->connect_w, tun_connect_cb, t->sfd, EV_WRITE);
    ev_timer_init(&t->timeout, tun_timeout_cb, TUNNEL_CONNECT_TIMEOUT_S, 0.);
    t->connect_w.data = t->timeout.data = t;
    ev_io_start(a->loop, &t->connect_w);
    ev_timer_start(a->loop, &t->timeout);
    return 0;
}

int tunnel_request(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    conn_stop_frames(c);             /* whatever follows is payload, or is dropped */
    if (tun_start(c, r, m, e) < 0) {
        conn_close_soon(c);          /* after the error reply */
        return -1;
    }
    return 0;
}
