/* addr.h — agent addresses: parsing and connecting.
 *
 * An address names one way to reach an agent's byte stream:
 *
 *   unix:PATH          a Unix stream socket
 *   vsock:CID:PORT     AF_VSOCK (from a host to a guest CID, or from inside a VM)
 *   tcp:HOST:PORT      TCP; an IPv6 literal goes in brackets: tcp:[::1]:7000
 *   fc:UDS_PATH:PORT   a Firecracker hybrid-vsock Unix socket: after connecting,
 *                      the client writes "CONNECT PORT\n" and the proxy answers
 *                      "OK <anything>\n"; from then on the stream is the guest's
 *
 * Firecracker closes the connection when nothing listens on PORT in the guest
 * yet (still booting), so fc: connections are retried with exponential backoff
 * (10 ms doubling up to 500 ms) until a deadline: the caller's timeout, or by
 * default SANDBOX_CONNECT_TIMEOUT seconds from the environment, else 10 s.
 * The other kinds are tried once. Every descriptor is close-on-exec.
 * Errors follow err.h.
 */
#ifndef SA_ADDR_H
#define SA_ADDR_H

#include <stdint.h>

#include "err.h"

#define ADDR_PATH_MAX 108               /* sizeof(sockaddr_un.sun_path) */
#define ADDR_HOST_MAX 256
#define ADDR_TIMEOUT_DEFAULT_MS 10000
#define ADDR_BACKOFF_START_MS 10
#define ADDR_BACKOFF_MAX_MS 500

enum addr_kind { ADDR_UNIX, ADDR_VSOCK, ADDR_TCP, ADDR_FC };

struct addr {
    enum addr_kind kind;
    char path[ADDR_PATH_MAX];   /* unix, fc: NUL-terminated, shorter than sun_path */
    char host[ADDR_HOST_MAX];   /* tcp: host name or literal, without brackets */
    uint32_t cid;               /* vsock */
    uint32_t port;              /* vsock, fc: any u32; tcp: 1..65535 */
};

/* Parse s into *a. Fails with code "bad_address" naming what is wrong. */
int addr_parse(const char *s, struct addr *a, struct sa_err *e);

/* The canonical text of a ("fc:/run/v.sock:1024"), truncated to n bytes. */
void addr_format(const struct addr *a, char *out, size_t n);

/* The connect timeout: SANDBOX_CONNECT_TIMEOUT (seconds, may be fractional)
 * when set and valid, else ADDR_TIMEOUT_DEFAULT_MS. */
int addr_timeout_from_env(void);

/* Connect to a; returns a blocking, close-on-exec stream socket, or -1.
 * timeout_ms < 0 means addr_timeout_from_env(). For fc:, the handshake has
 * completed when this returns: the next byte read is the guest's. */
int addr_connect(const struct addr *a, int timeout_ms, struct sa_err *e);

#endif
