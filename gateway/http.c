/* http.c — libmicrohttpd glue: the daemon, auth, request bodies, routing.
 *
 * libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION
 * with an internal poll thread), so a handler, or a streamed response's
 * reader callback, may block on its agent connection: it holds up only its
 * own HTTP connection. Bounds:
 *   - connections: --max-connections (MHD_OPTION_CONNECTION_LIMIT), one
 *     thread each with a THREAD_STACK stack;
 *   - per connection, MHD's own buffer: CONN_MEMORY (headers, and the pieces
 *     of a request body it hands over);
 *   - a JSON request body: --max-body (413 beyond), accumulated here;
 *   - an fs/write body is never accumulated: each piece goes to the agent;
 *   - a streamed response: one NDJSON line (GW_LINE_RAW raw bytes, at most
 *     six times that escaped) plus the agent connection's frame buffer and
 *     decode zone (bounded by GW_AGENT_MAX_FRAME, PROTOCOL.md §1).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "gw.h"

#define CONN_MEMORY (128u * 1024)
#define THREAD_STACK (1u << 20)     /* per connection thread; nothing here is deep */
#define STREAM_BLOCK (32u * 1024)
#define SEGS_MAX 8
#define SHUTDOWN_GRACE_MS 3000      /* for open requests to end cleanly */

struct req {
    struct gw *gw;
    struct buf body;
    bool too_big;
    bool responded;
    struct upload *up;
};

/* --- replies --------------------------------------------------------------- */

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, const char *ctype,
                             char *text, size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result http_json(struct MHD_Connection *c, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(body);
    if (!text)
        return MHD_NO;
    return queue(c, status, "application/json", text, strlen(text));
}

enum MHD_Result http_err(struct MHD_Connection *c, unsigned status, const char *code,
                         const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct buf b;
    struct u8tail t = { .n = 0 };
    buf_init(&b);
    utf8_clean(&t, (const uint8_t *)msg, strlen(msg), true, &b);
    json_t *m = json_stringn_nocheck(b.data ? (const char *)buf_ptr(&b) : "", buf_size(&b));
    buf_free(&b);
    return http_json(c, status, json_pack("{s:{s:s, s:o}}", "error", "code", code, "message", m));
}

enum MHD_Result http_agent_err(struct MHD_Connection *c, const struct sa_err *e)
{
    const char *code = e->code ? e->code : "internal";
    unsigned st = 400;
    if (strcmp(code, "sandbox_stopped") == 0)
        st = 410;
    else if (strcmp(code, "not_found") == 0 || strcmp(code, "ENOENT") == 0)
        st = 404;
    else if (strcmp(code, "too_many") == 0)
        st = 429;
    else if (strcmp(code, "too_large") == 0)
        st = 413;
    else if (strcmp(code, "closed") == 0 || strcmp(code, "sandbox_stream_closed") == 0 ||
             strcmp(code, "bad_agent") == 0 || strcmp(code, "bad_frame") == 0 ||
             strcmp(code, "frame_too_large") == 0 || strcmp(code, "internal") == 0 ||
             strcmp(code, "agent_unreachable") == 0 || strcmp(code, "agent_auth") == 0 ||
             strcmp(code, "ETIMEDOUT") == 0)
        st = 502;
    return http_err(c, st, code, "%s", e->msg);
}

enum MHD_Result http_stream(struct MHD_Connection *c, const char *ctype,
                            MHD_ContentReaderCallback cb, void *cls,
                            MHD_ContentReaderFreeCallback free_cb)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, cb, cls, free_cb);
    if (!r) {
        free_cb(cls);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

int http_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return i ? i->connect_fd : -1;
}

/* --- request JSON fields ----------------------------------------------------- */

int j_opt_str(json_t *o, const char *k, const char **v, size_t max, struct jerr *je)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x))
        return 0;
    if (!json_is_string(x)) {
        snprintf(je->msg, sizeof je->msg, "'%s' must be a string", k);
        return -1;
    }
    if (json_string_length(x) > max || strlen(json_string_value(x)) != json_string_length(x)) {
        snprintf(je->msg, sizeof je->msg, "'%s' must be at most %zu bytes, without NUL", k, max);
        return -1;
    }
    *v = json_string_value(x);
    return 0;
}

int j_opt_int(json_t *o, const char *k, int64_t *v, int64_t lo, int64_t hi, struct jerr *je)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x))
        return 0;
    double d = json_is_integer(x) ? (double)json_integer_value(x) : json_is_real(x) ? json_real_value(x) : -1e300;
    if (!json_is_number(x) || d != (double)(int64_t)d || d < (double)lo || d > (double)hi) {
        snprintf(je->msg, sizeof je->msg, "'%s' must be an integer from %lld to %lld", k,
                 (long long)lo, (long long)hi);
        return -1;
    }
    *v = (int64_t)d;
    return 0;
}

int j_opt_bool(json_t *o, const char *k, bool *v, struct jerr *je)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x))
        return 0;
    if (!json_is_boolean(x)) {
        snprintf(je->msg, sizeof je->msg, "'%s' must be a boolean", k);
        return -1;
    }
    *v = json_is_true(x);
    return 0;
}

int j_opt_env(json_t *o, const char *k, json_t **v, struct jerr *je)
{
    json_t *x = json_object_get(o, k), *val;
    const char *key;
    if (!x || json_is_null(x))
        return 0;
    if (!json_is_object(x) || json_object_size(x) > 1024) {
        snprintf(je->msg, sizeof je->msg, "'%s' must be an object of at most 1024 strings", k);
        return -1;
    }
    json_object_foreach(x, key, val) {
        if (!*key || strchr(key, '=') || !json_is_string(val) ||
            strlen(json_string_value(val)) != json_string_length(val)) {
            snprintf(je->msg, sizeof je->msg,
                     "'%s.%.64s': keys are non-empty without '=', values strings without NUL", k,
                     key);
            return -1;
        }
    }
    *v = x;
    return 0;
}

/* --- auth ------------------------------------------------------------------- */

static bool auth_ok(struct gw *gw, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    size_t n = strlen(h);
    /* constant time in the secret: every byte of the configured token is read */
    volatile uint8_t diff = (uint8_t)(n != gw->token_len);
    for (size_t i = 0; i < gw->token_len; i++)
        diff |= (uint8_t)(gw->token[i] ^ (i < n ? (uint8_t)h[i] : 0));
    return diff == 0;
}

/* --- routing ---------------------------------------------------------------- */

static size_t split(char *path, char **seg, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (n == max)
            return max + 1;
        seg[n++] = p;
    }
    return n;
}

static enum MHD_Result not_supported(struct MHD_Connection *c, const char *what)
{
    return http_err(c, 400, "not_supported", "%s is not supported by sandbox-gateway", what);
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *c, const char *method)
{
    return http_err(c, 405, "method_not_allowed", "method %s is not allowed here", method);
}

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static enum MHD_Result command_route(struct route *r, char **seg, size_t n)
{
    /* seg[0] == "cmd" */
    if (n == 1)
        return is(r->method, "POST") ? api_cmd_run(r) : method_not_allowed(r->conn, r->method);
    if (strncmp(seg[1], "cmd_", 4) != 0 || client_parse_id(seg[1] + 4, &r->cmd) < 0)
        return http_err(r->conn, 404, "not_found", "no command '%.64s' in session %s", seg[1],
                        r->sess->id);
    if (n == 2)
        return is(r->method, "GET") ? api_cmd_get(r) : method_not_allowed(r->conn, r->method);
    if (n == 3 && is(seg[2], "logs"))
        return is(r->method, "GET") ? api_cmd_logs(r) : method_not_allowed(r->conn, r->method);
    if (n == 3 && is(seg[2], "kill"))
        return is(r->method, "POST") ? api_cmd_kill(r) : method_not_allowed(r->conn, r->method);
    return http_err(r->conn, 404, "not_found", "no such endpoint");
}

static enum MHD_Result session_route(struct route *r, char **seg, size_t n)
{
    /* seg[0] is the session id */
    r->sess = sess_get(r->gw, seg[0]);
    if (!r->sess)
        return http_err(r->conn, 404, "not_found", "no session '%.64s'", seg[0]);
    if (n == 1)
        return is(r->method, "GET") ? api_session_get(r) : method_not_allowed(r->conn, r->method);
    const char *s1 = seg[1];
    if (n == 2 && is(s1, "stop"))
        return is(r->method, "POST") ? api_stop(r) : method_not_allowed(r->conn, r->method);
    if (n == 2 && (is(s1, "snapshot") || is(s1, "network-policy") || is(s1, "interactive")))
        return not_supported(r->conn, s1);
    bool known = (n == 2 && is(s1, "extend-timeout")) || is(s1, "cmd") ||
                 (n == 3 && is(s1, "fs"));
    if (!known)
        return http_err(r->conn, 404, "not_found", "no such endpoint");
    if (!sess_live(r->sess))
        return http_err(r->conn, 410, "sandbox_stopped", "the session %s has stopped",
                        r->sess->id);
    if (is(s1, "extend-timeout"))
        return is(r->method, "POST") ? api_extend(r) : method_not_allowed(r->conn, r->method);
    if (is(s1, "cmd"))
        return command_route(r, seg + 1, n - 1);
    if (!is(r->method, "POST"))
        return method_not_allowed(r->conn, r->method);
    if (is(seg[2], "read"))
        return api_fs_read(r);
    if (is(seg[2], "mkdir"))
        return api_fs_mkdir(r);
    return http_err(r->conn, 404, "not_found", "no such endpoint");
}

static enum MHD_Result route(struct route *r, const char *url)
{
    char path[1024], *seg[SEGS_MAX + 1];
    if (strlen(url) >= sizeof path)
        return http_err(r->conn, 404, "not_found", "no such endpoint");
    strcpy(path, url);
    size_t n = split(path, seg, SEGS_MAX);
    if (n > SEGS_MAX || n < 2 || !is(seg[1], "sandboxes"))
        return http_err(r->conn, 404, "not_found", "no such endpoint");
    if (is(seg[0], "v3")) {
        if (n != 2)
            return http_err(r->conn, 404, "not_found", "no such endpoint");
        return is(r->method, "POST") ? api_create(r) : method_not_allowed(r->conn, r->method);
    }
    if (!is(seg[0], "v2"))
        return http_err(r->conn, 404, "not_found", "no such endpoint");
    if (n == 2) {
        if (is(r->method, "POST"))
            return api_create(r);
        return is(r->method, "GET") ? api_sandbox_list(r) : method_not_allowed(r->conn, r->method);
    }
    if (is(seg[2], "sessions")) {
        if (n == 3)
            return is(r->method, "GET") ? api_session_list(r)
                                        : method_not_allowed(r->conn, r->method);
        return session_route(r, seg + 3, n - 3);
    }
    if (is(seg[2], "snapshots") || is(seg[2], "drives"))
        return not_supported(r->conn, seg[2]);
    if (n == 4 && is(seg[3], "fork"))
        return not_supported(r->conn, "fork");
    if (n != 3)
        return http_err(r->conn, 404, "not_found", "no such endpoint");
    r->name = seg[2];
    if (is(r->method, "GET"))
        return api_sandbox_get(r);
    if (is(r->method, "DELETE"))
        return api_sandbox_delete(r);
    if (is(r->method, "PATCH"))
        return api_sandbox_update(r);
    return method_not_allowed(r->conn, r->method);
}

static enum MHD_Result dispatch(struct gw *gw, struct req *q, struct MHD_Connection *conn,
                                const char *url, const char *method)
{
    struct route r = { .gw = gw, .conn = conn, .method = method };
    if (buf_size(&q->body) > 0) {
        json_error_t je;
        r.body = json_loadb((const char *)buf_ptr(&q->body), buf_size(&q->body), 0, &je);
        if (!r.body)
            return http_err(conn, 400, "bad_request", "body: malformed JSON at line %d: %s",
                            je.line, je.text);
        if (!json_is_object(r.body)) {
            json_decref(r.body);
            return http_err(conn, 400, "bad_request", "body: must be a JSON object");
        }
    }
    enum MHD_Result rc = route(&r, url);
    json_decref(r.body);
    sess_put(gw, r.sess);
    return rc;
}

/* fs/write: the body goes to the agent as it arrives. */
static enum MHD_Result upload_start(struct gw *gw, struct req *q, struct MHD_Connection *conn,
                                    const char *sid)
{
    struct sess *s = sess_get(gw, sid);
    if (!s)
        return http_err(conn, 404, "not_found", "no session '%.64s'", sid);
    if (!sess_live(s)) {
        sess_put(gw, s);
        return http_err(conn, 410, "sandbox_stopped", "the session %s has stopped", sid);
    }
    const char *cwd = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-cwd");
    struct sa_err e;
    q->up = upload_begin(gw, s, cwd ? cwd : "/", &e);
    sess_put(gw, s);
    if (!q->up)
        return http_agent_err(conn, &e);
    return MHD_YES;
}

/* The session id when url is POST /v2/sandboxes/sessions/ID/fs/write. */
static const char *write_target(const char *url, const char *method, char *id, size_t idn)
{
    static const char pre[] = "/v2/sandboxes/sessions/";
    if (!is(method, "POST") || strncmp(url, pre, sizeof pre - 1) != 0)
        return NULL;
    const char *p = url + sizeof pre - 1, *slash = strchr(p, '/');
    if (!slash || !is(slash, "/fs/write") || (size_t)(slash - p) >= idn || slash == p)
        return NULL;
    memcpy(id, p, (size_t)(slash - p));
    id[slash - p] = '\0';
    return id;
}

static enum MHD_Result first_call(struct gw *gw, struct req *q, struct MHD_Connection *conn,
                                  const char *url, const char *method)
{
    char id[GW_ID_MAX];
    if (gw->verbose)
        gw_log("%s %.200s", method, url);
    if (!auth_ok(gw, conn)) {
        q->responded = true;
        return http_err(conn, 401, "unauthorized", "missing or wrong bearer token");
    }
    if (write_target(url, method, id, sizeof id)) {
        enum MHD_Result rc = upload_start(gw, q, conn, id);
        q->responded = q->up == NULL;
        return rc;
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > gw->body_max) {
        q->responded = true;
        return http_err(conn, 413, "too_large", "body: larger than %zu bytes", gw->body_max);
    }
    return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **con_cls)
{
    (void)version;
    struct gw *gw = cls;
    struct req *q = *con_cls;
    if (!q) {
        q = xcalloc(1, sizeof *q);
        q->gw = gw;
        atomic_fetch_add(&gw->active, 1);
        buf_init(&q->body);
        *con_cls = q;
        return first_call(gw, q, conn, url, method);
    }
    if (*size > 0) {
        if (q->responded)
            ;
        else if (q->up)
            upload_data(q->up, data, *size);
        else if (q->too_big || buf_size(&q->body) + *size > gw->body_max)
            q->too_big = true;
        else
            buf_append(&q->body, data, *size);
        *size = 0;
        return MHD_YES;
    }
    if (q->responded)
        return MHD_YES;
    q->responded = true;
    if (q->up)
        return upload_finish(q->up, conn);
    if (q->too_big)
        return http_err(conn, 413, "too_large", "body: larger than %zu bytes", gw->body_max);
    return dispatch(gw, q, conn, url, method);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct req *q = *con_cls;
    if (!q)
        return;
    if (q->up)
        upload_free(q->up);
    buf_free(&q->body);
    atomic_fetch_sub(&q->gw->active, 1);
    free(q);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    gw_log("http: %s", msg);
}

int http_start(struct gw *gw, struct sa_err *e)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    char port[8];
    snprintf(port, sizeof port, "%u", gw->listen_port);
    int rc = getaddrinfo(gw->listen_host, port, &hints, &ai);
    if (rc != 0)
        return err_set(e, 0, "bad_listen", "--listen %s: %s", gw->listen_host, gai_strerror(rc));
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    gw->mhd = MHD_start_daemon(
        flags, gw->listen_port, NULL, NULL, handler, gw, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, gw,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, gw->max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
        gw->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, completed, gw, MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)THREAD_STACK,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!gw->mhd)
        return err_set(e, 0, "bad_listen", "cannot listen on %s:%u", gw->listen_host,
                       gw->listen_port);
    return 0;
}

void http_stop(struct gw *gw)
{
    MHD_socket listener = MHD_quiesce_daemon(gw->mhd);     /* now ours to close */
    atomic_store(&gw->stopping, true);
    int64_t deadline = clock_mono_ms() + SHUTDOWN_GRACE_MS;
    while (atomic_load(&gw->active) > 0 && clock_mono_ms() < deadline)
        usleep(20 * 1000);
    MHD_stop_daemon(gw->mhd);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
}
