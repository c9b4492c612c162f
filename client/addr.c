#include "addr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "clock.h"
#include "fdio.h"

#define FC_LINE_MAX 64   /* "OK 1073741824\n" is 14 bytes */

/* --- parsing -------------------------------------------------------------- */

static int bad(struct sa_err *e, const char *s, const char *why)
{
    return err_set(e, EINVAL, "bad_address", "bad address '%s': %s", s, why);
}

/* A decimal number in [lo, hi]: digits only, no sign, no spaces. */
static bool parse_num(const char *s, size_t n, uint64_t lo, uint64_t hi, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = (uint32_t)v;
    return true;
}

static int parse_path(const char *full, const char *p, size_t n, struct addr *a, struct sa_err *e)
{
    if (n == 0)
        return bad(e, full, "empty socket path");
    if (n >= sizeof a->path)
        return bad(e, full, "socket path longer than 107 bytes");
    memcpy(a->path, p, n);
    a->path[n] = '\0';
    return 0;
}

static int parse_unix(const char *full, const char *rest, struct addr *a, struct sa_err *e)
{
    a->kind = ADDR_UNIX;
    return parse_path(full, rest, strlen(rest), a, e);
}

static int parse_vsock(const char *full, const char *rest, struct addr *a, struct sa_err *e)
{
    a->kind = ADDR_VSOCK;
    const char *colon = strchr(rest, ':');
    if (!colon)
        return bad(e, full, "expected vsock:CID:PORT");
    if (!parse_num(rest, (size_t)(colon - rest), 0, UINT32_MAX, &a->cid))
        return bad(e, full, "CID must be a decimal number below 2^32");
    if (!parse_num(colon + 1, strlen(colon + 1), 0, UINT32_MAX, &a->port))
        return bad(e, full, "port must be a decimal number below 2^32");
    return 0;
}

static int parse_tcp(const char *full, const char *rest, struct addr *a, struct sa_err *e)
{
    const char *host = rest, *hend, *port;
    a->kind = ADDR_TCP;
    if (rest[0] == '[') {
        host = rest + 1;
        hend = strchr(host, ']');
        if (!hend || hend[1] != ':')
            return bad(e, full, "expected tcp:[V6ADDR]:PORT");
        port = hend + 2;
    } else {
        hend = strrchr(rest, ':');
        if (!hend)
            return bad(e, full, "expected tcp:HOST:PORT");
        if (memchr(rest, ':', (size_t)(hend - rest)))
            return bad(e, full, "an IPv6 address goes in brackets: tcp:[::1]:PORT");
        port = hend + 1;
    }
    size_t hn = (size_t)(hend - host);
    if (hn == 0)
        return bad(e, full, "empty host");
    if (hn >= sizeof a->host)
        return bad(e, full, "host name too long");
    memcpy(a->host, host, hn);
    a->host[hn] = '\0';
    if (!parse_num(port, strlen(port), 1, 65535, &a->port))
        return bad(e, full, "port must be 1..65535");
    return 0;
}

static int parse_fc(const char *full, const char *rest, struct addr *a, struct sa_err *e)
{
    a->kind = ADDR_FC;
    const char *colon = strrchr(rest, ':');    /* the path may itself hold ':' */
    if (!colon)
        return bad(e, full, "expected fc:UDS_PATH:PORT");
    if (!parse_num(colon + 1, strlen(colon + 1), 0, UINT32_MAX, &a->port))
        return bad(e, full, "port must be a decimal number below 2^32");
    return parse_path(full, rest, (size_t)(colon - rest), a, e);
}

int addr_parse(const char *s, struct addr *a, struct sa_err *e)
{
    static const struct {
        const char *prefix;
        int (*parse)(const char *, const char *, struct addr *, struct sa_err *);
    } kinds[] = {
        { "unix:", parse_unix }, { "vsock:", parse_vsock },
        { "tcp:", parse_tcp },   { "fc:", parse_fc },
    };
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(s, kinds[i].prefix, n) == 0)
            return kinds[i].parse(s, s + n, a, e);
    }
    return bad(e, s, "expected unix:PATH, vsock:CID:PORT, tcp:HOST:PORT or fc:UDS_PATH:PORT");
}

void addr_format(const struct addr *a, char *out, size_t n)
{
    switch (a->kind) {
    case ADDR_UNIX:
        snprintf(out, n, "unix:%s", a->path);
        break;
    case ADDR_VSOCK:
        snprintf(out, n, "vsock:%" PRIu32 ":%" PRIu32, a->cid, a->port);
        break;
    case ADDR_TCP:
        snprintf(out, n, strchr(a->host, ':') ? "tcp:[%s]:%" PRIu32 : "tcp:%s:%" PRIu32,
                 a->host, a->port);
        break;
    case ADDR_FC:
        snprintf(out, n, "fc:%s:%" PRIu32, a->path, a->port);
        break;
    }
}

int addr_timeout_from_env(void)
{
    const char *s = getenv("SANDBOX_CONNECT_TIMEOUT");
    if (!s || !*s)
        return ADDR_TIMEOUT_DEFAULT_MS;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < 0 || v > 86400.0)
        return ADDR_TIMEOUT_DEFAULT_MS;
    return (int)(v * 1000.0);
}

/* --- deadlines ------------------------------------------------------------ */


static int remaining(int64_t deadline)
{
    int64_t left = deadline - clock_mono_ms();
    return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Wait for events on fd until the deadline. 1 ready, 0 timed out, -1 errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, remaining(deadline));
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -1;
    }
}

/* --- connecting ----------------------------------------------------------- */

/* connect(2) bounded by the deadline (TCP, vsock); fd is left blocking.
 * 0 or -errno. */
static int connect_until(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
    if (fd_set_nonblock(fd, true) < 0)
        return -errno;
    int r = connect(fd, sa, len);
    if (r < 0 && (errno == EINPROGRESS || errno == EINTR)) {
        int w = wait_fd(fd, POLLOUT, deadline);
        if (w <= 0)
            return w == 0 ? -ETIMEDOUT : -errno;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            return -errno;
        r = soerr ? (errno = soerr, -1) : 0;
    }
    if (r < 0)
        return -errno;
    if (fd_set_nonblock(fd, false) < 0)
        return -errno;
    return 0;
}

/* One connection to a Unix socket path. fd or -errno. A plain blocking
 * connect: a local listener accepts or refuses at once (a non-blocking one
 * would fail with EAGAIN on a full backlog instead of waiting). */
static int connect_unix(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    memcpy(sun.sun_path, path, strlen(path) + 1);   /* length checked by addr_parse */
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        return -errno;
    return steal_fd(&fd);
}

static int connect_vsock(const struct addr *a, int64_t deadline)
{
    struct sockaddr_vm svm = { .svm_family = AF_VSOCK, .svm_cid = a->cid, .svm_port = a->port };
    cleanup_close int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = connect_until(fd, (struct sockaddr *)&svm, sizeof svm, deadline);
    return r < 0 ? r : steal_fd(&fd);
}

static int connect_tcp(const struct addr *a, int64_t deadline, struct sa_err *e)
{
    char port[16];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res;
    snprintf(port, sizeof port, "%" PRIu32, a->port);
    int g = getaddrinfo(a->host, port, &hints, &res);
    if (g != 0)
        return err_set(e, ENOENT, "ENOENT", "tcp:%s:%s: %s", a->host, port, gai_strerror(g));
    int last = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        cleanup_close int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                                      ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int r = connect_until(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        if (r == 0) {
            freeaddrinfo(res);
            return steal_fd(&fd);
        }
        last = -r;
    }
    freeaddrinfo(res);
    return err_sys(e, last, "connect tcp:%s:%s", a->host, port);
}

/* Send all of s, or -errno (no SIGPIPE: the proxy may have hung up). */
static int write_line(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read the proxy's answer one byte at a time (the guest's bytes follow it
 * directly and belong to the caller). 0 on "OK ...", -ECONNRESET when the
 * proxy closed or said something else, -ETIMEDOUT, or another -errno. */
static int read_ok_line(int fd, int64_t deadline)
{
    char line[FC_LINE_MAX];
    size_t n = 0;
    for (;;) {
        int w = wait_fd(fd, POLLIN, deadline);
        if (w <= 0)
            return w == 0 ? -ETIMEDOUT : -errno;
        ssize_t r = read(fd, line + n, 1);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (r == 0)
            return -ECONNRESET;
        if (line[n] == '\n')
            break;
        if (++n == sizeof line)
            return -ECONNRESET;
    }
    if (n >= 2 && line[0] == 'O' && line[1] == 'K' && (n == 2 || line[2] == ' '))
        return 0;
    return -ECONNRESET;
}

/* One attempt at the hybrid-vsock handshake. fd or -errno. */
static int fc_attempt(const struct addr *a, int64_t deadline)
{
    char req[32];
    int n = snprintf(req, sizeof req, "CONNECT %" PRIu32 "\n", a->port);
    cleanup_close int fd = connect_unix(a->path);
    if (fd < 0)
        return fd;
    int r = write_line(fd, req, (size_t)n);
    if (r == 0)
        r = read_ok_line(fd, deadline);
    return r < 0 ? r : steal_fd(&fd);
}

/* Failures that mean "the VM or its guest listener is not there yet". */
static bool fc_retryable(int err)
{
    return err == ENOENT || err == ECONNREFUSED || err == ECONNRESET || err == EPIPE ||
           err == EAGAIN;
}

/* The error of a handshake that failed for good with err. */
static int fc_fail(const struct addr *a, int err, int timeout_ms, struct sa_err *e)
{
    if (err == ECONNRESET)
        return err_set(e, ECONNRESET, NULL,
                       "fc:%s:%" PRIu32 ": no guest listener after %d ms "
                       "(the proxy closed the connection or did not answer OK)",
                       a->path, a->port, timeout_ms);
    if (fc_retryable(err))
        return err_set(e, err, NULL, "fc:%s:%" PRIu32 ": %s (gave up after %d ms)",
                       a->path, a->port, strerror(err), timeout_ms);
    return err_sys(e, err, "fc:%s:%" PRIu32, a->path, a->port);
}

static int connect_fc(const struct addr *a, int timeout_ms, int64_t deadline, struct sa_err *e)
{
    int delay = ADDR_BACKOFF_START_MS;
    for (;;) {
        int fd = fc_attempt(a, deadline);
        if (fd >= 0)
            return fd;
        int err = -fd;
        if (!fc_retryable(err) || remaining(deadline) == 0)
            return fc_fail(a, err, timeout_ms, e);
        int left = remaining(deadline);
        sleep_ms(delay < left ? delay : left);
        /* no attempt the deadline would cut short: its ETIMEDOUT would hide
         * why the proxy kept refusing */
        if (remaining(deadline) == 0)
            return fc_fail(a, err, timeout_ms, e);
        delay = delay * 2 > ADDR_BACKOFF_MAX_MS ? ADDR_BACKOFF_MAX_MS : delay * 2;
    }
}

int addr_connect(const struct addr *a, int timeout_ms, struct sa_err *e)
{
    if (timeout_ms < 0)
        timeout_ms = addr_timeout_from_env();
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int fd;
    switch (a->kind) {
    case ADDR_UNIX:
        fd = connect_unix(a->path);
        return fd >= 0 ? fd : err_sys(e, -fd, "connect unix:%s", a->path);
    case ADDR_VSOCK:
        fd = connect_vsock(a, deadline);
        return fd >= 0 ? fd
                       : err_sys(e, -fd, "connect vsock:%" PRIu32 ":%" PRIu32, a->cid, a->port);
    case ADDR_TCP:
        return connect_tcp(a, deadline, e);
    case ADDR_FC:
        return connect_fc(a, timeout_ms, deadline, e);
    }
    return err_set(e, EINVAL, "bad_address", "unknown address kind");
}
