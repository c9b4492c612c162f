#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* The log sink: one of the agent's three globals (see STYLE.md). */
static struct {
    enum log_level level;
    int kmsg_fd;               /* /dev/kmsg, or -1: stderr */
    int journal;               /* stderr is systemd's journal: 1, not: 0, not yet known: -1 */
} sink = {LOG_INFO, -1, -1};

/* systemd.exec(5): $JOURNAL_STREAM is "DEVICE:INODE" of the stream it gave
 * the service; when that is still our stderr, journald adds the name and pid
 * itself and reads sd-daemon(3)'s "<N>" priority prefix. */
static int log_stderr_is_journal(void)
{
    const char *v = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char end;
    struct stat st;
    if (!v || sscanf(v, "%llu:%llu%c", &dev, &ino, &end) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

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
    static const int kprio[] = {3, 4, 6, 7};   /* KERN_/LOG_ ERR, WARNING, INFO, DEBUG */
    if (l > sink.level)
        return;
    int saved = errno;
    char line[1024];
    if (sink.journal < 0)
        sink.journal = log_stderr_is_journal();
    int n = sink.kmsg_fd >= 0 ? snprintf(line, sizeof line, "<%d>sandbox-agent: %s: ", kprio[l], names[l])
            : sink.journal    ? snprintf(line, sizeof line, "<%d>%s: ", kprio[l], names[l])
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
