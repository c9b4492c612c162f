/* utf8.c — command output as valid UTF-8, one chunk at a time.
 *
 * The agent relays output in arbitrary chunks, so a character may be split
 * across two of them: its first bytes are held back (at most 3, per stream)
 * until the rest arrives. Anything that is not UTF-8 (stray continuation
 * bytes, overlong forms, surrogates, code points above U+10FFFF) becomes one
 * U+FFFD per maximal ill-formed subpart, as the WHATWG decoder and the SDK's
 * own TextDecoder do. utf8_view hands valid input back as it is, without a
 * copy: the usual case, and the streams' hot path.
 */
#include <string.h>

#include "gw.h"

static const uint8_t FFFD[3] = { 0xef, 0xbf, 0xbd };

/* The sequence at p: its length when valid, 0 when it is a valid but
 * incomplete prefix of n bytes, -k when its first k bytes are ill-formed. */
static int seq(const uint8_t *p, size_t n)
{
    uint8_t b = p[0], lo = 0x80, hi = 0xbf;
    int len;
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else
        return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return 0;
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xbf;
        if (p[i] < l || p[i] > h)
            return -i;
    }
    return len;
}

/* Finish the held-back character with bytes from *p; returns bytes taken. */
static size_t finish_tail(struct u8tail *t, const uint8_t *p, size_t n, bool final,
                          struct buf *out)
{
    uint8_t tmp[4];
    size_t have = t->n, take = n < 4 - have ? n : 4 - have;
    memcpy(tmp, t->b, have);
    if (take > 0)                   /* p may be NULL: a final flush */
        memcpy(tmp + have, p, take);
    int r = seq(tmp, have + take);
    if (r == 0) {               /* still incomplete: every byte of p was taken */
        if (final) {
            buf_append(out, FFFD, 3);
            t->n = 0;
        } else {
            memcpy(t->b, tmp, have + take);
            t->n = (uint8_t)(have + take);
        }
        return take;
    }
    t->n = 0;
    if (r > 0) {
        buf_append(out, tmp, (size_t)r);
        return (size_t)r - have;
    }
    buf_append(out, FFFD, 3);
    /* the held bytes were a valid prefix, so the bad subpart covers them all */
    return (size_t)-r > have ? (size_t)-r - have : 0;
}

/* The end of the run of ASCII bytes at p[i..n): 8 bytes at a time, since
 * command output is mostly ASCII and this is on every byte of it. */
static size_t ascii_end(const uint8_t *p, size_t i, size_t n)
{
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ull)
            break;
    }
    while (i < n && p[i] < 0x80)
        i++;
    return i;
}

void utf8_clean(struct u8tail *t, const uint8_t *p, size_t n, bool final, struct buf *out)
{
    size_t i = 0;
    if (t->n > 0)
        i = finish_tail(t, p, n, final, out);
    while (i < n) {
        size_t run = ascii_end(p, i, n);
        if (run > i) {
            buf_append(out, p + i, run - i);
            i = run;
            continue;
        }
        int r = seq(p + i, n - i);
        if (r > 0) {
            buf_append(out, p + i, (size_t)r);
            i += (size_t)r;
        } else if (r == 0) {
            if (final) {
                buf_append(out, FFFD, 3);
            } else {
                memcpy(t->b, p + i, n - i);
                t->n = (uint8_t)(n - i);
            }
            return;
        } else {
            buf_append(out, FFFD, 3);
            i += (size_t)-r;
        }
    }
}

const uint8_t *utf8_view(struct u8tail *t, const uint8_t *p, size_t n, bool final,
                         struct buf *scratch, size_t *len, bool *ascii)
{
    size_t i = 0;
    buf_reset(scratch, UTF8_SCRATCH_KEEP);
    *ascii = true;
    while (t->n == 0 && i < n) {
        i = ascii_end(p, i, n);
        if (i == n)
            break;
        int r = seq(p + i, n - i);
        if (r > 0) {
            i += (size_t)r;
            *ascii = false;
        } else if (r == 0 && !final) {     /* valid so far; the rest waits */
            memcpy(t->b, p + i, n - i);
            t->n = (uint8_t)(n - i);
            *len = i;
            return p;
        } else {
            break;                          /* ill-formed: clean from here */
        }
    }
    if (t->n == 0 && i == n) {
        *len = n;
        return p;
    }
    /* p[0..i) is whole valid characters and t holds nothing for them */
    if (i > 0)
        buf_append(scratch, p, i);
    utf8_clean(t, p + i, n - i, final, scratch);
    *len = buf_size(scratch);
    /* this path always gives a non-ASCII character: a completed held-back
     * one, or U+FFFD */
    *ascii = false;
    return buf_ptr(scratch);
}
