#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cmd.h"
#include "clock.h"
#include "conn.h"
#include "fdio.h"
#include "log.h"
#include "request.h"
#include "stats.h"

/* A sync(2) running in a child; answered when the child is reaped. */
struct guest_sync {
    struct guest_sync *next;
    struct agent *a;
    ev_child child;
    struct conn *conn;          /* NULL once that connection closed */
    uint64_t id;
};

/* --- the token -------------------------------------------------------------- */

/* Constant time in the length of the secret, whatever the guess. */
static bool guest_token_eq(const char *want, size_t wn, const char *got, size_t gn)
{
    unsigned char d = wn != gn;
    for (size_t i = 0; i < wn; i++)
        d |= (unsigned char)(want[i] ^ (i < gn ? got[i] : 0));
    return d == 0;
}

int guest_check_auth(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    if (c->authed || wire_req_is(r, "auth"))
        return 0;
    int n = (int)(r->type_len > 32 ? 32 : r->type_len);
    /* one warning per connection; the rest at debug level (no log flooding) */
    if (!c->auth_refused)
        log_warn("conn %llu (%s): '%.*s' refused: not authenticated", (unsigned long long)c->serial,
                 c->peer, n, r->type);
    else
        log_debug("conn %llu: '%.*s' refused: not authenticated", (unsigned long long)c->serial,
                  n, r->type);
    c->auth_refused = true;
    return err_set(e, 0, "auth_required", "authenticate first: send auth {token}");
}

int guest_auth(struct conn *c, const struct wire_req *r, const msgpack_object *m, struct sa_err *e)
{
    const struct cfg *cfg = &c->a->cfg;
    const char *tok;
    size_t n;
    if (!wire_obj_bytes(wire_get(m, "token"), &tok, &n))
        return err_set(e, 0, "bad_request", "field 'token' (bin or str) is required");
    if (cfg->token_len && !guest_token_eq(cfg->token, cfg->token_len, tok, n)) {
        log_warn("conn %llu (%s): wrong token; closing", (unsigned long long)c->serial, c->peer);
        c->authed = false;
        conn_close_soon(c);     /* after this error reply */
        return err_set(e, 0, "auth_required", "wrong token");
    }
    c->authed = true;
    log_debug("conn %llu: authenticated", (unsigned long long)c->serial);
    req_reply_ok(c, r->id);
    return 0;
}

/* --- session defaults -------------------------------------------------------- */

/* A {str:str} map as one allocation: pointers ("K=V"), NULL, then the strings. */
static int guest_parse_env(const msgpack_object *o, char ***out, size_t *outn, struct sa_err *e)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return err_set(e, 0, "bad_request", "field 'env' must be a map of strings");
    size_t n = o->via.map.size, bytes = 0;
    if (n > GUEST_ENV_MAX)
        return err_set(e, 0, "bad_request", "env: at most %d entries", GUEST_ENV_MAX);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const char *k, *v;
        size_t kn, vn;
        if (!wire_obj_str(&kv->key, &k, &kn) || !wire_obj_str(&kv->val, &v, &vn))
            return err_set(e, 0, "bad_request", "env entries must be string to string");
        if (kn == 0 || memchr(k, '=', kn) || memchr(k, '\0', kn) || memchr(v, '\0', vn))
            return err_set(e, 0, "bad_request",
                           "env key must be non-empty without '=' or NUL; value without NUL");
        bytes += kn + vn + 2;
        if (bytes > GUEST_ENV_BYTES)
            return err_set(e, 0, "bad_request", "env: at most %u bytes", GUEST_ENV_BYTES);
    }
    char **v = xmalloc((n + 1) * sizeof(char *) + bytes);
    char *p = (char *)(v + n + 1);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_str *k = &o->via.map.ptr[i].key.via.str;
        const msgpack_object_str *s = &o->via.map.ptr[i].val.via.str;
        v[i] = p;
        memcpy(p, k->ptr, k->size);
        p[k->size] = '=';
        memcpy(p + k->size + 1, s->ptr, s->size);
        p[k->size + 1 + s->size] = '\0';
        p += k->size + s->size + 2;
    }
    v[n] = NULL;
    *out = v;
    *outn = n;
    return 0;
}

/* cwd made absolute (a relative one is below the workdir), allocated. */
static int guest_parse_cwd(struct agent *a, const char *cwd, char **out, struct sa_err *e)
{
    if (cwd[0] == '\0' || strlen(cwd) >= PATH_MAX)
        return err_set(e, 0, "bad_request", "field 'cwd' must be a path of 1..%d bytes",
                       PATH_MAX - 1);
    if (cwd[0] == '/') {
        *out = xstrdup(cwd);
        return 0;
    }
    size_t n = strlen(a->workdir) + 1 + strlen(cwd) + 1;
    *out = xmalloc(n);
    snprintf(*out, n, "%s/%s", a->workdir, cwd);
    return 0;
}

/* The user must exist; in dev mode only the agent's own user is possible. */
static int guest_check_user(struct agent *a, const char *user, struct sa_err *e)
{
    if (a->dev) {
        if (strcmp(user, a->default_user) != 0)
            return err_set(e, EPERM, NULL, "dev mode: the agent is not root and runs every "
                                           "command as itself (%s)", a->default_user);
        return 0;
    }
    const struct ident *id;
    return ident_lookup(&a->idents, user, &id, e);
}

int guest_set_defaults(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                       struct sa_err *e)
{
    struct agent *a = c->a;
    char *cwd = NULL, *user = NULL;
    const msgpack_object *env_o = wire_get(m, "env");
    if (wire_opt_cstr(m, "cwd", &a->zone, &cwd, e) < 0 ||
        wire_opt_cstr(m, "user", &a->zone, &user, e) < 0)
        return -1;
    if (user && guest_check_user(a, user, e) < 0)
        return -1;
    cleanup_free char *abs_cwd = NULL;
    if (cwd && guest_parse_cwd(a, cwd, &abs_cwd, e) < 0)
        return -1;
    char **env = NULL;
    size_t envc = 0;
    if (env_o && guest_parse_env(env_o, &env, &envc, e) < 0)
        return -1;
    /* everything is valid: apply */
    if (env_o) {
        free(a->default_env);
        a->default_env = env;
        a->default_envc = envc;
    }
    if (abs_cwd) {
        free(a->default_cwd);
        a->default_cwd = steal_pointer(&abs_cwd);
    }
    if (user) {
        free((char *)a->default_user);
        a->default_user = xstrdup(user);
    }
    log_info("session defaults: user %s, cwd %s, %zu env entries", a->default_user,
             agent_default_cwd(a), a->default_envc);
    req_reply_ok(c, r->id);
    return 0;
}

void guest_free(struct agent *a)
{
    while (a->syncs) {          /* at exit: the children finish on their own */
        struct guest_sync *s = a->syncs;
        a->syncs = s->next;
        ev_child_stop(a->loop, &s->child);
        free(s);
    }
    free(a->default_env);
    free(a->default_cwd);
    a->default_env = NULL;
    a->default_cwd = NULL;
    a->default_envc = 0;
}

/* --- snapshot / restore ------------------------------------------------------ */

/* sync(2) can take seconds on a VM with much dirty data: it runs in a forked
 * child, and the reply goes out when the child is reaped, so other commands'
 * output keeps flowing meanwhile. */

static void guest_sync_done_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct guest_sync *s = w->data;
    ev_child_stop(loop, w);
    for (struct guest_sync **p = &s->a->syncs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    if (s->conn) {
        s->conn->streams--;
        req_reply_ok(s->conn, s->id);
        conn_kick(s->conn);
        conn_idle_check(s->conn);
    }
    free(s);
}

int guest_sync(struct conn *c, const struct wire_req *r, const msgpack_object *m, struct sa_err *e)
{
    (void)m;
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
    s->conn = c;
    s->id = r->id;
    c->streams++;               /* a half-closed connection waits for this reply */
    ev_child_init(&s->child, guest_sync_done_cb, pid, 0);
    s->child.data = s;
    ev_child_start(c->a->loop, &s->child);
    s->next = c->a->syncs;
    c->a->syncs = s;
    return 0;
}

void guest_conn_closed(struct agent *a, struct conn *c)
{
    for (struct guest_sync *s = a->syncs; s; s = s->next)
        if (s->conn == c) {
            s->conn = NULL;
            c->streams--;
        }
}

int guest_set_time(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    uint64_t ms;
    if (!wire_obj_uint(wire_get(m, "time_ms"), &ms))
        return err_set(e, 0, "bad_request", "field 'time_ms' (an unsigned integer) is required");
    if (ms > GUEST_TIME_MAX_MS)
        return err_set(e, 0, "bad_request", "time_ms beyond the year 9999");
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000u), .tv_nsec = (long)(ms % 1000u) * 1000000L};
    int64_t before = (int64_t)clock_wall_ms();
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
        return err_sys(e, errno, "clock_settime");
    log_info("clock set by the host (moved by %+lld ms)", (long long)((int64_t)ms - before));
    req_reply_ok(c, r->id);
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
        log_debug("RNDADDENTROPY: %s; mixing in without credit", strerror(errno));
    explicit_bzero(info->buf, words * sizeof(__u32));
    return rc == 0;
}

int guest_add_entropy(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                      struct sa_err *e)
{
    const char *p;
    size_t n;
    if (!wire_obj_bytes(wire_get(m, "data"), &p, &n) || n < 1 || n > GUEST_ENTROPY_MAX)
        return err_set(e, 0, "bad_request", "field 'data' must be 1..%d bytes", GUEST_ENTROPY_MAX);
    cleanup_close int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_sys(e, errno, "open /dev/urandom");
    bool credited = guest_credit_entropy(fd, p, n);
    if (!credited && fd_write_all(fd, p, n) < 0)
        return err_sys(e, errno, "writing /dev/urandom");
    struct wire_enc w;
    wire_begin(&w, conn_out(c), 3);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_bool(&w, "credited", credited);
    wire_end(&w);
    return 0;
}

int guest_restored(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    (void)m;
    (void)e;
    struct agent *a = c->a;
    a->generation++;
    log_info("restored from a snapshot: generation %llu", (unsigned long long)a->generation);
    struct wire_enc w;
    wire_begin(&w, conn_out(c), 3);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "generation", a->generation);
    wire_end(&w);
    return 0;
}

/* --- shutdown ------------------------------------------------------------------ */

int guest_shutdown(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    (void)m;
    (void)e;
    char why[64];
    snprintf(why, sizeof why, "shutdown request (conn %llu)", (unsigned long long)c->serial);
    req_reply_ok(c, r->id);
    conn_kick(c);               /* the ok goes out before the loop may end */
    init_shutdown(c->a, why);
    return 0;
}

/* --- stats -------------------------------------------------------------------- */

/* Upper bound of one encoded entry of `commands` (5 keys, u64 values), in
 * bytes and in msgpack objects (the map, 5 keys, 5 values): the reply must
 * stay within WIRE_MAX_OBJECTS (PROTOCOL.md §1), whose other fields take
 * fewer than GUEST_STATS_OBJECTS_OTHER. */
#define GUEST_STATS_ENTRY_MAX 96
#define GUEST_STATS_ENTRY_OBJECTS 11
#define GUEST_STATS_OBJECTS_OTHER 64

static void guest_stats_cmd(struct wire_enc *w, const struct cmd *c)
{
    /* once the leader is reaped its pid may belong to someone else */
    pid_t pid = c->reaped ? 0 : c->pid;
    msgpack_pack_map(&w->pk, 5);
    wire_kv_uint(w, "cmd", c->id);
    wire_kv_uint(w, "pid", (uint64_t)c->pid);
    wire_kv_str(w, "state", "running");
    wire_kv_uint(w, "cpu_ms", cmd_cpu_ms(c, pid));
    wire_kv_uint(w, "rss", stats_rss(pid));
}

static void guest_stats_cmds(struct wire_enc *w, struct agent *a)
{
    uint32_t room = (a->cfg.max_frame - 1024) / GUEST_STATS_ENTRY_MAX, n = 0;
    uint32_t objects = (WIRE_MAX_OBJECTS - GUEST_STATS_OBJECTS_OTHER) / GUEST_STATS_ENTRY_OBJECTS;
    if (objects < room)
        room = objects;
    for (struct cmd *c = a->cmds; c && n < room; c = c->next)
        n += !c->done;
    wire_key(w, "commands");
    msgpack_pack_array(&w->pk, n);
    for (struct cmd *c = a->cmds; c && n > 0; c = c->next)
        if (!c->done) {
            guest_stats_cmd(w, c);
            n--;
        }
}

int guest_stats(struct conn *c, const struct wire_req *r, const msgpack_object *m, struct sa_err *e)
{
    (void)m;
    (void)e;
    struct agent *a = c->a;
    struct stats_sys s;
    stats_system(a->workdir, &s);
    struct wire_enc w;
    wire_begin(&w, conn_out(c), 16 + TUNNEL_STATS_KEYS);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "uptime_ms", s.uptime_ms);
    wire_key(&w, "load");
    msgpack_pack_array(&w.pk, 3);
    for (int i = 0; i < 3; i++)
        msgpack_pack_double(&w.pk, s.load[i]);
    wire_kv_uint(&w, "mem_total", s.mem_total);
    wire_kv_uint(&w, "mem_available", s.mem_available);
    wire_kv_uint(&w, "disk_total", s.disk_total);
    wire_kv_uint(&w, "disk_free", s.disk_free);
    wire_kv_uint(&w, "agent_rss", s.agent_rss);
    wire_kv_uint(&w, "agent_fds", s.agent_fds);
    wire_kv_uint(&w, "commands_running", a->ncmds_running);
    wire_kv_uint(&w, "commands_exited", a->ncmds_exited);
    wire_kv_uint(&w, "connections", a->nconns);
    wire_kv_uint(&w, "log_bytes", a->log_bytes);
    wire_kv_uint(&w, "generation", a->generation);
    tunnel_stats(&w, a);
    guest_stats_cmds(&w, a);
    wire_end(&w);
    return 0;
}

/* --- OOM ------------------------------------------------------------------------ */

void guest_oom_protect(void)
{
    if (geteuid() != 0)
        return;
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "-1000", 5) != 5)
        log_warn("oom_score_adj -1000: %s; the OOM killer may choose the agent", strerror(errno));
    if (fd >= 0)
        close(fd);
}
