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

#include "err.h"

#define LSN_ACCEPTS_PER_CB 64
#define LSN_BACKOFF_S 0.1

struct agent;

struct listener {
    struct agent *a;
    struct listener *next;
    int fd;
    ev_io io;
    ev_timer backoff;
    char *addr;
    char *unlink_path;         /* unix socket file to remove at exit */
    bool starved;              /* accept is failing for lack of fds/memory */
};

int lsn_open(struct agent *a, const char *addr, struct sa_err *e);
void lsn_close_all(struct agent *a);

#endif
