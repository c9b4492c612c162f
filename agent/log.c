#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* The log sink: one of the agent's three globals (see STYLE.md). */
static enum log_level log_level = LOG_INFO;

void log_set_level(enum log_level l)
{
    log_level = l;
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (l > log_level)
        return;
    int saved = errno;
    char line[1024];
    int n = snprintf(line, sizeof line, "sandbox-agent[%d]: %s: ", (int)getpid(), names[l]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);   /* one write: lines never interleave */
    (void)w;
    errno = saved;
}
