#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((format(printf, 4, 0)))
static void err_vset(struct sa_err *e, int errnum, const char *code, const char *fmt, va_list ap)
{
    e->errnum = errnum;
    e->code = code ? code : err_errno_name(errnum);
    e->stage = NULL;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
}

int err_set(struct sa_err *e, int errnum, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, errnum, code, fmt, ap);
    va_end(ap);
    return -1;
}

int err_sys(struct sa_err *e, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, errnum, NULL, fmt, ap);
    va_end(ap);
    size_t n = strlen(e->msg);
    snprintf(e->msg + n, sizeof e->msg - n, ": %s", err_str(errnum));
    return -1;
}

int err_wrap(struct sa_err *e, const char *fmt, ...)
{
    char prefix[SA_ERR_MSG_MAX], old[SA_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    /* truncation is fine: messages are bounded by design */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(e->msg, prefix, n);
    if (n + 2 < sizeof e->msg) {
        e->msg[n++] = ':';
        e->msg[n++] = ' ';
    }
    size_t rest = strnlen(old, sizeof old);
    if (rest > sizeof e->msg - 1 - n)
        rest = sizeof e->msg - 1 - n;
    memcpy(e->msg + n, old, rest);
    e->msg[n + rest] = '\0';
    return -1;
}

void err_clear(struct sa_err *e)
{
    e->errnum = 0;
    e->code = NULL;
    e->stage = NULL;
    e->msg[0] = '\0';
}

const char *err_str(int errnum)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *s = strerrordesc_np(errnum);
    return s ? s : "Unknown error";
#else
    return strerror(errnum);
#endif
}

/* Our own table: strerrorname_np is glibc-only (the static build uses musl). */
const char *err_errno_name(int errnum)
{
    switch (errnum) {
#define N(x) case x: return #x;
    N(EPERM) N(ENOENT) N(ESRCH) N(EINTR) N(EIO) N(ENXIO) N(E2BIG) N(ENOEXEC)
    N(EBADF) N(ECHILD) N(EAGAIN) N(ENOMEM) N(EACCES) N(EFAULT) N(EBUSY)
    N(EEXIST) N(EXDEV) N(ENODEV) N(ENOTDIR) N(EISDIR) N(EINVAL) N(ENFILE)
    N(EMFILE) N(ENOTTY) N(ETXTBSY) N(EFBIG) N(ENOSPC) N(ESPIPE) N(EROFS)
    N(EMLINK) N(EPIPE) N(ERANGE) N(ENAMETOOLONG) N(ENOSYS) N(ENOTEMPTY)
    N(ELOOP) N(EDQUOT) N(ENOTSUP) N(ECONNRESET) N(ETIMEDOUT) N(ECONNREFUSED)
    N(EOVERFLOW) N(ELIBBAD) N(ECANCELED) N(EPROTO)
#undef N
    default: return "EUNKNOWN";
    }
}

static void *oom(void)
{
    static const char msg[] = "out of memory\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : oom();
}

void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    return p ? p : oom();
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom();
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    return p ? p : oom();
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    return p ? p : oom();
}

void cleanup_freep(void *p)
{
    free(*(void **)p);
}

void cleanup_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
