#include "ident.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdio.h"

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
 * RSS). The files are read through a descriptor and parsed here, one
 * passwd(5)/group(5) line at a time, in both builds: glibc's
 * fgetpwent_r/fgetgrent_r would bring stdio and libc's NSS line parser, a
 * 64 KiB stretch of libc's text that nothing else in the agent touches, into
 * the RSS of every idle agent (docs/PERFORMANCE.md, item 5). */
#define IDENT_PASSWD "/etc/passwd"
#define IDENT_GROUP "/etc/group"
#define IDENT_LINE_BUF 4096             /* first size of the line buffer */
#define IDENT_LINE_MAX (1u << 20)       /* longest passwd/group line read; longer ones are skipped */

/* The next ':'-terminated field of *p, cut off with a NUL: NULL when the
 * line ends first. */
static char *field(char **p)
{
    char *f = *p, *colon = strchr(f, ':');
    if (!colon)
        return NULL;
    *colon = '\0';
    *p = colon + 1;
    return f;
}

/* A uid or gid: decimal digits only, below (uid_t)-1. */
static bool parse_id(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v >= UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* The first n fields of an entry line; blanks before it are skipped, and a
 * blank or '#' line is no entry (as glibc's files parser). *rest is what
 * follows the n-th ':'. */
static bool fields(char *line, char **f, int n, const char **rest)
{
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return false;
    for (int i = 0; i < n; i++)
        if (!(f[i] = field(&p)))
            return false;
    *rest = p;
    return f[0][0] != '\0';
}

int ident_parse_passwd(char *line, struct ident_pw *pw)
{
    char *f[6];          /* name:password:uid:gid:gecos:home, then the shell */
    if (!fields(line, f, 6, &pw->shell) || !parse_id(f[2], &pw->uid) || !parse_id(f[3], &pw->gid))
        return -1;
    pw->name = f[0];
    pw->home = f[5];
    return 0;
}

int ident_parse_group(char *line, struct ident_gr *gr)
{
    char *f[3];          /* name:password:gid, then the members */
    if (!fields(line, f, 3, &gr->members) || !parse_id(f[2], &gr->gid))
        return -1;
    gr->name = f[0];
    return 0;
}

bool ident_group_has(const char *members, const char *name)
{
    size_t n = strlen(name);
    for (const char *m = members, *end; *m; m = *end ? end + 1 : end) {
        end = strchrnul(m, ',');
        if ((size_t)(end - m) == n && n && memcmp(m, name, n) == 0)
            return true;
    }
    return false;
}

/* Every line of path through fn until it returns true: 1 when it did, 0 at
 * the end (or when the file does not exist), -errno when it cannot be read. */
static int db_scan(const char *path, bool (*fn)(char *line, void *arg), void *arg)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct fd_lines l;
    fd_lines_init_grow(&l, fd, IDENT_LINE_BUF, IDENT_LINE_MAX);
    char *line;
    int r;
    while ((r = fd_lines_next(&l, &line)) > 0 && !fn(line, arg))
        ;
    int en = errno;
    fd_lines_free(&l);
    return r < 0 ? -en : r;
}

struct grscan {
    const char *name;
    gid_t *out;
    int n, max;
};

static bool group_line(char *line, void *arg)
{
    struct grscan *s = arg;
    struct ident_gr gr;
    if (ident_parse_group(line, &gr) < 0 || !ident_group_has(gr.members, s->name))
        return false;
    for (int k = 0; k < s->n; k++)
        if (s->out[k] == gr.gid)
            return false;
    s->out[s->n++] = gr.gid;
    return s->n == s->max;
}

/* getgrouplist from /etc/group: gid first, then every group listing name
 * (the first max; a group file that cannot be read gives the gid alone). */
static int group_list(const char *name, gid_t gid, gid_t *out, int max)
{
    struct grscan s = {.name = name, .out = out, .n = 1, .max = max};
    out[0] = gid;
    if (max > 1)
        db_scan(IDENT_GROUP, group_line, &s);
    return s.n;
}

static struct ident *ident_new(const struct ident_pw *pw)
{
    struct ident *i = xcalloc(1, sizeof *i);
    i->name = xstrdup(pw->name);
    i->uid = pw->uid;
    i->gid = pw->gid;
    i->home = xstrdup(pw->home[0] ? pw->home : "/");
    i->shell = xstrdup(pw->shell[0] ? pw->shell : "/bin/sh");
    i->groups = xcalloc(IDENT_MAX_GROUPS, sizeof(gid_t));
    i->ngroups = group_list(i->name, i->gid, i->groups, IDENT_MAX_GROUPS);
    return i;
}

struct pwscan {
    const char *name;        /* or NULL: by uid */
    uid_t uid;
    struct ident *found;
};

static bool passwd_line(char *line, void *arg)
{
    struct pwscan *s = arg;
    struct ident_pw pw;
    if (ident_parse_passwd(line, &pw) < 0 ||
        !(s->name ? strcmp(pw.name, s->name) == 0 : pw.uid == s->uid))
        return false;
    s->found = ident_new(&pw);
    return true;
}

/* The passwd entry of name (or of uid when name is NULL) as a new ident:
 * 1 found, 0 not, -errno when /etc/passwd cannot be read. */
static int pw_find(const char *name, uid_t uid, struct ident **out)
{
    struct pwscan s = {.name = name, .uid = uid};
    int r = db_scan(IDENT_PASSWD, passwd_line, &s);
    *out = s.found;
    return r;
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
    struct ident *i;
    int r = pw_find(name, 0, &i);
    if (r < 0)
        return err_sys(e, -r, "user '%s': %s", name, IDENT_PASSWD);
    if (r == 0)
        return err_set(e, 0, "unknown_user", "unknown user '%s'", name);
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
    struct ident *i;
    if (pw_find(NULL, uid, &i) <= 0) {
        /* no passwd entry (containers): an identity with what we know */
        char name[32];
        snprintf(name, sizeof name, "%u", (unsigned)uid);
        const char *home = getenv("HOME");
        struct ident_pw fake = {.name = name, .uid = uid, .gid = getgid(),
                                .home = home ? home : "/", .shell = ""};
        i = ident_new(&fake);
        i->ngroups = 1;
        i->groups[0] = getgid();
        ident_insert(c, i);
        *out = i;
        (void)e;
        return 0;
    }
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
