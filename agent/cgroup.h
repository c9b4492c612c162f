/* cgroup.h — one cgroup v2 per command, so that kill and timeout reach every
 * process of a command, including descendants that left its process group.
 *
 * Layout: <cgroup2 mount><agent's cgroup>/sandbox-agent/agent-<pid>/cmd-<id>.
 * "sandbox-agent" is shared by every agent that runs in the same cgroup (the
 * integration tests run several at once); "agent-<pid>" is this agent's own
 * directory (base_fd, base_path), so command ids never collide between
 * agents. The agent's cgroup comes from the "0::" line of /proc/self/cgroup,
 * the mount from the first "cgroup2" entry of /proc/self/mountinfo whose root
 * contains it (pure v2 at /sys/fs/cgroup, or the hybrid /sys/fs/cgroup/unified).
 * No controller is needed: cgroup.procs, cgroup.events, cgroup.kill (5.14+)
 * and cpu.stat are core files. Where the parent offers the memory controller
 * it is enabled on our two directories, best effort, so memory.current exists.
 *
 * cg_init() prepares the directories and checks, with a short-lived child,
 * that a process can really be moved into a cgroup there. When anything fails
 * (no cgroup2, read-only mount, not root and nothing delegated, EBUSY, ...)
 * cgroups are disabled and the agent works without them. What escapes then:
 * kill and timeout reach the command's process group only, so a descendant
 * that calls setsid(), or a daemon that double-forks, is not reached and keeps
 * running; the agent, being a subreaper (or PID 1), still reaps it when it
 * exits, so it never stays a zombie.
 *
 * Joining: the spawned child, while still root and before dropping privileges,
 * does write(procs_fd, "0", 1) — "0" means "the writing process". Everything
 * it forks afterwards is born in the command's cgroup.
 *
 * Ahead of time: cg_prepare() makes the next command's directory while the
 * agent has nothing else to do (the previous command is still starting, or
 * nothing runs), so that the mkdir (about 50 us on cgroupfs) is not on the
 * path from exec request to exec; cg_create() then only opens it. No fd is
 * held for it; cg_free()'s removal of agent-<pid> takes it away.
 *
 * No fd per command: the agent would otherwise hold one for each running
 * command (thousands; docs/agent.md "Many commands"). cg_create's dirfd
 * serves the spawn (clone3) and is closed; later, signals, the populated
 * check and accounting reopen the directory by name under base_fd
 * (cg_open). That is safe where acting by name after creating usually is
 * not (docs/agent.md "Create-then-act sites"): agent-<pid> is the agent's
 * own directory in a tree only root (or, with delegation, the agent's own
 * user) may change — no user of the VM can rename, replace or plant a
 * cmd-<id> there — and ids are never reused, so a name means one command
 * for the agent's life; once its cgroup is removed the name is gone
 * (ENOENT), never someone else's.
 *
 * Removal: cg_release() closes the command's dir fd (if any) and rmdirs its cgroup
 * (and any empty sub-cgroups a root command created, to a bounded depth).
 * If processes remain (daemons the command left behind on purpose), the id
 * goes on a bounded pending list that cg_sweep() retries. Nothing here blocks
 * or loops without bound; only cg_free() waits, at most CG_FREE_WAIT_MS, for
 * just-killed commands to finish dying. At start-up, directories left by dead
 * agents ("agent-<pid>" whose pid no longer exists) are removed where empty.
 *
 * Signals: SIGKILL goes through cgroup.kill, which the kernel applies to the
 * whole subtree atomically with respect to fork. Other signals are sent pid by
 * pid from cgroup.procs (this cgroup and its sub-cgroups), in passes that
 * repeat while a pass finds pids not yet signalled, up to CG_SIGNAL_PASSES;
 * each pid is signalled at most once per call (a set of CG_SIGNAL_SEEN_MAX
 * pids; beyond that, only one pass is made).
 *
 * Errors follow err.h; only cg_create, cg_kill and cg_signal report them.
 * Every fd is O_CLOEXEC. The state is all in struct cg_state (no globals).
 */
#ifndef SA_CGROUP_H
#define SA_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define CG_TOP_NAME "sandbox-agent"
#define CG_PENDING_MAX 4096      /* cgroups awaiting removal; beyond, they are left */
#define CG_SIGNAL_PASSES 4
#define CG_SIGNAL_SEEN_MAX 4096
#define CG_TREE_DEPTH 8          /* sub-cgroups visited below a command's cgroup */
#define CG_FREE_WAIT_MS 200

struct cg_state {                /* lives in struct agent; all-zero means "disabled" */
    bool enabled;
    int base_fd;                 /* O_PATH fd of agent-<pid>, -1 when disabled */
    char *base_path;             /* its path, for logs; NULL when disabled */
    int top_fd;                  /* O_PATH fd of sandbox-agent, -1 when disabled */
    char *top_name;              /* "sandbox-agent" (cg_init_at's `top`) */
    uint64_t *pending;           /* ids whose cmd-<id> could not be removed yet */
    size_t npending, pending_cap;
    unsigned long abandoned;     /* cgroups left in place because the list was full */
    uint64_t spare_id;           /* cmd-<spare_id> made ahead by cg_prepare (0: none) */
    char why_not[SA_ERR_MSG_MAX];
};

/* Detect and prepare. Returns 0 in all non-fatal cases (there are no fatal
 * ones today); cg->enabled says whether cgroups are used, and *why_not (which
 * points into cg) says why not when they are disabled. */
int cg_init(struct cg_state *cg, const char **why_not);
/* The same, reading the given files instead of /proc/self/cgroup and
 * /proc/self/mountinfo, and naming the shared directory `top` (tests/test_cgroup.c). */
int cg_init_at(struct cg_state *cg, const char *self_cgroup, const char *mountinfo,
               const char *top, const char **why_not);

/* Create the cgroup of command id: *procs_fd is its cgroup.procs (O_WRONLY,
 * for the child's write of "0"), *dirfd an O_PATH|O_DIRECTORY fd of its
 * directory (for clone3; close both once the command is spawned). Both are
 * -1 when cgroups are disabled (and 0 is returned). */
int cg_create(struct cg_state *cg, uint64_t id, int *procs_fd, int *dirfd, struct sa_err *e);
/* Command id's cgroup directory, opened by name under base_fd (O_PATH, see
 * "No fd per command" above): the fd, or -1 with errno (ENOENT once it was
 * removed, or when cgroups are disabled). The caller closes it. */
int cg_open(const struct cg_state *cg, uint64_t id);
/* Make command id's directory now, for a later cg_create(id). Best effort:
 * on failure cg_create makes it itself. */
void cg_prepare(struct cg_state *cg, uint64_t id);
/* SIGKILL everything in the cgroup and its sub-cgroups via cgroup.kill
 * (fallback before 5.14: cg_signal(SIGKILL)). */
int cg_kill(int dirfd, struct sa_err *e);
/* Send sig to every process of the cgroup (see "Signals" above). Returns the
 * number of processes signalled (0: none left), or -1 when cgroup.procs
 * cannot be read or every kill(2) failed with an error other than ESRCH. */
int cg_signal(int dirfd, int sig, struct sa_err *e);
/* True while any process is in the cgroup or below ("populated 1" in
 * cgroup.events); false too when that cannot be read. */
bool cg_populated(int dirfd);
/* The command is finished: close dirfd (if >= 0) and remove its cgroup, or
 * queue it for cg_sweep() when processes remain. Never blocks. */
void cg_release(struct cg_state *cg, uint64_t id, int dirfd);
/* Retry pending removals (from a periodic timer). One rmdir attempt each. */
void cg_sweep(struct cg_state *cg);
/* Accounting: CPU time used by the cgroup's processes, living and dead
 * (cpu.stat usage_usec). 0, or -1 when unavailable. */
int cg_cpu_usec(int dirfd, uint64_t *usec);
/* The same for command id's cgroup, by name under base_fd (one open, for
 * `stats` of thousands of commands). */
int cg_cpu_usec_of(const struct cg_state *cg, uint64_t id, uint64_t *usec);
/* At agent exit: remove what can be removed; the state is disabled after.
 * Safe on an all-zero state and after a failed or disabled cg_init. */
void cg_free(struct cg_state *cg);

#endif
