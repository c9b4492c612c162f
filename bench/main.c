/* sa-bench: the measuring half of bench/run. See bench.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void samples_add(struct samples *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort();
    }
    s->v[s->n++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

double samples_pct_us(struct samples *s, double p)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    size_t rank = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return (double)s->v[rank - 1] / 1000.0;
}

void samples_free(struct samples *s)
{
    free(s->v);
    *s = (struct samples){0};
}

void samples_report(struct samples *s, const char *name)
{
    printf("%s_p50_us %.1f\n", name, samples_pct_us(s, 50));
    printf("%s_p90_us %.1f\n", name, samples_pct_us(s, 90));
    printf("%s_p99_us %.1f\n", name, samples_pct_us(s, 99));
    printf("%s_n %zu\n", name, s->n);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sa-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

long bench_count(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v <= 0)
        die("%s: not a positive count: %s", what, s);
    return v;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *usage;
} cmds[] = {
    {"exec", bench_exec, "exec ADDR N [QGASOCK]  /bin/true round trips: agent, posix_spawn floor\n"
                         "                         and qemu-ga, interleaved (p50, p99)"},
    {"stdout", bench_stdout, "stdout ADDR BYTES      stdout of head -c BYTES /dev/zero, MiB/s"},
    {"text", bench_text, "text ADDR BYTES        stdout of head -c BYTES /dev/zero | tr '\\0' a, MiB/s"},
    {"lines", bench_lines, "lines ADDR N           output of seq N, lines counted, lines/s"},
    {"cps", bench_cps, "cps ADDR N CONNS       N /bin/true over CONNS connections, commands/s"},
    {"startup", bench_startup, "startup N AGENT ARGS.. exec of the agent to its hello (p50, p99), and of /bin/true to its exit"},
    {"stats", bench_stats, "stats ADDR             hello capabilities, stats (agent_rss, log_bytes...)"},
    {"stall", bench_stall, "stall ADDR PID          ping p50/p99/max (us) every ms until PID exits"},
    {"release", bench_release, "release ADDR           release every exited command (logs, records)"},
    {"floor-cps", bench_floor_cps, "floor-cps N THREADS    the floor from THREADS threads, commands/s"},
    {"tree", bench_tree, "tree DIR N             a node_modules-like tree of N files"},
    {"tunnel", bench_tunnel, "tunnel ADDR BYTES      BYTES to a TCP sink, direct and through connect, MiB/s"},
    {"scale", bench_scale, "scale ADDR N [LIMIT]   N detached sleeps: start rate, fds and RSS per command,\n"
                           "                         list (all pages), stats and ping under that load"},
    {"tunnel-rtt", bench_tunnel_rtt, "tunnel-rtt ADDR N      N HTTP round trips, direct and through connect\n"
                                     "                         (p50, p99)"},
};

int main(int argc, char **argv)
{
    if (argc >= 2)
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
            if (strcmp(argv[1], cmds[i].name) == 0)
                return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "usage: sa-bench COMMAND ARGS...\n\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(stderr, "  %s\n", cmds[i].usage);
    fprintf(stderr, "\nFigures are printed as `key value` lines. bench/run runs them all.\n");
    return 2;
}
