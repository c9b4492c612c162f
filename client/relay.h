/* relay.h — copy bytes both ways between two stream ends (a tunnel's two
 * sides: sandboxctl forward, the gateway's routes).
 *
 * Bounds: bufsize bytes per direction; a side is not read while the bytes
 * read from it are unwritten to the other (back-pressure). An EOF is passed
 * on as a half-close (shutdown SHUT_WR; a non-socket is closed).
 */
#ifndef SA_RELAY_H
#define SA_RELAY_H

#include <stdbool.h>
#include <stddef.h>

/* Asked every poll_ms while the relay waits; true ends the relay. */
typedef bool relay_stop_fn(void *arg);

struct relay_opts {
    size_t bufsize;             /* bytes per direction */
    const void *pre;            /* bytes already read from b, written to a first */
    size_t npre;                /* (the b->a buffer grows to hold them) */
    relay_stop_fn *stop;        /* NULL: never asked */
    void *arg;
    int poll_ms;
};

/* Relay a (host side) and b (the tunnel), all four fds non-blocking, until
 * both directions are shut, one side fails (a reset), or o->stop says so.
 * The fds stay open (the caller's). */
void relay_run(int a_rd, int a_wr, int b_rd, int b_wr, const struct relay_opts *o);

#endif
