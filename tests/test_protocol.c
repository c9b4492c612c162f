/* test_protocol.c — unit tests of the pure protocol library (protocol/).
 *
 * A plain C program: each test is a function named for the behaviour it
 * proves, CHECK records a failure without stopping the test, and the run ends
 * with "N passed, M failed" and a non-zero exit status on any failure.
 * `test_protocol WORD` runs only the tests whose name contains WORD.
 *
 * Payloads are written either with the library's own encoder or as hex
 * ("81 a1 61 c0"), so that hostile frames read the way PROTOCOL.md writes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "err.h"
#include "msg.h"
#include "wire.h"

/* --- the harness ------------------------------------------------------------ */

/* The error carries this wire code (prints code and message when it does not). */
#define CHECK_CODE(err, want)                                                         \
    do {                                                                              \
        const struct sa_err *e_ = (err);                                              \
        if (!e_->code || strcmp(e_->code, (want)) != 0) {                             \
            printf("    %s:%d: code %s, want %s (message: %s)\n", __FILE__, __LINE__,    \
                   e_->code ? e_->code : "(null)", (want), e_->msg);                  \
            check_fails++;                                                       \
        }                                                                             \
    } while (0)

#define CHECK_STREQ(got, want)                                                        \
    do {                                                                              \
        const char *g_ = (got), *w_ = (want);                                         \
        if (!g_ || strcmp(g_, w_) != 0) {                                             \
            printf("    %s:%d: \"%s\", want \"%s\"\n", __FILE__, __LINE__,               \
                   g_ ? g_ : "(null)", w_);                                           \
            check_fails++;                                                       \
        }                                                                             \
    } while (0)

/* --- building payloads ------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Append the bytes written as hex pairs in s ("81 a1 61"); blanks are ignored. */
static void put_hex(struct buf *b, const char *s)
{
    while (*s) {
        if (*s == ' ' || *s == '\n') {
            s++;
            continue;
        }
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (lo < 0) {
            fprintf(stderr, "bad hex in test: %s\n", s);
            abort();
        }
        uint8_t byte = (uint8_t)(hi << 4 | lo);
        buf_append(b, &byte, 1);
        s += 2;
    }
}

static void put_be32(struct buf *b, uint32_t v)
{
    uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    buf_append(b, be, sizeof be);
}

static void put_fill(struct buf *b, uint8_t byte, size_t n)
{
    memset(buf_reserve(b, n), byte, n);
    buf_commit(b, n);
}

/* --- the fixture: a buffer to build in, a zone to decode into ----------------- */

struct fx {
    struct buf b;
    msgpack_zone z;
    msgpack_object root;
    struct sa_err e;
};

static void fx_init(struct fx *f)
{
    buf_init(&f->b);
    if (!msgpack_zone_init(&f->z, WIRE_ZONE_CHUNK))
        abort();
    memset(&f->root, 0, sizeof f->root);
    err_clear(&f->e);
}

static void fx_free(struct fx *f)
{
    buf_free(&f->b);
    msgpack_zone_destroy(&f->z);
}

#define FIXTURE(f)                                                                    \
    __attribute__((cleanup(fx_free))) struct fx f;                                    \
    fx_init(&f)

/* f->b holds exactly one whole frame: check its header, decode its payload. */
static int fx_decode_frame(struct fx *f)
{
    uint32_t len = 0;
    CHECK(wire_frame_peek(buf_ptr(&f->b), buf_size(&f->b), WIRE_MAX_FRAME_LIMIT, &len, &f->e) == 1);
    CHECK(len == buf_size(&f->b) - WIRE_HDR_LEN);
    return wire_decode(buf_ptr(&f->b) + WIRE_HDR_LEN, len, &f->z, &f->root, &f->e);
}

/* f->b holds a bare payload (no header). */
static int fx_decode_payload(struct fx *f)
{
    return wire_decode(buf_ptr(&f->b), buf_size(&f->b), &f->z, &f->root, &f->e);
}

static int fx_decode_hex(struct fx *f, const char *hex)
{
    buf_reset(&f->b, SIZE_MAX);
    put_hex(&f->b, hex);
    return fx_decode_payload(f);
}

/* wire_check on a hex payload copied to an allocation of exactly its size,
 * so that any read past the end is a heap overflow under ASan. */
static int check_hex(const char *hex, struct sa_err *e)
{
    struct buf b;
    buf_init(&b);
    put_hex(&b, hex);
    size_t n = buf_size(&b);
    uint8_t *exact = xmalloc(n);
    memcpy(exact, buf_ptr(&b), n);
    int r = wire_check(exact, n, e);
    free(exact);
    buf_free(&b);
    return r;
}

/* The bytes of f->b equal the hex. */
static bool fx_bytes_are(const struct fx *f, const char *hex)
{
    struct buf want;
    buf_init(&want);
    put_hex(&want, hex);
    bool same = buf_size(&want) == buf_size(&f->b) &&
                memcmp(buf_ptr(&want), buf_ptr(&f->b), buf_size(&want)) == 0;
    if (!same) {
        printf("    got  ");
        for (size_t i = 0; i < buf_size(&f->b); i++)
            printf("%02x ", buf_ptr(&f->b)[i]);
        printf("\n");
    }
    buf_free(&want);
    return same;
}

static bool str_field_is(const msgpack_object *map, const char *key, const char *want)
{
    return wire_obj_is(wire_get(map, key), want);
}

static bool uint_field_is(const msgpack_object *map, const char *key, uint64_t want)
{
    uint64_t v;
    return wire_obj_uint(wire_get(map, key), &v) && v == want;
}

static bool int_field_is(const msgpack_object *map, const char *key, int64_t want)
{
    int64_t v;
    return wire_obj_int(wire_get(map, key), &v) && v == want;
}

static bool bool_field_is(const msgpack_object *map, const char *key, bool want)
{
    bool v;
    return wire_obj_bool(wire_get(map, key), &v) && v == want;
}

/* Bytes owned by a msgpack_zone. msgpack-c keeps its chunks in a singly linked
 * list whose first member is the link (zone.c: struct msgpack_zone_chunk
 * { struct msgpack_zone_chunk *next; }), and the list head is public. */
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

/* ============================================================================
 * wire_frame_peek
 * ========================================================================== */

static void frame_peek_waits_for_a_whole_header(void)
{
    const uint8_t hdr[4] = { 0, 0, 0, 9 };
    struct sa_err e = { 0 };
    for (size_t n = 0; n < WIRE_HDR_LEN; n++) {
        uint32_t len = 12345;
        CHECK(wire_frame_peek(hdr, n, WIRE_MAX_FRAME_DEFAULT, &len, &e) == 0);
        CHECK(len == 12345);
    }
}

static void frame_peek_reads_a_big_endian_length(void)
{
    const uint8_t hdr[4] = { 0x00, 0x01, 0x02, 0x03 };
    struct sa_err e = { 0 };
    uint32_t len = 0;
    CHECK(wire_frame_peek(hdr, sizeof hdr, WIRE_MAX_FRAME_LIMIT, &len, &e) == 1);
    CHECK(len == 0x010203);
}

/* wire_peek_type: the type of what our own encoders wrote, found without a
 * decode; anything else (type not first, not a map, cut short) is 0. */
static void peek_type_finds_the_first_key(void)
{
    struct buf b;
    buf_init(&b);
    struct wire_enc w;
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "end");
    wire_kv_uint(&w, "id", 7);
    wire_kv_uint(&w, "bytes", 70000);
    wire_end(&w);
    const uint8_t *p = buf_ptr(&b) + WIRE_HDR_LEN;
    size_t n = buf_size(&b) - WIRE_HDR_LEN;
    const char *t = NULL;
    size_t tn = 0;
    CHECK(wire_peek_type(p, n, &t, &tn) == 1);
    CHECK(tn == 3 && memcmp(t, "end", 3) == 0);
    for (size_t cut = 0; cut < 10; cut++)          /* "type" and "end" end at byte 10 */
        CHECK(wire_peek_type(p, cut, &t, &tn) == 0);
    static const uint8_t id_first[] = { 0x82, 0xa2, 'i', 'd', 0x01, 0xa4, 't', 'y', 'p', 'e',
                                        0xa2, 'o', 'k' };
    CHECK(wire_peek_type(id_first, sizeof id_first, &t, &tn) == 0);
    static const uint8_t map16[] = { 0xde, 0x00, 0x01, 0xd9, 0x04, 't', 'y', 'p', 'e',
                                     0xd9, 0x05, 'e', 'r', 'r', 'o', 'r' };
    CHECK(wire_peek_type(map16, sizeof map16, &t, &tn) == 1);
    CHECK(tn == 5 && memcmp(t, "error", 5) == 0);
    static const uint8_t empty_map[] = { 0x80 }, array[] = { 0x91, 0xa4, 't', 'y', 'p', 'e' };
    CHECK(wire_peek_type(empty_map, sizeof empty_map, &t, &tn) == 0);
    CHECK(wire_peek_type(array, sizeof array, &t, &tn) == 0);
    static const uint8_t int_type[] = { 0x81, 0xa4, 't', 'y', 'p', 'e', 0x05 };
    CHECK(wire_peek_type(int_type, sizeof int_type, &t, &tn) == 0);
    buf_free(&b);
}

static void frame_peek_refuses_length_zero(void)
{
    const uint8_t hdr[4] = { 0, 0, 0, 0 };
    struct sa_err e = { 0 };
    uint32_t len = 7;
    CHECK(wire_frame_peek(hdr, sizeof hdr, WIRE_MAX_FRAME_DEFAULT, &len, &e) == -1);
    CHECK_CODE(&e, "bad_frame");
    CHECK(len == 7);
}

static void frame_peek_refuses_oversize_length_from_the_header_alone(void)
{
    struct sa_err e = { 0 };
    uint32_t len = 7;
    /* max_frame + 1, with no payload bytes present yet */
    uint32_t over = WIRE_MAX_FRAME_DEFAULT + 1;
    const uint8_t hdr[4] = { (uint8_t)(over >> 24), (uint8_t)(over >> 16), (uint8_t)(over >> 8),
                             (uint8_t)over };
    CHECK(wire_frame_peek(hdr, sizeof hdr, WIRE_MAX_FRAME_DEFAULT, &len, &e) == -1);
    CHECK_CODE(&e, "frame_too_large");
    CHECK(len == 7);

    const uint8_t huge[4] = { 0xff, 0xff, 0xff, 0xff };
    CHECK(wire_frame_peek(huge, sizeof huge, WIRE_MAX_FRAME_LIMIT, &len, &e) == -1);
    CHECK_CODE(&e, "frame_too_large");
}

static void frame_peek_accepts_length_exactly_max_frame(void)
{
    struct sa_err e = { 0 };
    uint32_t len = 0;
    const uint8_t hdr[4] = { 0x00, 0x10, 0x00, 0x00 };     /* 1 MiB */
    CHECK(wire_frame_peek(hdr, sizeof hdr, WIRE_MAX_FRAME_DEFAULT, &len, &e) == 1);
    CHECK(len == WIRE_MAX_FRAME_DEFAULT);

    const uint8_t min[4] = { 0x00, 0x00, 0x10, 0x00 };     /* 4 KiB, the smallest max */
    CHECK(wire_frame_peek(min, sizeof min, WIRE_MAX_FRAME_MIN, &len, &e) == 1);
    CHECK(len == WIRE_MAX_FRAME_MIN);
}

/* ============================================================================
 * wire_check / wire_decode: valid payloads
 * ========================================================================== */

static void decode_accepts_every_msgpack_type_the_protocol_allows(void)
{
    FIXTURE(f);
    /* {"s":"hi", "u8":200, "u16":300, "u32":70000, "u64":2^40, "neg":-1,
     *  "i8":-100, "i16":-1000, "i32":-100000, "i64":-2^40, "t":true, "f":false,
     *  "nil":nil, "f32":1.5, "f64":2.5, "bin8":bin "ab", "bin16":bin "c",
     *  "bin32":bin "", "str8":"x", "str16":"yz", "str32":"", "a16":[1],
     *  "a32":[], "m16":{}, "m32":{"k":"v"}, "z":"last key"} */
    CHECK(fx_decode_hex(&f,
        "de 00 1a"
        "a1 73 a2 68 69"
        "a2 75 38 cc c8"
        "a3 75 31 36 cd 01 2c"
        "a3 75 33 32 ce 00 01 11 70"
        "a3 75 36 34 cf 00 00 01 00 00 00 00 00"
        "a3 6e 65 67 ff"
        "a2 69 38 d0 9c"
        "a3 69 31 36 d1 fc 18"
        "a3 69 33 32 d2 ff fe 79 60"
        "a3 69 36 34 d3 ff ff ff 00 00 00 00 00"
        "a1 74 c3"
        "a1 66 c2"
        "a3 6e 69 6c c0"
        "a3 66 33 32 ca 3f c0 00 00"
        "a3 66 36 34 cb 40 04 00 00 00 00 00 00"
        "a4 62 69 6e 38 c4 02 61 62"
        "a5 62 69 6e 31 36 c5 00 01 63"
        "a5 62 69 6e 33 32 c6 00 00 00 00"
        "a4 73 74 72 38 d9 01 78"
        "a5 73 74 72 31 36 da 00 02 79 7a"
        "a5 73 74 72 33 32 db 00 00 00 00"
        "a3 61 31 36 dc 00 01 01"
        "a3 61 33 32 dd 00 00 00 00"
        "a3 6d 31 36 de 00 00"
        "a3 6d 33 32 df 00 00 00 01 a1 6b a1 76"
        "a1 7a a8 6c 61 73 74 20 6b 65 79") == 0);
    const msgpack_object *m = &f.root;
    CHECK(m->type == MSGPACK_OBJECT_MAP && m->via.map.size == 26);
    CHECK(str_field_is(m, "s", "hi"));
    CHECK(uint_field_is(m, "u8", 200));
    CHECK(uint_field_is(m, "u16", 300));
    CHECK(uint_field_is(m, "u32", 70000));
    CHECK(uint_field_is(m, "u64", 1ull << 40));
    CHECK(int_field_is(m, "u64", 1ll << 40));
    CHECK(int_field_is(m, "neg", -1));
    CHECK(int_field_is(m, "i8", -100));
    CHECK(int_field_is(m, "i16", -1000));
    CHECK(int_field_is(m, "i32", -100000));
    CHECK(int_field_is(m, "i64", -(1ll << 40)));
    CHECK(bool_field_is(m, "t", true));
    CHECK(bool_field_is(m, "f", false));
    CHECK(wire_get(m, "nil") == NULL);
    CHECK(wire_get(m, "f32") && wire_get(m, "f32")->via.f64 == 1.5);
    CHECK(wire_get(m, "f64") && wire_get(m, "f64")->via.f64 == 2.5);
    const char *p;
    size_t n;
    CHECK(wire_obj_bytes(wire_get(m, "bin8"), &p, &n) && n == 2 && memcmp(p, "ab", 2) == 0);
    CHECK(wire_obj_bytes(wire_get(m, "bin16"), &p, &n) && n == 1 && p[0] == 'c');
    CHECK(wire_obj_bytes(wire_get(m, "bin32"), &p, &n) && n == 0);
    CHECK(str_field_is(m, "str8", "x"));
    CHECK(str_field_is(m, "str16", "yz"));
    CHECK(str_field_is(m, "str32", ""));
    const msgpack_object *a16 = wire_get(m, "a16");
    CHECK(a16 && a16->type == MSGPACK_OBJECT_ARRAY && a16->via.array.size == 1);
    const msgpack_object *m32 = wire_get(m, "m32");
    CHECK(m32 && str_field_is(m32, "k", "v"));
    CHECK(wire_get(m, "m16") && wire_get(m, "m16")->via.map.size == 0);
}

static void decode_accepts_map16_map32_and_empty_roots(void)
{
    FIXTURE(f);
    CHECK(fx_decode_hex(&f, "80") == 0);
    CHECK(f.root.type == MSGPACK_OBJECT_MAP && f.root.via.map.size == 0);
    CHECK(fx_decode_hex(&f, "de 00 01 a1 61 01") == 0);
    CHECK(uint_field_is(&f.root, "a", 1));
    CHECK(fx_decode_hex(&f, "df 00 00 00 01 a1 61 02") == 0);
    CHECK(uint_field_is(&f.root, "a", 2));
}

static void decoded_strings_point_into_the_payload(void)
{
    FIXTURE(f);
    CHECK(fx_decode_hex(&f, "81 a1 6b a3 61 62 63") == 0);
    const msgpack_object *v = wire_get(&f.root, "k");
    CHECK(v && v->via.str.ptr == (const char *)buf_ptr(&f.b) + 4);
}

/* ============================================================================
 * wire_check / wire_decode: hostile payloads
 * ========================================================================== */

/* A request using most of what exec can carry: truncation tests cut it. */
static void put_rich_exec_frame(struct buf *b)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "exec");
    wire_kv_uint(&w, "id", 70000);
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 3);
    wire_str(&w, "sh");
    wire_str(&w, "-c");
    wire_str(&w, "echo \"$A\" && exit 3");
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_str(&w, "A", "1");
    wire_kv_str(&w, "LONG", "a value longer than thirty-one bytes, so str8");
    wire_map_end(&w, 2);
    wire_kv_str(&w, "cwd", "/tmp");
    wire_kv_nil(&w, "user");
    wire_kv_bool(&w, "kill_on_disconnect", true);
    wire_kv_uint(&w, "timeout_ms", 1ull << 33);
    wire_kv_int(&w, "nice", -5);
    wire_key(&w, "pty");
    wire_map_begin(&w);
    wire_kv_uint(&w, "rows", 300);
    wire_kv_uint(&w, "cols", 80);
    wire_kv_str(&w, "term", "xterm");
    wire_map_end(&w, 2);
    wire_kv_bin(&w, "blob", "\x00\x01\x02", 3);
    wire_end(&w);
}

static void check_refuses_every_truncation_of_a_valid_frame(void)
{
    FIXTURE(f);
    put_rich_exec_frame(&f.b);
    CHECK(fx_decode_frame(&f) == 0);
    const uint8_t *payload = buf_ptr(&f.b) + WIRE_HDR_LEN;
    size_t n = buf_size(&f.b) - WIRE_HDR_LEN;
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *exact = xmalloc(cut);
        memcpy(exact, payload, cut);
        struct sa_err e = { 0 };
        err_clear(&e);
        if (wire_check(exact, cut, &e) == 0 || strcmp(e.code, "bad_frame") != 0)
            accepted++;
        msgpack_object root;
        if (wire_decode(exact, cut, &f.z, &root, &e) == 0)
            accepted++;
        free(exact);
    }
    CHECK(accepted == 0);
}

static void frame_peek_reports_the_full_length_of_a_cut_frame(void)
{
    /* the same frame seen through the stream reader: a cut header waits,
     * a cut payload is reported with its full length, so the reader waits too */
    FIXTURE(f);
    put_rich_exec_frame(&f.b);
    size_t total = buf_size(&f.b);
    for (size_t cut = 0; cut < total; cut++) {
        uint32_t len = 0;
        int r = wire_frame_peek(buf_ptr(&f.b), cut, WIRE_MAX_FRAME_DEFAULT, &len, &f.e);
        CHECK(r == (cut < WIRE_HDR_LEN ? 0 : 1));
        if (r == 1)
            CHECK(len == total - WIRE_HDR_LEN && cut < WIRE_HDR_LEN + len);
    }
}

static void check_refuses_sizes_claimed_beyond_the_payload(void)
{
    struct sa_err e = { 0 };
    const char *hostile[] = {
        "df ff ff ff ff",                   /* root map32 of 2^32-1 entries */
        "de ff ff",                         /* root map16 of 65535 entries */
        "8f a1 61 c0",                      /* fixmap of 15 entries, one present */
        "81 a1 61 dd ff ff ff ff",          /* array32 of 2^32-1 elements */
        "81 a1 61 dc ff ff c0",             /* array16 of 65535 elements */
        "81 a1 61 93 01 02",                /* fixarray of 3, two present */
        "81 a1 61 db ff ff ff ff",          /* str32 of 4 GiB */
        "81 db ff ff ff ff",                /* ... as a key */
        "81 a1 61 da 00 05 61 62 63 64",    /* str16 one byte short */
        "81 a1 61 d9 03 61 62",             /* str8 one byte short */
        "81 a1 61 a5 61 62 63 64",          /* fixstr one byte short */
        "81 a1 61 c6 7f ff ff ff",          /* bin32 of 2 GiB */
        "81 a1 61 c6 ff ff ff ff",          /* bin32 of 4 GiB */
        "81 a1 61 c5 01 00 00",             /* bin16 short */
        "81 a1 61 c4 01",                   /* bin8 of 1, absent */
        "81 a1 61 df 7f ff ff ff",          /* nested map32 */
        "81 a1 61 cf 00 00 00",             /* uint64 cut */
        "81 a1 61 cb 00",                   /* float64 cut */
        "81 a1 61 dd 00 00",                /* array32 header cut */
    };
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        err_clear(&e);
        if (check_hex(hostile[i], &e) != -1) {
            printf("    accepted: %s\n", hostile[i]);
            check_fails++;
        } else {
            CHECK_CODE(&e, "bad_frame");
        }
    }
    /* the same headers with exactly enough bytes behind them are fine */
    CHECK(check_hex("81 a1 61 db 00 00 00 02 78 79", &e) == 0);
    CHECK(check_hex("81 a1 61 c6 00 00 00 01 00", &e) == 0);
    CHECK(check_hex("81 a1 61 dd 00 00 00 02 c0 c0", &e) == 0);
    CHECK(check_hex("df 00 00 00 01 a1 61 c0", &e) == 0);
}

static void hostile_example_of_section_6_is_refused_without_allocating(void)
{
    FIXTURE(f);
    put_hex(&f.b, "00 00 00 05 df ff ff ff ff");
    size_t before = zone_footprint(&f.z);
    uint32_t len = 0;
    CHECK(wire_frame_peek(buf_ptr(&f.b), buf_size(&f.b), WIRE_MAX_FRAME_DEFAULT, &len, &f.e) == 1);
    CHECK(len == 5);
    CHECK(wire_decode(buf_ptr(&f.b) + 4, len, &f.z, &f.root, &f.e) == -1);
    CHECK_CODE(&f.e, "bad_frame");
    CHECK(zone_footprint(&f.z) == before);
}

/* A root map {"a": [[...]]} nested `levels` deep, the root included; the
 * innermost array holds one nil, or nothing when empty_innermost. */
static void put_nested(struct buf *b, int levels, bool empty_innermost)
{
    put_hex(b, "81 a1 61");
    for (int level = 2; level < levels; level++)
        put_hex(b, "91");
    put_hex(b, empty_innermost ? "90" : "91 c0");
}

static void check_accepts_nesting_exactly_max_depth(void)
{
    FIXTURE(f);
    put_nested(&f.b, WIRE_MAX_DEPTH, false);
    CHECK(fx_decode_payload(&f) == 0);
    buf_reset(&f.b, SIZE_MAX);
    put_nested(&f.b, WIRE_MAX_DEPTH, true);
    CHECK(fx_decode_payload(&f) == 0);
    /* and msgpack-c agrees: walk down to the innermost level */
    const msgpack_object *o = wire_get(&f.root, "a");
    int levels = 1;
    while (o && o->type == MSGPACK_OBJECT_ARRAY) {
        levels++;
        o = o->via.array.size ? &o->via.array.ptr[0] : NULL;
    }
    CHECK(levels == WIRE_MAX_DEPTH);
}

static void check_refuses_nesting_beyond_max_depth(void)
{
    FIXTURE(f);
    put_nested(&f.b, WIRE_MAX_DEPTH + 1, false);
    CHECK(fx_decode_payload(&f) == -1);
    CHECK_CODE(&f.e, "bad_frame");
    /* an empty container is a level of nesting too */
    buf_reset(&f.b, SIZE_MAX);
    put_nested(&f.b, WIRE_MAX_DEPTH + 1, true);
    CHECK(fx_decode_payload(&f) == -1);
    CHECK_CODE(&f.e, "bad_frame");
    buf_reset(&f.b, SIZE_MAX);
    put_nested(&f.b, 100, false);
    CHECK(fx_decode_payload(&f) == -1);
}

/* {"a": [nils × count]}: 3 + count objects. */
static void put_array_of_nils(struct buf *b, uint32_t count)
{
    put_hex(b, "81 a1 61 dd");
    put_be32(b, count);
    put_fill(b, 0xc0, count);
}

static void check_accepts_exactly_max_objects(void)
{
    FIXTURE(f);
    put_array_of_nils(&f.b, WIRE_MAX_OBJECTS - 3);
    CHECK(fx_decode_payload(&f) == 0);
    const msgpack_object *a = wire_get(&f.root, "a");
    CHECK(a && a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == WIRE_MAX_OBJECTS - 3);
}

static void check_refuses_one_object_more_than_max(void)
{
    FIXTURE(f);
    put_array_of_nils(&f.b, WIRE_MAX_OBJECTS - 2);
    size_t before = zone_footprint(&f.z);
    CHECK(fx_decode_payload(&f) == -1);
    CHECK_CODE(&f.e, "bad_frame");
    CHECK(zone_footprint(&f.z) == before);
    /* objects count at every level, keys included */
    buf_reset(&f.b, SIZE_MAX);
    put_hex(&f.b, "df");
    put_be32(&f.b, WIRE_MAX_OBJECTS / 2);
    for (uint32_t i = 0; i < WIRE_MAX_OBJECTS / 2; i++)
        put_hex(&f.b, "01 c0");   /* 1 + 2 * 32768 = 65537 objects */
    CHECK(fx_decode_payload(&f) == -1);
    CHECK_CODE(&f.e, "bad_frame");
}

static void check_refuses_ext_fixext_and_0xc1(void)
{
    struct sa_err e = { 0 };
    const char *refused[] = {
        "81 a1 61 c1",
        "81 a1 61 c7 01 05 00",             /* ext8 */
        "81 a1 61 c8 00 01 05 00",          /* ext16 */
        "81 a1 61 c9 00 00 00 01 05 00",    /* ext32 */
        "81 a1 61 d4 05 00",                /* fixext1 */
        "81 a1 61 d5 05 00 00",             /* fixext2 */
        "81 a1 61 d6 ff 00 00 00 00",       /* fixext4: a timestamp */
        "81 a1 61 d7 ff 00 00 00 00 00 00 00 00",
        "81 a1 61 d8 05 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
        "81 c1 c0",                         /* as a key */
        "81 a1 61 91 c7 00 05",             /* inside an array */
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        err_clear(&e);
        if (check_hex(refused[i], &e) != -1) {
            printf("    accepted: %s\n", refused[i]);
            check_fails++;
        } else {
            CHECK_CODE(&e, "bad_frame");
        }
    }
}

static void check_refuses_trailing_bytes(void)
{
    struct sa_err e = { 0 };
    CHECK(check_hex("80 c0", &e) == -1);
    CHECK_CODE(&e, "bad_frame");
    CHECK(check_hex("81 a1 61 01 01", &e) == -1);
    CHECK(check_hex("81 a1 61 01 81 a1 61 01", &e) == -1);   /* two maps in one frame */
    CHECK(check_hex("81 a1 61 01", &e) == 0);
}

static void check_refuses_map_keys_that_are_not_strings(void)
{
    struct sa_err e = { 0 };
    CHECK(check_hex("81 01 01", &e) == -1);                       /* {1:1} */
    CHECK_CODE(&e, "bad_frame");
    CHECK(check_hex("82 a1 61 01 c4 01 62 01", &e) == -1);        /* {"a":1, bin "b":1} */
    CHECK(check_hex("81 a1 61 81 c0 01", &e) == -1);              /* {"a":{nil:1}} nested */
    CHECK(check_hex("81 a1 61 91 81 80 01", &e) == -1);           /* {"a":[{{}:1}]} */
    CHECK(check_hex("81 a1 61 92 01 02", &e) == 0);               /* arrays hold anything */
    CHECK(check_hex("82 a1 61 81 a1 62 01 a1 63 02", &e) == 0);   /* {"a":{"b":1},"c":2} */
}

static void check_refuses_a_root_that_is_not_a_map(void)
{
    struct sa_err e = { 0 };
    const char *roots[] = { "90", "91 80", "dc 00 00", "dd 00 00 00 00", "a1 61", "01", "c0",
                            "c3", "ff", "cb 00 00 00 00 00 00 00 00", "c4 00", "c1" };
    for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
        err_clear(&e);
        CHECK(check_hex(roots[i], &e) == -1);
        CHECK_CODE(&e, "bad_frame");
    }
    err_clear(&e);
    CHECK(wire_check((const uint8_t *)"", 0, &e) == -1);
    CHECK_CODE(&e, "bad_frame");
}

/* ============================================================================
 * reading fields
 * ========================================================================== */

static void get_ignores_non_string_keys_and_treats_nil_as_absent(void)
{
    FIXTURE(f);
    /* {1:"x", "nil":nil, bin "k":1, "k":2}: wire_check refuses non-string
     * keys, so build the object with msgpack-c alone — wire_get must still
     * be safe on maps that did not come through wire_decode */
    put_hex(&f.b, "84 01 a1 78 a3 6e 69 6c c0 c4 01 6b 01 a1 6b 02");
    size_t off = 0;
    CHECK(msgpack_unpack((const char *)buf_ptr(&f.b), buf_size(&f.b), &off, &f.z, &f.root) ==
          MSGPACK_UNPACK_SUCCESS);
    CHECK(wire_get(&f.root, "nil") == NULL);
    CHECK(uint_field_is(&f.root, "k", 2));              /* the str key, not the bin one */
    CHECK(wire_get(&f.root, "x") == NULL);
    CHECK(wire_get(&f.root, "") == NULL);
    CHECK(wire_get(NULL, "k") == NULL);
    CHECK(wire_get(wire_get(&f.root, "k"), "k") == NULL);   /* not a map */
}

static void obj_int_accepts_the_int64_range_only(void)
{
    FIXTURE(f);
    /* {"max": 2^63-1, "over": 2^63, "min": -2^63} */
    CHECK(fx_decode_hex(&f,
        "83 a3 6d 61 78 cf 7f ff ff ff ff ff ff ff"
        "a4 6f 76 65 72 cf 80 00 00 00 00 00 00 00"
        "a3 6d 69 6e d3 80 00 00 00 00 00 00 00") == 0);
    int64_t v;
    uint64_t u;
    CHECK(wire_obj_int(wire_get(&f.root, "max"), &v) && v == INT64_MAX);
    CHECK(!wire_obj_int(wire_get(&f.root, "over"), &v));
    CHECK(wire_obj_uint(wire_get(&f.root, "over"), &u) && u == 1ull << 63);
    CHECK(wire_obj_int(wire_get(&f.root, "min"), &v) && v == INT64_MIN);
    CHECK(!wire_obj_uint(wire_get(&f.root, "min"), &u));
}

static void opt_fields_leave_absent_and_nil_values_untouched(void)
{
    FIXTURE(f);
    CHECK(fx_decode_hex(&f, "81 a1 6e c0") == 0);      /* {"n": nil} */
    uint64_t u = 42;
    int64_t i = -42;
    bool b = true;
    char *s = (char *)"kept";
    const char *p = "kept";
    size_t n = 4;
    const char *keys[] = { "n", "absent" };
    for (int k = 0; k < 2; k++) {
        CHECK(wire_opt_uint(&f.root, keys[k], &u, &f.e) == 0 && u == 42);
        CHECK(wire_opt_int(&f.root, keys[k], &i, &f.e) == 0 && i == -42);
        CHECK(wire_opt_bool(&f.root, keys[k], &b, &f.e) == 0 && b);
        CHECK(wire_opt_cstr(&f.root, keys[k], &f.z, &s, &f.e) == 0 && strcmp(s, "kept") == 0);
        CHECK(wire_opt_bytes(&f.root, keys[k], &p, &n, &f.e) == 0 && n == 4);
    }
}

static void opt_fields_refuse_wrong_types_with_bad_request(void)
{
    FIXTURE(f);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    wire_kv_str(&w, "str", "text");
    wire_kv_int(&w, "neg", -1);
    wire_kv_uint(&w, "huge", UINT64_MAX);
    wire_kv_uint(&w, "one", 1);
    wire_kv_strn(&w, "nul", "a\0b", 3);
    wire_kv_bin(&w, "bin", "xy", 2);
    wire_kv_bool(&w, "t", true);
    wire_key(&w, "arr");
    msgpack_pack_array(&w.pk, 0);
    wire_end(&w);
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *m = &f.root;

    uint64_t u;
    int64_t i;
    bool b;
    char *s;
    const char *p;
    size_t n;
#define REFUSED(call)                                                                 \
    do {                                                                              \
        err_clear(&f.e);                                                              \
        CHECK((call) == -1);                                                          \
        CHECK_CODE(&f.e, "bad_request");                                              \
    } while (0)
    REFUSED(wire_opt_uint(m, "str", &u, &f.e));
    CHECK(strstr(f.e.msg, "'str'") != NULL);             /* the message names the key */
    REFUSED(wire_opt_uint(m, "neg", &u, &f.e));
    REFUSED(wire_opt_uint(m, "t", &u, &f.e));
    REFUSED(wire_opt_int(m, "huge", &i, &f.e));
    REFUSED(wire_opt_int(m, "str", &i, &f.e));
    REFUSED(wire_opt_bool(m, "one", &b, &f.e));
    REFUSED(wire_opt_bool(m, "str", &b, &f.e));
    REFUSED(wire_opt_cstr(m, "one", &f.z, &s, &f.e));
    REFUSED(wire_opt_cstr(m, "nul", &f.z, &s, &f.e));    /* embedded NUL */
    REFUSED(wire_opt_cstr(m, "bin", &f.z, &s, &f.e));    /* bin is not str */
    REFUSED(wire_opt_bytes(m, "one", &p, &n, &f.e));
    REFUSED(wire_opt_bytes(m, "arr", &p, &n, &f.e));
#undef REFUSED

    /* and the right types are read */
    CHECK(wire_opt_uint(m, "huge", &u, &f.e) == 0 && u == UINT64_MAX);
    CHECK(wire_opt_int(m, "neg", &i, &f.e) == 0 && i == -1);
    CHECK(wire_opt_int(m, "one", &i, &f.e) == 0 && i == 1);
    CHECK(wire_opt_bool(m, "t", &b, &f.e) == 0 && b);
    CHECK(wire_opt_cstr(m, "str", &f.z, &s, &f.e) == 0 && strcmp(s, "text") == 0);
    CHECK(wire_opt_bytes(m, "bin", &p, &n, &f.e) == 0 && n == 2 && memcmp(p, "xy", 2) == 0);
    CHECK(wire_opt_bytes(m, "nul", &p, &n, &f.e) == 0 && n == 3);   /* bytes may hold NUL */
}

/* ============================================================================
 * wire_parse_req
 * ========================================================================== */

static void parse_req_reads_type_and_id(void)
{
    FIXTURE(f);
    CHECK(fx_decode_hex(&f, "82 a4 74 79 70 65 a4 70 69 6e 67 a2 69 64 cd 01 00") == 0);
    struct wire_req r;
    CHECK(wire_parse_req(&f.root, &r, &f.e) == 0);
    CHECK(r.has_id && r.id == 256);
    CHECK(r.type_len == 4 && memcmp(r.type, "ping", 4) == 0);
    CHECK(wire_req_is(&r, "ping"));
    CHECK(!wire_req_is(&r, "pin"));
    CHECK(!wire_req_is(&r, "pings"));
}

static void parse_req_refuses_a_missing_or_non_string_type(void)
{
    FIXTURE(f);
    struct wire_req r;
    const char *frames[] = {
        "81 a2 69 64 01",                       /* {"id":1} */
        "82 a4 74 79 70 65 c0 a2 69 64 01",     /* {"type":nil,"id":1} */
        "82 a4 74 79 70 65 01 a2 69 64 01",     /* {"type":1,"id":1} */
        "82 a4 74 79 70 65 c4 01 61 a2 69 64 01",   /* {"type":bin,"id":1} */
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        CHECK(fx_decode_hex(&f, frames[i]) == 0);
        err_clear(&f.e);
        CHECK(wire_parse_req(&f.root, &r, &f.e) == -1);
        CHECK_CODE(&f.e, "bad_request");
        CHECK(strstr(f.e.msg, "type") != NULL);
    }
}

static void parse_req_refuses_a_missing_id(void)
{
    FIXTURE(f);
    struct wire_req r;
    CHECK(fx_decode_hex(&f, "81 a4 74 79 70 65 a4 70 69 6e 67") == 0);
    CHECK(wire_parse_req(&f.root, &r, &f.e) == -1);
    CHECK_CODE(&f.e, "bad_request");
    CHECK(strstr(f.e.msg, "'id'") != NULL);
    CHECK(fx_decode_hex(&f, "82 a4 74 79 70 65 a4 70 69 6e 67 a2 69 64 c0") == 0);   /* nil */
    CHECK(wire_parse_req(&f.root, &r, &f.e) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_req_refuses_an_id_that_is_not_an_unsigned_integer(void)
{
    FIXTURE(f);
    struct wire_req r;
    const char *ids[] = { "ff", "d3 ff ff ff ff ff ff ff ff", "a1 31", "ca 3f 80 00 00", "c3",
                          "90" };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char hex[128];
        snprintf(hex, sizeof hex, "82 a4 74 79 70 65 a4 70 69 6e 67 a2 69 64 %s", ids[i]);
        CHECK(fx_decode_hex(&f, hex) == 0);
        err_clear(&f.e);
        CHECK(wire_parse_req(&f.root, &r, &f.e) == -1);
        CHECK_CODE(&f.e, "bad_request");
        CHECK(strstr(f.e.msg, "'id'") != NULL);
    }
    /* every unsigned encoding is fine, up to 2^64-1 */
    CHECK(fx_decode_hex(&f, "82 a4 74 79 70 65 a4 70 69 6e 67"
                            "a2 69 64 cf ff ff ff ff ff ff ff ff") == 0);
    CHECK(wire_parse_req(&f.root, &r, &f.e) == 0 && r.id == UINT64_MAX);
}

/* ============================================================================
 * wire_parse_exec
 * ========================================================================== */

/* Start an exec request {type, id, argv}; the caller adds more keys. */
static void begin_exec(struct wire_enc *w, struct buf *b, const char *const *argv)
{
    uint32_t argc = 0;
    while (argv[argc])
        argc++;
    wire_begin(w, b);
    wire_kv_str(w, "type", "exec");
    wire_kv_uint(w, "id", 7);
    wire_key(w, "argv");
    msgpack_pack_array(&w->pk, argc);
    for (uint32_t i = 0; i < argc; i++)
        wire_str(w, argv[i]);
}

static const char *const echo_hi[] = { "echo", "hi", NULL };

/* Decode the frame in f->b and parse it as exec. */
static int fx_parse_exec(struct fx *f, struct wire_exec_req *x)
{
    CHECK(fx_decode_frame(f) == 0);
    err_clear(&f->e);
    return wire_parse_exec(&f->root, &f->z, x, &f->e);
}

static void parse_exec_reads_a_full_request(void)
{
    FIXTURE(f);
    struct wire_enc w;
    const char *const argv[] = { "sh", "-c", "echo \"$A\"", NULL };
    begin_exec(&w, &f.b, argv);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_str(&w, "A", "1");
    wire_kv_str(&w, "B", "x=y");                 /* '=' is fine in a value */
    wire_map_end(&w, 2);
    wire_kv_bool(&w, "clear_env", true);
    wire_kv_str(&w, "cwd", "/tmp");
    wire_kv_str(&w, "user", "nobody");
    wire_kv_str(&w, "stdin", "null");
    wire_kv_bool(&w, "detached", true);
    wire_kv_bool(&w, "kill_on_disconnect", true);
    wire_kv_uint(&w, "timeout_ms", 5000);
    wire_key(&w, "pty");
    wire_map_begin(&w);
    wire_kv_uint(&w, "rows", 40);
    wire_kv_uint(&w, "cols", 120);
    wire_kv_str(&w, "term", "vt100");
    wire_map_end(&w, 2);
    wire_kv_uint(&w, "a_future_field", 1);      /* unknown keys are ignored */
    wire_end(&w);

    struct wire_exec_req x;
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK(x.argc == 3);
    CHECK_STREQ(x.argv[0], "sh");
    CHECK_STREQ(x.argv[1], "-c");
    CHECK_STREQ(x.argv[2], "echo \"$A\"");
    CHECK(x.argv[3] == NULL);
    CHECK(x.envc == 2);
    CHECK_STREQ(x.env[0], "A=1");
    CHECK_STREQ(x.env[1], "B=x=y");
    CHECK(x.env[2] == NULL);
    CHECK(x.clear_env);
    CHECK_STREQ(x.cwd, "/tmp");
    CHECK_STREQ(x.user, "nobody");
    CHECK(!x.sudo);
    CHECK(x.stdin_null);
    CHECK(x.detached);
    CHECK(x.kill_on_disconnect);
    CHECK(x.timeout_ms == 5000);
    CHECK(x.pty && x.rows == 40 && x.cols == 120);
    CHECK_STREQ(x.term, "vt100");
}

static void parse_exec_applies_defaults_to_a_minimal_request(void)
{
    FIXTURE(f);
    struct wire_enc w;
    begin_exec(&w, &f.b, echo_hi);
    wire_end(&w);
    struct wire_exec_req x;
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK(x.argc == 2 && x.argv[2] == NULL);
    CHECK(x.envc == 0 && x.env == NULL);
    CHECK(!x.clear_env && !x.sudo && !x.stdin_null && !x.detached && !x.kill_on_disconnect);
    CHECK(x.cwd == NULL && x.user == NULL && x.term == NULL);
    CHECK(x.timeout_ms == 0);
    CHECK(!x.pty && x.rows == 24 && x.cols == 80);
}

static void parse_exec_treats_nil_fields_as_absent(void)
{
    FIXTURE(f);
    struct wire_enc w;
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_nil(&w, "env");
    wire_kv_nil(&w, "cwd");
    wire_kv_nil(&w, "user");
    wire_kv_nil(&w, "pty");
    wire_kv_nil(&w, "stdin");
    wire_kv_nil(&w, "timeout_ms");
    wire_end(&w);
    struct wire_exec_req x;
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK(x.env == NULL && x.cwd == NULL && x.user == NULL && !x.pty && !x.stdin_null);
}

/* A detached command gets /dev/null as stdin unless its request asks for a
 * pipe: most never read it, and a pipe would cost the agent an fd each. */
static void parse_exec_gives_a_detached_command_dev_null_stdin_unless_asked_for_a_pipe(void)
{
    static const char *const stdin_fields[] = {NULL, "pipe", "null"};
    static const bool want_null[] = {true, false, true};
    for (int i = 0; i < 3; i++) {
        FIXTURE(f);
        struct wire_enc w;
        begin_exec(&w, &f.b, echo_hi);
        wire_kv_bool(&w, "detached", true);
        if (stdin_fields[i])
            wire_kv_str(&w, "stdin", stdin_fields[i]);
        wire_end(&w);
        struct wire_exec_req x;
        CHECK(fx_parse_exec(&f, &x) == 0);
        CHECK(x.detached);
        CHECK(x.stdin_null == want_null[i]);
    }
}

static void parse_exec_accepts_pty_true_stdin_pipe_and_sudo(void)
{
    FIXTURE(f);
    struct wire_enc w;
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_bool(&w, "pty", true);
    wire_kv_str(&w, "stdin", "pipe");
    wire_kv_bool(&w, "sudo", true);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_map_end(&w, 2);
    wire_end(&w);
    struct wire_exec_req x;
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK(x.pty && x.rows == 24 && x.cols == 80 && x.term == NULL);
    CHECK(!x.stdin_null);
    CHECK(x.sudo && x.user == NULL);
    CHECK(x.envc == 0 && x.env && x.env[0] == NULL);
}

static void parse_exec_refuses_a_missing_or_empty_argv(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    const char *const none[] = { NULL };
    begin_exec(&w, &f.b, none);              /* argv: [] */
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);
    wire_begin(&w, &f.b);                    /* no argv at all */
    wire_kv_str(&w, "type", "exec");
    wire_kv_uint(&w, "id", 1);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);
    wire_begin(&w, &f.b);                    /* argv a string, not an array */
    wire_kv_str(&w, "argv", "echo hi");
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    const char *const empty0[] = { "", "x", NULL };
    buf_reset(&f.b, SIZE_MAX);
    begin_exec(&w, &f.b, empty0);            /* argv[0] "" */
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_exec_refuses_argv_with_a_non_string(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    wire_begin(&w, &f.b);
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 3);
    wire_str(&w, "echo");
    msgpack_pack_uint64(&w.pk, 1);
    wire_str(&w, "x");
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
    CHECK(strstr(f.e.msg, "argv[1]") != NULL);

    buf_reset(&f.b, SIZE_MAX);                  /* bin is not a string either */
    wire_begin(&w, &f.b);
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 1);
    msgpack_pack_bin(&w.pk, 4);
    msgpack_pack_bin_body(&w.pk, "echo", 4);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_exec_refuses_strings_with_an_embedded_nul(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;

    wire_begin(&w, &f.b);                    /* in argv */
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 2);
    wire_str(&w, "echo");
    msgpack_pack_str(&w.pk, 3);
    msgpack_pack_str_body(&w.pk, "a\0b", 3);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    const char *const fields[] = { "cwd", "user" };
    for (size_t i = 0; i < 2; i++) {            /* in cwd, user */
        buf_reset(&f.b, SIZE_MAX);
        begin_exec(&w, &f.b, echo_hi);
        wire_kv_strn(&w, fields[i], "/tmp\0/etc", 9);
        wire_end(&w);
        CHECK(fx_parse_exec(&f, &x) == -1);
        CHECK_CODE(&f.e, "bad_request");
        CHECK(strstr(f.e.msg, fields[i]) != NULL);
    }

    buf_reset(&f.b, SIZE_MAX);                  /* in an env value */
    begin_exec(&w, &f.b, echo_hi);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_strn(&w, "A", "1\0" "2", 3);
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);                  /* in an env key */
    begin_exec(&w, &f.b, echo_hi);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_key_n(&w, "A\0B", 3);
    wire_str(&w, "1");
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_exec_refuses_bad_env_entries(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;

    begin_exec(&w, &f.b, echo_hi);           /* a key containing '=' */
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_str(&w, "A=B", "c");
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);                  /* an empty key */
    begin_exec(&w, &f.b, echo_hi);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_str(&w, "", "c");
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);                  /* a value that is not a string */
    begin_exec(&w, &f.b, echo_hi);
    wire_key(&w, "env");
    wire_map_begin(&w);
    wire_kv_uint(&w, "A", 1);
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);                  /* an array instead of a map */
    begin_exec(&w, &f.b, echo_hi);
    wire_key(&w, "env");
    msgpack_pack_array(&w.pk, 1);
    wire_str(&w, "A=1");
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_exec_refuses_user_together_with_sudo(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_str(&w, "user", "nobody");
    wire_kv_bool(&w, "sudo", true);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);                  /* sudo: false with a user is fine */
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_str(&w, "user", "nobody");
    wire_kv_bool(&w, "sudo", false);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK_STREQ(x.user, "nobody");
}

static void parse_exec_refuses_a_bad_stdin_value(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    const char *values[] = { "file", "", "PIPE", "null\n" };
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        buf_reset(&f.b, SIZE_MAX);
        begin_exec(&w, &f.b, echo_hi);
        wire_kv_str(&w, "stdin", values[i]);
        wire_end(&w);
        CHECK(fx_parse_exec(&f, &x) == -1);
        CHECK_CODE(&f.e, "bad_request");
    }
    buf_reset(&f.b, SIZE_MAX);
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_bool(&w, "stdin", false);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

/* An exec request whose pty is {rows, cols}. */
static int parse_exec_with_pty(struct fx *f, uint64_t rows, uint64_t cols, struct wire_exec_req *x)
{
    struct wire_enc w;
    buf_reset(&f->b, SIZE_MAX);
    begin_exec(&w, &f->b, echo_hi);
    wire_key(&w, "pty");
    wire_map_begin(&w);
    wire_kv_uint(&w, "rows", rows);
    wire_kv_uint(&w, "cols", cols);
    wire_map_end(&w, 2);
    wire_end(&w);
    return fx_parse_exec(f, x);
}

static void parse_exec_refuses_pty_sizes_outside_1_to_65535(void)
{
    FIXTURE(f);
    struct wire_exec_req x;
    CHECK(parse_exec_with_pty(&f, 0, 80, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
    CHECK(parse_exec_with_pty(&f, 24, 0, &x) == -1);
    CHECK(parse_exec_with_pty(&f, 65536, 80, &x) == -1);
    CHECK(parse_exec_with_pty(&f, 24, 1ull << 32, &x) == -1);   /* not truncated to 0 */
    CHECK(parse_exec_with_pty(&f, 65535, 1, &x) == 0);
    CHECK(x.pty && x.rows == 65535 && x.cols == 1);
}

static void parse_exec_refuses_a_malformed_pty(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    begin_exec(&w, &f.b, echo_hi);           /* rows as a string */
    wire_key(&w, "pty");
    wire_map_begin(&w);
    wire_kv_str(&w, "rows", "24");
    wire_map_end(&w, 2);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
    CHECK(strncmp(f.e.msg, "pty: ", 5) == 0);   /* context added on the way up */

    buf_reset(&f.b, SIZE_MAX);                  /* pty as a number */
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_uint(&w, "pty", 1);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

static void parse_exec_refuses_wrongly_typed_options(void)
{
    FIXTURE(f);
    struct wire_enc w;
    struct wire_exec_req x;
    const char *bools[] = { "clear_env", "sudo", "detached", "kill_on_disconnect" };
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
        buf_reset(&f.b, SIZE_MAX);
        begin_exec(&w, &f.b, echo_hi);
        wire_kv_uint(&w, bools[i], 1);
        wire_end(&w);
        CHECK(fx_parse_exec(&f, &x) == -1);
        CHECK_CODE(&f.e, "bad_request");
        CHECK(strstr(f.e.msg, bools[i]) != NULL);
    }
    buf_reset(&f.b, SIZE_MAX);
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_int(&w, "timeout_ms", -1);
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");

    buf_reset(&f.b, SIZE_MAX);
    begin_exec(&w, &f.b, echo_hi);
    wire_kv_str(&w, "cwd", "");
    wire_end(&w);
    CHECK(fx_parse_exec(&f, &x) == -1);
    CHECK_CODE(&f.e, "bad_request");
}

/* ============================================================================
 * encoding
 * ========================================================================== */

static void encoder_frames_every_kv_type(void)
{
    FIXTURE(f);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    wire_kv_str(&w, "str", "héllo");
    wire_kv_strn(&w, "strn", "abcdef", 3);
    wire_kv_uint(&w, "uint", UINT64_MAX);
    wire_kv_int(&w, "int", INT64_MIN);
    wire_kv_bool(&w, "yes", true);
    wire_kv_bool(&w, "no", false);
    wire_kv_bin(&w, "bin", "\x00\xff", 2);
    wire_kv_nil(&w, "nil");
    wire_key(&w, "list");
    msgpack_pack_array(&w.pk, 2);
    wire_str(&w, "a");
    wire_str(&w, "");
    wire_end(&w);
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *m = &f.root;
    CHECK(m->via.map.size == 9);
    CHECK(str_field_is(m, "str", "héllo"));
    CHECK(str_field_is(m, "strn", "abc"));
    CHECK(uint_field_is(m, "uint", UINT64_MAX));
    CHECK(int_field_is(m, "int", INT64_MIN));
    CHECK(bool_field_is(m, "yes", true));
    CHECK(bool_field_is(m, "no", false));
    const msgpack_object *bin = wire_get(m, "bin");
    CHECK(bin && bin->type == MSGPACK_OBJECT_BIN && bin->via.bin.size == 2 &&
          memcmp(bin->via.bin.ptr, "\x00\xff", 2) == 0);
    CHECK(wire_get(m, "nil") == NULL);
    const msgpack_object *list = wire_get(m, "list");
    CHECK(list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2 &&
          wire_obj_is(&list->via.array.ptr[0], "a") && wire_obj_is(&list->via.array.ptr[1], ""));
}

static void encoder_writes_frames_back_to_back(void)
{
    FIXTURE(f);
    struct sa_err e = { 0 };
    err_set(&e, ENOENT, NULL, "first");
    wire_msg_error(&f.b, true, 1, &e);
    size_t first = buf_size(&f.b);
    err_set(&e, 0, "bad_request", "second");
    wire_msg_error(&f.b, true, 2, &e);

    uint32_t len = 0;
    CHECK(wire_frame_peek(buf_ptr(&f.b), buf_size(&f.b), WIRE_MAX_FRAME_DEFAULT, &len, &f.e) == 1);
    CHECK(len == first - WIRE_HDR_LEN);
    CHECK(wire_decode(buf_ptr(&f.b) + 4, len, &f.z, &f.root, &f.e) == 0);
    CHECK(uint_field_is(&f.root, "id", 1) && str_field_is(&f.root, "code", "ENOENT"));
    buf_consume(&f.b, first);
    CHECK(fx_decode_frame(&f) == 0);
    CHECK(uint_field_is(&f.root, "id", 2) && str_field_is(&f.root, "message", "second"));
}

static void encoder_uses_a_32_bit_length_for_large_frames(void)
{
    FIXTURE(f);
    size_t n = 100000;
    uint8_t *data = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7);
    wire_msg_output(&f.b, 3, 4, WIRE_STDERR, 1ull << 40, 5, data, n);
    CHECK(buf_size(&f.b) > n + 4 && buf_ptr(&f.b)[1] == 0x01);   /* length above 64 KiB */
    CHECK(fx_decode_frame(&f) == 0);
    const char *p;
    size_t got;
    CHECK(wire_obj_bytes(wire_get(&f.root, "data"), &p, &got) && got == n &&
          memcmp(p, data, n) == 0);
    CHECK(str_field_is(&f.root, "stream", "stderr"));
    CHECK(uint_field_is(&f.root, "offset", 1ull << 40));
    free(data);
}

static const char *const test_caps[] = { "exec", "stdin", "signal", NULL };

static void msg_hello_round_trips(void)
{
    FIXTURE(f);
    struct wire_hello h = {
        .agent = "sandbox-agent 0.1.0",
        .caps = test_caps,
        .boot_id = "6c1e0000-0000-4000-8000-000000000000",
        .user = "vercel-sandbox",
        .workdir = "/vercel/sandbox",
        .dev = true,
        .max_frame = WIRE_MAX_FRAME_DEFAULT,
        .stdin_window = 65536,
        .generation = 3,
        .auth_required = false,
    };
    wire_msg_hello(&f.b, &h);
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *m = &f.root;
    CHECK(m->via.map.size == 13);
    CHECK(str_field_is(m, "type", "hello"));
    CHECK(uint_field_is(m, "protocol", WIRE_PROTOCOL_VERSION));
    CHECK(str_field_is(m, "agent", "sandbox-agent 0.1.0"));
    const msgpack_object *caps = wire_get(m, "capabilities");
    CHECK(caps && caps->type == MSGPACK_OBJECT_ARRAY && caps->via.array.size == 3);
    if (caps && caps->type == MSGPACK_OBJECT_ARRAY && caps->via.array.size == 3)
        for (uint32_t i = 0; i < 3; i++)
            CHECK(wire_obj_is(&caps->via.array.ptr[i], test_caps[i]));
    CHECK(str_field_is(m, "boot_id", h.boot_id));
    CHECK(str_field_is(m, "user", "vercel-sandbox"));
    CHECK(str_field_is(m, "workdir", "/vercel/sandbox"));
    CHECK(bool_field_is(m, "dev", true));
    CHECK(uint_field_is(m, "max_frame", WIRE_MAX_FRAME_DEFAULT));
    CHECK(uint_field_is(m, "stdin_window", 65536));
    CHECK(uint_field_is(m, "generation", 3));
    CHECK(bool_field_is(m, "auth_required", false));
    CHECK(bool_field_is(m, "insecure_tcp", false));

    /* no capabilities at all is an empty array */
    const char *const no_caps[] = { NULL };
    h.caps = no_caps;
    buf_reset(&f.b, SIZE_MAX);
    wire_msg_hello(&f.b, &h);
    CHECK(fx_decode_frame(&f) == 0);
    caps = wire_get(&f.root, "capabilities");
    CHECK(caps && caps->type == MSGPACK_OBJECT_ARRAY && caps->via.array.size == 0);
}

static void msg_error_round_trips_with_and_without_id_and_stage(void)
{
    FIXTURE(f);
    struct sa_err e = { 0 };
    err_sys(&e, ENOENT, "exec %s", "tool");
    wire_msg_error(&f.b, true, 7, &e);
    CHECK(fx_decode_frame(&f) == 0);
    CHECK(f.root.via.map.size == 4);
    CHECK(str_field_is(&f.root, "type", "error"));
    CHECK(uint_field_is(&f.root, "id", 7));
    CHECK(str_field_is(&f.root, "code", "ENOENT"));
    CHECK(str_field_is(&f.root, "message", e.msg));
    CHECK(wire_get(&f.root, "stage") == NULL);

    buf_reset(&f.b, SIZE_MAX);                  /* a spawn error names its stage */
    e.stage = "cwd";
    wire_msg_error(&f.b, true, 8, &e);
    CHECK(fx_decode_frame(&f) == 0);
    CHECK(f.root.via.map.size == 5);
    CHECK(str_field_is(&f.root, "stage", "cwd"));
    CHECK(str_field_is(&f.root, "code", "ENOENT"));

    buf_reset(&f.b, SIZE_MAX);
    err_set(&e, 0, "bad_frame", "payload is not a msgpack map");
    wire_msg_error(&f.b, false, 99, &e);
    CHECK(fx_decode_frame(&f) == 0);
    CHECK(f.root.via.map.size == 3);            /* err_set cleared the stage */
    CHECK(wire_get(&f.root, "id") == NULL);
    CHECK(wire_get(&f.root, "stage") == NULL);
    CHECK(str_field_is(&f.root, "code", "bad_frame"));

    buf_reset(&f.b, SIZE_MAX);
    err_clear(&e);                              /* no code: "internal" */
    wire_msg_error(&f.b, true, 1, &e);
    CHECK(fx_decode_frame(&f) == 0);
    CHECK(str_field_is(&f.root, "code", "internal"));
    CHECK(str_field_is(&f.root, "message", ""));
}

static void msg_output_round_trips(void)
{
    FIXTURE(f);
    wire_msg_output(&f.b, 11, 12, WIRE_STDERR, 13, 14, "oops\n", 5);
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *m = &f.root;
    CHECK(m->via.map.size == 7);
    CHECK(str_field_is(m, "type", "output"));
    CHECK(uint_field_is(m, "id", 11));
    CHECK(uint_field_is(m, "cmd", 12));
    CHECK(str_field_is(m, "stream", "stderr"));
    CHECK(uint_field_is(m, "offset", 13));
    CHECK(uint_field_is(m, "pos", 14));
    const msgpack_object *d = wire_get(m, "data");
    CHECK(d && d->type == MSGPACK_OBJECT_BIN && d->via.bin.size == 5 &&
          memcmp(d->via.bin.ptr, "oops\n", 5) == 0);

    buf_reset(&f.b, SIZE_MAX);                  /* empty data is still a bin */
    wire_msg_output(&f.b, 1, 1, WIRE_STDOUT, 0, 0, "", 0);
    CHECK(fx_decode_frame(&f) == 0);
    d = wire_get(&f.root, "data");
    CHECK(d && d->type == MSGPACK_OBJECT_BIN && d->via.bin.size == 0);
    CHECK(str_field_is(&f.root, "stream", "stdout"));
}

static void msg_exit_round_trips(void)
{
    FIXTURE(f);
    struct wire_exit x = { .cmd = 5, .code = 137, .signal = 9, .duration_ms = 12,
                           .timed_out = true, .stdout_bytes = 6, .stderr_bytes = 1ull << 35 };
    wire_msg_exit(&f.b, 2, &x);
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *m = &f.root;
    CHECK(m->via.map.size == 9);
    CHECK(str_field_is(m, "type", "exit"));
    CHECK(uint_field_is(m, "id", 2));
    CHECK(uint_field_is(m, "cmd", 5));
    CHECK(int_field_is(m, "code", 137));
    CHECK(int_field_is(m, "signal", 9));
    CHECK(uint_field_is(m, "duration_ms", 12));
    CHECK(bool_field_is(m, "timed_out", true));
    CHECK(uint_field_is(m, "stdout_bytes", 6));
    CHECK(uint_field_is(m, "stderr_bytes", 1ull << 35));
}

/* Fill b with the bytes 0, 1, 2, ... (mod 256), then consume `consumed` of
 * them, so that the head is partway into the allocation. */
static void put_consumed_prefix(struct buf *b, size_t total, size_t consumed)
{
    for (size_t i = 0; i < total; i++) {
        uint8_t byte = (uint8_t)i;
        buf_append(b, &byte, 1);
    }
    buf_consume(b, consumed);
}

/* The remaining prefix bytes are intact and one whole, decodable frame follows. */
static void check_prefix_then_frame(struct fx *f, size_t total, size_t consumed)
{
    size_t keep = total - consumed;
    bool intact = buf_size(&f->b) > keep;
    for (size_t i = 0; intact && i < keep; i++)
        intact = buf_ptr(&f->b)[i] == (uint8_t)(consumed + i);
    CHECK(intact);
    buf_consume(&f->b, keep);
    CHECK(fx_decode_frame(f) == 0);
}

static void encoder_frames_correctly_behind_a_consumed_head(void)
{
    FIXTURE(f);
    struct sa_err e = { 0 };
    err_set(&e, 0, "bad_request", "field 'argv' must be a non-empty array of strings");

    /* 0: the frame fits behind the consumed head: nothing moves */
    put_consumed_prefix(&f.b, 100, 50);
    wire_msg_error(&f.b, true, 41, &e);
    CHECK(f.b.head == 50);
    check_prefix_then_frame(&f, 100, 50);
    CHECK(uint_field_is(&f.root, "id", 41));

    /* 1: wire_begin's own reserve compacts (2 bytes free at the tail) */
    buf_free(&f.b);
    put_consumed_prefix(&f.b, 254, 100);
    CHECK(f.b.cap == 256 && f.b.head == 100);
    wire_msg_error(&f.b, true, 42, &e);
    CHECK(f.b.head == 0);                       /* it did compact */
    check_prefix_then_frame(&f, 254, 100);
    CHECK(uint_field_is(&f.root, "id", 42));

    /* 2: the header fits, a later write compacts in the middle of the frame */
    buf_free(&f.b);
    put_consumed_prefix(&f.b, 200, 100);
    CHECK(f.b.cap == 256 && f.b.head == 100);
    wire_msg_output(&f.b, 1, 2, WIRE_STDOUT, 3, 4, "0123456789012345678901234567890123456789", 40);
    CHECK(f.b.head == 0 && f.b.cap == 256);     /* compacted, did not grow */
    check_prefix_then_frame(&f, 200, 100);
    CHECK(uint_field_is(&f.root, "pos", 4));

    /* 3: compacting is not enough, the buffer also grows */
    buf_free(&f.b);
    put_consumed_prefix(&f.b, 200, 100);
    char big[3000];
    memset(big, 'z', sizeof big);
    wire_msg_output(&f.b, 1, 2, WIRE_STDOUT, 3, 4, big, sizeof big);
    CHECK(f.b.head == 0 && f.b.cap > 256);
    check_prefix_then_frame(&f, 200, 100);
    const char *p;
    size_t n;
    CHECK(wire_obj_bytes(wire_get(&f.root, "data"), &p, &n) && n == sizeof big &&
          memcmp(p, big, n) == 0);
}

/* --- PROTOCOL.md section 6, byte for byte --------------------------------------- */

static const char doc_ping[] =
    "00 00 00 0f"
    "82"
    "a4 74 79 70 65  a4 70 69 6e 67"
    "a2 69 64        01";

static const char doc_ok[] =
    "00 00 00 1e"
    "83"
    "a4 74 79 70 65  a2 6f 6b"
    "a2 69 64        01"
    "a7 74 69 6d 65 5f 6d 73"
    "cf 00 00 01 9a c7 c2 70 00";

static const char doc_exec[] =
    "00 00 00 1d"
    "83"
    "a4 74 79 70 65  a4 65 78 65 63"
    "a2 69 64        02"
    "a4 61 72 67 76  92 a4 65 63 68 6f a2 68 69";

static const char doc_output[] =
    "00 00 00 3b"
    "87"
    "a4 74 79 70 65  a6 6f 75 74 70 75 74"
    "a2 69 64        02"
    "a3 63 6d 64     01"
    "a6 73 74 72 65 61 6d  a6 73 74 64 6f 75 74"
    "a6 6f 66 66 73 65 74  00"
    "a3 70 6f 73     00"
    "a4 64 61 74 61  c4 03 68 69 0a";

static void doc_example_ping_request_is_byte_exact(void)
{
    FIXTURE(f);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    wire_kv_str(&w, "type", "ping");
    wire_kv_uint(&w, "id", 1);
    wire_end(&w);
    CHECK(fx_bytes_are(&f, doc_ping));
    CHECK(fx_decode_frame(&f) == 0);
    struct wire_req r;
    CHECK(wire_parse_req(&f.root, &r, &f.e) == 0 && wire_req_is(&r, "ping") && r.id == 1);
}

static void doc_example_ok_reply_is_byte_exact(void)
{
    FIXTURE(f);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", 1);
    wire_kv_uint(&w, "time_ms", 1764288000000ull);
    wire_end(&w);
    CHECK(fx_bytes_are(&f, doc_ok));
}

static void doc_example_exec_request_is_byte_exact(void)
{
    FIXTURE(f);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    wire_kv_str(&w, "type", "exec");
    wire_kv_uint(&w, "id", 2);
    wire_key(&w, "argv");
    msgpack_pack_array(&w.pk, 2);
    wire_str(&w, "echo");
    wire_str(&w, "hi");
    wire_end(&w);
    CHECK(fx_bytes_are(&f, doc_exec));
    struct wire_exec_req x;
    CHECK(fx_parse_exec(&f, &x) == 0);
    CHECK(x.argc == 2 && strcmp(x.argv[0], "echo") == 0 && strcmp(x.argv[1], "hi") == 0);
}

static void doc_example_output_event_is_byte_exact(void)
{
    FIXTURE(f);
    wire_msg_output(&f.b, 2, 1, WIRE_STDOUT, 0, 0, "hi\n", 3);
    CHECK(fx_bytes_are(&f, doc_output));
}

/* ============================================================================
 * the encoder counts map entries
 * ========================================================================== */

/* msgpack-c's own packer, writing what the encoder is compared with. */
struct ref {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void ref_init(struct ref *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static void ref_str(struct ref *r, const char *s)
{
    msgpack_pack_str(&r->pk, strlen(s));
    msgpack_pack_str_body(&r->pk, s, strlen(s));
}

/* b holds one frame whose payload is the bytes of r. */
static bool frame_is_ref(const struct buf *b, const struct ref *r)
{
    const uint8_t *p = buf_ptr(b);
    size_t n = buf_size(b);
    uint32_t len = n >= 4 ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | p[2] << 8 | p[3] : 0;
    return n == WIRE_HDR_LEN + r->sb.size && len == r->sb.size &&
           memcmp(p + WIRE_HDR_LEN, r->sb.data, r->sb.size) == 0;
}

/* A frame {k0: 0, k1: 1, ...} of n entries, and the same map packed by
 * msgpack-c with the count given up front. */
static void put_counted_map(struct buf *b, struct ref *r, uint32_t n)
{
    struct wire_enc w;
    wire_begin(&w, b);
    msgpack_pack_map(&r->pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%u", i);
        wire_kv_uint(&w, k, i);
        ref_str(r, k);
        msgpack_pack_uint64(&r->pk, i);
    }
    wire_end(&w);
}

static void encoder_counts_map_entries_with_the_smallest_header(void)
{
    static const uint32_t sizes[] = { 0, 1, 15, 16, 255, 65535, 65536, 70000 };
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        uint32_t n = sizes[t];
        struct buf b;
        struct ref r;
        buf_init(&b);
        ref_init(&r);
        put_counted_map(&b, &r, n);
        CHECK(frame_is_ref(&b, &r));            /* msgpack-c's bytes, header included */
        const uint8_t *p = buf_ptr(&b) + WIRE_HDR_LEN;
        if (n <= 15)
            CHECK(p[0] == (0x80 | n));          /* fixmap */
        else if (n <= 65535)
            CHECK(p[0] == 0xde && (uint32_t)(p[1] << 8 | p[2]) == n);   /* map16 */
        else
            CHECK(p[0] == 0xdf && ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
                                   (uint32_t)p[3] << 8 | p[4]) == n);   /* map32 */
        /* and msgpack-c decodes it: n entries, the last one intact */
        msgpack_zone z;
        msgpack_object o;
        size_t off = 0;
        CHECK(msgpack_zone_init(&z, WIRE_ZONE_CHUNK));
        CHECK(msgpack_unpack((const char *)p, buf_size(&b) - WIRE_HDR_LEN, &off, &z, &o) ==
              MSGPACK_UNPACK_SUCCESS);
        CHECK(off == buf_size(&b) - WIRE_HDR_LEN);
        CHECK(o.type == MSGPACK_OBJECT_MAP && o.via.map.size == n);
        if (n > 0 && o.type == MSGPACK_OBJECT_MAP && o.via.map.size == n) {
            char k[16];
            snprintf(k, sizeof k, "k%u", n - 1);
            CHECK(uint_field_is(&o, k, n - 1));
        }
        msgpack_zone_destroy(&z);
        msgpack_sbuffer_destroy(&r.sb);
        buf_free(&b);
    }
}

/* Inner maps that grow past 15 entries inside outer ones that grow too, maps
 * in an array, empty maps: each map gets its own count. */
static void encoder_counts_nested_maps_each_on_its_own(void)
{
    FIXTURE(f);
    struct ref r;
    ref_init(&r);
    struct wire_enc w;
    wire_begin(&w, &f.b);
    msgpack_pack_map(&r.pk, 20);
    wire_kv_str(&w, "type", "ok");
    ref_str(&r, "type");
    ref_str(&r, "ok");
    wire_key(&w, "empty");                      /* {} */
    unsigned empty = wire_map_begin(&w);
    wire_map_end(&w, empty);
    ref_str(&r, "empty");
    msgpack_pack_map(&r.pk, 0);
    wire_key(&w, "list");                       /* [{a: {b: {16 entries}}}, {}] */
    msgpack_pack_array(&w.pk, 2);
    ref_str(&r, "list");
    msgpack_pack_array(&r.pk, 2);
    unsigned a = wire_map_begin(&w);
    msgpack_pack_map(&r.pk, 1);
    wire_key(&w, "a");
    ref_str(&r, "a");
    unsigned bm = wire_map_begin(&w);
    msgpack_pack_map(&r.pk, 16);
    for (int i = 0; i < 16; i++) {
        char k[8];
        snprintf(k, sizeof k, "b%d", i);
        wire_kv_int(&w, k, -i);
        ref_str(&r, k);
        msgpack_pack_int64(&r.pk, -i);
    }
    wire_map_end(&w, bm);
    wire_map_end(&w, a);
    unsigned e2 = wire_map_begin(&w);
    wire_map_end(&w, e2);
    msgpack_pack_map(&r.pk, 0);
    for (int i = 0; i < 17; i++) {              /* the frame's own map: 20 entries */
        char k[8];
        snprintf(k, sizeof k, "r%d", i);
        wire_kv_bool(&w, k, i % 2);
        ref_str(&r, k);
        if (i % 2)
            msgpack_pack_true(&r.pk);
        else
            msgpack_pack_false(&r.pk);
    }
    wire_end(&w);
    CHECK(frame_is_ref(&f.b, &r));
    CHECK(fx_decode_frame(&f) == 0);
    const msgpack_object *list = wire_get(&f.root, "list");
    CHECK(list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2);
    if (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2) {
        const msgpack_object *b = wire_get(wire_get(&list->via.array.ptr[0], "a"), "b15");
        int64_t v = 0;
        CHECK(wire_obj_int(b, &v) && v == -15);
        CHECK(list->via.array.ptr[1].type == MSGPACK_OBJECT_MAP &&
              list->via.array.ptr[1].via.map.size == 0);
    }
    msgpack_sbuffer_destroy(&r.sb);
}

/* A raw encoder (records spliced into a frame later, as `list` does) counts
 * the maps it opens at its top level. */
static void encoder_counts_maps_of_a_raw_encoder(void)
{
    struct buf b;
    struct ref r;
    buf_init(&b);
    ref_init(&r);
    struct wire_enc w;
    wire_enc_raw(&w, &b);
    for (uint32_t n = 3; n <= 18; n += 15) {
        unsigned m = wire_map_begin(&w);
        msgpack_pack_map(&r.pk, n);
        for (uint32_t i = 0; i < n; i++) {
            char k[8];
            snprintf(k, sizeof k, "x%u", i);
            wire_kv_str(&w, k, k);
            ref_str(&r, k);
            ref_str(&r, k);
        }
        wire_map_end(&w, m);
    }
    CHECK(buf_size(&b) == r.sb.size && memcmp(buf_ptr(&b), r.sb.data, r.sb.size) == 0);
    msgpack_sbuffer_destroy(&r.sb);
    buf_free(&b);
}

/* A map that grows (its header moves its body) in a buffer whose head is
 * consumed and that compacts or reallocates meanwhile. */
static void encoder_grows_a_map_behind_a_consumed_head(void)
{
    FIXTURE(f);
    struct ref r;
    ref_init(&r);
    put_consumed_prefix(&f.b, 254, 100);
    CHECK(f.b.cap == 256 && f.b.head == 100);
    put_counted_map(&f.b, &r, 40);
    check_prefix_then_frame(&f, 254, 100);
    CHECK(f.root.via.map.size == 40 && uint_field_is(&f.root, "k39", 39));
    msgpack_sbuffer_destroy(&r.sb);
}

#ifndef NDEBUG
/* Debug builds: an encoder misused aborts (in a child) at the misuse. */
static bool encoder_misuse_aborts(void (*misuse)(struct wire_enc *w))
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 2);                   /* the assertion's message */
        struct buf b;
        struct wire_enc w;
        buf_init(&b);
        wire_begin(&w, &b);
        misuse(&w);
        _exit(0);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void misuse_key_without_value(struct wire_enc *w)
{
    wire_kv_str(w, "type", "ok");
    wire_key(w, "dangling");
    wire_end(w);
}

static void misuse_map_packed_by_hand(struct wire_enc *w)
{
    wire_key(w, "env");
    msgpack_pack_map(&w->pk, 1);                /* wire_kv_str counts in the frame's map */
    wire_kv_str(w, "A", "1");
    wire_end(w);
}

static void misuse_maps_closed_out_of_order(struct wire_enc *w)
{
    wire_key(w, "a");
    unsigned outer = wire_map_begin(w);
    wire_key(w, "b");
    wire_map_begin(w);
    wire_map_end(w, outer);
}

static void misuse_end_with_a_map_open(struct wire_enc *w)
{
    wire_key(w, "a");
    wire_map_begin(w);
    wire_end(w);
}

static void misuse_closing_the_frames_own_map(struct wire_enc *w)
{
    wire_map_end(w, 1);
}

static void well_formed_use(struct wire_enc *w)
{
    wire_key(w, "a");
    unsigned m = wire_map_begin(w);
    wire_kv_uint(w, "b", 1);
    wire_map_end(w, m);
    wire_end(w);
}

static void encoder_asserts_on_misuse_in_debug_builds(void)
{
    CHECK(!encoder_misuse_aborts(well_formed_use));     /* the harness itself */
    CHECK(encoder_misuse_aborts(misuse_key_without_value));
    CHECK(encoder_misuse_aborts(misuse_map_packed_by_hand));
    CHECK(encoder_misuse_aborts(misuse_maps_closed_out_of_order));
    CHECK(encoder_misuse_aborts(misuse_end_with_a_map_open));
    CHECK(encoder_misuse_aborts(misuse_closing_the_frames_own_map));
}
#endif

/* ============================================================================
 * memory bound of decoding
 * ========================================================================== */

/* msgpack-c allocates a container's elements up front (24 bytes per element),
 * and when the current zone chunk is too small it takes a new chunk of the
 * chunk size doubled until it fits, abandoning what was left of the old one.
 * A string of containers each just over half a chunk therefore costs 48 bytes
 * per object, not 24: this is the bound that holds, plus the first chunk and
 * the chunk headers. */
#define DECODE_BYTES_PER_OBJECT 48
#define DECODE_BOUND(objects) (DECODE_BYTES_PER_OBJECT * (size_t)(objects) + 2 * WIRE_ZONE_CHUNK)

/* {"a": [ m arrays of k nils ]}: 3 + m * (1 + k) objects. */
static void put_arrays_of_nils(struct buf *b, uint32_t m, uint32_t k)
{
    put_hex(b, "81 a1 61 dd");
    put_be32(b, m);
    for (uint32_t i = 0; i < m; i++) {
        put_hex(b, "dd");
        put_be32(b, k);
        put_fill(b, 0xc0, k);
    }
}

static void decoding_max_objects_stays_within_48_bytes_per_object(void)
{
    FIXTURE(f);
    /* one flat array: a single 1.5 MiB allocation, rounded to a 2 MiB chunk */
    put_array_of_nils(&f.b, WIRE_MAX_OBJECTS - 3);
    CHECK(fx_decode_payload(&f) == 0);
    CHECK(zone_footprint(&f.z) <= DECODE_BOUND(WIRE_MAX_OBJECTS));
    msgpack_zone_clear(&f.z);

    /* arrays of 171 nils: 4104 bytes each, just over a 4 KiB chunk, so each
     * takes an 8 KiB chunk of its own — the worst case */
    uint32_t k = WIRE_ZONE_CHUNK / 24 + 1;
    uint32_t m = (WIRE_MAX_OBJECTS - 3) / (1 + k);
    uint64_t objects = 3 + (uint64_t)m * (1 + k);
    buf_reset(&f.b, SIZE_MAX);
    put_arrays_of_nils(&f.b, m, k);
    CHECK(fx_decode_payload(&f) == 0);
    size_t worst = zone_footprint(&f.z);
    CHECK(worst <= DECODE_BOUND(objects));
    msgpack_zone_clear(&f.z);
}

static void max_size_frame_of_tiny_objects_is_refused_before_allocating(void)
{
    FIXTURE(f);
    /* 1 MiB of nils: 1048568 objects claimed, all present */
    put_array_of_nils(&f.b, WIRE_MAX_FRAME_DEFAULT - 8);
    CHECK(buf_size(&f.b) == WIRE_MAX_FRAME_DEFAULT);
    size_t before = zone_footprint(&f.z);
    CHECK(fx_decode_payload(&f) == -1);
    CHECK_CODE(&f.e, "bad_frame");
    CHECK(strstr(f.e.msg, "objects") != NULL);
    CHECK(zone_footprint(&f.z) == before);
}

static void max_size_frame_within_the_object_limit_decodes_within_bound(void)
{
    FIXTURE(f);
    /* 1 MiB of 65533 short strings: strings cost nothing, they point into the payload */
    uint32_t count = WIRE_MAX_OBJECTS - 3;
    put_hex(&f.b, "81 a1 61 dd");
    put_be32(&f.b, count);
    size_t room = WIRE_MAX_FRAME_DEFAULT - buf_size(&f.b);
    for (uint32_t i = 0; i < count; i++) {
        size_t len = room / (count - i) - 2;      /* str8 header: 2 bytes */
        if (len > 255)
            len = 255;
        put_hex(&f.b, "d9");
        uint8_t l = (uint8_t)len;
        buf_append(&f.b, &l, 1);
        put_fill(&f.b, 'x', len);
        room -= len + 2;
    }
    CHECK(buf_size(&f.b) == WIRE_MAX_FRAME_DEFAULT);
    CHECK(fx_decode_payload(&f) == 0);
    CHECK(zone_footprint(&f.z) <= DECODE_BOUND(WIRE_MAX_OBJECTS));
}

/* ============================================================================
 * buf
 * ========================================================================== */

static void buf_append_grows_geometrically_and_keeps_bytes(void)
{
    struct buf b;
    buf_init(&b);
    CHECK(buf_size(&b) == 0 && b.data == NULL);
    buf_append(&b, "", 0);                      /* nothing to add: no allocation */
    CHECK(b.data == NULL && b.cap == 0);
    buf_append(&b, "hello", 5);
    CHECK(buf_size(&b) == 5 && b.cap == 256 && memcmp(buf_ptr(&b), "hello", 5) == 0);
    char big[600];
    memset(big, 'q', sizeof big);
    buf_append(&b, big, sizeof big);
    CHECK(buf_size(&b) == 605 && b.cap == 1024);
    CHECK(memcmp(buf_ptr(&b), "hello", 5) == 0 && memcmp(buf_ptr(&b) + 5, big, sizeof big) == 0);
    buf_free(&b);
    CHECK(b.data == NULL && b.cap == 0 && buf_size(&b) == 0);
}

static void buf_consume_drops_the_head_and_rewinds_when_empty(void)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "0123456789", 10);
    buf_consume(&b, 3);
    CHECK(b.head == 3 && buf_size(&b) == 7 && memcmp(buf_ptr(&b), "3456789", 7) == 0);
    buf_consume(&b, 7);
    CHECK(b.head == 0 && b.len == 0 && b.cap == 256);
    buf_free(&b);
}

static void buf_consume_compacts_once_the_head_passes_half(void)
{
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 200; i++) {
        uint8_t byte = (uint8_t)i;
        buf_append(&b, &byte, 1);
    }
    buf_consume(&b, 128);                       /* exactly half: not yet */
    CHECK(b.head == 128 && buf_ptr(&b)[0] == 128);
    buf_consume(&b, 1);                         /* past half: memmove to the front */
    CHECK(b.head == 0 && b.len == 71 && b.cap == 256);
    bool intact = true;
    for (int i = 0; i < 71; i++)
        intact = intact && buf_ptr(&b)[i] == 129 + i;
    CHECK(intact);
    buf_free(&b);
}

static void buf_reserve_compacts_before_growing(void)
{
    struct buf b;
    buf_init(&b);
    put_fill(&b, 'a', 100);
    put_fill(&b, 'b', 150);
    buf_consume(&b, 100);
    CHECK(b.head == 100 && b.cap - b.len == 6);
    uint8_t *p = buf_reserve(&b, 50);           /* fits once compacted */
    CHECK(b.head == 0 && b.cap == 256 && buf_size(&b) == 150);
    CHECK(p == b.data + 150 && buf_ptr(&b)[0] == 'b' && buf_ptr(&b)[149] == 'b');
    memcpy(p, "tail", 4);
    buf_commit(&b, 4);
    CHECK(buf_size(&b) == 154 && memcmp(buf_ptr(&b) + 150, "tail", 4) == 0);
    p = buf_reserve(&b, 500);                   /* must grow: 256 -> 512 -> 1024 */
    CHECK(b.cap == 1024 && p == b.data + 154 && memcmp(buf_ptr(&b) + 150, "tail", 4) == 0);
    CHECK(buf_reserve(&b, 0) == b.data + b.len);
    buf_free(&b);
}

static void buf_reset_keeps_the_allocation_up_to_keep(void)
{
    struct buf b;
    buf_init(&b);
    put_fill(&b, 'x', 300);
    buf_consume(&b, 10);
    uint8_t *data = b.data;
    buf_reset(&b, 512);                         /* cap 512 <= keep: kept */
    CHECK(b.data == data && b.cap == 512 && b.head == 0 && b.len == 0);
    put_fill(&b, 'y', 300);
    buf_reset(&b, 511);                         /* cap 512 > keep: freed */
    CHECK(b.data == NULL && b.cap == 0 && buf_size(&b) == 0);
    buf_append(&b, "again", 5);                 /* and usable afterwards */
    CHECK(buf_size(&b) == 5 && memcmp(buf_ptr(&b), "again", 5) == 0);
    buf_free(&b);
}

/* ============================================================================
 * err
 * ========================================================================== */

static void err_set_fills_errno_code_and_message(void)
{
    struct sa_err e = { 0 };
    CHECK(err_set(&e, 0, "bad_request", "field '%s' must be %d", "x", 3) == -1);
    CHECK(e.errnum == 0);
    CHECK_STREQ(e.code, "bad_request");
    CHECK_STREQ(e.msg, "field 'x' must be 3");
    e.stage = "exec";
    CHECK(err_set(&e, EACCES, NULL, "denied") == -1);   /* NULL code: the errno's name */
    CHECK(e.errnum == EACCES);
    CHECK_STREQ(e.code, "EACCES");
    CHECK(e.stage == NULL);                     /* a new error has no stage yet */
    e.stage = "exec";
    err_clear(&e);
    CHECK(e.errnum == 0 && e.code == NULL && e.msg[0] == '\0' && e.stage == NULL);
}

static void err_sys_appends_strerror(void)
{
    struct sa_err e = { 0 };
    char want[SA_ERR_MSG_MAX];
    snprintf(want, sizeof want, "open /x: %s", strerror(ENOENT));
    CHECK(err_sys(&e, ENOENT, "open %s", "/x") == -1);
    CHECK_STREQ(e.msg, want);
    CHECK_STREQ(e.code, "ENOENT");
    CHECK(e.errnum == ENOENT);

    char longpath[400];                         /* no room left for strerror */
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    CHECK(err_sys(&e, ENOENT, "open %s", longpath) == -1);
    CHECK(strlen(e.msg) == SA_ERR_MSG_MAX - 1);
}

static void err_wrap_prefixes_context_and_keeps_code_and_stage(void)
{
    struct sa_err e = { 0 };
    err_sys(&e, ENOENT, "chdir %s", "/x");
    char inner[SA_ERR_MSG_MAX], want[SA_ERR_MSG_MAX + 32];
    snprintf(inner, sizeof inner, "%s", e.msg);
    CHECK(err_wrap(&e, "spawn %d", 7) == -1);
    snprintf(want, sizeof want, "spawn 7: %s", inner);
    CHECK_STREQ(e.msg, want);
    err_wrap(&e, "exec");
    snprintf(want, sizeof want, "exec: spawn 7: %s", inner);
    CHECK_STREQ(e.msg, want);
    CHECK_STREQ(e.code, "ENOENT");
    CHECK(e.errnum == ENOENT);
    e.stage = "cwd";
    err_wrap(&e, "again");
    CHECK_STREQ(e.stage, "cwd");
    /* the old message may be an argument of the new context */
    err_set(&e, 0, "internal", "abc");
    err_wrap(&e, "[%s]", e.msg);
    CHECK_STREQ(e.msg, "[abc]: abc");
}

static void err_wrap_truncates_long_messages_safely(void)
{
    struct sa_err e = { 0 };
    char longs[1000];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';

    err_set(&e, 0, "internal", "%s", longs);    /* the message itself is cut */
    CHECK(strlen(e.msg) == SA_ERR_MSG_MAX - 1);

    err_wrap(&e, "ctx");                        /* short context, full message */
    CHECK(strlen(e.msg) == SA_ERR_MSG_MAX - 1 && strncmp(e.msg, "ctx: xxx", 8) == 0);

    err_set(&e, 0, "internal", "old");          /* context longer than the message */
    err_wrap(&e, "%s", longs);
    CHECK(strlen(e.msg) == SA_ERR_MSG_MAX - 1);
    CHECK(strspn(e.msg, "x") == SA_ERR_MSG_MAX - 1);

    /* contexts around the limit: always terminated, context first */
    for (size_t n = SA_ERR_MSG_MAX - 5; n <= SA_ERR_MSG_MAX + 1; n++) {
        err_set(&e, 0, "internal", "old");
        err_wrap(&e, "%.*s", (int)n, longs);
        size_t len = strnlen(e.msg, sizeof e.msg);
        CHECK(len < sizeof e.msg);
        CHECK(strspn(e.msg, "x") == (n < SA_ERR_MSG_MAX ? n : SA_ERR_MSG_MAX - 1));
    }

    memset(e.msg, 'y', sizeof e.msg);           /* an unterminated old message */
    err_wrap(&e, "ctx");
    CHECK(strnlen(e.msg, sizeof e.msg) == SA_ERR_MSG_MAX - 1);
}

static void err_errno_name_maps_known_values_and_never_returns_null(void)
{
    CHECK_STREQ(err_errno_name(ENOENT), "ENOENT");
    CHECK_STREQ(err_errno_name(EACCES), "EACCES");
    CHECK_STREQ(err_errno_name(ENOEXEC), "ENOEXEC");
    CHECK_STREQ(err_errno_name(EDQUOT), "EDQUOT");
    CHECK_STREQ(err_errno_name(EPROTO), "EPROTO");
    CHECK_STREQ(err_errno_name(0), "EUNKNOWN");
    CHECK_STREQ(err_errno_name(-1), "EUNKNOWN");
    CHECK_STREQ(err_errno_name(99999), "EUNKNOWN");
}

/* ============================================================================ */

#define T(fn) { #fn, fn }
static const struct check_test tests[] = {
    T(frame_peek_waits_for_a_whole_header),
    T(frame_peek_reads_a_big_endian_length),
    T(frame_peek_refuses_length_zero),
    T(peek_type_finds_the_first_key),
    T(frame_peek_refuses_oversize_length_from_the_header_alone),
    T(frame_peek_accepts_length_exactly_max_frame),
    T(decode_accepts_every_msgpack_type_the_protocol_allows),
    T(decode_accepts_map16_map32_and_empty_roots),
    T(decoded_strings_point_into_the_payload),
    T(check_refuses_every_truncation_of_a_valid_frame),
    T(frame_peek_reports_the_full_length_of_a_cut_frame),
    T(check_refuses_sizes_claimed_beyond_the_payload),
    T(hostile_example_of_section_6_is_refused_without_allocating),
    T(check_accepts_nesting_exactly_max_depth),
    T(check_refuses_nesting_beyond_max_depth),
    T(check_accepts_exactly_max_objects),
    T(check_refuses_one_object_more_than_max),
    T(check_refuses_ext_fixext_and_0xc1),
    T(check_refuses_trailing_bytes),
    T(check_refuses_map_keys_that_are_not_strings),
    T(check_refuses_a_root_that_is_not_a_map),
    T(get_ignores_non_string_keys_and_treats_nil_as_absent),
    T(obj_int_accepts_the_int64_range_only),
    T(opt_fields_leave_absent_and_nil_values_untouched),
    T(opt_fields_refuse_wrong_types_with_bad_request),
    T(parse_req_reads_type_and_id),
    T(parse_req_refuses_a_missing_or_non_string_type),
    T(parse_req_refuses_a_missing_id),
    T(parse_req_refuses_an_id_that_is_not_an_unsigned_integer),
    T(parse_exec_reads_a_full_request),
    T(parse_exec_applies_defaults_to_a_minimal_request),
    T(parse_exec_treats_nil_fields_as_absent),
    T(parse_exec_accepts_pty_true_stdin_pipe_and_sudo),
    T(parse_exec_gives_a_detached_command_dev_null_stdin_unless_asked_for_a_pipe),
    T(parse_exec_refuses_a_missing_or_empty_argv),
    T(parse_exec_refuses_argv_with_a_non_string),
    T(parse_exec_refuses_strings_with_an_embedded_nul),
    T(parse_exec_refuses_bad_env_entries),
    T(parse_exec_refuses_user_together_with_sudo),
    T(parse_exec_refuses_a_bad_stdin_value),
    T(parse_exec_refuses_pty_sizes_outside_1_to_65535),
    T(parse_exec_refuses_a_malformed_pty),
    T(parse_exec_refuses_wrongly_typed_options),
    T(encoder_frames_every_kv_type),
    T(encoder_writes_frames_back_to_back),
    T(encoder_uses_a_32_bit_length_for_large_frames),
    T(msg_hello_round_trips),
    T(msg_error_round_trips_with_and_without_id_and_stage),
    T(msg_output_round_trips),
    T(msg_exit_round_trips),
    T(encoder_frames_correctly_behind_a_consumed_head),
    T(encoder_counts_map_entries_with_the_smallest_header),
    T(encoder_counts_nested_maps_each_on_its_own),
    T(encoder_counts_maps_of_a_raw_encoder),
    T(encoder_grows_a_map_behind_a_consumed_head),
#ifndef NDEBUG   /* the asserts exist in debug builds only (the ASan suite) */
    T(encoder_asserts_on_misuse_in_debug_builds),
#endif
    T(doc_example_ping_request_is_byte_exact),
    T(doc_example_ok_reply_is_byte_exact),
    T(doc_example_exec_request_is_byte_exact),
    T(doc_example_output_event_is_byte_exact),
    T(decoding_max_objects_stays_within_48_bytes_per_object),
    T(max_size_frame_of_tiny_objects_is_refused_before_allocating),
    T(max_size_frame_within_the_object_limit_decodes_within_bound),
    T(buf_append_grows_geometrically_and_keeps_bytes),
    T(buf_consume_drops_the_head_and_rewinds_when_empty),
    T(buf_consume_compacts_once_the_head_passes_half),
    T(buf_reserve_compacts_before_growing),
    T(buf_reset_keeps_the_allocation_up_to_keep),
    T(err_set_fills_errno_code_and_message),
    T(err_sys_appends_strerror),
    T(err_wrap_prefixes_context_and_keeps_code_and_stage),
    T(err_wrap_truncates_long_messages_safely),
    T(err_errno_name_maps_known_values_and_never_returns_null),
};
#undef T

int main(int argc, char **argv)
{
    return check_run_only(tests, sizeof tests / sizeof *tests, argc > 1 ? argv[1] : NULL);
}
