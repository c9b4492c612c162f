#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

int fd_write_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

int fd_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

void fd_lines_init(struct fd_lines *l, int fd, char *buf, size_t cap)
{
    *l = (struct fd_lines){.fd = fd, .buf = buf, .cap = cap};
}

void fd_lines_init_grow(struct fd_lines *l, int fd, size_t cap, size_t max)
{
    *l = (struct fd_lines){.fd = fd, .buf = xmalloc(cap), .cap = cap, .max = max};
}

void fd_lines_free(struct fd_lines *l)
{
    if (l->max)
        free(l->buf);
    l->buf = NULL;
}

int fd_lines_next(struct fd_lines *l, char **line)
{
    for (;;) {
        char *start = l->buf + l->off;
        char *nl = memchr(start, '\n', l->len - l->off);
        if (nl) {
            l->off = (size_t)(nl - l->buf) + 1;
            if (l->skip) {
                l->skip = false;
                continue;
            }
            *nl = '\0';
            *line = start;
            return 1;
        }
        if (l->eof) {
            if (l->off == l->len || l->skip)
                return 0;
            l->buf[l->len] = '\0';      /* len < cap: room for it */
            *line = start;
            l->off = l->len;
            return 1;
        }
        memmove(l->buf, start, l->len - l->off);
        l->len -= l->off;
        l->off = 0;
        if (l->len == l->cap - 1 && l->cap < l->max && !l->skip) {
            l->cap = l->cap * 2 < l->max ? l->cap * 2 : l->max;   /* a longer line: grow */
            l->buf = xrealloc(l->buf, l->cap);
        } else if (l->len == l->cap - 1) {                          /* too long: skip it */
            l->skip = true;
            l->len = 0;
        }
        ssize_t n = read(l->fd, l->buf + l->len, l->cap - 1 - l->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            l->eof = true;
        l->len += (size_t)n;
    }
}
