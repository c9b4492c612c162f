/* ctl_forward.c — sandboxctl forward: reach TCP ports inside the sandbox
 * through the agent's `connect` tunnels (PROTOCOL.md "connect",
 * docs/sandboxctl.md "forward").
 *
 *   forward [--guest-host IP] [BIND:]LOCAL_PORT:GUEST_PORT...
 *       listens on each BIND:LOCAL_PORT; every accepted connection gets its
 *       own agent connection, turned into a tunnel by `connect`, relayed by
 *       its own thread (at most FWD_MAX_CONNS at once; more wait in the
 *       listen backlog), until SIGINT or SIGTERM.
 *   forward --stdio GUEST_PORT
 *       one tunnel between stdin/stdout and GUEST_PORT.
 *
 * Bounds: a relay holds at most FWD_BUF bytes per direction and stops
 * reading a side while the bytes for the other are unwritten.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "ctl.h"
#include "relay.h"

#define FWD_BUF (256u << 10)            /* bytes per direction per relay */
#define FWD_MAX_CONNS 512               /* connections relayed at once */
#define FWD_MAX_SPECS 16                /* LOCAL:GUEST arguments */
#define FWD_THREAD_STACK (256u << 10)   /* a relay thread's stack (its buffers are on the heap) */
#define FWD_FULL_WAIT_MS 50             /* poll interval while FWD_MAX_CONNS are open */

struct fwd_spec {
    const char *bind;                   /* numeric or a name; NULL: 127.0.0.1 */
    char bind_buf[64];
    unsigned lport, gport;
    int fd;
    char shown[128];                    /* "127.0.0.1:8080 -> guest 127.0.0.1:3000" */
};

struct fwd_ctx {
    const char *addr;
    const char *ghost;                  /* --guest-host, or NULL */
};

static atomic_uint fwd_active;

/* --- one tunnel ------------------------------------------------------------- */

/* An agent connection turned into a tunnel to ghost:gport: its fd, with the
 * stream's first bytes in *rest. -1 with e and *rc (EXIT_FAILED: the agent
 * refused; EXIT_CONN: no agent). */
static int fwd_open(const struct fwd_ctx *x, unsigned gport, struct buf *rest, int *rc,
                    struct sa_err *e)
{
    struct client *c;
    *rc = EXIT_CONN;
    if (ctl_connect(x->addr, &c, e) < 0)
        return -1;
    if (!client_has_cap(c, "tunnel")) {
        client_free(c);
        *rc = EXIT_USAGE;
        return err_set(e, 0, "unsupported", "not supported by this agent (no 'tunnel' capability)");
    }
    msgpack_object reply;
    uint64_t id;
    int r = client_queue_connect(c, x->addr, gport, x->ghost, &id, e) < 0
                ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, e);
    if (r != 0) {
        *rc = r > 0 ? EXIT_FAILED : EXIT_CONN;
        client_free(c);
        return -1;
    }
    return client_detach(c, rest);
}

/* --- forward LOCAL:GUEST ------------------------------------------------------ */

struct fwd_job {
    const struct fwd_ctx *x;
    const struct fwd_spec *s;
    int fd;                             /* the accepted connection */
};

static void *fwd_thread(void *arg)
{
    struct fwd_job *j = arg;
    struct buf rest;
    struct sa_err e;
    int rc;
    buf_init(&rest);
    int afd = fwd_open(j->x, j->s->gport, &rest, &rc, &e);
    if (afd < 0) {
        warnmsg("forward %s: %s", j->s->shown, e.msg);
    } else {
        if (buf_size(&rest) == 0 || write_full(j->fd, buf_ptr(&rest), buf_size(&rest)) == 0)
            relay_run(j->fd, j->fd, afd, afd, &(struct relay_opts){ .bufsize = FWD_BUF });
        close(afd);
    }
    buf_free(&rest);
    close(j->fd);
    free(j);
    atomic_fetch_sub(&fwd_active, 1);
    return NULL;
}

static void fwd_spawn(const struct fwd_ctx *x, const struct fwd_spec *s, int fd)
{
    struct fwd_job *j = xcalloc(1, sizeof *j);
    j->x = x;
    j->s = s;
    j->fd = fd;
    pthread_attr_t at;
    pthread_t th;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, FWD_THREAD_STACK);
    atomic_fetch_add(&fwd_active, 1);
    int r = pthread_create(&th, &at, fwd_thread, j);
    pthread_attr_destroy(&at);
    if (r != 0) {
        warnmsg("forward %s: cannot start a thread: %s", s->shown, strerror(r));
        atomic_fetch_sub(&fwd_active, 1);
        close(fd);
        free(j);
    }
}

static int fwd_port(const char *s, unsigned lo, unsigned *out)
{
    uint64_t v;
    if (parse_u64(s, &v) < 0 || v < lo || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* "[BIND:]LOCAL_PORT:GUEST_PORT"; BIND may be an IPv6 literal in brackets. */
static int fwd_parse(const char *arg, struct fwd_spec *s)
{
    char tmp[128];
    if (snprintf(tmp, sizeof tmp, "%s", arg) >= (int)sizeof tmp)
        return -1;
    char *g = strrchr(tmp, ':');
    if (!g)
        return -1;
    *g++ = '\0';
    char *l = strrchr(tmp, ':');
    const char *bind = NULL;
    if (l && tmp[0] == '[' && l > tmp && l[-1] != ']')
        return -1;
    if (l) {
        *l++ = '\0';
        bind = tmp;
    } else {
        l = tmp;
    }
    if (fwd_port(l, 0, &s->lport) < 0 || fwd_port(g, 1, &s->gport) < 0)
        return -1;
    if (bind) {
        size_t n = strlen(bind);
        if (n >= 2 && bind[0] == '[' && bind[n - 1] == ']') {
            bind++;
            n -= 2;
        } else if (strchr(bind, ':')) {
            return -1;                  /* an IPv6 BIND goes in brackets, as for ssh -L */
        }
        if (n == 0 || n >= sizeof s->bind_buf)
            return -1;
        memcpy(s->bind_buf, bind, n);
        s->bind_buf[n] = '\0';
        s->bind = s->bind_buf;
    }
    return 0;
}

static int fwd_listen(struct fwd_spec *s, const char *ghost)
{
    const char *host = s->bind ? s->bind : "127.0.0.1";
    char port[8];
    snprintf(port, sizeof port, "%u", s->lport);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai;
    int r = getaddrinfo(host, port, &hints, &ai);
    if (r != 0) {
        warnmsg("forward: %s: %s", host, gai_strerror(r));
        return -1;
    }
    s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (s->fd < 0 || setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(s->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(s->fd, 128) < 0) {
        warnmsg("forward: listen on %s:%s: %s", host, port, strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned bound = s->lport;
    if (getsockname(s->fd, (struct sockaddr *)&ss, &len) == 0) {
        const void *a = ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                 : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
        inet_ntop(ss.ss_family, a, ip, sizeof ip);
        bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(s->shown, sizeof s->shown, ss.ss_family == AF_INET6 ? "[%s]:%u -> guest %s:%u"
                                                                  : "%s:%u -> guest %s:%u",
             ip, bound, ghost ? ghost : "127.0.0.1", s->gport);
    return 0;
}

/* Accept until a signal. Returns when SIGINT or SIGTERM arrives. */
static int fwd_loop(const struct fwd_ctx *x, struct fwd_spec *specs, int n, int sfd)
{
    for (;;) {
        struct pollfd p[FWD_MAX_SPECS + 1];
        bool full = atomic_load(&fwd_active) >= FWD_MAX_CONNS;
        p[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < n; i++)
            p[i + 1] = (struct pollfd){.fd = full ? -1 : specs[i].fd, .events = POLLIN};
        if (poll(p, (nfds_t)n + 1, full ? FWD_FULL_WAIT_MS : -1) < 0 && errno != EINTR)
            return EXIT_FAILED;
        if (p[0].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == sizeof si) {
                fprintf(stderr, "sandboxctl: forward: signal %u, stopping (%u connections open)\n",
                        si.ssi_signo, atomic_load(&fwd_active));
                return 0;
            }
        }
        for (int i = 0; i < n; i++) {
            if (!(p[i + 1].revents & POLLIN))
                continue;
            int fd = accept4(specs[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0)
                fwd_spawn(x, &specs[i], fd);
            else if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, FWD_FULL_WAIT_MS);   /* no fd to spare: let relays end */
        }
    }
}

static int fwd_ports(const struct fwd_ctx *x, int argc, char **argv)
{
    /* static: relay threads still use them while the process exits */
    static struct fwd_spec specs[FWD_MAX_SPECS];
    int n = argc - optind;
    if (n < 1)
        return usage_error("forward: give [BIND:]LOCAL_PORT:GUEST_PORT (or --stdio GUEST_PORT)");
    if (n > FWD_MAX_SPECS)
        return usage_error("forward: at most %d ports", FWD_MAX_SPECS);
    memset(specs, 0, sizeof specs);
    for (int i = 0; i < n; i++)
        if (fwd_parse(argv[optind + i], &specs[i]) < 0)
            return usage_error("forward: '%s': expected [BIND:]LOCAL_PORT:GUEST_PORT",
                               argv[optind + i]);
    int rc;
    struct client *c = connect_cap(x->addr, "tunnel", "forward", &rc);
    if (!c)
        return rc;
    client_free(c);
    /* the signals are read from a signalfd; relay threads never see them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        warnmsg("forward: signalfd: %s", strerror(errno));
        return EXIT_FAILED;
    }
    for (int i = 0; i < n; i++) {
        if (fwd_listen(&specs[i], x->ghost) < 0)
            return EXIT_FAILED;
        printf("forwarding %s\n", specs[i].shown);
    }
    if (fflush(stdout) != 0)
        return EXIT_FAILED;
    return fwd_loop(x, specs, n, sfd);
}

static int fwd_stdio(const struct fwd_ctx *x, int argc, char **argv)
{
    unsigned gport;
    if (argc - optind != 1 || fwd_port(argv[optind], 1, &gport) < 0)
        return usage_error("forward --stdio: give one GUEST_PORT (1..65535)");
    struct buf rest;
    struct sa_err e;
    int rc;
    buf_init(&rest);
    int afd = fwd_open(x, gport, &rest, &rc, &e);
    if (afd < 0) {
        warnmsg("forward --stdio %u: %s", gport, e.msg);
        return rc;
    }
    int fl0 = fcntl(0, F_GETFL), fl1 = fcntl(1, F_GETFL);
    if (buf_size(&rest) > 0 && write_full(1, buf_ptr(&rest), buf_size(&rest)) < 0)
        rc = EXIT_FAILED;
    buf_free(&rest);
    if (rc != EXIT_FAILED) {
        /* non-blocking for the relay; the flags are shared with whoever gave
         * us these files, so they are put back after */
        fcntl(0, F_SETFL, fl0 | O_NONBLOCK);
        fcntl(1, F_SETFL, fl1 | O_NONBLOCK);
        relay_run(0, 1, afd, afd, &(struct relay_opts){ .bufsize = FWD_BUF });
        fcntl(0, F_SETFL, fl0);
        fcntl(1, F_SETFL, fl1);
    }
    close(afd);
    return rc == EXIT_FAILED ? rc : 0;
}

int verb_forward(const char *addr, int argc, char **argv)
{
    enum { OPT_STDIO = 256, OPT_GHOST };
    static const struct option longopts[] = {
        { "stdio", no_argument, NULL, OPT_STDIO },
        { "guest-host", required_argument, NULL, OPT_GHOST },
        { NULL, 0, NULL, 0 },
    };
    static struct fwd_ctx x;           /* static: see fwd_ports */
    x.addr = addr;
    bool stdio = false;
    int ch, rc;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+:", longopts, NULL)) != -1) {
        if (ch == OPT_STDIO)
            stdio = true;
        else if (ch == OPT_GHOST)
            x.ghost = optarg;
        else if (ch == ':')
            return usage_error("forward: option %s needs an argument", opt_name(argv));
        else
            return usage_error("forward: unknown option %s", opt_name(argv));
    }
    if ((rc = need_addr(addr)) != 0)
        return rc;
    return stdio ? fwd_stdio(&x, argc, argv) : fwd_ports(&x, argc, argv);
}
