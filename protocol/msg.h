/* msg.h — protocol v1 messages: requests parsed out of decoded maps, agent
 * messages encoded into frames. PROTOCOL.md is the reference for every field.
 * Everything parsed is allocated in the caller's msgpack_zone and lives as
 * long as it. No syscalls.
 */
#ifndef SA_MSG_H
#define SA_MSG_H

#include "wire.h"

enum wire_stream { WIRE_STDOUT = 1, WIRE_STDERR = 2 };
const char *wire_stream_name(enum wire_stream s);

/* The envelope every request has. A missing type or id is "bad_request". */
struct wire_req {
    const char *type;       /* not NUL-terminated: type_len bytes */
    size_t type_len;
    uint64_t id;
    bool has_id;
};
int wire_parse_req(const msgpack_object *map, struct wire_req *r, struct sa_err *e);
bool wire_req_is(const struct wire_req *r, const char *type);

struct wire_exec_req {
    char **argv;            /* NULL-terminated, argc >= 1 */
    size_t argc;
    char **env;             /* "KEY=VALUE", NULL-terminated; envc may be 0 */
    size_t envc;
    bool clear_env;         /* env replaces the default environment */
    char *cwd;              /* NULL: the workdir */
    char *user;             /* NULL: the default user */
    bool sudo;              /* run as root, HOME=/root */
    bool stdin_null;        /* stdin from /dev/null instead of a pipe (detached: default) */
    bool detached;          /* reply only; no output events on this request */
    bool kill_on_disconnect;
    uint64_t timeout_ms;    /* 0: none */
    bool pty;
    uint16_t rows, cols;
    char *term;             /* NULL: "xterm-256color" */
};
int wire_parse_exec(const msgpack_object *map, msgpack_zone *z, struct wire_exec_req *x,
                    struct sa_err *e);

/* --- agent → client -------------------------------------------------------- */
struct wire_hello {
    const char *agent;            /* "sandbox-agent 0.1.0" */
    const char *const *caps;      /* NULL-terminated */
    const char *boot_id;
    const char *user;
    const char *workdir;
    bool dev;
    uint32_t max_frame;
    uint32_t stdin_window;
    uint64_t generation;
    bool auth_required;
    bool insecure_tcp;        /* a tcp: listener serves without a token (--insecure-tcp) */
};
void wire_msg_hello(struct buf *b, const struct wire_hello *h);

/* {type:"ok", id}: a reply with no result fields. */
void wire_msg_ok(struct buf *b, uint64_t id);

/* {type:"error", id?, code, message, stage?} */
void wire_msg_error(struct buf *b, bool has_id, uint64_t id, const struct sa_err *e);

/* {type:"output", id, cmd, stream, offset, pos, data} */
void wire_msg_output(struct buf *b, uint64_t id, uint64_t cmd, enum wire_stream s,
                     uint64_t offset, uint64_t pos, const void *data, size_t n);

struct wire_exit {
    uint64_t cmd;
    int code;               /* exit status, or 128+signal */
    int signal;             /* 0 unless killed by a signal */
    uint64_t duration_ms;
    bool timed_out;
    uint64_t stdout_bytes, stderr_bytes;
};
/* {type:"exit", id, cmd, code, signal, duration_ms, timed_out, stdout_bytes, stderr_bytes} */
void wire_msg_exit(struct buf *b, uint64_t id, const struct wire_exit *x);

#endif
