/* bench.h — the shared pieces of sa-bench, the measuring half of bench/run
 * (README, "Benchmarks"; results in docs/PERFORMANCE.md).
 *
 * Every subcommand of sa-bench measures one figure and prints it as
 * `key value` lines on stdout, one figure per line, so that bench/run can
 * put the agent's figure and its baseline side by side. Failures go to
 * stderr and exit 1: a benchmark that cannot run prints no figure.
 */
#ifndef SA_BENCH_H
#define SA_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

/* Latency samples in nanoseconds. */
struct samples {
    int64_t *v;
    size_t n, cap;
};
void samples_add(struct samples *s, int64_t ns);
/* The p-th percentile (0..100) by nearest rank; sorts the samples. */
double samples_pct_us(struct samples *s, double p);
void samples_free(struct samples *s);
/* Print `<name>_p50_us X` and `<name>_p99_us Y`. */
void samples_report(struct samples *s, const char *name);

/* Print a message and exit 1. */
__attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);
/* A connection to the agent at addr, its hello read, or die (agent.c). */
struct client;
struct client *bench_connect(const char *addr);
/* `release {all}` on c; the number released, or die (agent.c). */
uint64_t bench_release_all(struct client *c);
/* A positive count from argv, or die. */
long bench_count(const char *s, const char *what);

/* The subcommands (main.c dispatches). argv[0] is the subcommand's name. */
int bench_exec(int argc, char **argv);       /* agent.c */
int bench_stdout(int argc, char **argv);
int bench_text(int argc, char **argv);
int bench_lines(int argc, char **argv);
int bench_cps(int argc, char **argv);
int bench_startup(int argc, char **argv);
int bench_stats(int argc, char **argv);
int bench_release(int argc, char **argv);
int bench_stall(int argc, char **argv);
int bench_floor_cps(int argc, char **argv);  /* floor.c */
int bench_tree(int argc, char **argv);       /* tree.c */
int bench_tunnel(int argc, char **argv);     /* tunnel.c */
int bench_tunnel_rtt(int argc, char **argv);
int bench_scale(int argc, char **argv);      /* scale.c */

/* floor.c: one posix_spawn of /bin/true, stdout on a pipe read to EOF,
 * waitpid. */
void floor_once(void);

/* qga.c: a connection to qemu-ga's Unix socket (guest-ping answered), and
 * one guest-exec of /bin/true polled with guest-exec-status to its exit. */
struct qga;
struct qga *qga_open(const char *path);
void qga_exec_true(struct qga *q);
void qga_close(struct qga *q);

#endif
