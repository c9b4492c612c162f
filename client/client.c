#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"

#define CLIENT_STDIN_WINDOW_DEFAULT (1u << 20)   /* PROTOCOL.md: hello's default */

struct client {
    int fd;
    struct client_hello hello;
    uint32_t max_frame;         /* receive and send bound */
    uint64_t next_id;
    struct buf in;              /* received, not yet decoded */
    size_t in_done;             /* bytes of the last decoded frame, dropped lazily */
    struct buf out;             /* queued request frames */
    msgpack_zone zone;          /* the last decoded frame's objects */
};

/* --- time ----------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before deadline for poll(); deadline < 0 is forever. */
static int poll_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Wait for events on the socket. 1 ready, -1 with e on timeout or error. */
static int wait_sock(struct client *c, short events, int64_t deadline, struct sa_err *e)
{
    for (;;) {
        struct pollfd p = { .fd = c->fd, .events = events };
        int r = poll(&p, 1, poll_left(deadline));
        if (r > 0)
            return 1;
        if (r == 0)
            return err_set(e, ETIMEDOUT, NULL, "no answer from the agent in time");
        if (errno != EINTR)
            return err_sys(e, errno, "poll");
    }
}

/* --- lifetime ------------------------------------------------------------- */

static void hello_free(struct client_hello *h)
{
    free(h->agent);
    free(h->boot_id);
    free(h->user);
    free(h->workdir);
    for (char **p = h->caps; p && *p; p++)
        free(*p);
    free(h->caps);
}

void client_free(struct client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    hello_free(&c->hello);
    buf_free(&c->in);
    buf_free(&c->out);
    msgpack_zone_destroy(&c->zone);
    free(c);
}

int client_fd(const struct client *c)
{
    return c->fd;
}

const struct client_hello *client_hello(const struct client *c)
{
    return &c->hello;
}

bool client_has_cap(const struct client *c, const char *cap)
{
    for (char **p = c->hello.caps; p && *p; p++)
        if (strcmp(*p, cap) == 0)
            return true;
    return false;
}

/* --- hello ---------------------------------------------------------------- */

/* A malloc'd copy of the str under key, "" when absent or not a str. */
static char *dup_field(const msgpack_object *m, const char *key)
{
    const char *s;
    size_t n;
    if (!wire_obj_str(wire_get(m, key), &s, &n))
        return xstrdup("");
    return xstrndup(s, n);
}

static char **dup_caps(const msgpack_object *m)
{
    const msgpack_object *a = wire_get(m, "capabilities");
    uint32_t n = a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
    char **caps = xcalloc(n + 1, sizeof *caps);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (wire_obj_str(&a->via.array.ptr[i], &s, &len))
            caps[k++] = xstrndup(s, len);
    }
    return caps;
}

/* max_frame and stdin_window: absent means the protocol default; a max_frame
 * outside the protocol's range is clamped into it. */
static uint32_t hello_size(const msgpack_object *m, const char *key, uint32_t def,
                           uint32_t lo, uint32_t hi)
{
    uint64_t v;
    if (!wire_obj_uint(wire_get(m, key), &v))
        return def;
    return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

static int hello_parse(struct client *c, const msgpack_object *m, struct sa_err *e)
{
    struct client_hello *h = &c->hello;
    if (!client_msg_is(m, "hello")) {
        if (client_msg_is(m, "error")) {
            client_reply_err(m, e);
            return err_wrap(e, "agent refused the connection");
        }
        return err_set(e, EPROTO, "bad_frame", "the agent's first message is not a hello");
    }
    if (!wire_obj_uint(wire_get(m, "protocol"), &h->protocol))
        return err_set(e, EPROTO, "bad_frame", "hello without a protocol version");
    if (h->protocol != WIRE_PROTOCOL_VERSION)
        return err_set(e, EPROTO, "bad_frame", "agent speaks protocol %llu, this client speaks %d",
                       (unsigned long long)h->protocol, WIRE_PROTOCOL_VERSION);
    h->agent = dup_field(m, "agent");
    h->boot_id = dup_field(m, "boot_id");
    h->user = dup_field(m, "user");
    h->workdir = dup_field(m, "workdir");
    h->caps = dup_caps(m);
    wire_obj_bool(wire_get(m, "dev"), &h->dev);
    wire_obj_bool(wire_get(m, "auth_required"), &h->auth_required);
    wire_obj_uint(wire_get(m, "generation"), &h->generation);
    h->max_frame = hello_size(m, "max_frame", WIRE_MAX_FRAME_DEFAULT, WIRE_MAX_FRAME_MIN,
                              WIRE_MAX_FRAME_LIMIT);
    h->stdin_window = hello_size(m, "stdin_window", CLIENT_STDIN_WINDOW_DEFAULT, 0, UINT32_MAX);
    c->max_frame = h->max_frame;
    return 0;
}

int client_open_fd(int fd, int timeout_ms, struct client **out, struct sa_err *e)
{
    struct client *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->max_frame = WIRE_MAX_FRAME_DEFAULT;   /* until the hello says otherwise */
    c->next_id = 1;
    buf_init(&c->in);
    buf_init(&c->out);
    if (!msgpack_zone_init(&c->zone, WIRE_ZONE_CHUNK))
        abort();    /* out of memory, as xmalloc */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        err_sys(e, errno, "fcntl");
        client_free(c);
        return -1;
    }
    msgpack_object hello;
    if (client_recv(c, timeout_ms, &hello, e) < 0 || hello_parse(c, &hello, e) < 0) {
        err_wrap(e, "hello");
        client_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

int client_connect(const char *addr, int timeout_ms, struct client **out, struct sa_err *e)
{
    struct addr a;
    if (addr_parse(addr, &a, e) < 0)
        return -1;
    if (timeout_ms < 0)
        timeout_ms = addr_timeout_from_env();
    int fd = addr_connect(&a, timeout_ms, e);
    if (fd < 0)
        return -1;
    if (client_open_fd(fd, timeout_ms, out, e) < 0)
        return err_wrap(e, "%s", addr);
    return 0;
}

/* --- sending -------------------------------------------------------------- */

uint64_t client_begin(struct client *c, struct wire_enc *w, const char *type, uint32_t nfields)
{
    uint64_t id = c->next_id++;
    wire_begin(w, &c->out, nfields + 2);
    wire_kv_str(w, "type", type);
    wire_kv_uint(w, "id", id);
    return id;
}

int client_end(struct client *c, struct wire_enc *w, struct sa_err *e)
{
    wire_end(w);
    size_t len = buf_size(&c->out) - w->start - WIRE_HDR_LEN;
    if (len <= c->max_frame)
        return 0;
    c->out.len = c->out.head + w->start;    /* drop the frame from the queue */
    return err_set(e, EMSGSIZE, "frame_too_large",
                   "request of %zu bytes exceeds the agent's max_frame of %u", len,
                   c->max_frame);
}

size_t client_pending(const struct client *c)
{
    return buf_size(&c->out);
}

int client_flush(struct client *c, struct sa_err *e)
{
    while (buf_size(&c->out) > 0) {
        ssize_t n = send(c->fd, buf_ptr(&c->out), buf_size(&c->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return err_set(e, errno, "closed", "send to the agent: %s", strerror(errno));
        }
        buf_consume(&c->out, (size_t)n);
    }
    return 0;
}

int client_flush_all(struct client *c, int timeout_ms, struct sa_err *e)
{
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        if (client_flush(c, e) < 0)
            return -1;
        if (buf_size(&c->out) == 0)
            return 0;
        if (wait_sock(c, POLLOUT, deadline, e) < 0)
            return -1;
    }
}

/* --- receiving ------------------------------------------------------------ */

/* Drop the frame handed out last: its objects are no longer in use. */
static void release_last(struct client *c)
{
    if (c->in_done) {
        buf_consume(&c->in, c->in_done);
        c->in_done = 0;
    }
}

int client_read(struct client *c, struct sa_err *e)
{
    release_last(c);
    for (;;) {
        uint8_t *p = buf_reserve(&c->in, CLIENT_READ_CHUNK);
        ssize_t n = read(c->fd, p, CLIENT_READ_CHUNK);
        if (n > 0) {
            buf_commit(&c->in, (size_t)n);
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 1;
        return err_set(e, errno, "closed", "receive from the agent: %s", strerror(errno));
    }
}

int client_next(struct client *c, msgpack_object *msg, struct sa_err *e)
{
    release_last(c);
    uint32_t len;
    int r = wire_frame_peek(buf_ptr(&c->in), buf_size(&c->in), c->max_frame, &len, e);
    if (r <= 0)
        return r < 0 ? err_wrap(e, "from the agent") : 0;
    if (buf_size(&c->in) - WIRE_HDR_LEN < len)
        return 0;
    msgpack_zone_clear(&c->zone);
    if (wire_decode(buf_ptr(&c->in) + WIRE_HDR_LEN, len, &c->zone, msg, e) < 0)
        return err_wrap(e, "from the agent");
    c->in_done = WIRE_HDR_LEN + (size_t)len;
    return 1;
}

int client_recv(struct client *c, int timeout_ms, msgpack_object *msg, struct sa_err *e)
{
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        int r = client_next(c, msg, e);
        if (r != 0)
            return r > 0 ? 0 : -1;
        if (wait_sock(c, POLLIN, deadline, e) < 0)
            return -1;
        r = client_read(c, e);
        if (r < 0)
            return -1;
        if (r == 0)
            return err_set(e, ECONNRESET, "closed", "the agent closed the connection");
    }
}

int client_call(struct client *c, uint64_t id, int timeout_ms, msgpack_object *reply,
                struct sa_err *e)
{
    int64_t deadline = deadline_of(timeout_ms);
    if (client_flush_all(c, timeout_ms, e) < 0)
        return -1;
    for (;;) {
        int left = poll_left(deadline);
        if (client_recv(c, left, reply, e) < 0)
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

/* --- reading replies ------------------------------------------------------ */

bool client_msg_is(const msgpack_object *msg, const char *t)
{
    return wire_obj_is(wire_get(msg, "type"), t);
}

bool client_msg_id(const msgpack_object *msg, uint64_t id)
{
    uint64_t v;
    return wire_obj_uint(wire_get(msg, "id"), &v) && v == id;
}

/* The static string equal to a wire error code. */
static const char *static_code(const char *s, size_t n)
{
    static const char *const codes[] = {
        "bad_frame", "frame_too_large", "bad_request", "unknown_type", "unsupported",
        "not_found", "exited", "stdin_closed", "window_exceeded", "unknown_user",
        "auth_required", "too_many", "internal",
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strlen(codes[i]) == n && memcmp(codes[i], s, n) == 0)
            return codes[i];
    for (int errnum = 1; errnum < 256; errnum++) {
        const char *name = err_errno_name(errnum);
        if (strlen(name) == n && memcmp(name, s, n) == 0 && strcmp(name, "EUNKNOWN") != 0)
            return name;
    }
    return "unknown";
}

/* errno for an errno-name code, else 0. */
static int code_errno(const char *code)
{
    for (int errnum = 1; errnum < 256; errnum++)
        if (strcmp(err_errno_name(errnum), code) == 0)
            return errnum;
    return 0;
}

int client_reply_err(const msgpack_object *msg, struct sa_err *e)
{
    const char *code = "", *text = "";
    size_t cn = 0, tn = 0;
    wire_obj_str(wire_get(msg, "code"), &code, &cn);
    wire_obj_str(wire_get(msg, "message"), &text, &tn);
    const char *sc = static_code(code, cn);
    if (tn == 0) {
        text = code;
        tn = cn;
    }
    int tlen = tn > SA_ERR_MSG_MAX ? SA_ERR_MSG_MAX : (int)tn;
    return err_set(e, code_errno(sc), sc, "%.*s", tlen, text);
}
