/* fuzz_client.c — libFuzzer target for libsa_client against a hostile agent.
 *
 * The input is everything an "agent" sends on one connection: it is written
 * into one end of a socketpair (as much as the socket takes: libFuzzer's
 * -max_len of 64 KiB always fits), and that end is then shut for writing, so
 * the client reads the bytes and then end of stream, and never waits. The
 * client on the other end goes through what sandboxctl and the gateway do:
 *   - client_open_fd: the hello;
 *   - client_auth when the hello asks for a token (a client_call);
 *   - a ping through client_call, which skips other frames;
 *   - then every further frame in the poll-loop way (client_read once,
 *     client_next until 0), each read the ways the callers read them:
 *     client_msg_is/client_msg_id, client_reply_err, the fields of output,
 *     exit, data and list messages, client_join_argv, and json_write (what
 *     `sandboxctl --json` prints).
 *
 * Besides the sanitizers, the target aborts when an invariant breaks:
 *   - a hello that was accepted is within the host's bounds: protocol 1,
 *     max_frame in [WIRE_MAX_FRAME_MIN, CLIENT_MAX_FRAME], strings at most
 *     CLIENT_HELLO_STR_MAX bytes, at most CLIENT_CAPS_MAX capabilities;
 *   - every error carries a code, and an agent's error text, once in a
 *     struct sa_err, holds no control character;
 *   - client_call returns only the reply to its own id;
 *   - what json_write prints of a message parses back as JSON;
 *   - the connection never ends with a timeout: all bytes are there at once;
 *   - client_read never buffers more than one whole frame and one read.
 *
 * Build with -DSA_FUZZ=ON (clang); the seed corpus is tests/fuzz/corpus/client/
 * (tests/fuzz/make_client_corpus.py writes it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "client.h"
#include "err.h"
#include "fuzz.h"
#include "json.h"
#include "wire.h"

#define IO_TIMEOUT_MS 1000      /* never reached: every byte is already there */

static void check_hello(const struct client *c)
{
    const struct client_hello *h = client_hello(c);
    INVARIANT(h->protocol == WIRE_PROTOCOL_VERSION);
    INVARIANT(h->max_frame >= WIRE_MAX_FRAME_MIN && h->max_frame <= CLIENT_MAX_FRAME);
    const char *strs[] = { h->agent, h->boot_id, h->user, h->workdir };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        INVARIANT(strs[i] && strlen(strs[i]) <= CLIENT_HELLO_STR_MAX);
    size_t n = 0;
    for (char **p = h->caps; *p; p++, n++)
        INVARIANT(strlen(*p) <= CLIENT_HELLO_STR_MAX);
    INVARIANT(n <= CLIENT_CAPS_MAX);
}

static void check_err(const struct sa_err *e)
{
    INVARIANT(e->code && e->code[0] != '\0');
    INVARIANT(e->errnum != ETIMEDOUT);
}

/* The agent's text in e after client_reply_err: nothing a terminal acts on. */
static void check_printable(const struct sa_err *e)
{
    for (const unsigned char *p = (const unsigned char *)e->msg; *p; p++)
        INVARIANT(*p >= 0x20 && *p != 0x7f);
}

/* json_write's text of m is JSON. */
static void check_json(const msgpack_object *m)
{
    struct buf b;
    struct sa_err e;
    msgpack_zone z;
    msgpack_object back;
    buf_init(&b);
    if (!msgpack_zone_init(&z, WIRE_ZONE_CHUNK))
        abort();
    json_write(&b, m);
    INVARIANT(json_parse((const char *)buf_ptr(&b), buf_size(&b), &z, &back, &e) == 0);
    msgpack_zone_destroy(&z);
    buf_free(&b);
}

/* Read one message the ways sandboxctl and the gateway read theirs. */
static void exercise_msg(const msgpack_object *m)
{
    struct sa_err e;
    const char *s;
    size_t n;
    uint64_t u;
    int64_t i;
    bool b;
    (void)client_msg_id(m, 1);
    if (client_msg_is(m, "error")) {
        INVARIANT(client_reply_err(m, &e) < 0);
        check_err(&e);
        check_printable(&e);
    }
    static const char *const bytes_keys[] = { "data", "stream", "code", "message", "path",
                                              "name", "target", "cwd", "user" };
    for (size_t k = 0; k < sizeof bytes_keys / sizeof *bytes_keys; k++)
        if (wire_obj_bytes(wire_get(m, bytes_keys[k]), &s, &n))
            INVARIANT(n == 0 || s != NULL);
    static const char *const uint_keys[] = { "id", "cmd", "offset", "from", "to", "pos",
                                             "stdout_bytes", "stderr_bytes", "duration_ms",
                                             "started_ms", "time_ms", "size", "entries" };
    for (size_t k = 0; k < sizeof uint_keys / sizeof *uint_keys; k++)
        (void)wire_obj_uint(wire_get(m, uint_keys[k]), &u);
    (void)wire_obj_int(wire_get(m, "code"), &i);
    (void)wire_obj_bool(wire_get(m, "timed_out"), &b);
    const msgpack_object *argv = wire_get(m, "argv");
    struct buf line;
    buf_init(&line);
    client_join_argv(&line, argv);
    INVARIANT(buf_size(&line) > 0);
    (void)client_fit_width((const char *)buf_ptr(&line), buf_size(&line), 40);
    buf_free(&line);
    const msgpack_object *list = wire_get(m, "commands");
    if (list && list->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t k = 0; k < list->via.array.size; k++)
            (void)wire_obj_uint(wire_get(&list->via.array.ptr[k], "cmd"), &u);
    check_json(m);
}

/* The ping of a client_call, and its answer. */
static int call_ping(struct client *c)
{
    struct wire_enc w;
    struct sa_err e;
    msgpack_object reply;
    uint64_t id = client_begin(c, &w, "ping");
    INVARIANT(client_end(c, &w, &e) == 0);
    int r = client_call(c, id, IO_TIMEOUT_MS, &reply, &e);
    if (r < 0) {
        check_err(&e);
        return -1;
    }
    INVARIANT(client_msg_id(&reply, id));
    INVARIANT(client_msg_is(&reply, r == 0 ? "ok" : "error"));
    if (r == 1)
        check_printable(&e);
    exercise_msg(&reply);
    return 0;
}

/* The rest of the stream, as a poll loop would take it. */
static void drain(struct client *c)
{
    struct sa_err e;
    for (;;) {
        int r = client_read(c, &e);
        if (r <= 0) {
            if (r < 0)
                check_err(&e);
            return;
        }
        INVARIANT(client_buffered(c) <=
                  WIRE_HDR_LEN + client_hello(c)->max_frame + CLIENT_READ_CHUNK);
        msgpack_object m;
        int got;
        while ((got = client_next(c, &m, &e)) == 1)
            exercise_msg(&m);
        if (got < 0) {
            check_err(&e);
            return;
        }
    }
}

/* A socketpair whose far end has sent data[0..size) and then shut. The
 * client's end in *mine; the far end is returned (kept open so that the
 * client's requests can still be sent). */
static int agent_socket(const uint8_t *data, size_t size, int *mine)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            break;      /* the socket is full: the rest is cut off */
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    *mine = sv[0];
    return sv[1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct client *c = NULL;
    struct sa_err e;
    int fd;
    int agent = agent_socket(data, size, &fd);
    if (client_open_fd(fd, IO_TIMEOUT_MS, &c, &e) < 0) {
        check_err(&e);
        close(agent);
        return 0;
    }
    check_hello(c);
    if (client_hello(c)->auth_required && client_auth(c, "token", 5, &e) < 0) {
        check_err(&e);
        check_printable(&e);
    } else if (call_ping(c) == 0) {
        drain(c);
    }
    client_free(c);
    close(agent);
    return 0;
}
