#include "wire.h"

#include <assert.h>
#include <string.h>

int wire_frame_peek(const uint8_t *p, size_t n, uint32_t max_frame, uint32_t *payload_len,
                    struct sa_err *e)
{
    if (n < WIRE_HDR_LEN)
        return 0;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (len == 0)
        return err_set(e, 0, "bad_frame", "frame length is 0");
    if (len > max_frame)
        return err_set(e, 0, "frame_too_large", "frame of %u bytes exceeds the maximum of %u",
                       len, max_frame);
    *payload_len = len;
    return 1;
}

/* A str header at p[0..n): its length in *len and header size, or 0. */
static size_t str_hdr(const uint8_t *p, size_t n, size_t *len)
{
    if (n >= 1 && (p[0] & 0xe0) == 0xa0) {
        *len = p[0] & 0x1f;
        return 1;
    }
    if (n >= 2 && p[0] == 0xd9) {
        *len = p[1];
        return 2;
    }
    return 0;
}

int wire_peek_type(const uint8_t *p, size_t n, const char **t, size_t *tn)
{
    size_t h, len;
    if (n >= 1 && (p[0] & 0xf0) == 0x80 && (p[0] & 0x0f) > 0)
        h = 1;
    else if (n >= 3 && p[0] == 0xde)
        h = 3;
    else if (n >= 5 && p[0] == 0xdf)
        h = 5;
    else
        return 0;
    size_t k = str_hdr(p + h, n - h, &len);
    if (!k || len != 4 || n - h - k < 4 || memcmp(p + h + k, "type", 4) != 0)
        return 0;
    h += k + 4;
    k = str_hdr(p + h, n - h, &len);
    if (!k || n - h - k < len)
        return 0;
    *t = (const char *)p + h + k;
    *tn = len;
    return 1;
}

/* --- structural validation ------------------------------------------------ */

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Parse one object header at p[0..left). Sets *hdr (bytes of header plus any
 * fixed payload), *body (variable payload bytes: str/bin), *children (elements
 * that follow: 2n for maps, n for arrays). Returns -1 on an invalid byte. */
static int mp_header(const uint8_t *p, size_t left, size_t *hdr, uint64_t *body,
                     uint64_t *children)
{
    uint8_t b = p[0];
    *body = 0;
    *children = 0;
    *hdr = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if (b >= 0x80 && b <= 0x8f) { *children = 2u * (b & 0x0f); return 0; }
    if (b >= 0x90 && b <= 0x9f) { *children = b & 0x0f; return 0; }
    if (b >= 0xa0 && b <= 0xbf) { *body = b & 0x1f; return 0; }
    int lenbytes = 0, fixed = 0;
    enum { BODY, ARRAY, MAP, FIXED } kind = FIXED;
    switch (b) {
    case 0xc4: case 0xd9: lenbytes = 1; kind = BODY; break;
    case 0xc5: case 0xda: lenbytes = 2; kind = BODY; break;
    case 0xc6: case 0xdb: lenbytes = 4; kind = BODY; break;
    case 0xca: fixed = 4; break;
    case 0xcb: fixed = 8; break;
    case 0xcc: case 0xd0: fixed = 1; break;
    case 0xcd: case 0xd1: fixed = 2; break;
    case 0xce: case 0xd2: fixed = 4; break;
    case 0xcf: case 0xd3: fixed = 8; break;
    case 0xdc: lenbytes = 2; kind = ARRAY; break;
    case 0xdd: lenbytes = 4; kind = ARRAY; break;
    case 0xde: lenbytes = 2; kind = MAP; break;
    case 0xdf: lenbytes = 4; kind = MAP; break;
    default: return -1;   /* 0xc1, ext and fixext types */
    }
    size_t need = 1 + (size_t)lenbytes + (size_t)fixed;
    if (need > left)
        return -1;
    *hdr = need;
    if (lenbytes) {
        uint64_t n = be(p + 1, lenbytes);
        if (kind == BODY) *body = n;
        else if (kind == ARRAY) *children = n;
        else *children = 2 * n;
    }
    return 0;
}

/* wire_check's walk, with caps on the objects and the nesting (at most
 * WIRE_WALK_DEPTH). The encoder's own check in debug builds has no cap on the
 * objects (a big reply may hold more than a request may) and nests as deep as
 * `sandboxctl encode` packs JSON (client/json.h JSON_MAX_DEPTH, 64). */
#define WIRE_WALK_DEPTH 64
static int wire_walk(const uint8_t *p, size_t n, uint64_t max_objects, int max_depth,
                     struct sa_err *e)
{
    uint64_t pending[WIRE_WALK_DEPTH + 1];  /* elements still owed per level */
    bool in_map[WIRE_WALK_DEPTH + 1];       /* the level is a map: even elements are keys */
    int depth = 0;
    size_t pos = 0;
    uint64_t objects = 0;

    if (n == 0)
        return err_set(e, 0, "bad_frame", "empty payload");
    if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
        return err_set(e, 0, "bad_frame", "payload is not a msgpack map");
    pending[0] = 1;
    in_map[0] = false;
    while (depth >= 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        if (pos >= n)
            return err_set(e, 0, "bad_frame", "payload truncated at byte %zu", pos);
        size_t hdr;
        uint64_t body, children;
        if (mp_header(p + pos, n - pos, &hdr, &body, &children) < 0)
            return err_set(e, 0, "bad_frame", "invalid or unsupported msgpack byte 0x%02x at %zu",
                           p[pos], pos);
        /* a map or array is a level of nesting even when it is empty */
        uint8_t b = p[pos];
        bool container = (b >= 0x80 && b <= 0x9f) ||      /* fixmap, fixarray */
                         (b >= 0xdc && b <= 0xdf);         /* array16/32, map16/32 */
        bool is_map = (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
        bool is_str = (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb);
        if (in_map[depth] && pending[depth] % 2 == 0 && !is_str)
            return err_set(e, 0, "bad_frame", "map key at byte %zu is not a string", pos);
        pending[depth]--;
        pos += hdr;
        if (++objects > max_objects)
            return err_set(e, 0, "bad_frame", "more than %llu objects in one frame",
                           (unsigned long long)max_objects);
        if (body > n - pos)
            return err_set(e, 0, "bad_frame", "string of %llu bytes overruns the frame",
                           (unsigned long long)body);
        pos += body;
        if (container && depth + 1 > max_depth)
            return err_set(e, 0, "bad_frame", "nesting deeper than %d", max_depth);
        if (children) {
            /* every element takes at least one byte */
            if (children > n - pos)
                return err_set(e, 0, "bad_frame",
                               "container claims %llu elements, %zu bytes remain",
                               (unsigned long long)children, n - pos);
            pending[++depth] = children;
            in_map[depth] = is_map;
        }
    }
    if (pos != n)
        return err_set(e, 0, "bad_frame", "%zu trailing bytes after the message", n - pos);
    return 0;
}

int wire_check(const uint8_t *p, size_t n, struct sa_err *e)
{
    return wire_walk(p, n, WIRE_MAX_OBJECTS, WIRE_MAX_DEPTH, e);
}

int wire_decode(const uint8_t *p, size_t n, msgpack_zone *zone, msgpack_object *root,
                struct sa_err *e)
{
    if (wire_check(p, n, e) < 0)
        return -1;
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack((const char *)p, n, &off, zone, root);
    if (r != MSGPACK_UNPACK_SUCCESS || off != n || root->type != MSGPACK_OBJECT_MAP)
        return err_set(e, 0, "bad_frame", "msgpack decoding failed (%d)", (int)r);
    return 0;
}

/* --- reading fields ------------------------------------------------------- */

bool wire_obj_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

const msgpack_object *wire_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (wire_obj_is(&kv->key, key))
            return kv->val.type == MSGPACK_OBJECT_NIL ? NULL : &kv->val;
    }
    return NULL;
}

bool wire_obj_str(const msgpack_object *o, const char **s, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return false;
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return true;
}

bool wire_obj_bytes(const msgpack_object *o, const char **s, size_t *n)
{
    if (o && o->type == MSGPACK_OBJECT_BIN) {
        *s = o->via.bin.ptr;
        *n = o->via.bin.size;
        return true;
    }
    return wire_obj_str(o, s, n);
}

bool wire_obj_uint(const msgpack_object *o, uint64_t *v)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *v = o->via.u64;
    return true;
}

bool wire_obj_int(const msgpack_object *o, int64_t *v)
{
    if (!o)
        return false;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    return false;
}

bool wire_obj_bool(const msgpack_object *o, bool *v)
{
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *v = o->via.boolean;
    return true;
}

char *wire_obj_cstr(const msgpack_object *o, msgpack_zone *zone)
{
    const char *s;
    size_t n;
    if (!wire_obj_str(o, &s, &n) || memchr(s, '\0', n))
        return NULL;
    char *c = msgpack_zone_malloc(zone, n + 1);
    if (!c)
        return NULL;
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

static int bad_field(struct sa_err *e, const char *key, const char *want)
{
    return err_set(e, 0, "bad_request", "field '%s' must be %s", key, want);
}

int wire_opt_uint(const msgpack_object *map, const char *key, uint64_t *v, struct sa_err *e)
{
    const msgpack_object *o = wire_get(map, key);
    if (o && !wire_obj_uint(o, v))
        return bad_field(e, key, "an unsigned integer");
    return 0;
}

int wire_opt_int(const msgpack_object *map, const char *key, int64_t *v, struct sa_err *e)
{
    const msgpack_object *o = wire_get(map, key);
    if (o && !wire_obj_int(o, v))
        return bad_field(e, key, "an integer");
    return 0;
}

int wire_opt_bool(const msgpack_object *map, const char *key, bool *v, struct sa_err *e)
{
    const msgpack_object *o = wire_get(map, key);
    if (o && !wire_obj_bool(o, v))
        return bad_field(e, key, "a boolean");
    return 0;
}

int wire_opt_cstr(const msgpack_object *map, const char *key, msgpack_zone *zone, char **v,
                  struct sa_err *e)
{
    const msgpack_object *o = wire_get(map, key);
    if (!o)
        return 0;
    char *s = wire_obj_cstr(o, zone);
    if (!s)
        return bad_field(e, key, "a string without NUL bytes");
    *v = s;
    return 0;
}

int wire_opt_bytes(const msgpack_object *map, const char *key, const char **p, size_t *n,
                   struct sa_err *e)
{
    const msgpack_object *o = wire_get(map, key);
    if (o && !wire_obj_bytes(o, p, n))
        return bad_field(e, key, "bin or str");
    return 0;
}

/* --- writing frames ------------------------------------------------------- */

static int wire_write_cb(void *data, const char *p, size_t n)
{
    buf_append(data, p, n);
    return 0;
}

void wire_enc_raw(struct wire_enc *w, struct buf *b)
{
    w->b = b;
    w->start = 0;
    w->depth = w->floor = 0;
    msgpack_packer_init(&w->pk, b, wire_write_cb);
}

void wire_begin(struct wire_enc *w, struct buf *b)
{
    wire_enc_raw(w, b);
    buf_reserve(b, WIRE_HDR_LEN);
    w->start = buf_size(b);     /* relative to head: survives compaction */
    buf_commit(b, WIRE_HDR_LEN);
    w->floor = wire_map_begin(w);
}

unsigned wire_map_begin(struct wire_enc *w)
{
    assert(w->depth < WIRE_ENC_DEPTH);
    w->map_at[w->depth] = buf_size(w->b);   /* relative to head, as start */
    w->map_n[w->depth] = 0;
    uint8_t fixmap0 = 0x80;                  /* rewritten by wire_map_end */
    buf_append(w->b, &fixmap0, 1);
    return ++w->depth;
}

uint32_t wire_map_entries(const struct wire_enc *w)
{
    assert(w->depth > 0);
    return w->map_n[w->depth - 1];
}

/* Write the innermost open map's header for its count. */
static void wire_map_close(struct wire_enc *w)
{
    uint32_t n = w->map_n[--w->depth];
    size_t at = w->map_at[w->depth];
    size_t grow = n <= 15 ? 0 : n <= 0xffff ? 2 : 4;
    if (grow) {
        buf_reserve(w->b, grow);            /* may move the data: pointers after */
        buf_commit(w->b, grow);
        uint8_t *p = buf_ptr(w->b) + at;
        memmove(p + 1 + grow, p + 1, buf_size(w->b) - at - 1 - grow);
    }
    uint8_t *p = buf_ptr(w->b) + at;
    if (grow == 0) {
        p[0] = (uint8_t)(0x80 | n);
    } else if (grow == 2) {
        p[0] = 0xde;
        p[1] = (uint8_t)(n >> 8);
        p[2] = (uint8_t)n;
    } else {
        p[0] = 0xdf;
        p[1] = (uint8_t)(n >> 24);
        p[2] = (uint8_t)(n >> 16);
        p[3] = (uint8_t)(n >> 8);
        p[4] = (uint8_t)n;
    }
}

void wire_map_end(struct wire_enc *w, unsigned depth)
{
    /* maps close innermost first; a frame's own map is wire_end's */
    assert(depth == w->depth && depth > w->floor);
    (void)depth;
    wire_map_close(w);
}

void wire_end(struct wire_enc *w)
{
    assert(w->floor == 1 && w->depth == 1);   /* a frame, its nested maps all closed */
    wire_map_close(w);
    size_t len = buf_size(w->b) - w->start - WIRE_HDR_LEN;
    /* no reply or event may exceed the peer's max_frame (PROTOCOL.md §1) */
    assert(w->b->frame_max == 0 || len <= w->b->frame_max);
#ifndef NDEBUG
    {   /* the counts and what was written agree: one well-formed map */
        struct sa_err e;
        assert(wire_walk(buf_ptr(w->b) + w->start + WIRE_HDR_LEN, len, UINT64_MAX,
                         WIRE_WALK_DEPTH, &e) == 0);
    }
#endif
    uint8_t *h = buf_ptr(w->b) + w->start;
    h[0] = (uint8_t)(len >> 24);
    h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
}

void wire_str(struct wire_enc *w, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&w->pk, n);
    msgpack_pack_str_body(&w->pk, s, n);
}

void wire_key_n(struct wire_enc *w, const char *k, size_t n)
{
    assert(w->depth > 0);       /* a key belongs to an open map */
    w->map_n[w->depth - 1]++;
    msgpack_pack_str(&w->pk, n);
    msgpack_pack_str_body(&w->pk, k, n);
}

void wire_key(struct wire_enc *w, const char *k)
{
    wire_key_n(w, k, strlen(k));
}

void wire_kv_str(struct wire_enc *w, const char *k, const char *v)
{
    wire_key(w, k);
    wire_str(w, v);
}

void wire_kv_strn(struct wire_enc *w, const char *k, const char *v, size_t n)
{
    wire_key(w, k);
    msgpack_pack_str(&w->pk, n);
    msgpack_pack_str_body(&w->pk, v, n);
}

void wire_kv_uint(struct wire_enc *w, const char *k, uint64_t v)
{
    wire_key(w, k);
    msgpack_pack_uint64(&w->pk, v);
}

void wire_kv_int(struct wire_enc *w, const char *k, int64_t v)
{
    wire_key(w, k);
    msgpack_pack_int64(&w->pk, v);
}

void wire_kv_bool(struct wire_enc *w, const char *k, bool v)
{
    wire_key(w, k);
    if (v)
        msgpack_pack_true(&w->pk);
    else
        msgpack_pack_false(&w->pk);
}

void wire_kv_bin(struct wire_enc *w, const char *k, const void *p, size_t n)
{
    wire_key(w, k);
    msgpack_pack_bin(&w->pk, n);
    msgpack_pack_bin_body(&w->pk, p, n);
}

void wire_kv_nil(struct wire_enc *w, const char *k)
{
    wire_key(w, k);
    msgpack_pack_nil(&w->pk);
}
