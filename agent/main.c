/* main.c — wiring: settings, the loop, listeners, signals. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "fop.h"
#include "guest.h"
#include "init.h"
#include "listen.h"
#include "log.h"
#include "request.h"
#include "spawn.h"

static void read_boot_id(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r <= 0)
        return;
    out[r] = '\0';
    *strchrnul(out, '\n') = '\0';
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* The workdir, absolute. Dev mode creates it; a missing workdir is only
 * a warning otherwise (commands report ENOENT at chdir). */
static int agent_workdir(struct agent *a, struct sa_err *e)
{
    const char *w = a->cfg.workdir;
    if (a->dev && mkdir_p(w) < 0)
        return err_sys(e, errno, "creating workdir %s", w);
    char *real = realpath(w, NULL);
    if (real) {
        a->workdir = real;
        return 0;
    }
    if (w[0] != '/')
        return err_sys(e, errno, "workdir %s", w);
    log_warn("workdir %s: %s", w, err_str(errno));
    a->workdir = xstrdup(w);
    return 0;
}

static int agent_init(struct agent *a, struct sa_err *e)
{
    /* first: agent_free() destroys it whatever failed after */
    if (!msgpack_zone_init(&a->zone, WIRE_ZONE_CHUNK))
        return err_set(e, ENOMEM, NULL, "msgpack zone");
    a->loop = ev_default_loop(0);
    if (!a->loop)
        return err_set(e, 0, "internal", "cannot initialise libev");
    /* transport: frames reach the services through request.c */
    static const struct conn_ops req_ops = {req_opened, req_handle};
    conn_set_init(&a->conns, a->loop, &req_ops, a, a->cfg.max_frame, a->cfg.max_connections);
    lsn_init(&a->lsn, a->loop, &a->cfg, &a->conns);
    if (cfg_load_token(&a->cfg, e) < 0)
        return -1;
    guest_oom_protect();
    /* Many commands at once need many fds: commands get a->nofile back. */
    struct rlimit nofile;
    if (spawn_nofile_raise(&a->nofile, &nofile, e) < 0)
        log_warn("%s; commands get the same", e->msg);
    else
        log_info("RLIMIT_NOFILE %llu/%llu (commands get %llu/%llu)",
                 (unsigned long long)nofile.rlim_cur, (unsigned long long)nofile.rlim_max,
                 (unsigned long long)a->nofile.rlim_cur, (unsigned long long)a->nofile.rlim_max);
    a->dev = a->cfg.dev || geteuid() != 0;
    if (a->dev) {
        const struct ident *me;
        if (ident_lookup_uid(&a->idents, getuid(), &me, e) < 0)
            return -1;
        a->default_user = xstrdup(me->name);
    } else {
        a->default_user = xstrdup(a->cfg.user);
    }
    if (agent_workdir(a, e) < 0)
        return -1;
    read_boot_id(a->boot_id, sizeof a->boot_id);
    if (cmd_init(a, e) < 0)
        return -1;
    /* Orphans that daemonize out of a command come back to us, not to init;
     * libev reaps every child, so none stays a zombie. */
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_warn("PR_SET_CHILD_SUBREAPER: %s", err_str(errno));
    return 0;
}

static void agent_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct agent *a = w->data;
    log_info("signal %d: stopping; killing %u running commands", w->signum, a->ncmds_running);
    a->stopping = true;
    notify_send(&a->notify, "STOPPING=1");
    ev_break(loop, EVBREAK_ALL);
}

static void agent_free(struct agent *a)
{
    lsn_close_all(&a->lsn);
    cmd_kill_all(a, SIGKILL);
    conn_close_all(&a->conns);
    tunnel_close_all(a);
    fop_free_all(a);
    cmd_free_all(a);
    ident_cache_free(&a->idents);
    msgpack_zone_destroy(&a->zone);
    free((char *)a->workdir);
    free((char *)a->default_user);
    guest_free(a);
    init_free(a);
}

int main(int argc, char **argv)
{
    struct agent a;
    struct sa_err e;
    memset(&a, 0, sizeof a);
    err_clear(&e);

    int r = cfg_parse(&a.cfg, argc, argv, &e);
    if (r != 0 && getpid() == 1) {
        /* PID 1 never exits (the kernel would panic): carry on with defaults. */
        if (r < 0)
            fprintf(stderr, "sandbox-agent: %s; PID 1 goes on with the defaults\n", e.msg);
        cfg_free(&a.cfg);
        cfg_parse(&a.cfg, 1, argv, &e);
    } else if (r != 0) {
        if (r < 0)
            fprintf(stderr, "sandbox-agent: %s\n", e.msg);
        cfg_free(&a.cfg);
        return r < 0 ? 2 : 0;
    }
    log_set_level((enum log_level)a.cfg.log_level);
    init_setup(&a);
    notify_init(&a.notify);
    signal(SIGPIPE, SIG_IGN);

    if (agent_init(&a, &e) < 0)
        goto fail;
    for (int i = 0; i < a.cfg.nlisten; i++) {
        if (lsn_open(&a.lsn, a.cfg.listen[i], &e) == 0)
            continue;
        if (!a.init.pid1)
            goto fail;
        init_listen_later(&a, a.cfg.listen[i], &e);
    }
    init_start(&a);            /* the graceful shutdown; on SIGTERM, SIGINT, SIGPWR in init mode */
    if (!a.init.on) {          /* otherwise those stop at once (SIGKILL to the commands) */
        ev_signal_init(&a.sigterm, agent_stop_cb, SIGTERM);
        ev_signal_init(&a.sigint, agent_stop_cb, SIGINT);
        a.sigterm.data = a.sigint.data = &a;
        ev_signal_start(a.loop, &a.sigterm);
        ev_signal_start(a.loop, &a.sigint);
    }
    log_info("sandbox-agent %s ready: user %s, workdir %s%s", SA_VERSION, a.default_user,
             a.workdir, a.dev ? " (dev mode: commands run as the agent's user)" : "");
    notify_send(&a.notify, "READY=1");

    ev_run(a.loop, 0);
    if (a.init.pid1)
        init_hold(&a, "the event loop ended");
    agent_free(&a);
    return 0;
fail:
    log_err("%s", e.msg);
    if (a.init.pid1)
        init_hold(&a, e.msg);
    agent_free(&a);
    return 1;
}
