#include "msg.h"

#include <string.h>

const char *wire_stream_name(enum wire_stream s)
{
    return s == WIRE_STDERR ? "stderr" : "stdout";
}

int wire_parse_req(const msgpack_object *map, struct wire_req *r, struct sa_err *e)
{
    memset(r, 0, sizeof *r);
    const msgpack_object *id = wire_get(map, "id");
    if (id) {
        if (!wire_obj_uint(id, &r->id))
            return err_set(e, 0, "bad_request", "field 'id' must be an unsigned integer");
        r->has_id = true;
    }
    if (!wire_obj_str(wire_get(map, "type"), &r->type, &r->type_len))
        return err_set(e, 0, "bad_request", "field 'type' (a string) is required");
    if (!r->has_id)
        return err_set(e, 0, "bad_request", "field 'id' (an unsigned integer) is required");
    return 0;
}

bool wire_req_is(const struct wire_req *r, const char *type)
{
    size_t n = strlen(type);
    return r->type_len == n && memcmp(r->type, type, n) == 0;
}

static int parse_argv(const msgpack_object *map, msgpack_zone *z, struct wire_exec_req *x,
                      struct sa_err *e)
{
    const msgpack_object *a = wire_get(map, "argv");
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0)
        return err_set(e, 0, "bad_request", "field 'argv' must be a non-empty array of strings");
    x->argc = a->via.array.size;
    x->argv = msgpack_zone_malloc(z, (x->argc + 1) * sizeof(char *));
    if (!x->argv)
        return err_set(e, 0, "bad_request", "argv too large");
    for (size_t i = 0; i < x->argc; i++) {
        x->argv[i] = wire_obj_cstr(&a->via.array.ptr[i], z);
        if (!x->argv[i])
            return err_set(e, 0, "bad_request", "argv[%zu] must be a string without NUL bytes", i);
    }
    x->argv[x->argc] = NULL;
    if (x->argv[0][0] == '\0')
        return err_set(e, 0, "bad_request", "argv[0] is empty");
    return 0;
}

static int parse_env(const msgpack_object *map, msgpack_zone *z, struct wire_exec_req *x,
                     struct sa_err *e)
{
    const msgpack_object *m = wire_get(map, "env");
    if (!m)
        return 0;
    if (m->type != MSGPACK_OBJECT_MAP)
        return err_set(e, 0, "bad_request", "field 'env' must be a map of strings");
    x->envc = m->via.map.size;
    x->env = msgpack_zone_malloc(z, (x->envc + 1) * sizeof(char *));
    if (!x->env)
        return err_set(e, 0, "bad_request", "env too large");
    for (size_t i = 0; i < x->envc; i++) {
        const char *k, *v;
        size_t kn, vn;
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (!wire_obj_str(&kv->key, &k, &kn) || !wire_obj_str(&kv->val, &v, &vn))
            return err_set(e, 0, "bad_request", "env entries must be string to string");
        if (kn == 0 || memchr(k, '=', kn) || memchr(k, '\0', kn) || memchr(v, '\0', vn))
            return err_set(e, 0, "bad_request",
                           "env key must be non-empty without '=' or NUL; value without NUL");
        char *s = msgpack_zone_malloc(z, kn + vn + 2);
        if (!s)
            return err_set(e, 0, "bad_request", "env too large");
        memcpy(s, k, kn);
        s[kn] = '=';
        memcpy(s + kn + 1, v, vn);
        s[kn + vn + 1] = '\0';
        x->env[i] = s;
    }
    x->env[x->envc] = NULL;
    return 0;
}

static int parse_pty(const msgpack_object *map, msgpack_zone *z, struct wire_exec_req *x,
                     struct sa_err *e)
{
    const msgpack_object *p = wire_get(map, "pty");
    if (!p)
        return 0;
    if (p->type == MSGPACK_OBJECT_BOOLEAN) {
        x->pty = p->via.boolean;
        return 0;
    }
    if (p->type != MSGPACK_OBJECT_MAP)
        return err_set(e, 0, "bad_request", "field 'pty' must be a boolean or a map");
    uint64_t rows = 24, cols = 80;
    if (wire_opt_uint(p, "rows", &rows, e) < 0 || wire_opt_uint(p, "cols", &cols, e) < 0 ||
        wire_opt_cstr(p, "term", z, &x->term, e) < 0)
        return err_wrap(e, "pty");
    if (rows == 0 || cols == 0 || rows > 65535 || cols > 65535)
        return err_set(e, 0, "bad_request", "pty rows and cols must be 1..65535");
    x->pty = true;
    x->rows = (uint16_t)rows;
    x->cols = (uint16_t)cols;
    return 0;
}

int wire_parse_exec(const msgpack_object *map, msgpack_zone *z, struct wire_exec_req *x,
                    struct sa_err *e)
{
    memset(x, 0, sizeof *x);
    x->rows = 24;
    x->cols = 80;
    if (parse_argv(map, z, x, e) < 0 || parse_env(map, z, x, e) < 0 || parse_pty(map, z, x, e) < 0)
        return -1;
    if (wire_opt_bool(map, "clear_env", &x->clear_env, e) < 0 ||
        wire_opt_cstr(map, "cwd", z, &x->cwd, e) < 0 ||
        wire_opt_cstr(map, "user", z, &x->user, e) < 0 ||
        wire_opt_bool(map, "sudo", &x->sudo, e) < 0 ||
        wire_opt_bool(map, "detached", &x->detached, e) < 0 ||
        wire_opt_bool(map, "kill_on_disconnect", &x->kill_on_disconnect, e) < 0 ||
        wire_opt_uint(map, "timeout_ms", &x->timeout_ms, e) < 0)
        return -1;
    /* absent: a pipe, except for a detached command, which gets one only
     * when asked (PROTOCOL.md "exec"): most never read stdin, and a pipe
     * held for each would cost the agent an fd per command */
    const msgpack_object *in = wire_get(map, "stdin");
    if (in) {
        if (wire_obj_is(in, "null"))
            x->stdin_null = true;
        else if (!wire_obj_is(in, "pipe"))
            return err_set(e, 0, "bad_request", "field 'stdin' must be \"pipe\" or \"null\"");
    } else {
        x->stdin_null = x->detached;
    }
    if (x->sudo && x->user)
        return err_set(e, 0, "bad_request", "'user' and 'sudo' are mutually exclusive");
    if (x->cwd && x->cwd[0] == '\0')
        return err_set(e, 0, "bad_request", "field 'cwd' is empty");
    return 0;
}

/* --- agent → client -------------------------------------------------------- */

void wire_msg_hello(struct buf *b, const struct wire_hello *h)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", WIRE_PROTOCOL_VERSION);
    wire_kv_str(&w, "agent", h->agent);
    wire_key(&w, "capabilities");
    uint32_t n = 0;
    while (h->caps[n])
        n++;
    msgpack_pack_array(&w.pk, n);
    for (uint32_t i = 0; i < n; i++)
        wire_str(&w, h->caps[i]);
    wire_kv_str(&w, "boot_id", h->boot_id);
    wire_kv_str(&w, "user", h->user);
    wire_kv_str(&w, "workdir", h->workdir);
    wire_kv_bool(&w, "dev", h->dev);
    wire_kv_uint(&w, "max_frame", h->max_frame);
    wire_kv_uint(&w, "stdin_window", h->stdin_window);
    wire_kv_uint(&w, "generation", h->generation);
    wire_kv_bool(&w, "auth_required", h->auth_required);
    wire_kv_bool(&w, "insecure_tcp", h->insecure_tcp);
    wire_end(&w);
}

void wire_msg_ok(struct buf *b, uint64_t id)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", id);
    wire_end(&w);
}

void wire_msg_error(struct buf *b, bool has_id, uint64_t id, const struct sa_err *e)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "error");
    if (has_id)
        wire_kv_uint(&w, "id", id);
    wire_kv_str(&w, "code", e->code ? e->code : "internal");
    wire_kv_str(&w, "message", e->msg);
    if (e->stage)
        wire_kv_str(&w, "stage", e->stage);
    wire_end(&w);
}

void wire_msg_output(struct buf *b, uint64_t id, uint64_t cmd, enum wire_stream s,
                     uint64_t offset, uint64_t pos, const void *data, size_t n)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "output");
    wire_kv_uint(&w, "id", id);
    wire_kv_uint(&w, "cmd", cmd);
    wire_kv_str(&w, "stream", wire_stream_name(s));
    wire_kv_uint(&w, "offset", offset);
    wire_kv_uint(&w, "pos", pos);
    wire_kv_bin(&w, "data", data, n);
    wire_end(&w);
}

void wire_msg_exit(struct buf *b, uint64_t id, const struct wire_exit *x)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "exit");
    wire_kv_uint(&w, "id", id);
    wire_kv_uint(&w, "cmd", x->cmd);
    wire_kv_int(&w, "code", x->code);
    wire_kv_int(&w, "signal", x->signal);
    wire_kv_uint(&w, "duration_ms", x->duration_ms);
    wire_kv_bool(&w, "timed_out", x->timed_out);
    wire_kv_uint(&w, "stdout_bytes", x->stdout_bytes);
    wire_kv_uint(&w, "stderr_bytes", x->stderr_bytes);
    wire_end(&w);
}
