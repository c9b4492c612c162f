#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#define SPAWN_CLOSE_RANGE_UNSHARE (1U << 1)

#define SPAWN_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const char *spawn_stage_name(enum spawn_stage s)
{
    switch (s) {
    case SPAWN_USER: return "user";
    case SPAWN_CWD: return "cwd";
    case SPAWN_EXEC: return "exec";
    default: return "setup";
    }
}

struct spawn_ctx {
    const struct spawn_req *r;   /* its fds are slots when unshare_from > 0 */
    int errfd;
    bool in_cgroup;              /* born in its cgroup (clone3): no cgroup.procs write */
    unsigned unshare_from;       /* CLONE_FILES: keep only fds below this (0: own copy) */
    char *pathbuf;               /* room for "<longest PATH dir>/<argv0>" */
};

struct spawn_fail {
    int stage;
    int err;
};

/* Child side. Shares the agent's memory (CLONE_VM) while the agent is
 * suspended: only system calls, no allocation, no libc state. uid/gid changes
 * use raw syscalls so that glibc's multi-thread setxid machinery stays out. */
static __attribute__((noreturn)) void child_fail(const struct spawn_ctx *c, int stage, int err)
{
    struct spawn_fail f = {stage, err};
    ssize_t w = write(c->errfd, &f, sizeof f);
    (void)w;
    _exit(127);
}

void spawn_reset_signals(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &dfl, NULL);   /* fails harmlessly for glibc-reserved ones */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static int child_stdio(const struct spawn_req *r)
{
    int fds[3] = {r->fd_in, r->fd_out, r->fd_err};
    for (int i = 0; i < 3; i++) {
        if (fds[i] == i) {
            int fl = fcntl(i, F_GETFD);
            if (fl < 0 || fcntl(i, F_SETFD, fl & ~FD_CLOEXEC) < 0)
                return -1;
        } else if (dup2(fds[i], i) < 0) {
            return -1;
        }
    }
    if (r->ctty && ioctl(0, TIOCSCTTY, 0) < 0)
        return -1;
    return 0;
}

/* The agent shields itself from the OOM killer (-1000); a command gets the
 * default back, while still root. Best effort: failure changes nothing. */
void spawn_oom_default(void)
{
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t w = write(fd, "0", 1);
    (void)w;
    close(fd);
}

int spawn_set_identity(const struct ident *id)
{
    if (syscall(SYS_setgroups, (size_t)id->ngroups, id->groups) < 0)
        return -1;
    if (syscall(SYS_setresgid, id->gid, id->gid, id->gid) < 0)
        return -1;
    if (syscall(SYS_setresuid, id->uid, id->uid, id->uid) < 0)
        return -1;
    return 0;
}

/* execvp without the allocation and without the /bin/sh fallback for
 * ENOEXEC: the error is reported instead. */
static int child_exec(const struct spawn_ctx *c)
{
    const struct spawn_req *r = c->r;
    const char *file = r->argv[0];
    if (strchr(file, '/')) {
        execve(file, r->argv, r->envp);
        return errno;
    }
    size_t flen = strlen(file);
    const char *p = r->path ? r->path : SPAWN_DEFAULT_PATH;
    bool eacces = false;
    for (;;) {
        const char *colon = strchrnul(p, ':');
        size_t dlen = (size_t)(colon - p);
        char *b = c->pathbuf;
        if (dlen == 0) {
            b[0] = '.';
            dlen = 1;
        } else {
            memcpy(b, p, dlen);
        }
        b[dlen] = '/';
        memcpy(b + dlen + 1, file, flen + 1);
        execve(b, r->argv, r->envp);
        switch (errno) {
        case EACCES: eacces = true; break;
        case ENOENT: case ENOTDIR: case ELOOP: case ENAMETOOLONG: case ESTALE: case ENODEV:
        case ETIMEDOUT: break;
        default: return errno;
        }
        if (*colon == '\0')
            break;
        p = colon + 1;
    }
    return eacces ? EACCES : ENOENT;
}

static int spawn_child(void *arg)
{
    const struct spawn_ctx *c = arg;
    const struct spawn_req *r = c->r;
    /* first: until then every fd change would be the agent's (CLONE_FILES);
     * a kernel before 5.9 has no CLOSE_RANGE_UNSHARE: copy the whole table */
    if (c->unshare_from &&
        syscall(SYS_close_range, c->unshare_from, ~0u, SPAWN_CLOSE_RANGE_UNSHARE) < 0 &&
        unshare(CLONE_FILES) < 0)
        child_fail(c, SPAWN_SETUP, errno);   /* errfd is still the agent's slot: it arrives */
    spawn_reset_signals();
    if (setsid() < 0)
        child_fail(c, SPAWN_SETUP, errno);
    if (r->cgroup_procs_fd >= 0 && !c->in_cgroup && write(r->cgroup_procs_fd, "0", 1) != 1)
        child_fail(c, SPAWN_SETUP, errno);
    if (child_stdio(r) < 0)
        child_fail(c, SPAWN_SETUP, errno);
    if (r->nofile && setrlimit(RLIMIT_NOFILE, r->nofile) < 0)
        child_fail(c, SPAWN_SETUP, errno);
    spawn_oom_default();
    umask(022);                  /* a sane umask, whatever the agent was started with */
    if (r->id && spawn_set_identity(r->id) < 0)
        child_fail(c, SPAWN_USER, errno);
    if (chdir(r->cwd) < 0)
        child_fail(c, SPAWN_CWD, errno);
    /* every fd above 2 is already close-on-exec by construction; this makes
     * sure of it for anything inherited from whoever started the agent */
    if (c->errfd > 3)
        syscall(SYS_close_range, 3u, (unsigned)c->errfd - 1, CLOSE_RANGE_CLOEXEC);
    syscall(SYS_close_range, (unsigned)c->errfd + 1, ~0u, CLOSE_RANGE_CLOEXEC);
    child_fail(c, SPAWN_EXEC, child_exec(c));
}

/* clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP): the child is born in
 * the command's cgroup, which saves the migration (a write to cgroup.procs,
 * ~70 us here, on the exec round trip). glibc has no clone3 wrapper, and a
 * CLONE_VM child cannot return from a C function on its new stack, so the
 * child's side is a few instructions of assembly: call fn(arg) on the stack
 * the kernel switched to, then exit with its result. x86-64 only; elsewhere,
 * on kernels without it (ENOSYS, E2BIG, EINVAL: remembered) or on any error,
 * -1 and the caller uses clone + the cgroup.procs write. */
#if defined(__x86_64__) && defined(SYS_clone3)
struct spawn_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};
#define SPAWN_CLONE_INTO_CGROUP 0x200000000ULL

static long spawn_clone3(struct spawn_clone_args *args, int (*fn)(void *), void *arg)
{
    long ret;
    register void *r12 __asm__("r12") = (void *)fn;   /* callee-saved: kept in the child */
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xorl %%ebp, %%ebp\n\t"          /* the child, on the new stack */
                     "movq %%r13, %%rdi\n\t"
                     "callq *%%r12\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl $60, %%eax\n\t"            /* SYS_exit */
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory", "cc");
    return ret;
}

static long spawn_clone_into_cgroup(const struct spawn_req *r, int files, int (*fn)(void *),
                                    void *arg)
{
    static bool unsupported;
    if (unsupported)
        return -1;
    struct spawn_clone_args args = {
        .flags = CLONE_VM | CLONE_VFORK | SPAWN_CLONE_INTO_CGROUP | (uint64_t)files,
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)r->stack,
        .stack_size = r->stack_size,
        .cgroup = (uint64_t)r->cgroup_dir_fd,
    };
    long p = spawn_clone3(&args, fn, arg);
    if (p < 0 && (p == -ENOSYS || p == -E2BIG || p == -EINVAL))
        unsupported = true;
    return p < 0 ? -1 : p;
}
#else
static long spawn_clone_into_cgroup(const struct spawn_req *r, int files, int (*fn)(void *),
                                    void *arg)
{
    (void)r, (void)files, (void)fn, (void)arg;
    return -1;
}
#endif

void spawn_slots_init(struct spawn_slots *s)
{
    s->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    s->end = 0;
    for (int i = 0; i < SPAWN_SLOTS; i++) {
        s->fd[i] = s->null_fd < 0 ? -1 : fcntl(s->null_fd, F_DUPFD_CLOEXEC, 0);
        if (s->fd[i] >= s->end)
            s->end = s->fd[i] + 1;
    }
    for (int i = 0; i < SPAWN_SLOTS; i++)
        if (s->fd[i] < 0) {              /* all or nothing */
            s->end = 1;
            spawn_slots_free(s);
            return;
        }
}

void spawn_slots_free(struct spawn_slots *s)
{
    if (s->end == 0)             /* never reserved (an all-zero struct agent included) */
        return;
    for (int i = 0; i < SPAWN_SLOTS; i++) {
        if (s->fd[i] >= 0)
            close(s->fd[i]);
        s->fd[i] = -1;
    }
    if (s->null_fd >= 0)
        close(s->null_fd);
    s->null_fd = -1;
    s->end = 0;
}

/* The fds the child needs, onto the slots: *out is r with its fds renamed
 * (fd_out == fd_err, as a pty's, share a slot), *errfd the error pipe's slot.
 * -1 (nothing moved) when a dup3 fails: the caller spawns without. */
static int spawn_slots_fill(const struct spawn_slots *s, const struct spawn_req *r, int errfd,
                            struct spawn_req *out, int *slot_errfd)
{
    int from[SPAWN_SLOTS] = {r->fd_in, r->fd_out, r->fd_err, errfd, r->cgroup_procs_fd};
    int *to[SPAWN_SLOTS] = {&out->fd_in, &out->fd_out, &out->fd_err, slot_errfd,
                            &out->cgroup_procs_fd};
    *out = *r;
    *slot_errfd = errfd;
    for (int i = 0; i < SPAWN_SLOTS; i++) {
        *to[i] = from[i];
        if (from[i] < 0)
            continue;
        for (int j = 0; j < i && *to[i] == from[i]; j++)
            if (from[j] == from[i])
                *to[i] = s->fd[j];
        if (*to[i] != from[i])
            continue;
        if (dup3(from[i], s->fd[i], O_CLOEXEC) < 0) {
            for (int k = 0; k < i; k++)
                (void)dup3(s->null_fd, s->fd[k], O_CLOEXEC);
            return -1;
        }
        *to[i] = s->fd[i];
    }
    return 0;
}

/* Every slot back on /dev/null: the agent must not keep the child's ends. */
static void spawn_slots_reset(const struct spawn_slots *s)
{
    for (int i = 0; i < SPAWN_SLOTS; i++)
        (void)dup3(s->null_fd, s->fd[i], O_CLOEXEC);
}

static size_t longest_path_dir(const char *p)
{
    size_t best = 1, cur = 0;
    for (; *p; p++) {
        if (*p == ':') {
            cur = 0;
        } else if (++cur > best) {
            best = cur;
        }
    }
    return best;
}

/* fs.nr_open, the most RLIMIT_NOFILE may be (0 when unreadable). */
static rlim_t spawn_nr_open(void)
{
    char buf[32];
    int fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned long long v = strtoull(buf, NULL, 10);
    return (rlim_t)v;
}

int spawn_nofile_raise(struct rlimit *startup, struct rlimit *now, struct sa_err *e)
{
    if (getrlimit(RLIMIT_NOFILE, startup) < 0)
        return err_sys(e, errno, "getrlimit RLIMIT_NOFILE");
    *now = *startup;
    rlim_t ceiling = spawn_nr_open();
    if (ceiling > SPAWN_NOFILE_MAX)
        ceiling = SPAWN_NOFILE_MAX;
    struct rlimit want = {ceiling, ceiling};
    if (ceiling > startup->rlim_max && setrlimit(RLIMIT_NOFILE, &want) == 0) {
        *now = want;
        return 0;
    }
    /* not root (EPERM), or the hard limit is already higher */
    want.rlim_cur = want.rlim_max = startup->rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) < 0)
        return err_sys(e, errno, "raising RLIMIT_NOFILE to %llu",
                       (unsigned long long)startup->rlim_max);
    *now = want;
    return 0;
}

int spawn_start(const struct spawn_req *r, pid_t *pid, enum spawn_stage *stage,
                struct sa_err *e)
{
    int ep[2];
    *stage = SPAWN_SETUP;
    if (pipe2(ep, O_CLOEXEC) < 0)
        return err_sys(e, errno, "pipe");
    const char *path = r->path ? r->path : SPAWN_DEFAULT_PATH;
    cleanup_free char *pathbuf = xmalloc(longest_path_dir(path) + strlen(r->argv[0]) + 2);
    struct spawn_ctx c = {.r = r, .errfd = ep[1], .pathbuf = pathbuf};
    struct spawn_req slotted;
    bool slots = r->slots && r->slots->end > 0 &&
                 spawn_slots_fill(r->slots, r, ep[1], &slotted, &c.errfd) == 0;
    if (slots) {
        c.r = &slotted;
        c.unshare_from = (unsigned)r->slots->end;
    }
    int files = slots ? CLONE_FILES : 0;

    /* No signal handler may run in the child while it shares our memory. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t p = -1;
    int clone_errno = 0;
    if (r->cgroup_dir_fd >= 0) {
        c.in_cgroup = true;
        p = (pid_t)spawn_clone_into_cgroup(r, files, spawn_child, &c);
        if (p < 0)
            c.in_cgroup = false;
    }
    if (p < 0) {
        p = clone(spawn_child, (char *)r->stack + r->stack_size,
                  CLONE_VM | CLONE_VFORK | files | SIGCHLD, &c);
        clone_errno = errno;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (slots)
        spawn_slots_reset(r->slots);
    close(ep[1]);
    if (p < 0) {
        close(ep[0]);
        return err_sys(e, clone_errno, "clone");
    }

    struct spawn_fail f;
    ssize_t n;
    do
        n = read(ep[0], &f, sizeof f);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == 0) {
        *pid = p;
        return 0;
    }
    /* The child failed and _exited; the reaper (libev) collects it. */
    if (n != (ssize_t)sizeof f)
        return err_set(e, EPROTO, NULL, "spawn: short status from child");
    *stage = (enum spawn_stage)f.stage;
    *pid = p;
    errno = f.err;
    switch (f.stage) {
    case SPAWN_USER: return err_sys(e, f.err, "switching to user %s", r->id->name);
    case SPAWN_CWD: return err_sys(e, f.err, "chdir %s", r->cwd);
    case SPAWN_EXEC: return err_sys(e, f.err, "exec %s", r->argv[0]);
    default: return err_sys(e, f.err, "setting up the child");
    }
}
