/* ctl_codec.c — sandboxctl encode and decode: JSON lines <-> protocol frames,
 * offline (no agent). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "ctl.h"
#include "err.h"
#include "json.h"
#include "wire.h"

#define LINE_MAX_BYTES (64u << 20)      /* longest JSON line encode accepts */

/* --- encode --------------------------------------------------------------- */

/* Lines of a file descriptor, each bounded by LINE_MAX_BYTES. */
struct lines {
    int fd;
    struct buf b;
    size_t scanned;     /* bytes of b known to hold no '\n' */
    size_t lineno;
    bool eof;
};

/* The next line (without '\n') in *p, *n: 1, 0 at the end, -1 with e. The
 * line stays valid until the next call. */
static int lines_next(struct lines *l, const char **p, size_t *n, struct sa_err *e)
{
    for (;;) {
        uint8_t *start = buf_ptr(&l->b);
        size_t unscanned = buf_size(&l->b) - l->scanned;
        uint8_t *nl = unscanned ? memchr(start + l->scanned, '\n', unscanned) : NULL;
        size_t len = nl ? (size_t)(nl - start) : buf_size(&l->b);
        if (nl || (l->eof && len > 0)) {
            l->lineno++;
            *p = (const char *)start;
            *n = len;
            l->scanned = 0;
            return 1;   /* the caller consumes len + 1 via lines_done */
        }
        if (l->eof)
            return 0;
        l->scanned = len;
        if (len > LINE_MAX_BYTES)
            return err_set(e, EFBIG, "bad_json", "line %zu: longer than %u bytes",
                           l->lineno + 1, LINE_MAX_BYTES);
        ssize_t r = read(l->fd, buf_reserve(&l->b, 65536), 65536);
        if (r < 0 && errno != EINTR)
            return err_sys(e, errno, "read stdin");
        if (r == 0)
            l->eof = true;
        if (r > 0)
            buf_commit(&l->b, (size_t)r);
    }
}

static void lines_done(struct lines *l, size_t n)
{
    buf_consume(&l->b, n < buf_size(&l->b) ? n + 1 : n);
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* One JSON object -> one frame at the tail of out. */
static int encode_line(const char *p, size_t n, msgpack_zone *z, struct buf *out,
                       struct sa_err *e)
{
    msgpack_object o;
    msgpack_zone_clear(z);
    if (json_parse(p, n, z, &o, e) < 0)
        return -1;
    if (o.type != MSGPACK_OBJECT_MAP)
        return err_set(e, EINVAL, "bad_json", "a frame must be a JSON object");
    struct wire_enc w;
    wire_begin(&w, out);
    for (uint32_t i = 0; i < o.via.map.size; i++) {
        const msgpack_object_str *k = &o.via.map.ptr[i].key.via.str;   /* JSON: a string */
        wire_key_n(&w, k->ptr, k->size);
        msgpack_pack_object(&w.pk, o.via.map.ptr[i].val);
    }
    wire_end(&w);   /* a line of at most 64 MiB packs into far less than 4 GiB */
    return 0;
}

int verb_encode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("encode takes no arguments (it reads stdin)");
    struct lines l = { .fd = STDIN_FILENO };
    struct buf out;
    msgpack_zone z;
    struct sa_err e;
    const char *p = NULL;
    size_t n = 0;
    int r, rc = 0;
    buf_init(&l.b);
    buf_init(&out);
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    while ((r = lines_next(&l, &p, &n, &e)) > 0) {
        if (!blank(p, n) && encode_line(p, n, &z, &out, &e) < 0) {
            warnmsg("encode: line %zu: %s", l.lineno, e.msg);
            rc = EXIT_BAD_INPUT;
            break;
        }
        lines_done(&l, n);
        int w = write_full(STDOUT_FILENO, buf_ptr(&out), buf_size(&out));
        buf_reset(&out, 1u << 20);
        if (w < 0) {
            warnmsg("encode: write: %s", strerror(-w));
            rc = EXIT_BAD_INPUT;
            break;
        }
    }
    if (r < 0) {
        warnmsg("encode: %s", e.msg);
        rc = EXIT_BAD_INPUT;
    }
    msgpack_zone_destroy(&z);
    buf_free(&out);
    buf_free(&l.b);
    return rc;
}

/* --- decode --------------------------------------------------------------- */

/* Every complete frame at the head of in -> a JSON line in out. 0 or -1. */
static int decode_frames(struct buf *in, struct buf *out, msgpack_zone *z, size_t *nframe,
                         struct sa_err *e)
{
    uint32_t len;
    int r;
    while ((r = wire_frame_peek(buf_ptr(in), buf_size(in), WIRE_MAX_FRAME_LIMIT, &len, e)) > 0) {
        if (buf_size(in) - WIRE_HDR_LEN < len)
            return 0;
        msgpack_object o;
        msgpack_zone_clear(z);
        ++*nframe;
        if (wire_decode(buf_ptr(in) + WIRE_HDR_LEN, len, z, &o, e) < 0)
            return -1;
        json_write(out, &o);
        buf_append(out, "\n", 1);
        buf_consume(in, WIRE_HDR_LEN + (size_t)len);
    }
    if (r < 0)
        ++*nframe;
    return r;
}

static int decode_loop(struct buf *in, struct buf *out, msgpack_zone *z, struct sa_err *e)
{
    size_t nframe = 0;
    for (;;) {
        ssize_t r = read(STDIN_FILENO, buf_reserve(in, 65536), 65536);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return err_sys(e, errno, "read stdin");
        }
        if (r == 0)
            break;
        buf_commit(in, (size_t)r);
        int d = decode_frames(in, out, z, &nframe, e);
        int w = write_full(STDOUT_FILENO, buf_ptr(out), buf_size(out));
        buf_reset(out, 1u << 20);
        if (d < 0)
            return err_wrap(e, "frame %zu", nframe);
        if (w < 0)
            return err_sys(e, -w, "write");
    }
    if (buf_size(in) > 0)
        return err_set(e, EINVAL, "bad_frame", "frame %zu: truncated: input ends %zu bytes into it",
                       nframe + 1, buf_size(in));
    return 0;
}

int verb_decode(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("decode takes no arguments (it reads stdin)");
    struct buf in, out;
    msgpack_zone z;
    struct sa_err e;
    buf_init(&in);
    buf_init(&out);
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    int rc = 0;
    if (decode_loop(&in, &out, &z, &e) < 0) {
        warnmsg("decode: %s", e.msg);
        rc = EXIT_BAD_INPUT;
    }
    msgpack_zone_destroy(&z);
    buf_free(&in);
    buf_free(&out);
    return rc;
}
