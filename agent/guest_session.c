/* guest_session.c — session defaults: `set_defaults` and its env, cwd and
 * user checks (docs/agent.md "Session defaults"). */
#include "guest.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "conn.h"
#include "log.h"

/* --- session defaults -------------------------------------------------------- */

/* A {str:str} map as one allocation: pointers ("K=V"), NULL, then the strings. */
static int guest_parse_env(const msgpack_object *o, char ***out, size_t *outn, struct sa_err *e)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return err_set(e, 0, "bad_request", "field 'env' must be a map of strings");
    size_t n = o->via.map.size, bytes = 0;
    if (n > GUEST_ENV_MAX)
        return err_set(e, 0, "bad_request", "env: at most %d entries", GUEST_ENV_MAX);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const char *k, *v;
        size_t kn, vn;
        if (!wire_obj_str(&kv->key, &k, &kn) || !wire_obj_str(&kv->val, &v, &vn))
            return err_set(e, 0, "bad_request", "env entries must be string to string");
        if (kn == 0 || memchr(k, '=', kn) || memchr(k, '\0', kn) || memchr(v, '\0', vn))
            return err_set(e, 0, "bad_request",
                           "env key must be non-empty without '=' or NUL; value without NUL");
        bytes += kn + vn + 2;
        if (bytes > GUEST_ENV_BYTES)
            return err_set(e, 0, "bad_request", "env: at most %u bytes", GUEST_ENV_BYTES);
    }
    char **v = xmalloc((n + 1) * sizeof(char *) + bytes);
    char *p = (char *)(v + n + 1);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_str *k = &o->via.map.ptr[i].key.via.str;
        const msgpack_object_str *s = &o->via.map.ptr[i].val.via.str;
        v[i] = p;
        memcpy(p, k->ptr, k->size);
        p[k->size] = '=';
        memcpy(p + k->size + 1, s->ptr, s->size);
        p[k->size + 1 + s->size] = '\0';
        p += k->size + s->size + 2;
    }
    v[n] = NULL;
    *out = v;
    *outn = n;
    return 0;
}

/* cwd made absolute (a relative one is below the workdir), allocated. */
static int guest_parse_cwd(struct agent *a, const char *cwd, char **out, struct sa_err *e)
{
    if (cwd[0] == '\0' || strlen(cwd) >= PATH_MAX)
        return err_set(e, 0, "bad_request", "field 'cwd' must be a path of 1..%d bytes",
                       PATH_MAX - 1);
    if (cwd[0] == '/') {
        *out = xstrdup(cwd);
        return 0;
    }
    size_t n = strlen(a->workdir) + 1 + strlen(cwd) + 1;
    *out = xmalloc(n);
    snprintf(*out, n, "%s/%s", a->workdir, cwd);
    return 0;
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

int guest_set_defaults(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                       struct sa_err *e)
{
    struct agent *a = c->a;
    char *cwd = NULL, *user = NULL;
    const msgpack_object *env_o = wire_get(m, "env");
    if (wire_opt_cstr(m, "cwd", &a->zone, &cwd, e) < 0 ||
        wire_opt_cstr(m, "user", &a->zone, &user, e) < 0)
        return -1;
    if (user && guest_check_user(a, user, e) < 0)
        return -1;
    cleanup_free char *abs_cwd = NULL;
    if (cwd && guest_parse_cwd(a, cwd, &abs_cwd, e) < 0)
        return -1;
    char **env = NULL;
    size_t envc = 0;
    if (env_o && guest_parse_env(env_o, &env, &envc, e) < 0)
        return -1;
    /* everything is valid: apply */
    if (env_o) {
        free(a->default_env);
        a->default_env = env;
        a->default_envc = envc;
    }
    if (abs_cwd) {
        free(a->default_cwd);
        a->default_cwd = steal_pointer(&abs_cwd);
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
