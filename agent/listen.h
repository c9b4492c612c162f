/* listen.h — listening sockets (vsock, unix, tcp) and accepting clients.
 *
 * vsock:PORT    AF_VSOCK on any CID; peers only from --vsock-allow-cid (2)
 * unix:PATH     mode 0600; a stale socket file is replaced, a live one is not;
 *               peers only root, our own uid and --allow-uid (SO_PEERCRED)
 * tcp:IP:PORT   loopback only unless --insecure-tcp-any-address
 * A refused peer's connection is closed at once, with one log line.
 *
 * Accepting: up to LSN_ACCEPTS_PER_CB connections per loop iteration; when
 * accept fails for lack of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
 * listener pauses for LSN_BACKOFF_S instead of spinning on a readable socket.
 */
#ifndef SA_LISTEN_H
#define SA_LISTEN_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "err.h"

#define LSN_ACCEPTS_PER_CB 64
#define LSN_BACKOFF_S 0.1

struct conn_set;
struct listener;

/* The listeners and what they need: the settings (addresses' rules, peer
 * allow-lists, the token) and where accepted connections go. */
struct listeners {
    struct ev_loop *loop;
    const struct cfg *cfg;
    struct conn_set *conns;
    struct listener *list;
    bool insecure_tcp;         /* a tcp: listener serves without a token (--insecure-tcp) */
};

struct listener {
    struct listeners *set;
    struct listener *next;
    int fd;
    ev_io io;
    ev_timer backoff;
    char *addr;
    char *unlink_path;         /* unix socket file to remove at exit */
    bool starved;              /* accept is failing for lack of fds/memory */
};

void lsn_init(struct listeners *ls, struct ev_loop *loop, const struct cfg *cfg,
              struct conn_set *conns);
int lsn_open(struct listeners *ls, const char *addr, struct sa_err *e);
void lsn_close_all(struct listeners *ls);

#endif
