/* api_cmd.c — commands: run (attached or detached), get (?wait=true), logs,
 * kill. The HTTP command id "cmd_N" is the agent's command N: no table.
 *
 * Streams (a waiting POST /cmd, GET /logs) are NDJSON read by libmicrohttpd
 * from nd_read() in the connection's own thread, which blocks on its agent
 * connection. Each agent output chunk is cut into lines of at most
 * GW_LINE_RAW raw bytes, cleaned to UTF-8 per stream (utf8.c, without a copy
 * when it is valid) and encoded in ASCII (ndjson.c: by json-c when the text
 * is ASCII, since jansson's string encoder is too slow for all of a
 * command's output; else by jansson with \uXXXX escapes), so a line is never
 * more than ~6 x GW_LINE_RAW bytes; the agent message it comes from stays in
 * the client's buffer until consumed. A line is handed to libmicrohttpd
 * straight from its encoder's buffer. The other lines (the command, errors)
 * are jansson's.
 * Everything from the agent is checked: ids, stream names, types, offsets.
 */
#include <string.h>

#include "gw.h"

#define ARGV_MAX 4096           /* arguments in a command line */
#define STR_MAX (256u * 1024)   /* one argument, a cwd from the agent */

/* --- the Command object --------------------------------------------------- */

static json_t *command_json(const struct sess *s, uint64_t cmd, json_t *argv, json_t *cwd,
                            int64_t started)
{
    char id[32];
    snprintf(id, sizeof id, "cmd_%llu", (unsigned long long)cmd);
    json_t *name = json_array_size(argv) > 0 ? json_incref(json_array_get(argv, 0))
                                             : json_string("");
    json_t *args = json_array();
    for (size_t i = 1; i < json_array_size(argv); i++)
        json_array_append(args, json_array_get(argv, i));
    return json_pack("{s:s, s:o, s:o, s:O, s:s, s:n, s:I}", "id", id, "name", name, "args",
                     args, "cwd", cwd, "sessionId", s->id, "exitCode", "startedAt",
                     (json_int_t)started);
}

static void command_exit(json_t *cmd, int64_t code, int64_t duration)
{
    json_object_set_new(cmd, "exitCode", json_integer(code));
    json_object_set_new(cmd, "durationMs", json_integer(duration));
}

/* argv of an agent record as a JSON array of strings; NULL when malformed. */
static json_t *agent_argv(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0 ||
        o->via.array.size > ARGV_MAX)
        return NULL;
    json_t *a = json_array();
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        json_t *v = agent_json_str(&o->via.array.ptr[i], STR_MAX);
        if (!v) {
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, v);
    }
    return a;
}

/* The Command of an agent record (get) or exec reply; NULL when malformed. */
static json_t *record_json(const struct sess *s, uint64_t cmd, const msgpack_object *rec,
                           json_t *argv_given)
{
    uint64_t started = 0, got = 0;
    json_t *argv = argv_given ? json_incref(argv_given) : agent_argv(wire_get(rec, "argv"));
    json_t *cwd = agent_json_str(wire_get(rec, "cwd"), STR_MAX);
    if (!argv || !cwd || !wire_obj_uint(wire_get(rec, "started_ms"), &started) ||
        started > (uint64_t)INT64_MAX ||
        (wire_get(rec, "cmd") && (!wire_obj_uint(wire_get(rec, "cmd"), &got) || got != cmd))) {
        json_decref(argv);
        json_decref(cwd);
        return NULL;
    }
    json_t *j = command_json(s, cmd, argv, cwd, (int64_t)started);
    json_decref(argv);
    json_decref(cwd);
    return j;
}

/* Exit fields of an agent exit/wait/get message into cmd; -1 when malformed. */
static int record_exit(json_t *cmd, const msgpack_object *m)
{
    int64_t code;
    uint64_t dur = 0;
    if (!wire_obj_int(wire_get(m, "code"), &code) || code < -1 || code > 255)
        return -1;
    wire_obj_uint(wire_get(m, "duration_ms"), &dur);
    command_exit(cmd, code, dur > (uint64_t)INT64_MAX ? 0 : (int64_t)dur);
    return 0;
}

static enum MHD_Result bad_agent(struct route *r, const char *what)
{
    return http_err(r->conn, 502, "bad_agent", "the agent's %s is malformed", what);
}

/* --- NDJSON streams --------------------------------------------------------- */

struct nd {
    struct agent_stream a;
    uint64_t rid, cmd;
    json_t *command;            /* the last line of a waiting /cmd; NULL for /logs */
    struct buf out, scratch;
    struct ndjson *enc;         /* output lines; its buffer holds `line` */
    const char *line;           /* an output line not yet handed over, then its \n */
    size_t linen;
    const uint8_t *cur;
    size_t curn;
    int cur_stream;
    struct u8tail tail[2];
    uint64_t next_off[2];
    bool done, gone;
};

static const char *const STREAM_NAMES[2] = { "stdout", "stderr" };

static int append_cb(const char *p, size_t n, void *data)
{
    buf_append(data, p, n);
    return 0;
}

/* The pending output line goes to out before anything else is written after
 * it (and before its encoder's buffer is reused). */
static void unpend(struct nd *d)
{
    if (!d->line)
        return;
    buf_append(&d->out, d->line, d->linen);
    buf_append(&d->out, "\n", 1);
    d->line = NULL;
}

static void put_line(struct nd *d, json_t *j)
{
    unpend(d);
    json_dump_callback(j, append_cb, &d->out, JSON_COMPACT | JSON_ENSURE_ASCII);
    buf_append(&d->out, "\n", 1);
    json_decref(j);
}

static void put_text(struct nd *d, int stream, const uint8_t *p, size_t n, bool final)
{
    size_t len, linen;
    bool ascii;
    const uint8_t *text = utf8_view(&d->tail[stream], p, n, final, &d->scratch, &len, &ascii);
    if (len == 0)
        return;
    unpend(d);
    const char *line = ndjson_line(d->enc, STREAM_NAMES[stream], text, len, ascii, &linen);
    if (buf_size(&d->out) == 0) {       /* the usual case: no copy */
        d->line = line;
        d->linen = linen;
    } else {
        buf_append(&d->out, line, linen);
        buf_append(&d->out, "\n", 1);
    }
}

static void put_error(struct nd *d, const char *code, const char *msg)
{
    put_line(d, json_pack("{s:s, s:{s:s, s:s}}", "stream", "error", "data", "code", code,
                          "message", msg));
    d->done = true;
}

static void flush_tails(struct nd *d)
{
    for (int i = 0; i < 2; i++)
        put_text(d, i, NULL, 0, true);
}

/* An output event for this stream: check it and make it current. */
static int on_output(struct nd *d, const msgpack_object *m)
{
    uint64_t cmd = 0, off = 0;
    const char *data;
    size_t n;
    const msgpack_object *st = wire_get(m, "stream");
    int stream = wire_obj_is(st, "stdout") ? 0 : wire_obj_is(st, "stderr") ? 1 : -1;
    if (stream < 0 || !wire_obj_uint(wire_get(m, "cmd"), &cmd) || cmd != d->cmd ||
        !wire_obj_uint(wire_get(m, "offset"), &off) || off < d->next_off[stream] ||
        !wire_obj_bytes(wire_get(m, "data"), &data, &n) || off + n < off)
        return -1;
    if (off > d->next_off[stream])      /* a gap: bytes dropped by the agent's caps */
        put_text(d, stream, NULL, 0, true);
    d->next_off[stream] = off + n;
    d->cur = (const uint8_t *)data;
    d->curn = n;
    d->cur_stream = stream;
    return 0;
}

static void on_exit_msg(struct nd *d, const msgpack_object *m)
{
    uint64_t cmd = 0;
    flush_tails(d);
    if (!wire_obj_uint(wire_get(m, "cmd"), &cmd) || cmd != d->cmd) {
        put_error(d, "sandbox_stream_closed", "the agent sent a malformed exit");
        return;
    }
    if (d->command) {
        if (record_exit(d->command, m) < 0) {
            put_error(d, "sandbox_stream_closed", "the agent sent a malformed exit");
            return;
        }
        put_line(d, json_pack("{s:O}", "command", d->command));
    }
    d->done = true;
}

/* Take the next agent message of this stream. */
static void nd_next(struct nd *d)
{
    msgpack_object m;
    struct sa_err e;
    if (astream_recv(&d->a, &m, &e) < 0) {
        if (strcmp(e.code, "client_gone") == 0) {
            d->gone = true;
            return;
        }
        flush_tails(d);
        if (strcmp(e.code, "sandbox_stopped") == 0)
            put_error(d, "sandbox_stopped", e.msg);
        else
            put_error(d, "sandbox_stream_closed", e.msg);
        return;
    }
    if (!client_msg_id(&m, d->rid))
        return;
    if (client_msg_is(&m, "output")) {
        if (on_output(d, &m) < 0) {
            flush_tails(d);
            put_error(d, "sandbox_stream_closed", "the agent sent a malformed output event");
        }
    } else if (client_msg_is(&m, "gap")) {
        flush_tails(d);
    } else if (client_msg_is(&m, "exit")) {
        on_exit_msg(d, &m);
    } else if (client_msg_is(&m, "end")) {
        flush_tails(d);
        d->done = true;
    } else if (client_msg_is(&m, "error")) {
        client_reply_err(&m, &e);
        flush_tails(d);
        put_error(d, "sandbox_stream_closed", e.msg);
    }
}

/* Copy what is ready into dst: out, then the pending line and its newline. */
static size_t nd_serve(struct nd *d, char *dst, size_t max)
{
    size_t n = buf_size(&d->out) < max ? buf_size(&d->out) : max;
    if (n > 0) {
        memcpy(dst, buf_ptr(&d->out), n);
        buf_consume(&d->out, n);
    }
    if (!d->line || buf_size(&d->out) > 0)
        return n;
    size_t k = d->linen < max - n ? d->linen : max - n;
    memcpy(dst + n, d->line, k);
    n += k;
    d->line += k;
    d->linen -= k;
    if (d->linen == 0 && n < max) {
        dst[n++] = '\n';
        d->line = NULL;
    }
    return n;
}

/* Fill libmicrohttpd's buffer (max: its free space, ~CONN_MEMORY) with as
 * many lines as the agent message in hand gives: one HTTP chunk and one
 * send for several lines. It waits for the agent only with nothing in hand. */
static ssize_t nd_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct nd *d = cls;
    size_t n = 0;
    for (;;) {
        n += nd_serve(d, out + n, max - n);
        if (n == max)
            return (ssize_t)n;
        if (d->gone)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (d->curn > 0) {
            size_t k = d->curn < GW_LINE_RAW ? d->curn : GW_LINE_RAW;
            put_text(d, d->cur_stream, d->cur, k, false);
            d->cur += k;
            d->curn -= k;
            continue;
        }
        if (n > 0)
            return (ssize_t)n;
        if (d->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        nd_next(d);
    }
}

static void nd_free(void *cls)
{
    struct nd *d = cls;
    astream_free(&d->a);
    json_decref(d->command);
    buf_free(&d->out);
    buf_free(&d->scratch);
    ndjson_free(d->enc);
    free(d);
}

/* Stream request rid's events on c (taken) as NDJSON; first line optional. */
static enum MHD_Result nd_start(struct route *r, struct client *c, uint64_t rid, json_t *first,
                                json_t *command)
{
    struct nd *d = xcalloc(1, sizeof *d);
    astream_init(&d->a, r, c);
    d->rid = rid;
    d->cmd = r->cmd;
    d->command = command;
    buf_init(&d->out);
    buf_init(&d->scratch);
    d->enc = ndjson_new();
    if (first)
        put_line(d, first);
    return http_stream(r->conn, "application/x-ndjson", nd_read, d, nd_free);
}

/* --- POST /cmd ---------------------------------------------------------------- */

struct run_req {
    const char *command, *cwd;
    json_t *args, *env;
    bool sudo, wait;
    int64_t timeout;
};

static int run_parse(json_t *body, struct run_req *q, struct jerr *je)
{
    bool logs = false;
    memset(q, 0, sizeof *q);
    if (!body || !json_is_string(json_object_get(body, "command"))) {
        snprintf(je->msg, sizeof je->msg, "'command' (a string) is required");
        return -1;
    }
    if (j_opt_str(body, "command", &q->command, STR_MAX, je) < 0 ||
        j_opt_str(body, "cwd", &q->cwd, GW_PATH_MAX - 1, je) < 0 ||
        j_opt_env(body, "env", &q->env, je) < 0 || j_opt_bool(body, "sudo", &q->sudo, je) < 0 ||
        j_opt_bool(body, "wait", &q->wait, je) < 0 || j_opt_bool(body, "logs", &logs, je) < 0 ||
        j_opt_int(body, "timeout", &q->timeout, 1, GW_MAX_TIMEOUT_MS, je) < 0)
        return -1;
    if (!*q->command) {
        snprintf(je->msg, sizeof je->msg, "'command' must not be empty");
        return -1;
    }
    json_t *args = json_object_get(body, "args"), *v;
    size_t i;
    if (args && !json_is_null(args)) {
        if (!json_is_array(args) || json_array_size(args) >= ARGV_MAX) {
            snprintf(je->msg, sizeof je->msg, "'args' must be an array of strings");
            return -1;
        }
        json_array_foreach(args, i, v) if (!json_is_string(v) ||
                                           strlen(json_string_value(v)) != json_string_length(v))
        {
            snprintf(je->msg, sizeof je->msg, "'args[%zu]' must be a string without NUL", i);
            return -1;
        }
        q->args = args;
    }
    return 0;
}

static void pack_env(struct wire_enc *w, json_t *base, json_t *over)
{
    const char *k;
    json_t *v;
    wire_key(w, "env");
    unsigned env = wire_map_begin(w);
    json_object_foreach(base, k, v) if (!over || !json_object_get(over, k))
    {
        wire_key(w, k);
        wire_str(w, json_string_value(v));
    }
    if (over)
        json_object_foreach(over, k, v)
        {
            wire_key(w, k);
            wire_str(w, json_string_value(v));
        }
    wire_map_end(w, env);
}

static uint64_t exec_send(struct client *c, const struct sess *s, const struct run_req *q,
                          struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "exec");
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 1 + (uint32_t)json_array_size(q->args));
    wire_str(&w, q->command);
    for (size_t i = 0; i < json_array_size(q->args); i++)
        wire_str(&w, json_string_value(json_array_get(q->args, i)));
    pack_env(&w, s->env, q->env);
    wire_kv_str(&w, "stdin", "null");
    if (q->cwd)
        wire_kv_str(&w, "cwd", q->cwd);
    if (q->sudo)
        wire_kv_bool(&w, "sudo", true);
    if (!q->wait)
        wire_kv_bool(&w, "detached", true);
    if (q->timeout > 0)
        wire_kv_uint(&w, "timeout_ms", (uint64_t)q->timeout);
    return client_end(c, &w, e) < 0 ? 0 : id;
}

enum MHD_Result api_cmd_run(struct route *r)
{
    struct run_req q;
    struct jerr je;
    if (run_parse(r->body, &q, &je) < 0)
        return http_err(r->conn, 400, "bad_request", "%s", je.msg);
    struct client *c;
    struct sa_err e;
    msgpack_object reply;
    if (agent_open(r->gw, r->sess, &c, &e) < 0)
        return http_agent_err(r->conn, &e);
    uint64_t id = exec_send(c, r->sess, &q, &e);
    if (id == 0) {
        client_free(c);
        return http_err(r->conn, 413, "too_large", "the command line and env are too large");
    }
    int rc = agent_call(r->gw, r->sess, c, id, &reply, &e);
    if (rc != 0) {
        client_free(c);
        /* the exec went out: it may have started, and a 5xx would make the
         * SDK send it again */
        if (rc < 0 && strcmp(e.code, "sandbox_stopped") != 0)
            return http_err(r->conn, 424, "agent_lost",
                            "the agent went away after the command was sent (it may have "
                            "started): %s", e.msg);
        if (rc < 0)
            return http_agent_err(r->conn, &e);
        /* a spawn failure: a 4xx, never retried by the SDK */
        unsigned st = strcmp(e.code, "too_many") == 0 ? 429 : 400;
        return http_err(r->conn, st, e.code, "%s", e.msg);
    }
    json_t *argv = json_array();
    json_array_append_new(argv, json_string(q.command));
    if (q.args)
        json_array_extend(argv, q.args);
    uint64_t cmd = 0;
    if (!wire_obj_uint(wire_get(&reply, "cmd"), &cmd) || cmd == 0) {
        json_decref(argv);
        client_free(c);
        return bad_agent(r, "exec reply");
    }
    r->cmd = cmd;
    json_t *command = record_json(r->sess, cmd, &reply, argv);
    json_decref(argv);
    if (!command) {
        client_free(c);
        return bad_agent(r, "exec reply");
    }
    if (!q.wait) {
        client_free(c);
        return http_json(r->conn, 200, json_pack("{s:o}", "command", command));
    }
    return nd_start(r, c, id, json_pack("{s:O}", "command", command), command);
}

/* --- GET /cmd/{id} ------------------------------------------------------------ */

/* The agent's record of r->cmd as a Command; 1 when it has exited. */
static int get_record(struct route *r, struct client *c, json_t **out, enum MHD_Result *fail)
{
    msgpack_object rec;
    struct sa_err e;
    int rc = agent_cmd_call(r->gw, r->sess, c, "get", r->cmd, &rec, &e);
    if (rc != 0) {
        if (rc == 1 && strcmp(e.code, "not_found") == 0)
            *fail = http_err(r->conn, 404, "not_found", "no command cmd_%llu in session %s",
                             (unsigned long long)r->cmd, r->sess->id);
        else
            *fail = http_agent_err(r->conn, &e);
        return -1;
    }
    json_t *j = record_json(r->sess, r->cmd, &rec, NULL);
    const msgpack_object *state = wire_get(&rec, "state");
    bool exited = wire_obj_is(state, "exited");
    if (!j || (!exited && !wire_obj_is(state, "running")) || (exited && record_exit(j, &rec) < 0)) {
        json_decref(j);
        *fail = bad_agent(r, "command record");
        return -1;
    }
    *out = j;
    return exited;
}

/* GET /cmd/{id}?wait=true on a running command: headers at once (the SDK's
 * HTTP client gives up on headers after 300 s), a space (JSON allows leading
 * whitespace), then the Command when the agent's wait answers. */
struct waiter {
    struct agent_stream a;
    uint64_t wid;
    json_t *command;
    struct buf out;
    int phase;                  /* 0: space, 1: wait, 2: drain */
};

static ssize_t waiter_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct waiter *w = cls;
    if (w->phase == 0) {
        w->phase = 1;
        out[0] = ' ';
        return 1;
    }
    if (w->phase == 1) {
        msgpack_object m;
        struct sa_err e;
        int rc = astream_call(&w->a, w->wid, &m, &e);
        if (rc < 0 && strcmp(e.code, "client_gone") == 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        json_t *j;
        if (rc == 0 && record_exit(w->command, &m) == 0)
            j = json_pack("{s:O}", "command", w->command);
        else
            j = json_pack("{s:{s:s, s:s}}", "error", "code",
                          rc < 0 && strcmp(e.code, "sandbox_stopped") == 0 ? "sandbox_stopped"
                                                                           : "bad_agent",
                          "message", rc == 0 ? "the agent's wait reply is malformed" : e.msg);
        json_dump_callback(j, append_cb, &w->out, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(j);
        w->phase = 2;
    }
    size_t have = buf_size(&w->out);
    if (have == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = have < max ? have : max;
    memcpy(out, buf_ptr(&w->out), n);
    buf_consume(&w->out, n);
    return (ssize_t)n;
}

static void waiter_free(void *cls)
{
    struct waiter *w = cls;
    astream_free(&w->a);
    json_decref(w->command);
    buf_free(&w->out);
    free(w);
}

enum MHD_Result api_cmd_get(struct route *r)
{
    struct client *c;
    struct sa_err e;
    enum MHD_Result fail = MHD_NO;
    json_t *cmd;
    if (agent_open(r->gw, r->sess, &c, &e) < 0)
        return http_agent_err(r->conn, &e);
    int st = get_record(r, c, &cmd, &fail);
    const char *wait = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "wait");
    if (st < 0 || st == 1 || !wait || strcmp(wait, "true") != 0) {
        client_free(c);
        return st < 0 ? fail : http_json(r->conn, 200, json_pack("{s:o}", "command", cmd));
    }
    struct wire_enc w;
    uint64_t wid = client_begin(c, &w, "wait");
    wire_kv_uint(&w, "cmd", r->cmd);
    if (client_end(c, &w, &e) < 0) {
        client_free(c);
        json_decref(cmd);
        return http_agent_err(r->conn, &e);
    }
    struct waiter *wt = xcalloc(1, sizeof *wt);
    astream_init(&wt->a, r, c);
    wt->wid = wid;
    wt->command = cmd;
    buf_init(&wt->out);
    return http_stream(r->conn, "application/json", waiter_read, wt, waiter_free);
}

/* --- GET /cmd/{id}/logs ------------------------------------------------------- */

enum MHD_Result api_cmd_logs(struct route *r)
{
    struct client *c;
    struct sa_err e;
    msgpack_object reply;
    if (agent_open(r->gw, r->sess, &c, &e) < 0)
        return http_agent_err(r->conn, &e);
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "logs");
    wire_kv_uint(&w, "cmd", r->cmd);
    wire_kv_bool(&w, "follow", true);
    int rc = client_end(c, &w, &e) < 0 ? -1 : agent_call(r->gw, r->sess, c, id, &reply, &e);
    if (rc != 0) {
        client_free(c);
        if (rc == 1 && strcmp(e.code, "not_found") == 0)
            return http_err(r->conn, 404, "not_found", "no command cmd_%llu in session %s",
                            (unsigned long long)r->cmd, r->sess->id);
        return http_agent_err(r->conn, &e);
    }
    return nd_start(r, c, id, NULL, NULL);
}

/* --- POST /cmd/{id}/kill ------------------------------------------------------- */

enum MHD_Result api_cmd_kill(struct route *r)
{
    int64_t sig = 15;
    struct jerr je;
    if (r->body && j_opt_int(r->body, "signal", &sig, 1, CLIENT_SIG_MAX, &je) < 0)
        return http_err(r->conn, 400, "bad_request", "%s", je.msg);
    struct client *c;
    struct sa_err e;
    msgpack_object reply;
    enum MHD_Result fail = MHD_NO;
    json_t *cmd;
    if (agent_open(r->gw, r->sess, &c, &e) < 0)
        return http_agent_err(r->conn, &e);
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "signal");
    wire_kv_uint(&w, "cmd", r->cmd);
    wire_kv_uint(&w, "signal", (uint64_t)sig);
    int rc = client_end(c, &w, &e) < 0 ? -1 : agent_call(r->gw, r->sess, c, id, &reply, &e);
    if (rc < 0 || (rc == 1 && strcmp(e.code, "exited") != 0)) {
        client_free(c);
        if (rc == 1 && strcmp(e.code, "not_found") == 0)
            return http_err(r->conn, 404, "not_found", "no command cmd_%llu in session %s",
                            (unsigned long long)r->cmd, r->sess->id);
        return http_agent_err(r->conn, &e);
    }
    int st = get_record(r, c, &cmd, &fail);
    client_free(c);
    return st < 0 ? fail : http_json(r->conn, 200, json_pack("{s:o}", "command", cmd));
}
