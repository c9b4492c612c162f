/* stats.h — what `stats` reports, read from /proc, statvfs and clocks.
 *
 * Pure reads: every file is opened O_RDONLY|O_CLOEXEC, read once into a
 * bounded stack buffer (STATS_FILE_MAX) and parsed there. Nothing here fails:
 * a value that cannot be read is reported as 0.
 */
#ifndef SA_STATS_H
#define SA_STATS_H

#include <stdint.h>
#include <sys/types.h>

#define STATS_FILE_MAX 4096      /* bytes read of any one /proc file */
#define STATS_POLL_FDS_MAX (1u << 20)   /* fd table slots polled to count fds (16 bytes each) */

struct stats_sys {
    uint64_t uptime_ms;          /* CLOCK_BOOTTIME */
    double load[3];              /* 1, 5, 15 minutes */
    uint64_t mem_total, mem_available;   /* bytes (/proc/meminfo) */
    uint64_t disk_total, disk_free;      /* bytes (statvfs; free = available to non-root) */
    uint64_t agent_rss;          /* bytes (/proc/self/statm) */
    uint64_t agent_fds;          /* open fds (a poll of the fd table, else /proc/self/fd) */
};

/* The machine and the agent itself; disk figures are those of path's filesystem. */
void stats_system(const char *path, struct stats_sys *s);

/* CPU time of a command: its cgroup's (cgroup_dirfd >= 0) or else its
 * leader's utime+stime (pid > 0); 0 when neither is known. */
uint64_t stats_cpu_ms(pid_t pid, int cgroup_dirfd);
/* Resident memory of a process in bytes (/proc/<pid>/statm), 0 if unknown. */
uint64_t stats_rss(pid_t pid);

#endif
