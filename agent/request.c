#include "request.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cmd.h"
#include "clock.h"
#include "conn.h"
#include "fop.h"
#include "guest.h"
#include "log.h"
#include "msg.h"
#include "tunnel.h"

typedef int (*req_fn)(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                      struct sa_err *e);

void req_opened(struct conn *c)
{
    struct agent *a = c->a;
    c->authed = a->cfg.token_len == 0;   /* else after `auth` (guest_auth.c) */
    const char *caps[16];
    size_t n = 0;
    static const char *const base[] = {"exec", "stdin", "signal", "lifecycle", "pty", "guest",
                                       "files", "fs", "gzip"};
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        caps[n++] = base[i];
    if (a->cg.enabled)
        caps[n++] = "cgroup";
    if (a->cfg.tunnel != CFG_TUNNEL_OFF)
        caps[n++] = "tunnel";
    if (SA_HAVE_ZSTD)                   /* the linked libarchive reads zstd (CMakeLists.txt) */
        caps[n++] = "zstd";
    caps[n] = NULL;
    char agent[64];
    snprintf(agent, sizeof agent, "sandbox-agent %s", SA_VERSION);
    struct wire_hello h = {
        .agent = agent,
        .caps = caps,
        .boot_id = a->boot_id,
        .user = a->default_user,
        .workdir = agent_default_cwd(a),
        .dev = a->dev,
        .max_frame = a->cfg.max_frame,
        .stdin_window = a->cfg.stdin_window,
        .generation = a->generation,
        .auth_required = a->cfg.token_len > 0,
        .insecure_tcp = a->lsn.insecure_tcp,
    };
    wire_msg_hello(conn_out(c), &h);
}


static int req_ping(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    (void)m;
    (void)e;
    struct wire_enc w;
    wire_begin(&w, conn_out(c));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "time_ms", clock_wall_ms());
    wire_end(&w);
    return 0;
}

/* --- commands ----------------------------------------------------------------- */

static int req_exec(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    struct wire_exec_req x;
    if (wire_parse_exec(m, &c->a->zone, &x, e) < 0)
        return -1;
    return cmd_exec(c, r->id, &x, e);
}

static int req_cmd_id(const msgpack_object *m, uint64_t *id, struct sa_err *e)
{
    if (!wire_obj_uint(wire_get(m, "cmd"), id))
        return err_set(e, 0, "bad_request", "field 'cmd' (an unsigned integer) is required");
    return 0;
}

static int req_stdin(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                     struct sa_err *e)
{
    uint64_t id;
    const char *data = "";
    size_t n = 0;
    bool eof = false;
    if (req_cmd_id(m, &id, e) < 0 || wire_opt_bytes(m, "data", &data, &n, e) < 0 ||
        wire_opt_bool(m, "eof", &eof, e) < 0)
        return -1;
    return cmd_stdin(c, r->id, id, data, n, eof, e);
}

static int req_close_stdin(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                           struct sa_err *e)
{
    uint64_t id;
    if (req_cmd_id(m, &id, e) < 0)
        return -1;
    return cmd_stdin(c, r->id, id, "", 0, true, e);
}

static int req_signal(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                      struct sa_err *e)
{
    uint64_t id, sig = SIGTERM;
    bool group = true;
    if (req_cmd_id(m, &id, e) < 0 || wire_opt_uint(m, "signal", &sig, e) < 0 ||
        wire_opt_bool(m, "group", &group, e) < 0)
        return -1;
    if (sig < 1 || sig > 64)
        return err_set(e, EINVAL, NULL, "signal %llu is not 1..64", (unsigned long long)sig);
    if (cmd_signal(c->a, id, (int)sig, group, e) < 0)
        return -1;
    wire_msg_ok(conn_out(c), r->id);
    return 0;
}

static int req_get(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    uint64_t id;
    if (req_cmd_id(m, &id, e) < 0)
        return -1;
    return cmd_get(c, r->id, id, e);
}

static int req_list(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    bool running = false;
    uint64_t cursor = 0, limit = 0;
    if (wire_opt_bool(m, "running", &running, e) < 0 ||
        wire_opt_uint(m, "cursor", &cursor, e) < 0 || wire_opt_uint(m, "limit", &limit, e) < 0)
        return -1;
    cmd_list(c, r->id, running, cursor, limit);
    return 0;
}

static int req_wait(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    uint64_t id;
    if (req_cmd_id(m, &id, e) < 0)
        return -1;
    return cmd_wait(c, r->id, id, e);
}

static int req_logs(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    uint64_t id, from = 0;
    bool follow = false;
    if (req_cmd_id(m, &id, e) < 0 || wire_opt_uint(m, "from", &from, e) < 0 ||
        wire_opt_bool(m, "follow", &follow, e) < 0)
        return -1;
    return cmd_logs(c, r->id, id, from, follow, e);
}

static int req_release(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                       struct sa_err *e)
{
    uint64_t id = 0, n;
    bool all = false;
    if (wire_opt_bool(m, "all", &all, e) < 0)
        return -1;
    if (!all && req_cmd_id(m, &id, e) < 0)
        return err_set(e, 0, "bad_request", "field 'cmd' (an unsigned integer) or 'all' is required");
    if (cmd_release(c->a, all, id, &n, e) < 0)
        return -1;
    struct wire_enc w;
    wire_begin(&w, conn_out(c));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "released", n);
    wire_end(&w);
    return 0;
}

static int req_resize(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                      struct sa_err *e)
{
    uint64_t id, rows = 0, cols = 0;
    if (req_cmd_id(m, &id, e) < 0 || wire_opt_uint(m, "rows", &rows, e) < 0 ||
        wire_opt_uint(m, "cols", &cols, e) < 0)
        return -1;
    if (rows < 1 || cols < 1 || rows > 65535 || cols > 65535)
        return err_set(e, 0, "bad_request", "rows and cols must be 1..65535");
    if (cmd_resize(c->a, id, (uint16_t)rows, (uint16_t)cols, e) < 0)
        return -1;
    wire_msg_ok(conn_out(c), r->id);
    return 0;
}

/* --- file operations ------------------------------------------------------- */

static const struct {
    const char *type;
    enum fop_kind kind;
} req_fop_types[] = {
    {"upload", FOP_UPLOAD}, {"download", FOP_DOWNLOAD}, {"read", FOP_READ},
    {"write", FOP_WRITE}, {"stat", FOP_STAT}, {"ls", FOP_LS}, {"mkdir", FOP_MKDIR},
    {"remove", FOP_REMOVE}, {"rename", FOP_RENAME}, {"chmod", FOP_CHMOD},
};

static int req_need_str(const msgpack_object *m, const char *key, msgpack_zone *z,
                        const char **v, struct sa_err *e)
{
    char *s = NULL;
    if (wire_opt_cstr(m, key, z, &s, e) < 0)
        return -1;
    if (!s || !s[0])
        return err_set(e, 0, "bad_request", "field '%s' (a non-empty string) is required", key);
    *v = s;
    return 0;
}

static int req_opt_mode(const msgpack_object *m, struct fop_job *j, bool required,
                        struct sa_err *e)
{
    uint64_t mode = 0;
    j->has_mode = wire_get(m, "mode") != NULL;
    if (required && !j->has_mode)
        return err_set(e, 0, "bad_request", "field 'mode' (an unsigned integer) is required");
    if (wire_opt_uint(m, "mode", &mode, e) < 0)
        return -1;
    if (mode > 07777)
        return err_set(e, 0, "bad_request", "mode %llo is not within 07777",
                       (unsigned long long)mode);
    j->mode = (uint32_t)mode;
    return 0;
}

static int req_fop_paths(const msgpack_object *m, msgpack_zone *z, struct fop_job *j,
                         struct sa_err *e)
{
    const msgpack_object *o = wire_get(m, "paths");
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0)
        return err_set(e, 0, "bad_request", "field 'paths' (a non-empty array of strings) is "
                                            "required");
    j->npaths = o->via.array.size;
    j->paths = msgpack_zone_malloc(z, (j->npaths + 1) * sizeof *j->paths);
    if (!j->paths)
        return err_set(e, ENOMEM, NULL, "out of memory");
    for (size_t i = 0; i < j->npaths; i++) {
        j->paths[i] = wire_obj_cstr(&o->via.array.ptr[i], z);
        if (!j->paths[i] || !j->paths[i][0])
            return err_set(e, 0, "bad_request", "paths[%zu] is not a non-empty string", i);
    }
    j->paths[j->npaths] = NULL;
    return 0;
}

/* Fill j from the request's fields for its kind. */
static int req_fop_fields(const msgpack_object *m, msgpack_zone *z, struct fop_job *j,
                          struct sa_err *e)
{
    switch (j->kind) {
    case FOP_UPLOAD:
        j->path = "/";
        if (wire_opt_cstr(m, "dest", z, (char **)&j->path, e) < 0 ||
            wire_opt_bool(m, "parents", &j->parents, e) < 0 ||
            wire_opt_bool(m, "keep_owners", &j->keep_owners, e) < 0 ||
            wire_opt_bool(m, "allow_devices", &j->allow_devices, e) < 0)
            return -1;
        if (!j->path[0])
            return err_set(e, 0, "bad_request", "field 'dest' is empty");
        return 0;
    case FOP_DOWNLOAD:
        return req_fop_paths(m, z, j, e) < 0 ||
               wire_opt_bool(m, "gzip", &j->gzip, e) < 0 ? -1 : 0;
    case FOP_READ:
        j->has_length = wire_get(m, "length") != NULL;
        return req_need_str(m, "path", z, &j->path, e) < 0 ||
               wire_opt_uint(m, "offset", &j->offset, e) < 0 ||
               wire_opt_uint(m, "length", &j->length, e) < 0 ? -1 : 0;
    case FOP_WRITE:
        return req_need_str(m, "path", z, &j->path, e) < 0 || req_opt_mode(m, j, false, e) < 0 ||
               wire_opt_bool(m, "append", &j->append, e) < 0 ||
               wire_opt_bool(m, "parents", &j->parents, e) < 0 ? -1 : 0;
    case FOP_STAT:
        return req_need_str(m, "path", z, &j->path, e) < 0 ||
               wire_opt_bool(m, "follow", &j->follow, e) < 0 ? -1 : 0;
    case FOP_LS:
        return req_need_str(m, "path", z, &j->path, e);
    case FOP_MKDIR:
        if (req_need_str(m, "path", z, &j->path, e) < 0 || req_opt_mode(m, j, false, e) < 0 ||
            wire_opt_bool(m, "parents", &j->parents, e) < 0)
            return -1;
        if (!j->has_mode)
            j->mode = 0755;
        return 0;
    case FOP_REMOVE:
        return req_need_str(m, "path", z, &j->path, e) < 0 ||
               wire_opt_bool(m, "recursive", &j->recursive, e) < 0 ||
               wire_opt_bool(m, "force", &j->force, e) < 0 ? -1 : 0;
    case FOP_RENAME:
        j->overwrite = true;
        return req_need_str(m, "from", z, &j->path, e) < 0 ||
               req_need_str(m, "to", z, &j->path2, e) < 0 ||
               wire_opt_bool(m, "overwrite", &j->overwrite, e) < 0 ? -1 : 0;
    case FOP_CHMOD:
        return req_need_str(m, "path", z, &j->path, e) < 0 ||
               req_opt_mode(m, j, true, e) < 0 ? -1 : 0;
    }
    return err_set(e, 0, "internal", "unknown file operation");
}

static int req_fop(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e)
{
    msgpack_zone *z = &c->a->zone;
    struct fop_req q;
    memset(&q, 0, sizeof q);
    size_t k = 0;
    size_t nk = sizeof req_fop_types / sizeof *req_fop_types;
    while (k < nk && !wire_req_is(r, req_fop_types[k].type))
        k++;
    if (k == nk)
        return err_set(e, 0, "internal", "not a file operation");
    if (!r->has_id)
        return err_set(e, 0, "bad_request", "field 'id' is required");
    q.job.kind = req_fop_types[k].kind;
    char *user = NULL;
    if (wire_opt_cstr(m, "user", z, &user, e) < 0 || wire_opt_bool(m, "sudo", &q.sudo, e) < 0 ||
        req_fop_fields(m, z, &q.job, e) < 0)
        return -1;
    q.user = user;
    return fop_request(c, r, &q, e);
}

static int req_chunk(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                     struct sa_err *e)
{
    struct fop_chunk_req q = {.data = ""};
    if (!wire_obj_uint(wire_get(m, "ref"), &q.ref))
        return err_set(e, 0, "bad_request", "field 'ref' (an unsigned integer) is required");
    if (wire_opt_bytes(m, "data", &q.data, &q.n, e) < 0 || wire_opt_bool(m, "eof", &q.eof, e) < 0)
        return -1;
    return fop_chunk(c, r, &q, e);
}

/* --- guest duties -------------------------------------------------------------- */

static int req_auth(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    const char *tok;
    size_t n;
    if (!wire_obj_bytes(wire_get(m, "token"), &tok, &n))
        return err_set(e, 0, "bad_request", "field 'token' (bin or str) is required");
    return guest_auth(c, r, tok, n, e);
}

/* A {str:str} map as one allocation: pointers ("K=V"), NULL, then the strings. */
static int req_env_map(const msgpack_object *o, char ***out, size_t *outn, struct sa_err *e)
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

static int req_set_defaults(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                            struct sa_err *e)
{
    struct guest_defaults_req q;
    memset(&q, 0, sizeof q);
    char *cwd = NULL, *user = NULL;
    const msgpack_object *env_o = wire_get(m, "env");
    if (wire_opt_cstr(m, "cwd", &c->a->zone, &cwd, e) < 0 ||
        wire_opt_cstr(m, "user", &c->a->zone, &user, e) < 0)
        return -1;
    if (cwd && (cwd[0] == '\0' || strlen(cwd) >= PATH_MAX))
        return err_set(e, 0, "bad_request", "field 'cwd' must be a path of 1..%d bytes",
                       PATH_MAX - 1);
    if (env_o && req_env_map(env_o, &q.env, &q.envc, e) < 0)
        return -1;
    q.cwd = cwd;
    q.user = user;
    q.has_env = env_o != NULL;
    int rc = guest_set_defaults(c, r, &q, e);
    free(q.env);                /* NULL unless guest_set_defaults refused it */
    return rc;
}

static int req_set_time(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                        struct sa_err *e)
{
    uint64_t ms;
    if (!wire_obj_uint(wire_get(m, "time_ms"), &ms))
        return err_set(e, 0, "bad_request", "field 'time_ms' (an unsigned integer) is required");
    if (ms > GUEST_TIME_MAX_MS)
        return err_set(e, 0, "bad_request", "time_ms beyond the year 9999");
    return guest_set_time(c, r, ms, e);
}

static int req_add_entropy(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                           struct sa_err *e)
{
    const char *p;
    size_t n;
    if (!wire_obj_bytes(wire_get(m, "data"), &p, &n) || n < 1 || n > GUEST_ENTROPY_MAX)
        return err_set(e, 0, "bad_request", "field 'data' must be 1..%d bytes", GUEST_ENTROPY_MAX);
    return guest_add_entropy(c, r, p, n, e);
}

/* Requests without fields: the envelope is all they need. */
static int req_sync(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                    struct sa_err *e)
{
    (void)m;
    return guest_sync(c, r, e);
}

static int req_restored(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                        struct sa_err *e)
{
    (void)m;
    return guest_restored(c, r, e);
}

static int req_stats(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                     struct sa_err *e)
{
    (void)m;
    return guest_stats(c, r, e);
}

static int req_shutdown(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                        struct sa_err *e)
{
    (void)m;
    return guest_shutdown(c, r, e);
}

/* --- the table ----------------------------------------------------------------- */

static const struct {
    const char *type;
    req_fn fn;            /* NULL: part of v1, not implemented by this agent */
} req_table[] = {
    {"ping", req_ping},
    {"exec", req_exec},
    {"stdin", req_stdin},
    {"close_stdin", req_close_stdin},
    {"signal", req_signal},
    {"get", req_get},
    {"list", req_list},
    {"wait", req_wait},
    {"logs", req_logs},
    {"release", req_release},
    {"resize", req_resize},
    {"upload", req_fop}, {"chunk", req_chunk}, {"download", req_fop},
    {"read", req_fop}, {"write", req_fop}, {"stat", req_fop}, {"ls", req_fop},
    {"mkdir", req_fop}, {"remove", req_fop}, {"rename", req_fop},
    {"chmod", req_fop},
    {"auth", req_auth},
    {"set_defaults", req_set_defaults},
    {"sync", req_sync},
    {"set_time", req_set_time},
    {"add_entropy", req_add_entropy},
    {"restored", req_restored},
    {"stats", req_stats},
    {"shutdown", req_shutdown},
    {"connect", tunnel_request},
};

static int req_dispatch(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                        struct sa_err *e)
{
    if (guest_check_auth(c, r, e) < 0)
        return -1;
    for (size_t i = 0; i < sizeof req_table / sizeof req_table[0]; i++) {
        if (!wire_req_is(r, req_table[i].type))
            continue;
        if (!req_table[i].fn)
            return err_set(e, 0, "unsupported", "request '%s' is not implemented by this agent",
                           req_table[i].type);
        return req_table[i].fn(c, r, m, e);
    }
    return err_set(e, 0, "unknown_type", "unknown request type '%.*s'",
                   (int)(r->type_len > 64 ? 64 : r->type_len), r->type);
}

void req_handle(struct conn *c, const uint8_t *payload, size_t len)
{
    msgpack_object root;
    struct wire_req r;
    struct sa_err e;
    err_clear(&e);
    if (wire_decode(payload, len, &c->a->zone, &root, &e) < 0) {
        conn_fail(c, &e);
    } else if (wire_parse_req(&root, &r, &e) < 0 || req_dispatch(c, &r, &root, &e) < 0) {
        log_debug("conn %llu: request %llu: %s: %s", (unsigned long long)c->serial,
                  (unsigned long long)r.id, e.code, e.msg);
        wire_msg_error(conn_out(c), r.has_id, r.id, &e);
    }
    msgpack_zone_clear(&c->a->zone);      /* what the request decoded into */
}
