/* fuzz_request.c — libFuzzer target for the request handlers.
 *
 * The input is what a client sends on one connection. It is written into a
 * socketpair whose other end is a real connection (conn_accept) of a real,
 * live agent state (struct agent: the default libev loop, the command
 * table, readers, file-operation helpers, guest duties), and the loop runs
 * until the agent has answered and closed, or 50 ms have passed. Everything
 * after the frame decoder runs for real: request dispatch, exec (spawn,
 * pipes, readers, logs, stdin, signals, wait, list paging, release), the file
 * operations' helper processes, set_defaults, sync, stats, shutdown...
 *
 * Safety: nothing is stubbed; instead the process confines itself once, at
 * start-up, before any input (jail()): a new user namespace (so `set_time`
 * and `add_entropy` cannot touch the real clock or entropy pool: the
 * capabilities are only the namespace's) and mount namespace, chrooted into a
 * fresh temp dir holding only /work, /tmp, an /etc/passwd with root, and the
 * harmless programs cat, echo, true and head (with the dynamic loader and
 * libc they need). A fuzzed exec can therefore run only those (any other
 * name fails at the exec stage, inside the chroot), and file operations act
 * inside the temp dir. libFuzzer's own paths stay reachable at the same
 * names through bind mounts: the current directory read-only (relative corpus
 * paths; the seed corpus in the repository cannot be harmed), corpus
 * directories outside it and the -artifact_prefix directory read-write (a
 * fresh one under /tmp when none is given). /proc is not there (it would
 * lead out through /proc/1/root), so LeakSanitizer, which needs it, is off
 * (-detect_leaks=0 is added to the flags); ASan and UBSan work.
 * Uploads run in the helper in-process (the fuzz build
 * compiles the agent with SA_XFER_EXEC=0), capped at 1 MiB and 64 entries.
 * Between inputs every command is SIGKILLed and reaped (bounded wait), every
 * record, transfer and session default is dropped, and an ended shutdown is
 * reset, so inputs do not depend on each other.
 *
 * Invariants (besides ASan/UBSan): every frame the agent sends is at most
 * max_frame bytes (the configured 64 KiB) and decodes; the first is a hello.
 *
 * Build: -DSA_FUZZ=ON (clang). Needs unprivileged user namespaces (or root);
 * aborts at start-up, saying so, without them. Seed corpus:
 * tests/fuzz/corpus/request/ (each file: one or more frames).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "fop.h"
#include "fuzz.h"
#include "guest.h"
#include "init.h"
#include "log.h"
#include "request.h"
#include "wire.h"

#define FUZZ_MAX_FRAME 65536u
#define FUZZ_RUN_S 0.05           /* the loop's time per input */
#define FUZZ_REAP_S 2.0           /* killed commands and helpers: at most this to be reaped */

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct agent A;
static char *initial_user;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_request: %s: %s\n", what, strerror(errno));
    abort();
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || write(fd, p, n) != (ssize_t)n || close(fd) < 0)
        die(path);
}

/* Copy from (following symlinks) to root/to; a missing source is skipped:
 * that program then fails at the exec stage, which is as safe. */
static void copy_in(const char *root, const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return;
    struct stat st;
    if (fstat(in, &st) < 0)
        die(from);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, in, 0);
    if (p == MAP_FAILED)
        die(from);
    char path[4096];
    snprintf(path, sizeof path, "%s%s", root, to);
    write_file(path, p, (size_t)st.st_size, 0755);
    munmap(p, (size_t)st.st_size);
    close(in);
}

static void mkdirs(const char *root, const char *const *dirs)
{
    char path[4096];
    for (; *dirs; dirs++) {
        snprintf(path, sizeof path, "%s%s", root, *dirs);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            die(path);
    }
}

static char jail_root[] = "/tmp/sa-fuzz-request-XXXXXX";
static char art_dir[] = "/tmp/sa-fuzz-request-artifacts-XXXXXX";
static bool art_made;
static int jail_parent = -1;

/* At exit: the jail's mounts go, then its (empty) directory, and the
 * artifact directory made for this run if it stayed empty. */
static void jail_remove(void)
{
    if (umount2("/", MNT_DETACH) == 0 && jail_parent >= 0) {
        unlinkat(jail_parent, jail_root + strlen("/tmp/"), AT_REMOVEDIR);
        if (art_made)
            unlinkat(jail_parent, art_dir + strlen("/tmp/"), AT_REMOVEDIR);
    }
}

/* Make dir (absolute) reachable inside the jail at the same path. */
static void bind_in(const char *root, const char *dir, bool rw)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", root);
    for (const char *p = dir; *p;) {         /* mkdir -p root/dir */
        const char *q = strchr(p + 1, '/');
        size_t n = q ? (size_t)(q - dir) : strlen(dir);
        snprintf(path, sizeof path, "%s%.*s", root, (int)n, dir);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            die(path);
        p = q ? q : p + strlen(p);
    }
    if (mount(dir, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        die(dir);
    if (!rw && mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
        die(dir);
}

/* The device files commands and helpers use: /dev/null, /dev/zero,
 * /dev/urandom (writes only mix into the pool), the pty multiplexer and
 * /dev/pts (pty commands). */
static void bind_devices(const char *root)
{
    static const char *const devs[] = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/ptmx",
                                       NULL};
    char path[4096];
    for (const char *const *d = devs; *d; d++) {
        snprintf(path, sizeof path, "%s%s", root, *d);
        write_file(path, "", 0, 0600);
        if (mount(*d, path, NULL, MS_BIND, NULL) < 0)
            die(*d);
    }
    bind_in(root, "/dev/pts", true);
}

static bool under(const char *dir, const char *top)
{
    size_t n = strlen(top);
    return strncmp(dir, top, n) == 0 && (dir[n] == '/' || dir[n] == '\0');
}

/* libFuzzer's directories (see the top): cwd read-only, corpus dirs and the
 * artifact dir outside it read-write. Adds -detect_leaks=0 and, when
 * missing, -artifact_prefix to the flags. */
static void bind_fuzzer_paths(const char *root, int *argc, char ***argv)
{
    static char cwd[4096];
    char *art = art_dir;
    if (!getcwd(cwd, sizeof cwd))
        die("getcwd");
    bind_in(root, cwd, false);
    bool have_art = false;
    for (int i = 1; i < *argc; i++) {
        const char *arg = (*argv)[i];
        char real[4096], tmp[4096];
        if (strncmp(arg, "-artifact_prefix=", 17) == 0) {
            have_art = true;
            snprintf(tmp, sizeof tmp, "%s", arg + 17);
            const char *d = tmp[0] && tmp[strlen(tmp) - 1] == '/' ? tmp : dirname(tmp);
            if (realpath(d, real) && !under(real, cwd))
                bind_in(root, real, true);
            continue;
        }
        struct stat st;
        if (arg[0] != '-' && stat(arg, &st) == 0 && S_ISDIR(st.st_mode) && realpath(arg, real) &&
            !under(real, cwd))
            bind_in(root, real, true);
    }
    char **v = xcalloc((size_t)*argc + 3, sizeof *v);
    memcpy(v, *argv, (size_t)*argc * sizeof *v);
    v[(*argc)++] = "-detect_leaks=0";
    if (!have_art) {
        if (!mkdtemp(art))
            die("mkdtemp");
        art_made = true;
        bind_in(root, art, true);
        static char flag[128];
        snprintf(flag, sizeof flag, "-artifact_prefix=%s/", art);
        v[(*argc)++] = flag;
        fprintf(stderr, "fuzz_request: artifacts go to %s/\n", art);
    }
    *argv = v;
}

/* The confinement described at the top. */
static void jail(int *argc, char ***argv)
{
    static const char *const dirs[] = {"/bin", "/usr", "/usr/bin", "/lib", "/lib64",
                                       "/lib/x86_64-linux-gnu", "/etc", "/work", "/tmp", "/root",
                                       "/dev",
                                       NULL};
    uid_t uid = getuid();
    gid_t gid = getgid();
    (void)getpwuid(uid);          /* load the NSS modules while the real /lib is there */
    if (!mkdtemp(jail_root))
        die("mkdtemp");
    const char *root = jail_root;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
        die("unshare(CLONE_NEWUSER|CLONE_NEWNS): this target needs user namespaces");
    char map[64];
    write_file("/proc/self/setgroups", "deny", 4, 0);
    int n = snprintf(map, sizeof map, "0 %u 1\n", (unsigned)uid);
    write_file("/proc/self/uid_map", map, (size_t)n, 0);
    n = snprintf(map, sizeof map, "0 %u 1\n", (unsigned)gid);
    write_file("/proc/self/gid_map", map, (size_t)n, 0);
    /* our mounts stay ours: nothing propagates back to the real system; the
     * jail is a tmpfs that goes with the process (the empty directory under
     * it is removed at exit) */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die("making mounts private");
    if (mount("sa-fuzz", root, "tmpfs", MS_NOSUID, "size=256m,mode=0755") < 0)
        die("mounting the jail's tmpfs");
    mkdirs(root, dirs);
    copy_in(root, "/bin/cat", "/bin/cat");
    copy_in(root, "/bin/echo", "/bin/echo");
    copy_in(root, "/bin/true", "/bin/true");
    copy_in(root, "/usr/bin/head", "/usr/bin/head");
    copy_in(root, "/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2");
    copy_in(root, "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6");
    char path[4096];
    static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
    static const char group[] = "root:x:0:\n";
    snprintf(path, sizeof path, "%s/etc/passwd", root);
    write_file(path, passwd, sizeof passwd - 1, 0644);
    snprintf(path, sizeof path, "%s/etc/group", root);
    write_file(path, group, sizeof group - 1, 0644);
    bind_fuzzer_paths(root, argc, argv);
    bind_devices(root);
    jail_parent = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd) || chroot(root) < 0 || chdir(cwd) < 0)
        die("chroot");
    atexit(jail_remove);
    fprintf(stderr, "fuzz_request: confined to %s (user and mount namespace, chroot)\n", root);
}

/* The command table as main.c's agent_init makes it: scratch buffer, spawn
 * stack, timers, the log store (cmd_free_all undoes it). */
static void cmd_setup(void)
{
    struct sa_err e;
    if (cmd_init(&A, &e) < 0) {
        fprintf(stderr, "fuzz_request: %s\n", e.msg);
        abort();
    }
}

/* What main.c's agent_init does, for this confined process. */
static void agent_setup(void)
{
    char *args[] = {"fuzz", "--dev", "--workdir", "/work", "--max-frame", "65536",
                    "--log-cap", "262144", "--log-total-cap", "1048576", "--grace-ms", "0",
                    "--drain-ms", "10", "--upload-max-bytes", "1048576",
                    "--upload-max-entries", "64", "--max-commands", "16", "--keep-exited", "64",
                    NULL};
    struct sa_err e;
    if (cfg_parse(&A.cfg, (int)(sizeof args / sizeof *args) - 1, args, &e) != 0) {
        fprintf(stderr, "fuzz_request: %s\n", e.msg);
        abort();
    }
    log_set_level(LOG_ERR);
    signal(SIGPIPE, SIG_IGN);
    if (!msgpack_zone_init(&A.zone, WIRE_ZONE_CHUNK))
        abort();
    A.loop = ev_default_loop(0);
    A.dev = true;
    const struct ident *me;
    if (ident_lookup_uid(&A.idents, getuid(), &me, &e) < 0) {
        fprintf(stderr, "fuzz_request: %s\n", e.msg);
        abort();
    }
    initial_user = xstrdup(me->name);
    A.default_user = xstrdup(initial_user);
    A.workdir = xstrdup("/work");
    snprintf(A.boot_id, sizeof A.boot_id, "fuzz");
    getrlimit(RLIMIT_NOFILE, &A.nofile);
    static const struct conn_ops req_ops = {req_opened, req_handle};   /* as main.c wires it */
    conn_set_init(&A.conns, A.loop, &req_ops, &A, A.cfg.max_frame, A.cfg.max_connections);
    cmd_setup();
    init_start(&A);
}

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";       /* LeakSanitizer needs /proc (see the top) */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    jail(argc, argv);
    agent_setup();
    return 0;
}

/* Every frame the agent sent: within max_frame, decodable, hello first. */
struct peer {
    struct buf in;
    unsigned frames;
    bool eof;
};

static void peer_check(struct peer *p)
{
    for (;;) {
        uint32_t len;
        struct sa_err e;
        int r = wire_frame_peek(buf_ptr(&p->in), buf_size(&p->in), A.cfg.max_frame, &len, &e);
        INVARIANT(r >= 0);                     /* never longer than max_frame */
        if (r == 0 || buf_size(&p->in) < WIRE_HDR_LEN + (size_t)len)
            return;
        msgpack_zone z;
        msgpack_object root;
        INVARIANT(msgpack_zone_init(&z, WIRE_ZONE_CHUNK));
        INVARIANT(wire_decode(buf_ptr(&p->in) + WIRE_HDR_LEN, len, &z, &root, &e) == 0);
        INVARIANT(p->frames > 0 || wire_obj_is(wire_get(&root, "type"), "hello"));
        if (getenv("SA_FUZZ_REQUEST_SHOW")) {       /* to see what a seed does */
            msgpack_object_print(stderr, root);
            fputc('\n', stderr);
        }
        msgpack_zone_destroy(&z);
        buf_consume(&p->in, WIRE_HDR_LEN + (size_t)len);
        p->frames++;
    }
}

static void peer_read(int fd, struct peer *p)
{
    while (!p->eof) {
        ssize_t n = read(fd, buf_reserve(&p->in, 65536), 65536);
        if (n > 0) {
            buf_commit(&p->in, (size_t)n);
            peer_check(p);
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            p->eof = true;
        } else if (errno == EAGAIN) {
            return;
        }
    }
}

/* Back to the state after agent_setup. */
static void agent_reset(void)
{
    conn_close_all(&A.conns);
    cmd_kill_all(&A, SIGKILL);
    fop_free_all(&A);                  /* SIGKILLs its helpers */
    ev_tstamp deadline = ev_time() + FUZZ_REAP_S;
    while ((A.ncmds_running > 0 || !LIST_EMPTY(&A.syncs)) && ev_time() < deadline)
        ev_run(A.loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(1000);
    cmd_free_all(&A);
    A.exited = A.exited_tail = NULL;
    A.ncmds_exited = A.ncmds_running = 0;
    cmd_setup();                       /* cmd_free_all freed what cmd_init made */
    guest_free(&A);
    free((char *)A.default_user);
    A.default_user = xstrdup(initial_user);
    A.generation = 0;
    if (A.init.phase != INIT_RUNNING) {   /* a `shutdown` request ran */
        ev_timer_stop(A.loop, &A.init.phase_w);
        ev_check_stop(A.loop, &A.init.idle_w);
        A.init.phase = INIT_RUNNING;
        A.stopping = false;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    conn_accept(&A.conns, sv[0], "fuzz");
    struct peer p = {.frames = 0};
    buf_init(&p.in);
    size_t off = 0;
    ev_tstamp deadline = ev_time() + FUZZ_RUN_S;
    while (!p.eof && ev_time() < deadline) {
        if (off < size) {
            ssize_t n = write(sv[1], data + off, size - off);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                off = size;                /* the agent closed: nothing more goes in */
            if (off == size)
                shutdown(sv[1], SHUT_WR);  /* a half-close: answer, then close */
        }
        ev_run(A.loop, EVRUN_NOWAIT);
        peer_read(sv[1], &p);
        struct pollfd pf = {.fd = sv[1], .events = POLLIN};
        poll(&pf, 1, 1);
    }
    close(sv[1]);
    agent_reset();
    buf_free(&p.in);
    return 0;
}
