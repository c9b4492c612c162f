#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define NUMBER_MAX 512      /* longest number token accepted */

/* --- UTF-8 ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (n > 0 bytes), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t b = p[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;   /* range of the second byte */
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0) lo = 0xa0;          /* overlong */
        if (b == 0xed) hi = 0x9f;          /* surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0) lo = 0x90;          /* overlong */
        if (b == 0xf4) hi = 0x8f;          /* above U+10FFFF */
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

bool json_utf8_valid(const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

static void utf8_put(struct buf *b, uint32_t cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | cp >> 6);
        u[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xe0 | cp >> 12);
        u[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | cp >> 18);
        u[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_append(b, u, n);
}

/* --- base64 (RFC 4648, standard alphabet) ---------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(struct buf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {
            b64_alphabet[v >> 18 & 63], b64_alphabet[v >> 12 & 63],
            i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=',
            i + 2 < n ? b64_alphabet[v & 63] : '=',
        };
        buf_append(b, q, 4);
    }
}

static int b64_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode s[0..n) into out (room for n * 3 / 4 + 3 bytes); padding optional.
 * Returns the decoded length, or -1. */
static ssize_t b64_decode(const uint8_t *s, size_t n, uint8_t *out)
{
    if (n % 4 == 0 && n > 0 && s[n - 1] == '=')
        n -= s[n - 2] == '=' ? 2 : 1;
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

/* --- parser --------------------------------------------------------------- */

struct jp {
    const uint8_t *p;
    size_t n;
    size_t pos;
    int depth;
    msgpack_zone *z;
    struct buf scratch;     /* string being unescaped */
    struct sa_err *e;
};

static int parse_value(struct jp *j, msgpack_object *o);

static int fail(struct jp *j, const char *what)
{
    if (j->pos >= j->n)
        return err_set(j->e, EINVAL, "bad_json", "%s at the end of the text", what);
    return err_set(j->e, EINVAL, "bad_json", "%s at byte %zu", what, j->pos + 1);
}

static void *zalloc(struct jp *j, size_t n)
{
    void *p = msgpack_zone_malloc(j->z, n ? n : 1);
    if (!p)
        abort();    /* out of memory, as xmalloc */
    return p;
}

static void skip_ws(struct jp *j)
{
    while (j->pos < j->n) {
        uint8_t c = j->p[j->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        j->pos++;
    }
}

static int peek(struct jp *j)
{
    return j->pos < j->n ? j->p[j->pos] : -1;
}

static int parse_literal(struct jp *j, const char *word, msgpack_object *o)
{
    size_t n = strlen(word);
    if (j->n - j->pos < n || memcmp(j->p + j->pos, word, n) != 0)
        return fail(j, "invalid literal");
    j->pos += n;
    if (word[0] == 'n') {
        o->type = MSGPACK_OBJECT_NIL;
    } else {
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = word[0] == 't';
    }
    return 0;
}

/* Four hex digits at pos. */
static int parse_hex4(struct jp *j, uint32_t *v)
{
    if (j->n - j->pos < 4)
        return fail(j, "truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = j->p[j->pos + (size_t)i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return fail(j, "bad hex digit in \\u escape");
        *v = *v << 4 | (uint32_t)d;
    }
    j->pos += 4;
    return 0;
}

/* After "\u": one code point, joining a surrogate pair. */
static int parse_u_escape(struct jp *j)
{
    uint32_t cp = 0, lo = 0;
    if (parse_hex4(j, &cp) < 0)
        return -1;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return fail(j, "lone low surrogate in \\u escape");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->n - j->pos < 2 || j->p[j->pos] != '\\' || j->p[j->pos + 1] != 'u')
            return fail(j, "high surrogate not followed by a low surrogate");
        j->pos += 2;
        if (parse_hex4(j, &lo) < 0)
            return -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail(j, "high surrogate not followed by a low surrogate");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    utf8_put(&j->scratch, cp);
    return 0;
}

static int parse_escape(struct jp *j)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (j->pos >= j->n)
        return fail(j, "truncated escape");
    uint8_t c = j->p[j->pos++];
    if (c == 'u')
        return parse_u_escape(j);
    const char *k = c ? strchr(from, c) : NULL;
    if (!k) {
        j->pos--;
        return fail(j, "invalid escape");
    }
    buf_append(&j->scratch, &to[k - from], 1);
    return 0;
}

/* A string into j->scratch; pos is just after the opening quote. */
static int parse_chars(struct jp *j)
{
    buf_reset(&j->scratch, 1u << 20);
    for (;;) {
        if (j->pos >= j->n)
            return fail(j, "unterminated string");
        uint8_t c = j->p[j->pos];
        if (c == '"') {
            j->pos++;
            return 0;
        }
        if (c == '\\') {
            j->pos++;
            if (parse_escape(j) < 0)
                return -1;
            continue;
        }
        if (c < 0x20)
            return fail(j, "raw control character in string");
        size_t k = utf8_seq(j->p + j->pos, j->n - j->pos);
        if (k == 0)
            return fail(j, "invalid UTF-8 in string");
        buf_append(&j->scratch, j->p + j->pos, k);
        j->pos += k;
    }
}

static int parse_string(struct jp *j, msgpack_object *o)
{
    j->pos++;   /* '"' */
    if (parse_chars(j) < 0)
        return -1;
    size_t n = buf_size(&j->scratch);
    if (n > UINT32_MAX)
        return fail(j, "string too long");
    char *s = zalloc(j, n);
    if (n)
        memcpy(s, buf_ptr(&j->scratch), n);
    o->type = MSGPACK_OBJECT_STR;
    o->via.str.ptr = s;
    o->via.str.size = (uint32_t)n;
    return 0;
}

/* Digits of an integer: magnitude with overflow check. */
static bool int_magnitude(const uint8_t *p, size_t n, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t d = (uint64_t)(p[i] - '0');
        if (*v > (UINT64_MAX - d) / 10)
            return false;
        *v = *v * 10 + d;
    }
    return true;
}

static size_t skip_digits(struct jp *j)
{
    size_t start = j->pos;
    while (j->pos < j->n && j->p[j->pos] >= '0' && j->p[j->pos] <= '9')
        j->pos++;
    return j->pos - start;
}

static int number_int(struct jp *j, size_t start, bool neg, msgpack_object *o)
{
    size_t d0 = start + (neg ? 1 : 0);
    uint64_t mag;
    if (!int_magnitude(j->p + d0, j->pos - d0, &mag) || (neg && mag > (uint64_t)INT64_MAX + 1)) {
        j->pos = start;
        return fail(j, "integer outside the int64/uint64 range");
    }
    if (neg && mag > 0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = mag;
    }
    return 0;
}

static int number_float(struct jp *j, size_t start, msgpack_object *o)
{
    char tok[NUMBER_MAX + 1];
    size_t len = j->pos - start;
    if (len > NUMBER_MAX) {
        j->pos = start;
        return fail(j, "number too long");
    }
    memcpy(tok, j->p + start, len);
    tok[len] = '\0';
    double v = strtod(tok, NULL);
    if (isinf(v)) {
        j->pos = start;
        return fail(j, "number outside the float64 range");
    }
    o->type = MSGPACK_OBJECT_FLOAT64;
    o->via.f64 = v;
    return 0;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(struct jp *j, msgpack_object *o)
{
    size_t start = j->pos;
    bool neg = peek(j) == '-', is_float = false;
    if (neg)
        j->pos++;
    if (peek(j) == '0')
        j->pos++;
    else if (skip_digits(j) == 0)
        return fail(j, "invalid number");
    if (peek(j) == '.') {
        j->pos++;
        if (skip_digits(j) == 0)
            return fail(j, "digits expected after '.'");
        is_float = true;
    }
    if (peek(j) == 'e' || peek(j) == 'E') {
        j->pos++;
        if (peek(j) == '+' || peek(j) == '-')
            j->pos++;
        if (skip_digits(j) == 0)
            return fail(j, "digits expected in exponent");
        is_float = true;
    }
    return is_float ? number_float(j, start, o) : number_int(j, start, neg, o);
}

/* Growable element list of one container level, moved into the zone at the end. */
struct vec {
    void *items;
    size_t n, cap, size;
};

static void *vec_push(struct vec *v)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 8;
        v->items = xrealloc(v->items, v->cap * v->size);
    }
    return (char *)v->items + v->n++ * v->size;
}

static void *vec_to_zone(struct jp *j, struct vec *v)
{
    void *p = zalloc(j, v->n * v->size);
    if (v->n)
        memcpy(p, v->items, v->n * v->size);
    return p;
}

static int enter(struct jp *j)
{
    if (++j->depth > JSON_MAX_DEPTH)
        return fail(j, "nesting deeper than 64");
    j->pos++;   /* '[' or '{' */
    skip_ws(j);
    return 0;
}

/* After an element: 1 for ',', 0 for the closing bracket, -1 otherwise. */
static int next_or_close(struct jp *j, char close)
{
    skip_ws(j);
    int c = peek(j);
    if (c == ',') {
        j->pos++;
        skip_ws(j);
        return 1;
    }
    if (c == close) {
        j->pos++;
        j->depth--;
        return 0;
    }
    return fail(j, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
}

static int parse_array(struct jp *j, msgpack_object *o)
{
    struct vec v = { .size = sizeof(msgpack_object) };
    int r = enter(j);
    if (r == 0 && peek(j) == ']') {
        j->pos++;
        j->depth--;
    } else {
        int more = r == 0 ? 1 : -1;
        while (more > 0)
            more = parse_value(j, vec_push(&v)) < 0 ? -1 : next_or_close(j, ']');
        r = more;
    }
    if (r == 0 && v.n > UINT32_MAX)
        r = fail(j, "array too long");
    if (r == 0) {
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.ptr = vec_to_zone(j, &v);
        o->via.array.size = (uint32_t)v.n;
    }
    free(v.items);
    return r;
}

static int parse_member(struct jp *j, msgpack_object_kv *kv)
{
    if (peek(j) != '"')
        return fail(j, "expected a string key");
    if (parse_string(j, &kv->key) < 0)
        return -1;
    skip_ws(j);
    if (peek(j) != ':')
        return fail(j, "expected ':'");
    j->pos++;
    skip_ws(j);
    return parse_value(j, &kv->val);
}

/* {"$base64":"..."} -> bin, in place. */
static int as_base64(struct jp *j, msgpack_object *o, size_t at)
{
    const msgpack_object *v = &o->via.map.ptr[0].val;
    if (v->type != MSGPACK_OBJECT_STR) {
        j->pos = at;
        return fail(j, "\"$base64\" needs a string value");
    }
    uint8_t *out = zalloc(j, (size_t)v->via.str.size / 4 * 3 + 3);
    ssize_t n = b64_decode((const uint8_t *)v->via.str.ptr, v->via.str.size, out);
    if (n < 0) {
        j->pos = at;
        return fail(j, "invalid base64 in the \"$base64\" object starting");
    }
    o->type = MSGPACK_OBJECT_BIN;
    o->via.bin.ptr = (const char *)out;
    o->via.bin.size = (uint32_t)n;
    return 0;
}

static bool is_base64_object(const msgpack_object *o)
{
    if (o->via.map.size != 1)
        return false;
    const msgpack_object *k = &o->via.map.ptr[0].key;
    return k->via.str.size == 7 && memcmp(k->via.str.ptr, "$base64", 7) == 0;
}

static int parse_object(struct jp *j, msgpack_object *o)
{
    struct vec v = { .size = sizeof(msgpack_object_kv) };
    size_t at = j->pos;
    int r = enter(j);
    if (r == 0 && peek(j) == '}') {
        j->pos++;
        j->depth--;
    } else {
        int more = r == 0 ? 1 : -1;
        while (more > 0)
            more = parse_member(j, vec_push(&v)) < 0 ? -1 : next_or_close(j, '}');
        r = more;
    }
    if (r == 0 && v.n > UINT32_MAX)
        r = fail(j, "object too long");
    if (r == 0) {
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.ptr = vec_to_zone(j, &v);
        o->via.map.size = (uint32_t)v.n;
        if (is_base64_object(o))
            r = as_base64(j, o, at);
    }
    free(v.items);
    return r;
}

static int parse_value(struct jp *j, msgpack_object *o)
{
    memset(o, 0, sizeof *o);
    skip_ws(j);
    switch (peek(j)) {
    case '{': return parse_object(j, o);
    case '[': return parse_array(j, o);
    case '"': return parse_string(j, o);
    case 't': return parse_literal(j, "true", o);
    case 'f': return parse_literal(j, "false", o);
    case 'n': return parse_literal(j, "null", o);
    case -1: return fail(j, "value expected");
    default:
        if (peek(j) == '-' || (peek(j) >= '0' && peek(j) <= '9'))
            return parse_number(j, o);
        return fail(j, "unexpected character");
    }
}

int json_parse(const char *p, size_t n, msgpack_zone *zone, msgpack_object *out,
               struct sa_err *e)
{
    struct jp j = { .p = (const uint8_t *)p, .n = n, .z = zone, .e = e };
    buf_init(&j.scratch);
    int r = parse_value(&j, out);
    if (r == 0) {
        skip_ws(&j);
        if (j.pos != j.n)
            r = fail(&j, "trailing characters after the value");
    }
    buf_free(&j.scratch);
    return r;
}

/* --- writer --------------------------------------------------------------- */

static void put(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

/* A JSON string of valid UTF-8 bytes. */
static void write_string(struct buf *b, const uint8_t *p, size_t n)
{
    buf_append(b, "\"", 1);
    size_t run = 0;     /* bytes copied verbatim, pending */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        buf_append(b, p + i - run, run);
        run = 0;
        char esc[8];
        switch (c) {
        case '"': put(b, "\\\""); break;
        case '\\': put(b, "\\\\"); break;
        case '\b': put(b, "\\b"); break;
        case '\f': put(b, "\\f"); break;
        case '\n': put(b, "\\n"); break;
        case '\r': put(b, "\\r"); break;
        case '\t': put(b, "\\t"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(b, esc);
        }
    }
    if (run)    /* msgpack gives an empty str a NULL pointer: no arithmetic on it */
        buf_append(b, p + n - run, run);
    buf_append(b, "\"", 1);
}

static void write_bytes(struct buf *b, const char *p, uint32_t n)
{
    if (json_utf8_valid(p, n)) {
        write_string(b, (const uint8_t *)p, n);
        return;
    }
    put(b, "{\"$base64\":\"");
    b64_encode(b, (const uint8_t *)p, n);
    put(b, "\"}");
}

/* Shortest %g text that reads back as v; always recognisable as a float. */
static void write_float(struct buf *b, double v, bool single)
{
    char s[40];
    if (!isfinite(v)) {
        put(b, "null");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, v);
        double back = strtod(s, NULL);
        if (single ? (float)back == (float)v : back == v)
            break;
    }
    /* %g turns 100 into "1e+02": plain digits read better below 1e17 */
    char *exp = strchr(s, 'e');
    long x = exp ? strtol(exp + 1, NULL, 10) : -1;
    if (x >= 0 && x < 17) {
        int prec = (int)(exp - s) - (s[0] == '-') - (strchr(s, '.') ? 1 : 0);
        int decimals = prec - 1 - (int)x;
        snprintf(s, sizeof s, "%.*f", decimals > 0 ? decimals : 0, v);
    }
    put(b, s);
    if (!strpbrk(s, ".eE"))
        put(b, ".0");
}

static void write_key(struct buf *b, const msgpack_object *k)
{
    if (k->type == MSGPACK_OBJECT_STR && json_utf8_valid(k->via.str.ptr, k->via.str.size)) {
        write_string(b, (const uint8_t *)k->via.str.ptr, k->via.str.size);
        return;
    }
    struct buf tmp;
    buf_init(&tmp);
    json_write(&tmp, k);
    write_string(b, buf_ptr(&tmp), buf_size(&tmp));
    buf_free(&tmp);
}

static void write_array(struct buf *b, const msgpack_object_array *a)
{
    buf_append(b, "[", 1);
    for (uint32_t i = 0; i < a->size; i++) {
        if (i)
            buf_append(b, ",", 1);
        json_write(b, &a->ptr[i]);
    }
    buf_append(b, "]", 1);
}

static void write_map(struct buf *b, const msgpack_object_map *m)
{
    buf_append(b, "{", 1);
    for (uint32_t i = 0; i < m->size; i++) {
        if (i)
            buf_append(b, ",", 1);
        write_key(b, &m->ptr[i].key);
        buf_append(b, ":", 1);
        json_write(b, &m->ptr[i].val);
    }
    buf_append(b, "}", 1);
}

void json_write(struct buf *b, const msgpack_object *o)
{
    char num[32];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: put(b, "null"); break;
    case MSGPACK_OBJECT_BOOLEAN: put(b, o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof num, "%" PRIu64, o->via.u64);
        put(b, num);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof num, "%" PRId64, o->via.i64);
        put(b, num);
        break;
    case MSGPACK_OBJECT_FLOAT32: write_float(b, o->via.f64, true); break;
    case MSGPACK_OBJECT_FLOAT64: write_float(b, o->via.f64, false); break;
    case MSGPACK_OBJECT_STR: write_bytes(b, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: write_bytes(b, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY: write_array(b, &o->via.array); break;
    case MSGPACK_OBJECT_MAP: write_map(b, &o->via.map); break;
    default: put(b, "null"); break;     /* ext: refused by wire_check anyway */
    }
}
