/* tunnel.h — `connect`: a TCP connection inside the guest, relayed as raw
 * bytes over the agent connection that asked for it (PROTOCOL.md "connect",
 * docs/agent.md "Tunnels").
 *
 * Shape: one agent connection per forwarded TCP connection. The `connect`
 * request is the last frame read on its connection: the bytes after it are
 * tunnel payload. The agent connects without blocking (EINPROGRESS, a write
 * watcher, TUNNEL_CONNECT_TIMEOUT_S); a failure is an `error` reply and the
 * connection closes; on success the `ok` is queued and the connection is
 * handed over (conn_detach): from then on this module owns its fd and relays
 * both directions.
 *
 * Bounds: per direction one buffer of at most TUNNEL_BUF bytes, allocated
 * while it holds bytes; a side is not read while the buffer towards the other
 * side is full (back-pressure reaches the sender through the kernel's socket
 * buffers). At hand-over a tunnel also takes what the connection had read
 * past the request (at most 4 + max_frame + 64 KiB) and the replies not yet
 * written (at most the connection's own 1 MiB + one frame): those are written
 * before anything else is read in that direction. At most --max-tunnels
 * tunnels (connecting ones included) are open at once (`too_many` beyond).
 *
 * Ends: EOF on one side becomes shutdown(SHUT_WR) on the other once the
 * buffer is written; the tunnel closes when both directions are shut (with
 * `half_close: false`, the first EOF closes both once written: for
 * transports that drop half-closes, such as Firecracker's hybrid vsock). A
 * read or write error on either side (ECONNRESET, EPIPE) closes both at once
 * (buffered bytes are dropped).
 */
#ifndef SA_TUNNEL_H
#define SA_TUNNEL_H

#include <msgpack.h>
#include <stdint.h>

#include "err.h"
#include "wire.h"

#define TUNNEL_BUF (256u << 10)          /* bytes buffered per direction */
#define TUNNEL_READS_PER_CB 4           /* reads per side per loop iteration (fairness) */
#define TUNNEL_CONNECT_TIMEOUT_S 10.0   /* a connect still in progress after this: ETIMEDOUT */

struct agent;
struct conn;
struct wire_req;
struct tunnel;

/* What `stats` reports (agent.tunnels). */
struct tunnels {
    struct tunnel *list;                /* open and connecting, doubly linked */
    unsigned open;                      /* in the list */
    uint64_t total;                     /* ever established */
    uint64_t bytes_in;                  /* host -> guest port */
    uint64_t bytes_out;                 /* guest port -> host */
};

/* The `connect` request (request.c's table). */
int tunnel_request(struct conn *c, const struct wire_req *r, const msgpack_object *m,
                   struct sa_err *e);
/* stats: tunnels_open, tunnels_total, tunnel_bytes_in, tunnel_bytes_out. */
#define TUNNEL_STATS_KEYS 4
void tunnel_stats(struct wire_enc *w, const struct agent *a);
void tunnel_close_all(struct agent *a);

#endif
