/* notify.h — readiness and stopping, told to a service manager through the
 * NOTIFY_SOCKET datagram protocol of sd_notify(3) (systemd's Type=notify),
 * without libsystemd. */
#ifndef SA_NOTIFY_H
#define SA_NOTIFY_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

struct notify {
    bool on;
    socklen_t len;
    struct sockaddr_un addr;
};

/* Take $NOTIFY_SOCKET (a path, or '@' for an abstract name) and remove it from
 * the environment, so that no command or helper inherits it. Unset, empty or
 * unusable: off (unusable is logged). */
void notify_init(struct notify *n);
/* Send one datagram, e.g. "READY=1"; failures are logged, never fatal. */
void notify_send(const struct notify *n, const char *state);

#endif
