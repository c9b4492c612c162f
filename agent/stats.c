#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "err.h"

/* Read at most n-1 bytes of path into buf, NUL-terminated. Bytes read, or -1. */
static ssize_t stats_read(const char *path, char *buf, size_t n)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n - 1) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

static uint64_t stats_uptime_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The kernel's load averages from sysinfo(2), in 16.16 fixed point: the
 * figures /proc/loadavg prints with two decimals, with no file to read. */
static void stats_load(double load[3])
{
    struct sysinfo si;
    bool ok = sysinfo(&si) == 0;
    for (int i = 0; i < 3; i++)
        load[i] = ok ? (double)si.loads[i] / (double)(1u << SI_LOAD_SHIFT) : 0.;
}

/* The decimal number at *p (blanks before it skipped) into *v, *p moved past
 * it: false when there is none. strtoull rather than sscanf: scanf's engine is
 * ~28 KiB of libc text that nothing else in the agent runs. */
static bool parse_u64(const char **p, unsigned long long *v)
{
    char *end;
    errno = 0;
    *v = strtoull(*p, &end, 10);
    if (end == *p || errno)
        return false;
    *p = end;
    return true;
}

/* The value in kB of "key:" in /proc/meminfo text, as bytes; 0 if absent. */
static uint64_t stats_meminfo_field(const char *text, const char *key)
{
    size_t kn = strlen(key);
    const char *p = text;
    while (p) {
        unsigned long long kb;
        const char *v = p + kn + 1;
        if (strncmp(p, key, kn) == 0 && p[kn] == ':' && parse_u64(&v, &kb))
            return (uint64_t)kb * 1024u;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

static void stats_mem(struct stats_sys *s)
{
    char buf[STATS_FILE_MAX];     /* MemTotal and MemAvailable are the first lines */
    if (stats_read("/proc/meminfo", buf, sizeof buf) <= 0)
        return;
    s->mem_total = stats_meminfo_field(buf, "MemTotal");
    s->mem_available = stats_meminfo_field(buf, "MemAvailable");
}

static void stats_disk(const char *path, struct stats_sys *s)
{
    struct statvfs v;
    if (!path || statvfs(path, &v) < 0)
        return;
    s->disk_total = (uint64_t)v.f_blocks * v.f_frsize;
    s->disk_free = (uint64_t)v.f_bavail * v.f_frsize;
}

/* One read: statm is under 100 bytes and the kernel makes it whole in its
 * first read (one fewer system call per command in `stats`). */
static uint64_t stats_statm_rss(const char *path)
{
    char buf[256];
    unsigned long long size, resident;
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ssize_t r;
    do
        r = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    const char *p = buf;
    if (!parse_u64(&p, &size) || !parse_u64(&p, &resident))
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    return (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
}

/* The agent's open fds, counted with one poll(2) over its whole fd table
 * (FDSize of /proc/self/status, at most the soft RLIMIT_NOFILE): every slot
 * that is not open comes back POLLNVAL — and so do O_PATH fds (poll does not
 * see them), which an F_GETFD of each POLLNVAL slot tells apart. With events
 * 0 and timeout 0 nothing waits and nothing is registered. Listing
 * /proc/self/fd instead costs the kernel a dentry per fd: ~1 us each, 18 ms
 * of a `stats` with 10,000 commands (docs/agent.md "Many commands"). -1 when
 * it cannot be done. */
static int64_t stats_poll_fds(void)
{
    char buf[STATS_FILE_MAX];
    if (stats_read("/proc/self/status", buf, sizeof buf) <= 0)
        return -1;
    const char *p = strstr(buf, "\nFDSize:");
    unsigned long long size;
    struct rlimit rl;
    if (p)
        p += strlen("\nFDSize:");
    if (!p || !parse_u64(&p, &size) || getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && size > rl.rlim_cur)
        size = rl.rlim_cur;                       /* poll refuses more (EINVAL) */
    if (size == 0 || size > STATS_POLL_FDS_MAX)
        return -1;
    cleanup_free struct pollfd *pf = xcalloc(size, sizeof *pf);
    for (unsigned long long i = 0; i < size; i++)
        pf[i].fd = (int)i;
    if (poll(pf, (nfds_t)size, 0) < 0)
        return -1;
    int64_t n = 0;
    for (unsigned long long i = 0; i < size; i++)
        n += !(pf[i].revents & POLLNVAL) || fcntl((int)i, F_GETFD) >= 0;
    return n;
}

static uint64_t stats_count_fds(void)
{
    int64_t polled = stats_poll_fds();
    if (polled >= 0)
        return (uint64_t)polled;
    int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    uint64_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && atoi(de->d_name) != fd)   /* not our own listing fd */
            n++;
    closedir(d);
    return n;
}

void stats_system(const char *path, struct stats_sys *s)
{
    memset(s, 0, sizeof *s);
    s->uptime_ms = stats_uptime_ms();
    stats_load(s->load);
    stats_mem(s);
    stats_disk(path, s);
    s->agent_rss = stats_statm_rss("/proc/self/statm");
    s->agent_fds = stats_count_fds();
}

/* utime+stime of pid from /proc/<pid>/stat (fields 14 and 15, counted after
 * the command name, which may itself hold spaces and parentheses). */
static uint64_t stats_proc_cpu_ms(pid_t pid)
{
    char path[64], buf[STATS_FILE_MAX];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (stats_read(path, buf, sizeof buf) <= 0)
        return 0;
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt
     * majflt cmajflt utime stime — the 12th space from ')' precedes utime */
    for (int skip = 0; p && skip < 12; skip++)
        p = strchr(p + 1, ' ');
    if (!p || !parse_u64(&p, &ut) || !parse_u64(&p, &st))
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (ut + st) * 1000u / (uint64_t)(hz > 0 ? hz : 100);
}

uint64_t stats_cpu_ms(pid_t pid, int cgroup_dirfd)
{
    uint64_t usec;
    if (cgroup_dirfd >= 0 && cg_cpu_usec(cgroup_dirfd, &usec) == 0)
        return usec / 1000u;
    return pid > 0 ? stats_proc_cpu_ms(pid) : 0;
}

uint64_t stats_rss(pid_t pid)
{
    char path[64];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    return stats_statm_rss(path);
}
