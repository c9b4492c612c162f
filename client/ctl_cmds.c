/* ctl_cmds.c — sandboxctl's verbs about the agent and the commands it
 * keeps: ping, logs, wait, kill, release, inspect, ps, stats. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "client.h"
#include "ctl.h"
#include "err.h"
#include "json.h"
#include "wire.h"

#define SIGTERM_LINUX 15                /* kill's default, in the guest's numbering */

/* --- ping ----------------------------------------------------------------- */

int verb_ping(const char *addr, int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("ping takes no arguments");
    if (need_addr(addr) != 0)
        return EXIT_USAGE;
    struct client *c = connect_or_die(addr);
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "ping");
    if (client_end(c, &w, &e) < 0 || client_call(c, id, addr_timeout_from_env(), &reply, &e) != 0) {
        warnmsg("ping: %s", e.msg);
        client_free(c);
        return EXIT_CONN;
    }
    const struct client_hello *h = client_hello(c);
    printf("%s protocol %" PRIu64 "\n", h->agent[0] ? h->agent : "(unnamed agent)", h->protocol);
    client_free(c);
    return fflush(stdout) == 0 ? 0 : EXIT_CONN;
}

/* --- verbs about one command id: shared ----------------------------------- */

/* The single ID argument left after the options: 0, or a usage error's status. */
static int one_id(const char *what, int argc, char **argv, uint64_t *id)
{
    if (optind >= argc)
        return usage_error("%s: no command id given", what);
    if (argc - optind > 1)
        return usage_error("%s: unexpected argument '%s'", what, argv[optind + 1]);
    if (client_parse_id(argv[optind], id) < 0)
        return usage_error("%s: '%s' is not a command id (a number > 0)", what, argv[optind]);
    return 0;
}

/* poll() milliseconds for a timeout in ms; 0 (none) is -1 (forever). */
static int poll_ms(uint64_t ms)
{
    return ms == 0 ? -1 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Send {type, cmd} and wait for the reply: client_call's result. */
static int call_cmd(struct client *c, const char *type, uint64_t cmd, int timeout_ms,
                    msgpack_object *reply, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, type);
    wire_kv_uint(&w, "cmd", cmd);
    if (client_end(c, &w, e) < 0)
        return -1;
    return client_call(c, id, timeout_ms, reply, e);
}

/* --- logs ----------------------------------------------------------------- */

struct logs_opts {
    bool follow;
    uint64_t from;
    uint64_t cmd;
};

static int logs_parse(int argc, char **argv, struct logs_opts *o)
{
    enum { OPT_FROM = 256 };
    static const struct option longopts[] = {
        { "follow", no_argument, NULL, 'f' },
        { "from", required_argument, NULL, OPT_FROM },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":f", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f': o->follow = true; break;
        case OPT_FROM:
            if (parse_u64(optarg, &o->from) < 0)
                return usage_error("logs: --from wants a log position (a number), not '%s'",
                                   optarg);
            break;
        case ':': return usage_error("logs: option %s needs an argument", opt_name(argv));
        default: return usage_error("logs: unknown option %s", opt_name(argv));
        }
    }
    return one_id("logs", argc, argv, &o->cmd);
}

struct logs_state {
    uint64_t pos;               /* the next combined log position we expect */
    bool err_gone;              /* our stderr's reader left: drop stderr chunks */
};

/* The stream has reached position pos: anything skipped silently is reported. */
static void logs_reach(struct logs_state *st, uint64_t pos)
{
    if (pos > st->pos) {
        report_gap(st->pos, pos);
        st->pos = pos;
    }
}

/* An output event: 0 to go on, 1 with *status to stop. */
static int logs_output(struct logs_state *st, const msgpack_object *m, int *status)
{
    const msgpack_object *sm = wire_get(m, "stream");
    int fd = wire_obj_is(sm, "stdout") ? STDOUT_FILENO
           : wire_obj_is(sm, "stderr") ? STDERR_FILENO : -1;
    const char *data;
    size_t n;
    uint64_t pos;
    if (fd < 0 || !wire_obj_bytes(wire_get(m, "data"), &data, &n) ||
        !wire_obj_uint(wire_get(m, "pos"), &pos)) {
        warnmsg("logs: malformed output event from the agent");
        *status = EXIT_CONN;
        return 1;
    }
    logs_reach(st, pos);
    st->pos = pos + n;
    if (fd == STDERR_FILENO && st->err_gone)
        return 0;
    int r = write_full(fd, data, n);
    if (r == 0)
        return 0;
    if (fd == STDERR_FILENO) {
        st->err_gone = true;
        return 0;
    }
    if (r != -EPIPE)
        warnmsg("logs: stdout: %s", strerror(-r));
    *status = r == -EPIPE ? 0 : EXIT_FAILED;   /* `logs -f ID | head` just ends */
    return 1;
}

/* One message of the logs stream: 0 to go on, 1 with *status at its end. */
static int logs_event(struct logs_state *st, const msgpack_object *m, int *status)
{
    uint64_t a = 0, b = 0;
    if (client_msg_is(m, "output"))
        return logs_output(st, m, status);
    *status = 0;
    if (client_msg_is(m, "gap")) {
        if (wire_obj_uint(wire_get(m, "from"), &a) && wire_obj_uint(wire_get(m, "to"), &b) &&
            b > a) {
            report_gap(a, b);
            st->pos = b;
        }
        return 0;
    }
    if (client_msg_is(m, "end")) {
        if (wire_obj_uint(wire_get(m, "pos"), &a))
            logs_reach(st, a);
        return 1;
    }
    if (client_msg_is(m, "exit")) {
        /* the log holds every byte the command wrote: both streams' totals */
        if (wire_obj_uint(wire_get(m, "stdout_bytes"), &a) &&
            wire_obj_uint(wire_get(m, "stderr_bytes"), &b))
            logs_reach(st, a + b);
        return 1;
    }
    struct sa_err e;
    if (client_msg_is(m, "error"))
        client_reply_err(m, &e);
    else
        err_set(&e, EPROTO, "bad_frame", "unexpected message in the log stream");
    warnmsg("logs: %s", e.msg);
    *status = EXIT_CONN;
    return 1;
}

static uint64_t logs_request(struct client *c, const struct logs_opts *o, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "logs");
    wire_kv_uint(&w, "cmd", o->cmd);
    wire_kv_uint(&w, "from", o->from);
    wire_kv_bool(&w, "follow", o->follow);
    return client_end(c, &w, e) < 0 ? 0 : id;
}

static int logs_run(struct client *c, const struct logs_opts *o)
{
    struct sa_err e;
    msgpack_object m;
    struct logs_state st = { .pos = o->from };
    uint64_t id = logs_request(c, o, &e);
    int rc = id ? client_call(c, id, -1, &m, &e) : -1;
    if (rc != 0)
        return call_failed("logs", rc, &e);
    int status = 0;
    for (;;) {
        if (client_recv(c, -1, &m, &e) < 0) {
            warnmsg("logs: %s", e.msg);
            return EXIT_CONN;
        }
        if (client_msg_id(&m, id) && logs_event(&st, &m, &status) != 0)
            return status;
    }
}

int verb_logs(const char *addr, int argc, char **argv)
{
    struct logs_opts o;
    int rc = logs_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "logs", &rc);
    if (!c)
        return rc;
    rc = logs_run(c, &o);
    client_free(c);
    return rc;
}

/* --- wait ----------------------------------------------------------------- */

struct wait_opts {
    uint64_t cmd;
    uint64_t timeout_ms;        /* 0: wait forever */
};

static int wait_parse(int argc, char **argv, struct wait_opts *o)
{
    enum { OPT_TIMEOUT = 256 };
    static const struct option longopts[] = {
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_TIMEOUT:
            if (client_parse_secs(optarg, &o->timeout_ms) < 0)
                return usage_error("wait: --timeout wants a positive number of seconds, not '%s'",
                                   optarg);
            break;
        case ':': return usage_error("wait: option %s needs an argument", opt_name(argv));
        default: return usage_error("wait: unknown option %s", opt_name(argv));
        }
    }
    return one_id("wait", argc, argv, &o->cmd);
}

/* The exit status wait ends with, from the wait reply. */
static int wait_status(const struct wait_opts *o, const msgpack_object *reply)
{
    int64_t code;
    bool timed_out = false;
    if (!wire_obj_int(wire_get(reply, "code"), &code)) {
        warnmsg("wait: the agent's reply has no exit code");
        return EXIT_CONN;
    }
    if (wire_obj_bool(wire_get(reply, "timed_out"), &timed_out) && timed_out)
        warnmsg("command %" PRIu64 " timed out", o->cmd);
    return code >= 0 && code <= 255 ? (int)code : EXIT_CONN;
}

int verb_wait(const char *addr, int argc, char **argv)
{
    struct wait_opts o;
    struct sa_err e;
    msgpack_object reply;
    int rc = wait_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "wait", &rc);
    if (!c)
        return rc;
    rc = call_cmd(c, "wait", o.cmd, poll_ms(o.timeout_ms), &reply, &e);
    if (rc == 0) {
        rc = wait_status(&o, &reply);
    } else if (rc < 0 && o.timeout_ms && e.errnum == ETIMEDOUT) {
        char secs[32];
        client_fmt_secs(o.timeout_ms, secs, sizeof secs);
        warnmsg("wait: command %" PRIu64 " is still running after %s s", o.cmd, secs);
        rc = EXIT_WAIT_TIMEOUT;
    } else {
        warnmsg("wait: %s", e.msg);
        rc = rc == 1 && strcmp(e.code, "not_found") == 0 ? EXIT_NOT_FOUND : EXIT_CONN;
    }
    client_free(c);
    return rc;
}

/* --- kill ----------------------------------------------------------------- */

static int kill_parse(int argc, char **argv, int *sig, uint64_t *cmd)
{
    int ch;
    *sig = SIGTERM_LINUX;
    optind = 0;
    while ((ch = getopt(argc, argv, ":s:")) != -1) {
        switch (ch) {
        case 's':
            *sig = client_signal_parse(optarg);
            if (*sig < 0)
                return usage_error("kill: unknown signal '%s' (a name such as TERM, KILL, "
                                   "SIGINT, RTMIN+1, or a number 1..64)", optarg);
            break;
        case ':': return usage_error("kill: option %s needs an argument", opt_name(argv));
        default: return usage_error("kill: unknown option %s", opt_name(argv));
        }
    }
    return one_id("kill", argc, argv, cmd);
}

int verb_kill(const char *addr, int argc, char **argv)
{
    int sig;
    uint64_t cmd;
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    int rc = kill_parse(argc, argv, &sig, &cmd);
    if (rc == 0)
        rc = need_addr(addr);
    if (rc != 0)
        return rc;
    struct client *c = connect_or_die(addr);
    uint64_t id = client_begin(c, &w, "signal");
    wire_kv_uint(&w, "cmd", cmd);
    wire_kv_uint(&w, "signal", (uint64_t)sig);
    rc = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
    if (rc != 0)
        rc = call_failed("kill", rc, &e);
    client_free(c);
    return rc;
}

/* --- release -------------------------------------------------------------- */

/* release --all | release ID...: the agent forgets exited commands. */
int verb_release(const char *addr, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "all", no_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    bool all = false;
    int ch, rc;
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":a", longopts, NULL)) != -1) {
        if (ch != 'a')
            return usage_error("release: unknown option %s", opt_name(argv));
        all = true;
    }
    if (all == (optind < argc))
        return usage_error("release: give command ids or --all");
    for (int i = optind; i < argc; i++) {
        uint64_t id;
        if (client_parse_id(argv[i], &id) < 0)
            return usage_error("release: '%s' is not a command id (a number > 0)", argv[i]);
    }
    struct client *c = connect_cap(addr, "lifecycle", "release", &rc);
    if (!c)
        return rc;
    for (int i = all ? argc - 1 : optind; i < argc; i++) {
        struct wire_enc w;
        struct sa_err e;
        msgpack_object reply;
        uint64_t cmd = 0, id = client_begin(c, &w, "release");
        if (all) {
            wire_kv_bool(&w, "all", true);
        } else {
            client_parse_id(argv[i], &cmd);
            wire_kv_uint(&w, "cmd", cmd);
        }
        int r = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
        if (r != 0)
            rc = call_failed("release", r, &e);
        if (r < 0)
            break;
    }
    client_free(c);
    return rc;
}

/* --- inspect -------------------------------------------------------------- */

/* Append m as a JSON line without its "type" and "id" (a reply -> a record). */
static void record_json(struct buf *b, const msgpack_object *m)
{
    uint32_t n = m->type == MSGPACK_OBJECT_MAP ? m->via.map.size : 0, k = 0;
    msgpack_object_kv *kv = xcalloc(n + 1, sizeof *kv);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        if (!wire_obj_is(key, "type") && !wire_obj_is(key, "id"))
            kv[k++] = m->via.map.ptr[i];
    }
    msgpack_object rec = { .type = MSGPACK_OBJECT_MAP, .via.map = { .size = k, .ptr = kv } };
    json_write(b, &rec);
    buf_append(b, "\n", 1);
    free(kv);
}

int verb_inspect(const char *addr, int argc, char **argv)
{
    uint64_t cmd;
    struct sa_err e;
    msgpack_object reply;
    struct buf b;
    optind = 0;
    if (getopt(argc, argv, ":") != -1)
        return usage_error("inspect: unknown option %s", opt_name(argv));
    int rc = one_id("inspect", argc, argv, &cmd);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "inspect", &rc);
    if (!c)
        return rc;
    rc = call_cmd(c, "get", cmd, addr_timeout_from_env(), &reply, &e);
    if (rc == 0) {
        buf_init(&b);
        record_json(&b, &reply);
        rc = out_flush(&b, "inspect");
        buf_free(&b);
    } else {
        rc = call_failed("inspect", rc, &e);
    }
    client_free(c);
    return rc;
}

/* --- ps ------------------------------------------------------------------- */

enum { PS_ID, PS_PID, PS_STATE, PS_CODE, PS_STARTED, PS_DURATION, PS_NFIELDS };
#define PS_FIELD_MAX 32

static const char *const ps_head[PS_NFIELDS] = {
    "ID", "PID", "STATE", "CODE", "STARTED", "DURATION",
};
static const bool ps_right[PS_NFIELDS] = { true, true, false, true, false, true };

struct ps_row {
    char f[PS_NFIELDS][PS_FIELD_MAX];
    struct buf cmd;             /* the CMD column: argv joined */
};

struct ps_opts {
    bool all;
    bool json;
};

static int ps_parse(int argc, char **argv, struct ps_opts *o)
{
    enum { OPT_ALL = 256, OPT_JSON };
    static const struct option longopts[] = {
        { "all", no_argument, NULL, OPT_ALL },
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    memset(o, 0, sizeof *o);
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":a", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a':
        case OPT_ALL: o->all = true; break;
        case OPT_JSON: o->json = true; break;
        default: return usage_error("ps: unknown option %s", opt_name(argv));
        }
    }
    if (optind < argc)
        return usage_error("ps: unexpected argument '%s'", argv[optind]);
    return 0;
}

/* A uint field as text, or "-". */
static void ps_uint(char *out, const msgpack_object *rec, const char *key)
{
    uint64_t v;
    if (wire_obj_uint(wire_get(rec, key), &v))
        snprintf(out, PS_FIELD_MAX, "%" PRIu64, v);
    else
        snprintf(out, PS_FIELD_MAX, "-");
}

/* STATE: the agent's state word (only [a-z_-] kept), "timed-out" for an
 * exit by timeout. */
static void ps_state(char *out, const msgpack_object *rec)
{
    const char *s = "";
    size_t n = 0, k = 0;
    bool timed_out = false;
    if (wire_obj_bool(wire_get(rec, "timed_out"), &timed_out) && timed_out) {
        snprintf(out, PS_FIELD_MAX, "timed-out");
        return;
    }
    wire_obj_str(wire_get(rec, "state"), &s, &n);
    for (size_t i = 0; i < n && k + 1 < PS_FIELD_MAX; i++)
        out[k++] = (s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' || s[i] == '-' ? s[i] : '?';
    out[k] = '\0';
    if (k == 0)
        snprintf(out, PS_FIELD_MAX, "?");
}

/* DURATION: the exit's duration, or for a running command the time since its
 * start by the agent's clock (now_ms). */
static void ps_duration(char *out, const msgpack_object *rec, uint64_t now_ms)
{
    uint64_t ms, started;
    if (wire_obj_uint(wire_get(rec, "duration_ms"), &ms))
        client_fmt_duration(ms, out, PS_FIELD_MAX);
    else if (wire_obj_uint(wire_get(rec, "started_ms"), &started) && now_ms >= started)
        client_fmt_duration(now_ms - started, out, PS_FIELD_MAX);
    else
        snprintf(out, PS_FIELD_MAX, "-");
}

static void ps_fill(struct ps_row *r, const msgpack_object *rec, uint64_t now_ms)
{
    int64_t code;
    uint64_t started;
    ps_uint(r->f[PS_ID], rec, "cmd");
    ps_uint(r->f[PS_PID], rec, "pid");
    ps_state(r->f[PS_STATE], rec);
    if (wire_obj_int(wire_get(rec, "code"), &code))
        snprintf(r->f[PS_CODE], PS_FIELD_MAX, "%" PRId64, code);
    else
        snprintf(r->f[PS_CODE], PS_FIELD_MAX, "-");
    if (wire_obj_uint(wire_get(rec, "started_ms"), &started))
        client_fmt_utc(started, r->f[PS_STARTED], PS_FIELD_MAX);
    else
        snprintf(r->f[PS_STARTED], PS_FIELD_MAX, "-");
    ps_duration(r->f[PS_DURATION], rec, now_ms);
    buf_init(&r->cmd);
    client_join_argv(&r->cmd, wire_get(rec, "argv"));
}

/* Columns of stdout when it is a terminal, else 0 (no truncation). */
static size_t ps_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
        return ws.ws_col;
    return 0;
}

/* One line: the fields padded to widths, then cmd cut to the terminal. */
static void ps_line(struct buf *b, const char *const *f, const size_t *widths, const char *cmd,
                    size_t cmdlen, size_t term_cols)
{
    size_t col = 0;
    char cell[PS_FIELD_MAX + 8];
    for (int i = 0; i < PS_NFIELDS; i++) {
        int w = (int)widths[i];
        int n = snprintf(cell, sizeof cell, ps_right[i] ? "%*s  " : "%-*s  ", w, f[i]);
        buf_append(b, cell, (size_t)n);
        col += (size_t)n;
    }
    if (term_cols)
        cmdlen = col < term_cols ? client_fit_width(cmd, cmdlen, term_cols - col) : 0;
    buf_append(b, cmd, cmdlen);
    buf_append(b, "\n", 1);
}

static void ps_table(struct buf *b, struct ps_row *rows, size_t n)
{
    size_t widths[PS_NFIELDS], cols = ps_width();
    for (int i = 0; i < PS_NFIELDS; i++) {
        widths[i] = strlen(ps_head[i]);
        for (size_t r = 0; r < n; r++)
            if (strlen(rows[r].f[i]) > widths[i])
                widths[i] = strlen(rows[r].f[i]);
    }
    ps_line(b, ps_head, widths, "CMD", 3, cols);
    for (size_t r = 0; r < n; r++) {
        const char *f[PS_NFIELDS];
        for (int i = 0; i < PS_NFIELDS; i++)
            f[i] = rows[r].f[i];
        ps_line(b, f, widths, (const char *)buf_ptr(&rows[r].cmd), buf_size(&rows[r].cmd), cols);
    }
}

/* The rows of every page, rendered once all have come (column widths). */
struct ps_rows {
    struct ps_row *v;
    size_t n, cap;
};

static void ps_add(struct ps_rows *rs, const msgpack_object *list, uint64_t now_ms)
{
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        if (rs->n == rs->cap) {
            rs->cap = rs->cap ? 2 * rs->cap : 64;
            rs->v = xrealloc(rs->v, rs->cap * sizeof *rs->v);
        }
        memset(&rs->v[rs->n], 0, sizeof *rs->v);
        ps_fill(&rs->v[rs->n++], &list->via.array.ptr[i], now_ms);
    }
}

static void ps_rows_free(struct ps_rows *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        buf_free(&rs->v[i].cmd);
    free(rs->v);
}

/* The agent's clock, ms since the epoch (ping), so that running commands'
 * durations do not depend on the host's clock agreeing with the guest's. */
static int agent_time(struct client *c, uint64_t *now_ms, struct sa_err *e)
{
    struct wire_enc w;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "ping");
    int rc = client_end(c, &w, e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, e);
    if (rc == 0 && !wire_obj_uint(wire_get(&reply, "time_ms"), now_ms))
        *now_ms = 0;
    return rc;
}

/* One page of `list` (PROTOCOL.md "get, list, wait"): records with ids below
 * cursor (0: from the newest). */
static int ps_list(struct client *c, const struct ps_opts *o, uint64_t cursor,
                   msgpack_object *reply, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "list");
    wire_kv_bool(&w, "running", !o->all);
    if (cursor)
        wire_kv_uint(&w, "cursor", cursor);
    if (client_end(c, &w, e) < 0)
        return -1;
    int rc = client_call(c, id, addr_timeout_from_env(), reply, e);
    const msgpack_object *list = rc == 0 ? wire_get(reply, "commands") : NULL;
    if (rc == 0 && (!list || list->type != MSGPACK_OBJECT_ARRAY))
        return err_set(e, EPROTO, "bad_frame", "the agent's list reply has no commands array");
    return rc;
}

int verb_ps(const char *addr, int argc, char **argv)
{
    struct ps_opts o;
    struct sa_err e;
    msgpack_object reply;
    uint64_t now_ms = 0;
    struct buf b;
    int rc = ps_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    struct client *c = connect_cap(addr, "lifecycle", "ps", &rc);
    if (!c)
        return rc;
    if (!o.json && (rc = agent_time(c, &now_ms, &e)) != 0) {
        rc = call_failed("ps", rc, &e);
        client_free(c);
        return rc;
    }
    struct ps_rows rows = {0};
    uint64_t cursor = 0;
    bool more = true;
    buf_init(&b);
    while (more) {                       /* every page, newest first */
        if ((rc = ps_list(c, &o, cursor, &reply, &e)) != 0) {
            rc = call_failed("ps", rc, &e);
            goto out;
        }
        const msgpack_object *list = wire_get(&reply, "commands");
        if (!o.json)
            ps_add(&rows, list, now_ms);
        for (uint32_t i = 0; o.json && i < list->via.array.size; i++) {
            json_write(&b, &list->via.array.ptr[i]);
            buf_append(&b, "\n", 1);
        }
        more = wire_obj_bool(wire_get(&reply, "more"), &more) && more &&
               wire_obj_uint(wire_get(&reply, "cursor"), &cursor) && cursor > 0;
    }
    if (!o.json)
        ps_table(&b, rows.v, rows.n);
    rc = out_flush(&b, "ps");
out:
    ps_rows_free(&rows);
    buf_free(&b);
    client_free(c);
    return rc;
}

/* --- stats ---------------------------------------------------------------- */

static uint64_t stats_u(const msgpack_object *m, const char *key)
{
    uint64_t v;
    return wire_obj_uint(wire_get(m, key), &v) ? v : 0;
}

/* One formatted line (at most 255 bytes) appended to b. */
static void stats_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stats_printf(struct buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Bytes for people: "512 B", "3.1 KiB" ... "1.2 TiB". */
static void stats_fmt_bytes(uint64_t v, char *out, size_t n)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double d = (double)v;
    size_t u = 0;
    while (d >= 1024. && u + 1 < sizeof unit / sizeof unit[0]) {
        d /= 1024.;
        u++;
    }
    if (u == 0)
        snprintf(out, n, "%" PRIu64 " B", v);
    else
        snprintf(out, n, "%.1f %s", d, unit[u]);
}

static void stats_load(struct buf *b, const msgpack_object *reply)
{
    const msgpack_object *l = wire_get(reply, "load");
    stats_printf(b, "load        ");
    for (uint32_t i = 0; l && l->type == MSGPACK_OBJECT_ARRAY && i < l->via.array.size && i < 3; i++) {
        const msgpack_object *x = &l->via.array.ptr[i];
        double d = x->type == MSGPACK_OBJECT_FLOAT64 || x->type == MSGPACK_OBJECT_FLOAT32
                       ? x->via.f64 : 0.;
        stats_printf(b, "%s%.2f", i ? " " : "", d);
    }
    stats_printf(b, "\n");
}

static void stats_render(struct buf *b, const msgpack_object *r)
{
    char t1[32], t2[32], t3[32];
    client_fmt_duration(stats_u(r, "uptime_ms"), t1, sizeof t1);
    stats_printf(b, "uptime      %s\n", t1);
    stats_load(b, r);
    stats_fmt_bytes(stats_u(r, "mem_available"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "mem_total"), t2, sizeof t2);
    stats_printf(b, "memory      %s available of %s\n", t1, t2);
    stats_fmt_bytes(stats_u(r, "disk_free"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "disk_total"), t2, sizeof t2);
    stats_printf(b, "disk        %s free of %s (the workdir's filesystem)\n", t1, t2);
    stats_fmt_bytes(stats_u(r, "agent_rss"), t1, sizeof t1);
    stats_fmt_bytes(stats_u(r, "log_bytes"), t2, sizeof t2);
    stats_printf(b, "agent       rss %s, %" PRIu64 " fds, %" PRIu64 " connections, logs %s, "
               "generation %" PRIu64 "\n", t1, stats_u(r, "agent_fds"),
               stats_u(r, "connections"), t2, stats_u(r, "generation"));
    stats_printf(b, "commands    %" PRIu64 " running, %" PRIu64 " exited\n",
               stats_u(r, "commands_running"), stats_u(r, "commands_exited"));
    if (wire_get(r, "tunnels_open")) {           /* agents with the tunnel capability */
        stats_fmt_bytes(stats_u(r, "tunnel_bytes_in"), t1, sizeof t1);
        stats_fmt_bytes(stats_u(r, "tunnel_bytes_out"), t2, sizeof t2);
        stats_printf(b, "tunnels     %" PRIu64 " open, %" PRIu64 " total, %s in, %s out\n",
                     stats_u(r, "tunnels_open"), stats_u(r, "tunnels_total"), t1, t2);
    }
    const msgpack_object *l = wire_get(r, "commands");
    if (!l || l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size == 0)
        return;
    stats_printf(b, "%8s %8s %8s %10s\n", "ID", "PID", "CPU", "RSS");
    for (uint32_t i = 0; i < l->via.array.size; i++) {
        const msgpack_object *c = &l->via.array.ptr[i];
        client_fmt_duration(stats_u(c, "cpu_ms"), t1, sizeof t1);
        stats_fmt_bytes(stats_u(c, "rss"), t3, sizeof t3);
        stats_printf(b, "%8" PRIu64 " %8" PRIu64 " %8s %10s\n", stats_u(c, "cmd"), stats_u(c, "pid"),
                   t1, t3);
    }
}

int verb_stats(const char *addr, int argc, char **argv)
{
    enum { OPT_JSON = 256 };
    static const struct option longopts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 },
    };
    bool json = false;
    int ch, rc;
    optind = 0;
    while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (ch != OPT_JSON)
            return usage_error("stats: unknown option %s", opt_name(argv));
        json = true;
    }
    if (optind < argc)
        return usage_error("stats: unexpected argument '%s'", argv[optind]);
    if ((rc = need_addr(addr)) != 0)
        return rc;
    struct client *c = connect_or_die(addr);
    if ((rc = need_cap(c, "guest", "stats")) != 0) {
        client_free(c);
        return rc;
    }
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "stats");
    rc = client_end(c, &w, &e) < 0 ? -1 : client_call(c, id, addr_timeout_from_env(), &reply, &e);
    if (rc != 0) {
        rc = call_failed("stats", rc, &e);
        client_free(c);
        return rc;
    }
    struct buf b;
    buf_init(&b);
    if (json) {
        json_write(&b, &reply);
        buf_append(&b, "\n", 1);
    } else {
        stats_render(&b, &reply);
    }
    rc = out_flush(&b, "stats");
    buf_free(&b);
    client_free(c);
    return rc;
}
