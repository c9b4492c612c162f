/* fuzz_frame.c — libFuzzer target for the frame reader and the request decoder.
 *
 * The input is what a connection would receive: a byte stream, cut into frames
 * by wire_frame_peek. Each whole frame is copied to an allocation of exactly
 * its size (so a read past the frame is a heap overflow under ASan), decoded
 * into a zone that is reused and cleared between frames, parsed as a request
 * and as an exec, and its fields are read the way the agent reads them. The
 * replies that would be sent (errors, an output event, an exit) are encoded,
 * and every encoded frame must decode again. As on a real connection, the first
 * frame that cannot be read ends the stream.
 *
 * Besides the sanitizers, the target aborts when an invariant breaks:
 *   - wire_decode succeeds exactly when wire_check does (msgpack-c never
 *     refuses what the validator accepted), and the root is a map;
 *   - decoding costs at most 48 bytes of zone per payload byte, plus the first
 *     chunks (see decoding_max_objects_stays_within_48_bytes_per_object in
 *     tests/test_protocol.c for where 48 comes from);
 *   - a parsed exec request holds what msg.h promises;
 *   - the encoder's frames are accepted by the decoder, bytes intact.
 *
 * Build with -DSA_FUZZ=ON (clang); the seed corpus is tests/fuzz/corpus/frame/.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "err.h"
#include "msg.h"
#include "wire.h"

/* Bytes owned by a msgpack_zone: its chunks form a singly linked list whose
 * first member is the link, and the head is public. */
struct zone_chunk_view {
    struct zone_chunk_view *next;
};

static size_t zone_footprint(msgpack_zone *z)
{
    size_t total = 0;
    for (struct zone_chunk_view *c = (struct zone_chunk_view *)z->chunk_list.head; c; c = c->next)
        total += malloc_usable_size(c);
    return total;
}

/* Every object takes at least one payload byte. */
#define DECODE_BOUND(payload_len) (48 * (size_t)(payload_len) + 2 * WIRE_ZONE_CHUNK)

/* What msg.h promises about a successfully parsed exec request. */
static void check_exec(const struct wire_exec_req *x)
{
    INVARIANT(x->argc >= 1 && x->argv && x->argv[x->argc] == NULL);
    INVARIANT(x->argv[0][0] != '\0');
    for (size_t i = 0; i < x->argc; i++)
        INVARIANT(x->argv[i] != NULL);
    INVARIANT(x->env == NULL ? x->envc == 0 : x->env[x->envc] == NULL);
    for (size_t i = 0; i < x->envc; i++) {
        const char *eq = strchr(x->env[i], '=');
        INVARIANT(eq && eq != x->env[i]);
    }
    INVARIANT(!(x->sudo && x->user));
    INVARIANT(!x->cwd || x->cwd[0] != '\0');
    INVARIANT(x->rows >= 1 && x->cols >= 1);
}

/* Encode an output event carrying bytes, decode it again, compare. */
static void check_output_round_trip(msgpack_zone *z, uint64_t id, uint64_t cmd, const char *p,
                                    size_t n)
{
    struct buf b;
    struct sa_err e;
    msgpack_object root;
    uint32_t len = 0;
    buf_init(&b);
    wire_msg_output(&b, id, cmd, WIRE_STDERR, n, n, p, n);
    INVARIANT(wire_frame_peek(buf_ptr(&b), buf_size(&b), WIRE_MAX_FRAME_LIMIT, &len, &e) == 1);
    INVARIANT(len == buf_size(&b) - WIRE_HDR_LEN);
    INVARIANT(wire_decode(buf_ptr(&b) + WIRE_HDR_LEN, len, z, &root, &e) == 0);
    const char *q;
    size_t m;
    uint64_t v;
    INVARIANT(wire_obj_bytes(wire_get(&root, "data"), &q, &m) && m == n &&
              (n == 0 || memcmp(p, q, n) == 0));
    INVARIANT(wire_obj_uint(wire_get(&root, "id"), &v) && v == id);
    INVARIANT(wire_obj_uint(wire_get(&root, "cmd"), &v) && v == cmd);
    buf_free(&b);
}

/* Parse a decoded frame the ways the agent would, queueing replies in out. */
static void exercise_request(const msgpack_object *root, msgpack_zone *z, struct buf *out)
{
    struct sa_err e;
    struct wire_req r;
    err_clear(&e);
    bool has_id = false;
    uint64_t id = 0;
    if (wire_parse_req(root, &r, &e) == 0) {
        INVARIANT(r.has_id && r.type != NULL);
        has_id = true;
        id = r.id;
        (void)wire_req_is(&r, "exec");
    } else {
        INVARIANT(e.code && strcmp(e.code, "bad_request") == 0);
        wire_msg_error(out, false, 0, &e);
    }

    struct wire_exec_req x;
    if (wire_parse_exec(root, z, &x, &e) == 0)
        check_exec(&x);
    else
        wire_msg_error(out, has_id, id, &e);

    /* the fields of stdin, signal, logs, resize, chunk */
    uint64_t cmd = 0, sig = 15, rows = 0, from = 0;
    int64_t code = 0;
    bool eof = false, group = true;
    const char *bytes = NULL;
    size_t nbytes = 0;
    char *path = NULL;
    if (wire_opt_uint(root, "cmd", &cmd, &e) < 0 || wire_opt_uint(root, "signal", &sig, &e) < 0 ||
        wire_opt_uint(root, "rows", &rows, &e) < 0 || wire_opt_uint(root, "from", &from, &e) < 0 ||
        wire_opt_int(root, "code", &code, &e) < 0 || wire_opt_bool(root, "eof", &eof, &e) < 0 ||
        wire_opt_bool(root, "group", &group, &e) < 0 ||
        wire_opt_cstr(root, "path", z, &path, &e) < 0 ||
        wire_opt_bytes(root, "data", &bytes, &nbytes, &e) < 0) {
        INVARIANT(e.code && strcmp(e.code, "bad_request") == 0);
        wire_msg_error(out, has_id, id, &e);
    }
    if (path)
        INVARIANT(strlen(path) == wire_get(root, "path")->via.str.size);
    if (bytes)
        check_output_round_trip(z, id, cmd, bytes, nbytes);

    const msgpack_object *type = wire_get(root, "type");
    const char *s;
    size_t n;
    if (wire_obj_str(type, &s, &n))
        INVARIANT(n == type->via.str.size);

    struct wire_exit ex = { .cmd = cmd, .code = (int)(code & 0xff), .signal = (int)(sig & 0x7f),
                            .duration_ms = from, .timed_out = eof, .stdout_bytes = rows,
                            .stderr_bytes = nbytes };
    wire_msg_exit(out, id, &ex);
}

/* Every frame the encoder produced after the first skip bytes reads back. */
static void check_encoded(const struct buf *out, size_t skip, msgpack_zone *z)
{
    if (buf_size(out) <= skip)
        return;
    const uint8_t *p = buf_ptr(out) + skip;
    size_t left = buf_size(out) - skip;
    while (left > 0) {
        struct sa_err e;
        msgpack_object root;
        uint32_t len = 0;
        INVARIANT(wire_frame_peek(p, left, WIRE_MAX_FRAME_LIMIT, &len, &e) == 1);
        INVARIANT(left - WIRE_HDR_LEN >= len);
        INVARIANT(wire_decode(p + WIRE_HDR_LEN, len, z, &root, &e) == 0);
        INVARIANT(wire_get(&root, "type") && wire_get(&root, "type")->type == MSGPACK_OBJECT_STR);
        if (wire_obj_is(wire_get(&root, "type"), "error")) {
            const msgpack_object *code = wire_get(&root, "code");
            INVARIANT(code && code->type == MSGPACK_OBJECT_STR && code->via.str.size > 0);
        }
        msgpack_zone_clear(z);
        p += WIRE_HDR_LEN + len;
        left -= WIRE_HDR_LEN + len;
    }
}

/* One frame: 0 to go on to the next, -1 when the stream cannot go on. */
static int one_frame(const uint8_t *payload_in, uint32_t len, msgpack_zone *z, struct buf *out)
{
    struct sa_err e_check, e;
    msgpack_object root;
    uint8_t *payload = xmalloc(len);
    memcpy(payload, payload_in, len);

    /* wire_peek_type (the relay of file helpers' frames) reads only inside
     * the payload, and on a valid frame agrees with the decoded "type" */
    const char *pt = NULL;
    size_t ptn = 0;
    int peeked = wire_peek_type(payload, len, &pt, &ptn);
    INVARIANT(!peeked || (pt >= (const char *)payload && pt + ptn <= (const char *)payload + len));

    int checked = wire_check(payload, len, &e_check);
    size_t before = zone_footprint(z);
    int decoded = wire_decode(payload, len, z, &root, &e);
    INVARIANT(checked == decoded);
    if (decoded < 0) {
        INVARIANT(strcmp(e.code, "bad_frame") == 0 && strcmp(e_check.msg, e.msg) == 0);
        INVARIANT(zone_footprint(z) == before);    /* refused before allocating */
        wire_msg_error(out, false, 0, &e);
        free(payload);
        return -1;
    }
    INVARIANT(root.type == MSGPACK_OBJECT_MAP);
    INVARIANT(zone_footprint(z) <= DECODE_BOUND(len));
    if (peeked) {             /* "type" is the first key: the map's first entry */
        INVARIANT(root.via.map.size > 0 && wire_obj_is(&root.via.map.ptr[0].key, "type"));
        const char *dt;
        size_t dtn;
        INVARIANT(wire_obj_str(&root.via.map.ptr[0].val, &dt, &dtn) && dtn == ptn &&
                  memcmp(dt, pt, ptn) == 0);
    }
    exercise_request(&root, z, out);
    msgpack_zone_clear(z);
    free(payload);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static msgpack_zone zone;
    static bool zone_ready;
    if (!zone_ready) {
        if (!msgpack_zone_init(&zone, WIRE_ZONE_CHUNK))
            abort();
        zone_ready = true;
    }
    /* the reply queue starts partway consumed, as a connection's write queue
     * does, so that encoding goes through buf_reserve's compaction */
    struct buf out;
    buf_init(&out);
    size_t queued = size % 251;
    memset(buf_reserve(&out, queued + 1), 0x55, queued);
    buf_commit(&out, queued);
    buf_consume(&out, queued / 2);
    size_t skip = buf_size(&out);

    size_t off = 0;
    while (off < size) {
        struct sa_err e;
        uint32_t len = 0;
        int r = wire_frame_peek(data + off, size - off, WIRE_MAX_FRAME_DEFAULT, &len, &e);
        if (r == 0)
            break;                              /* header incomplete: wait */
        if (r < 0) {                            /* bad length: reply and close */
            INVARIANT(strcmp(e.code, "bad_frame") == 0 || strcmp(e.code, "frame_too_large") == 0);
            wire_msg_error(&out, false, 0, &e);
            break;
        }
        INVARIANT(len >= 1 && len <= WIRE_MAX_FRAME_DEFAULT);
        if (size - off - WIRE_HDR_LEN < len)
            break;                              /* payload incomplete: wait */
        if (one_frame(data + off + WIRE_HDR_LEN, len, &zone, &out) < 0)
            break;
        off += WIRE_HDR_LEN + len;
    }

    check_encoded(&out, skip, &zone);
    msgpack_zone_clear(&zone);
    buf_free(&out);
    return 0;
}
