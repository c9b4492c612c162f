/* Unit tests of common/ (library sa_common): the acknowledged input window's
 * rules (ackwin.c) at the agent's end and at the sender's, and the bounded
 * line reader (fdio.c). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ackwin.h"
#include "check.h"
#include "fdio.h"

/* --- the agent's end ------------------------------------------------------------ */

static void agent_admits_up_to_the_window_and_refuses_beyond(void)
{
    struct ackwin w;
    ackwin_init(&w, 10);
    CHECK(ackwin_admit(&w, 10) == ACKWIN_FITS);
    CHECK(ackwin_admit(&w, 11) == ACKWIN_OVER_BYTES);
    ackwin_take(&w, 6);
    CHECK(ackwin_pending(&w) == 6);
    CHECK(ackwin_admit(&w, 4) == ACKWIN_FITS);
    CHECK(ackwin_admit(&w, 5) == ACKWIN_OVER_BYTES);
    ackwin_take(&w, 4);
    /* a full window still takes an empty request (an eof) */
    CHECK(ackwin_admit(&w, 0) == ACKWIN_FITS);
    CHECK(ackwin_admit(&w, 1) == ACKWIN_OVER_BYTES);
    /* written bytes free the window, whether or not their requests were answered */
    ackwin_wrote(&w, 3);
    CHECK(ackwin_pending(&w) == 7);
    CHECK(ackwin_admit(&w, 3) == ACKWIN_FITS);
    CHECK(ackwin_admit(&w, 4) == ACKWIN_OVER_BYTES);
}

static void agent_refuses_the_request_past_the_marks_limit(void)
{
    struct ackwin w;
    ackwin_init(&w, 1u << 20);
    for (unsigned i = 0; i < ACKWIN_MARKS_MAX; i++) {
        CHECK(ackwin_admit(&w, 1) == ACKWIN_FITS);
        ackwin_take(&w, 1);
    }
    CHECK(w.nmarks == ACKWIN_MARKS_MAX);
    CHECK(ackwin_admit(&w, 0) == ACKWIN_OVER_MARKS);
    CHECK(ackwin_admit(&w, 1) == ACKWIN_OVER_MARKS);
    /* both limits passed: the bytes are named (the agent's older message) */
    CHECK(ackwin_admit(&w, 1u << 20) == ACKWIN_OVER_BYTES);
    /* writing alone does not free a mark: answering does */
    ackwin_wrote(&w, ACKWIN_MARKS_MAX);
    CHECK(ackwin_admit(&w, 1) == ACKWIN_OVER_MARKS);
    ackwin_answered(&w);
    CHECK(ackwin_admit(&w, 1) == ACKWIN_FITS);
}

static void a_request_is_acknowledged_once_all_its_bytes_are_written(void)
{
    struct ackwin w;
    ackwin_init(&w, 100);
    uint64_t a = ackwin_take(&w, 3);
    uint64_t empty = ackwin_take(&w, 0);     /* waits behind the bytes before it */
    uint64_t b = ackwin_take(&w, 4);
    CHECK(a == 3 && empty == 3 && b == 7);
    CHECK(!ackwin_reached(&w, a));
    ackwin_wrote(&w, 2);
    CHECK(!ackwin_reached(&w, a) && !ackwin_reached(&w, empty));
    ackwin_wrote(&w, 1);
    CHECK(ackwin_reached(&w, a) && ackwin_reached(&w, empty));
    CHECK(!ackwin_reached(&w, b));
    ackwin_wrote(&w, 3);
    CHECK(!ackwin_reached(&w, b));
    ackwin_wrote(&w, 1);
    CHECK(ackwin_reached(&w, b));
    CHECK(ackwin_pending(&w) == 0);
}

/* --- the sender's end ------------------------------------------------------------ */

static void sender_room_is_the_window_less_what_is_unacknowledged(void)
{
    struct ackwin_sender *s = calloc(1, sizeof *s);
    ackwin_sender_init(s, 8);
    CHECK(ackwin_room(s) == 8);
    ackwin_sent(s, 1, 5);
    CHECK(ackwin_room(s) == 3);
    ackwin_sent(s, 2, 3);
    CHECK(ackwin_room(s) == 0);
    CHECK(!ackwin_acked(s, 99));             /* not one of ours: nothing moves */
    CHECK(ackwin_room(s) == 0);
    CHECK(ackwin_acked(s, 1));
    CHECK(ackwin_room(s) == 5);
    CHECK(!ackwin_acked(s, 1));              /* answered once */
    CHECK(ackwin_acked(s, 2));
    CHECK(ackwin_room(s) == 8 && s->win.nmarks == 0);
    free(s);
}

static void sender_has_no_room_with_the_marks_limit_unacknowledged(void)
{
    struct ackwin_sender *s = calloc(1, sizeof *s);
    ackwin_sender_init(s, 1u << 20);
    for (uint64_t id = 1; id <= ACKWIN_MARKS_MAX; id++)
        ackwin_sent(s, id, 1);
    CHECK(ackwin_room(s) == 0);              /* bytes are free, marks are not */
    CHECK(ackwin_acked(s, 1));
    CHECK(ackwin_room(s) == (1u << 20) - (ACKWIN_MARKS_MAX - 1));
    free(s);
}

static void sender_finds_a_reply_out_of_order_and_keeps_the_rest_in_order(void)
{
    struct ackwin_sender *s = calloc(1, sizeof *s);
    ackwin_sender_init(s, 1000);
    /* move the ring's head near its end so the marks wrap around */
    for (uint64_t id = 1; id <= ACKWIN_MARKS_MAX - 2; id++) {
        ackwin_sent(s, id, 0);
        CHECK(ackwin_acked(s, id));
    }
    ackwin_sent(s, 100001, 10);
    ackwin_sent(s, 100002, 20);
    ackwin_sent(s, 100003, 30);
    ackwin_sent(s, 100004, 40);
    /* refused at once: the agent answers it before the older ones */
    CHECK(ackwin_acked(s, 100003));
    CHECK(ackwin_room(s) == 1000 - 70);
    CHECK(s->win.nmarks == 3);
    CHECK(ackwin_acked(s, 100001));
    CHECK(ackwin_room(s) == 1000 - 60);
    CHECK(ackwin_acked(s, 100002));
    CHECK(ackwin_acked(s, 100004));
    CHECK(ackwin_room(s) == 1000 && s->win.nmarks == 0);
    CHECK(!ackwin_acked(s, 100003));
    free(s);
}

/* The two ends together: a sender that keeps to its room is never refused,
 * whatever sizes it sends and however the agent's writes fall. */
static void what_a_sender_sends_within_its_room_the_agent_admits(void)
{
    struct ackwin_sender *s = calloc(1, sizeof *s);
    struct ackwin agent;
    uint64_t window = 4096, marks[ACKWIN_MARKS_MAX], ids[ACKWIN_MARKS_MAX];
    unsigned head = 0, n = 0;                /* the agent's list: marks and ids, FIFO */
    ackwin_sender_init(s, window);
    ackwin_init(&agent, window);
    uint64_t next_id = 1, rng = 12345;
    int refused = 0, acked = 0;
    for (int step = 0; step < 200000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(rng >> 33);
        if (r % 3 != 0) {                    /* send: a small size, an empty, or all the room */
            uint64_t room = ackwin_room(s);
            if (room == 0 && s->win.nmarks == ACKWIN_MARKS_MAX)
                continue;
            uint64_t size = r % 7 == 0 ? room : r % 11 == 0 ? 0 : (r / 7) % 5;
            if (size > room)
                size = room;
            if (ackwin_admit(&agent, size) != ACKWIN_FITS) {
                refused++;
                continue;
            }
            ackwin_sent(s, next_id, size);
            marks[(head + n) % ACKWIN_MARKS_MAX] = ackwin_take(&agent, size);
            ids[(head + n) % ACKWIN_MARKS_MAX] = next_id++;
            n++;
        } else {                             /* the agent writes some, answers what it can */
            uint64_t w = (r / 3) % 600;
            if (w > ackwin_pending(&agent))
                w = ackwin_pending(&agent);
            ackwin_wrote(&agent, w);
            while (n > 0 && ackwin_reached(&agent, marks[head])) {
                ackwin_answered(&agent);
                CHECK(ackwin_acked(s, ids[head]));
                head = (head + 1) % ACKWIN_MARKS_MAX;
                n--;
                acked++;
            }
        }
        if (s->win.nmarks != n || agent.nmarks != n)
            break;
    }
    CHECK(refused == 0);
    CHECK(acked > 1000);
    CHECK(s->win.nmarks == n && agent.nmarks == n);
    CHECK(ackwin_pending(&s->win) >= ackwin_pending(&agent));
    free(s);
}

/* --- fd_lines ------------------------------------------------------------------- */

/* A pipe holding text, its write end closed: the read end. */
static int pipe_with(const char *text)
{
    int p[2];
    if (pipe(p) < 0 || fd_write_all(p[1], text, strlen(text)) < 0)
        exit(2);
    close(p[1]);
    return p[0];
}

static void lines_come_whole_and_the_last_needs_no_newline(void)
{
    int fd = pipe_with("one\n\nthree\nfour");
    char buf[8], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "one") == 0);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "") == 0);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "three") == 0);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "four") == 0);
    CHECK(fd_lines_next(&l, &line) == 0);
    CHECK(fd_lines_next(&l, &line) == 0);
    close(fd);
}

static void a_line_longer_than_a_fixed_buffer_is_skipped_whole(void)
{
    int fd = pipe_with("short\nthis line is far too long for eight\nnext\nanother long line at the end");
    char buf[8], *line;
    struct fd_lines l;
    fd_lines_init(&l, fd, buf, sizeof buf);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "short") == 0);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "next") == 0);
    CHECK(fd_lines_next(&l, &line) == 0);
    close(fd);
}

static void a_growing_buffer_takes_lines_up_to_its_max(void)
{
    char text[400];
    memset(text, 'a', 100);                      /* 100 bytes: fits once grown */
    strcpy(text + 100, "\n");
    memset(text + 101, 'b', 200);                /* 200 bytes: over the max of 128 */
    strcpy(text + 301, "\nend\n");
    int fd = pipe_with(text);
    char *line;
    struct fd_lines l;
    fd_lines_init_grow(&l, fd, 16, 128);
    CHECK(fd_lines_next(&l, &line) == 1 && strlen(line) == 100 && line[99] == 'a');
    CHECK(l.cap == 128);
    CHECK(fd_lines_next(&l, &line) == 1 && strcmp(line, "end") == 0);
    CHECK(fd_lines_next(&l, &line) == 0);
    fd_lines_free(&l);
    close(fd);
}

static void a_read_error_is_minus_one_with_errno(void)
{
    char buf[16], *line;
    struct fd_lines l;
    fd_lines_init(&l, -1, buf, sizeof buf);
    errno = 0;
    CHECK(fd_lines_next(&l, &line) == -1 && errno == EBADF);
}

int main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        CHECK_TEST(lines_come_whole_and_the_last_needs_no_newline),
        CHECK_TEST(a_line_longer_than_a_fixed_buffer_is_skipped_whole),
        CHECK_TEST(a_growing_buffer_takes_lines_up_to_its_max),
        CHECK_TEST(a_read_error_is_minus_one_with_errno),
        CHECK_TEST(agent_admits_up_to_the_window_and_refuses_beyond),
        CHECK_TEST(agent_refuses_the_request_past_the_marks_limit),
        CHECK_TEST(a_request_is_acknowledged_once_all_its_bytes_are_written),
        CHECK_TEST(sender_room_is_the_window_less_what_is_unacknowledged),
        CHECK_TEST(sender_has_no_room_with_the_marks_limit_unacknowledged),
        CHECK_TEST(sender_finds_a_reply_out_of_order_and_keeps_the_rest_in_order),
        CHECK_TEST(what_a_sender_sends_within_its_room_the_agent_admits),
    };
    return check_run_only(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL);
}
