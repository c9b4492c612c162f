/* Item 9 (issue 14): the agent's `connect` tunnels against a direct
 * loopback TCP connection to the same server, in the same process.
 *
 *   tunnel ADDR BYTES   BYTES written to a sink that counts them and answers
 *                       the count at EOF: MiB/s direct, then through a tunnel
 *   tunnel-rtt ADDR N   N HTTP request/response round trips on one kept-alive
 *                       connection (TCP_NODELAY): p50/p99 direct and tunnel
 *
 * The servers are threads of this process on 127.0.0.1; the agent relays
 * between its Unix socket and them, as it does between vsock and a guest
 * server.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "client.h"
#include "fdio.h"

#define TUN_CHUNK (1u << 20)            /* one write of the bulk push */
#define TUN_WARMUP 100                  /* round trips not counted */

static const char tun_req[] = "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: sa-bench\r\n"
                              "Accept: */*\r\n\r\n";
static const char tun_resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

enum tun_mode { TUN_SINK, TUN_HTTP };

struct tun_server {
    int fd;
    unsigned port;
    enum tun_mode mode;
};

static void tun_read_full(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("tunnel: read: %s", r == 0 ? "unexpected EOF" : strerror(errno));
        p += r;
        n -= (size_t)r;
    }
}

static void tun_write_full(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("tunnel: write: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

/* One connection of the sink: count to EOF, answer the count. */
static void tun_sink(int fd)
{
    char *buf = malloc(TUN_CHUNK);
    unsigned long long n = 0;
    for (;;) {
        ssize_t r = read(fd, buf, TUN_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (unsigned long long)r;
    }
    char reply[32];
    int len = snprintf(reply, sizeof reply, "%llu", n);
    tun_write_full(fd, reply, (size_t)len);
    free(buf);
}

/* One connection of the HTTP server: a response per request. */
static void tun_http(int fd)
{
    char req[sizeof tun_req - 1];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        ssize_t r = recv(fd, req, sizeof req, MSG_WAITALL);
        if (r != (ssize_t)sizeof req)
            return;
        tun_write_full(fd, tun_resp, sizeof tun_resp - 1);
    }
}

static void *tun_serve(void *arg)
{
    struct tun_server *s = arg;
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (s->mode == TUN_SINK)
            tun_sink(fd);
        else
            tun_http(fd);
        close(fd);
    }
    return NULL;
}

static void tun_server_start(struct tun_server *s, enum tun_mode mode)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof in;
    pthread_t th;
    s->mode = mode;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&in, sizeof in) < 0 || listen(s->fd, 16) < 0 ||
        getsockname(s->fd, (struct sockaddr *)&in, &len) < 0)
        die("tunnel: server: %s", strerror(errno));
    s->port = ntohs(in.sin_port);
    if (pthread_create(&th, NULL, tun_serve, s) != 0 || pthread_detach(th) != 0)
        die("tunnel: server thread");
}

static int tun_direct(unsigned port)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&in, sizeof in) < 0)
        die("tunnel: connect 127.0.0.1:%u: %s", port, strerror(errno));
    return fd;
}

/* An agent connection turned into a tunnel to 127.0.0.1:port, blocking. */
static int tun_open(const char *addr, unsigned port)
{
    struct client *c;
    struct sa_err e;
    struct wire_enc w;
    msgpack_object reply;
    if (client_connect(addr, 10000, &c, &e) < 0)
        die("connect %s: %s", addr, e.msg);
    if (!client_has_cap(c, "tunnel"))
        die("tunnel: the agent has no 'tunnel' capability");
    uint64_t id = client_begin(c, &w, "connect");
    wire_kv_uint(&w, "port", port);
    if (client_end(c, &w, &e) < 0 || client_call(c, id, 10000, &reply, &e) != 0)
        die("tunnel: connect: %s", e.msg);
    struct buf rest;
    int fd = client_detach(c, &rest);
    if (buf_size(&rest) > 0)
        die("tunnel: bytes before the server spoke");
    buf_free(&rest);
    if (fd_set_nonblock(fd, false) < 0)
        die("tunnel: fcntl: %s", strerror(errno));
    return fd;
}

/* Push bytes to the sink through fd; MiB/s (the sink's count checked). */
static double tun_push(int fd, unsigned long long bytes, const char *chunk)
{
    int64_t t0 = bench_now_ns();
    for (unsigned long long left = bytes; left > 0;) {
        size_t n = left < TUN_CHUNK ? (size_t)left : TUN_CHUNK;
        tun_write_full(fd, chunk, n);
        left -= n;
    }
    shutdown(fd, SHUT_WR);
    char reply[32] = {0};
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || got + (size_t)r >= sizeof reply - 1)
            break;
        got += (size_t)r;
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    if (strtoull(reply, NULL, 10) != bytes)
        die("tunnel: the sink counted %s bytes, not %llu", reply, bytes);
    close(fd);
    return (double)bytes / (1024.0 * 1024.0) / s;
}

int bench_tunnel(int argc, char **argv)
{
    if (argc != 3)
        die("usage: tunnel ADDR BYTES");
    unsigned long long bytes = (unsigned long long)bench_count(argv[2], "BYTES");
    static struct tun_server sink;
    tun_server_start(&sink, TUN_SINK);
    char *chunk = malloc(TUN_CHUNK);
    if (!chunk)
        die("out of memory");
    for (size_t i = 0; i < TUN_CHUNK; i++)
        chunk[i] = (char)(i * 131 + 7);
    printf("direct_mib_s %.1f\n", tun_push(tun_direct(sink.port), bytes, chunk));
    printf("tunnel_mib_s %.1f\n", tun_push(tun_open(argv[1], sink.port), bytes, chunk));
    free(chunk);
    return 0;
}

static void tun_rtt(int fd, long n, struct samples *s)
{
    char resp[sizeof tun_resp - 1];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* fails harmlessly on Unix */
    for (long i = 0; i < n + TUN_WARMUP; i++) {
        int64_t t0 = bench_now_ns();
        tun_write_full(fd, tun_req, sizeof tun_req - 1);
        tun_read_full(fd, resp, sizeof resp);
        if (i >= TUN_WARMUP)
            samples_add(s, bench_now_ns() - t0);
    }
    if (memcmp(resp, tun_resp, sizeof resp) != 0)
        die("tunnel-rtt: wrong response");
    close(fd);
}

int bench_tunnel_rtt(int argc, char **argv)
{
    if (argc != 3)
        die("usage: tunnel-rtt ADDR N");
    long n = bench_count(argv[2], "N");
    static struct tun_server http;
    tun_server_start(&http, TUN_HTTP);
    struct samples direct = {0}, tunnel = {0};
    tun_rtt(tun_direct(http.port), n, &direct);
    tun_rtt(tun_open(argv[1], http.port), n, &tunnel);
    samples_report(&direct, "direct_rtt");
    samples_report(&tunnel, "tunnel_rtt");
    samples_free(&direct);
    samples_free(&tunnel);
    return 0;
}
