/* ctl.h — what sandboxctl's files share: the plumbing in ctl_common.c
 * (connecting, messages, output) and each command file's verbs (verb_*:
 * `cmd_` is the agent's command table only, docs/agent.md "Naming"), which
 * sandboxctl.c's dispatch table calls. Not a library API. */
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

/* ctl_common.c */

/* Our terminal is in raw mode (exec -t): messages end in "\r\n". */
extern bool tty_raw;
/* --token-file, or $SANDBOX_AGENT_TOKEN_FILE: presented when the agent asks. */
extern const char *token_file;

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
/* Log positions [from, to) of a command's output are gone: a message. */
void report_gap(uint64_t from, uint64_t to);

/* ctl_codec.c (no agent) */
int verb_encode(int argc, char **argv);
int verb_decode(int argc, char **argv);

/* ctl_exec.c */
int verb_exec(const char *addr, int argc, char **argv);

/* ctl_cmds.c */
int verb_ping(const char *addr, int argc, char **argv);
int verb_logs(const char *addr, int argc, char **argv);
int verb_wait(const char *addr, int argc, char **argv);
int verb_kill(const char *addr, int argc, char **argv);
int verb_release(const char *addr, int argc, char **argv);
int verb_inspect(const char *addr, int argc, char **argv);
int verb_ps(const char *addr, int argc, char **argv);
int verb_stats(const char *addr, int argc, char **argv);

/* ctl_files.c */
int verb_upload(const char *addr, int argc, char **argv);
int verb_download(const char *addr, int argc, char **argv);
int verb_fget(const char *addr, int argc, char **argv);
int verb_put(const char *addr, int argc, char **argv);
int verb_stat(const char *addr, int argc, char **argv);
int verb_ls(const char *addr, int argc, char **argv);
int verb_mkdir(const char *addr, int argc, char **argv);
int verb_rm(const char *addr, int argc, char **argv);
int verb_mv(const char *addr, int argc, char **argv);
int verb_chmod(const char *addr, int argc, char **argv);

/* ctl_forward.c */
int verb_forward(const char *addr, int argc, char **argv);

#endif
