#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* The log sink: one of the agent's three globals (see STYLE.md). */
static struct {
    enum log_level level;
    int kmsg_fd;               /* /dev/kmsg, or -1: stderr */
} sink = {LOG_INFO, -1};

void log_set_level(enum log_level l)
{
    sink.level = l;
}

void log_set_kmsg(int fd)
{
    if (sink.kmsg_fd >= 0 && sink.kmsg_fd != fd)
        close(sink.kmsg_fd);
    sink.kmsg_fd = fd;
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    static const int kprio[] = {3, 4, 6, 7};   /* KERN_ERR, KERN_WARNING, KERN_INFO, KERN_DEBUG */
    if (l > sink.level)
        return;
    int saved = errno;
    char line[1024];
    int n = sink.kmsg_fd >= 0
                ? snprintf(line, sizeof line, "<%d>sandbox-agent: %s: ", kprio[l], names[l])
                : snprintf(line, sizeof line, "sandbox-agent[%d]: %s: ", (int)getpid(), names[l]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* one write: lines never interleave */
    if (sink.kmsg_fd >= 0 && write(sink.kmsg_fd, line, len) == (ssize_t)len) {
        errno = saved;
        return;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
    errno = saved;
}
