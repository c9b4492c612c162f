#include "reader.h"

#include <stdlib.h>

#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "msg.h"

static void rd_closed(struct conn_pending *p)
{
    rd_close(container_of(p, struct reader, pend));
}

static void rd_drained(struct conn_pending *p)
{
    rd_pump(container_of(p, struct reader, pend));
}

static const struct conn_pending_ops rd_pending_ops = {rd_closed, rd_drained};

struct reader *rd_open(struct cmd *c, struct conn *conn, uint64_t req_id, uint64_t from,
                       bool follow, bool is_exec)
{
    struct reader *r = xcalloc(1, sizeof *r);
    r->cmd = c;
    r->pos = from > c->log.o.end ? c->log.o.end : from;
    r->follow = follow;
    r->is_exec = is_exec;
    LIST_INSERT_HEAD(&c->readers, r, link);
    conn_pending_add(conn, &r->pend, &rd_pending_ops, req_id, true);
    if (follow)
        lstore_protect(&c->log, rd_protected_from(c));
    return r;
}

void rd_close(struct reader *r)
{
    struct cmd *c = r->cmd;
    LIST_REMOVE(r, link);
    conn_pending_remove(&r->pend);
    bool follow = r->follow;
    free(r);
    if (follow)                  /* it may have been what held the pipes */
        lstore_followed(&c->a->logs, &c->log, rd_protected_from(c));
}

uint64_t rd_protected_from(const struct cmd *c)
{
    uint64_t min = UINT64_MAX;
    const struct reader *r;
    LIST_FOREACH(r, &c->readers, link)
        if (r->follow && r->pos < min)
            min = r->pos;
    return min;
}

bool rd_has_exec_stream(const struct cmd *c)
{
    const struct reader *r;
    LIST_FOREACH(r, &c->readers, link)
        if (r->is_exec)
            return true;
    return false;
}

static void rd_send_gap(struct reader *r, uint64_t to)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(r->pend.conn));
    wire_kv_str(&w, "type", "gap");
    wire_kv_uint(&w, "id", r->pend.req_id);
    wire_kv_uint(&w, "cmd", r->cmd->id);
    wire_kv_uint(&w, "from", r->pos);
    wire_kv_uint(&w, "to", to);
    wire_end(&w);
    r->pos = to;
}

static void rd_send_end(struct reader *r)
{
    struct wire_enc w;
    wire_begin(&w, conn_out(r->pend.conn));
    wire_kv_str(&w, "type", "end");
    wire_kv_uint(&w, "id", r->pend.req_id);
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
            wire_msg_exit(conn_out(r->pend.conn), r->pend.req_id, &x);
        } else if (!r->follow) {
            rd_send_end(r);
        } else {
            return false;
        }
        struct conn *conn = r->pend.conn;
        rd_close(r);
        conn_kick(conn);
        return true;
    }
    const struct olog_chunk *k = olog_find(l, r->pos);
    uint64_t skip = r->pos - k->pos;
    wire_msg_output(conn_out(r->pend.conn), r->pend.req_id, c->id,
                    k->stream ? WIRE_STDERR : WIRE_STDOUT, k->offset + skip, r->pos,
                    k->data + skip, k->len - skip);
    r->pos = k->pos + k->len;
    return false;
}

void rd_pump(struct reader *r)
{
    struct cmd *c = r->cmd;
    struct conn *conn = r->pend.conn;
    uint64_t before = r->pos;
    bool follow = r->follow;
    for (;;) {
        if (conn->broken)
            break;
        if (conn_congested(conn)) {
            conn_pending_starve(&r->pend);   /* pumped again when there is room */
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
    for (struct reader *r = LIST_FIRST(&c->readers), *next; r; r = next) {
        next = LIST_NEXT(r, link);
        rd_pump(r);
    }
}
