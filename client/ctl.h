/* ctl.h — what sandboxctl's command files share (sandboxctl.c: connecting,
 * messages, output; ctl_files.c: the file commands). Not a library API. */
#ifndef SA_CTL_H
#define SA_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "client.h"
#include "err.h"

#define EXIT_BAD_INPUT 1
#define EXIT_FAILED 1                   /* an error reply, output not writable */
#define EXIT_USAGE 2
#define EXIT_WAIT_TIMEOUT 124           /* as timeout(1) */
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define EXIT_CONN 255

/* "sandboxctl: MESSAGE" on stderr. */
void warnmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same plus a --help hint; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The option getopt_long just stumbled on, for a message. */
const char *opt_name(char **argv);
/* Write all of p to fd, waiting when fd is non-blocking. 0 or -errno. */
int write_full(int fd, const void *p, size_t n);
/* 0 when there is an address, else a usage error's status. */
int need_addr(const char *addr);
/* Connect (and authenticate when asked); exits EXIT_CONN on failure. */
struct client *connect_or_die(const char *addr);
/* The same, returning -1 with e instead of exiting (thread-safe). */
int ctl_connect(const char *addr, struct client **out, struct sa_err *e);
/* Connect and check for capability cap: NULL with *rc set when there is no
 * address or the agent lacks it; exits EXIT_CONN when connecting fails. */
struct client *connect_cap(const char *addr, const char *cap, const char *what, int *rc);
/* 0 when the agent lists cap, else a message and EXIT_USAGE. */
int need_cap(struct client *c, const char *cap, const char *what);
/* Exit status after a failed call (message printed): 1 error reply, 255 connection. */
int call_failed(const char *what, int rc, const struct sa_err *e);
/* Write b to stdout and empty it: 0 or EXIT_FAILED. */
int out_flush(struct buf *b, const char *what);
/* A decimal u64, nothing else: 0 or -1. */
int parse_u64(const char *s, uint64_t *v);

/* ctl_files.c */
int cmd_upload(const char *addr, int argc, char **argv);
int cmd_download(const char *addr, int argc, char **argv);
int cmd_fget(const char *addr, int argc, char **argv);
int cmd_put(const char *addr, int argc, char **argv);
int cmd_stat(const char *addr, int argc, char **argv);
int cmd_ls(const char *addr, int argc, char **argv);
int cmd_mkdir(const char *addr, int argc, char **argv);
int cmd_rm(const char *addr, int argc, char **argv);
int cmd_mv(const char *addr, int argc, char **argv);
int cmd_chmod(const char *addr, int argc, char **argv);

/* ctl_forward.c */
int cmd_forward(const char *addr, int argc, char **argv);

#endif
