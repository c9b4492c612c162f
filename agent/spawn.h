/* spawn.h — start one command: clone(CLONE_VM|CLONE_VFORK) + exec, with an
 * exec-error pipe.
 *
 * Everything is prepared in the parent (identity resolved, argv/envp built,
 * PATH candidates sized); the child only makes system calls, in this order:
 * reset every signal disposition to default and the signal mask to empty,
 * setsid (own session and process group), join the command's cgroup (while
 * still root; unless clone3's CLONE_INTO_CGROUP already started it there,
 * which saves the migration: x86-64, Linux 5.7+), stdio onto 0/1/2, optional
 * controlling terminal, RLIMIT_NOFILE, oom_score_adj 0 (best effort: the
 * agent's own is -1000), supplementary groups, gid, uid, chdir, mark every
 * other fd close-on-exec, exec (searching PATH for a bare name). On failure it
 * writes {stage, errno} to a close-on-exec pipe and _exits; EOF on the pipe
 * means exec succeeded. CLONE_VFORK suspends the agent until then, so the
 * outcome is known when spawn_start returns.
 */
#ifndef SA_SPAWN_H
#define SA_SPAWN_H

#include <stdbool.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "err.h"
#include "ident.h"

enum spawn_stage { SPAWN_SETUP = 1, SPAWN_USER, SPAWN_CWD, SPAWN_EXEC };
const char *spawn_stage_name(enum spawn_stage s);

struct spawn_req {
    char *const *argv;
    char *const *envp;
    const char *cwd;             /* absolute */
    const char *path;            /* PATH for a bare argv[0] (NULL: default) */
    const struct ident *id;      /* NULL: keep the agent's identity */
    int fd_in, fd_out, fd_err;   /* become 0, 1, 2 */
    bool ctty;                   /* make fd_in the controlling terminal */
    int cgroup_procs_fd;         /* the command's cgroup.procs, or -1 */
    int cgroup_dir_fd;           /* its directory (clone3 CLONE_INTO_CGROUP), or -1 */
    const struct rlimit *nofile; /* RLIMIT_NOFILE for the command, or NULL */
    void *stack;                 /* child stack (the agent keeps one) */
    size_t stack_size;
    const struct spawn_slots *slots;   /* low fds to spawn through (below), or NULL */
};

/* Low fd numbers reserved at start-up (placeholders on /dev/null), so that a
 * spawn need not copy the agent's whole fd table. With thousands of commands
 * the agent holds tens of thousands of fds; a child that got a copy of the
 * table (clone without CLONE_FILES) spent most of an exec copying it and
 * closing every close-on-exec entry in execve (docs/PERFORMANCE.md, item
 * 11). Instead the few fds the child needs are dup3'ed onto the slots, the
 * child shares the agent's table (CLONE_FILES; the agent is suspended by
 * CLONE_VFORK) and its first act is close_range(SPAWN_SLOTS' end, ~0,
 * CLOSE_RANGE_UNSHARE): the kernel gives it a table of only the fds below,
 * and closes nothing of the agent's. The slots go back to /dev/null after. */
#define SPAWN_SLOTS 5            /* stdin, stdout, stderr, the error pipe, cgroup.procs */
struct spawn_slots {
    int null_fd;                 /* /dev/null, to put back on a slot */
    int fd[SPAWN_SLOTS];         /* -1: not reserved (spawn copies the table) */
    int end;                     /* one above the highest slot; 0: none reserved */
};
/* Reserve the slots (call early, while fds are low). Best effort: without
 * them (end 0) spawns copy the table as before. */
void spawn_slots_init(struct spawn_slots *s);
void spawn_slots_free(struct spawn_slots *s);

/* 0 and *pid on success; -1 with e->code the errno name and *stage set. */
int spawn_start(const struct spawn_req *r, pid_t *pid, enum spawn_stage *stage,
                struct sa_err *e);

/* The agent's own RLIMIT_NOFILE, raised at start-up so that thousands of
 * commands (two fds each, docs/agent.md "Many commands") fit; commands get
 * *startup back (spawn_req.nofile). As root (CAP_SYS_RESOURCE) soft and hard
 * go up to fs.nr_open, at most SPAWN_NOFILE_MAX: well above what the max-*
 * settings can use (65536 commands, connections, tunnels), and a ceiling for
 * the file helpers, which inherit it. Otherwise (or when that fails) the soft
 * limit goes up to the hard one. *now is the limit in force afterwards (the
 * start-up one when nothing could be raised: -1 then). */
#define SPAWN_NOFILE_MAX (1u << 20)
int spawn_nofile_raise(struct rlimit *startup, struct rlimit *now, struct sa_err *e);

/* Child-side steps, shared with the file helpers (fop.c): only system
 * calls, safe in a CLONE_VM child. Every signal disposition to default and an
 * empty mask; oom_score_adj back to 0 (best effort); supplementary groups, gid
 * and uid of id by raw syscalls (-1 with errno). */
void spawn_reset_signals(void);
void spawn_oom_default(void);
int spawn_set_identity(const struct ident *id);

#endif
