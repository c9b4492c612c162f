/* guest_auth.c — the shared token: the gate in front of every request and
 * the `auth` request (docs/agent.md "Who may talk to the agent"). */
#include "guest.h"

#include <stdbool.h>

#include "agent.h"
#include "conn.h"
#include "log.h"

/* --- the token -------------------------------------------------------------- */

/* Constant time in the length of the secret, whatever the guess. */
static bool guest_token_eq(const char *want, size_t wn, const char *got, size_t gn)
{
    unsigned char d = wn != gn;
    for (size_t i = 0; i < wn; i++)
        d |= (unsigned char)(want[i] ^ (i < gn ? got[i] : 0));
    return d == 0;
}

int guest_check_auth(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    if (c->authed || wire_req_is(r, "auth"))
        return 0;
    int n = (int)(r->type_len > 32 ? 32 : r->type_len);
    /* one warning per connection; the rest at debug level (no log flooding) */
    if (!c->auth_refused)
        log_warn("conn %llu (%s): '%.*s' refused: not authenticated", (unsigned long long)c->serial,
                 c->peer, n, r->type);
    else
        log_debug("conn %llu: '%.*s' refused: not authenticated", (unsigned long long)c->serial,
                  n, r->type);
    c->auth_refused = true;
    return err_set(e, 0, "auth_required", "authenticate first: send auth {token}");
}

int guest_auth(struct conn *c, const struct wire_req *r, const char *tok, size_t n,
               struct sa_err *e)
{
    const struct cfg *cfg = &c->a->cfg;
    if (cfg->token_len && !guest_token_eq(cfg->token, cfg->token_len, tok, n)) {
        log_warn("conn %llu (%s): wrong token; closing", (unsigned long long)c->serial, c->peer);
        c->authed = false;
        conn_close_soon(c);     /* after this error reply */
        return err_set(e, 0, "auth_required", "wrong token");
    }
    c->authed = true;
    log_debug("conn %llu: authenticated", (unsigned long long)c->serial);
    wire_msg_ok(conn_out(c), r->id);
    return 0;
}
