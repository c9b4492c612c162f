/* Unit tests of the command output log (agent/outlog.c): positions, per-stream
 * offsets, coalescing, dropping from the front, lookup, accounting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "outlog.h"


static void append_gives_positions_and_per_stream_offsets(void)
{
    struct olog l;
    olog_init(&l);
    olog_append(&l, 0, "abc", 3);
    olog_append(&l, 1, "XY", 2);
    olog_append(&l, 0, "de", 2);
    CHECK(l.start == 0 && l.end == 7);
    CHECK(l.next_offset[0] == 5 && l.next_offset[1] == 2);
    const struct olog_chunk *k = olog_find(&l, 3);
    CHECK(k && k->stream == 1 && k->pos == 3 && k->offset == 0 && k->len == 2);
    k = olog_find(&l, 6);
    CHECK(k && k->stream == 0 && k->pos == 5 && k->offset == 3 && memcmp(k->data, "de", 2) == 0);
    CHECK(olog_find(&l, 7) == NULL);
    olog_free(&l);
}

static void small_reads_of_one_stream_fill_the_last_chunk(void)
{
    struct olog l;
    olog_init(&l);
    size_t grown = 0;
    for (int i = 0; i < 100; i++)
        grown += olog_append(&l, 0, "x", 1);
    CHECK(l.n == 1);
    CHECK(grown == OLOG_MIN_CHUNK + OLOG_CHUNK_OVERHEAD);
    CHECK(l.bytes == grown);
    /* a chunk is never grown past its capacity */
    char big[OLOG_MIN_CHUNK];
    memset(big, 'y', sizeof big);
    olog_append(&l, 0, big, sizeof big);
    CHECK(l.n == 2);
    const struct olog_chunk *k = olog_find(&l, 0);
    CHECK(k->len == OLOG_MIN_CHUNK && k->cap == OLOG_MIN_CHUNK);
    CHECK(l.end == 100 + OLOG_MIN_CHUNK);
    olog_free(&l);
}

static void dropping_respects_the_limit_and_moves_start(void)
{
    struct olog l;
    olog_init(&l);
    char buf[4096];
    memset(buf, 'a', sizeof buf);
    for (int i = 0; i < 4; i++)
        olog_append(&l, i % 2, buf, sizeof buf);     /* 4 chunks, alternating streams */
    uint64_t before = l.bytes;
    CHECK(olog_drop_front(&l, 4095) == 0);          /* would cut into a protected byte */
    size_t freed = olog_drop_front(&l, 4096);
    CHECK(freed == 4096 + OLOG_CHUNK_OVERHEAD);
    CHECK(l.start == 4096 && l.bytes == before - freed);
    CHECK(olog_find(&l, 100) == NULL);              /* gone */
    CHECK(olog_find(&l, 4096)->offset == 0);        /* first stderr chunk */
    CHECK(olog_clear(&l) == 3 * (4096 + OLOG_CHUNK_OVERHEAD));
    CHECK(l.start == l.end && l.bytes == 0 && l.n == 0);
    olog_append(&l, 0, "z", 1);                     /* usable after clear; offsets go on */
    CHECK(olog_find(&l, l.end - 1)->offset == 8192);
    olog_free(&l);
}

static void lookup_finds_every_position_across_ring_growth(void)
{
    struct olog l;
    olog_init(&l);
    char buf[2000];
    for (int i = 0; i < 100; i++) {
        memset(buf, i, sizeof buf);
        olog_append(&l, i % 2, buf, sizeof buf);
        if (i % 3 == 0)
            olog_drop_front(&l, UINT64_MAX);        /* keep the ring wrapping */
    }
    int bad = 0;
    for (uint64_t p = l.start; p < l.end; p += 97) {
        const struct olog_chunk *k = olog_find(&l, p);
        if (!k || p < k->pos || p >= k->pos + k->len || k->data[p - k->pos] != (uint8_t)(k->pos / 2000))
            bad++;
    }
    CHECK(bad == 0);
    CHECK(olog_find(&l, l.start - 1) == NULL);
    olog_free(&l);
}

int main(void)
{
    static const struct check_test tests[] = {
#define T(f) CHECK_TEST(f)
        T(append_gives_positions_and_per_stream_offsets),
        T(small_reads_of_one_stream_fill_the_last_chunk),
        T(dropping_respects_the_limit_and_moves_start),
        T(lookup_finds_every_position_across_ring_growth),
    };
    return check_run(tests, sizeof tests / sizeof tests[0]);
}
