/* fdio.h — small fd helpers shared by the agent, its file helpers,
 * sandboxctl and sa-bench (library sa_common, common/README.md).
 *
 * Errors: the leaf-helper convention (protocol/err.h, 2.): 0, or -1 with
 * errno; no sa_err, nothing logged. */
#ifndef SA_FDIO_H
#define SA_FDIO_H

#include <stdbool.h>
#include <stddef.h>

/* Write all n bytes to a blocking fd, retrying on EINTR: 0, or -1 with errno. */
int fd_write_all(int fd, const void *p, size_t n);
/* Set or clear O_NONBLOCK on fd's file description (shared by every fd that
 * dup()s it): 0, or -1 with errno. */
int fd_set_nonblock(int fd, bool on);

#endif
