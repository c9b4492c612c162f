/* notify.c — the NOTIFY_SOCKET protocol (notify.h): one datagram of
 * "KEY=VALUE" lines to a Unix socket the service manager bound. */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

void notify_init(struct notify *n)
{
    memset(n, 0, sizeof *n);
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) {
        unsetenv("NOTIFY_SOCKET");
        return;
    }
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof n->addr.sun_path) {
        log_warn("NOTIFY_SOCKET=%s: not a Unix socket path or abstract name; not notifying", path);
        unsetenv("NOTIFY_SOCKET");
        return;
    }
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0';            /* abstract: no terminating NUL counted */
    else
        len++;
    n->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    n->on = true;
    unsetenv("NOTIFY_SOCKET");
}

void notify_send(const struct notify *n, const char *state)
{
    if (!n->on)
        return;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        log_warn("notify %s: socket: %s", state, err_str(errno));
        return;
    }
    ssize_t r;
    do
        r = sendto(s, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr, n->len);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        log_warn("notify %s: %s", state, err_str(errno));
    else
        log_debug("notified the service manager: %s", state);
    close(s);
}
