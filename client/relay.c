/* relay.c — see relay.h. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "err.h"

struct relay_dir {
    int rfd, wfd;
    size_t off, len;                    /* unwritten bytes: buf[off..len) */
    bool eof, shut;
    uint8_t *buf;
};

/* Pass a half-close on: shutdown for sockets; other files (stdout) close. */
static void relay_half_close(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0 && errno == ENOTSOCK)
        close(fd);
}

/* One step of d after poll: read when empty, write what is there. 0, or -1
 * when a side failed (a reset): the relay ends. */
static int relay_step(struct relay_dir *d, size_t bufsize, short rev_in, short rev_out)
{
    if (rev_in && !d->eof && d->len == 0) {
        ssize_t n = read(d->rfd, d->buf, bufsize);
        if (n > 0) {
            d->off = 0;
            d->len = (size_t)n;
        } else if (n == 0) {
            d->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
    }
    if ((rev_out || rev_in) && d->off < d->len) {
        ssize_t n = write(d->wfd, d->buf + d->off, d->len - d->off);
        if (n > 0)
            d->off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        if (d->off == d->len)
            d->off = d->len = 0;
    }
    if (d->eof && d->len == 0 && !d->shut) {
        relay_half_close(d->wfd);
        d->shut = true;
    }
    return 0;
}

void relay_run(int a_rd, int a_wr, int b_rd, int b_wr, const struct relay_opts *o)
{
    size_t bufsize = o->bufsize;
    struct relay_dir d[2] = {
        { .rfd = a_rd, .wfd = b_wr, .buf = xmalloc(bufsize) },
        { .rfd = b_rd, .wfd = a_wr, .buf = xmalloc(o->npre > bufsize ? o->npre : bufsize),
          .len = o->npre },
    };
    if (o->npre > 0)
        memcpy(d[1].buf, o->pre, o->npre);
    relay_stop_fn *stop = o->stop;
    for (;;) {
        struct pollfd p[4];
        int slot[2][2] = {{-1, -1}, {-1, -1}}, n = 0;
        for (int i = 0; i < 2; i++) {
            if (d[i].shut)
                continue;
            if (!d[i].eof && d[i].len == 0) {
                slot[i][0] = n;
                p[n++] = (struct pollfd){.fd = d[i].rfd, .events = POLLIN};
            }
            if (d[i].len > 0) {
                slot[i][1] = n;
                p[n++] = (struct pollfd){.fd = d[i].wfd, .events = POLLOUT};
            }
        }
        if (n == 0 || (stop && stop(o->arg)))
            break;
        int k = poll(p, (nfds_t)n, stop ? o->poll_ms : -1);
        if (k < 0 && errno != EINTR)
            break;
        if (k <= 0)
            continue;
        int bad = 0;
        for (int i = 0; i < 2 && !bad; i++) {
            short rin = slot[i][0] >= 0 ? p[slot[i][0]].revents : 0;
            short rout = slot[i][1] >= 0 ? p[slot[i][1]].revents : 0;
            bad = relay_step(&d[i], bufsize, rin, rout);
        }
        if (bad)
            break;
    }
    free(d[0].buf);
    free(d[1].buf);
}
