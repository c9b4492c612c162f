#include "ident.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
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

static struct ident *ident_from_pw(const struct passwd *pw)
{
    struct ident *i = xcalloc(1, sizeof *i);
    i->name = xstrdup(pw->pw_name);
    i->uid = pw->pw_uid;
    i->gid = pw->pw_gid;
    i->home = xstrdup(pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
    i->shell = xstrdup(pw->pw_shell && pw->pw_shell[0] ? pw->pw_shell : "/bin/sh");
    int n = IDENT_MAX_GROUPS;
    i->groups = xcalloc((size_t)n, sizeof(gid_t));
    if (getgrouplist(pw->pw_name, pw->pw_gid, i->groups, &n) < 0) {
        /* more than IDENT_MAX_GROUPS: keep the first ones (documented bound) */
        n = IDENT_MAX_GROUPS;
    }
    i->ngroups = n;
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
    struct passwd pw, *res = NULL;
    char buf[4096];
    int r = getpwnam_r(name, &pw, buf, sizeof buf, &res);
    if (!res) {
        if (r && r != ENOENT && r != ESRCH)
            return err_sys(e, r, "user '%s'", name);
        return err_set(e, 0, "unknown_user", "unknown user '%s'", name);
    }
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
    struct passwd pw, *res = NULL;
    char buf[4096];
    getpwuid_r(uid, &pw, buf, sizeof buf, &res);
    if (!res) {
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
