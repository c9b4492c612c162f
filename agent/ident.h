/* ident.h — users and groups, resolved in the agent (never in a child).
 *
 * Lookups read /etc/passwd and /etc/group directly (glibc: fgetpwent_r and
 * fgetgrent_r, no NSS modules; musl has no NSS) and are cached; the cache is
 * dropped whenever /etc/passwd or /etc/group changes (mtime, size or inode),
 * so a user added inside the sandbox is seen at once.
 */
#ifndef SA_IDENT_H
#define SA_IDENT_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "err.h"

#define IDENT_CACHE_SIZE 16
#define IDENT_MAX_GROUPS 256

struct ident {
    char *name;
    uid_t uid;
    gid_t gid;
    char *home;
    char *shell;
    gid_t *groups;            /* supplementary groups, primary included */
    int ngroups;
};

struct ident_cache {
    struct ident *e[IDENT_CACHE_SIZE];
    int n;
    struct stat passwd_st, group_st;
};

/* The passwd entry of name. The pointer stays valid until the next call.
 * Unknown user: code "unknown_user". */
int ident_lookup(struct ident_cache *c, const char *name, const struct ident **out,
                 struct sa_err *e);
/* Same, by uid (for the agent's own identity in dev mode). */
int ident_lookup_uid(struct ident_cache *c, uid_t uid, const struct ident **out,
                     struct sa_err *e);
/* Who a request runs as (the identity policy of exec and file operations):
 * sudo → root, else user, else default_user. In dev mode (the agent is not
 * root) only the agent's own user, and *run is NULL ("stay as we are").
 * *env_id is whose HOME/USER/SHELL apply. A refused or unknown user (EPERM,
 * "unknown_user") has e->stage "user". The pointers are valid until the next
 * lookup. */
int ident_choose(struct ident_cache *c, bool dev, const char *default_user, const char *user,
                 bool sudo, const struct ident **env_id, const struct ident **run,
                 struct sa_err *e);
void ident_cache_free(struct ident_cache *c);

#endif
