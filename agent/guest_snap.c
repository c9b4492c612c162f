/* guest_snap.c — snapshot and restore support: `sync` (in a child), the
 * clock (`set_time`), entropy (`add_entropy`) and the generation
 * (`restored`) (docs/agent.md "Snapshot and restore"). */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "clock.h"
#include "conn.h"
#include "fdio.h"
#include "log.h"

/* A sync(2) running in a child; answered when the child is reaped. */
struct guest_sync {
    LIST_ENTRY(guest_sync) link; /* in a->syncs */
    struct agent *a;
    ev_child child;
    struct conn_pending pend;   /* holds its connection; off it once that closed */
};

/* Its connection closed: the sync goes on, its reply to nobody. */
static const struct conn_pending_ops guest_sync_ops = {NULL, NULL};

/* sync(2) can take seconds on a VM with much dirty data: it runs in a forked
 * child, and the reply goes out when the child is reaped, so other commands'
 * output keeps flowing meanwhile. */

static void guest_sync_done_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct guest_sync *s = w->data;
    ev_child_stop(loop, w);
    LIST_REMOVE(s, link);
    struct conn *c = s->pend.conn;
    if (c) {
        wire_msg_ok(conn_out(c), s->pend.req_id);
        conn_pending_remove(&s->pend);
        conn_kick(c);
    }
    free(s);
}

int guest_sync(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    pid_t pid = fork();
    if (pid < 0)
        return err_sys(e, errno, "fork for sync");
    if (pid == 0) {
        /* hold no connection, pipe or pty of the agent's while sync() runs
         * (seconds, with much dirty data): a closed connection must close */
        if (syscall(SYS_close_range, 0u, ~0u, 0u) < 0)
            for (int fd = 0; fd < 65536; fd++)
                close(fd);
        sync();
        _exit(0);
    }
    struct guest_sync *s = xcalloc(1, sizeof *s);
    s->a = c->a;
    /* holds: a half-closed connection waits for this reply */
    conn_pending_add(c, &s->pend, &guest_sync_ops, r->id, true);
    ev_child_init(&s->child, guest_sync_done_cb, pid, 0);
    s->child.data = s;
    ev_child_start(c->a->loop, &s->child);
    LIST_INSERT_HEAD(&c->a->syncs, s, link);
    return 0;
}

int guest_set_time(struct conn *c, const struct wire_req *r, uint64_t ms, struct sa_err *e)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000u), .tv_nsec = (long)(ms % 1000u) * 1000000L};
    int64_t before = (int64_t)clock_wall_ms();
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
        return err_sys(e, errno, "clock_settime");
    log_info("clock set by the host (moved by %+lld ms)", (long long)((int64_t)ms - before));
    wire_msg_ok(conn_out(c), r->id);
    return 0;
}

/* Add and credit the bytes to the kernel's pool (needs CAP_SYS_ADMIN). */
static bool guest_credit_entropy(int fd, const char *p, size_t n)
{
    size_t words = (n + sizeof(__u32) - 1) / sizeof(__u32);
    cleanup_free struct rand_pool_info *info = xcalloc(1, sizeof *info + words * sizeof(__u32));
    info->entropy_count = (int)(n * 8);
    info->buf_size = (int)n;
    memcpy(info->buf, p, n);
    int rc = ioctl(fd, RNDADDENTROPY, info);
    if (rc < 0)
        log_debug("RNDADDENTROPY: %s; mixing in without credit", err_str(errno));
    explicit_bzero(info->buf, words * sizeof(__u32));
    return rc == 0;
}

int guest_add_entropy(struct conn *c, const struct wire_req *r, const char *p, size_t n,
                      struct sa_err *e)
{
    cleanup_close int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_sys(e, errno, "open /dev/urandom");
    bool credited = guest_credit_entropy(fd, p, n);
    if (!credited && fd_write_all(fd, p, n) < 0)
        return err_sys(e, errno, "writing /dev/urandom");
    struct wire_enc w;
    wire_begin(&w, conn_out(c));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_bool(&w, "credited", credited);
    wire_end(&w);
    return 0;
}

int guest_restored(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    (void)e;
    struct agent *a = c->a;
    a->generation++;
    log_info("restored from a snapshot: generation %llu", (unsigned long long)a->generation);
    struct wire_enc w;
    wire_begin(&w, conn_out(c));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "generation", a->generation);
    wire_end(&w);
    return 0;
}

void guest_syncs_free(struct agent *a)
{
    struct guest_sync *s;
    while ((s = LIST_FIRST(&a->syncs)) != NULL) {  /* at exit: the children finish alone */
        LIST_REMOVE(s, link);
        conn_pending_remove(&s->pend);
        ev_child_stop(a->loop, &s->child);
        free(s);
    }
}
