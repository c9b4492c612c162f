/* guest_session.c — session defaults: `set_defaults` and its env, cwd and
 * user checks (docs/agent.md "Session defaults"). */
#include "guest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "conn.h"
#include "log.h"

/* cwd made absolute (a relative one is below the workdir), allocated. */
static char *guest_abs_cwd(struct agent *a, const char *cwd)
{
    if (cwd[0] == '/')
        return xstrdup(cwd);
    size_t n = strlen(a->workdir) + 1 + strlen(cwd) + 1;
    char *out = xmalloc(n);
    snprintf(out, n, "%s/%s", a->workdir, cwd);
    return out;
}

/* The user must exist; in dev mode only the agent's own user is possible. */
static int guest_check_user(struct agent *a, const char *user, struct sa_err *e)
{
    if (a->dev) {
        if (strcmp(user, a->default_user) != 0)
            return err_set(e, EPERM, NULL, "dev mode: the agent is not root and runs every "
                                           "command as itself (%s)", a->default_user);
        return 0;
    }
    const struct ident *id;
    return ident_lookup(&a->idents, user, &id, e);
}

int guest_set_defaults(struct conn *c, const struct wire_req *r, struct guest_defaults_req *q,
                       struct sa_err *e)
{
    struct agent *a = c->a;
    const char *user = q->user;
    if (user && guest_check_user(a, user, e) < 0)
        return -1;
    /* everything is valid: apply */
    if (q->has_env) {
        free(a->default_env);
        a->default_env = steal_pointer(&q->env);
        a->default_envc = q->envc;
    }
    if (q->cwd) {
        free(a->default_cwd);
        a->default_cwd = guest_abs_cwd(a, q->cwd);
    }
    if (user) {
        free((char *)a->default_user);
        a->default_user = xstrdup(user);
    }
    log_info("session defaults: user %s, cwd %s, %zu env entries", a->default_user,
             agent_default_cwd(a), a->default_envc);
    wire_msg_ok(conn_out(c), r->id);
    return 0;
}

void guest_free(struct agent *a)
{
    guest_syncs_free(a);
    free(a->default_env);
    free(a->default_cwd);
    a->default_env = NULL;
    a->default_cwd = NULL;
    a->default_envc = 0;
}
