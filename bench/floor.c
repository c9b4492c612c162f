/* The floor: what starting /bin/true with its stdout on a pipe costs
 * without any agent — posix_spawn (glibc's clone(CLONE_VM|CLONE_VFORK)),
 * read the pipe to EOF, waitpid. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

/* One spawn of /bin/true, stdout on a pipe, read to EOF, reaped. */
void floor_once(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *const argv[] = {"/bin/true", NULL};
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (err)
        die("posix_spawn: %s", strerror(err));
    char buf[512];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) != 0)
        if (n < 0 && errno != EINTR)
            die("read: %s", strerror(errno));
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("/bin/true: status 0x%x", (unsigned)st);
}

static atomic_long floor_left;

static void *floor_thread(void *arg)
{
    (void)arg;
    while (atomic_fetch_sub(&floor_left, 1) > 0)
        floor_once();
    return NULL;
}

int bench_floor_cps(int argc, char **argv)
{
    if (argc != 3)
        die("usage: floor-cps N THREADS");
    long n = bench_count(argv[1], "N");
    long nthreads = bench_count(argv[2], "THREADS");
    if (nthreads > 256)
        die("at most 256 threads");
    pthread_t t[256];
    atomic_store(&floor_left, n);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < nthreads; i++)
        if (pthread_create(&t[i], NULL, floor_thread, NULL) != 0)
            die("pthread_create failed");
    for (long i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("floor_cps_secs %.4f\n", secs);
    printf("floor_cps %.0f\n", (double)n / secs);
    return 0;
}
