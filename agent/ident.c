#include "ident.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void ident_free(struct ident *i)
{
    if (!i)
        return;
    free(i->name);
    free(i->home);
    free(i->shell);
    free(i->groups);
    free(i);
}

void ident_cache_free(struct ident_cache *c)
{
    for (int i = 0; i < c->n; i++)
        ident_free(c->e[i]);
    c->n = 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Drop the cache when the databases changed since it was filled. */
static void ident_revalidate(struct ident_cache *c)
{
    struct stat p = {0}, g = {0};
    stat("/etc/passwd", &p);
    stat("/etc/group", &g);
    if (!same_file(&p, &c->passwd_st) || !same_file(&g, &c->group_st)) {
        ident_cache_free(c);
        c->passwd_st = p;
        c->group_st = g;
    }
}

/* Users and groups come from /etc/passwd and /etc/group themselves, never
 * through NSS: glibc's NSS modules (libnss_systemd with libcap and libm on
 * Debian) would load into the agent for its whole life (about 550 KiB of
 * RSS), and the static (musl) build reads the files anyway, so both builds
 * resolve the same users. */
#define IDENT_PASSWD "/etc/passwd"
#define IDENT_GROUP "/etc/group"
#define IDENT_LINE_MAX (1u << 20)       /* longest passwd/group line read */

#ifdef __GLIBC__
/* The next entry of f into *buf (grown on ERANGE up to IDENT_LINE_MAX):
 * 0, ENOENT at the end, or an errno. */
static int next_pw(FILE *f, struct passwd *pw, char **buf, size_t *n)
{
    for (;;) {
        struct passwd *res;
        int r = fgetpwent_r(f, pw, *buf, *n, &res);
        if (r != ERANGE || *n >= IDENT_LINE_MAX)
            return r;
        *n *= 2;                          /* glibc rewinds to the line's start */
        *buf = xrealloc(*buf, *n);
    }
}

static int next_gr(FILE *f, struct group *gr, char **buf, size_t *n)
{
    for (;;) {
        struct group *res;
        int r = fgetgrent_r(f, gr, *buf, *n, &res);
        if (r != ERANGE || *n >= IDENT_LINE_MAX)
            return r;
        *n *= 2;
        *buf = xrealloc(*buf, *n);
    }
}

/* The passwd entry of name (or of uid when name is NULL): 1 found, 0 not,
 * -errno when the file cannot be read. *buf backs *pw's strings. */
static int pw_find(const char *name, uid_t uid, struct passwd *pw, char **buf, size_t *n)
{
    FILE *f = fopen(IDENT_PASSWD, "re");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    int found = 0;
    while (!found && next_pw(f, pw, buf, n) == 0)
        found = name ? strcmp(pw->pw_name, name) == 0 : pw->pw_uid == uid;
    fclose(f);
    return found;
}

/* getgrouplist from /etc/group: gid first, then every group listing name. */
static int group_list(const char *name, gid_t gid, gid_t *out, int max)
{
    int n = 0;
    out[n++] = gid;
    FILE *f = fopen(IDENT_GROUP, "re");
    if (!f)
        return n;
    size_t cap = 4096;
    char *buf = xmalloc(cap);
    struct group gr;
    while (n < max && next_gr(f, &gr, &buf, &cap) == 0) {
        bool member = false, dup = false;
        for (char **m = gr.gr_mem; m && *m && !member; m++)
            member = strcmp(*m, name) == 0;
        for (int k = 0; k < n && member && !dup; k++)
            dup = out[k] == gr.gr_gid;
        if (member && !dup)
            out[n++] = gr.gr_gid;
    }
    free(buf);
    fclose(f);
    return n;
}
#else
/* musl: its own lookups read the files (no NSS). */
static int pw_find(const char *name, uid_t uid, struct passwd *pw, char **buf, size_t *n)
{
    struct passwd *res = NULL;
    int r = name ? getpwnam_r(name, pw, *buf, *n, &res) : getpwuid_r(uid, pw, *buf, *n, &res);
    if (res)
        return 1;
    return r && r != ENOENT && r != ESRCH ? -r : 0;
}

static int group_list(const char *name, gid_t gid, gid_t *out, int max)
{
    int n = max;
    if (getgrouplist(name, gid, out, &n) < 0)
        n = max;              /* more than max: keep the first ones (documented bound) */
    return n;
}
#endif

static struct ident *ident_from_pw(const struct passwd *pw)
{
    struct ident *i = xcalloc(1, sizeof *i);
    i->name = xstrdup(pw->pw_name);
    i->uid = pw->pw_uid;
    i->gid = pw->pw_gid;
    i->home = xstrdup(pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
    i->shell = xstrdup(pw->pw_shell && pw->pw_shell[0] ? pw->pw_shell : "/bin/sh");
    i->groups = xcalloc(IDENT_MAX_GROUPS, sizeof(gid_t));
    i->ngroups = group_list(pw->pw_name, pw->pw_gid, i->groups, IDENT_MAX_GROUPS);
    return i;
}

static void ident_insert(struct ident_cache *c, struct ident *i)
{
    if (c->n == IDENT_CACHE_SIZE)
        ident_cache_free(c);
    c->e[c->n++] = i;
}

int ident_lookup(struct ident_cache *c, const char *name, const struct ident **out,
                 struct sa_err *e)
{
    ident_revalidate(c);
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i]->name, name) == 0) {
            *out = c->e[i];
            return 0;
        }
    struct passwd pw;
    size_t n = 4096;
    cleanup_free char *buf = xmalloc(n);
    int r = pw_find(name, 0, &pw, &buf, &n);
    if (r < 0)
        return err_sys(e, -r, "user '%s': %s", name, IDENT_PASSWD);
    if (r == 0)
        return err_set(e, 0, "unknown_user", "unknown user '%s'", name);
    struct ident *i = ident_from_pw(&pw);
    ident_insert(c, i);
    *out = i;
    return 0;
}

int ident_lookup_uid(struct ident_cache *c, uid_t uid, const struct ident **out,
                     struct sa_err *e)
{
    ident_revalidate(c);
    for (int i = 0; i < c->n; i++)
        if (c->e[i]->uid == uid) {
            *out = c->e[i];
            return 0;
        }
    struct passwd pw;
    size_t n = 4096;
    cleanup_free char *buf = xmalloc(n);
    if (pw_find(NULL, uid, &pw, &buf, &n) <= 0) {
        /* no passwd entry (containers): an identity with what we know */
        char name[32];
        snprintf(name, sizeof name, "%u", (unsigned)uid);
        const char *home = getenv("HOME");
        struct passwd fake = {.pw_name = name, .pw_uid = uid, .pw_gid = getgid(),
                              .pw_dir = (char *)(home ? home : "/"), .pw_shell = (char *)"/bin/sh"};
        struct ident *i = ident_from_pw(&fake);
        i->ngroups = 1;
        i->groups[0] = getgid();
        ident_insert(c, i);
        *out = i;
        (void)e;
        return 0;
    }
    struct ident *i = ident_from_pw(&pw);
    ident_insert(c, i);
    *out = i;
    return 0;
}

int ident_choose(struct ident_cache *c, bool dev, const char *default_user, const char *user,
                 bool sudo, const struct ident **env_id, const struct ident **run,
                 struct sa_err *e)
{
    if (dev) {
        if (sudo || (user && strcmp(user, default_user) != 0)) {
            err_set(e, EPERM, NULL, "dev mode: the agent is not root and runs every command as "
                                    "itself (%s)", default_user);
            e->stage = "user";
            return -1;
        }
        *run = NULL;
        return ident_lookup_uid(c, getuid(), env_id, e);
    }
    const char *name = sudo ? "root" : user ? user : default_user;
    if (ident_lookup(c, name, run, e) < 0) {
        e->stage = "user";
        return -1;
    }
    *env_id = *run;
    return 0;
}
