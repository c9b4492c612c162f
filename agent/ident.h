/* ident.h — users and groups, resolved in the agent (never in a child).
 *
 * Lookups read /etc/passwd and /etc/group directly through a descriptor and
 * parse them here (no NSS modules, no stdio; both builds alike; lines up to
 * 1 MiB, longer ones are skipped) and are cached; the cache is
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

/* One line of the databases, parsed in place (the strings point into line,
 * cut at each ':'). Blanks before an entry are skipped; blank lines, '#'
 * comments, an empty name, a missing field and an id that is not a decimal
 * below 2^32-1 are no entry: -1. */
struct ident_pw {
    const char *name, *home, *shell;   /* shell: the rest of the line */
    uid_t uid;
    gid_t gid;
};
struct ident_gr {
    const char *name, *members;        /* members: "a,b,c" as written */
    gid_t gid;
};
int ident_parse_passwd(char *line, struct ident_pw *pw);
int ident_parse_group(char *line, struct ident_gr *gr);
/* Whether name is one of a group line's comma-separated members. */
bool ident_group_has(const char *members, const char *name);

#endif
