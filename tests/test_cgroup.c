/* Unit tests of agent/cgroup.c.
 *
 * Through cg_init_at with fake /proc/self/cgroup and /proc/self/mountinfo
 * files in a temporary directory: which "0::" line names our cgroup, which
 * cgroup2 mount holds it (optional fields, the mount's root as a path prefix,
 * octal escapes, overlong lines), and the refusals (deleted cgroup, a path
 * outside our view, no cgroup2). A fake tree is not a cgroup2 file system,
 * so cg_init_at ends with "<dir> is not on a cgroup2 file system": the
 * directory it names is what the parsing found.
 *
 * Against a real sub-cgroup (root and a writable cgroup2 mount; skipped with
 * the reason otherwise), under a shared directory of our own
 * ("sa-test-cg-<pid>", not the agents' "sandbox-agent"): the layout
 * <top>/agent-<pid>/cmd-<id>, joining, cg_signal, cg_kill reaching a
 * descendant that left its process group, cg_prepare's spare directory, a
 * busy cgroup queued and swept once empty, and start-up's removal of dead
 * agents' directories and adoption of our own leftovers.
 */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "check.h"
#include "rmtree.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static char tmp[64];                 /* the fake tree's temporary directory */

static void write_text(const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "we");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

/* mkdir -p tmp/rel */
static void make_fake_dir(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    for (char *p = path + strlen(tmp) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    mkdir(path, 0755);
}

/* cg_init_at on the two fake files: it must leave cgroups disabled; its
 * reason. */
static const char *init_fake(struct cg_state *cg, const char *self_cgroup, const char *mountinfo)
{
    write_text("cgroup", self_cgroup);
    write_text("mountinfo", mountinfo);
    char sc[PATH_MAX], mi[PATH_MAX];
    snprintf(sc, sizeof sc, "%s/cgroup", tmp);
    snprintf(mi, sizeof mi, "%s/mountinfo", tmp);
    const char *why = NULL;
    CHECK(cg_init_at(cg, sc, mi, "sa-test", &why) == 0);
    CHECK(!cg->enabled && cg->base_fd == -1 && cg->top_fd == -1 && !cg->base_path);
    CHECK(why != NULL);
    return why ? why : "";
}

/* "<tmp>/<rel> is not on a cgroup2 file system": the parse led to tmp/rel. */
static bool names_dir(const char *why, const char *rel)
{
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/%s is not on a cgroup2 file system", tmp, rel);
    if (strcmp(why, want) == 0)
        return true;
    printf("    got  \"%s\"\n    want \"%s\"\n", why, want);
    return false;
}

static void expect_why(const char *why, const char *part)
{
    if (!strstr(why, part))
        printf("    \"%s\" does not say \"%s\"\n", why, part);
    CHECK(strstr(why, part) != NULL);
}

/* --- the fake tree: parsing ------------------------------------------------------- */

static void our_cgroup_is_the_0_line_below_the_cgroup2_mount(void)
{
    struct cg_state cg;
    char mi[PATH_MAX + 128];
    snprintf(mi, sizeof mi, "41 31 0:38 / %s/mnt rw,relatime shared:1 - cgroup2 cgroup2 rw\n",
             tmp);
    make_fake_dir("mnt/a/b");
    /* v1 lines before it name other paths; only "0::" counts */
    CHECK(names_dir(init_fake(&cg, "12:memory:/x\n1:name=systemd:/y\n0::/a/b\n", mi),
                    "mnt/a/b"));
    /* the root cgroup is the mount itself */
    CHECK(names_dir(init_fake(&cg, "0::/\n", mi), "mnt"));
}

static void a_deleted_or_unreachable_cgroup_or_none_disables_cgroups(void)
{
    struct cg_state cg;
    char mi[PATH_MAX + 128];
    snprintf(mi, sizeof mi, "41 31 0:38 / %s/mnt rw - cgroup2 cgroup2 rw\n", tmp);
    expect_why(init_fake(&cg, "1:name=systemd:/\n", mi), "no 0:: line");
    expect_why(init_fake(&cg, "0::/a/b (deleted)\n", mi), "our cgroup was removed");
    expect_why(init_fake(&cg, "0::/../c\n", mi), "outside our view");
    expect_why(init_fake(&cg, "0::/a/..\n", mi), "outside our view");
    expect_why(init_fake(&cg, "0::a/b\n", mi), "outside our view");
    const char *why;
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/no-such-file", tmp);
    CHECK(cg_init_at(&cg, missing, missing, "sa-test", &why) == 0 && !cg.enabled);
    expect_why(why, "open ");
    expect_why(why, "no-such-file");
}

static void the_mount_chosen_is_the_cgroup2_one_whose_root_holds_our_cgroup(void)
{
    struct cg_state cg;
    make_fake_dir("with space/a");
    make_fake_dir("prefix/b/a");
    char mi[4 * PATH_MAX + 512];
    snprintf(mi, sizeof mi,
             /* not cgroup2 (a v1 hierarchy and a tmpfs) */
             "31 23 0:28 / %s/tmpfs rw,relatime - tmpfs tmpfs rw,mode=755\n"
             "40 31 0:37 / %s/v1 rw,relatime shared:9 - cgroup cgroup rw,name=systemd\n"
             /* cgroup2, but its root "/su" is a string prefix of /sub/a, not a parent */
             "41 31 0:38 /su %s/prefix rw shared:1 - cgroup2 cgroup2 rw\n"
             /* cgroup2 rooted elsewhere */
             "42 31 0:38 /other %s/other rw - cgroup2 cgroup2 rw\n"
             /* this one: root /sub, optional fields, "\040" for a space */
             "43 31 0:38 /sub %s/with\\040space rw shared:5 master:2 - cgroup2 cgroup2 rw\n",
             tmp, tmp, tmp, tmp, tmp);
    CHECK(names_dir(init_fake(&cg, "0::/sub/a\n", mi), "with space/a"));
    CHECK(names_dir(init_fake(&cg, "0::/sub\n", mi), "with space"));
    /* no cgroup2 mount holds /elsewhere */
    expect_why(init_fake(&cg, "0::/elsewhere\n", mi), "no cgroup2 mount holding our cgroup /elsewhere");
}

static void an_overlong_mountinfo_line_is_skipped_whole(void)
{
    struct cg_state cg;
    make_fake_dir("good/a");
    /* a matching cgroup2 line longer than the reader's 8 KiB buffer, then the
     * good one: the first is skipped whole, its tail is not read as a line */
    size_t cap = 9000 + 4 * PATH_MAX;
    char *mi = malloc(cap);
    int n = snprintf(mi, cap, "41 31 0:38 / %s/", tmp);
    memset(mi + n, 'x', 9000);
    n += 9000;
    snprintf(mi + n, cap - (size_t)n,
             " rw - cgroup2 cgroup2 rw\n43 31 0:38 / %s/good rw - cgroup2 cgroup2 rw\n", tmp);
    CHECK(names_dir(init_fake(&cg, "0::/a\n", mi), "good/a"));
    free(mi);
}

/* --- a real sub-cgroup ---------------------------------------------------------------- */

static char real_skip[256];          /* why the real tests cannot run here; "" when they can */
static char top[64];                 /* our shared directory: sa-test-cg-<pid> */

/* Root, and the directory of our cgroup (the "0::" line) on a cgroup2 mount
 * at /sys/fs/cgroup or /sys/fs/cgroup/unified takes a mkdir. Found here
 * independently of cgroup.c, so that a cgroup.c that wrongly disables
 * itself fails the tests rather than skipping them. */
static void detect_real(void)
{
    snprintf(top, sizeof top, "sa-test-cg-%d", (int)getpid());
    if (geteuid() != 0) {
        snprintf(real_skip, sizeof real_skip, "not root");
        return;
    }
    char line[PATH_MAX], own[PATH_MAX] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(own, sizeof own, "%s", line + 3);
        }
    if (f)
        fclose(f);
    if (!own[0]) {
        snprintf(real_skip, sizeof real_skip, "no cgroup v2 line in /proc/self/cgroup");
        return;
    }
    static const char *const mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    for (size_t i = 0; i < 2; i++) {
        char dir[2 * PATH_MAX], probe[2 * PATH_MAX + 64];
        struct statfs sf;
        snprintf(dir, sizeof dir, "%s%s", mounts[i], strcmp(own, "/") == 0 ? "" : own);
        if (statfs(dir, &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC)
            continue;
        snprintf(probe, sizeof probe, "%s/sa-test-probe-%d", dir, (int)getpid());
        if (mkdir(probe, 0755) == 0) {
            rmdir(probe);
            return;
        }
        snprintf(real_skip, sizeof real_skip, "cgroup2 at %.120s does not take a mkdir: %s", dir,
                 strerror(errno));
        return;
    }
    snprintf(real_skip, sizeof real_skip,
             "no cgroup2 file system at /sys/fs/cgroup or /sys/fs/cgroup/unified holding %.120s",
             own);
}

static bool real_init(struct cg_state *cg)
{
    const char *why = NULL;
    CHECK(cg_init_at(cg, "/proc/self/cgroup", "/proc/self/mountinfo", top, &why) == 0);
    CHECK(cg->enabled);
    if (!cg->enabled)
        printf("    cgroups disabled: %s\n", why ? why : "(no reason)");
    return cg->enabled;
}

/* The directories around cg->base_path (".../<top>/agent-<pid>"). */
static void paths_of(const struct cg_state *cg, char *top_path, char *own_path)
{
    snprintf(top_path, PATH_MAX, "%s", cg->base_path);
    *strrchr(top_path, '/') = '\0';
    snprintf(own_path, PATH_MAX, "%s", top_path);
    *strrchr(own_path, '/') = '\0';
}

static bool exists_at(const char *dir, const char *name)
{
    char path[3 * PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Remove our whole <top> whatever a failed test left (processes aside). */
static void real_cleanup(const char *own_path)
{
    int fd = open(own_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        rm_rf_at(fd, top);
        close(fd);
    }
}

/* A child that joins the cgroup through procs_fd as the agent's spawned
 * child does (write "0"), then waits to be killed. With grandchild, it first
 * forks one that calls setsid() (leaves the process group) and waits too;
 * *gc gets its pid. Returns once both are in place. */
static pid_t joined_child(int procs_fd, bool grandchild, pid_t *gc)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (write(procs_fd, "0", 1) != 1)
            _exit(3);
        pid_t g = 0, f = grandchild ? fork() : 1;
        if (f < 0)
            _exit(5);                       /* the parent reads EOF */
        if (f == 0) {
            setsid();
            g = getpid();                   /* reported once out of the group */
            if (write(p[1], &g, sizeof g) != sizeof g)
                _exit(4);
            for (;;)
                pause();
        }
        if (!grandchild && write(p[1], &g, sizeof g) != sizeof g)
            _exit(4);
        for (;;)
            pause();
    }
    close(p[1]);
    pid_t g = -1;
    if (pid < 0 || read(p[0], &g, sizeof g) != sizeof g)
        g = -1;
    close(p[0]);
    if (gc)
        *gc = g;
    return pid;
}

/* The start of each real test: skipped (with the reason) where it cannot
 * run, else a real cg_init_at and the paths around our directory. */
static bool real_begin(struct cg_state *cg, char *top_path, char *own_path)
{
    if (real_skip[0]) {
        CHECK_SKIP(real_skip);
        return false;
    }
    if (!real_init(cg))
        return false;
    paths_of(cg, top_path, own_path);
    return true;
}

static void real_end(struct cg_state *cg, const char *own_path)
{
    cg_free(cg);
    real_cleanup(own_path);
}

/* Command id is done: its fds handed back as the agent does, and its
 * (empty) cgroup directory is gone. */
static bool released(struct cg_state *cg, uint64_t id, int procs_fd, int dirfd)
{
    char name[32];
    snprintf(name, sizeof name, "cmd-%" PRIu64, id);
    close(procs_fd);
    cg_release(cg, id, dirfd);
    return !exists_at(cg->base_path, name) && cg->npending == 0;
}

static void sleep_ms(long ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000}, NULL);
}

/* Wait (bounded: 5 s) for the cgroup to empty. */
static bool wait_unpopulated(int dirfd)
{
    for (int i = 0; i < 500 && cg_populated(dirfd); i++)
        sleep_ms(10);
    return !cg_populated(dirfd);
}

/* pid's cgroup (its "0::" line) ends with want. */
static bool pid_cgroup_ends_with(pid_t pid, const char *want)
{
    char path[64], line[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(path, "re");
    bool ok = false;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            size_t n = strlen(line), k = strlen(want);
            ok = n >= k && strcmp(line + n - k, want) == 0;
            if (!ok)
                printf("    pid %d is in %s, not ...%s\n", (int)pid, line + 3, want);
        }
    if (f)
        fclose(f);
    return ok;
}

static void init_makes_top_and_agent_directory_and_free_removes_them(void)
{
    struct cg_state cg;
    char want[128], top_path[PATH_MAX], own_path[PATH_MAX];
    if (!real_begin(&cg, top_path, own_path))
        return;
    snprintf(want, sizeof want, "/%s/agent-%d", top, (int)getpid());
    size_t n = strlen(cg.base_path), k = strlen(want);
    CHECK(n > k && strcmp(cg.base_path + n - k, want) == 0);
    CHECK(strcmp(cg.top_name, top) == 0);
    CHECK(exists_at(top_path, want + strlen(top) + 2));
    CHECK(!exists_at(cg.base_path, "probe"));      /* the join probe is gone */
    CHECK(cg.npending == 0);
    cg_free(&cg);
    CHECK(!cg.enabled && cg.base_fd == -1);
    CHECK(!exists_at(own_path, top));              /* empty: removed with ours */
    real_cleanup(own_path);
}

static void a_command_cgroup_is_cmd_id_and_holds_what_joins_it(void)
{
    struct cg_state cg;
    char top_path[PATH_MAX], own_path[PATH_MAX], want[128];
    if (!real_begin(&cg, top_path, own_path))
        return;
    int procs_fd, dirfd;
    struct sa_err e;
    CHECK(cg_create(&cg, 5, &procs_fd, &dirfd, &e) == 0 && procs_fd >= 0 && dirfd >= 0);
    CHECK(exists_at(cg.base_path, "cmd-5"));
    CHECK(!cg_populated(dirfd));
    pid_t pid = joined_child(procs_fd, false, NULL);
    CHECK(pid > 0);
    snprintf(want, sizeof want, "/%s/agent-%d/cmd-5", top, (int)getpid());
    CHECK(pid_cgroup_ends_with(pid, want));
    CHECK(cg_populated(dirfd));
    uint64_t usec = UINT64_MAX;
    CHECK(cg_cpu_usec(dirfd, &usec) == 0 && usec != UINT64_MAX);
    CHECK(cg_signal(dirfd, SIGTERM, &e) == 1);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    CHECK(wait_unpopulated(dirfd));
    CHECK(cg_signal(dirfd, SIGTERM, &e) == 0);      /* nobody left */
    CHECK(released(&cg, 5, procs_fd, dirfd));
    real_end(&cg, own_path);
}

static void kill_reaches_a_descendant_that_left_the_process_group(void)
{
    struct cg_state cg;
    char top_path[PATH_MAX], own_path[PATH_MAX];
    if (!real_begin(&cg, top_path, own_path))
        return;
    int procs_fd, dirfd;
    struct sa_err e;
    CHECK(cg_create(&cg, 6, &procs_fd, &dirfd, &e) == 0);
    pid_t gc = -1, pid = joined_child(procs_fd, true, &gc);
    CHECK(pid > 0 && gc > 0);
    CHECK(getsid(gc) == gc);                        /* its own session: kill(-pgid) misses it */
    CHECK(cg_kill(dirfd, &e) == 0);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(wait_unpopulated(dirfd));                 /* the grandchild died too */
    if (gc > 0 && kill(gc, 0) == 0 && pid_cgroup_ends_with(gc, "/cmd-6"))
        kill(gc, SIGKILL);                          /* failed: do not leave it behind */
    CHECK(released(&cg, 6, procs_fd, dirfd));
    real_end(&cg, own_path);
}

static void prepare_makes_the_next_directory_and_a_spare_for_another_id_goes(void)
{
    struct cg_state cg;
    char top_path[PATH_MAX], own_path[PATH_MAX];
    if (!real_begin(&cg, top_path, own_path))
        return;
    int procs_fd, dirfd;
    struct sa_err e;
    cg_prepare(&cg, 8);
    CHECK(cg.spare_id == 8 && exists_at(cg.base_path, "cmd-8"));
    CHECK(cg_create(&cg, 8, &procs_fd, &dirfd, &e) == 0 && procs_fd >= 0);
    CHECK(cg.spare_id == 0);
    CHECK(released(&cg, 8, procs_fd, dirfd));
    cg_prepare(&cg, 9);
    CHECK(exists_at(cg.base_path, "cmd-9"));
    CHECK(cg_create(&cg, 10, &procs_fd, &dirfd, &e) == 0);
    CHECK(!exists_at(cg.base_path, "cmd-9"));       /* made for another id: removed */
    CHECK(exists_at(cg.base_path, "cmd-10"));
    close(procs_fd);
    cg_release(&cg, 10, dirfd);
    /* a leftover (a spawn that failed) is reclaimed when its id comes again */
    CHECK(cg_create(&cg, 11, &procs_fd, &dirfd, &e) == 0);
    close(procs_fd);
    close(dirfd);
    CHECK(cg_create(&cg, 11, &procs_fd, &dirfd, &e) == 0 && procs_fd >= 0);
    CHECK(released(&cg, 11, procs_fd, dirfd));
    real_end(&cg, own_path);
}

static void a_busy_cgroup_is_queued_and_swept_once_empty_with_its_subcgroups(void)
{
    struct cg_state cg;
    char top_path[PATH_MAX], own_path[PATH_MAX];
    if (!real_begin(&cg, top_path, own_path))
        return;
    int procs_fd, dirfd;
    struct sa_err e;
    CHECK(cg_create(&cg, 7, &procs_fd, &dirfd, &e) == 0);
    pid_t pid = joined_child(procs_fd, false, NULL);    /* a daemon left behind */
    close(procs_fd);
    /* empty sub-cgroups a root command made */
    CHECK(mkdirat(dirfd, "sub", 0755) == 0);
    int sub = openat(dirfd, "sub", O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(sub >= 0 && mkdirat(sub, "deeper", 0755) == 0);
    if (sub >= 0)
        close(sub);
    cg_release(&cg, 7, dirfd);
    CHECK(exists_at(cg.base_path, "cmd-7"));
    CHECK(cg.npending == 1 && cg.pending[0] == 7);
    cg_sweep(&cg);
    CHECK(cg.npending == 1 && exists_at(cg.base_path, "cmd-7"));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < 500 && cg.npending; i++) {     /* bounded: 5 s */
        cg_sweep(&cg);
        if (cg.npending)
            sleep_ms(10);
    }
    CHECK(cg.npending == 0);
    CHECK(!exists_at(cg.base_path, "cmd-7"));
    real_end(&cg, own_path);
}

static void init_removes_dead_agents_directories_and_adopts_our_leftovers(void)
{
    struct cg_state cg;
    char top_path[PATH_MAX], own_path[PATH_MAX], path[2 * PATH_MAX];
    if (!real_begin(&cg, top_path, own_path))
        return;
    cg_free(&cg);
    /* a pid that no longer exists */
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    /* what agents before us left: a dead one's directory (with an empty
     * command cgroup), a living one's (pid 1 exists), and ours, as if an
     * agent with our pid had died: an empty cmd-3 with a sub-cgroup, and a
     * cmd-4 a process still lives in */
    mkdir(top_path, 0755);
    snprintf(path, sizeof path, "%s/agent-%d", top_path, (int)dead);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d/cmd-1", top_path, (int)dead);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-1", top_path);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d", top_path, (int)getpid());
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d/cmd-3", top_path, (int)getpid());
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d/cmd-3/sub", top_path, (int)getpid());
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d/cmd-4", top_path, (int)getpid());
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/agent-%d/cmd-4/cgroup.procs", top_path, (int)getpid());
    int procs_fd = open(path, O_WRONLY | O_CLOEXEC);
    CHECK(procs_fd >= 0);
    pid_t pid = procs_fd >= 0 ? joined_child(procs_fd, false, NULL) : -1;
    if (procs_fd >= 0)
        close(procs_fd);

    if (real_init(&cg)) {
        char name[64];
        snprintf(name, sizeof name, "agent-%d", (int)dead);
        CHECK(!exists_at(top_path, name));          /* dead: removed */
        CHECK(exists_at(top_path, "agent-1"));      /* alive: kept */
        CHECK(!exists_at(cg.base_path, "cmd-3"));   /* empty leftover: removed */
        CHECK(exists_at(cg.base_path, "cmd-4"));    /* busy leftover: queued */
        CHECK(cg.npending == 1 && cg.npending > 0 && cg.pending[0] == 4);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (cg.enabled) {
        cg_free(&cg);                               /* sweeps cmd-4 once empty */
        CHECK(exists_at(top_path, "agent-1"));      /* another agent's: kept, and so top */
        snprintf(path, sizeof path, "agent-%d", (int)getpid());
        CHECK(!exists_at(top_path, path));
    }
    real_cleanup(own_path);
}

int main(int argc, char **argv)
{
    snprintf(tmp, sizeof tmp, "/tmp/sa-test-cgroup-XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 2;
    }
    detect_real();
    static const struct check_test tests[] = {
        CHECK_TEST(our_cgroup_is_the_0_line_below_the_cgroup2_mount),
        CHECK_TEST(a_deleted_or_unreachable_cgroup_or_none_disables_cgroups),
        CHECK_TEST(the_mount_chosen_is_the_cgroup2_one_whose_root_holds_our_cgroup),
        CHECK_TEST(an_overlong_mountinfo_line_is_skipped_whole),
        CHECK_TEST(init_makes_top_and_agent_directory_and_free_removes_them),
        CHECK_TEST(a_command_cgroup_is_cmd_id_and_holds_what_joins_it),
        CHECK_TEST(kill_reaches_a_descendant_that_left_the_process_group),
        CHECK_TEST(prepare_makes_the_next_directory_and_a_spare_for_another_id_goes),
        CHECK_TEST(a_busy_cgroup_is_queued_and_swept_once_empty_with_its_subcgroups),
        CHECK_TEST(init_removes_dead_agents_directories_and_adopts_our_leftovers),
    };
    int rc = check_run_only(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL);
    rm_rf_at(AT_FDCWD, tmp);
    return rc;
}
