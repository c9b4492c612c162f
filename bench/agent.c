/* The agent's figures, measured through libsa_client: the real protocol
 * over a real socket, without sandboxctl's own start-up in the way. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "client.h"

#define BENCH_TIMEOUT_MS 600000
#define BENCH_WARMUP 50

extern char **environ;

struct client *bench_connect(const char *addr)
{
    struct client *c;
    struct sa_err e;
    if (client_connect(addr, 10000, &c, &e) < 0)
        die("connect %s: %s", addr, e.msg);
    return c;
}

/* Queue an exec of argv (attached, default stdin); returns its id. */
static uint64_t queue_exec(struct client *c, char *const *argv)
{
    uint32_t argc = 0;
    while (argv[argc])
        argc++;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "exec");
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, argc);
    for (uint32_t i = 0; i < argc; i++)
        wire_str(&w, argv[i]);
    if (client_end(c, &w, &e) < 0)
        die("exec: %s", e.msg);
    return id;
}

/* What one exec stream delivered. */
struct run {
    uint64_t id;
    uint64_t bytes;             /* stdout + stderr bytes received */
    uint64_t lines;             /* '\n' in them, when counted */
    bool count_lines;
    bool started, done;
    int64_t code;
};

/* Account one message for run r. Returns true when it was r's exit. */
static bool run_event(struct run *r, const msgpack_object *m)
{
    if (!client_msg_id(m, r->id))
        return false;
    if (client_msg_is(m, "ok")) {
        r->started = true;
    } else if (client_msg_is(m, "output")) {
        const char *p;
        size_t n;
        if (!wire_obj_bytes(wire_get(m, "data"), &p, &n))
            die("output event without data");
        r->bytes += n;
        if (r->count_lines) {        /* a local count: a loop the compiler vectorizes */
            uint64_t k = 0;
            for (size_t i = 0; i < n; i++)
                k += p[i] == '\n';
            r->lines += k;
        }
    } else if (client_msg_is(m, "exit")) {
        if (!wire_obj_int(wire_get(m, "code"), &r->code))
            die("exit event without code");
        r->done = true;
        return true;
    } else if (client_msg_is(m, "error")) {
        struct sa_err e;
        client_reply_err(m, &e);
        die("exec refused: %s: %s", e.code, e.msg);
    } else if (client_msg_is(m, "gap")) {
        die("a gap on an attached exec stream: the agent dropped bytes a follower needed");
    }
    return false;
}

/* Send an exec of argv and read its stream to the exit. */
static void run_blocking(struct client *c, char *const *argv, struct run *r)
{
    struct sa_err e;
    r->id = queue_exec(c, argv);
    if (client_flush_all(c, BENCH_TIMEOUT_MS, &e) < 0)
        die("send: %s", e.msg);
    for (;;) {
        msgpack_object m;
        if (client_recv(c, BENCH_TIMEOUT_MS, &m, &e) < 0)
            die("receive: %s", e.msg);
        if (run_event(r, &m))
            return;
    }
}

/* --- item 1: exec round trip ------------------------------------------------ */

/* Each iteration runs the agent's exec, then the floor, then qemu-ga's, so
 * that whatever else the machine does hits all three alike. */
int bench_exec(int argc, char **argv)
{
    if (argc != 3 && argc != 4)
        die("usage: exec ADDR N [QGASOCK]");
    long n = bench_count(argv[2], "N");
    struct client *c = bench_connect(argv[1]);
    struct qga *q = argc == 4 ? qga_open(argv[3]) : NULL;
    char *const tru[] = {"/bin/true", NULL};
    struct samples s = {0}, fl = {0}, qs = {0};
    for (long i = 0; i < n + BENCH_WARMUP; i++) {
        struct run r = {0};
        int64_t t0 = bench_now_ns();
        run_blocking(c, tru, &r);
        int64_t t1 = bench_now_ns();
        floor_once();
        int64_t t2 = bench_now_ns();
        if (q)
            qga_exec_true(q);
        int64_t t3 = bench_now_ns();
        if (r.code != 0)
            die("/bin/true exited %" PRId64, r.code);
        if (i < BENCH_WARMUP)
            continue;
        samples_add(&s, t1 - t0);
        samples_add(&fl, t2 - t1);
        if (q)
            samples_add(&qs, t3 - t2);
    }
    samples_report(&s, "exec");
    samples_report(&fl, "floor");
    if (q) {
        samples_report(&qs, "qga");
        qga_close(q);
    }
    samples_free(&s);
    samples_free(&fl);
    samples_free(&qs);
    client_free(c);
    return 0;
}

/* --- items 2 and 3: output delivered to the client --------------------------- */

static void bench_output(const char *addr, char *const *argv, uint64_t want_bytes,
                         uint64_t want_lines, const char *name)
{
    struct client *c = bench_connect(addr);
    struct run r = {.count_lines = want_lines > 0};
    int64_t t0 = bench_now_ns();
    run_blocking(c, argv, &r);
    int64_t t1 = bench_now_ns();
    if (r.code != 0)
        die("%s exited %" PRId64, argv[0], r.code);
    if (want_bytes && r.bytes != want_bytes)
        die("%s: %" PRIu64 " bytes delivered, %" PRIu64 " expected", name, r.bytes, want_bytes);
    if (want_lines && r.lines != want_lines)
        die("%s: %" PRIu64 " lines counted, %" PRIu64 " expected", name, r.lines, want_lines);
    double secs = (double)(t1 - t0) / 1e9;
    printf("%s_secs %.4f\n", name, secs);
    printf("%s_bytes %" PRIu64 "\n", name, r.bytes);
    printf("%s_mib_s %.1f\n", name, (double)r.bytes / secs / (1 << 20));
    if (want_lines)
        printf("%s_lines_s %.0f\n", name, (double)r.lines / secs);
    client_free(c);
}

int bench_stdout(int argc, char **argv)
{
    if (argc != 3)
        die("usage: stdout ADDR BYTES");
    long bytes = bench_count(argv[2], "BYTES");
    char *const cmd[] = {"head", "-c", argv[2], "/dev/zero", NULL};
    bench_output(argv[1], cmd, (uint64_t)bytes, 0, "stdout");
    return 0;
}

/* Text instead of NUL bytes: the same command as bench/gw_bench.py's logs
 * item, whose JSON would otherwise escape every byte as \u0000. */
int bench_text(int argc, char **argv)
{
    if (argc != 3)
        die("usage: text ADDR BYTES");
    long bytes = bench_count(argv[2], "BYTES");
    char script[96];
    snprintf(script, sizeof script, "head -c %ld /dev/zero | tr '\\0' a", bytes);
    char *const cmd[] = {"sh", "-c", script, NULL};
    bench_output(argv[1], cmd, (uint64_t)bytes, 0, "text");
    return 0;
}

int bench_lines(int argc, char **argv)
{
    if (argc != 3)
        die("usage: lines ADDR N");
    long n = bench_count(argv[2], "N");
    char *const cmd[] = {"seq", argv[2], NULL};
    bench_output(argv[1], cmd, 0, (uint64_t)n, "lines");
    return 0;
}

/* --- item 7: commands per second over several connections ------------------ */

struct lane {
    struct client *c;
    struct run r;
    bool busy;
};

int bench_cps(int argc, char **argv)
{
    if (argc != 4)
        die("usage: cps ADDR N CONNS");
    long n = bench_count(argv[2], "N");
    long nconn = bench_count(argv[3], "CONNS");
    if (nconn > 256)
        die("at most 256 connections");
    char *const tru[] = {"/bin/true", NULL};
    struct lane lanes[256] = {0};
    struct pollfd pfd[256];
    for (long i = 0; i < nconn; i++)
        lanes[i].c = bench_connect(argv[1]);
    long issued = 0, done = 0;
    struct sa_err e;
    int64_t t0 = bench_now_ns();
    while (done < n) {
        for (long i = 0; i < nconn; i++) {
            struct lane *l = &lanes[i];
            if (!l->busy && issued < n) {
                l->r = (struct run){0};
                l->r.id = queue_exec(l->c, tru);
                l->busy = true;
                issued++;
            }
            if (client_flush(l->c, &e) < 0)
                die("send: %s", e.msg);
            pfd[i] = (struct pollfd){.fd = client_fd(l->c),
                                     .events = POLLIN | (client_pending(l->c) ? POLLOUT : 0)};
        }
        if (poll(pfd, (nfds_t)nconn, BENCH_TIMEOUT_MS) <= 0)
            die("poll: no progress");
        for (long i = 0; i < nconn; i++) {
            struct lane *l = &lanes[i];
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int rr = client_read(l->c, &e);
            if (rr <= 0)
                die("receive: %s", rr < 0 ? e.msg : "the agent closed the connection");
            msgpack_object m;
            int k;
            while ((k = client_next(l->c, &m, &e)) > 0)
                if (l->busy && run_event(&l->r, &m)) {
                    if (l->r.code != 0)
                        die("/bin/true exited %" PRId64, l->r.code);
                    l->busy = false;
                    done++;
                }
            if (k < 0)
                die("receive: %s", e.msg);
        }
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("cps_secs %.4f\n", secs);
    printf("cps %.0f\n", (double)n / secs);
    for (long i = 0; i < nconn; i++)
        client_free(lanes[i].c);
    return 0;
}

/* --- item 6: start-up to hello ------------------------------------------------- */

/* The unix: path among the agent's arguments (--listen unix:PATH). */
static const char *listen_path(char **args)
{
    for (int i = 0; args[i] && args[i + 1]; i++)
        if (strcmp(args[i], "--listen") == 0 && strncmp(args[i + 1], "unix:", 5) == 0)
            return args[i + 1] + 5;
    die("startup: the agent's arguments need --listen unix:PATH");
}

/* Connect to path, retrying at once while the agent is not listening yet. */
static int connect_retry(const char *path, int64_t deadline)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        int err = errno;
        close(fd);
        if (err != ENOENT && err != ECONNREFUSED)
            die("connect %s: %s", path, strerror(err));
        if (bench_now_ns() > deadline)
            die("the agent did not listen on %s within 10 s", path);
        sched_yield();          /* on a busy machine, let the agent have the core */
    }
}

int bench_startup(int argc, char **argv)
{
    if (argc < 3)
        die("usage: startup N AGENT ARGS...");
    long n = bench_count(argv[1], "N");
    char **agent_argv = argv + 2;
    const char *path = listen_path(agent_argv);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    struct samples s = {0}, fl = {0};
    for (long i = 0; i < n + 2; i++) {
        /* the exec floor in the same run, alternating: /bin/true spawned,
         * its stdout read to EOF, reaped (item 1's floor) */
        int64_t f0 = bench_now_ns();
        floor_once();
        if (i >= 2)
            samples_add(&fl, bench_now_ns() - f0);
        unlink(path);
        int64_t t0 = bench_now_ns();
        pid_t pid;
        int err = posix_spawn(&pid, agent_argv[0], &fa, NULL, agent_argv, environ);
        if (err)
            die("spawn %s: %s", agent_argv[0], strerror(err));
        int fd = connect_retry(path, t0 + 10000000000LL);
        struct client *c;
        struct sa_err e;
        if (client_open_fd(fd, 10000, &c, &e) < 0)
            die("hello: %s", e.msg);
        int64_t t1 = bench_now_ns();
        if (i >= 2)             /* the first runs warm the page cache */
            samples_add(&s, t1 - t0);
        client_free(c);
        kill(pid, SIGTERM);
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("the agent did not exit cleanly on SIGTERM (status 0x%x)", (unsigned)st);
    }
    posix_spawn_file_actions_destroy(&fa);
    samples_report(&s, "startup");
    samples_report(&fl, "startup_floor");
    samples_free(&s);
    samples_free(&fl);
    return 0;
}

/* --- item 5: the agent's own account ------------------------------------------- */

int bench_stats(int argc, char **argv)
{
    if (argc != 2)
        die("usage: stats ADDR");
    struct client *c = bench_connect(argv[1]);
    printf("capabilities ");
    for (char **p = client_hello(c)->caps; *p; p++)
        printf("%s%s", *p, p[1] ? "," : "\n");
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "stats");
    if (client_end(c, &w, &e) < 0)
        die("stats: %s", e.msg);
    msgpack_object m;
    if (client_call(c, id, 10000, &m, &e) != 0)
        die("stats: %s", e.msg);
    static const char *const keys[] = {"agent_rss", "agent_fds", "log_bytes", "commands_running",
                                       "commands_exited", "connections"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint64_t v;
        if (wire_obj_uint(wire_get(&m, keys[i]), &v))
            printf("%s %" PRIu64 "\n", keys[i], v);
    }
    client_free(c);
    return 0;
}

/* The host is done with every exited command: release them (items 5, 11). */
uint64_t bench_release_all(struct client *c)
{
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "release");
    wire_kv_bool(&w, "all", true);
    if (client_end(c, &w, &e) < 0)
        die("release: %s", e.msg);
    msgpack_object m;
    if (client_call(c, id, 10000, &m, &e) != 0)
        die("release: %s", e.msg);
    uint64_t n = 0;
    wire_obj_uint(wire_get(&m, "released"), &n);
    return n;
}

int bench_release(int argc, char **argv)
{
    if (argc != 2)
        die("usage: release ADDR");
    struct client *c = bench_connect(argv[1]);
    printf("released %" PRIu64 "\n", bench_release_all(c));
    client_free(c);
    return 0;
}

/* --- item 8: the event loop during long file operations ----------------------- */

/* Ping round trips, one a millisecond, until process pid has exited: how
 * long the agent's loop (which relays every command's output) took to
 * answer while file helpers worked beside it. */
int bench_stall(int argc, char **argv)
{
    if (argc != 3)
        die("usage: stall ADDR PID");
    pid_t pid = (pid_t)bench_count(argv[2], "PID");
    struct client *c = bench_connect(argv[1]);
    struct samples s = {0};
    int64_t worst = 0;
    while (kill(pid, 0) == 0) {
        struct wire_enc w;
        struct sa_err e;
        msgpack_object m;
        int64_t t0 = bench_now_ns();
        uint64_t id = client_begin(c, &w, "ping");
        if (client_end(c, &w, &e) < 0 || client_call(c, id, BENCH_TIMEOUT_MS, &m, &e) != 0)
            die("ping: %s", e.msg);
        int64_t dt = bench_now_ns() - t0;
        samples_add(&s, dt);
        if (dt > worst)
            worst = dt;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    samples_report(&s, "stall");
    printf("stall_max_us %.1f\n", (double)worst / 1000.);
    samples_free(&s);
    client_free(c);
    return 0;
}
