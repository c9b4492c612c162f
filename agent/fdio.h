/* fdio.h — small blocking-fd helpers shared by the agent, its file helpers
 * and sandboxctl (part of sa_xfer). */
#ifndef SA_FDIO_H
#define SA_FDIO_H

#include <stddef.h>

/* Write all n bytes to a blocking fd, retrying on EINTR: 0, or -1 with errno. */
int fd_write_all(int fd, const void *p, size_t n);

#endif
