/* Unit tests of gateway/ndjson.c (the output lines: json-c for ASCII text,
 * jansson for the rest) with gateway/utf8.c in front of it, as the streams
 * use them: a differential test against jansson's decoder. Every line must
 * be one compact JSON object {"stream","data"} in ASCII (the SDK decodes each
 * network chunk on its own) without a raw newline or control byte, and
 * decode to exactly the stream's name and the cleaned text — for every byte
 * value, quotes, backslashes, slashes, controls, NUL, DEL, U+2028/U+2029,
 * long runs, and characters split across chunks at every point. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "gw.h"

static const char *const NAMES[2] = { "stdout", "stderr" };

/* line decodes to {"stream": name, "data": text[0..n)} and nothing else. */
static int line_decodes_to(const char *line, size_t linen, const char *name, const uint8_t *text,
                           size_t n)
{
    json_error_t err;
    if (memchr(line, '\n', linen)) {
        printf("    a raw newline in the line\n");
        return 0;
    }
    for (size_t i = 0; i < linen; i++)
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x80) {
            printf("    a raw byte 0x%02x in the line\n", (unsigned char)line[i]);
            return 0;
        }
    json_t *j = json_loadb(line, linen, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        printf("    not JSON: %s (line of %zu bytes)\n", err.text, linen);
        return 0;
    }
    json_t *st = json_object_get(j, "stream"), *d = json_object_get(j, "data");
    int ok = json_is_object(j) && json_object_size(j) == 2 && json_is_string(st) &&
             strcmp(json_string_value(st), name) == 0 && json_is_string(d) &&
             json_string_length(d) == n && (n == 0 || memcmp(json_string_value(d), text, n) == 0);
    if (!ok)
        printf("    decoded to something else (%zu bytes of data wanted)\n", n);
    json_decref(j);
    return ok;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t below)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % below);
}

/* Pieces that random inputs are made of: what JSON escapes, what it does
 * not, multi-byte characters (cut anywhere by the chunking) and bytes that
 * are not UTF-8. */
static const char *const PIECES[] = {
    "\"", "\\", "/", "\\u0041", "\n", "\r", "\t", "\b", "\f", "\x01", "\x1f", "\x7f",
    "a", "plain text ", "</script>", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
    "\xe2\x80\xa8", "\xe2\x80\xa9", "\xef\xbf\xbd", "\xef\xbb\xbf", "\xc0\x80", "\xed\xa0\x80",
    "\xf4\x90\x80\x80", "\xff", "\x80", "\xe4\xb8", "\xf0\x9f",
};

static size_t random_input(uint8_t *p, size_t max)
{
    size_t n = 0, want = rnd((uint32_t)max);
    int kind = (int)rnd(3);
    while (n < want) {
        if (kind == 0) {                    /* any byte at all */
            p[n++] = (uint8_t)rnd(256);
        } else if (kind == 1) {             /* pieces */
            const char *s = PIECES[rnd(sizeof PIECES / sizeof *PIECES)];
            size_t k = strlen(s);
            if (n + k > max)
                break;
            memcpy(p + n, s, k);
            n += k;
        } else {                            /* long runs of one byte */
            size_t k = 1 + rnd(4096);
            uint8_t b = (uint8_t)rnd(256);
            while (k-- > 0 && n < max)
                p[n++] = b;
        }
    }
    return n;
}

/* Stream p as the NDJSON streams do: chunks of step bytes (of random sizes
 * up to step when !fixed), cleaned per stream by utf8_view, one line each. The lines decode to the chunks'
 * text, and the texts put together are utf8_clean of the whole input. */
static int streamed_lines_decode_to_the_text(struct ndjson *e, const uint8_t *p, size_t n,
                                             int stream, size_t step, bool fixed)
{
    struct u8tail t = { .n = 0 }, whole_t = { .n = 0 };
    struct buf scratch, got, want;
    buf_init(&scratch);
    buf_init(&got);
    buf_init(&want);
    utf8_clean(&whole_t, p, n, true, &want);
    int ok = 1;
    size_t i = 0;
    do {
        size_t k = fixed ? step : 1 + rnd((uint32_t)step);
        if (k > n - i)
            k = n - i;
        bool final = i + k == n;
        size_t len, linen;
        bool ascii;
        const uint8_t *text = utf8_view(&t, n ? p + i : NULL, k, final, &scratch, &len, &ascii);
        if (len > 0) {
            const char *line = ndjson_line(e, NAMES[stream], text, len, ascii, &linen);
            ok &= line_decodes_to(line, linen, NAMES[stream], text, len);
            buf_append(&got, text, len);
        }
        i += k;
    } while (i < n && ok);
    ok &= t.n == 0 && buf_size(&got) == buf_size(&want) &&
          (buf_size(&got) == 0 || memcmp(buf_ptr(&got), buf_ptr(&want), buf_size(&got)) == 0);
    buf_free(&scratch);
    buf_free(&got);
    buf_free(&want);
    return ok;
}

static void every_byte_value_round_trips(void)
{
    struct ndjson *e = ndjson_new();
    for (int b = 0; b < 256; b++) {
        uint8_t one = (uint8_t)b;
        CHECK(streamed_lines_decode_to_the_text(e, &one, 1, b & 1, 1, true));
    }
    uint8_t all[256];
    for (int b = 0; b < 256; b++)
        all[b] = (uint8_t)b;
    for (size_t step = 1; step <= 257; step++)
        CHECK(streamed_lines_decode_to_the_text(e, all, sizeof all, 0, step, true));
    ndjson_free(e);
}

static void random_inputs_in_random_chunks_round_trip(void)
{
    static uint8_t p[4 * GW_LINE_RAW];
    struct ndjson *e = ndjson_new();
    for (int round = 0; round < 2000; round++) {
        size_t n = random_input(p, round % 10 == 0 ? sizeof p : 300);
        size_t chunk = 1 + rnd(round % 3 == 0 ? 8 : GW_LINE_RAW);
        int ok = streamed_lines_decode_to_the_text(e, p, n, round & 1, chunk, false);
        if (!ok)
            printf("    round %d: %zu bytes in chunks up to %zu\n", round, n, chunk);
        CHECK(ok);
    }
    ndjson_free(e);
}

static void long_lines_round_trip(void)
{
    static uint8_t p[GW_LINE_RAW];
    struct ndjson *e = ndjson_new();
    static const uint8_t fill[] = { 'a', '"', '\\', 0x01, 0 };
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(p, fill[f], sizeof p);
        CHECK(streamed_lines_decode_to_the_text(e, p, sizeof p, 0, sizeof p, true));
    }
    ndjson_free(e);
}

/* The exact bytes: compact, keys in this order, '/' and DEL raw, only what
 * JSON requires escaped — json-c's short escapes and \u00xx for ASCII,
 * jansson's \uXXXX (a surrogate pair above U+FFFF) for the rest. */
static void lines_are_compact_ascii_with_only_the_required_escapes(void)
{
    static const char ascii[] = "a/b\"c\\d\n\t\x01\x7f";
    static const char want_ascii[] = "{\"stream\":\"stderr\",\"data\":\"a/b\\\"c\\\\d\\n\\t\\u0001\x7f\"}";
    static const char uni[] = "/\x01 \xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80";
    static const char want_uni[] =
        "{\"stream\":\"stdout\",\"data\":\"/\\u0001 \\u00E9 \\u2028 \\uD83D\\uDE00\"}";
    struct ndjson *e = ndjson_new();
    size_t linen;
    const char *line =
        ndjson_line(e, "stderr", (const uint8_t *)ascii, sizeof ascii - 1, true, &linen);
    CHECK(linen == sizeof want_ascii - 1 && memcmp(line, want_ascii, linen) == 0);
    if (linen != sizeof want_ascii - 1 || memcmp(line, want_ascii, linen) != 0)
        printf("    got %.*s\n", (int)linen, line);
    line = ndjson_line(e, "stdout", (const uint8_t *)uni, sizeof uni - 1, false, &linen);
    CHECK(linen == sizeof want_uni - 1 && memcmp(line, want_uni, linen) == 0);
    if (linen != sizeof want_uni - 1 || memcmp(line, want_uni, linen) != 0)
        printf("    got %.*s\n", (int)linen, line);
    line = ndjson_line(e, "stdout", (const uint8_t *)"\0x", 2, true, &linen);
    CHECK(linen == 36 && memcmp(line, "{\"stream\":\"stdout\",\"data\":\"\\u0000x\"}", 36) == 0);
    ndjson_free(e);
}

/* The encoders' buffers are reused: a short line after a long one is whole,
 * from either encoder after either. */
static void a_short_line_after_a_long_one_is_exact(void)
{
    static uint8_t p[GW_LINE_RAW];
    memset(p, 'x', sizeof p);
    struct ndjson *e = ndjson_new();
    size_t linen;
    for (int first = 0; first < 2; first++)
        for (int second = 0; second < 2; second++) {
            const char *line = ndjson_line(e, "stdout", p, sizeof p, first, &linen);
            CHECK(line_decodes_to(line, linen, "stdout", p, sizeof p));
            line = ndjson_line(e, "stderr", (const uint8_t *)"ok", 2, second, &linen);
            CHECK(line_decodes_to(line, linen, "stderr", (const uint8_t *)"ok", 2));
        }
    ndjson_free(e);
}

int main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        CHECK_TEST(every_byte_value_round_trips),
        CHECK_TEST(random_inputs_in_random_chunks_round_trip),
        CHECK_TEST(long_lines_round_trip),
        CHECK_TEST(lines_are_compact_ascii_with_only_the_required_escapes),
        CHECK_TEST(a_short_line_after_a_long_one_is_exact),
    };
    return check_run_only(tests, sizeof tests / sizeof *tests, argc > 1 ? argv[1] : NULL);
}
