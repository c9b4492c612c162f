/* Item 11: many concurrent commands in one agent (issue 15, "Scale").
 *
 * N detached `sleep`s started over one connection (pipelined, at most
 * SCALE_WINDOW execs unanswered), then, with all of them running: the fds
 * and the RSS the agent spends per command (its own `stats`: agent_fds,
 * agent_rss, against the same figures before the first exec), `list` of
 * every record (all pages), `stats` (which lists every running command) and
 * `ping` round trips under that load. Then every command is killed
 * (`signal` SIGKILL, pipelined) and the time until `stats` says none runs is
 * reported too; the exited records are released. LIMIT, when given, is
 * the `limit` of each list request (default: pages as large as the agent
 * makes them, one frame each). Each exec carries a
 * timeout, so that the sleeps end even if this program dies. */
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "client.h"

#define SCALE_TIMEOUT_MS 600000
#define SCALE_WINDOW 256          /* execs (or signals) sent and not yet answered */
#define SCALE_PINGS 200
#define SCALE_REPEAT 5            /* list and stats: the median of this many */

/* Send what is queued, then read until one more message is handed out. */
static void scale_next(struct client *c, msgpack_object *m)
{
    struct sa_err e;
    for (;;) {
        int k = client_next(c, m, &e);
        if (k < 0)
            die("receive: %s", e.msg);
        if (k > 0)
            return;
        struct pollfd p = {.fd = client_fd(c), .events = POLLIN | (client_pending(c) ? POLLOUT : 0)};
        if (poll(&p, 1, SCALE_TIMEOUT_MS) <= 0)
            die("no answer from the agent");
        if ((p.revents & POLLOUT) && client_flush(c, &e) < 0)
            die("send: %s", e.msg);
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && client_read(c, &e) <= 0)
            die("receive: %s", e.msg);
    }
}

static msgpack_object scale_call(struct client *c, uint64_t id)
{
    msgpack_object m;
    struct sa_err e;
    if (client_call(c, id, SCALE_TIMEOUT_MS, &m, &e) != 0)
        die("request %" PRIu64 ": %s", id, e.msg);
    return m;
}

static uint64_t field_u64(const msgpack_object *m, const char *k)
{
    uint64_t v;
    if (!wire_obj_uint(wire_get(m, k), &v))
        die("reply without %s", k);
    return v;
}

struct scale_stats {
    uint64_t fds, rss, running;
    double secs;
};

/* A request without fields (stats, ping), sent and answered. */
static msgpack_object scale_bare(struct client *c, const char *type)
{
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, type);
    if (client_end(c, &w, &e) < 0)
        die("%s: %s", type, e.msg);
    return scale_call(c, id);
}

static void scale_stats(struct client *c, struct scale_stats *s)
{
    int64_t t0 = bench_now_ns();
    msgpack_object m = scale_bare(c, "stats");
    s->secs = (double)(bench_now_ns() - t0) / 1e9;
    s->fds = field_u64(&m, "agent_fds");
    s->rss = field_u64(&m, "agent_rss");
    s->running = field_u64(&m, "commands_running");
}

/* Send n requests, at most SCALE_WINDOW unanswered: queue(c, i, ctx) queues
 * the i-th (one client_begin/client_end, returning its id), and reply(m,
 * i, ctx) sees the answer to it. Other messages are skipped. */
typedef uint64_t scale_queue_fn(struct client *c, long i, void *ctx);
typedef void scale_reply_fn(const msgpack_object *m, long i, void *ctx);

static void scale_pipeline(struct client *c, long n, scale_queue_fn *queue, scale_reply_fn *reply,
                           void *ctx)
{
    long sent = 0, got = 0;
    uint64_t first = 0;
    while (got < n) {
        for (; sent < n && sent - got < SCALE_WINDOW; sent++) {
            uint64_t id = queue(c, sent, ctx);
            if (!first)
                first = id;
        }
        msgpack_object m;
        scale_next(c, &m);
        uint64_t id;
        if (!wire_obj_uint(wire_get(&m, "id"), &id) || id < first || id >= first + (uint64_t)n)
            continue;
        reply(&m, (long)(id - first), ctx);
        got++;
    }
}

static uint64_t queue_sleep(struct client *c, long i, void *ctx)
{
    (void)i, (void)ctx;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "exec");
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 2);
    wire_str(&w, "sleep");
    wire_str(&w, "3600");
    wire_kv_bool(&w, "detached", true);
    wire_kv_uint(&w, "timeout_ms", SCALE_TIMEOUT_MS);
    if (client_end(c, &w, &e) < 0)
        die("exec: %s", e.msg);
    return id;
}

/* An exec's reply: its command id into cmds[i]; an error stops the run (the
 * figures would be wrong). */
static void reply_sleep(const msgpack_object *m, long i, void *ctx)
{
    uint64_t *cmds = ctx;
    if (!client_msg_is(m, "ok")) {
        struct sa_err e;
        client_reply_err(m, &e);
        die("exec %ld refused: %s: %s", i + 1, e.code, e.msg);
    }
    cmds[i] = field_u64(m, "cmd");
}

/* Start n detached sleeps; returns their command ids. */
static uint64_t *scale_start(struct client *c, long n)
{
    uint64_t *cmds = calloc((size_t)n, sizeof *cmds);
    if (!cmds)
        abort();
    scale_pipeline(c, n, queue_sleep, reply_sleep, cmds);
    return cmds;
}

/* Every page of `list`; returns the records seen. */
static uint64_t scale_list(struct client *c, uint64_t limit, uint64_t *pages)
{
    uint64_t cursor = 0, records = 0;
    *pages = 0;
    for (;;) {
        struct wire_enc w;
        struct sa_err e;
        uint64_t id = client_begin(c, &w, "list");
        if (cursor)
            wire_kv_uint(&w, "cursor", cursor);
        if (limit)
            wire_kv_uint(&w, "limit", limit);
        if (client_end(c, &w, &e) < 0)
            die("list: %s", e.msg);
        msgpack_object m = scale_call(c, id);
        const msgpack_object *cmds = wire_get(&m, "commands");
        if (!cmds || cmds->type != MSGPACK_OBJECT_ARRAY)
            die("list reply without commands");
        records += cmds->via.array.size;
        (*pages)++;
        bool more = false;
        wire_obj_bool(wire_get(&m, "more"), &more);
        if (!more)
            return records;
        cursor = field_u64(&m, "cursor");
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

static uint64_t queue_kill(struct client *c, long i, void *ctx)
{
    const uint64_t *cmds = ctx;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "signal");
    wire_kv_uint(&w, "cmd", cmds[i]);
    wire_kv_uint(&w, "signal", 9);
    if (client_end(c, &w, &e) < 0)
        die("signal: %s", e.msg);
    return id;
}

/* ok, or `exited` for one that its timeout got first */
static void reply_kill(const msgpack_object *m, long i, void *ctx)
{
    (void)m, (void)i, (void)ctx;
}

/* SIGKILL every command (pipelined signals), then wait for none to run. */
static double scale_kill(struct client *c, uint64_t *cmds, long n)
{
    int64_t t0 = bench_now_ns();
    scale_pipeline(c, n, queue_kill, reply_kill, cmds);
    for (;;) {
        struct scale_stats s;
        scale_stats(c, &s);
        if (s.running == 0)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return (double)(bench_now_ns() - t0) / 1e9;
}

int bench_scale(int argc, char **argv)
{
    if (argc != 3 && argc != 4)
        die("usage: scale ADDR N [LIMIT]");
    long n = bench_count(argv[2], "N");
    uint64_t limit = argc == 4 ? (uint64_t)bench_count(argv[3], "LIMIT") : 0;
    struct client *c = bench_connect(argv[1]);
    struct scale_stats s0, s1, s;
    scale_stats(c, &s0);

    int64_t t0 = bench_now_ns();
    uint64_t *cmds = scale_start(c, n);
    double start_secs = (double)(bench_now_ns() - t0) / 1e9;
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);   /* let the last ones settle */
    scale_stats(c, &s1);
    if (s1.running < (uint64_t)n)
        die("only %" PRIu64 " of %ld commands run", s1.running, n);

    double list_t[SCALE_REPEAT], stats_t[SCALE_REPEAT];
    uint64_t records = 0, pages = 0;
    for (int i = 0; i < SCALE_REPEAT; i++) {
        int64_t l0 = bench_now_ns();
        records = scale_list(c, limit, &pages);
        list_t[i] = (double)(bench_now_ns() - l0) / 1e9;
        scale_stats(c, &s);
        stats_t[i] = s.secs;
    }
    struct samples ping = {0};
    for (int i = 0; i < SCALE_PINGS; i++) {
        int64_t p0 = bench_now_ns();
        scale_bare(c, "ping");
        samples_add(&ping, bench_now_ns() - p0);
    }
    double kill_secs = scale_kill(c, cmds, n);

    printf("scale_n %ld\n", n);
    printf("scale_start_per_s %.0f\n", (double)n / start_secs);
    printf("scale_fds_per_cmd %.2f\n", (double)(s1.fds - s0.fds) / (double)n);
    printf("scale_rss_per_cmd_b %.0f\n", ((double)s1.rss - (double)s0.rss) / (double)n);
    printf("scale_rss_before_kib %" PRIu64 "\n", s0.rss / 1024);
    printf("scale_rss_after_kib %" PRIu64 "\n", s1.rss / 1024);
    printf("scale_fds_before %" PRIu64 "\n", s0.fds);
    printf("scale_fds_after %" PRIu64 "\n", s1.fds);
    printf("scale_list_records %" PRIu64 "\n", records);
    printf("scale_list_pages %" PRIu64 "\n", pages);
    printf("scale_list_ms %.1f\n", median(list_t, SCALE_REPEAT) * 1000.);
    printf("scale_stats_ms %.1f\n", median(stats_t, SCALE_REPEAT) * 1000.);
    samples_report(&ping, "scale_ping");
    printf("scale_kill_all_ms %.0f\n", kill_secs * 1000.);
    samples_free(&ping);
    free(cmds);
    bench_release_all(c);
    client_free(c);
    return 0;
}
