#include "request.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
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
    wire_begin(&w, conn_out(c), 3);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "time_ms", clock_wall_ms());
    wire_end(&w);
    return 0;
}

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
    wire_begin(&w, conn_out(c), 3);
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
    {"upload", fop_request}, {"chunk", fop_chunk}, {"download", fop_request},
    {"read", fop_request}, {"write", fop_request}, {"stat", fop_request}, {"ls", fop_request},
    {"mkdir", fop_request}, {"remove", fop_request}, {"rename", fop_request},
    {"chmod", fop_request},
    {"auth", guest_auth},
    {"set_defaults", guest_set_defaults},
    {"sync", guest_sync},
    {"set_time", guest_set_time},
    {"add_entropy", guest_add_entropy},
    {"restored", guest_restored},
    {"stats", guest_stats},
    {"shutdown", guest_shutdown},
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
