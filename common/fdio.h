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

/* Reads a file line by line through a bounded buffer (cgroup files,
 * /etc/passwd, /etc/group). A line that does not fit is skipped whole.
 * fd_lines_init reads through the caller's buffer of cap bytes;
 * fd_lines_init_grow through a heap buffer of cap bytes that doubles, up to
 * max, for a longer line, and that fd_lines_free releases. */
struct fd_lines {
    int fd;
    char *buf;
    size_t cap, max, len, off;   /* max: 0 for a caller's buffer */
    bool eof, skip;
};

void fd_lines_init(struct fd_lines *l, int fd, char *buf, size_t cap);
void fd_lines_init_grow(struct fd_lines *l, int fd, size_t cap, size_t max);
void fd_lines_free(struct fd_lines *l);
/* 1 and a NUL-terminated *line (valid until the next call); 0 at end of
 * file; -1 with errno. */
int fd_lines_next(struct fd_lines *l, char **line);

#endif
