/* Unit tests of the logs' memory policy (agent/logstore.c): the per-command
 * cap, the global cap and its eviction order, the bytes a follower's
 * position protects, the followers' share of the global cap (a writer
 * stops, and goes on when a follower moves on), and the trim accounting.
 * No event loop: the store's two callbacks are recorded here. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "logstore.h"

#define KIB 1024u
#define BLOCK (4 * KIB)                         /* one "read" in these tests */
#define COST (BLOCK + OLOG_CHUNK_OVERHEAD)      /* its accounting */

static struct lstore_log *resumed[8];
static unsigned nresumed, ntrim_due;

static void on_resume(struct lstore_log *l)
{
    if (nresumed < 8)
        resumed[nresumed] = l;
    nresumed++;
}

static void on_trim_due(struct lstore *s)
{
    (void)s;
    ntrim_due++;
}

static const struct lstore_ops ops = {on_resume, on_trim_due};

static void store(struct lstore *s, uint64_t cap, uint64_t total)
{
    nresumed = ntrim_due = 0;
    lstore_init(s, cap, total, 64 * KIB, &ops);
}

/* Write n blocks into l as cmd.c does (reserve, then append); returns how
 * many went in before the store said stop. */
static unsigned write_blocks(struct lstore *s, struct lstore_log *l, unsigned n)
{
    static uint8_t block[BLOCK];
    for (unsigned i = 0; i < n; i++) {
        if (!lstore_reserve(s, l))
            return i;
        memset(block, (int)(l->o.end / BLOCK), sizeof block);
        lstore_append(s, l, 0, block, sizeof block);
    }
    return n;
}

static bool held_whole(const struct lstore_log *l)
{
    return l->o.start == 0 && l->o.end > 0;
}

static bool emptied(const struct lstore_log *l)
{
    return l->o.start == l->o.end && l->o.bytes == 0;
}

static void per_command_cap_drops_the_front(void)
{
    struct lstore s;
    struct lstore_log l;
    store(&s, 16 * COST, 1024 * COST);
    lstore_add(&s, &l);
    CHECK(lstore_read_size(&s) == 16 * COST / 4);       /* a quarter of the cap */
    CHECK(write_blocks(&s, &l, 40) == 40);              /* nobody follows: never stops */
    CHECK(l.o.bytes <= s.cap && l.o.bytes == 16 * COST);
    CHECK(l.o.end == 40 * BLOCK && l.o.start == 24 * BLOCK);   /* the oldest went */
    CHECK(olog_find(&l.o, l.o.end - 1)->data[0] == 39);        /* the newest stayed */
    CHECK(s.bytes == l.o.bytes && !l.paused);
    lstore_remove(&s, &l);
    CHECK(s.bytes == 0);
}

static void global_cap_evicts_exited_logs_oldest_exit_first_then_running(void)
{
    struct lstore s;
    struct lstore_log a, b, c, d;
    store(&s, 1024 * COST, 16 * COST);
    lstore_add(&s, &a);
    lstore_add(&s, &b);
    lstore_add(&s, &c);
    lstore_add(&s, &d);
    CHECK(write_blocks(&s, &a, 4) == 4 && write_blocks(&s, &b, 4) == 4);
    CHECK(write_blocks(&s, &c, 4) == 4);
    CHECK(s.bytes == 12 * COST);
    lstore_exited(&s, &b);                  /* b exits first, then a */
    lstore_exited(&s, &a);
    CHECK(write_blocks(&s, &d, 4) == 4);    /* 16 blocks: the cap, no room for a 17th */
    CHECK(held_whole(&a) && held_whole(&b) && held_whole(&c));
    CHECK(write_blocks(&s, &d, 1) == 1);    /* b, the oldest exit, goes whole */
    CHECK(emptied(&b) && held_whole(&a) && held_whole(&c));
    CHECK(write_blocks(&s, &d, 3) == 3);    /* the room b left */
    CHECK(held_whole(&a) && s.bytes == 16 * COST);
    CHECK(write_blocks(&s, &d, 1) == 1);    /* then a, whole */
    CHECK(emptied(&a) && held_whole(&c));
    CHECK(write_blocks(&s, &d, 3) == 3);
    CHECK(held_whole(&c));
    CHECK(write_blocks(&s, &d, 2) == 2);    /* then the oldest running log, a chunk at a time */
    CHECK(c.o.start == 2 * BLOCK && c.o.end == 4 * BLOCK && held_whole(&d));
    CHECK(s.bytes <= s.total_cap);
    CHECK(s.bytes == a.o.bytes + b.o.bytes + c.o.bytes + d.o.bytes);
    lstore_remove(&s, &a);
    lstore_remove(&s, &b);
    lstore_remove(&s, &c);
    lstore_remove(&s, &d);
    CHECK(s.bytes == 0);
}

static void a_followers_position_protects_its_bytes(void)
{
    struct lstore s;
    struct lstore_log l, x;
    store(&s, 8 * COST, 1024 * COST);
    lstore_add(&s, &l);
    lstore_protect(&l, 2 * BLOCK);          /* a follower was sent the first 2 blocks */
    CHECK(write_blocks(&s, &l, 100) == 10); /* 2 may go, 8 fill the cap: then stop */
    CHECK(l.paused && nresumed == 0);
    CHECK(l.o.start == 2 * BLOCK && l.o.end == 10 * BLOCK);    /* nothing it needs went */
    lstore_followed(&s, &l, 5 * BLOCK);     /* it was sent 3 more: room again */
    CHECK(!l.paused && nresumed == 1 && resumed[0] == &l);
    CHECK(l.o.start == 3 * BLOCK);          /* the room was made below 5 blocks */
    /* the global cap skips a protected exited log for the next one */
    lstore_protect(&l, 3 * BLOCK);          /* (a slower follower came) */
    lstore_add(&s, &x);
    CHECK(write_blocks(&s, &x, 4) == 4);
    lstore_exited(&s, &l);                  /* l exits first: first in line */
    lstore_exited(&s, &x);
    s.total_cap = s.bytes;                  /* full */
    struct lstore_log y;
    lstore_add(&s, &y);
    CHECK(write_blocks(&s, &y, 1) == 1);
    CHECK(l.o.start == 3 * BLOCK && l.o.end == 10 * BLOCK);    /* followed: kept */
    CHECK(emptied(&x));                     /* the next exit went, whole */
    lstore_followed(&s, &l, UINT64_MAX);    /* the follower went */
    CHECK(write_blocks(&s, &y, 3) == 3);    /* the room x left */
    CHECK(l.o.start == 3 * BLOCK);
    CHECK(write_blocks(&s, &y, 1) == 1);
    CHECK(emptied(&l));                     /* l goes whole now */
    lstore_remove(&s, &l);
    lstore_remove(&s, &x);
    lstore_remove(&s, &y);
}

static void followers_share_stops_a_writer_and_a_follower_moving_on_resumes_it(void)
{
    struct lstore s;
    struct lstore_log f1, f2, u;
    store(&s, 1024 * COST, 64 * COST);      /* share: 48 blocks' worth */
    uint64_t share = s.total_cap / LSTORE_FOLLOWED_SHARE_DEN * LSTORE_FOLLOWED_SHARE_NUM;
    lstore_add(&s, &f1);
    lstore_add(&s, &f2);
    lstore_add(&s, &u);
    lstore_protect(&f1, 0);                 /* two stalled followers */
    lstore_protect(&f2, 0);
    unsigned n1 = write_blocks(&s, &f1, 30);
    unsigned n2 = write_blocks(&s, &f2, 30);
    CHECK(n1 == 30 && n2 < 30 && f2.paused && !f1.paused);     /* f2 hit the share */
    CHECK(s.share_wait);
    CHECK((n1 + n2) * BLOCK + lstore_read_size(&s) > share);
    CHECK((n1 + n2) * BLOCK <= share);
    /* a log nobody follows never stops: its own old bytes make the room */
    CHECK(write_blocks(&s, &u, 200) == 200);
    CHECK(s.bytes <= s.total_cap && held_whole(&f1) && held_whole(&f2));
    /* f1's follower catches up: f2, stopped for the share, goes on */
    lstore_followed(&s, &f1, f1.o.end);
    CHECK(!f2.paused && !s.share_wait);
    CHECK(nresumed == 1 && resumed[0] == &f2);
    CHECK(write_blocks(&s, &f2, 1) == 1);
    lstore_remove(&s, &f1);
    lstore_remove(&s, &f2);
    lstore_remove(&s, &u);
}

static void freed_bytes_ask_for_a_trim_past_the_threshold(void)
{
    struct lstore s;
    struct lstore_log l;
    store(&s, 16 * COST, 1024 * COST);
    lstore_add(&s, &l);
    unsigned below = LSTORE_TRIM_MIN / COST;            /* blocks freed before the threshold */
    CHECK(write_blocks(&s, &l, 16 + below) == 16 + below);
    CHECK(s.trim_owed == (uint64_t)below * COST && ntrim_due == 0);
    CHECK(write_blocks(&s, &l, 1) == 1);                /* crosses LSTORE_TRIM_MIN */
    CHECK(ntrim_due == 1 && s.trim_owed >= LSTORE_TRIM_MIN);
    CHECK(write_blocks(&s, &l, 300) == 300);            /* each free past it is told */
    CHECK(ntrim_due == 301 && s.trim_owed == (uint64_t)(below + 301) * COST);
    lstore_trim(&s);                                    /* the count starts again */
    CHECK(s.trim_owed == 0);
    CHECK(write_blocks(&s, &l, below) == below && ntrim_due == 301);
    lstore_remove(&s, &l);                              /* the rest of the log crosses it */
    CHECK(ntrim_due == 302 && s.bytes == 0 && s.trim_owed == (uint64_t)(below + 16) * COST);
}

int main(int argc, char **argv)
{
    static const struct check_test tests[] = {
#define T(f) CHECK_TEST(f)
        T(per_command_cap_drops_the_front),
        T(global_cap_evicts_exited_logs_oldest_exit_first_then_running),
        T(a_followers_position_protects_its_bytes),
        T(followers_share_stops_a_writer_and_a_follower_moving_on_resumes_it),
        T(freed_bytes_ask_for_a_trim_past_the_threshold),
    };
    return check_run_only(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL);
}
