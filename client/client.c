#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "clock.h"
#include "fdio.h"
#include "json.h"

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

/* Milliseconds left before deadline for poll(); deadline < 0 is forever. */
static int poll_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - clock_mono_ms();
    return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
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

/* A hello string the host may rely on: at most CLIENT_HELLO_STR_MAX bytes and
 * no NUL (a NUL would cut a workdir short). Absent or not a str: "". */
static int dup_field(const msgpack_object *m, const char *key, char **out, struct sa_err *e)
{
    const char *s;
    size_t n;
    if (!wire_obj_str(wire_get(m, key), &s, &n)) {
        *out = xstrdup("");
        return 0;
    }
    if (n > CLIENT_HELLO_STR_MAX || memchr(s, '\0', n))
        return err_set(e, EPROTO, "bad_frame", "hello: '%s' is longer than %d bytes or holds a NUL",
                       key, CLIENT_HELLO_STR_MAX);
    *out = xstrndup(s, n);
    return 0;
}

/* The capabilities that are strings (others are skipped), at most
 * CLIENT_CAPS_MAX of them, each bounded as a hello string. */
static int dup_caps(const msgpack_object *m, char ***out, struct sa_err *e)
{
    const msgpack_object *a = wire_get(m, "capabilities");
    uint32_t n = a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
    if (n > CLIENT_CAPS_MAX)
        return err_set(e, EPROTO, "bad_frame", "hello: more than %d capabilities",
                       CLIENT_CAPS_MAX);
    char **caps = xcalloc(n + 1, sizeof *caps);
    *out = caps;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (!wire_obj_str(&a->via.array.ptr[i], &s, &len))
            continue;
        if (len > CLIENT_HELLO_STR_MAX || memchr(s, '\0', len))
            return err_set(e, EPROTO, "bad_frame", "hello: a capability is longer than %d bytes "
                           "or holds a NUL", CLIENT_HELLO_STR_MAX);
        caps[k++] = xstrndup(s, len);
    }
    return 0;
}

/* max_frame and stdin_window: absent means the protocol default; a max_frame
 * outside the protocol's range is clamped into it, so whatever the agent
 * claims, the host never accepts a frame over CLIENT_MAX_FRAME. */
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
    if (dup_field(m, "agent", &h->agent, e) < 0 || dup_field(m, "boot_id", &h->boot_id, e) < 0 ||
        dup_field(m, "user", &h->user, e) < 0 || dup_field(m, "workdir", &h->workdir, e) < 0 ||
        dup_caps(m, &h->caps, e) < 0)
        return -1;
    wire_obj_bool(wire_get(m, "dev"), &h->dev);
    wire_obj_bool(wire_get(m, "auth_required"), &h->auth_required);
    wire_obj_uint(wire_get(m, "generation"), &h->generation);
    h->max_frame = hello_size(m, "max_frame", WIRE_MAX_FRAME_DEFAULT, WIRE_MAX_FRAME_MIN,
                              CLIENT_MAX_FRAME);
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
    if (fd_set_nonblock(fd, true) < 0 ||
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

int client_detach(struct client *c, struct buf *rest)
{
    if (c->in_done) {
        buf_consume(&c->in, c->in_done);
        c->in_done = 0;
    }
    *rest = c->in;
    buf_init(&c->in);
    int fd = c->fd;
    c->fd = -1;
    client_free(c);
    return fd;
}

int client_queue_connect(struct client *c, const char *addr, unsigned port, const char *host,
                         uint64_t *id, struct sa_err *e)
{
    struct wire_enc w;
    /* Firecracker's hybrid vsock makes a host's EOF a full shutdown of the
     * guest's end and never passes the guest's on: over fc:, an EOF from
     * either side ends the tunnel (else a server's close would not reach us) */
    bool fc = strncmp(addr, "fc:", 3) == 0;
    *id = client_begin(c, &w, "connect");
    wire_kv_uint(&w, "port", port);
    if (host)
        wire_kv_str(&w, "host", host);
    if (fc)
        wire_kv_bool(&w, "half_close", false);
    return client_end(c, &w, e);
}

/* --- sending -------------------------------------------------------------- */

uint64_t client_begin(struct client *c, struct wire_enc *w, const char *type)
{
    uint64_t id = c->next_id++;
    wire_begin(w, &c->out);
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
    if (buf_size(&c->in) >= WIRE_HDR_LEN + (size_t)c->max_frame)
        return 1;   /* a whole frame is there: client_next first, the agent can wait */
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

size_t client_buffered(const struct client *c)
{
    return buf_size(&c->in) - c->in_done;
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
        if (!client_msg_id(reply, id)) {
            /* an agent that keeps sending other frames must not keep the
             * call past its deadline: client_recv only looks at the clock
             * when it has to wait */
            if (deadline >= 0 && clock_mono_ms() >= deadline)
                return err_set(e, ETIMEDOUT, NULL, "no answer from the agent in time");
            continue;
        }
        if (client_msg_is(reply, "ok"))
            return 0;
        if (client_msg_is(reply, "error")) {
            client_reply_err(reply, e);
            return 1;
        }
    }
}

int client_auth(struct client *c, const void *token, size_t len, struct sa_err *e)
{
    if (!client_hello(c)->auth_required)
        return 0;
    if (!token || len == 0)
        return err_set(e, 0, "auth_required",
                       "the agent requires a token (--token-file or $SANDBOX_AGENT_TOKEN_FILE)");
    struct wire_enc w;
    uint64_t id = client_begin(c, &w, "auth");
    wire_kv_bin(&w, "token", token, len);
    if (client_end(c, &w, e) < 0)
        return -1;
    msgpack_object reply;
    int r = client_call(c, id, addr_timeout_from_env(), &reply, e);
    if (r != 0)
        return r < 0 ? -1 : err_wrap(e, "auth");
    return 0;
}

int client_read_token(const char *path, char *buf, size_t cap, size_t *len, struct sa_err *e)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_sys(e, errno, "token file %s", path);
    size_t n = 0;
    for (;;) {
        if (n == cap)
            return err_set(e, EFBIG, NULL, "token file %s: longer than %zu bytes", path, cap - 2);
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_sys(e, errno, "reading token file %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0)
        return err_set(e, EINVAL, NULL, "token file %s is empty", path);
    *len = n;
    return 0;
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

static size_t printable_char(const char *p, size_t n);

/* p[0..n) as a C string in out[0..cap) for people to read: unprintable bytes
 * (controls, NUL, invalid UTF-8) become '?', so an agent's text cannot drive
 * the terminal it is shown on; cut short, never in a character. */
static void printable_copy(char *out, size_t cap, const char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = printable_char(p + i, n - i);
        if (o + (k ? k : 1) >= cap)
            break;
        if (k == 0) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, p + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
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
    char shown[SA_ERR_MSG_MAX];
    printable_copy(shown, sizeof shown, text, tn);
    return err_set(e, code_errno(sc), sc, "%s", shown);
}

/* --- helpers for command-line tools ----------------------------------------- */

/* Linux numbering (asm-generic: x86-64, arm64), which is what the guest uses. */
static const struct {
    const char *name;
    int sig;
} sig_names[] = {
    { "HUP", 1 },     { "INT", 2 },     { "QUIT", 3 },    { "ILL", 4 },    { "TRAP", 5 },
    { "ABRT", 6 },    { "IOT", 6 },     { "BUS", 7 },     { "FPE", 8 },    { "KILL", 9 },
    { "USR1", 10 },   { "SEGV", 11 },   { "USR2", 12 },   { "PIPE", 13 },  { "ALRM", 14 },
    { "TERM", 15 },   { "STKFLT", 16 }, { "CHLD", 17 },   { "CLD", 17 },   { "CONT", 18 },
    { "STOP", 19 },   { "TSTP", 20 },   { "TTIN", 21 },   { "TTOU", 22 },  { "URG", 23 },
    { "XCPU", 24 },   { "XFSZ", 25 },   { "VTALRM", 26 }, { "PROF", 27 },  { "WINCH", 28 },
    { "IO", 29 },     { "POLL", 29 },   { "PWR", 30 },    { "SYS", 31 },
};

/* A decimal number without sign or spaces, at most max. 0 or -1. */
static int parse_dec(const char *s, uint64_t max, uint64_t *v)
{
    uint64_t n = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > (max - (uint64_t)(*s - '0')) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*s - '0');
    }
    *v = n;
    return 0;
}

/* "RTMIN", "RTMIN+N", "RTMAX", "RTMAX-N" (upper case, no "SIG"): 1..64 or -1. */
static int parse_rt(const char *s)
{
    uint64_t k = 0;
    const uint64_t span = CLIENT_SIG_MAX - CLIENT_SIGRTMIN;
    bool min = strncmp(s, "RTMIN", 5) == 0, max = strncmp(s, "RTMAX", 5) == 0;
    if (!min && !max)
        return -1;
    if (s[5] != '\0' && (s[5] != (min ? '+' : '-') || parse_dec(s + 6, span, &k) < 0))
        return -1;
    return min ? CLIENT_SIGRTMIN + (int)k : CLIENT_SIG_MAX - (int)k;
}

int client_signal_parse(const char *s)
{
    char up[16];
    size_t n = strlen(s);
    uint64_t v;
    if (*s >= '0' && *s <= '9')
        return parse_dec(s, CLIENT_SIG_MAX, &v) == 0 && v >= 1 ? (int)v : -1;
    if (n >= sizeof up)
        return -1;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 'a' + 'A' : s[i]);
    const char *name = strncmp(up, "SIG", 3) == 0 ? up + 3 : up;
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (strcmp(name, sig_names[i].name) == 0)
            return sig_names[i].sig;
    return parse_rt(name);
}

const char *client_signal_name(int sig, char *out, size_t n)
{
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (sig_names[i].sig == sig) {
            snprintf(out, n, "%s", sig_names[i].name);
            return out;
        }
    if (sig == CLIENT_SIGRTMIN)
        snprintf(out, n, "RTMIN");
    else if (sig > CLIENT_SIGRTMIN && sig < CLIENT_SIG_MAX)
        snprintf(out, n, "RTMIN+%d", sig - CLIENT_SIGRTMIN);
    else if (sig == CLIENT_SIG_MAX)
        snprintf(out, n, "RTMAX");
    else
        return NULL;
    return out;
}

int client_parse_id(const char *s, uint64_t *id)
{
    return parse_dec(s, UINT64_MAX, id) == 0 && *id > 0 ? 0 : -1;
}

int client_parse_secs(const char *s, uint64_t *ms)
{
    char *end;
    if ((!(*s >= '0' && *s <= '9') && *s != '.') || s[strspn(s, "0123456789.eE+-")])
        return -1;      /* decimal only: no sign, spaces, hex, "inf" or "nan" */
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e12)
        return -1;
    double want = v * 1000.0;
    *ms = (uint64_t)want;
    if ((double)*ms < want)     /* round up: 0.0001 s is 1 ms, not none */
        ++*ms;
    return 0;
}

void client_fmt_secs(uint64_t ms, char *out, size_t n)
{
    unsigned frac = (unsigned)(ms % 1000);
    int digits = 3;
    if (frac == 0) {
        snprintf(out, n, "%" PRIu64, ms / 1000);
        return;
    }
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(out, n, "%" PRIu64 ".%0*u", ms / 1000, digits, frac);
}

void client_fmt_duration(uint64_t ms, char *out, size_t n)
{
    uint64_t s = ms / 1000, m = s / 60, h = m / 60, d = h / 24;
    if (ms < 1000)
        snprintf(out, n, "%" PRIu64 "ms", ms);
    else if (s < 60)
        snprintf(out, n, "%" PRIu64 ".%" PRIu64 "s", s, ms % 1000 / 100);
    else if (m < 60)
        snprintf(out, n, "%" PRIu64 "m%02" PRIu64 "s", m, s % 60);
    else if (h < 24)
        snprintf(out, n, "%" PRIu64 "h%02" PRIu64 "m", h, m % 60);
    else
        snprintf(out, n, "%" PRIu64 "d%02" PRIu64 "h", d, h % 24);
}

void client_fmt_utc(uint64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, n, "?");
}

/* Length of the UTF-8 character at p (n > 0 bytes) when it is well-formed
 * and printable, else 0. */
static size_t printable_char(const char *p, size_t n)
{
    unsigned char b = (unsigned char)p[0];
    size_t len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3
               : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len == 0 || len > n || !json_utf8_valid(p, len))
        return 0;
    if (b < 0x20 || b == 0x7f)
        return 0;
    if (b == 0xc2 && (unsigned char)p[1] < 0xa0)
        return 0;   /* C1 controls U+0080..U+009F: terminals act on some */
    return len;
}

static bool shell_plain(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || strchr("_@%+=:,./-", ch) != NULL;
        if (!ok || ch == '\0')
            return false;
    }
    return true;
}

/* Append p[0..n) with unprintable characters as '?'. */
static void append_printable(struct buf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = printable_char(p + i, n - i);
        if (k == 0) {
            buf_append(b, "?", 1);
            i++;
            continue;
        }
        if (k == 1 && p[i] == '\'')
            buf_append(b, "'\\''", 4);
        else
            buf_append(b, p + i, k);
        i += k;
    }
}

void client_join_argv(struct buf *b, const msgpack_object *argv)
{
    if (!argv || argv->type != MSGPACK_OBJECT_ARRAY) {
        buf_append(b, "?", 1);
        return;
    }
    for (uint32_t i = 0; i < argv->via.array.size; i++) {
        const char *s;
        size_t n;
        if (i > 0)
            buf_append(b, " ", 1);
        if (!wire_obj_str(&argv->via.array.ptr[i], &s, &n)) {
            buf_append(b, "?", 1);
            continue;
        }
        if (shell_plain(s, n)) {
            buf_append(b, s, n);
            continue;
        }
        buf_append(b, "'", 1);
        append_printable(b, s, n);
        buf_append(b, "'", 1);
    }
}

size_t client_fit_width(const char *p, size_t n, size_t cols)
{
    size_t i = 0;
    for (size_t col = 0; i < n && col < cols; col++) {
        size_t k = printable_char(p + i, n - i);
        i += k ? k : 1;
    }
    return i;
}
