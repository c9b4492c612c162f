#include "reader.h"

#include <stdlib.h>

#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "msg.h"

struct reader *rd_open(struct cmd *c, struct conn *conn, uint64_t req_id, uint64_t from,
                       bool follow, bool is_exec)
{
    struct reader *r = xcalloc(1, sizeof *r);
    r->cmd = c;
    r->conn = conn;
    r->req_id = req_id;
    r->pos = from > c->log.o.end ? c->log.o.end : from;
    r->follow = follow;
    r->is_exec = is_exec;
    r->cnext = c->readers;
    if (c->readers)
        c->readers->cprev = r;
    c->readers = r;
    r->knext = conn->readers;
    if (conn->readers)
        conn->readers->kprev = r;
    conn->readers = r;
    conn->streams++;
    if (follow)
        lstore_protect(&c->log, rd_protected_from(c));
    return r;
}

void rd_close(struct reader *r)
{
    struct cmd *c = r->cmd;
    struct conn *conn = r->conn;
    if (r->cprev)
        r->cprev->cnext = r->cnext;
    else
        c->readers = r->cnext;
    if (r->cnext)
        r->cnext->cprev = r->cprev;
    if (r->kprev)
        r->kprev->knext = r->knext;
    else
        conn->readers = r->knext;
    if (r->knext)
        r->knext->kprev = r->kprev;
    conn->streams--;
    bool follow = r->follow;
    free(r);
    if (follow)                  /* it may have been what held the pipes */
        lstore_followed(&c->a->logs, &c->log, rd_protected_from(c));
    conn_idle_check(conn);
}

uint64_t rd_protected_from(const struct cmd *c)
{
    uint64_t min = UINT64_MAX;
    for (const struct reader *r = c->readers; r; r = r->cnext)
        if (r->follow && r->pos < min)
            min = r->pos;
    return min;
}

bool rd_has_exec_stream(const struct cmd *c)
{
    for (const struct reader *r = c->readers; r; r = r->cnext)
        if (r->is_exec)
            return true;
    return false;
}

static void rd_send_gap(struct reader *r, uint64_t to)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(r->conn), 5);
    wire_kv_str(&w, "type", "gap");
    wire_kv_uint(&w, "id", r->req_id);
    wire_kv_uint(&w, "cmd", r->cmd->id);
    wire_kv_uint(&w, "from", r->pos);
    wire_kv_uint(&w, "to", to);
    wire_end(&w);
    r->pos = to;
}

static void rd_send_end(struct reader *r)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(r->conn), 4);
    wire_kv_str(&w, "type", "end");
    wire_kv_uint(&w, "id", r->req_id);
    wire_kv_uint(&w, "cmd", r->cmd->id);
    wire_kv_uint(&w, "pos", r->pos);
    wire_end(&w);
}

/* Returns true when the reader is finished (and freed). */
static bool rd_step(struct reader *r)
{
    struct cmd *c = r->cmd;
    const struct olog *l = &c->log.o;
    if (r->pos < l->start) {
        rd_send_gap(r, l->start);
        return false;
    }
    if (r->pos >= l->end) {
        if (c->done) {
            struct wire_exit x;
            cmd_exit_info(c, &x);
            wire_msg_exit(conn_out(r->conn), r->req_id, &x);
        } else if (!r->follow) {
            rd_send_end(r);
        } else {
            return false;
        }
        struct conn *conn = r->conn;
        rd_close(r);
        conn_kick(conn);
        return true;
    }
    const struct olog_chunk *k = olog_find(l, r->pos);
    uint64_t skip = r->pos - k->pos;
    wire_msg_output(conn_out(r->conn), r->req_id, c->id, k->stream ? WIRE_STDERR : WIRE_STDOUT,
                    k->offset + skip, r->pos, k->data + skip, k->len - skip);
    r->pos = k->pos + k->len;
    return false;
}

void rd_pump(struct reader *r)
{
    struct cmd *c = r->cmd;
    struct conn *conn = r->conn;
    uint64_t before = r->pos;
    bool follow = r->follow;
    for (;;) {
        if (conn->broken)
            break;
        if (conn_congested(conn)) {
            conn->starved = true;    /* conn_write_cb pumps it again */
            break;
        }
        if (r->pos >= c->log.o.end && !c->done && r->follow)
            break;
        if (rd_step(r))
            return;          /* finished and freed; it kicked the connection */
    }
    conn_kick(conn);
    if (follow && r->pos != before)
        lstore_followed(&c->a->logs, &c->log, rd_protected_from(c));
}

void rd_pump_cmd(struct cmd *c)
{
    for (struct reader *r = c->readers, *next; r; r = next) {
        next = r->cnext;
        rd_pump(r);
    }
}

void rd_pump_conn(struct conn *conn)
{
    for (struct reader *r = conn->readers, *next; r; r = next) {
        next = r->knext;
        rd_pump(r);
    }
}
