/* ackwin.h — the acknowledged input window (PROTOCOL.md "stdin" and "Files"),
 * one set of rules for both ends (library sa_common, common/README.md).
 *
 * Bytes a client sends to a command's stdin, or as the chunks of an upload
 * or write, are flow-controlled: at most `window` bytes (the hello's
 * stdin_window) and at most ACKWIN_MARKS_MAX requests may be sent and not yet
 * acknowledged. The agent acknowledges a request once every byte up to and
 * including its own has been written on (into the command's stdin pipe, into
 * the file helper); an empty request waits behind the bytes before it.
 *
 *   taken    bytes accepted, in total: the agent's queued, the sender's sent
 *   through  of those, bytes through: the agent's written, the sender's
 *            acknowledged
 *   pending  taken - through: what counts against the window
 *
 * The agent's end: ackwin_admit() before taking a request, ackwin_take()
 * gives the request's mark (the running byte count after it), ackwin_wrote()
 * as bytes leave, ackwin_reached() says which marks may be answered,
 * ackwin_answered() once per answered (or refused-after-taking) request. The
 * marks themselves live in the agent's own lists, beside the connection each
 * is owed to.
 *
 * The sender's end (sandboxctl): struct ackwin_sender adds the FIFO of the
 * requests it waits for; ackwin_room() is what it may send now,
 * ackwin_sent() / ackwin_acked() move a request in and out. Whatever a
 * sender sends within its room, the agent admits.
 *
 * No I/O, no allocation, no event loop: counters and rules only.
 */
#ifndef SA_ACKWIN_H
#define SA_ACKWIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Requests sent and not yet acknowledged, per command (stdin) or transfer
 * (chunk): the protocol's fixed bound beside the byte window. */
#define ACKWIN_MARKS_MAX 1024u

struct ackwin {
    uint64_t window;           /* pending bytes allowed */
    uint64_t taken, through;   /* see above; through <= taken */
    unsigned nmarks;           /* requests not yet answered: <= ACKWIN_MARKS_MAX */
};

/* Why a request does not fit (both answered window_exceeded). */
enum ackwin_fit {
    ACKWIN_FITS = 0,
    ACKWIN_OVER_BYTES,         /* pending + n would pass the window */
    ACKWIN_OVER_MARKS,         /* ACKWIN_MARKS_MAX requests are unanswered */
};

void ackwin_init(struct ackwin *w, uint64_t window);
uint64_t ackwin_pending(const struct ackwin *w);

/* The agent's end. */
enum ackwin_fit ackwin_admit(const struct ackwin *w, size_t n);
/* Take n bytes of one request (admitted): its mark. */
uint64_t ackwin_take(struct ackwin *w, uint64_t n);
/* n taken bytes were written on. */
void ackwin_wrote(struct ackwin *w, uint64_t n);
/* A request with this mark may be acknowledged: its bytes are all written. */
bool ackwin_reached(const struct ackwin *w, uint64_t mark);
/* One taken request was answered (ok, or an error for it). */
void ackwin_answered(struct ackwin *w);

/* The sender's end: the window and the requests it waits for, oldest first. */
struct ackwin_sender {
    struct ackwin win;
    unsigned head;             /* the oldest of win.nmarks marks in the ring */
    struct {
        uint64_t id, n;        /* the request, its data bytes */
    } marks[ACKWIN_MARKS_MAX];
};

void ackwin_sender_init(struct ackwin_sender *s, uint64_t window);
/* Data bytes that may go out in one request now: 0 while the window is full
 * or ACKWIN_MARKS_MAX requests are unacknowledged. */
uint64_t ackwin_room(const struct ackwin_sender *s);
/* Request id went out with n data bytes (n <= ackwin_room(), or n == 0 with
 * a free mark: an eof). */
void ackwin_sent(struct ackwin_sender *s, uint64_t id, uint64_t n);
/* A reply (ok or error) to request id: false when id is none of ours. Replies
 * come oldest first but for a request refused at once; either is found. */
bool ackwin_acked(struct ackwin_sender *s, uint64_t id);

#endif
