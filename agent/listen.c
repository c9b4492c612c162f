#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

static void lsn_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
static void lsn_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents);

static int parse_port(const char *s, unsigned max, unsigned *port)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return -1;
    *port = (unsigned)v;
    return 0;
}

static int sock_bind_listen(int fd, const struct sockaddr *sa, socklen_t len, const char *addr,
                            struct sa_err *e)
{
    if (bind(fd, sa, len) < 0)
        return err_sys(e, errno, "bind %s", addr);
    if (listen(fd, 128) < 0)
        return err_sys(e, errno, "listen %s", addr);
    return 0;
}

/* A socket file nobody answers on is stale: remove it. A live one is an error. */
static int unix_clear_stale(const char *path, struct sa_err *e)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : err_sys(e, errno, "stat %s", path);
    if (!S_ISSOCK(st.st_mode))
        return err_set(e, EEXIST, NULL, "%s exists and is not a socket", path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0)
        return err_set(e, EADDRINUSE, NULL, "%s: another agent is listening there", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return err_sys(e, errno, "unlink %s", path);
    return 0;
}

static int lsn_unix(struct listener *l, const char *path, struct sa_err *e)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (path[0] == '\0' || strlen(path) >= sizeof sun.sun_path)
        return err_set(e, ENAMETOOLONG, NULL, "unix socket path '%s' is empty or too long", path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (unix_clear_stale(path, e) < 0)
        return -1;
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return err_sys(e, errno, "socket");
    /* The socket file is born 0600: Linux gives it the socket inode's mode
     * (fchmod before bind) less the umask. Never a chmod by name afterwards:
     * the name could be a symlink someone swapped in by then. */
    if (fchmod(l->fd, 0600) < 0)
        return err_sys(e, errno, "fchmod the socket for %s", path);
    mode_t old = umask(0177);
    int r = sock_bind_listen(l->fd, (struct sockaddr *)&sun, sizeof sun, l->addr, e);
    umask(old);
    if (r < 0)
        return -1;
    l->unlink_path = xstrdup(path);
    return 0;
}

/* TCP has no peer identity: any process in the VM that reaches the port is
 * a peer. So a tcp: listener needs the token, unless the operator said
 * --insecure-tcp (then the log says so, and every hello). */
static int lsn_tcp_auth(struct listeners *ls, const char *spec, struct sa_err *e)
{
    if (ls->cfg->token_len > 0)
        return 0;
    if (!ls->cfg->insecure_tcp)
        return err_set(e, EPERM, NULL,
                       "tcp:%s without a token: any process in the VM could connect and run "
                       "commands as root; give --token-file, or --insecure-tcp to accept that",
                       spec);
    log_warn("INSECURE: tcp:%s serves WITHOUT A TOKEN (--insecure-tcp): every process that "
             "reaches it can run commands as root", spec);
    ls->insecure_tcp = true;
    return 0;
}

static int lsn_tcp(struct listener *l, const char *spec, bool any, struct sa_err *e)
{
    const char *colon = strrchr(spec, ':');
    unsigned port;
    if (!colon || parse_port(colon + 1, 65535, &port) < 0)
        return err_set(e, EINVAL, NULL, "tcp address '%s': expected tcp:IP:PORT", spec);
    char host[64];
    size_t hlen = (size_t)(colon - spec);
    if (hlen >= sizeof host)
        return err_set(e, EINVAL, NULL, "tcp address '%s': bad host", spec);
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct sockaddr_storage ss = {0};
    socklen_t len;
    bool loopback;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        len = sizeof *in4;
        loopback = (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof *in6;
        loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    } else {
        return err_set(e, EINVAL, NULL, "tcp address '%s': host must be a numeric IP", spec);
    }
    if (!loopback && !any)
        return err_set(e, EPERM, NULL,
                       "tcp address '%s' is not loopback: anyone reaching it could run "
                       "commands; pass --insecure-tcp-any-address to allow it", spec);
    if (!loopback)
        log_warn("listening on non-loopback %s: no peer check applies", spec);
    l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return err_sys(e, errno, "socket");
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return sock_bind_listen(l->fd, (struct sockaddr *)&ss, len, l->addr, e);
}

static int lsn_vsock(struct listener *l, const char *spec, struct sa_err *e)
{
    unsigned port;
    if (parse_port(spec, 0xffffffffu, &port) < 0)
        return err_set(e, EINVAL, NULL, "vsock address 'vsock:%s': expected vsock:PORT", spec);
    struct sockaddr_vm svm = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    l->fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return err_sys(e, errno, "vsock socket (is the vsock driver loaded?)");
    return sock_bind_listen(l->fd, (struct sockaddr *)&svm, sizeof svm, l->addr, e);
}

static void lsn_free(struct listener *l)
{
    if (l->fd >= 0)
        close(l->fd);
    if (l->unlink_path)
        unlink(l->unlink_path);
    free(l->unlink_path);
    free(l->addr);
    free(l);
}

void lsn_init(struct listeners *ls, struct ev_loop *loop, const struct cfg *cfg,
              struct conn_set *conns)
{
    memset(ls, 0, sizeof *ls);
    ls->loop = loop;
    ls->cfg = cfg;
    ls->conns = conns;
}

int lsn_open(struct listeners *ls, const char *addr, struct sa_err *e)
{
    struct listener *l = xcalloc(1, sizeof *l);
    l->set = ls;
    l->fd = -1;
    l->addr = xstrdup(addr);
    int r;
    if (strncmp(addr, "unix:", 5) == 0)
        r = lsn_unix(l, addr + 5, e);
    else if (strncmp(addr, "tcp:", 4) == 0)
        r = lsn_tcp_auth(ls, addr + 4, e) < 0 ? -1 : lsn_tcp(l, addr + 4, ls->cfg->tcp_any, e);
    else if (strncmp(addr, "vsock:", 6) == 0)
        r = lsn_vsock(l, addr + 6, e);
    else
        r = err_set(e, EINVAL, NULL, "address '%s': expected vsock:PORT, unix:PATH or tcp:IP:PORT",
                    addr);
    if (r < 0) {
        lsn_free(l);
        return -1;
    }
    ev_io_init(&l->io, lsn_accept_cb, l->fd, EV_READ);
    ev_timer_init(&l->backoff, lsn_backoff_cb, LSN_BACKOFF_S, 0.);
    l->io.data = l->backoff.data = l;
    ev_io_start(ls->loop, &l->io);
    l->next = ls->list;
    ls->list = l;
    log_info("listening on %s", addr);
    return 0;
}

void lsn_close_all(struct listeners *ls)
{
    while (ls->list) {
        struct listener *l = ls->list;
        ls->list = l->next;
        ev_io_stop(ls->loop, &l->io);
        ev_timer_stop(ls->loop, &l->backoff);
        lsn_free(l);
    }
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t n)
{
    if (ss->ss_family == AF_VSOCK) {
        const struct sockaddr_vm *v = (const struct sockaddr_vm *)ss;
        snprintf(out, n, "vsock:%u:%u", v->svm_cid, v->svm_port);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, n, "tcp:%s:%u", ip, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, n, "tcp:[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, n, "unix");
    }
}

/* Who may drive the agent (cfg_vsock_cid_allowed, cfg_uid_allowed):
 *  - vsock: a peer CID on the allow-list (--vsock-allow-cid; the host, 2, by
 *    default);
 *  - unix: root, the agent's own user, or an --allow-uid uid (SO_PEERCRED),
 *    even if the socket file's mode were loosened;
 *  - tcp: by the listener's address (loopback unless explicitly opened). */
static bool lsn_peer_allowed(const struct cfg *cfg, int fd, const struct sockaddr_storage *ss,
                             char *peer, size_t n)
{
    if (ss->ss_family == AF_VSOCK)
        return cfg_vsock_cid_allowed(cfg, ((const struct sockaddr_vm *)ss)->svm_cid);
    if (ss->ss_family != AF_UNIX)
        return true;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    snprintf(peer, n, "unix:pid=%d,uid=%u", (int)cred.pid, (unsigned)cred.uid);
    return cfg_uid_allowed(cfg, (uint32_t)cred.uid, (uint32_t)geteuid());
}

static void lsn_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct listener *l = w->data;
    for (int i = 0; i < LSN_ACCEPTS_PER_CB; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            char peer[64];
            peer_name(&ss, peer, sizeof peer);
            if (!lsn_peer_allowed(l->set->cfg, fd, &ss, peer, sizeof peer)) {
                log_warn("%s: refused connection from %s", l->addr, peer);
                close(fd);
                continue;
            }
            if (l->starved) {
                log_info("accept on %s: resumed", l->addr);
                l->starved = false;
            }
            conn_accept(l->set->conns, fd, peer);   /* or refused: --max-connections */
            continue;
        }
        switch (errno) {
        case EINTR: case ECONNABORTED: case EPROTO:
            continue;
        case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
            if (!l->starved)     /* once per episode, not every 100 ms */
                log_warn("accept on %s: %s; pausing, retrying every %.0f ms", l->addr,
                         err_str(errno), LSN_BACKOFF_S * 1000);
            l->starved = true;
            ev_io_stop(loop, &l->io);
            /* a one-shot timer that already fired must be set again */
            ev_timer_set(&l->backoff, LSN_BACKOFF_S, 0.);
            ev_timer_start(loop, &l->backoff);
            return;
        default:          /* EAGAIN and the rest */
            return;
        }
    }
}

static void lsn_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct listener *l = w->data;
    ev_io_start(loop, &l->io);
}
