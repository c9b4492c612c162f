/* fop_io.h — the helper side's common parts (fop_io.c), used by the
 * operations in fop_child.c and the archive operations in fop_xfer.c.
 *
 * A helper writes whole protocol frames for its one request (id in the job)
 * to FOP_OUT_FD; a failed write means the agent no longer listens (the
 * connection went away) and ends the helper. Every function named "never
 * returns" _exits after writing its frame.
 */
#ifndef SA_FOP_IO_H
#define SA_FOP_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "fop.h"
#include "ident.h"
#include "wire.h"

#define FOP_IN_FD 0             /* the bytes the client sends (upload, write) */
#define FOP_OUT_FD 1            /* frames to the agent */
#define FOP_CTL_FD 3            /* one byte 'E' when the client's eof came */

extern const struct fop_job *fio_job;

/* Start: the job, and the errno of entering its cwd (0: entered). */
void fio_init(const struct fop_job *j, int chdir_errno);
/* Where frames are built before fio_flush writes them. */
struct buf *fio_out(void);
void fio_flush(void);
void fio_finish(void) __attribute__((noreturn));
/* An `error` frame (code: the errno name when errnum, else code) with path;
 * never returns. */
void fio_fail(int errnum, const char *code, const char *path, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
/* fio_fail with errno and "OP PATH: strerror". */
void fio_fail_sys(const char *op, const char *path) __attribute__((noreturn));
/* `ok {}` (written at once). */
void fio_ok(void);
/* `end {key: v}`; never returns. */
void fio_end(const char *key, uint64_t v) __attribute__((noreturn));
/* `data` events for n bytes, offsets counted from 0 over the stream. */
void fio_data(const void *p, size_t n);
/* A relative path while the cwd could not be entered fails with that. */
void fio_need_cwd(const char *path);
/* After EOF on FOP_IN_FD: the client's eof came (true) or the input was cut
 * off (false: the request was cancelled). */
bool fio_input_complete(void);
/* mkdir -p of path (all of it, or all but its last component with !whole),
 * mode 0755; -1 with errno and *bad naming the component that failed. */
int fio_make_parents(const char *path, bool whole, char *bad, size_t badsz);

/* The archive helper's argv for job j (upload or download): "key=value"
 * words, "--", the paths; id NULL keeps the identity. Allocated (a helper
 * about to exec). */
char **fio_job_argv(const char *helper, const struct fop_job *j, const struct ident *id,
                    pid_t parent);
/* Its inverse, in the archive helper: 0, or -1 for anything else. Strings
 * point into argv; the groups into static storage. */
int fio_job_parse(int argc, char **argv, struct fop_job *j, struct ident *id, bool *has_id,
                  pid_t *parent);

#endif
