/* Unit tests of gateway/utf8.c: command output cleaned to UTF-8 one chunk at a
 * time — a character split at any point comes out whole, ill-formed bytes
 * become one U+FFFD per maximal subpart (what Python's errors="replace" and
 * the WHATWG decoder produce), valid text is never altered; utf8_view gives
 * the same text, without a copy when the input is valid. */
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "gw.h"

#define R "\xef\xbf\xbd"

/* Clean s in chunks of at most step bytes, final on the last one, with
 * utf8_clean, or with utf8_view (what the streams use) when view. */
static int cleaned_is_by(const char *s, size_t n, size_t step, const char *want, bool view)
{
    struct u8tail t = { .n = 0 };
    struct buf out, scratch;
    buf_init(&out);
    buf_init(&scratch);
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step, len;
        bool ascii;
        if (!view) {
            utf8_clean(&t, (const uint8_t *)s + i, k, i + k == n, &out);
            continue;
        }
        const uint8_t *v =
            utf8_view(&t, (const uint8_t *)s + i, k, i + k == n, &scratch, &len, &ascii);
        if (len > 0)
            buf_append(&out, v, len);
        for (size_t j = 0; j < len; j++)
            if (v[j] >= 0x80 && ascii) {
                printf("    step %zu: non-ASCII text said to be ASCII\n", step);
                return 0;
            }
    }
    buf_free(&scratch);
    if (n == 0)
        utf8_clean(&t, NULL, 0, true, &out);
    int ok = buf_size(&out) == strlen(want) &&
             (buf_size(&out) == 0 || memcmp(buf_ptr(&out), want, strlen(want)) == 0);
    if (!ok)
        printf("    step %zu: got %zu bytes, want %zu\n", step, buf_size(&out), strlen(want));
    buf_free(&out);
    return ok;
}

static int cleaned_is(const char *s, size_t n, size_t step, const char *want)
{
    return cleaned_is_by(s, n, step, want, false) && cleaned_is_by(s, n, step, want, true);
}

static void check_all_steps(const char *s, size_t n, const char *want)
{
    for (size_t step = 1; step <= n + 1; step++)
        CHECK(cleaned_is(s, n, step, want));
}

static void valid_text_split_anywhere_is_unchanged(void)
{
    static const char s[] = "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 plain\n";
    check_all_steps(s, sizeof s - 1, s);
}

static void ill_formed_bytes_become_one_fffd_per_maximal_subpart(void)
{
    check_all_steps("a\xff" "b", 3, "a" R "b");
    check_all_steps("\x80\x80", 2, R R);                    /* stray continuations */
    check_all_steps("\xc0\x80", 2, R R);                    /* overlong lead */
    check_all_steps("\xe0\x80\x80", 3, R R R);              /* overlong 3-byte */
    check_all_steps("\xed\xa0\x80", 3, R R R);              /* a surrogate */
    check_all_steps("\xf4\x90\x80\x80", 4, R R R R);        /* above U+10FFFF */
    check_all_steps("\xe4\xb8" "x", 3, R "x");              /* cut short by ASCII */
    check_all_steps("\xf0\x9f\x98" "\xf0\x9f\x98\x80", 7, R "\xf0\x9f\x98\x80");
}

static void an_incomplete_character_at_the_end_is_one_fffd(void)
{
    check_all_steps("ab\xe4\xb8", 4, "ab" R);
    check_all_steps("\xf0", 1, R);
}

static void nothing_is_held_beyond_three_bytes(void)
{
    struct u8tail t = { .n = 0 };
    struct buf out;
    buf_init(&out);
    utf8_clean(&t, (const uint8_t *)"\xf0\x9f\x98", 3, false, &out);
    CHECK(buf_size(&out) == 0 && t.n == 3);
    utf8_clean(&t, (const uint8_t *)"\x80", 1, false, &out);
    CHECK(t.n == 0 && buf_size(&out) == 4);
    buf_free(&out);
}

static void empty_input_is_empty(void)
{
    CHECK(cleaned_is("", 0, 1, ""));
}

/* The streams flush a held-back tail with no new bytes (NULL, 0). */
static void a_final_flush_without_bytes_ends_the_tail(void)
{
    struct u8tail t = { .n = 0 };
    struct buf out;
    buf_init(&out);
    utf8_clean(&t, (const uint8_t *)"x\xe4\xb8", 3, false, &out);
    utf8_clean(&t, NULL, 0, true, &out);
    CHECK(t.n == 0 && buf_size(&out) == 4 && memcmp(buf_ptr(&out), "x" R, 4) == 0);
    buf_free(&out);
}

/* The streams' hot path: valid input comes back as it is, not copied; an
 * incomplete last character is held back all the same; ASCII is told apart
 * (json-c encodes it, ndjson.c). */
static void a_view_of_valid_text_is_the_input_itself(void)
{
    static const uint8_t s[] = "plain \xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8";
    struct u8tail t = { .n = 0 };
    struct buf scratch;
    buf_init(&scratch);
    size_t len;
    bool ascii;
    CHECK(utf8_view(&t, s, sizeof s - 1, false, &scratch, &len, &ascii) == s);
    CHECK(len == sizeof s - 3 && t.n == 2 && buf_size(&scratch) == 0 && !ascii);
    const uint8_t *v = utf8_view(&t, (const uint8_t *)"\xad!", 2, false, &scratch, &len, &ascii);
    CHECK(len == 4 && memcmp(v, "\xe4\xb8\xad!", 4) == 0 && t.n == 0 && !ascii);
    const uint8_t *a = (const uint8_t *)"ascii\x01\x7f only, then \xc3";
    CHECK(utf8_view(&t, a, 20, false, &scratch, &len, &ascii) == a);
    CHECK(len == 19 && ascii && t.n == 1);
    buf_free(&scratch);
}

int main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        CHECK_TEST(valid_text_split_anywhere_is_unchanged),
        CHECK_TEST(ill_formed_bytes_become_one_fffd_per_maximal_subpart),
        CHECK_TEST(an_incomplete_character_at_the_end_is_one_fffd),
        CHECK_TEST(nothing_is_held_beyond_three_bytes),
        CHECK_TEST(empty_input_is_empty),
        CHECK_TEST(a_final_flush_without_bytes_ends_the_tail),
        CHECK_TEST(a_view_of_valid_text_is_the_input_itself),
    };
    return check_run_only(tests, sizeof tests / sizeof *tests, argc > 1 ? argv[1] : NULL);
}
