/* init.c — PID-1 duties: system mounts, hostname, loopback, kmsg logging,
 * the kernel command line, graceful shutdown, never exiting (init.h). */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "listen.h"
#include "log.h"

struct init_mount {
    const char *target, *fstype;
    unsigned long flags;
    const char *data;
};

/* In order: a later mount point may live on an earlier file system. */
static const struct init_mount init_mounts[] = {
    {"/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,gid=5,mode=620"},
    {"/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"},
    {"/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
};

/* Symlinks devtmpfs does not provide; created only when the name is free. */
static const char *const init_links[][2] = {
    {"/dev/ptmx", "pts/ptmx"},
    {"/dev/fd", "/proc/self/fd"},
    {"/dev/stdin", "/proc/self/fd/0"},
    {"/dev/stdout", "/proc/self/fd/1"},
    {"/dev/stderr", "/proc/self/fd/2"},
};

/* A mount point: a different device than its parent directory (enough for
 * the fresh file systems init mounts; a same-device bind mount looks absent). */
static bool init_is_mountpoint(const char *path)
{
    char parent[256];
    struct stat st, pst;
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (!slash)
        return false;
    if (slash == parent)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (stat(path, &st) < 0 || stat(parent, &pst) < 0)
        return false;
    return st.st_dev != pst.st_dev;
}

static void init_mount_one(const struct init_mount *m)
{
    if (init_is_mountpoint(m->target)) {
        log_debug("init: %s already mounted", m->target);
        return;
    }
    if (mkdir(m->target, 0755) < 0 && errno != EEXIST) {
        log_warn("init: mkdir %s: %s", m->target, err_str(errno));
        return;
    }
    if (mount(m->fstype, m->target, m->fstype, m->flags, m->data) < 0)
        log_warn("init: mount %s on %s: %s", m->fstype, m->target, err_str(errno));
    else
        log_info("init: mounted %s on %s", m->fstype, m->target);
}

static void init_mount_all(void)
{
    for (size_t i = 0; i < sizeof init_mounts / sizeof init_mounts[0]; i++)
        init_mount_one(&init_mounts[i]);
    for (size_t i = 0; i < sizeof init_links / sizeof init_links[0]; i++) {
        struct stat st;
        if (lstat(init_links[i][0], &st) == 0 || errno != ENOENT)
            continue;
        if (symlink(init_links[i][1], init_links[i][0]) < 0)
            log_warn("init: symlink %s: %s", init_links[i][0], err_str(errno));
    }
}

/* The kernel may start init with fds 0-2 closed (no /dev/console in the
 * initramfs): fill them with /dev/null so that no socket or pipe lands there. */
static void init_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int n = open("/dev/null", O_RDWR | O_NOCTTY);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

static void init_hostname(const char *name)
{
    if (sethostname(name, strlen(name)) < 0)
        log_warn("init: sethostname %s: %s", name, err_str(errno));
}

static int init_loopback(struct sa_err *e)
{
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_sys(e, errno, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return err_sys(e, errno, "SIOCGIFFLAGS lo");
    if (ifr.ifr_flags & IFF_UP)
        return 0;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return err_sys(e, errno, "SIOCSIFFLAGS lo");
    log_info("init: loopback up");
    return 0;
}

/* sandbox_agent.modules=A.ko,B.ko: load them in order (finit_module), for
 * kernels whose drivers (virtio-net, ...) are modules and that have no
 * initramfs tooling of their own. A failure is logged; EEXIST is fine. */
static void init_modules(const char *list)
{
    cleanup_free char *copy = xstrdup(list);
    char *save = NULL;
    for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        cleanup_close int fd = open(m, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            log_warn("init: module %s: %s", m, err_str(errno));
            continue;
        }
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
            log_warn("init: module %s: %s", m, err_str(errno));
        else
            log_info("init: module %s loaded", m);
    }
}

static int set_in_addr(struct sockaddr *sa, const char *text)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    memset(in, 0, sizeof *in);
    in->sin_family = AF_INET;
    return inet_pton(AF_INET, text, &in->sin_addr) == 1 ? 0 : -1;
}

/* sandbox_agent.net=IFACE,ADDR/PREFIX[,GATEWAY] (IPv4): the interface up
 * with that address, and a default route through GATEWAY — for kernels
 * without ip= (CONFIG_IP_PNP) and images without a network manager. The
 * interface may appear a moment after its driver loads: up to
 * INIT_NET_WAIT_MS. */
#define INIT_NET_WAIT_MS 3000
static int init_net(const char *spec, struct sa_err *e)
{
    char ifname[IFNAMSIZ], addr[64], gw[64] = "";
    int prefix;
    int k = sscanf(spec, "%15[^,],%63[0-9.]/%d,%63[0-9.]", ifname, addr, &prefix, gw);
    if (k < 3 || prefix < 0 || prefix > 32)
        return err_set(e, EINVAL, NULL, "sandbox_agent.net=%s: expected IFACE,ADDR/PREFIX[,GATEWAY]",
                       spec);
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_sys(e, errno, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    for (int waited = 0; ioctl(s, SIOCGIFFLAGS, &ifr) < 0; waited += 20) {
        if (errno != ENODEV || waited >= INIT_NET_WAIT_MS)
            return err_sys(e, errno, "%s", ifname);
        usleep(20 * 1000);
    }
    if (set_in_addr(&ifr.ifr_addr, addr) < 0)
        return err_set(e, EINVAL, NULL, "sandbox_agent.net: bad address %s", addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
        return err_sys(e, errno, "SIOCSIFADDR %s", ifname);
    struct sockaddr_in *mask = (struct sockaddr_in *)&ifr.ifr_netmask;
    memset(mask, 0, sizeof *mask);
    mask->sin_family = AF_INET;
    mask->sin_addr.s_addr = htonl(prefix ? ~0u << (32 - prefix) : 0);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
        return err_sys(e, errno, "SIOCSIFNETMASK %s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return err_sys(e, errno, "SIOCGIFFLAGS %s", ifname);
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return err_sys(e, errno, "SIOCSIFFLAGS %s", ifname);
    if (k == 4) {
        struct rtentry rt;
        memset(&rt, 0, sizeof rt);
        set_in_addr(&rt.rt_dst, "0.0.0.0");
        set_in_addr(&rt.rt_genmask, "0.0.0.0");
        if (set_in_addr(&rt.rt_gateway, gw) < 0)
            return err_set(e, EINVAL, NULL, "sandbox_agent.net: bad gateway %s", gw);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = ifname;
        if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
            return err_sys(e, errno, "default route via %s", gw);
    }
    log_info("init: %s up, %s/%d%s%s", ifname, addr, prefix, k == 4 ? " via " : "", gw);
    return 0;
}

static char *init_read_cmdline(void)
{
    cleanup_close int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    buf[n] = '\0';
    return buf;
}

void init_setup(struct agent *a)
{
    struct init_state *st = &a->init;
    struct sa_err e;
    st->pid1 = getpid() == 1;
    st->on = st->pid1 || a->cfg.init;
    st->system = st->pid1 && !a->cfg.no_mount;
    st->phase = INIT_RUNNING;
    if (!st->on)
        return;
    if (st->system)
        init_mount_all();
    if (st->pid1)
        init_std_fds();
    if (st->system) {
        int kfd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (kfd >= 0)
            log_set_kmsg(kfd);
        else
            log_warn("init: /dev/kmsg: %s; logging to stderr", err_str(errno));
    }
    cleanup_free char *cmdline = init_read_cmdline();
    if (!cmdline)
        log_warn("init: /proc/cmdline: %s", err_str(errno));
    else if (cfg_apply_cmdline(&a->cfg, cmdline, &e) < 0)
        log_warn("kernel command line: %s", e.msg);
    if (st->system) {
        init_hostname(a->cfg.hostname);
        if (init_loopback(&e) < 0)
            log_warn("init: loopback: %s", e.msg);
        if (a->cfg.modules)
            init_modules(a->cfg.modules);
        if (a->cfg.net && init_net(a->cfg.net, &e) < 0)
            log_warn("init: network: %s", e.msg);
    }
    log_info("init mode%s%s: shutdown grace %u ms", st->pid1 ? " as PID 1" : "",
             st->pid1 && !st->system ? " (--no-mount: no mounts, hostname, loopback, kmsg)" : "",
             a->cfg.grace_ms);
}

/* ---- shutdown ---------------------------------------------------------- */

static void init_power_off(struct agent *a)
{
    log_info("shutdown: powering off");
    reboot(RB_POWER_OFF);
    log_err("shutdown: reboot(POWER_OFF): %s; trying halt", err_str(errno));
    reboot(RB_HALT_SYSTEM);
    log_err("shutdown: reboot(HALT): %s; retrying in 5 s (PID 1 never exits)", err_str(errno));
    ev_timer_set(&a->init.phase_w, 5., 0.);
    ev_timer_start(a->loop, &a->init.phase_w);
}

/* A systemd service (the shipped unit): started by PID 1 with $NOTIFY_SOCKET
 * (Type=notify), and PID 1 is systemd — sd_booted(3)'s test, the directory
 * /run/systemd/system. All three, so that an agent run by hand or by a test
 * never powers off the machine it runs on. */
static bool init_systemd_service(const struct agent *a)
{
    struct stat sb;
    return a->notify.on && getppid() == 1 && stat("/run/systemd/system", &sb) == 0 &&
           S_ISDIR(sb.st_mode);
}

static void init_down(struct agent *a);

/* Before sync and power-off: the last exits and replies reach the clients,
 * for at most INIT_FLUSH_S. */
static void init_flush(struct agent *a)
{
    struct init_state *st = &a->init;
    st->phase = INIT_FLUSH;
    if (conn_all_flushed(&a->conns)) {
        init_down(a);
        return;
    }
    log_info("shutdown: letting connections take their output (at most %.0f ms)",
             INIT_FLUSH_S * 1000);
    ev_timer_stop(a->loop, &st->phase_w);
    ev_timer_set(&st->phase_w, INIT_FLUSH_S, 0.);
    ev_timer_start(a->loop, &st->phase_w);
}

static void init_down(struct agent *a)
{
    struct init_state *st = &a->init;
    st->phase = INIT_DOWN;
    ev_check_stop(a->loop, &st->idle_w);
    ev_timer_stop(a->loop, &st->phase_w);
    if (st->pid1)
        cg_free(&a->cg);            /* remove our (now empty) cgroups: no exit path will */
    log_info("shutdown: sync");
    sync();
    if (st->pid1) {
        init_power_off(a);
        return;
    }
    if (init_systemd_service(a)) {
        /* The VM must go down, not just the agent: systemd's own poweroff,
         * which stops every unit (this one has already exited 0, so
         * Restart=on-failure leaves it stopped). */
        log_info("shutdown: asking systemd (PID 1) to power off");
        if (kill(1, INIT_SYSTEMD_POWEROFF_SIG) < 0)
            log_err("shutdown: signal %d to PID 1: %s; the VM stays up", INIT_SYSTEMD_POWEROFF_SIG,
                    err_str(errno));
    }
    log_info("shutdown: done; exiting (%s)", st->on ? "--init, not PID 1" : "not PID 1");
    ev_break(a->loop, EVBREAK_ALL);
}

static void init_kill(struct agent *a)
{
    struct init_state *st = &a->init;
    st->phase = INIT_KILLED;
    if (a->ncmds_running)
        log_info("shutdown: grace period over; SIGKILL to %u commands", a->ncmds_running);
    cmd_kill_all(a, SIGKILL);
    if (st->pid1)
        kill(-1, SIGKILL);          /* everything else in the system (or PID namespace) */
    ev_timer_stop(a->loop, &st->phase_w);
    ev_timer_set(&st->phase_w, INIT_FINAL_S, 0.);
    ev_timer_start(a->loop, &st->phase_w);
    if (a->ncmds_running == 0)
        init_flush(a);
}

static void init_phase_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    switch (a->init.phase) {
    case INIT_GRACE: init_kill(a); break;
    case INIT_KILLED:
        log_warn("shutdown: %u commands not reported after SIGKILL", a->ncmds_running);
        init_flush(a);
        break;
    case INIT_FLUSH:
        log_warn("shutdown: connections still owed output after %.0f ms; going on",
                 INIT_FLUSH_S * 1000);
        init_down(a);
        break;
    case INIT_DOWN: init_power_off(a); break;
    case INIT_RUNNING: break;
    }
}

/* After every loop iteration of a shutdown: no command left, next phase. */
static void init_idle_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    if (a->init.phase == INIT_FLUSH) {
        if (conn_all_flushed(&a->conns))
            init_down(a);
        return;
    }
    if (a->ncmds_running != 0)
        return;
    if (a->init.phase == INIT_GRACE)
        init_kill(a);
    else if (a->init.phase == INIT_KILLED)
        init_flush(a);
}

void init_shutdown(struct agent *a, const char *why)
{
    struct init_state *st = &a->init;
    if (st->phase != INIT_RUNNING) {
        log_info("%s: shutdown already under way", why);
        return;
    }
    log_info("%s: shutting down; SIGTERM to %u running commands, grace %u ms", why,
             a->ncmds_running, a->cfg.grace_ms);
    st->phase = INIT_GRACE;
    a->stopping = true;
    notify_send(&a->notify, "STOPPING=1");
    /* No new connections; the open ones keep getting output and exits. */
    lsn_close_all(&a->lsn);
    ev_timer_stop(a->loop, &st->retry_w);
    cmd_kill_all(a, SIGTERM);
    if (st->pid1)
        kill(-1, SIGTERM);
    ev_timer_set(&st->phase_w, (ev_tstamp)a->cfg.grace_ms / 1000., 0.);
    ev_timer_start(a->loop, &st->phase_w);
    ev_check_start(a->loop, &st->idle_w);
    if (a->ncmds_running == 0)
        init_kill(a);
}

static void init_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    char why[32];
    snprintf(why, sizeof why, "signal %d", w->signum);
    init_shutdown(w->data, why);
}

void init_start(struct agent *a)
{
    static const int sigs[3] = {SIGTERM, SIGINT, SIGPWR};
    struct init_state *st = &a->init;
    ev_init(&st->phase_w, init_phase_cb);
    st->phase_w.data = a;
    ev_check_init(&st->idle_w, init_idle_cb);
    st->idle_w.data = a;
    if (!st->on)
        return;
    for (int i = 0; i < 3; i++) {
        ev_signal_init(&st->sig[i], init_signal_cb, sigs[i]);
        st->sig[i].data = a;
        ev_signal_start(a->loop, &st->sig[i]);
    }
}

/* ---- listeners that fail (PID 1) ----------------------------------------- */

static void init_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct agent *a = w->data;
    struct init_state *st = &a->init;
    struct sa_err e;
    int kept = 0;
    for (int i = 0; i < st->npending; i++) {
        if (lsn_open(&a->lsn, st->pending[i], &e) == 0)
            log_info("listening on %s (after retrying)", st->pending[i]);
        else
            st->pending[kept++] = st->pending[i];
    }
    st->npending = kept;
    if (kept == 0)
        ev_timer_stop(loop, w);
}

void init_listen_later(struct agent *a, const char *addr, const struct sa_err *e)
{
    struct init_state *st = &a->init;
    log_err("%s; PID 1 does not exit: retrying every %.0f s", e->msg, INIT_RETRY_S);
    if (st->npending == CFG_MAX_LISTEN)
        return;
    st->pending[st->npending++] = addr;
    if (!ev_is_active(&st->retry_w)) {
        ev_timer_init(&st->retry_w, init_retry_cb, INIT_RETRY_S, INIT_RETRY_S);
        st->retry_w.data = a;
        ev_timer_start(a->loop, &st->retry_w);
    }
}

/* ---- the last resort of PID 1 -------------------------------------------- */

static void init_reap_all(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* Wait up to ms for a signal of set, reaping meanwhile; the signal or 0. */
static int init_wait_signal(const sigset_t *set, long ms)
{
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        init_reap_all();
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (end.tv_sec - now.tv_sec) * 1000L + (end.tv_nsec - now.tv_nsec) / 1000000L;
        if (left <= 0)
            return 0;
        struct timespec ts = {left > 1000 ? 1 : 0, left > 1000 ? 0 : left * 1000000L};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0 && sig != SIGCHLD)
            return sig;
    }
}

void init_hold(struct agent *a, const char *why)
{
    log_err("cannot serve: %s; staying up as PID 1 (reaping only) until SIGTERM", why);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPWR);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        int sig = init_wait_signal(&set, 60000);
        if (sig == 0)
            continue;
        log_info("signal %d: shutting down", sig);
        kill(-1, SIGTERM);
        init_wait_signal(&set, a->cfg.grace_ms);
        kill(-1, SIGKILL);
        init_reap_all();
        sync();
        log_info("shutdown: powering off");
        reboot(RB_POWER_OFF);
        log_err("shutdown: reboot(POWER_OFF): %s", err_str(errno));
    }
}

void init_free(struct agent *a)
{
    struct init_state *st = &a->init;
    if (a->loop) {
        for (int i = 0; i < 3; i++)
            if (st->on)
                ev_signal_stop(a->loop, &st->sig[i]);
        ev_timer_stop(a->loop, &st->phase_w);
        ev_check_stop(a->loop, &st->idle_w);
        ev_timer_stop(a->loop, &st->retry_w);
    }
    cfg_free(&a->cfg);
}
