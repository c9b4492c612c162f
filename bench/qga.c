/* The qemu-ga baseline: guest-exec of /bin/true with capture-output, then
 * guest-exec-status until it says exited — the way a host drives qemu-ga,
 * over its Unix socket (`qemu-ga -m unix-listen -p SOCK`). Status is
 * polled back to back: qemu-ga has no exit event, and polling without a
 * pause gives it its best figure. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench.h"

#define QGA_WARMUP 50
#define QGA_LINE_MAX 65536

struct qga {
    int fd;
    char buf[QGA_LINE_MAX];
    size_t len;
};

static const char *qga_call(struct qga *q, const char *cmd);

struct qga *qga_open(const char *path)
{
    struct qga *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0 || connect(q->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect %s: %s", path, strerror(errno));
    qga_call(q, "{\"execute\":\"guest-ping\"}\n");
    return q;
}

void qga_close(struct qga *q)
{
    close(q->fd);
    free(q);
}

/* Send one command line and read one reply line (NUL-terminated in q->buf). */
static const char *qga_call(struct qga *q, const char *cmd)
{
    size_t n = strlen(cmd);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(q->fd, cmd + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("qemu-ga: write: %s", strerror(errno));
        off += (size_t)w;
    }
    q->len = 0;
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);
        if (nl) {
            *nl = '\0';
            if (strstr(q->buf, "\"error\""))
                die("qemu-ga: %s", q->buf);
            return q->buf;
        }
        if (q->len == sizeof q->buf - 1)
            die("qemu-ga: reply line too long");
        ssize_t r = read(q->fd, q->buf + q->len, sizeof q->buf - 1 - q->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("qemu-ga: read: %s", r ? strerror(errno) : "connection closed");
        q->len += (size_t)r;
    }
}

/* The value after "key": in a reply, or NULL. */
static const char *qga_field(const char *reply, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(reply, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    return p;
}

void qga_exec_true(struct qga *q)
{
    const char *r = qga_call(q, "{\"execute\":\"guest-exec\",\"arguments\":"
                                "{\"path\":\"/bin/true\",\"capture-output\":true}}\n");
    const char *p = qga_field(r, "pid");
    if (!p)
        die("qemu-ga: guest-exec reply without pid: %s", r);
    long pid = strtol(p, NULL, 10);
    char cmd[128];
    snprintf(cmd, sizeof cmd,
             "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":%ld}}\n", pid);
    for (;;) {
        r = qga_call(q, cmd);
        const char *ex = qga_field(r, "exited");
        if (!ex)
            die("qemu-ga: status without exited: %s", r);
        if (strncmp(ex, "true", 4) == 0)
            break;
    }
    const char *code = qga_field(r, "exitcode");
    if (!code || strtol(code, NULL, 10) != 0)
        die("qemu-ga: /bin/true did not exit 0: %s", r);
}
