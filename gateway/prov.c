/* prov.c — where a session's agent comes from.
 *
 * --provisioner PROGRAM: `PROGRAM create SESSION_ID` gets the create request's
 * JSON on stdin and prints the agent's address on its first stdout line
 * (unix:, tcp:, fc:, vsock:), optionally `token TOKEN` on the second;
 * `PROGRAM stop SESSION_ID` tears it down. Each run is bounded by
 * --provisioner-timeout (then SIGKILL); its stderr goes to the gateway's log
 * line by line; at most PROV_OUT_MAX bytes of stdout are kept. The gateway
 * waits for the program to exit, not for its pipes to close, so an agent it
 * leaves running in the background may keep them open.
 *
 * --pool ADDR...: a session takes the first pool agent no other live session
 * uses; stopping it kills its commands and frees it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "fdio.h"
#include "gw.h"

#define PROV_OUT_MAX 8192
#define PROV_LINE_MAX 1024

extern char **environ;

struct prun {
    const char *what;
    const char *sid;
    struct buf out;             /* stdout, at most PROV_OUT_MAX */
    char errline[PROV_LINE_MAX];
    size_t errn;
};

static void log_stderr(struct prun *r, const char *p, size_t n, bool flush)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || r->errn == sizeof r->errline - 1) {
            r->errline[r->errn] = '\0';
            gw_log("provisioner %s %s: %s", r->what, r->sid, r->errline);
            r->errn = 0;
            if (p[i] == '\n')
                continue;
        }
        r->errline[r->errn++] = (p[i] >= 0x20 && p[i] != 0x7f) || p[i] == '\t' ? p[i] : '?';
    }
    if (flush && r->errn > 0) {
        r->errline[r->errn] = '\0';
        gw_log("provisioner %s %s: %s", r->what, r->sid, r->errline);
        r->errn = 0;
    }
}

static void drain(int fd, struct prun *r, bool is_err)
{
    char tmp[4096];
    ssize_t k;
    while ((k = read(fd, tmp, sizeof tmp)) > 0) {
        if (is_err)
            log_stderr(r, tmp, (size_t)k, false);
        else if (buf_size(&r->out) < PROV_OUT_MAX)
            buf_append(&r->out, tmp,
                       (size_t)k < PROV_OUT_MAX - buf_size(&r->out) ? (size_t)k
                                                                   : PROV_OUT_MAX - buf_size(&r->out));
    }
}

/* Start `PROVISIONER what sid` in its own process group with pipes on its
 * stdin (in), stdout (out), stderr (err); the parent's ends are non-blocking. */
static int prov_spawn(struct gw *gw, struct prun *r, int in[2], int out[2], int err[2],
                      pid_t *pid, struct sa_err *e)
{
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
        return err_sys(e, errno, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);       /* the gateway ignores it; the program should not */
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    char *argv[] = { (char *)gw->provisioner, (char *)r->what, (char *)r->sid, NULL };
    int rc = posix_spawn(pid, gw->provisioner, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    if (rc != 0)
        return err_sys(e, rc, "provisioner %s", gw->provisioner);
    /* our ends only: the program's ends stay blocking */
    (void)fd_set_nonblock(in[1], true);
    (void)fd_set_nonblock(out[0], true);
    (void)fd_set_nonblock(err[0], true);
    return 0;
}

/* Feed input, collect stdout and stderr, until the program exits or the
 * deadline (then SIGKILL to its group). *status as from waitpid. */
static int prov_wait(struct gw *gw, struct prun *r, pid_t pid, int *in, int out, int err,
                     const char *input, int *status, struct sa_err *e)
{
    size_t inlen = input ? strlen(input) : 0, inoff = 0;
    int64_t deadline = clock_mono_ms() + gw->prov_timeout_ms;
    for (;;) {
        if (*in >= 0 && inoff == inlen) {
            close(*in);
            *in = -1;
        }
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return err_set(e, ETIMEDOUT, "provisioner_timeout",
                           "provisioner %s %s: no exit after %d ms", r->what, r->sid,
                           gw->prov_timeout_ms);
        }
        struct pollfd p[3] = { { .fd = *in, .events = POLLOUT },
                               { .fd = out, .events = POLLIN },
                               { .fd = err, .events = POLLIN } };
        poll(p, 3, left < 50 ? (int)left : 50);
        if (*in >= 0 && (p[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t k = write(*in, input + inoff, inlen - inoff);
            if (k > 0)
                inoff += (size_t)k;
            else if (errno != EAGAIN && errno != EINTR)
                inoff = inlen;          /* it will not read its input: stop offering it */
        }
        if (p[1].revents)
            drain(out, r, false);
        if (p[2].revents)
            drain(err, r, true);
        /* its exit, not its pipes' EOF: an agent it left running may hold them */
        if (waitpid(pid, status, WNOHANG) == pid)
            break;
    }
    drain(out, r, false);
    drain(err, r, true);
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0)
        return err_set(e, 0, "provisioner_failed", "provisioner %s %s: %s %d", r->what, r->sid,
                       WIFEXITED(*status) ? "exit status" : "killed by signal",
                       WIFEXITED(*status) ? WEXITSTATUS(*status) : WTERMSIG(*status));
    return 0;
}

/* Run the program; 0 when it exited with status 0 in time. */
static int prov_run(struct gw *gw, struct prun *r, const char *input, struct sa_err *e)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, status = 0;
    pid_t pid;
    int rc = prov_spawn(gw, r, in, out, err, &pid, e);
    if (rc == 0) {
        rc = prov_wait(gw, r, pid, &in[1], out[0], err[0], input, &status, e);
        log_stderr(r, "", 0, true);
    }
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    return rc;
}

/* stdout: "ADDR\n[token TOKEN\n]". */
static int parse_output(struct sess *s, struct buf *out, struct sa_err *e)
{
    buf_append(out, "", 1);
    char *text = (char *)buf_ptr(out), *save = NULL;
    char *line1 = strtok_r(text, "\n", &save), *line2 = strtok_r(NULL, "\n", &save);
    struct addr a;
    if (!line1)
        return err_set(e, 0, "provisioner_failed", "provisioner create: no address on stdout");
    line1[strcspn(line1, "\r")] = '\0';
    if (strlen(line1) >= sizeof s->addr || addr_parse(line1, &a, e) < 0)
        return err_set(e, 0, "provisioner_failed", "provisioner create: bad address '%.200s'",
                       line1);
    strcpy(s->addr, line1);
    if (line2) {
        line2[strcspn(line2, "\r")] = '\0';
        size_t n = strlen(line2);
        if (strncmp(line2, "token ", 6) != 0 || n - 6 < 1 || n - 6 > GW_TOKEN_MAX)
            return err_set(e, 0, "provisioner_failed",
                           "provisioner create: second line is not 'token TOKEN'");
        memcpy(s->token, line2 + 6, n - 6);
        s->token_len = n - 6;
    }
    return 0;
}

static int pool_take(struct gw *gw, struct sess *s, struct sa_err *e)
{
    int rc = err_set(e, 0, "no_capacity", "every --pool agent serves a running session");
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->npool; i++)
        if (!sess_addr_in_use(gw, gw->pool[i])) {
            snprintf(s->addr, sizeof s->addr, "%s", gw->pool[i]);
            memcpy(s->token, gw->pool_token, gw->pool_token_len);
            s->token_len = gw->pool_token_len;
            s->provisioned = false;
            sess_add(gw, s);    /* reserves the address; the caller finishes s */
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&gw->lock);
    return rc;
}

int prov_create(struct gw *gw, struct sess *s, const char *request_json, struct sa_err *e)
{
    if (!gw->provisioner)
        return pool_take(gw, s, e);
    struct prun r = { .what = "create", .sid = s->id };
    buf_init(&r.out);
    int rc = prov_run(gw, &r, request_json, e);
    if (rc == 0)
        rc = parse_output(s, &r.out, e);
    buf_free(&r.out);
    s->provisioned = true;
    if (rc < 0)
        prov_stop(gw, s);       /* nothing left behind */
    else {
        pthread_mutex_lock(&gw->lock);
        sess_add(gw, s);
        pthread_mutex_unlock(&gw->lock);
    }
    return rc;
}

void prov_stop(struct gw *gw, const struct sess *s)
{
    struct prun r = { .what = "stop", .sid = s->id };
    struct sa_err e;
    buf_init(&r.out);
    if (prov_run(gw, &r, NULL, &e) < 0)
        gw_log("session %s: %s", s->id, e.msg);
    buf_free(&r.out);
}
