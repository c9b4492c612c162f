/* guest_shutdown.c — the `shutdown` request, and the agent's own OOM
 * protection at start-up (docs/agent.md "Stopping", "The OOM killer"). */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "conn.h"
#include "log.h"

int guest_shutdown(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    (void)e;
    char why[64];
    snprintf(why, sizeof why, "shutdown request (conn %llu)", (unsigned long long)c->serial);
    wire_msg_ok(conn_out(c), r->id);
    conn_kick(c);               /* the ok goes out before the loop may end */
    init_shutdown(c->a, why);
    return 0;
}

void guest_oom_protect(void)
{
    if (geteuid() != 0)
        return;
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "-1000", 5) != 5)
        log_warn("oom_score_adj -1000: %s; the OOM killer may choose the agent", err_str(errno));
    if (fd >= 0)
        close(fd);
}
