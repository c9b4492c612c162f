/* state.c — sandboxes and sessions, kept in memory and in --state-dir.
 *
 * The whole table is one JSON file, DIR/state.json, rewritten after every
 * change: written to DIR/state.json.tmp (0600, created through the directory
 * descriptor), fsync'd, renamed over state.json, and the directory fsync'd, so
 * a crash leaves the old or the new state, never a mix. It holds agent
 * addresses and tokens, hence 0600 and a 0700 directory. Command ids need no
 * table: "cmd_N" is the agent's command N.
 *
 * Sessions are reference counted under gw->lock: requests hold a reference
 * while they use one, the table holds one. At most GW_SESSIONS_MAX sessions
 * are remembered; beyond that the oldest stopped session is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw.h"

#define STATE_FILE "state.json"
#define STATE_TMP "state.json.tmp"
#define STATE_MAX (64u << 20)

void gw_random_hex(char *out, size_t nhex)
{
    uint8_t r[64];
    size_t nb = (nhex + 1) / 2;
    if (nb > sizeof r)
        nb = sizeof r;
    size_t got = 0;
    while (got < nb) {
        ssize_t k = getrandom(r + got, nb - got, 0);
        if (k < 0 && errno != EINTR)
            abort();
        if (k > 0)
            got += (size_t)k;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nhex && i / 2 < nb; i++)
        out[i] = hex[(r[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
    out[nhex] = '\0';
}

/* --- the table ------------------------------------------------------------- */

static void sess_free(struct sess *s)
{
    json_decref(s->env);
    explicit_bzero(s->token, sizeof s->token);
    free(s);
}

struct sess *sess_get(struct gw *gw, const char *id)
{
    struct sess *r = NULL;
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->nsess; i++)
        if (strcmp(gw->sess[i]->id, id) == 0) {
            r = gw->sess[i];
            r->refs++;
            break;
        }
    pthread_mutex_unlock(&gw->lock);
    return r;
}

struct sess *sess_ref(struct gw *gw, struct sess *s)
{
    pthread_mutex_lock(&gw->lock);
    s->refs++;
    pthread_mutex_unlock(&gw->lock);
    return s;
}

void sess_put(struct gw *gw, struct sess *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&gw->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&gw->lock);
    if (last)
        sess_free(s);
}

bool sess_live(const struct sess *s)
{
    return atomic_load(&s->status) == SESS_RUNNING;
}

bool sess_addr_in_use(struct gw *gw, const char *addr)
{
    for (size_t i = 0; i < gw->nsess; i++)
        if (gw->sess[i]->status != SESS_STOPPED && strcmp(gw->sess[i]->addr, addr) == 0)
            return true;
    return false;
}

static void sess_unlink(struct gw *gw, size_t i)
{
    struct sess *s = gw->sess[i];
    memmove(gw->sess + i, gw->sess + i + 1, (gw->nsess - i - 1) * sizeof *gw->sess);
    gw->nsess--;
    s->removed = true;
    if (--s->refs == 0)
        sess_free(s);
}

void sess_add(struct gw *gw, struct sess *s)
{
    if (gw->nsess >= GW_SESSIONS_MAX) {
        for (size_t i = 0; i < gw->nsess; i++)
            if (gw->sess[i]->status == SESS_STOPPED) {
                sess_unlink(gw, i);
                break;
            }
    }
    if (gw->nsess == gw->capsess) {
        gw->capsess = gw->capsess ? gw->capsess * 2 : 16;
        gw->sess = xrealloc(gw->sess, gw->capsess * sizeof *gw->sess);
    }
    gw->sess[gw->nsess++] = s;
}

struct sbx *sbx_find(struct gw *gw, const char *name)
{
    for (size_t i = 0; i < gw->nsbx; i++)
        if (strcmp(gw->sbx[i]->name, name) == 0)
            return gw->sbx[i];
    return NULL;
}

void sbx_free(struct sbx *b)
{
    if (b) {
        json_decref(b->params);
        free(b);
    }
}

void sbx_add(struct gw *gw, struct sbx *b)
{
    if (gw->nsbx == gw->capsbx) {
        gw->capsbx = gw->capsbx ? gw->capsbx * 2 : 16;
        gw->sbx = xrealloc(gw->sbx, gw->capsbx * sizeof *gw->sbx);
    }
    gw->sbx[gw->nsbx++] = b;
}

void sbx_remove(struct gw *gw, struct sbx *b)
{
    for (size_t i = 0; i < gw->nsess;)
        if (strcmp(gw->sess[i]->sandbox, b->name) == 0 && gw->sess[i]->status == SESS_STOPPED)
            sess_unlink(gw, i);
        else
            i++;
    for (size_t i = 0; i < gw->nsbx; i++)
        if (gw->sbx[i] == b) {
            memmove(gw->sbx + i, gw->sbx + i + 1, (gw->nsbx - i - 1) * sizeof *gw->sbx);
            gw->nsbx--;
            break;
        }
    sbx_free(b);
}

/* --- JSON views (the SDK's Session and Sandbox schemas) --------------------- */

static const char *status_name(int st)
{
    return st == SESS_RUNNING ? "running" : st == SESS_STOPPING ? "stopping" : "stopped";
}

json_t *sess_json(struct gw *gw, const struct sess *s)
{
    (void)gw;
    int st = atomic_load(&s->status);
    json_t *j = json_pack("{s:s, s:I, s:I, s:s, s:I, s:s, s:I, s:I, s:I, s:s, s:I}", "id", s->id,
                          "memory", (json_int_t)s->memory, "vcpus", (json_int_t)s->vcpus,
                          "region", "local", "timeout", (json_int_t)s->timeout_ms, "status",
                          status_name(st), "requestedAt", (json_int_t)s->created_ms, "startedAt",
                          (json_int_t)s->started_ms, "createdAt", (json_int_t)s->created_ms,
                          "cwd", s->cwd, "updatedAt", (json_int_t)s->updated_ms);
    if (s->stop_req_ms)
        json_object_set_new(j, "requestedStopAt", json_integer(s->stop_req_ms));
    if (s->stopped_ms) {
        json_object_set_new(j, "stoppedAt", json_integer(s->stopped_ms));
        json_object_set_new(j, "duration", json_integer(s->stopped_ms - s->started_ms));
    }
    return j;
}

json_t *sbx_json(struct gw *gw, const struct sbx *b)
{
    struct sess *s = NULL;
    for (size_t i = 0; i < gw->nsess; i++)
        if (strcmp(gw->sess[i]->id, b->cur) == 0)
            s = gw->sess[i];
    int st = s ? atomic_load(&s->status) : SESS_STOPPED;
    json_t *j = json_pack("{s:s, s:b, s:s, s:I, s:I, s:s, s:s}", "name", b->name, "persistent",
                          b->persistent, "region", "local", "createdAt", (json_int_t)b->created_ms,
                          "updatedAt", (json_int_t)b->updated_ms, "currentSessionId", b->cur,
                          "status", status_name(st));
    if (s) {
        json_object_set_new(j, "vcpus", json_integer(s->vcpus));
        json_object_set_new(j, "memory", json_integer(s->memory));
        json_object_set_new(j, "timeout", json_integer(s->timeout_ms));
        json_object_set_new(j, "cwd", json_string(s->cwd));
        if (st == SESS_RUNNING)
            json_object_set_new(j, "expiresAt", json_integer(s->started_ms + s->timeout_ms));
    }
    json_t *tags = json_object_get(b->params, "tags");
    if (json_is_object(tags))
        json_object_set(j, "tags", tags);
    json_t *rt = json_object_get(b->params, "runtime");
    if (json_is_string(rt))
        json_object_set(j, "runtime", rt);
    return j;
}

/* --- persistence ----------------------------------------------------------- */

/* [[port, lport], ...]: the next gateway binds lport again. */
static json_t *routes_state(const struct sess *s)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < s->nroutes; i++)
        json_array_append_new(a, json_pack("[i, i]", (int)s->routes[i].port,
                                           (int)s->routes[i].lport));
    return a;
}

static int load_routes(struct sess *s, json_t *a)
{
    size_t i;
    json_t *v;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > GW_ROUTES_MAX)
        return -1;
    json_array_foreach(a, i, v) {
        int port, lport;
        if (json_unpack(v, "[i, i]", &port, &lport) < 0 || port < 1 || port > 65535 ||
            lport < 0 || lport > 65535)
            return -1;
        s->routes[i] = (struct sroute){ .port = (uint16_t)port, .lport = (uint16_t)lport,
                                        .fd = -1 };
    }
    s->nroutes = (unsigned)json_array_size(a);
    return 0;
}

static json_t *sess_state(const struct sess *s)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s%, s:s, s:O, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                     "s:i, s:b}",
                     "id", s->id, "sandbox", s->sandbox, "addr", s->addr, "token", s->token,
                     s->token_len, "cwd", s->cwd, "env", s->env, "vcpus", (json_int_t)s->vcpus,
                     "memory", (json_int_t)s->memory, "createdAt", (json_int_t)s->created_ms,
                     "startedAt", (json_int_t)s->started_ms, "timeout",
                     (json_int_t)s->timeout_ms, "stopRequestedAt", (json_int_t)s->stop_req_ms,
                     "stoppedAt", (json_int_t)s->stopped_ms, "updatedAt",
                     (json_int_t)s->updated_ms, "status", atomic_load(&s->status),
                     "provisioned", s->provisioned);
    json_object_set_new(j, "routes", routes_state(s));
    return j;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int state_save(struct gw *gw)
{
    json_t *sbxs = json_array(), *sess = json_array();
    for (size_t i = 0; i < gw->nsbx; i++) {
        struct sbx *b = gw->sbx[i];
        json_array_append_new(sbxs, json_pack("{s:s, s:b, s:I, s:I, s:s, s:O}", "name", b->name,
                                              "persistent", b->persistent, "createdAt",
                                              (json_int_t)b->created_ms, "updatedAt",
                                              (json_int_t)b->updated_ms, "currentSessionId",
                                              b->cur, "params", b->params));
    }
    for (size_t i = 0; i < gw->nsess; i++)
        json_array_append_new(sess, sess_state(gw->sess[i]));
    json_t *root = json_pack("{s:i, s:o, s:o}", "version", 1, "sandboxes", sbxs, "sessions", sess);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    int rc = -1;
    int fd = openat(gw->state_fd, STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                    0600);
    if (fd >= 0 && fchmod(fd, 0600) == 0 && write_all(fd, text, strlen(text)) == 0 &&
        fsync(fd) == 0 && renameat(gw->state_fd, STATE_TMP, gw->state_fd, STATE_FILE) == 0 &&
        fsync(gw->state_fd) == 0)
        rc = 0;
    if (rc < 0)
        gw_log("state: cannot save %s/%s: %s", gw->state_dir, STATE_FILE, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}

static int load_sess(struct gw *gw, json_t *j)
{
    const char *id, *sandbox, *addr, *token, *cwd;
    size_t token_len;
    json_t *env;
    json_int_t vcpus, memory, created, started, timeout, stopreq, stopped, updated;
    int status, prov;
    json_error_t je;
    if (json_unpack_ex(j, &je, 0,
                       "{s:s, s:s, s:s, s:s%, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                       "s:i, s:b}",
                       "id", &id, "sandbox", &sandbox, "addr", &addr, "token", &token, &token_len,
                       "cwd", &cwd, "env", &env, "vcpus", &vcpus, "memory", &memory, "createdAt",
                       &created, "startedAt", &started, "timeout", &timeout, "stopRequestedAt",
                       &stopreq, "stoppedAt", &stopped, "updatedAt", &updated, "status", &status,
                       "provisioned", &prov) < 0 ||
        strlen(id) >= GW_ID_MAX || strlen(sandbox) >= GW_NAME_MAX || strlen(addr) >= GW_ADDR_MAX ||
        token_len > GW_TOKEN_MAX || strlen(cwd) >= GW_PATH_MAX || !json_is_object(env) ||
        status < SESS_RUNNING || status > SESS_STOPPED)
        return -1;
    struct sess *s = xcalloc(1, sizeof *s);
    if (load_routes(s, json_object_get(j, "routes")) < 0) {
        free(s);
        return -1;
    }
    strcpy(s->id, id);
    strcpy(s->sandbox, sandbox);
    strcpy(s->addr, addr);
    memcpy(s->token, token, token_len);
    s->token_len = token_len;
    strcpy(s->cwd, cwd);
    s->env = json_incref(env);
    s->vcpus = vcpus;
    s->memory = memory;
    s->created_ms = created;
    s->started_ms = started;
    s->timeout_ms = timeout;
    s->stop_req_ms = stopreq;
    s->stopped_ms = stopped;
    s->updated_ms = updated;
    /* a stop that was under way when the gateway died is finished by the reaper */
    atomic_store(&s->status, status == SESS_STOPPING ? SESS_RUNNING : status);
    if (status == SESS_STOPPING)
        s->timeout_ms = 0;
    s->provisioned = prov;
    s->refs = 1;
    sess_add(gw, s);
    return 0;
}

static int load_sbx(struct gw *gw, json_t *j)
{
    const char *name, *cur;
    int persistent;
    json_int_t created, updated;
    json_t *params;
    if (json_unpack(j, "{s:s, s:b, s:I, s:I, s:s, s:o}", "name", &name, "persistent",
                    &persistent, "createdAt", &created, "updatedAt", &updated,
                    "currentSessionId", &cur, "params", &params) < 0 ||
        strlen(name) >= GW_NAME_MAX || strlen(cur) >= GW_ID_MAX || !json_is_object(params))
        return -1;
    struct sbx *b = xcalloc(1, sizeof *b);
    strcpy(b->name, name);
    strcpy(b->cur, cur);
    b->persistent = persistent;
    b->created_ms = created;
    b->updated_ms = updated;
    b->params = json_incref(params);
    sbx_add(gw, b);
    return 0;
}

static int state_load(struct gw *gw, struct sa_err *e)
{
    int fd = openat(gw->state_fd, STATE_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_sys(e, errno, "open %s/%s", gw->state_dir, STATE_FILE);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)STATE_MAX) {
        close(fd);
        return err_set(e, 0, "bad_state", "%s/%s: not a regular file under %u bytes",
                       gw->state_dir, STATE_FILE, STATE_MAX);
    }
    json_error_t je;
    json_t *root = json_loadfd(fd, 0, &je);
    close(fd);
    if (!root)
        return err_set(e, 0, "bad_state", "%s/%s: line %d: %s", gw->state_dir, STATE_FILE,
                       je.line, je.text);
    json_t *a = json_object_get(root, "sandboxes"), *v;
    size_t i;
    int rc = 0;
    json_array_foreach(a, i, v) if (load_sbx(gw, v) < 0) rc = -1;
    a = json_object_get(root, "sessions");
    json_array_foreach(a, i, v) if (load_sess(gw, v) < 0) rc = -1;
    json_decref(root);
    if (rc < 0)
        return err_set(e, 0, "bad_state", "%s/%s: a malformed entry", gw->state_dir, STATE_FILE);
    return 0;
}

int state_open(struct gw *gw, struct sa_err *e)
{
    if (mkdir(gw->state_dir, 0700) < 0 && errno != EEXIST)
        return err_sys(e, errno, "mkdir %s", gw->state_dir);
    gw->state_fd = open(gw->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (gw->state_fd < 0)
        return err_sys(e, errno, "open %s", gw->state_dir);
    if (fchmod(gw->state_fd, 0700) < 0)
        return err_sys(e, errno, "chmod %s", gw->state_dir);
    return state_load(gw, e);
}

/* --- stopping -------------------------------------------------------------- */

/* SIGKILL every running command of the agent (pool agents outlive sessions). */
static void kill_all(struct gw *gw, struct sess *s)
{
    struct client *c;
    struct sa_err e;
    msgpack_object reply;
    if (agent_open(gw, s, &c, &e) < 0) {
        gw_log("session %s: stop: %s", s->id, e.msg);
        return;
    }
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "list");
    wire_kv_bool(&w, "running", true);
    if (client_end(c, &w, &e) == 0 && client_call(c, id, gw->connect_timeout_ms, &reply, &e) == 0) {
        const msgpack_object *cmds = wire_get(&reply, "commands");
        uint32_t n = cmds && cmds->type == MSGPACK_OBJECT_ARRAY ? cmds->via.array.size : 0;
        uint64_t *ids = xcalloc(n + 1, sizeof *ids);
        for (uint32_t i = 0; i < n; i++)
            if (cmds->via.array.ptr[i].type == MSGPACK_OBJECT_MAP)
                wire_obj_uint(wire_get(&cmds->via.array.ptr[i], "cmd"), &ids[i]);
        for (uint32_t i = 0; i < n; i++) {
            if (ids[i] == 0)
                continue;
            id = client_begin(c, &w, "signal");
            wire_kv_uint(&w, "cmd", ids[i]);
            wire_kv_uint(&w, "signal", 9);
            if (client_end(c, &w, &e) < 0 || client_call(c, id, gw->connect_timeout_ms, &reply, &e) < 0)
                break;
        }
        free(ids);
    }
    client_free(c);
}

void sess_stop(struct gw *gw, struct sess *s, const char *why)
{
    pthread_mutex_lock(&gw->lock);
    int st = SESS_RUNNING;
    bool mine = atomic_compare_exchange_strong(&s->status, &st, SESS_STOPPING);
    if (mine) {
        s->stop_req_ms = s->updated_ms = gw_now_ms();
        routes_close(gw, s);
        state_save(gw);
    }
    pthread_mutex_unlock(&gw->lock);
    if (!mine)
        return;
    gw_log("session %s: stopping (%s)", s->id, why);
    kill_all(gw, s);
    if (s->provisioned)
        prov_stop(gw, s);
    pthread_mutex_lock(&gw->lock);
    atomic_store(&s->status, SESS_STOPPED);
    s->stopped_ms = s->updated_ms = gw_now_ms();
    state_save(gw);
    pthread_mutex_unlock(&gw->lock);
}

/* --- the timeout reaper ------------------------------------------------------ */

static struct sess *next_expired(struct gw *gw)
{
    int64_t now = gw_now_ms();
    struct sess *r = NULL;
    pthread_mutex_lock(&gw->lock);
    for (size_t i = 0; i < gw->nsess && !r; i++) {
        struct sess *s = gw->sess[i];
        if (atomic_load(&s->status) == SESS_RUNNING && s->started_ms + s->timeout_ms <= now) {
            r = s;
            r->refs++;
        }
    }
    pthread_mutex_unlock(&gw->lock);
    return r;
}

static void *reaper_main(void *arg)
{
    struct gw *gw = arg;
    while (!atomic_load(&gw->stopping)) {
        struct sess *s;
        while ((s = next_expired(gw)) != NULL) {
            sess_stop(gw, s, "timeout");
            sess_put(gw, s);
        }
        usleep(GW_POLL_MS * 1000);
    }
    return NULL;
}

int reaper_start(struct gw *gw, struct sa_err *e)
{
    int rc = pthread_create(&gw->reaper, NULL, reaper_main, gw);
    return rc ? err_sys(e, rc, "pthread_create") : 0;
}

void sess_remove(struct gw *gw, struct sess *s)
{
    for (size_t i = 0; i < gw->nsess; i++)
        if (gw->sess[i] == s) {
            sess_unlink(gw, i);
            return;
        }
}
