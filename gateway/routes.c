/* routes.c — a session's ports, reached from the host (docs/gateway.md "Routes").
 *
 * Each port given at create (or by PATCH) gets its own listener on the
 * gateway's --listen host and an ephemeral port; the route's url is
 * http://HOST:LPORT. Every accepted connection gets its own thread and its
 * own agent connection, turned into a raw tunnel to the guest's
 * 127.0.0.1:PORT by `connect` (PROTOCOL.md), and relayed byte for byte: any
 * protocol works, HTTP keep-alive and WebSocket upgrades included. A refused
 * guest connect closes that client connection only.
 *
 * Threads: the router polls every listener and the route_wake eventfd (the
 * set changed); listeners are opened and closed under gw->lock by whoever
 * changes a session, and accepted on under it, so a closed descriptor is
 * never accepted on. The saved listener port (state.json) is bound again by
 * the next gateway, so a route's url outlives a gateway restart.
 *
 * Bounds: at most gw->route_conns_max connections relayed at once (more wait
 * in the listen backlog), each holding GW_ROUTE_BUF bytes per direction
 * (plus what the agent sent with its ok); a relay stops reading a side while
 * its bytes are unwritten, and ends within GW_POLL_MS of its session stopping.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw.h"
#include "relay.h"

#define ROUTE_BACKLOG 128
#define ROUTE_FULL_WAIT_MS 50           /* poll interval while route_conns_max are open */
#define ROUTE_THREAD_STACK (256u << 10)

/* --- listeners ------------------------------------------------------------- */

/* The --listen host resolved once (no name lookup under gw->lock later). */
static int route_resolve(struct gw *gw, struct sa_err *e)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai;
    int r = getaddrinfo(gw->listen_host, "0", &hints, &ai);
    if (r != 0)
        return err_set(e, 0, "bad_listen", "routes on %s: %s", gw->listen_host, gai_strerror(r));
    memcpy(&gw->route_addr, ai->ai_addr, ai->ai_addrlen);
    gw->route_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* A listener on the --listen host and lport (0: any); -1 with e. */
static int route_listen(struct gw *gw, uint16_t lport, uint16_t *bound, struct sa_err *e)
{
    struct sockaddr_storage sa = gw->route_addr;
    if (sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons(lport);
    else
        ((struct sockaddr_in *)&sa)->sin_port = htons(lport);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, gw->route_addrlen) < 0 || listen(fd, ROUTE_BACKLOG) < 0) {
        err_sys(e, errno, "route listener on %s:%u", gw->listen_host, lport);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        err_sys(e, errno, "getsockname");
        close(fd);
        return -1;
    }
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void routes_wake(struct gw *gw)
{
    uint64_t one = 1;
    if (gw->route_wake >= 0 && write(gw->route_wake, &one, sizeof one) < 0 && errno != EAGAIN)
        gw_log("routes: wake: %s", strerror(errno));
}

static const struct sroute *route_find(const struct sess *s, unsigned port)
{
    for (unsigned i = 0; i < s->nroutes; i++)
        if (s->routes[i].port == port)
            return &s->routes[i];
    return NULL;
}

int routes_set(struct gw *gw, struct sess *s, json_t *ports, struct sa_err *e)
{
    struct sroute next[GW_ROUTES_MAX];
    bool fresh[GW_ROUTES_MAX];
    unsigned n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(ports, i, v) {
        unsigned port = (unsigned)json_integer_value(v);
        bool dup = false;
        for (unsigned k = 0; k < n; k++)
            dup |= next[k].port == port;
        if (dup || n == GW_ROUTES_MAX)
            continue;
        const struct sroute *old = route_find(s, port);
        if (old && old->fd >= 0) {
            fresh[n] = false;
            next[n++] = *old;
            continue;
        }
        fresh[n] = true;
        next[n] = (struct sroute){ .port = (uint16_t)port, .fd = -1 };
        next[n].fd = route_listen(gw, 0, &next[n].lport, e);
        if (next[n].fd < 0) {
            for (unsigned k = 0; k < n; k++)
                if (fresh[k])
                    close(next[k].fd);
            return -1;
        }
        n++;
    }
    for (unsigned k = 0; k < s->nroutes; k++) {   /* the ports no longer served */
        bool kept = false;
        for (unsigned j = 0; j < n; j++)
            kept |= next[j].fd == s->routes[k].fd;
        if (!kept && s->routes[k].fd >= 0)
            close(s->routes[k].fd);
    }
    memcpy(s->routes, next, n * sizeof *next);
    s->nroutes = n;
    routes_wake(gw);
    return 0;
}

void routes_close(struct gw *gw, struct sess *s)
{
    for (unsigned i = 0; i < s->nroutes; i++)
        if (s->routes[i].fd >= 0) {
            close(s->routes[i].fd);
            s->routes[i].fd = -1;
        }
    routes_wake(gw);
}

json_t *routes_json(struct gw *gw, const struct sess *s)
{
    json_t *a = json_array();
    bool v6 = strchr(gw->listen_host, ':') != NULL;
    for (unsigned i = 0; i < s->nroutes; i++) {
        const struct sroute *r = &s->routes[i];
        char url[sizeof gw->listen_host + 32], sub[GW_ID_MAX + 8];
        snprintf(url, sizeof url, v6 ? "http://[%s]:%u" : "http://%s:%u", gw->listen_host,
                 r->lport);
        snprintf(sub, sizeof sub, "%s-%u", s->id, r->port);
        json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "url", url, "subdomain", sub,
                                           "port", (int)r->port));
    }
    return a;
}

/* --- one route connection ---------------------------------------------------- */

struct rconn {
    struct gw *gw;
    struct sess *s;             /* a reference */
    unsigned port;
    int fd;                     /* the accepted connection */
};

static bool rconn_stop(void *arg)
{
    struct rconn *c = arg;
    return atomic_load(&c->gw->stopping) || !sess_live(c->s);
}

/* The agent connection of c turned into a tunnel to its port; -1 with e. */
static int rconn_tunnel(struct rconn *c, struct buf *rest, struct sa_err *e)
{
    struct client *ac;
    msgpack_object reply;
    uint64_t id;
    if (agent_open(c->gw, c->s, &ac, e) < 0)
        return -1;
    if (!client_has_cap(ac, "tunnel")) {
        client_free(ac);
        return err_set(e, 0, "unsupported", "the agent has no 'tunnel' capability");
    }
    if (client_queue_connect(ac, c->s->addr, c->port, NULL, &id, e) < 0 ||
        agent_call(c->gw, c->s, ac, id, &reply, e) != 0) {
        client_free(ac);
        return -1;
    }
    return client_detach(ac, rest);
}

static void *rconn_main(void *arg)
{
    struct rconn *c = arg;
    struct buf rest;
    struct sa_err e;
    buf_init(&rest);
    int afd = rconn_tunnel(c, &rest, &e);
    if (afd < 0) {
        if (c->gw->verbose)
            gw_log("route %s:%u: %s", c->s->id, c->port, e.msg);
    } else {
        struct relay_opts o = { .bufsize = GW_ROUTE_BUF, .pre = buf_ptr(&rest),
                                .npre = buf_size(&rest), .stop = rconn_stop, .arg = c,
                                .poll_ms = GW_POLL_MS };
        relay_run(c->fd, c->fd, afd, afd, &o);
        close(afd);
    }
    buf_free(&rest);
    close(c->fd);
    struct gw *gw = c->gw;
    sess_put(gw, c->s);
    free(c);
    atomic_fetch_sub(&gw->route_conns, 1);     /* last: routes_stop waits for it */
    return NULL;
}

/* Under gw->lock (takes a reference of s). */
static void rconn_spawn(struct gw *gw, struct sess *s, unsigned port, int fd)
{
    struct rconn *c = xcalloc(1, sizeof *c);
    *c = (struct rconn){ .gw = gw, .s = s, .port = port, .fd = fd };
    s->refs++;
    pthread_attr_t at;
    pthread_t th;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, ROUTE_THREAD_STACK);
    atomic_fetch_add(&gw->route_conns, 1);
    int r = pthread_create(&th, &at, rconn_main, c);
    pthread_attr_destroy(&at);
    if (r != 0) {
        gw_log("route %s:%u: cannot start a thread: %s", s->id, port, strerror(r));
        atomic_fetch_sub(&gw->route_conns, 1);
        s->refs--;              /* the table still holds one */
        close(fd);
        free(c);
    }
}

/* --- the router ------------------------------------------------------------------ */

struct rslot {
    struct sess *s;             /* a reference */
    unsigned idx;
    int fd;
};

/* The poll set: the wake eventfd, then every open listener of a running
 * session (none while route_conns_max connections are open). */
static size_t router_collect(struct gw *gw, struct pollfd **p, struct rslot **slots, size_t *cap)
{
    bool full = atomic_load(&gw->route_conns) >= gw->route_conns_max;
    size_t n = 0;
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->nsess && !full; i++) {
        struct sess *s = gw->sess[i];
        for (unsigned k = 0; k < s->nroutes && sess_live(s); k++) {
            if (s->routes[k].fd < 0)
                continue;
            if (n + 1 >= *cap) {
                *cap = *cap * 2;
                *p = xrealloc(*p, *cap * sizeof **p);
                *slots = xrealloc(*slots, *cap * sizeof **slots);
            }
            s->refs++;
            (*slots)[n] = (struct rslot){ .s = s, .idx = k, .fd = s->routes[k].fd };
            (*p)[n + 1] = (struct pollfd){ .fd = s->routes[k].fd, .events = POLLIN };
            n++;
        }
    }
    pthread_mutex_unlock(&gw->lock);
    (*p)[0] = (struct pollfd){ .fd = gw->route_wake, .events = POLLIN };
    return n;
}

/* Accept on a ready listener if it is still the one polled. Under gw->lock. */
static void router_accept(struct gw *gw, const struct rslot *sl)
{
    struct sess *s = sl->s;
    if (!sess_live(s) || sl->idx >= s->nroutes || s->routes[sl->idx].fd != sl->fd ||
        atomic_load(&gw->route_conns) >= gw->route_conns_max)
        return;
    int fd = accept4(sl->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0)
        rconn_spawn(gw, s, s->routes[sl->idx].port, fd);
    else if (errno == EMFILE || errno == ENFILE)
        gw_log("routes: accept: %s", strerror(errno));
}

static void *router_main(void *arg)
{
    struct gw *gw = arg;
    size_t cap = 16;
    struct pollfd *p = xcalloc(cap, sizeof *p);
    struct rslot *slots = xcalloc(cap, sizeof *slots);
    while (!atomic_load(&gw->stopping)) {
        bool full = atomic_load(&gw->route_conns) >= gw->route_conns_max;
        size_t n = router_collect(gw, &p, &slots, &cap);
        int k = poll(p, n + 1, full ? ROUTE_FULL_WAIT_MS : -1);
        if (k > 0 && p[0].revents) {
            uint64_t v;
            if (read(gw->route_wake, &v, sizeof v) < 0 && errno != EAGAIN)
                gw_log("routes: wake: %s", strerror(errno));
        }
        pthread_mutex_lock(&gw->lock);
        for (size_t i = 0; i < n && k > 0; i++)
            if (p[i + 1].revents)
                router_accept(gw, &slots[i]);
        pthread_mutex_unlock(&gw->lock);
        for (size_t i = 0; i < n; i++)
            sess_put(gw, slots[i].s);
        if (k > 0 && !p[0].revents && n > 0) {
            bool any = false;       /* a listener that failed hard: do not spin */
            for (size_t i = 0; i < n; i++)
                any |= (p[i + 1].revents & (POLLERR | POLLNVAL)) != 0;
            if (any)
                poll(NULL, 0, ROUTE_FULL_WAIT_MS);
        }
    }
    free(p);
    free(slots);
    return NULL;
}

int routes_start(struct gw *gw, struct sa_err *e)
{
    if (route_resolve(gw, e) < 0)
        return -1;
    gw->route_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (gw->route_wake < 0)
        return err_sys(e, errno, "eventfd");
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->nsess; i++) {
        struct sess *s = gw->sess[i];
        for (unsigned k = 0; k < s->nroutes && sess_live(s); k++) {
            struct sroute *r = &s->routes[k];
            struct sa_err le;
            uint16_t want = r->lport;
            r->fd = route_listen(gw, want, &r->lport, &le);
            if (r->fd < 0)      /* the port was taken meanwhile: a new url */
                r->fd = route_listen(gw, 0, &r->lport, &le);
            if (r->fd < 0)
                gw_log("session %s: route for port %u: %s", s->id, r->port, le.msg);
            else if (r->lport != want)
                gw_log("session %s: route for port %u moved from port %u to %u", s->id, r->port,
                       want, r->lport);
        }
    }
    state_save(gw);
    pthread_mutex_unlock(&gw->lock);
    int rc = pthread_create(&gw->router, NULL, router_main, gw);
    return rc ? err_sys(e, rc, "pthread_create") : 0;
}

void routes_stop(struct gw *gw)
{
    routes_wake(gw);
    pthread_join(gw->router, NULL);
    while (atomic_load(&gw->route_conns) > 0)       /* each ends within GW_POLL_MS */
        poll(NULL, 0, 10);
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->nsess; i++)
        for (unsigned k = 0; k < gw->sess[i]->nroutes; k++)
            if (gw->sess[i]->routes[k].fd >= 0) {
                close(gw->sess[i]->routes[k].fd);
                gw->sess[i]->routes[k].fd = -1;
            }
    pthread_mutex_unlock(&gw->lock);
    close(gw->route_wake);
}
