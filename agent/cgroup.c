#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdio.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_NAME_MAX 32           /* "cmd-<u64>", "agent-<pid>" */
#define CG_LINE_SMALL 512        /* cgroup.events, cpu.stat, one pid per line */
#define CG_LINE_PROCS 4096
#define CG_LINE_MOUNTINFO 8192   /* longer lines (absurd mount points) are skipped */

static int open_file(int dirfd, const char *name, int flags)
{
    int fd;
    do
        fd = openat(dirfd, name, flags | O_CLOEXEC | O_NOCTTY);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* Write a short string in one write(2), as cgroup files expect. */
static int write_file(int dirfd, const char *name, const char *s)
{
    cleanup_close int fd = open_file(dirfd, name, O_WRONLY);
    if (fd < 0)
        return -1;
    size_t n = strlen(s);
    ssize_t w;
    do
        w = write(fd, s, n);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    if ((size_t)w != n) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* The value of "key N" in a flat-keyed file (cgroup.events, cpu.stat). */
static int read_key(int dirfd, const char *file, const char *key, uint64_t *v)
{
    cleanup_close int fd = open_file(dirfd, file, O_RDONLY);
    if (fd < 0)
        return -1;
    char buf[CG_LINE_SMALL], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    size_t klen = strlen(key);
    int r;
    while ((r = fd_lines_next(&l, &line)) > 0) {
        if (strncmp(line, key, klen) != 0 || line[klen] != ' ')
            continue;
        char *end;
        errno = 0;
        unsigned long long x = strtoull(line + klen + 1, &end, 10);
        if (errno || end == line + klen + 1) {
            errno = EINVAL;
            return -1;
        }
        *v = x;
        return 0;
    }
    if (r == 0)
        errno = ENOENT;
    return -1;
}

static bool parse_pid(const char *s, pid_t *pid)
{
    long v = 0;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT_MAX - 9) / 10)
            return false;
        v = v * 10 + (*s - '0');
    }
    *pid = (pid_t)v;
    return v > 0;
}

static void cmd_name(char name[CG_NAME_MAX], uint64_t id)
{
    snprintf(name, CG_NAME_MAX, "cmd-%" PRIu64, id);
}

/* --- sub-cgroup walks (bounded depth) ------------------------------------------ */

/* Open dirfd's directory for reading (an O_PATH fd cannot be listed). */
static DIR *open_listing(int dirfd, const char *name)
{
    int fd = open_file(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    DIR *d = fdopendir(fd);
    if (!d)
        close(fd);
    return d;
}

static bool is_subdir(DIR *d, const struct dirent *de)
{
    if (de->d_name[0] == '.' && (de->d_name[1] == '\0' ||
                                 (de->d_name[1] == '.' && de->d_name[2] == '\0')))
        return false;
    if (de->d_type == DT_DIR)
        return true;
    struct stat st;
    return de->d_type == DT_UNKNOWN &&
           fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* rmdir parent/name, first removing its empty sub-cgroups. 0 when gone,
 * -1 with errno (EBUSY: processes remain). */
static int rm_tree(int parent, const char *name, int depth)
{
    if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    if ((errno != EBUSY && errno != ENOTEMPTY) || depth >= CG_TREE_DEPTH)
        return -1;
    DIR *d = open_listing(parent, name);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *de;
    while ((de = readdir(d)))
        if (is_subdir(d, de))
            (void)rm_tree(dirfd(d), de->d_name, depth + 1);
    closedir(d);
    if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    return -1;
}

/* --- signalling pid by pid ------------------------------------------------------ */

/* Pids already signalled in this call: open addressing, fixed size. */
struct pidset {
    pid_t *slot;                 /* 0: empty */
    size_t cap, n;
    bool full;
};

/* 1 added, 0 already there, -1 full (unknown). */
static int pidset_add(struct pidset *s, pid_t pid)
{
    size_t i = ((size_t)pid * 2654435761u) & (s->cap - 1);
    for (; s->slot[i]; i = (i + 1) & (s->cap - 1))
        if (s->slot[i] == pid)
            return 0;
    if (s->n >= s->cap / 4 * 3) {
        s->full = true;
        return -1;
    }
    s->slot[i] = pid;
    s->n++;
    return 1;
}

struct sigwalk {
    int sig;
    bool first_pass;
    struct pidset seen;
    int signalled;               /* processes that got the signal */
    int found;                   /* pids not seen before, in this pass */
    int kill_err;                /* first errno of kill other than ESRCH */
};

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* Is pid, now, in the cgroup at cgpath (its path under /sys/fs/cgroup...)?
 * /proc/PID/cgroup's "0::/a/b" line names it relative to the hierarchy's
 * root, which is where the cgroup2 mount's path ends. */
static bool pid_in_cgroup(pid_t pid, const char *cgpath)
{
    char path[32];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[CG_LINE_SMALL], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    size_t n = strlen(cgpath);
    while (fd_lines_next(&l, &line) > 0) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        size_t k = strlen(line + 3);
        return k > 1 && k <= n && strcmp(cgpath + n - k, line + 3) == 0;
    }
    return false;
}

/* Signal pid as the process cgroup.procs listed, never a process that got
 * its number since: a pidfd pins one process; if /proc/PID/cgroup, read
 * after the pidfd was opened, still names this cgroup, the pidfd is that
 * member, and pidfd_send_signal fails (ESRCH) if it has exited meanwhile.
 * Before Linux 5.3 (no pidfd_open): kill(), with the race it has. Without a
 * cgroup path to compare (no /proc): the pidfd alone. */
static int signal_pid(pid_t pid, int sig, const char *cgpath)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return errno == ENOSYS ? kill(pid, sig) : -1;
    int r;
    if (cgpath && !pid_in_cgroup(pid, cgpath)) {
        errno = ESRCH;
        r = -1;
    } else {
        r = (int)syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0);
    }
    int err = errno;
    close(pfd);
    errno = err;
    return r;
}

static int signal_procs(struct sigwalk *w, int cgfd)
{
    cleanup_close int fd = open_file(cgfd, "cgroup.procs", O_RDONLY);
    if (fd < 0)
        return -1;
    char self[32], cgpath[PATH_MAX];
    snprintf(self, sizeof self, "/proc/self/fd/%d", cgfd);
    ssize_t pn = readlink(self, cgpath, sizeof cgpath - 1);
    if (pn > 0)
        cgpath[pn] = '\0';
    char buf[CG_LINE_PROCS], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    int r;
    while ((r = fd_lines_next(&l, &line)) > 0) {
        pid_t pid;
        if (!parse_pid(line, &pid))
            continue;
        int added = pidset_add(&w->seen, pid);
        if (added == 0 || (added < 0 && !w->first_pass))
            continue;
        w->found++;
        if (signal_pid(pid, w->sig, pn > 0 ? cgpath : NULL) == 0)
            w->signalled++;
        else if (errno != ESRCH && !w->kill_err)
            w->kill_err = errno;
    }
    return r;
}

/* This cgroup, then its sub-cgroups. Errors below the top are ignored: a
 * sub-cgroup may vanish while we walk. */
static int signal_tree(struct sigwalk *w, int cgfd, int depth)
{
    if (signal_procs(w, cgfd) < 0)
        return -1;
    if (depth >= CG_TREE_DEPTH)
        return 0;
    DIR *d = open_listing(cgfd, ".");
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_subdir(d, de))
            continue;
        int sub = open_file(dirfd(d), de->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        if (sub < 0)
            continue;
        (void)signal_tree(w, sub, depth + 1);
        close(sub);
    }
    closedir(d);
    return 0;
}

int cg_signal(int dirfd, int sig, struct sa_err *e)
{
    struct sigwalk w = {.sig = sig, .first_pass = true};
    w.seen.cap = CG_SIGNAL_SEEN_MAX;
    cleanup_free pid_t *slots = xcalloc(w.seen.cap, sizeof *slots);
    w.seen.slot = slots;
    for (int pass = 0; pass < CG_SIGNAL_PASSES; pass++) {
        w.found = 0;
        if (signal_tree(&w, dirfd, 0) < 0)
            return err_sys(e, errno, "reading cgroup.procs");
        w.first_pass = false;
        if (w.found == 0 || w.seen.full)
            break;
    }
    if (w.signalled == 0 && w.kill_err)
        return err_sys(e, w.kill_err, "kill (cgroup members)");
    return w.signalled;
}

int cg_kill(int dirfd, struct sa_err *e)
{
    if (write_file(dirfd, "cgroup.kill", "1") == 0)
        return 0;
    if (errno != ENOENT)
        return err_sys(e, errno, "writing cgroup.kill");
    /* before Linux 5.14: pid by pid; SIGKILL twice does no harm */
    return cg_signal(dirfd, SIGKILL, e) < 0 ? -1 : 0;
}

bool cg_populated(int dirfd)
{
    uint64_t v;
    return read_key(dirfd, "cgroup.events", "populated", &v) == 0 && v != 0;
}

int cg_cpu_usec(int dirfd, uint64_t *usec)
{
    return read_key(dirfd, "cpu.stat", "usage_usec", usec);
}

int cg_cpu_usec_of(const struct cg_state *cg, uint64_t id, uint64_t *usec)
{
    char path[CG_NAME_MAX + sizeof "/cpu.stat"];
    if (!cg->enabled) {
        errno = ENOENT;
        return -1;
    }
    cmd_name(path, id);
    strcat(path, "/cpu.stat");
    return read_key(cg->base_fd, path, "usage_usec", usec);
}

/* --- the pending list --------------------------------------------------------- */

static size_t pending_find(const struct cg_state *cg, uint64_t id)
{
    for (size_t i = 0; i < cg->npending; i++)
        if (cg->pending[i] == id)
            return i;
    return SIZE_MAX;
}

static void pending_drop(struct cg_state *cg, uint64_t id)
{
    size_t i = pending_find(cg, id);
    if (i != SIZE_MAX)
        cg->pending[i] = cg->pending[--cg->npending];
}

static void pending_add(struct cg_state *cg, uint64_t id)
{
    if (pending_find(cg, id) != SIZE_MAX)
        return;
    if (cg->npending == CG_PENDING_MAX) {
        cg->abandoned++;
        return;
    }
    if (cg->npending == cg->pending_cap) {
        cg->pending_cap = cg->pending_cap ? cg->pending_cap * 2 : 16;
        if (cg->pending_cap > CG_PENDING_MAX)
            cg->pending_cap = CG_PENDING_MAX;
        cg->pending = xrealloc(cg->pending, cg->pending_cap * sizeof *cg->pending);
    }
    cg->pending[cg->npending++] = id;
}

/* --- per-command cgroups -------------------------------------------------------- */

int cg_create(struct cg_state *cg, uint64_t id, int *procs_fd, int *dirfd, struct sa_err *e)
{
    *procs_fd = *dirfd = -1;
    if (!cg->enabled)
        return 0;
    char name[CG_NAME_MAX];
    cmd_name(name, id);
    bool made = cg->spare_id == id;
    if (cg->spare_id && !made) {         /* made for another id: not ours to use */
        char spare[CG_NAME_MAX];
        cmd_name(spare, cg->spare_id);
        (void)rm_tree(cg->base_fd, spare, 0);
    }
    cg->spare_id = 0;
    if (!made && mkdirat(cg->base_fd, name, 0755) < 0) {
        /* Left over: by a spawn that failed (its id is used again) or by a
         * dead agent that had our pid. Reclaim it if it is empty. */
        if (errno != EEXIST)
            return err_sys(e, errno, "mkdir %s/%s", cg->base_path, name);
        if (rm_tree(cg->base_fd, name, 0) < 0)
            return err_sys(e, errno, "%s/%s exists and cannot be removed", cg->base_path, name);
        pending_drop(cg, id);
        if (mkdirat(cg->base_fd, name, 0755) < 0)
            return err_sys(e, errno, "mkdir %s/%s", cg->base_path, name);
    }
    cleanup_close int dfd = open_file(cg->base_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    if (dfd < 0) {
        int err = errno;
        (void)unlinkat(cg->base_fd, name, AT_REMOVEDIR);
        return err_sys(e, err, "open %s/%s", cg->base_path, name);
    }
    int pfd = open_file(dfd, "cgroup.procs", O_WRONLY);
    if (pfd < 0) {
        int err = errno;
        (void)unlinkat(cg->base_fd, name, AT_REMOVEDIR);
        return err_sys(e, err, "open %s/%s/cgroup.procs", cg->base_path, name);
    }
    *procs_fd = pfd;
    *dirfd = steal_fd(&dfd);
    return 0;
}

int cg_open(const struct cg_state *cg, uint64_t id)
{
    if (!cg->enabled) {
        errno = ENOENT;
        return -1;
    }
    char name[CG_NAME_MAX];
    cmd_name(name, id);
    return open_file(cg->base_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
}

void cg_prepare(struct cg_state *cg, uint64_t id)
{
    if (!cg->enabled || cg->spare_id == id)
        return;
    char name[CG_NAME_MAX];
    cmd_name(name, id);
    if (mkdirat(cg->base_fd, name, 0755) == 0)
        cg->spare_id = id;
    /* EEXIST: something left over; cg_create reclaims it when the time comes */
}

void cg_release(struct cg_state *cg, uint64_t id, int dirfd)
{
    if (dirfd >= 0)
        close(dirfd);
    if (!cg->enabled)
        return;
    char name[CG_NAME_MAX];
    cmd_name(name, id);
    if (rm_tree(cg->base_fd, name, 0) < 0 && errno == EBUSY)
        pending_add(cg, id);
    else
        pending_drop(cg, id);
}

void cg_sweep(struct cg_state *cg)
{
    if (!cg->enabled)
        return;
    for (size_t i = 0; i < cg->npending;) {
        char name[CG_NAME_MAX];
        cmd_name(name, cg->pending[i]);
        if (rm_tree(cg->base_fd, name, 0) < 0 && errno == EBUSY)
            i++;
        else
            cg->pending[i] = cg->pending[--cg->npending];
    }
}

/* --- detection and set-up --------------------------------------------------------- */

/* The "0::<path>" line of /proc/self/cgroup. */
static int own_cgroup(const char *file, char *path, size_t size, struct sa_err *e)
{
    cleanup_close int fd = open_file(AT_FDCWD, file, O_RDONLY);
    if (fd < 0)
        return err_sys(e, errno, "open %s", file);
    char buf[PATH_MAX + 16], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    int r;
    while ((r = fd_lines_next(&l, &line)) > 0) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        const char *p = line + 3;
        size_t n = strlen(p);
        static const char deleted[] = " (deleted)";
        if (n >= sizeof deleted - 1 && strcmp(p + n - (sizeof deleted - 1), deleted) == 0)
            return err_set(e, ENOENT, NULL, "our cgroup was removed: %s", p);
        /* "/../x": outside our cgroup namespace, not reachable through a mount */
        if (p[0] != '/' || strstr(p, "/../") || (n >= 3 && strcmp(p + n - 3, "/..") == 0))
            return err_set(e, ENOENT, NULL, "our cgroup is outside our view: %s", p);
        if (n >= size)
            return err_set(e, ENAMETOOLONG, NULL, "our cgroup path is too long");
        memcpy(path, p, n + 1);
        return 0;
    }
    if (r < 0)
        return err_sys(e, errno, "read %s", file);
    return err_set(e, ENOENT, NULL, "no cgroup v2 hierarchy (no 0:: line in %s)", file);
}

/* Undo mountinfo's octal escapes (\040 for space...) in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Split off the next space-separated field. */
static char *field(char **s)
{
    char *f = *s;
    if (!f)
        return NULL;
    char *sp = strchr(f, ' ');
    if (sp) {
        *sp = '\0';
        *s = sp + 1;
    } else {
        *s = NULL;
    }
    return f;
}

/* If this mountinfo line is a cgroup2 mount whose root contains cgpath, the
 * directory of cgpath in it goes to dir. 1 found, 0 not this line. */
static int mount_line(char *line, const char *cgpath, char *dir, size_t size)
{
    char *s = line, *f[5];
    for (int i = 0; i < 5; i++)
        if (!(f[i] = field(&s)))
            return 0;
    char *root = f[3], *mnt = f[4];
    char *x;
    while ((x = field(&s)) && strcmp(x, "-") != 0)
        ;                                   /* optional fields */
    char *fstype = field(&s);
    if (!x || !fstype || strcmp(fstype, "cgroup2") != 0)
        return 0;
    unescape(root);
    unescape(mnt);
    size_t rlen = strcmp(root, "/") == 0 ? 0 : strlen(root);
    if (strncmp(cgpath, root, rlen) != 0 || (cgpath[rlen] != '/' && cgpath[rlen] != '\0'))
        return 0;
    const char *rel = cgpath + rlen;
    if (strcmp(rel, "/") == 0)
        rel = "";
    int n = snprintf(dir, size, "%s%s", mnt, rel);
    return n > 0 && (size_t)n < size;
}

static int own_dir(const char *mountinfo, const char *cgpath, char *dir, size_t size,
                   struct sa_err *e)
{
    cleanup_close int fd = open_file(AT_FDCWD, mountinfo, O_RDONLY);
    if (fd < 0)
        return err_sys(e, errno, "open %s", mountinfo);
    cleanup_free char *buf = xmalloc(CG_LINE_MOUNTINFO);
    char *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, CG_LINE_MOUNTINFO);
    int r;
    while ((r = fd_lines_next(&l, &line)) > 0)
        if (mount_line(line, cgpath, dir, size))
            return 0;
    if (r < 0)
        return err_sys(e, errno, "read %s", mountinfo);
    return err_set(e, ENOENT, NULL, "no cgroup2 mount holding our cgroup %s", cgpath);
}

/* mkdir parent/name (it may exist) and open it O_PATH; *existed says
 * whether it was there already. */
static int make_dir(int parent, const char *name, const char *path, int *fd, bool *existed,
                    struct sa_err *e)
{
    *existed = false;
    if (mkdirat(parent, name, 0755) < 0) {
        if (errno != EEXIST)
            return err_sys(e, errno, "mkdir %s", path);
        *existed = true;
    }
    *fd = open_file(parent, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    if (*fd < 0)
        return err_sys(e, errno, "open %s", path);
    return 0;
}

/* Best effort: offer the memory controller below dirfd, for memory.current. */
static void enable_memory(int dirfd)
{
    cleanup_close int fd = open_file(dirfd, "cgroup.controllers", O_RDONLY);
    if (fd < 0)
        return;
    char buf[CG_LINE_SMALL], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    if (fd_lines_next(&l, &line) <= 0)
        return;
    char *s = line, *c;
    while ((c = field(&s)))
        if (strcmp(c, "memory") == 0) {
            (void)write_file(dirfd, "cgroup.subtree_control", "+memory");
            return;
        }
}

/* Remove the directories of agents that no longer exist, where empty.
 * Not as PID 1: pids in the names may belong to another PID namespace (an
 * agent that is PID 1 of a namespace sees the host's agents as dead), and a
 * VM's init has no predecessors on a freshly mounted cgroup2. */
static void clean_dead_agents(int top_fd)
{
    if (getpid() == 1)
        return;
    DIR *d = open_listing(top_fd, ".");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        pid_t pid;
        if (strncmp(de->d_name, "agent-", 6) != 0 || !parse_pid(de->d_name + 6, &pid) ||
            pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        (void)rm_tree(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* Our directory already existed: a dead agent with our pid left it. Remove
 * its empty command cgroups; queue the others. */
static void adopt_leftovers(struct cg_state *cg)
{
    DIR *d = open_listing(cg->base_fd, ".");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_subdir(d, de))
            continue;
        if (rm_tree(dirfd(d), de->d_name, 0) == 0 || errno != EBUSY)
            continue;
        char *end;
        errno = 0;
        unsigned long long id = strtoull(de->d_name + 4, &end, 10);
        if (strncmp(de->d_name, "cmd-", 4) == 0 && !errno && *end == '\0')
            pending_add(cg, id);
    }
    closedir(d);
}

/* A child born in cgroup dfd (clone3 with CLONE_INTO_CGROUP, as commands
 * are: spawn.c). Fork-like (no CLONE_VM): the child may return from
 * syscall() on its copy of the stack; it only calls _exit. Returns as fork
 * does; -1 with ENOSYS when the kernel (or the architecture's headers)
 * lacks it, so that the caller moves a child by cgroup.procs instead. */
static pid_t probe_clone_into(int dfd)
{
#ifdef SYS_clone3
    struct {
        uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
            set_tid_size, cgroup;
    } args = {.flags = 0x200000000ULL /* CLONE_INTO_CGROUP */, .exit_signal = SIGCHLD,
              .cgroup = (uint64_t)dfd};
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0 && (errno == E2BIG || errno == EINVAL))  /* clone3 older than 5.7 */
        errno = ENOSYS;
    return (pid_t)pid;
#else
    (void)dfd;
    errno = ENOSYS;
    return -1;
#endif
}

/* A child moved into the probe cgroup by a write of "0" to its cgroup.procs. */
static pid_t probe_fork_into(int dfd)
{
    int pfd = open_file(dfd, "cgroup.procs", O_WRONLY);
    if (pfd < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0)
        _exit(write(pfd, "0", 1) == 1 ? 0 : (errno & 0xff ? errno & 0xff : EIO));
    int err = errno;
    close(pfd);
    errno = err;
    return pid;
}

/* Start a short-lived child in a probe cgroup: proves that processes can be
 * put into our cgroups here (permissions, delegation, no-internal-process
 * rule). Born there by clone3 where the kernel has it, as commands are:
 * moving a process by cgroup.procs waits for an RCU grace period (the
 * cgroup threadgroup lock taken for writing), which was most of the agent's
 * start-up (~5-12 ms of it here); the write is the fallback, as in spawn.c.
 * Reaps only its own child, with waitpid(pid). */
static int probe_join(struct cg_state *cg, struct sa_err *e)
{
    static const char probe[] = "probe";
    (void)unlinkat(cg->base_fd, probe, AT_REMOVEDIR);
    if (mkdirat(cg->base_fd, probe, 0755) < 0)
        return err_sys(e, errno, "mkdir %s/%s", cg->base_path, probe);
    int err = 0;
    pid_t pid = -1;
    {
        cleanup_close int dfd = open_file(cg->base_fd, probe, O_PATH | O_DIRECTORY);
        if (dfd >= 0) {
            pid = probe_clone_into(dfd);
            if (pid == 0)
                _exit(0);
            if (pid < 0 && errno == ENOSYS)
                pid = probe_fork_into(dfd);
        }
        if (pid < 0)
            err = errno;
    }
    int st = 0;
    pid_t w = -1;
    while (pid > 0 && (w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    if (pid > 0 && w < 0)
        err = errno;
    else if (pid > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        err = WIFEXITED(st) ? WEXITSTATUS(st) : ECHILD;
    (void)unlinkat(cg->base_fd, probe, AT_REMOVEDIR);
    if (err)
        return err_sys(e, err, "putting a process into %s/%s", cg->base_path, probe);
    return 0;
}

static void inst_name(char name[CG_NAME_MAX])
{
    snprintf(name, CG_NAME_MAX, "agent-%d", (int)getpid());
}

/* Make <own cgroup>/<top>/agent-<pid>. The shared <top> may be removed by an
 * agent that exits just as we start (cg_free removes it when empty): then
 * mkdir in it fails with ENOENT, and we try again. */
static int make_dirs(struct cg_state *cg, int own_fd, const char *own, const char *top,
                     bool *existed, struct sa_err *e)
{
    char inst[CG_NAME_MAX], path[PATH_MAX];
    inst_name(inst);
    if (snprintf(path, sizeof path, "%s/%s/%s", own, top, inst) >= (int)sizeof path)
        return err_set(e, ENAMETOOLONG, NULL, "cgroup path too long: %s", own);
    char *slash = strrchr(path, '/');
    for (int tries = 0;; tries++) {
        bool top_existed;
        *slash = '\0';
        if (make_dir(own_fd, top, path, &cg->top_fd, &top_existed, e) < 0)
            return -1;
        *slash = '/';
        if (make_dir(cg->top_fd, inst, path, &cg->base_fd, existed, e) == 0)
            break;
        close(cg->top_fd);
        cg->top_fd = -1;
        if (e->errnum != ENOENT || tries == 2)
            return -1;
    }
    cg->base_path = xstrdup(path);
    return 0;
}

static int cg_setup(struct cg_state *cg, const char *self_cgroup, const char *mountinfo,
                    const char *top, struct sa_err *e)
{
    char cgpath[PATH_MAX], own[PATH_MAX];
    if (own_cgroup(self_cgroup, cgpath, sizeof cgpath, e) < 0 ||
        own_dir(mountinfo, cgpath, own, sizeof own, e) < 0)
        return -1;
    cleanup_close int own_fd = open_file(AT_FDCWD, own, O_PATH | O_DIRECTORY);
    if (own_fd < 0)
        return err_sys(e, errno, "open %s", own);
    struct statfs sf;
    if (fstatfs(own_fd, &sf) < 0)
        return err_sys(e, errno, "statfs %s", own);
    if (sf.f_type != CGROUP2_SUPER_MAGIC)
        return err_set(e, ENOTSUP, NULL, "%s is not on a cgroup2 file system", own);
    if (strchr(top, '/') || strlen(top) > NAME_MAX)
        return err_set(e, EINVAL, NULL, "bad cgroup directory name %s", top);

    bool existed;
    if (make_dirs(cg, own_fd, own, top, &existed, e) < 0)
        return -1;
    cg->top_name = xstrdup(top);
    enable_memory(cg->top_fd);
    enable_memory(cg->base_fd);
    clean_dead_agents(cg->top_fd);
    if (existed)
        adopt_leftovers(cg);
    if (probe_join(cg, e) == 0)
        return 0;
    char inst[CG_NAME_MAX];
    inst_name(inst);
    (void)rm_tree(cg->top_fd, inst, 0);
    (void)unlinkat(own_fd, top, AT_REMOVEDIR);   /* if empty */
    return -1;
}

static void cg_close(struct cg_state *cg)
{
    if (cg->base_fd >= 0)
        close(cg->base_fd);
    if (cg->top_fd >= 0)
        close(cg->top_fd);
    free(cg->base_path);
    free(cg->top_name);
    free(cg->pending);
    cg->base_fd = cg->top_fd = -1;
    cg->base_path = cg->top_name = NULL;
    cg->pending = NULL;
    cg->npending = cg->pending_cap = 0;
    cg->enabled = false;
}

int cg_init_at(struct cg_state *cg, const char *self_cgroup, const char *mountinfo,
               const char *top, const char **why_not)
{
    memset(cg, 0, sizeof *cg);
    cg->base_fd = cg->top_fd = -1;
    struct sa_err e;
    err_clear(&e);
    if (cg_setup(cg, self_cgroup, mountinfo, top, &e) < 0) {
        cg_close(cg);
        snprintf(cg->why_not, sizeof cg->why_not, "%s", e.msg);
        *why_not = cg->why_not;
        return 0;
    }
    cg->enabled = true;
    *why_not = NULL;
    return 0;
}

int cg_init(struct cg_state *cg, const char **why_not)
{
    return cg_init_at(cg, "/proc/self/cgroup", "/proc/self/mountinfo", CG_TOP_NAME, why_not);
}

void cg_free(struct cg_state *cg)
{
    if (!cg->enabled)
        return;
    /* commands killed just before are still dying: give them a moment */
    for (int waited = 0;; waited += 10) {
        cg_sweep(cg);
        if (cg->npending == 0 || waited >= CG_FREE_WAIT_MS)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    /* our directory and every empty cgroup in it (abandoned ones included) */
    char inst[CG_NAME_MAX];
    inst_name(inst);
    if (rm_tree(cg->top_fd, inst, 0) == 0) {
        /* the shared directory too, unless other agents use it */
        cleanup_close int parent = open_file(cg->top_fd, "..", O_PATH | O_DIRECTORY);
        if (parent >= 0)
            (void)unlinkat(parent, cg->top_name, AT_REMOVEDIR);
    }
    cg_close(cg);
}
