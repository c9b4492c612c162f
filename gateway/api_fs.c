/* api_fs.c — files: write (a gzip'd tar body streamed into the agent's
 * upload), read (the agent's read stream as raw bytes), mkdir.
 *
 * fs/write never holds the body: each piece libmicrohttpd hands over (at most
 * its connection buffer) is sent as `chunk`s of at most UPLOAD_PIECE bytes,
 * and no more than the agent's stdin_window is ever sent unacknowledged (the
 * request's thread waits for acks), so an upload of any size costs the
 * gateway one piece plus the agent connection's buffers. Files are written as
 * the session's default user (the agent's), extracted at x-cwd (default /).
 */
#include <string.h>

#include "gw.h"

#define UPLOAD_PIECE (64u * 1024)
#define UPLOAD_RING 256         /* unacknowledged chunks */
#define REFUSED_SHOWN 8

static void join_path(char *out, size_t n, const char *cwd, const char *path)
{
    if (path[0] == '/' || !cwd || !*cwd)
        snprintf(out, n, "%s", path);
    else
        snprintf(out, n, "%s%s%s", cwd, cwd[strlen(cwd) - 1] == '/' ? "" : "/", path);
}

/* {path, cwd?} of a read or mkdir body. */
static int path_arg(struct route *r, char *out, size_t n, struct jerr *je)
{
    const char *path = NULL, *cwd = NULL;
    if (!r->body || j_opt_str(r->body, "path", &path, GW_PATH_MAX - 1, je) < 0 ||
        j_opt_str(r->body, "cwd", &cwd, GW_PATH_MAX - 1, je) < 0 || !path || !*path) {
        if (!path)
            snprintf(je->msg, sizeof je->msg, "'path' (a non-empty string) is required");
        return -1;
    }
    join_path(out, n, cwd, path);
    if (strlen(out) >= n - 1) {
        snprintf(je->msg, sizeof je->msg, "'cwd' and 'path' together are too long");
        return -1;
    }
    return 0;
}

/* --- mkdir ------------------------------------------------------------------ */

/* Send {type, path} for a {path, cwd?} body and wait for the reply: 0 with
 * *out the open connection and *id the request, else the reply already queued
 * in *fail. */
static int path_request(struct route *r, const char *type, struct client **out, uint64_t *id,
                        enum MHD_Result *fail)
{
    char path[GW_PATH_MAX];
    struct jerr je;
    struct sa_err e;
    msgpack_object reply;
    struct client *c;
    if (path_arg(r, path, sizeof path, &je) < 0) {
        *fail = http_err(r->conn, 400, "bad_request", "%s", je.msg);
        return -1;
    }
    if (agent_open(r->gw, r->sess, &c, &e) < 0) {
        *fail = http_agent_err(r->conn, &e);
        return -1;
    }
    struct wire_enc w;
    *id = client_begin(c, &w, type);
    wire_kv_str(&w, "path", path);
    int rc = client_end(c, &w, &e) < 0 ? -1 : agent_call(r->gw, r->sess, c, *id, &reply, &e);
    if (rc != 0) {
        client_free(c);
        if (rc == 1 && strcmp(e.code, "ENOENT") == 0 && strcmp(type, "read") == 0)
            *fail = http_err(r->conn, 404, "file_not_found", "%s", e.msg);
        else
            *fail = http_agent_err(r->conn, &e);
        return -1;
    }
    *out = c;
    return 0;
}

enum MHD_Result api_fs_mkdir(struct route *r)
{
    struct client *c;
    uint64_t id;
    enum MHD_Result fail;
    if (path_request(r, "mkdir", &c, &id, &fail) < 0)
        return fail;
    client_free(c);
    return http_json(r->conn, 200, json_object());
}

/* --- read ------------------------------------------------------------------- */

struct rd {
    struct agent_stream a;
    uint64_t rid, got;
    const uint8_t *cur;
    size_t curn;
    bool done;
};

static ssize_t rd_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct rd *d = cls;
    for (;;) {
        if (d->curn > 0) {
            size_t n = d->curn < max ? d->curn : max;
            memcpy(out, d->cur, n);
            d->cur += n;
            d->curn -= n;
            return (ssize_t)n;
        }
        if (d->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        msgpack_object m;
        struct sa_err e;
        uint64_t off;
        const char *data;
        size_t n;
        if (astream_recv(&d->a, &m, &e) < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!client_msg_id(&m, d->rid))
            continue;
        if (client_msg_is(&m, "data")) {
            if (!wire_obj_uint(wire_get(&m, "offset"), &off) || off != d->got ||
                !wire_obj_bytes(wire_get(&m, "data"), &data, &n))
                return MHD_CONTENT_READER_END_WITH_ERROR;   /* a hostile or broken agent */
            d->got += n;
            d->cur = (const uint8_t *)data;
            d->curn = n;
        } else if (client_msg_is(&m, "end"))
            d->done = true;
        else if (client_msg_is(&m, "error"))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void rd_free(void *cls)
{
    struct rd *d = cls;
    astream_free(&d->a);
    free(d);
}

enum MHD_Result api_fs_read(struct route *r)
{
    struct client *c;
    uint64_t id;
    enum MHD_Result fail;
    if (path_request(r, "read", &c, &id, &fail) < 0)
        return fail;
    struct rd *d = xcalloc(1, sizeof *d);
    astream_init(&d->a, r, c);
    d->rid = id;
    return http_stream(r->conn, "application/octet-stream", rd_read, d, rd_free);
}

/* --- write (upload) ------------------------------------------------------------ */

struct upload {
    struct gw *gw;
    struct sess *s;
    struct client *c;
    uint64_t uid;
    size_t window, piece, outstanding;
    uint64_t ring_id[UPLOAD_RING];
    size_t ring_n[UPLOAD_RING], ring_head, ring_len;
    bool failed, ended;
    struct sa_err err;
    json_t *refused;            /* the end's refused entries, as a message */
};

static void on_ack(struct upload *u, uint64_t id)
{
    if (u->ring_len > 0 && u->ring_id[u->ring_head] == id) {
        u->outstanding -= u->ring_n[u->ring_head];
        u->ring_head = (u->ring_head + 1) % UPLOAD_RING;
        u->ring_len--;
    }
}

/* "entries refused: a (reason), b (reason) and 3 more" or NULL. */
static json_t *refused_text(const msgpack_object *end)
{
    const msgpack_object *ref = wire_get(end, "refused");
    uint64_t more = 0;
    wire_obj_uint(wire_get(end, "refused_more"), &more);
    uint32_t n = ref && ref->type == MSGPACK_OBJECT_ARRAY ? ref->via.array.size : 0;
    if (n == 0 && more == 0)
        return NULL;
    struct buf b;
    buf_init(&b);
    buf_append(&b, "entries refused:", 16);
    for (uint32_t i = 0; i < n && i < REFUSED_SHOWN; i++) {
        const msgpack_object *it = &ref->via.array.ptr[i];
        json_t *p = it->type == MSGPACK_OBJECT_MAP ? agent_json_str(wire_get(it, "path"), 4096) : NULL;
        json_t *why = it->type == MSGPACK_OBJECT_MAP ? agent_json_str(wire_get(it, "reason"), 256) : NULL;
        buf_append(&b, i ? ", " : " ", i ? 2 : 1);
        buf_append(&b, p ? json_string_value(p) : "?", p ? json_string_length(p) : 1);
        buf_append(&b, " (", 2);
        buf_append(&b, why ? json_string_value(why) : "?", why ? json_string_length(why) : 1);
        buf_append(&b, ")", 1);
        json_decref(p);
        json_decref(why);
    }
    uint64_t rest = more + (n > REFUSED_SHOWN ? n - REFUSED_SHOWN : 0);
    if (rest) {
        char tail[48];
        int k = snprintf(tail, sizeof tail, " and %llu more", (unsigned long long)rest);
        buf_append(&b, tail, (size_t)k);
    }
    json_t *j = json_stringn_nocheck((const char *)buf_ptr(&b), buf_size(&b));
    buf_free(&b);
    return j;
}

/* Take one agent message about this upload. */
static void upload_step(struct upload *u)
{
    msgpack_object m;
    if (agent_recv(u->gw, u->s, u->c, &m, &u->err) < 0) {
        u->failed = true;
        return;
    }
    if (client_msg_id(&m, u->uid)) {
        if (client_msg_is(&m, "error")) {
            client_reply_err(&m, &u->err);
            u->failed = true;
        } else if (client_msg_is(&m, "end")) {
            u->refused = refused_text(&m);
            u->ended = true;
        }
        return;
    }
    uint64_t id;
    if ((client_msg_is(&m, "ok") || client_msg_is(&m, "error")) &&
        wire_obj_uint(wire_get(&m, "id"), &id))
        on_ack(u, id);
}

struct upload *upload_begin(struct gw *gw, struct sess *s, const char *cwd, struct sa_err *e)
{
    struct client *c;
    msgpack_object reply;
    if (strlen(cwd) >= GW_PATH_MAX || !*cwd) {
        err_set(e, 0, "bad_request", "x-cwd: 1..%d bytes", GW_PATH_MAX - 1);
        return NULL;
    }
    if (agent_open(gw, s, &c, e) < 0)
        return NULL;
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "upload");
    wire_kv_str(&w, "dest", cwd);
    int rc = client_end(c, &w, e) < 0 ? -1 : agent_call(gw, s, c, id, &reply, e);
    if (rc != 0) {
        client_free(c);
        return NULL;
    }
    const struct client_hello *h = client_hello(c);
    struct upload *u = xcalloc(1, sizeof *u);
    u->gw = gw;
    u->s = sess_ref(gw, s);
    u->c = c;
    u->uid = id;
    u->window = h->stdin_window;
    u->piece = UPLOAD_PIECE;
    if (u->piece > h->max_frame - 1024)
        u->piece = h->max_frame - 1024;
    if (u->piece > u->window)
        u->piece = u->window;
    if (u->piece == 0) {
        err_set(&u->err, 0, "bad_agent", "the agent's stdin_window is 0");
        u->failed = true;
    }
    return u;
}

static void send_chunk(struct upload *u, const char *p, size_t n, bool eof)
{
    struct wire_enc w;
    uint64_t id = client_begin(u->c, &w, "chunk");
    wire_kv_uint(&w, "ref", u->uid);
    wire_kv_bin(&w, "data", p, n);
    wire_kv_bool(&w, "eof", eof);
    if (client_end(u->c, &w, &u->err) < 0 ||
        client_flush_all(u->c, u->gw->connect_timeout_ms, &u->err) < 0) {
        u->failed = true;
        return;
    }
    size_t slot = (u->ring_head + u->ring_len) % UPLOAD_RING;
    u->ring_id[slot] = id;
    u->ring_n[slot] = n;
    u->ring_len++;
    u->outstanding += n;
}

void upload_data(struct upload *u, const char *p, size_t n)
{
    while (n > 0 && !u->failed && !u->ended) {
        size_t k = n < u->piece ? n : u->piece;
        while (!u->failed && !u->ended &&
               (u->outstanding + k > u->window || u->ring_len == UPLOAD_RING))
            upload_step(u);
        if (u->failed || u->ended)
            return;
        send_chunk(u, p, k, false);
        p += k;
        n -= k;
    }
}

enum MHD_Result upload_finish(struct upload *u, struct MHD_Connection *conn)
{
    if (!u->failed && !u->ended) {
        while (!u->failed && u->ring_len == UPLOAD_RING)
            upload_step(u);
        if (!u->failed)
            send_chunk(u, "", 0, true);
    }
    while (!u->failed && !u->ended)
        upload_step(u);
    if (u->failed) {
        if (strcmp(u->err.code, "bad_archive") == 0)
            return http_err(conn, 400, "bad_archive", "%s", u->err.msg);
        return http_agent_err(conn, &u->err);
    }
    if (u->refused)
        return http_json(conn, 400, json_pack("{s:{s:s, s:O}}", "error", "code", "refused",
                                              "message", u->refused));
    return http_json(conn, 200, json_object());
}

void upload_free(struct upload *u)
{
    client_free(u->c);
    sess_put(u->gw, u->s);
    json_decref(u->refused);
    free(u);
}
