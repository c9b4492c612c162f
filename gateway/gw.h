/* gw.h — sandbox-gateway: the Vercel Sandbox HTTP API served from agents.
 *
 * Modules:
 *   main.c     command line, start-up, signals
 *   http.c     libmicrohttpd glue: auth, request bodies, routing, JSON replies
 *   state.c    sandboxes and sessions, their persistence, the timeout reaper
 *   prov.c     the provisioner program and the --pool of fixed agents
 *   agentio.c  one blocking libsa_client connection per request
 *   api_sbx.c  control plane: create, get/resume, list, delete, stop, extend
 *   api_cmd.c  commands: run (attached/detached), get/wait, logs, kill
 *   api_fs.c   files: write (tar upload streamed), read (streamed), mkdir
 *   utf8.c     incremental UTF-8 cleaning of command output
 *   routes.c   a session's ports served on local listeners, tunnelled to the guest
 *   ndjson.c   the output lines of the NDJSON streams, in ASCII
 *   jsonc.c    ... of ASCII text, encoded by json-c (its own header: jsonc.h)
 *
 * Threads: libmicrohttpd runs one thread per HTTP connection; a request
 * blocks that thread on its own agent connection. The session table is
 * shared under one mutex (gw->lock); nothing blocks while holding it.
 * Routes: one thread polls every route listener; each accepted connection
 * gets its own thread and agent connection (routes.c).
 */
#ifndef SA_GW_H
#define SA_GW_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "client.h"
#include "clock.h"
#include "err.h"

#define GW_TOKEN_MAX 4096
#define GW_ADDR_MAX 512
#define GW_ID_MAX 48                    /* session ids: "sess_" + 24 hex */
#define GW_NAME_MAX 128                 /* sandbox names */
#define GW_PATH_MAX 4096
#define GW_BODY_MAX_DEFAULT (1u << 20)  /* JSON request bodies */
#define GW_AGENT_MAX_FRAME (1u << 20)   /* refuse agents announcing more (the default) */
#define GW_LINE_RAW 16384               /* raw output bytes per NDJSON line */
#define GW_POLL_MS 200                  /* how often a blocked stream checks for stop */
#define GW_SESSIONS_MAX 4096            /* sessions remembered (oldest stopped dropped) */
#define GW_DEFAULT_TIMEOUT_MS 300000
#define GW_MAX_TIMEOUT_MS (24LL * 3600 * 1000)
#define GW_ROUTES_MAX 64                /* ports per sandbox */
#define GW_ROUTE_BUF (64u << 10)        /* relay bytes per direction per route connection */
#define GW_ROUTE_CONNS_DEFAULT 256      /* route connections relayed at once (--max-route-connections) */

/* A port of a session served on a local listener (routes.c). */
struct sroute {
    uint16_t port;              /* in the guest */
    uint16_t lport;             /* the gateway's listener; 0 none yet */
    int fd;                     /* the listener, -1 when closed */
};

enum sess_status { SESS_RUNNING, SESS_STOPPING, SESS_STOPPED };

struct sess {
    char id[GW_ID_MAX];
    char sandbox[GW_NAME_MAX];
    char addr[GW_ADDR_MAX];
    char token[GW_TOKEN_MAX + 1];
    size_t token_len;
    char cwd[GW_PATH_MAX];
    json_t *env;                /* {str:str}, immutable once created */
    int64_t vcpus, memory;
    int64_t created_ms, started_ms, timeout_ms, stop_req_ms, stopped_ms, updated_ms;
    _Atomic int status;         /* enum sess_status */
    bool provisioned;           /* stop runs the provisioner */
    int refs;                   /* under gw->lock; the table holds one */
    bool removed;
    struct sroute routes[GW_ROUTES_MAX];        /* under gw->lock */
    unsigned nroutes;
};

struct sbx {
    char name[GW_NAME_MAX];
    bool persistent;
    int64_t created_ms, updated_ms;
    char cur[GW_ID_MAX];        /* current session */
    json_t *params;             /* create parameters kept for resume: env, timeout, vcpus, ... */
};

struct gw {
    /* options */
    char listen_host[256];
    uint16_t listen_port;
    char token[GW_TOKEN_MAX + 1];
    size_t token_len;
    const char *state_dir;
    const char *provisioner;
    char **pool;
    size_t npool;
    char pool_token[GW_TOKEN_MAX + 1];
    size_t pool_token_len;
    unsigned max_conns;
    unsigned idle_timeout_s;
    size_t body_max;
    int prov_timeout_ms;
    int connect_timeout_ms;
    bool verbose;
    unsigned route_conns_max;

    /* runtime */
    int state_fd;
    pthread_mutex_t lock;
    struct sess **sess;
    size_t nsess, capsess;
    struct sbx **sbx;
    size_t nsbx, capsbx;
    atomic_bool stopping;
    atomic_int active;          /* requests in progress (http.c) */
    pthread_t reaper;
    struct MHD_Daemon *mhd;
    int route_wake;             /* eventfd: the route listeners changed */
    struct sockaddr_storage route_addr;         /* --listen's host, resolved once */
    socklen_t route_addrlen;
    pthread_t router;
    atomic_uint route_conns;    /* route connections being relayed */
};

/* --- logging (main.c) ----------------------------------------------------- */
void gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Wall-clock ms (common/clock.h), as the API's and the state file's *_ms
 * times are; deadlines use clock_mono_ms instead. */
static inline int64_t gw_now_ms(void)
{
    return (int64_t)clock_wall_ms();
}

/* --- state.c --------------------------------------------------------------- */
int state_open(struct gw *gw, struct sa_err *e);
int state_save(struct gw *gw);                  /* under gw->lock */
struct sess *sess_get(struct gw *gw, const char *id);      /* +1 ref, or NULL */
struct sess *sess_ref(struct gw *gw, struct sess *s);     /* +1 ref, returns s */
void sess_put(struct gw *gw, struct sess *s);
struct sbx *sbx_find(struct gw *gw, const char *name);     /* under gw->lock */
bool sess_live(const struct sess *s);           /* running, gateway not stopping */
bool sess_addr_in_use(struct gw *gw, const char *addr);    /* under gw->lock */
void sess_add(struct gw *gw, struct sess *s);   /* under gw->lock; takes the table's ref */
void sess_remove(struct gw *gw, struct sess *s); /* under gw->lock; drops the table's ref */
void sbx_add(struct gw *gw, struct sbx *b);     /* under gw->lock */
void sbx_remove(struct gw *gw, struct sbx *b);  /* under gw->lock; drops its sessions too */
void sbx_free(struct sbx *b);
json_t *sess_json(struct gw *gw, const struct sess *s);    /* under gw->lock */
json_t *sbx_json(struct gw *gw, const struct sbx *b);      /* under gw->lock */
/* Stop a session: commands killed, provisioner stop, state saved. Idempotent. */
void sess_stop(struct gw *gw, struct sess *s, const char *why);
int reaper_start(struct gw *gw, struct sa_err *e);
void gw_random_hex(char *out, size_t nhex);

/* --- prov.c ---------------------------------------------------------------- */
/* Bring up an agent for session s (fills s->addr, s->token, s->provisioned). */
int prov_create(struct gw *gw, struct sess *s, const char *request_json, struct sa_err *e);
void prov_stop(struct gw *gw, const struct sess *s);

/* --- agentio.c ------------------------------------------------------------- */
/* Connect to the session's agent, check its hello, authenticate. */
int agent_open(struct gw *gw, const struct sess *s, struct client **out, struct sa_err *e);
/* Send the queued request and wait for its reply like client_call, but give up
 * when the session stops. 0 ok, 1 error reply (in e), -1 connection lost. */
int agent_call(struct gw *gw, const struct sess *s, struct client *c, uint64_t id,
               msgpack_object *reply, struct sa_err *e);
/* Wait for the next message; -1 when the connection is lost, the session
 * stops (e->code "sandbox_stopped") or the gateway shuts down. */
int agent_recv(struct gw *gw, const struct sess *s, struct client *c, msgpack_object *msg,
               struct sa_err *e);
/* The socket of an HTTP connection (for struct agent_stream); -1 if unknown. */
int http_fd(struct MHD_Connection *c);
/* A one-field request {type, cmd} and its reply. */
int agent_cmd_call(struct gw *gw, const struct sess *s, struct client *c, const char *type,
                   uint64_t cmd, msgpack_object *reply, struct sa_err *e);
/* A str field from an agent message as valid UTF-8 JSON (invalid bytes become
 * U+FFFD), at most max bytes; NULL when absent or not a str. */
json_t *agent_json_str(const msgpack_object *o, size_t max);

/* What every streamed response holds: a reference to its session, its own
 * agent connection, and the HTTP client's socket. astream_recv/astream_call
 * are agent_recv/agent_call that also give up (code "client_gone") when the
 * HTTP client hangs up. */
struct agent_stream {
    struct gw *gw;
    struct sess *s;
    struct client *c;
    int hfd;
};
struct route;
void astream_init(struct agent_stream *a, struct route *r, struct client *c);  /* takes c */
void astream_free(struct agent_stream *a);
int astream_recv(struct agent_stream *a, msgpack_object *msg, struct sa_err *e);
int astream_call(struct agent_stream *a, uint64_t id, msgpack_object *reply, struct sa_err *e);

/* --- routes.c ------------------------------------------------------------- */
/* Re-open the listeners of the running sessions loaded from the state dir on
 * their saved ports, and start the thread that accepts on every listener. */
int routes_start(struct gw *gw, struct sa_err *e);
/* After gw->stopping: stop accepting, wait for the relays to end, close. */
void routes_stop(struct gw *gw);
/* Serve exactly the ports of the JSON array ports (NULL: none) for s: kept
 * ports keep their listener, new ones get one. Under gw->lock. -1 with e
 * (nothing changed) when a listener cannot be opened. */
int routes_set(struct gw *gw, struct sess *s, json_t *ports, struct sa_err *e);
/* Close the listeners of s (it stops). Under gw->lock. */
void routes_close(struct gw *gw, struct sess *s);
/* [{url, subdomain, port}] of s. Under gw->lock. */
json_t *routes_json(struct gw *gw, const struct sess *s);

/* --- utf8.c ---------------------------------------------------------------- */
struct u8tail {
    uint8_t b[4];
    uint8_t n;
};
/* Append the valid UTF-8 of (tail + p[0..n)) to out, invalid bytes as U+FFFD;
 * an incomplete character at the end stays in tail unless final. */
void utf8_clean(struct u8tail *t, const uint8_t *p, size_t n, bool final, struct buf *out);
/* The same text as utf8_clean, *len bytes: p itself when nothing is held in
 * t and p is valid UTF-8 (but for an incomplete last character, then held in
 * t unless final), else scratch (reset first; an ill-formed byte grows to 3,
 * so at most 3 x (n + 3) bytes, kept allocated up to UTF8_SCRATCH_KEEP).
 * *ascii: the text is all ASCII. */
#define UTF8_SCRATCH_KEEP (4u * GW_LINE_RAW)
const uint8_t *utf8_view(struct u8tail *t, const uint8_t *p, size_t n, bool final,
                         struct buf *scratch, size_t *len, bool *ascii);

/* --- ndjson.c -------------------------------------------------------------- */
struct ndjson;  /* one stream's output-line encoder; its buffers are reused */
#define NDJSON_KEEP (8u * GW_LINE_RAW)  /* jansson's line buffer kept up to this */
struct ndjson *ndjson_new(void);
void ndjson_free(struct ndjson *e);
/* {"stream":stream,"data":text} as compact ASCII JSON without its newline;
 * text is n bytes of valid UTF-8 (may hold NUL), ascii when it is all ASCII
 * (utf8_view says). The result belongs to e, valid until the next call. */
const char *ndjson_line(struct ndjson *e, const char *stream, const uint8_t *text, size_t n,
                        bool ascii, size_t *len);

/* --- http.c ---------------------------------------------------------------- */
struct req;     /* one HTTP request */
int http_start(struct gw *gw, struct sa_err *e);
/* Stop accepting, let open requests end (streams end with an error line
 * within GW_POLL_MS once gw->stopping is set), then stop the daemon. */
void http_stop(struct gw *gw);
/* Reply helpers: each queues a response; MHD_YES/MHD_NO for the handler. */
enum MHD_Result http_json(struct MHD_Connection *c, unsigned status, json_t *body); /* steals */
enum MHD_Result http_err(struct MHD_Connection *c, unsigned status, const char *code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* An agent error reply as an HTTP error (status chosen from its code). */
enum MHD_Result http_agent_err(struct MHD_Connection *c, const struct sa_err *e);
/* A streamed response fed by cb; free_cb(cls) when it is done. */
enum MHD_Result http_stream(struct MHD_Connection *c, const char *ctype,
                            MHD_ContentReaderCallback cb, void *cls,
                            MHD_ContentReaderFreeCallback free_cb);

/* Parsing request JSON: each returns 0, or -1 with msg naming the field. */
struct jerr {
    char msg[256];
};
int j_opt_str(json_t *o, const char *k, const char **v, size_t max, struct jerr *je);
int j_opt_int(json_t *o, const char *k, int64_t *v, int64_t lo, int64_t hi, struct jerr *je);
int j_opt_bool(json_t *o, const char *k, bool *v, struct jerr *je);
int j_opt_env(json_t *o, const char *k, json_t **v, struct jerr *je);   /* borrowed */

/* The handlers. body is the parsed JSON body (an object) or NULL. */
struct route {
    struct gw *gw;
    struct MHD_Connection *conn;
    const char *method;
    struct sess *sess;          /* the session named in the path (ref held), or NULL */
    const char *sub;            /* rest of the path after the session id */
    uint64_t cmd;               /* agent command id from cmd_N, 0 when none */
    const char *name;           /* sandbox name from the path */
    json_t *body;
};
enum MHD_Result api_create(struct route *r);
enum MHD_Result api_sandbox_get(struct route *r);
enum MHD_Result api_sandbox_list(struct route *r);
enum MHD_Result api_sandbox_delete(struct route *r);
enum MHD_Result api_sandbox_update(struct route *r);
enum MHD_Result api_session_get(struct route *r);
enum MHD_Result api_session_list(struct route *r);
enum MHD_Result api_stop(struct route *r);
enum MHD_Result api_extend(struct route *r);
enum MHD_Result api_cmd_run(struct route *r);
enum MHD_Result api_cmd_get(struct route *r);
enum MHD_Result api_cmd_logs(struct route *r);
enum MHD_Result api_cmd_kill(struct route *r);
enum MHD_Result api_fs_read(struct route *r);
enum MHD_Result api_fs_mkdir(struct route *r);

/* fs/write is streamed from the request body (api_fs.c). */
struct upload;
struct upload *upload_begin(struct gw *gw, struct sess *s, const char *cwd, struct sa_err *e);
/* Forward body bytes; after a failure it keeps swallowing them. */
void upload_data(struct upload *u, const char *p, size_t n);
enum MHD_Result upload_finish(struct upload *u, struct MHD_Connection *conn);
void upload_free(struct upload *u);

#endif
