/* err.h — how errors travel: three conventions, each where it belongs.
 *
 * 1. Module boundaries (the rule). A fallible function that another module
 *    calls returns int: 0 on success, -1 on failure, and fills a
 *    `struct sa_err` with an errno (0 when the failure is not a system error),
 *    a stable machine-readable code (the string sent on the wire: an errno
 *    name such as "ENOENT", or a protocol code such as "bad_request") and a
 *    human message. Callers add context as the error travels up with
 *    err_wrap(), which prefixes the message ("spawn: chdir /x: No such file or
 *    directory"). Every request handler, every public function of agent/,
 *    client/, gateway/ and common/xfer.c.
 *
 * 2. Leaf helpers: thin wrappers of one or two system calls, static in their
 *    file or in common/fdio.h, whose only caller turns the failure into an
 *    sa_err (or ignores it on purpose). They return 0, or -1 with errno set
 *    (as the system call did) — or, where the helper must close fds on the
 *    way out and so could clobber errno, -errno (client/addr.c's connect
 *    steps). No sa_err, nothing logged: the caller knows what was being done.
 *
 * 3. Die in a child. Code that runs in a forked child with nobody to return
 *    to (spawn.c's child before exec, fop_child.c's operations, the sync
 *    child) reports on its pipe in its own framing and _exit()s; and the
 *    command-line tools and sa-bench exit with a message (die()). Never in
 *    the agent's own process.
 *
 * Out-of-memory is not an error: xmalloc() and friends abort.
 */
#ifndef SA_ERR_H
#define SA_ERR_H

#include <stddef.h>

#define SA_ERR_MSG_MAX 256

struct sa_err {
    int errnum;                 /* errno, or 0 */
    const char *code;           /* static string: wire error code */
    char msg[SA_ERR_MSG_MAX];   /* human message */
    const char *stage;          /* static detail sent as the error's `stage`, or NULL */
};

/* Set *e and return -1. code NULL means "the errno's name". */
int err_set(struct sa_err *e, int errnum, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same, with errnum's strerror appended to the message: "open x: Permission denied". */
int err_sys(struct sa_err *e, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix context to the message: "ctx: old message". Returns -1. */
int err_wrap(struct sa_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_clear(struct sa_err *e);

/* The message of errnum, untranslated ("Permission denied"); never NULL.
 * glibc: strerrordesc_np, which skips strerror's gettext lookup — the agent
 * never sets a locale, so that lookup would only add the text of libc's
 * locale and message catalogue code (~40 KiB) to the RSS of an agent that
 * has logged one error (docs/PERFORMANCE.md, item 5). Elsewhere: strerror. */
const char *err_str(int errnum);

/* "ENOENT" for ENOENT; "EUNKNOWN" for values outside our table. Never NULL. */
const char *err_errno_name(int errnum);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Cleanup helpers for local owners; steal_pointer hands ownership over. */
void cleanup_freep(void *p);
void cleanup_closep(int *fd);
#define cleanup_free __attribute__((cleanup(cleanup_freep)))
#define cleanup_close __attribute__((cleanup(cleanup_closep)))
#define steal_pointer(pp) ({ __typeof__(*(pp)) _p = *(pp); *(pp) = NULL; _p; })
#define steal_fd(fdp) ({ int _fd = *(fdp); *(fdp) = -1; _fd; })

#endif
