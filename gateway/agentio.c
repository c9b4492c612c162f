/* agentio.c — a request's own blocking connection to its session's agent.
 *
 * The agent is untrusted (the guest has root): libsa_client bounds and
 * validates its frames; here the hello is checked (a frame bound above
 * GW_AGENT_MAX_FRAME is refused, so one request never holds more than that
 * plus its decode zone), and waits poll every GW_POLL_MS so that a stopped
 * session or a stopping gateway ends every blocked request.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "gw.h"

int agent_open(struct gw *gw, const struct sess *s, struct client **out, struct sa_err *e)
{
    struct client *c;
    if (client_connect(s->addr, gw->connect_timeout_ms, &c, e) < 0) {
        err_wrap(e, "agent %s", s->addr);
        e->code = "agent_unreachable";  /* never the socket's ENOENT: that is no 404 */
        return -1;
    }
    const struct client_hello *h = client_hello(c);
    uint32_t max_frame = h->max_frame;
    if (max_frame > GW_AGENT_MAX_FRAME || max_frame < WIRE_MAX_FRAME_MIN) {
        client_free(c);
        return err_set(e, 0, "bad_agent", "agent %s: max_frame %u out of range", s->addr,
                       max_frame);
    }
    if (h->auth_required && client_auth(c, s->token, s->token_len, e) < 0) {
        client_free(c);
        err_wrap(e, "agent %s", s->addr);
        e->code = "agent_auth";
        return -1;
    }
    *out = c;
    return 0;
}

static bool should_give_up(struct gw *gw, const struct sess *s, struct sa_err *e)
{
    if (atomic_load(&gw->stopping)) {
        err_set(e, 0, "sandbox_stream_closed", "the gateway is shutting down");
        return true;
    }
    if (s && atomic_load(&s->status) != SESS_RUNNING) {
        err_set(e, 0, "sandbox_stopped", "the session %s has stopped", s->id);
        return true;
    }
    return false;
}

/* The HTTP client behind a streamed response hung up: nobody will read what
 * the agent sends (a silent command would otherwise hold the thread and its
 * agent connection until it exits). */
static bool client_gone(int hfd, struct sa_err *e)
{
    struct pollfd p = { .fd = hfd, .events = POLLRDHUP };
    if (hfd < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return false;
    err_set(e, 0, "client_gone", "the HTTP client hung up");
    return true;
}

static int agent_recv_watch(struct gw *gw, const struct sess *s, struct client *c, int hfd,
                     msgpack_object *msg, struct sa_err *e)
{
    for (;;) {
        if (should_give_up(gw, s, e) || client_gone(hfd, e))
            return -1;
        if (client_recv(c, GW_POLL_MS, msg, e) == 0)
            return should_give_up(gw, s, e) ? -1 : 0;
        if (strcmp(e->code, "ETIMEDOUT") != 0) {
            should_give_up(gw, s, e);   /* a stop's provisioner may have closed it */
            return -1;
        }
    }
}

int agent_recv(struct gw *gw, const struct sess *s, struct client *c, msgpack_object *msg,
               struct sa_err *e)
{
    return agent_recv_watch(gw, s, c, -1, msg, e);
}

static int agent_call_watch(struct gw *gw, const struct sess *s, struct client *c, int hfd, uint64_t id,
                     msgpack_object *reply, struct sa_err *e)
{
    if (client_flush_all(c, gw->connect_timeout_ms, e) < 0)
        return -1;
    for (;;) {
        if (agent_recv_watch(gw, s, c, hfd, reply, e) < 0)
            return -1;
        if (!client_msg_id(reply, id))
            continue;
        if (client_msg_is(reply, "ok"))
            return 0;
        if (client_msg_is(reply, "error")) {
            client_reply_err(reply, e);
            return 1;
        }
    }
}

int agent_call(struct gw *gw, const struct sess *s, struct client *c, uint64_t id,
               msgpack_object *reply, struct sa_err *e)
{
    return agent_call_watch(gw, s, c, -1, id, reply, e);
}

int agent_cmd_call(struct gw *gw, const struct sess *s, struct client *c, const char *type,
                   uint64_t cmd, msgpack_object *reply, struct sa_err *e)
{
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, type);
    wire_kv_uint(&w, "cmd", cmd);
    if (client_end(c, &w, e) < 0)
        return -1;
    return agent_call(gw, s, c, id, reply, e);
}

json_t *agent_json_str(const msgpack_object *o, size_t max)
{
    const char *p;
    size_t n;
    if (!o || !wire_obj_str(o, &p, &n) || n > max)
        return NULL;
    struct buf b;
    struct u8tail t = { .n = 0 };
    buf_init(&b);
    utf8_clean(&t, (const uint8_t *)p, n, true, &b);
    json_t *j = json_stringn_nocheck(b.data ? (const char *)buf_ptr(&b) : "", buf_size(&b));
    buf_free(&b);
    return j;
}

void astream_init(struct agent_stream *a, struct route *r, struct client *c)
{
    a->gw = r->gw;
    a->s = sess_ref(r->gw, r->sess);
    a->c = c;
    a->hfd = http_fd(r->conn);
}

void astream_free(struct agent_stream *a)
{
    client_free(a->c);
    sess_put(a->gw, a->s);
}

int astream_recv(struct agent_stream *a, msgpack_object *msg, struct sa_err *e)
{
    return agent_recv_watch(a->gw, a->s, a->c, a->hfd, msg, e);
}

int astream_call(struct agent_stream *a, uint64_t id, msgpack_object *reply, struct sa_err *e)
{
    return agent_call_watch(a->gw, a->s, a->c, a->hfd, id, reply, e);
}
