/* ctl_common.c — sandboxctl's shared plumbing: messages, writing output,
 * connecting (and authenticating) to the agent, and the small helpers the
 * command files share (ctl.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "client.h"
#include "ctl.h"
#include "err.h"

/* --- messages ------------------------------------------------------------- */

bool tty_raw;           /* our terminal is in raw mode (exec -t) */

void warnmsg(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* in raw mode "\n" does not return the carriage */
    fprintf(stderr, "sandboxctl: %s%s", line, tty_raw ? "\r\n" : "\n");
}

int usage_error(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sandboxctl: %s\nTry 'sandboxctl --help'.\n", line);
    return EXIT_USAGE;
}

/* The option getopt_long just stumbled on, for a message. */
const char *opt_name(char **argv)
{
    static char name[4];
    if (optopt > 0 && optopt < 256) {
        snprintf(name, sizeof name, "-%c", optopt);
        return name;
    }
    return argv[optind - 1];
}

/* --- output --------------------------------------------------------------- */

/* Write all of p to fd, waiting when fd is non-blocking. 0, or -errno (the
 * caller decides: EPIPE means the reader is gone). */
int write_full(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                poll(&pf, 1, -1);
                continue;
            }
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Log positions [from, to) of a command's output are gone (a gap event, or
 * positions the agent skipped without one). */
void report_gap(uint64_t from, uint64_t to)
{
    warnmsg("%" PRIu64 " bytes of output were dropped (log positions %" PRIu64 "..%" PRIu64 ")",
            to - from, from, to);
}

/* --- connecting ----------------------------------------------------------- */

/* 0 when there is an address to connect to, else a usage error's status. */
int need_addr(const char *addr)
{
    if (addr && *addr)
        return 0;
    return usage_error("no agent address: give -c ADDR or set SANDBOX_AGENT_ADDR");
}

/* --token-file, or $SANDBOX_AGENT_TOKEN_FILE: presented when the agent asks. */
const char *token_file;

int ctl_connect(const char *addr, struct client **out, struct sa_err *e)
{
    struct client *c;
    if (client_connect(addr, -1, &c, e) < 0)
        return -1;
    if (client_hello(c)->auth_required) {
        char token[4096 + 2];
        size_t len = 0;
        int r = (token_file && client_read_token(token_file, token, sizeof token, &len, e) < 0) ||
                client_auth(c, token, len, e) < 0;
        explicit_bzero(token, sizeof token);
        if (r) {
            client_free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

struct client *connect_or_die(const char *addr)
{
    struct client *c;
    struct sa_err e;
    if (ctl_connect(addr, &c, &e) < 0) {
        warnmsg("%s", e.msg);
        exit(EXIT_CONN);
    }
    return c;
}

/* 0 when the agent lists capability cap, else a message and EXIT_USAGE. */
int need_cap(struct client *c, const char *cap, const char *what)
{
    if (client_has_cap(c, cap))
        return 0;
    warnmsg("%s: not supported by this agent (no '%s' capability)", what, cap);
    return EXIT_USAGE;
}

/* --- shared by the verb files --------------------------------------------- */

/* A decimal u64 (0 allowed), nothing else. 0 or -1. */
int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
}

struct client *connect_cap(const char *addr, const char *cap, const char *what, int *rc)
{
    *rc = need_addr(addr);
    if (*rc != 0)
        return NULL;
    struct client *c = connect_or_die(addr);
    *rc = need_cap(c, cap, what);
    if (*rc == 0)
        return c;
    client_free(c);
    return NULL;
}

/* Exit status after a call that did not succeed (message printed): 1 for an
 * error reply, 255 for a failed connection. */
int call_failed(const char *what, int rc, const struct sa_err *e)
{
    warnmsg("%s: %s", what, e->msg);
    return rc < 0 ? EXIT_CONN : EXIT_FAILED;
}

/* Write b to stdout: 0, or EXIT_FAILED (quietly when the reader left). */
int out_flush(struct buf *b, const char *what)
{
    int r = write_full(STDOUT_FILENO, buf_ptr(b), buf_size(b));
    buf_reset(b, 1u << 20);
    if (r == 0)
        return 0;
    if (r != -EPIPE)
        warnmsg("%s: stdout: %s", what, strerror(-r));
    return EXIT_FAILED;
}
