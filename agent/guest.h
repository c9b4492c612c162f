/* guest.h — guest duties (PROTOCOL.md "Guest duties — guest"), one file per
 * concern: the shared token (guest_auth.c), session-wide defaults
 * (guest_session.c), snapshot/restore support: sync, clock, entropy,
 * generation (guest_snap.c), the stats reply (guest_stats.c), shutdown and
 * the agent's OOM protection (guest_shutdown.c).
 *
 * The request handlers are called by request.c, which parsed and checked
 * their fields (the arguments and structs below; strings point into the
 * decode zone). Bounds: a token is at most CFG_TOKEN_MAX bytes (compared in
 * constant time), session env at most GUEST_ENV_MAX entries and
 * GUEST_ENV_BYTES bytes ("K=V\0" each), add_entropy 1..GUEST_ENTROPY_MAX
 * bytes, the stats command list what fits in one frame.
 */
#ifndef SA_GUEST_H
#define SA_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "msg.h"

#define GUEST_ENV_MAX 1024
#define GUEST_ENV_BYTES (64u << 10)
#define GUEST_ENTROPY_MAX 4096
#define GUEST_TIME_MAX_MS 253402300799999ull   /* 9999-12-31T23:59:59.999Z */

struct agent;
struct conn;

/* `set_defaults {env?, cwd?, user?}`: NULL / has_env false for what is not
 * given. env is "K=V" pointers, NULL, then the strings, in one allocation
 * that guest_set_defaults takes over (NULL after it returns 0). */
struct guest_defaults_req {
    const char *cwd;            /* non-empty, < PATH_MAX bytes; relative: below the workdir */
    const char *user;
    bool has_env;
    char **env;
    size_t envc;
};

/* --- guest_auth.c --- */

/* The gate in front of every request: 0 when c may make request r (it has
 * authenticated, no token is configured, or r is `auth`); else -1 with
 * code "auth_required" (logged). */
int guest_check_auth(struct conn *c, const struct wire_req *r, struct sa_err *e);

/* `auth {token}`: the token's bytes (bin or str). */
int guest_auth(struct conn *c, const struct wire_req *r, const char *tok, size_t n,
               struct sa_err *e);

/* --- guest_session.c --- */

int guest_set_defaults(struct conn *c, const struct wire_req *r, struct guest_defaults_req *q,
                       struct sa_err *e);
/* Free the session defaults and the pending syncs (agent exit). */
void guest_free(struct agent *a);

/* --- guest_snap.c --- */

int guest_sync(struct conn *c, const struct wire_req *r, struct sa_err *e);
/* ms: at most GUEST_TIME_MAX_MS. */
int guest_set_time(struct conn *c, const struct wire_req *r, uint64_t ms, struct sa_err *e);
/* 1..GUEST_ENTROPY_MAX bytes. */
int guest_add_entropy(struct conn *c, const struct wire_req *r, const char *p, size_t n,
                      struct sa_err *e);
int guest_restored(struct conn *c, const struct wire_req *r, struct sa_err *e);
/* Stop watching the sync children (they finish on their own); guest_free. */
void guest_syncs_free(struct agent *a);

/* --- guest_stats.c --- */

int guest_stats(struct conn *c, const struct wire_req *r, struct sa_err *e);

/* --- guest_shutdown.c --- */

/* ok, then init_shutdown(): the graceful stop, in every mode (init.h). */
int guest_shutdown(struct conn *c, const struct wire_req *r, struct sa_err *e);

/* At start-up, as root: oom_score_adj -1000 (a warning when that fails).
 * Commands set theirs back to 0 (spawn.c). */
void guest_oom_protect(void);

#endif
