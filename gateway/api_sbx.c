/* api_sbx.c — the control plane: sandboxes and sessions.
 *
 * A sandbox is a name; each boot of it is a session with its own agent. The
 * create parameters the gateway understands (env, timeout, resources.vcpus,
 * runtime, image, tags, ports, persistent) are kept with the sandbox so that
 * a resume (GET /v2/sandboxes/NAME?resume=true after a stop) boots a new
 * session like the first. Snapshots, network policies, mounts and sources
 * are not supported (400 not_supported).
 */
#include <string.h>

#include "gw.h"

#define LIST_LIMIT_MAX 100

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len >= GW_NAME_MAX)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static enum MHD_Result bad(struct route *r, const struct jerr *je)
{
    return http_err(r->conn, 400, "bad_request", "%s", je->msg);
}

/* 'ports': absent, null, or an array of at most GW_ROUTES_MAX port numbers. */
static int check_ports(json_t *ports, struct jerr *je)
{
    json_t *v;
    size_t i;
    if (!ports || json_is_null(ports))
        return 0;
    if (!json_is_array(ports) || json_array_size(ports) > GW_ROUTES_MAX) {
        snprintf(je->msg, sizeof je->msg, "'ports' must be an array of at most %d ports",
                 GW_ROUTES_MAX);
        return -1;
    }
    json_array_foreach(ports, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
            snprintf(je->msg, sizeof je->msg, "'ports[%zu]' must be a port number", i);
            return -1;
        }
    }
    return 0;
}

/* The parameters of a create body the gateway keeps (checked). */
static int create_params(json_t *body, json_t **out, struct jerr *je, const char **unsupported)
{
    int64_t timeout = GW_DEFAULT_TIMEOUT_MS, vcpus = 2;
    bool persistent = false;
    const char *runtime = NULL, *image = NULL;
    json_t *env = NULL;
    if (j_opt_int(body, "timeout", &timeout, 1, GW_MAX_TIMEOUT_MS, je) < 0 ||
        j_opt_env(body, "env", &env, je) < 0 || j_opt_env(body, "tags", &env, je) < 0 ||
        j_opt_bool(body, "persistent", &persistent, je) < 0 ||
        j_opt_str(body, "runtime", &runtime, 256, je) < 0 ||
        j_opt_str(body, "image", &image, 1024, je) < 0)
        return -1;
    env = json_object_get(body, "env");
    json_t *res = json_object_get(body, "resources");
    if (res && !json_is_null(res)) {
        if (!json_is_object(res) || j_opt_int(res, "vcpus", &vcpus, 1, 256, je) < 0) {
            if (!json_is_object(res))
                snprintf(je->msg, sizeof je->msg, "'resources' must be an object");
            else
                snprintf(je->msg, sizeof je->msg, "'resources.vcpus' must be an integer from 1 to 256");
            return -1;
        }
    }
    json_t *ports = json_object_get(body, "ports");
    if (check_ports(ports, je) < 0)
        return -1;
    json_t *src = json_object_get(body, "source"), *np = json_object_get(body, "networkPolicy"),
           *mounts = json_object_get(body, "mounts");
    if (src && !json_is_null(src))
        *unsupported = "source (snapshots, git)";
    else if (np && !json_is_null(np) &&
             !(json_is_object(np) && json_is_string(json_object_get(np, "mode")) &&
               strcmp(json_string_value(json_object_get(np, "mode")), "allow-all") == 0))
        *unsupported = "networkPolicy other than allow-all";
    else if (mounts && !json_is_null(mounts) && !(json_is_object(mounts) && json_object_size(mounts) == 0))
        *unsupported = "mounts";
    json_t *envv = env && !json_is_null(env) ? json_incref(env) : json_object();
    *out = json_pack("{s:I, s:I, s:b, s:o}", "timeout", (json_int_t)timeout, "vcpus",
                     (json_int_t)vcpus, "persistent", persistent, "env", envv);
    if (runtime)
        json_object_set_new(*out, "runtime", json_string(runtime));
    if (image)
        json_object_set_new(*out, "image", json_string(image));
    json_t *tags = json_object_get(body, "tags");
    if (json_is_object(tags))
        json_object_set(*out, "tags", tags);
    if (json_is_array(ports))
        json_object_set(*out, "ports", ports);
    return 0;
}

/* The agent's hello gives the session its cwd (its workdir). */
static int session_hello(struct gw *gw, struct sess *s, struct sa_err *e)
{
    struct client *c;
    int64_t deadline = clock_mono_ms() + gw->prov_timeout_ms;
    /* a booting VM may not listen yet: retry until the provisioning deadline */
    while (agent_open(gw, s, &c, e) < 0) {
        if (clock_mono_ms() >= deadline || atomic_load(&gw->stopping) ||
            strcmp(e->code, "agent_auth") == 0 || strcmp(e->code, "bad_agent") == 0)
            return -1;
        usleep(100 * 1000);
    }
    const char *wd = client_hello(c)->workdir;
    size_t n = strlen(wd);
    int rc = 0;
    if (n == 0 || n >= sizeof s->cwd || wd[0] != '/')
        rc = err_set(e, 0, "bad_agent", "agent %s: workdir is not an absolute path", s->addr);
    else {
        json_t *j = json_stringn(wd, n);      /* NULL when not UTF-8 */
        if (!j)
            rc = err_set(e, 0, "bad_agent", "agent %s: workdir is not UTF-8", s->addr);
        json_decref(j);
        pthread_mutex_lock(&gw->lock);      /* s is in the table already */
        memcpy(s->cwd, wd, n + 1);
        pthread_mutex_unlock(&gw->lock);
    }
    client_free(c);
    return rc;
}

/* Boot a new session of sandbox name; NULL with e on failure (nothing left). */
static struct sess *session_boot(struct gw *gw, const char *name, json_t *params,
                                 struct sa_err *e)
{
    struct sess *s = xcalloc(1, sizeof *s);
    memcpy(s->id, "sess_", 5);
    gw_random_hex(s->id + 5, 24);
    snprintf(s->sandbox, sizeof s->sandbox, "%s", name);
    s->env = json_incref(json_object_get(params, "env"));
    if (!s->env)
        s->env = json_object();
    s->vcpus = json_integer_value(json_object_get(params, "vcpus"));
    s->memory = s->vcpus * 2048;
    s->created_ms = s->started_ms = s->updated_ms = gw_now_ms();
    s->timeout_ms = json_integer_value(json_object_get(params, "timeout"));
    atomic_store(&s->status, SESS_RUNNING);
    s->refs = 2;                /* the table's and ours */
    json_t *req = json_deep_copy(params);
    json_object_set_new(req, "name", json_string(name));
    json_object_set_new(req, "sessionId", json_string(s->id));
    char *input = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int rc = prov_create(gw, s, input, e);
    free(input);
    if (rc < 0) {
        json_decref(s->env);
        free(s);
        return NULL;
    }
    int hello = session_hello(gw, s, e);
    if (hello == 0) {
        pthread_mutex_lock(&gw->lock);
        hello = routes_set(gw, s, json_object_get(params, "ports"), e);
        pthread_mutex_unlock(&gw->lock);
    }
    if (hello < 0) {
        sess_stop(gw, s, "its agent did not answer or its routes could not listen");
        pthread_mutex_lock(&gw->lock);
        sess_remove(gw, s);
        state_save(gw);
        pthread_mutex_unlock(&gw->lock);
        sess_put(gw, s);
        return NULL;
    }
    gw_log("session %s of sandbox %s: agent %s, cwd %s", s->id, name, s->addr, s->cwd);
    return s;
}

/* {sandbox, session, routes}, under gw->lock. */
static json_t *sandbox_reply(struct gw *gw, struct sbx *b, struct sess *s)
{
    return json_pack("{s:o, s:o, s:o}", "sandbox", sbx_json(gw, b), "session", sess_json(gw, s),
                     "routes", routes_json(gw, s));
}

static enum MHD_Result boot_fail(struct route *r, const struct sa_err *e)
{
    if (strcmp(e->code, "no_capacity") == 0)
        return http_err(r->conn, 503, e->code, "%s", e->msg);
    return http_err(r->conn, 502, "provisioning_failed", "%s", e->msg);
}

enum MHD_Result api_create(struct route *r)
{
    struct gw *gw = r->gw;
    json_t *body = r->body ? r->body : json_object(), *params = NULL;
    if (!r->body)
        r->body = body;
    struct jerr je;
    const char *unsupported = NULL, *name = NULL;
    char gen[GW_NAME_MAX];
    if (j_opt_str(body, "name", &name, GW_NAME_MAX - 1, &je) < 0)
        return bad(r, &je);
    if (name && !name_ok(name))
        return http_err(r->conn, 400, "bad_request",
                        "'name' must be 1..%d characters of [A-Za-z0-9._-]", GW_NAME_MAX - 1);
    if (create_params(body, &params, &je, &unsupported) < 0)
        return bad(r, &je);
    if (unsupported) {
        json_decref(params);
        return http_err(r->conn, 400, "not_supported", "%s is not supported by sandbox-gateway",
                        unsupported);
    }
    if (!name) {
        memcpy(gen, "sbx-", 4);
        gw_random_hex(gen + 4, 16);
        name = gen;
    }
    pthread_mutex_lock(&gw->lock);
    bool taken = sbx_find(gw, name) != NULL;
    pthread_mutex_unlock(&gw->lock);
    if (taken) {
        json_decref(params);
        return http_err(r->conn, 409, "sandbox_exists", "a sandbox named '%s' exists", name);
    }
    struct sa_err e;
    struct sess *s = session_boot(gw, name, params, &e);
    if (!s) {
        json_decref(params);
        return boot_fail(r, &e);
    }
    pthread_mutex_lock(&gw->lock);
    if (sbx_find(gw, name)) {   /* a concurrent create won */
        pthread_mutex_unlock(&gw->lock);
        json_decref(params);
        sess_stop(gw, s, "lost a create race");
        sess_put(gw, s);
        return http_err(r->conn, 409, "sandbox_exists", "a sandbox named '%s' exists", name);
    }
    struct sbx *b = xcalloc(1, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->persistent = json_is_true(json_object_get(params, "persistent"));
    b->created_ms = b->updated_ms = s->created_ms;
    snprintf(b->cur, sizeof b->cur, "%s", s->id);
    b->params = params;
    sbx_add(gw, b);
    state_save(gw);
    json_t *reply = sandbox_reply(gw, b, s);
    pthread_mutex_unlock(&gw->lock);
    sess_put(gw, s);
    return http_json(r->conn, 200, reply);
}

/* The sandbox named in the path with gw->lock held, or NULL (unlocked). */
static struct sbx *sbx_lock(struct route *r)
{
    pthread_mutex_lock(&r->gw->lock);
    struct sbx *b = sbx_find(r->gw, r->name);
    if (!b)
        pthread_mutex_unlock(&r->gw->lock);
    return b;
}

static enum MHD_Result no_sandbox(struct route *r, const char *name)
{
    return http_err(r->conn, 404, "not_found", "no sandbox '%.128s'", name);
}

static struct sess *current(struct gw *gw, struct sbx *b)
{
    for (size_t i = 0; i < gw->nsess; i++)
        if (strcmp(gw->sess[i]->id, b->cur) == 0)
            return gw->sess[i];
    return NULL;
}

enum MHD_Result api_sandbox_get(struct route *r)
{
    struct gw *gw = r->gw;
    const char *resume = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "resume");
    bool want_resume = resume && strcmp(resume, "true") == 0;
    struct sbx *b = sbx_lock(r);
    if (!b)
        return no_sandbox(r, r->name);
    struct sess *s = current(gw, b);
    if (s && (sess_live(s) || !want_resume)) {
        json_t *reply = sandbox_reply(gw, b, s);
        pthread_mutex_unlock(&gw->lock);
        return http_json(r->conn, 200, reply);
    }
    if (!want_resume) {     /* its session was forgotten (GW_SESSIONS_MAX) */
        pthread_mutex_unlock(&gw->lock);
        return http_err(r->conn, 410, "sandbox_stopped",
                        "the sandbox '%.128s' has no running session; resume it", r->name);
    }
    json_t *params = json_incref(b->params);
    char name[GW_NAME_MAX];
    snprintf(name, sizeof name, "%s", b->name);
    pthread_mutex_unlock(&gw->lock);
    struct sa_err e;
    s = session_boot(gw, name, params, &e);
    json_decref(params);
    if (!s)
        return boot_fail(r, &e);
    pthread_mutex_lock(&gw->lock);
    b = sbx_find(gw, name);
    if (!b) {
        pthread_mutex_unlock(&gw->lock);
        sess_stop(gw, s, "its sandbox was deleted");
        sess_put(gw, s);
        return no_sandbox(r, name);
    }
    struct sess *old = current(gw, b);
    snprintf(b->cur, sizeof b->cur, "%s", s->id);
    b->updated_ms = gw_now_ms();
    if (old)
        old->refs++;
    state_save(gw);
    json_t *reply = sandbox_reply(gw, b, s);
    json_object_set_new(reply, "resumed", json_true());
    pthread_mutex_unlock(&gw->lock);
    if (old) {      /* a concurrent resume may have booted one too: one stays */
        sess_stop(gw, old, "replaced by a resume");
        sess_put(gw, old);
    }
    sess_put(gw, s);
    return http_json(r->conn, 200, reply);
}

/* One page of a list, newest first: ?limit (1..LIST_LIMIT_MAX, default 50)
 * and ?cursor (the position where the previous page stopped). */
struct pager {
    int64_t limit, start, seen, next;
    json_t *items;
};

static int pager_init(struct route *r, struct pager *p)
{
    const char *l = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *c = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "cursor");
    char *end;
    *p = (struct pager){ .limit = 50, .next = -1 };
    if (l) {
        p->limit = strtoll(l, &end, 10);
        if (*end || p->limit < 1 || p->limit > LIST_LIMIT_MAX)
            return -1;
    }
    if (c) {
        p->start = strtoll(c, &end, 10);
        if (*end || p->start < 0)
            return -1;
    }
    p->items = json_array();
    return 0;
}

/* 1: the next matching item belongs on the page; 0: skip it; -1: the page is full. */
static int pager_step(struct pager *p)
{
    if (p->seen < p->start) {
        p->seen++;
        return 0;
    }
    if ((int64_t)json_array_size(p->items) < p->limit) {
        p->seen++;
        return 1;
    }
    p->next = p->seen;
    return -1;
}

static enum MHD_Result pager_reply(struct route *r, struct pager *p, const char *key)
{
    char next[32];
    snprintf(next, sizeof next, "%lld", (long long)p->next);
    size_t n = json_array_size(p->items);
    return http_json(r->conn, 200,
                     json_pack("{s:o, s:{s:I, s:o}}", key, p->items, "pagination", "count",
                               (json_int_t)n, "next",
                               p->next >= 0 ? json_string(next) : json_null()));
}

static enum MHD_Result pager_bad(struct route *r)
{
    return http_err(r->conn, 400, "bad_request",
                    "'limit' must be 1..%d and 'cursor' a cursor from a previous page",
                    LIST_LIMIT_MAX);
}

enum MHD_Result api_sandbox_list(struct route *r)
{
    struct gw *gw = r->gw;
    struct pager pg;
    if (pager_init(r, &pg) < 0)
        return pager_bad(r);
    const char *prefix = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "namePrefix");
    pthread_mutex_lock(&gw->lock);
    for (size_t i = gw->nsbx; i-- > 0;) {     /* newest first */
        struct sbx *b = gw->sbx[i];
        if (prefix && strncmp(b->name, prefix, strlen(prefix)) != 0)
            continue;
        int k = pager_step(&pg);
        if (k < 0)
            break;
        if (k > 0)
            json_array_append_new(pg.items, sbx_json(gw, b));
    }
    pthread_mutex_unlock(&gw->lock);
    return pager_reply(r, &pg, "sandboxes");
}

enum MHD_Result api_sandbox_delete(struct route *r)
{
    struct gw *gw = r->gw;
    pthread_mutex_lock(&gw->lock);
    struct sbx *b = sbx_find(gw, r->name);
    struct sess *s = b ? current(gw, b) : NULL;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&gw->lock);
    if (!b)
        return no_sandbox(r, r->name);
    if (s) {
        sess_stop(gw, s, "sandbox deleted");
        sess_put(gw, s);
    }
    pthread_mutex_lock(&gw->lock);
    b = sbx_find(gw, r->name);
    json_t *reply = NULL;
    if (b) {
        struct sess *cur = current(gw, b);
        reply = json_pack("{s:o, s:o}", "sandbox", sbx_json(gw, b), "routes",
                          cur ? routes_json(gw, cur) : json_array());
        sbx_remove(gw, b);
        state_save(gw);
    }
    pthread_mutex_unlock(&gw->lock);
    if (!reply)
        return no_sandbox(r, r->name);
    return http_json(r->conn, 200, reply);
}

enum MHD_Result api_session_get(struct route *r)
{
    pthread_mutex_lock(&r->gw->lock);
    json_t *j = sess_json(r->gw, r->sess), *routes = routes_json(r->gw, r->sess);
    pthread_mutex_unlock(&r->gw->lock);
    return http_json(r->conn, 200, json_pack("{s:o, s:o}", "session", j, "routes", routes));
}

enum MHD_Result api_session_list(struct route *r)
{
    struct gw *gw = r->gw;
    struct pager pg;
    if (pager_init(r, &pg) < 0)
        return pager_bad(r);
    const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "name");
    pthread_mutex_lock(&gw->lock);
    for (size_t i = gw->nsess; i-- > 0;) {
        struct sess *s = gw->sess[i];
        if (name && strcmp(s->sandbox, name) != 0)
            continue;
        int k = pager_step(&pg);
        if (k < 0)
            break;
        if (k > 0)
            json_array_append_new(pg.items, sess_json(gw, s));
    }
    pthread_mutex_unlock(&gw->lock);
    return pager_reply(r, &pg, "sessions");
}

enum MHD_Result api_stop(struct route *r)
{
    struct gw *gw = r->gw;
    sess_stop(gw, r->sess, "stop requested");
    pthread_mutex_lock(&gw->lock);
    json_t *reply = json_pack("{s:o}", "session", sess_json(gw, r->sess));
    struct sbx *b = sbx_find(gw, r->sess->sandbox);
    if (b)
        json_object_set_new(reply, "sandbox", sbx_json(gw, b));
    pthread_mutex_unlock(&gw->lock);
    return http_json(r->conn, 200, reply);
}

enum MHD_Result api_extend(struct route *r)
{
    struct gw *gw = r->gw;
    struct jerr je;
    int64_t d = -1;
    if (!r->body || j_opt_int(r->body, "duration", &d, 1, GW_MAX_TIMEOUT_MS, &je) < 0 || d < 0) {
        if (d < 0)
            snprintf(je.msg, sizeof je.msg, "'duration' (ms) is required");
        return bad(r, &je);
    }
    pthread_mutex_lock(&gw->lock);
    if (!sess_live(r->sess)) {
        pthread_mutex_unlock(&gw->lock);
        return http_err(r->conn, 410, "sandbox_stopped", "the session %s has stopped",
                        r->sess->id);
    }
    r->sess->timeout_ms += d;
    r->sess->updated_ms = gw_now_ms();
    state_save(gw);
    json_t *reply = json_pack("{s:o}", "session", sess_json(gw, r->sess));
    pthread_mutex_unlock(&gw->lock);
    return http_json(r->conn, 200, reply);
}

/* PATCH /v2/sandboxes/NAME: only 'ports' can change (its routes follow at
 * once when the sandbox runs); any other field is not supported. */
enum MHD_Result api_sandbox_update(struct route *r)
{
    struct gw *gw = r->gw;
    struct jerr je;
    const char *key;
    json_t *v, *ports = r->body ? json_object_get(r->body, "ports") : NULL;
    if (r->body)
        json_object_foreach(r->body, key, v) if (strcmp(key, "ports") != 0 && !json_is_null(v))
            return http_err(r->conn, 400, "not_supported",
                            "updating '%.64s' is not supported by sandbox-gateway", key);
    if (check_ports(ports, &je) < 0)
        return bad(r, &je);
    struct sbx *b = sbx_lock(r);
    if (!b)
        return no_sandbox(r, r->name);
    struct sess *s = current(gw, b);
    if (ports) {
        json_t *list = json_is_null(ports) ? json_array() : json_incref(ports);
        struct sa_err e;
        if (s && sess_live(s) && routes_set(gw, s, list, &e) < 0) {
            pthread_mutex_unlock(&gw->lock);
            json_decref(list);
            return http_err(r->conn, 503, "route_listen", "%s", e.msg);
        }
        json_object_set_new(b->params, "ports", list);
        b->updated_ms = gw_now_ms();
        state_save(gw);
    }
    json_t *reply = json_pack("{s:o, s:o}", "sandbox", sbx_json(gw, b), "routes",
                              s ? routes_json(gw, s) : json_array());
    pthread_mutex_unlock(&gw->lock);
    return http_json(r->conn, 200, reply);
}
