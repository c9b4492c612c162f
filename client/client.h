/* client.h — the host side of protocol v1: one connection to an agent.
 *
 * client_connect() reaches an address (addr.h), reads the agent's hello and
 * checks that it speaks protocol 1. The connection is then usable two ways:
 *
 *   blocking:  client_begin/client_end to queue a request, client_call() to
 *              send it and wait for its ok/error, client_recv() for events;
 *   poll loop: poll client_fd() for POLLIN, and for POLLOUT while
 *              client_pending() is non-zero; on POLLIN call client_read()
 *              once, then client_next() until it returns 0; on POLLOUT call
 *              client_flush().
 *
 * The socket is non-blocking and close-on-exec; sends never raise SIGPIPE.
 * Received frames are bounded by the hello's max_frame before any payload is
 * buffered (a longer length is an error, never an allocation), validated and
 * decoded with wire_decode() into a zone owned by the connection. A decoded
 * message, and every str/bin inside it, stays valid until the next call of
 * client_read, client_next, client_recv or client_call on that connection.
 * Request frames larger than max_frame are refused by client_end().
 * Everything read from an agent is untrusted (the guest may run root code
 * that replaces it): see the CLIENT_* bounds below.
 * Errors follow err.h; a lost connection has code "closed".
 */
#ifndef SA_CLIENT_H
#define SA_CLIENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "wire.h"

#define CLIENT_READ_CHUNK 65536
/* Host-side bounds on what an agent sends (the guest may run root code that
 * replaces the agent): frames are refused above CLIENT_MAX_FRAME whatever the
 * hello claims; hello strings longer than CLIENT_HELLO_STR_MAX bytes or
 * holding a NUL, and more than CLIENT_CAPS_MAX capabilities, refuse the
 * connection. */
#define CLIENT_MAX_FRAME WIRE_MAX_FRAME_LIMIT
#define CLIENT_HELLO_STR_MAX 4096
#define CLIENT_CAPS_MAX 256

/* What the agent said in its hello. Strings are owned by the connection and
 * are "" when the agent did not send them. */
struct client_hello {
    uint64_t protocol;          /* always WIRE_PROTOCOL_VERSION once connected */
    char *agent;                /* "sandbox-agent 0.1.0" */
    char **caps;                /* NULL-terminated */
    char *boot_id;
    char *user;
    char *workdir;
    bool dev;
    bool auth_required;
    uint32_t max_frame;         /* bound for both directions; default 1 MiB */
    uint32_t stdin_window;      /* unacknowledged stdin bytes allowed per command */
    uint64_t generation;
};

struct client;

/* Connect to addr (addr.h syntax) and read the hello. timeout_ms bounds the
 * connection (fc: retries included) and then the wait for the hello; < 0
 * means addr_timeout_from_env(). */
int client_connect(const char *addr, int timeout_ms, struct client **out, struct sa_err *e);
/* The same over a stream that is already connected; takes fd in all cases. */
int client_open_fd(int fd, int timeout_ms, struct client **out, struct sa_err *e);
void client_free(struct client *c);
/* Take the socket over and free c (after `connect`'s ok the stream is raw
 * bytes): returns the fd (non-blocking, close-on-exec); *rest gets the bytes
 * already received past the last message handed out, the stream's start. */
int client_detach(struct client *c, struct buf *rest);

/* Queue a `connect` request (PROTOCOL.md) for the guest's host:port (host
 * NULL: the agent's default) on c, connected to addr; *id gets its id. Send
 * it with client_call, then client_detach on its ok. */
int client_queue_connect(struct client *c, const char *addr, unsigned port, const char *host,
                         uint64_t *id, struct sa_err *e);

int client_fd(const struct client *c);
const struct client_hello *client_hello(const struct client *c);
bool client_has_cap(const struct client *c, const char *cap);

/* --- sending ------------------------------------------------------------- */
/* Start a request frame in the send queue with "type" and a fresh "id"
 * (returned); the caller then writes its fields with wire_kv_* / wire_key +
 * msgpack_pack_* on w->pk (the map counts them, wire.h), and calls
 * client_end. */
uint64_t client_begin(struct client *c, struct wire_enc *w, const char *type);
/* Finish the frame. A frame over max_frame is removed from the queue and
 * fails with "frame_too_large". */
int client_end(struct client *c, struct wire_enc *w, struct sa_err *e);
/* Bytes queued and not yet written. */
size_t client_pending(const struct client *c);
/* Write what the socket takes now, without blocking. */
int client_flush(struct client *c, struct sa_err *e);
/* Write everything, waiting up to timeout_ms (< 0: forever). */
int client_flush_all(struct client *c, int timeout_ms, struct sa_err *e);

/* --- receiving ----------------------------------------------------------- */
/* One read(2) of at most CLIENT_READ_CHUNK bytes. 1 while the connection is
 * open (whether or not bytes arrived), 0 at end of stream, -1 on error.
 * Nothing is read while a whole frame of max_frame bytes is buffered (call
 * client_next), so at most WIRE_HDR_LEN + max_frame + CLIENT_READ_CHUNK
 * bytes are ever buffered, however fast the agent sends. */
int client_read(struct client *c, struct sa_err *e);
/* Bytes received and not yet handed out by client_next. */
size_t client_buffered(const struct client *c);
/* The next complete buffered frame: 1 and *msg set, 0 when more bytes are
 * needed, -1 on an oversize or malformed frame (the stream is then lost). */
int client_next(struct client *c, msgpack_object *msg, struct sa_err *e);
/* Block until a frame arrives (timeout_ms < 0: forever). End of stream is an
 * error with code "closed"; running out of time, "ETIMEDOUT". */
int client_recv(struct client *c, int timeout_ms, msgpack_object *msg, struct sa_err *e);
/* Send the queue, then wait for the ok/error reply to request id, skipping
 * other messages. 0: an ok in *reply. 1: an error reply in *reply, also put
 * into e (code and message). -1: the connection failed, or timeout_ms passed
 * ("ETIMEDOUT") — also while the agent keeps sending other messages. */
int client_call(struct client *c, uint64_t id, int timeout_ms, msgpack_object *reply,
                struct sa_err *e);

/* Present the shared token when the hello asked for one (auth_required);
 * 0 when accepted or not needed, -1 with e ("auth_required" when refused or
 * when no token was given; "ETIMEDOUT" when no answer came within
 * addr_timeout_from_env()). */
int client_auth(struct client *c, const void *token, size_t len, struct sa_err *e);
/* Read a token file: its content, one trailing newline stripped, 1..4096 bytes. */
int client_read_token(const char *path, char *buf, size_t cap, size_t *len, struct sa_err *e);

/* --- reading replies ----------------------------------------------------- */
/* The "type" of a message is t. */
bool client_msg_is(const msgpack_object *msg, const char *t);
/* msg's "id" is id. */
bool client_msg_id(const msgpack_object *msg, uint64_t id);
/* Fill e from an error message: its code (as a static string: a protocol code
 * or an errno name; "unknown" otherwise) and message, cut to fit and with
 * every control character, NUL and invalid UTF-8 byte shown as '?' (the text
 * comes from the guest and ends up on terminals and in logs). Returns -1. */
int client_reply_err(const msgpack_object *msg, struct sa_err *e);

/* --- helpers for command-line tools (sandboxctl) ------------------------- */
/* No I/O in any of these. */

#define CLIENT_SIG_MAX 64           /* signal numbers are 1..64 (PROTOCOL.md) */
#define CLIENT_SIGRTMIN 34          /* as glibc and bash count: 32, 33 are libc's */

/* A signal given as a number (1..64, decimal) or a name, case-insensitive,
 * with or without "SIG": HUP, INT, ..., SYS, RTMIN, RTMIN+N, RTMAX, RTMAX-N.
 * Numbers are the guest's (Linux x86-64/arm64). Returns 1..64, or -1. */
int client_signal_parse(const char *s);
/* "TERM" for 15, "RTMIN+2" for 36; NULL for a number without a name. */
const char *client_signal_name(int sig, char *out, size_t n);

/* A command id: a decimal u64 > 0 without sign or spaces. 0 or -1. */
int client_parse_id(const char *s, uint64_t *id);
/* Seconds, decimals allowed ("2", "0.5", "1e3"), > 0 and at most 1e12, to
 * milliseconds rounded up (0.0001 s is 1 ms, never "none"). 0 or -1. */
int client_parse_secs(const char *s, uint64_t *ms);
/* Milliseconds as seconds without trailing zeros: "2", "1.5", "0.001". */
void client_fmt_secs(uint64_t ms, char *out, size_t n);
/* A duration for people, at most 6 characters: "350ms", "12.3s", "5m03s",
 * "2h05m", "3d04h" (truncated, never rounded up into the next unit). */
void client_fmt_duration(uint64_t ms, char *out, size_t n);
/* Milliseconds since the epoch as ISO-8601 UTC to the second:
 * "2025-11-28T00:40:12Z". */
void client_fmt_utc(uint64_t ms, char *out, size_t n);

/* Append argv (an array of str) to b as one line a person can read and a
 * shell would split back: words joined by spaces, a word that is empty or
 * holds anything but [A-Za-z0-9_@%+=:,./-] in single quotes ('\'' for a
 * quote). Control characters, DEL and invalid UTF-8 become '?', so the text
 * is safe to print on a terminal. A non-array or non-str element: "?". */
void client_join_argv(struct buf *b, const msgpack_object *argv);
/* Bytes of the longest prefix of p[0..n) (UTF-8) that fits in cols
 * terminal columns, counting one column per character and never cutting a
 * character in two. */
size_t client_fit_width(const char *p, size_t n, size_t cols);

#endif
