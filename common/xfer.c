/* xfer.c — tar extraction confined to a directory, and tar packing.
 *
 * libarchive parses and writes the tar format; every file-system operation is
 * ours. The rules (docs/files.md has the reasons):
 *   - an archive name is cleaned first: absolute names and `..` components are
 *     refused, empty and `.` components dropped;
 *   - every path is resolved relative to the destination fd with openat2
 *     RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS (symlinks that stay inside are
 *     followed in parent paths, one that leaves fails with EXDEV and the entry
 *     is refused); without openat2, a component-by-component O_NOFOLLOW walk
 *     that follows no symlink at all;
 *   - a new file, symlink, hardlink or node is made under a temporary name in
 *     its parent directory and renamed over the final name, so a symlink at the
 *     final name is replaced, never written through;
 *   - directory modes and times are applied at the end (the directory's own
 *     mtime changes while it is filled), each directory reopened beneath the
 *     destination with O_NOFOLLOW, so a directory swapped for a symlink in the
 *     meantime is not touched.
 */
#include "xfer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fdio.h"
#include "wire.h"

#if defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define XFER_HAVE_OPENAT2_H 1
#endif
#endif
#ifndef XFER_HAVE_OPENAT2_H
struct open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_BENEATH 0x08
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* ------------------------------------------------------------------------ */
/* Helpers shared by both directions.                                         */

/* Non-ASCII names: pax stores UTF-8, and libarchive converts it to the
 * current locale's charset — lossily ('?') in the "C" locale. The helper is
 * ours alone, so a UTF-8 LC_CTYPE for this thread keeps names byte-exact. */
struct xfer_locale {
    locale_t mine, prev;
};

static void locale_enter(struct xfer_locale *l)
{
    l->prev = (locale_t)0;
    l->mine = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    if (l->mine != (locale_t)0)
        l->prev = uselocale(l->mine);
}

static void locale_leave(struct xfer_locale *l)
{
    if (l->mine == (locale_t)0)
        return;
    uselocale(l->prev);
    freelocale(l->mine);
    l->mine = (locale_t)0;
}

static void copy_path(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* Open path beneath dirfd. Symlinks inside are followed in parent components
 * (and in the last one unless flags has O_NOFOLLOW); anything resolving
 * outside fails with EXDEV. Without openat2, no symlink is followed at all. */
static int beneath_open(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    for (int tries = 0; tries < 16; tries++) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0)
            return (int)fd;
        if (errno == EINTR || errno == EAGAIN)   /* EAGAIN: a rename raced the lookup */
            continue;
        if (errno != ENOSYS)
            return -1;
        break;
    }
    if (errno != ENOSYS)
        return -1;

    /* Fallback: one component at a time, never following a symlink. */
    if (path[0] == '/' || path[0] == '\0') {
        errno = path[0] ? EXDEV : ENOENT;
        return -1;
    }
    char *copy cleanup_free = xstrdup(path);
    int cur = -1;   /* -1: dirfd itself */
    char *save = NULL;
    char *comp = strtok_r(copy, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        if (strcmp(comp, "..") == 0) {
            if (cur >= 0)
                close(cur);
            errno = EXDEV;
            return -1;
        }
        int base = cur >= 0 ? cur : dirfd;
        int fd = next ? openat(base, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : openat(base, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        int saved = errno;
        if (cur >= 0)
            close(cur);
        if (fd < 0) {
            errno = saved;
            return -1;
        }
        cur = fd;
        comp = next;
    }
    if (cur < 0)
        cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    return cur;
}

/* ------------------------------------------------------------------------ */
/* Results.                                                                   */

void xfer_result_init(struct xfer_result *r)
{
    memset(r, 0, sizeof *r);
    err_clear(&r->error.err);
}

void xfer_result_free(struct xfer_result *r)
{
    for (size_t i = 0; i < r->nrefused; i++)
        free(r->refused[i].path);
    r->nrefused = 0;
}

static void refuse(struct xfer_result *r, const char *path, const char *reason)
{
    if (r->nrefused >= XFER_REFUSED_MAX) {
        r->refused_more++;
        return;
    }
    size_t n = strnlen(path ? path : "", XFER_REFUSED_PATH_MAX);
    r->refused[r->nrefused].path = xstrndup(path ? path : "", n);
    r->refused[r->nrefused].reason = reason;
    r->nrefused++;
}

/* Refusals listed in a reply frame: as many as fit in max_frame with room
 * for the other fields (XFER_REPLY_SLACK), the rest go to refused_more. */
#define XFER_REPLY_SLACK 2048

void xfer_result_encode(const struct xfer_result *r, uint64_t id, uint32_t max_frame,
                        struct buf *out)
{
    size_t budget = max_frame > XFER_REPLY_SLACK ? max_frame - XFER_REPLY_SLACK : 0;
    size_t listed = 0, used = 0;
    for (; listed < r->nrefused; listed++) {
        size_t cost = strlen(r->refused[listed].path) + strlen(r->refused[listed].reason) + 32;
        if (used + cost > budget)
            break;
        used += cost;
    }
    struct wire_enc w;
    wire_begin(&w, out);
    wire_kv_str(&w, "type", r->failed ? "error" : "end");
    wire_kv_uint(&w, "id", id);
    if (r->failed) {
        wire_kv_str(&w, "code", r->error.err.code ? r->error.err.code : "internal");
        wire_kv_str(&w, "message", r->error.err.msg);
        wire_kv_str(&w, "path", r->error.path);
    }
    wire_kv_uint(&w, "entries", r->entries);
    wire_kv_uint(&w, "bytes", r->bytes);
    wire_key(&w, "refused");
    msgpack_pack_array(&w.pk, (uint32_t)listed);
    for (size_t i = 0; i < listed; i++) {
        unsigned entry = wire_map_begin(&w);
        wire_kv_str(&w, "path", r->refused[i].path);
        wire_kv_str(&w, "reason", r->refused[i].reason);
        wire_map_end(&w, entry);
    }
    wire_kv_uint(&w, "refused_more", r->refused_more + (r->nrefused - listed));
    wire_end(&w);
}

bool xfer_has_zstd(void)
{
    struct archive *a = archive_read_new();
    bool ok = archive_read_support_filter_zstd(a) == ARCHIVE_OK;
    archive_read_free(a);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Extraction.                                                                */

struct fixup {
    char *path;             /* cleaned, relative to the destination */
    dev_t dev;              /* the directory seen when its entry was handled: */
    ino_t ino;              /* its metadata goes to that one only */
    mode_t mode;
    bool has_mtime, chown, existed;
    struct timespec mtime;
    uid_t uid;
    gid_t gid;
};

struct xctx {
    const struct xfer_extract_opts *o;
    struct xfer_result *r;
    struct archive *a;
    int dest;
    uint64_t max_bytes, max_entries, consumed, seen;
    char *cache_path;       /* parent directory whose fd is cached, or NULL */
    int cache_fd;
    struct fixup *fix;
    size_t nfix, capfix, fixbytes;
    unsigned tmpseq;
};

static int fail(struct xctx *c, int errnum, const char *code, const char *path, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

static int fail(struct xctx *c, int errnum, const char *code, const char *path, const char *fmt,
                ...)
{
    char msg[SA_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->r->failed = true;
    if (code)
        err_set(&c->r->error.err, errnum, code, "%s", msg);
    else
        err_sys(&c->r->error.err, errnum, "%s", msg);
    copy_path(c->r->error.path, sizeof c->r->error.path, path);
    return -1;
}

/* Errors that end the whole extraction rather than one entry. */
static bool errno_is_fatal(int e)
{
    switch (e) {
    case ENOSPC: case EDQUOT: case EIO: case EROFS: case EACCES: case EPERM:
    case ENOMEM: case EMFILE: case ENFILE: case EFBIG: case EBADF:
        return true;
    default:
        return false;
    }
}

static const char *errno_reason(int e)
{
    switch (e) {
    case EXDEV: return "path leaves the destination";
    case ELOOP: return "symlink in the path";
    case ENOTDIR: return "a parent is not a directory";
    case EISDIR: case ENOTEMPTY: case EEXIST: return "a directory is in the way";
    case ENAMETOOLONG: return "name too long";
    default: return err_errno_name(e);
    }
}

/* An entry-level system error: refuse the entry, or stop everything. */
static int entry_errno(struct xctx *c, int e, const char *path, const char *op)
{
    if (errno_is_fatal(e))
        return fail(c, e, NULL, path, "%s %.120s", op, path);
    refuse(c->r, path, errno_reason(e));
    return 0;
}

/* Clean an archive name into out ("a/b/c", or "" for the destination).
 * NULL on success, else the reason for refusing it. */
static const char *clean_name(const char *in, char *out, size_t outsz)
{
    if (!in || !in[0])
        return "empty name";
    if (in[0] == '/')
        return "absolute path";
    size_t o = 0;
    const char *p = in;
    while (*p) {
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - s);
        while (*p == '/')
            p++;
        if (n == 0 || (n == 1 && s[0] == '.'))
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return "'..' in path";
        if (n > NAME_MAX)
            return "name too long";
        if (o + n + 2 > outsz)
            return "name too long";
        if (o)
            out[o++] = '/';
        memcpy(out + o, s, n);
        o += n;
    }
    out[o] = '\0';
    return NULL;
}

/* Split "a/b/c" into parent "a/b" (in place) and leaf "c"; parent "" for "c". */
static void split(char *path, char **parent, const char **leaf)
{
    char *slash = strrchr(path, '/');
    if (!slash) {
        *parent = path + strlen(path);   /* "" */
        *leaf = path;
        return;
    }
    *slash = '\0';
    *parent = path;
    *leaf = slash + 1;
}

static void cache_drop(struct xctx *c)
{
    free(c->cache_path);
    c->cache_path = NULL;
    if (c->cache_fd >= 0)
        close(c->cache_fd);
    c->cache_fd = -1;
}

/* Something now stands at path: a cached parent at or under it is stale. */
static void placed(struct xctx *c, const char *path)
{
    if (!c->cache_path)
        return;
    size_t n = strlen(path);
    if (strncmp(c->cache_path, path, n) == 0 && (c->cache_path[n] == '\0' || c->cache_path[n] == '/'))
        cache_drop(c);
}

/* The directory fd of parent ("" = destination), creating missing
 * directories (0755 before the umask, owned by the caller). Borrowed: valid
 * until the next call. -1 with errno. */
static int open_parent(struct xctx *c, const char *parent)
{
    if (!parent[0])
        return c->dest;
    if (c->cache_path && strcmp(c->cache_path, parent) == 0)
        return c->cache_fd;
    cache_drop(c);
    int fd = beneath_open(c->dest, parent, O_PATH | O_DIRECTORY, 0);
    if (fd < 0 && errno == ENOENT) {
        /* Create the missing components, each resolved again from dest. */
        char *pre cleanup_free = xstrdup(parent);
        size_t len = strlen(pre);
        for (size_t i = 0; i <= len; i++) {
            if (pre[i] != '/' && pre[i] != '\0')
                continue;
            char saved = pre[i];
            pre[i] = '\0';
            int d = beneath_open(c->dest, pre, O_PATH | O_DIRECTORY, 0);
            if (d < 0 && errno == ENOENT) {
                char *slash = strrchr(pre, '/');
                int up = c->dest;
                const char *name = pre;
                int upfd cleanup_close = -1;
                if (slash) {
                    *slash = '\0';
                    upfd = beneath_open(c->dest, pre, O_PATH | O_DIRECTORY, 0);
                    *slash = '/';
                    if (upfd < 0)
                        return -1;
                    up = upfd;
                    name = slash + 1;
                }
                if (mkdirat(up, name, 0755) < 0 && errno != EEXIST)
                    return -1;
                d = beneath_open(c->dest, pre, O_PATH | O_DIRECTORY, 0);
            }
            if (d < 0)
                return -1;
            pre[i] = saved;
            if (saved == '\0') {
                fd = d;
                break;
            }
            close(d);
        }
    }
    if (fd < 0)
        return -1;
    c->cache_path = xstrdup(parent);
    c->cache_fd = fd;
    return fd;
}

/* A fresh temporary name in dirfd, made by mk (which returns -1/errno, with
 * EEXIST meaning "try another name"). Returns mk's result. */
static int with_tmp_name(struct xctx *c, char *tmp, size_t n, int (*mk)(void *, int, const char *),
                         void *arg, int dirfd)
{
    for (int tries = 0; tries < 64; tries++) {
        snprintf(tmp, n, ".sa-xfer.%ld.%u", (long)getpid(), c->tmpseq++);
        int rc = mk(arg, dirfd, tmp);
        if (rc >= 0 || errno != EEXIST)
            return rc;
    }
    errno = EEXIST;
    return -1;
}

/* --- acting on what we created, never again by name ---
 * A user who can write in a directory where root extracts can swap a name we
 * just created for a symlink or a file of theirs (inotify, then
 * renameat2(RENAME_EXCHANGE)). So a fresh node or symlink is opened O_PATH
 * without following it, checked to be what we made (type, owner: us, device
 * number), and changed only through that descriptor. */

/* The fresh name in dirfd, opened O_PATH|O_NOFOLLOW: -1 with errno; EAGAIN
 * when it is not what we made. */
static int open_made(int dirfd, const char *name, mode_t type, dev_t rdev)
{
    int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || (st.st_mode & S_IFMT) != type || st.st_uid != geteuid() ||
        ((type == S_IFCHR || type == S_IFBLK) && st.st_rdev != rdev)) {
        close(fd);
        errno = EAGAIN;
        return -1;
    }
    return fd;
}

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

/* chmod through an O_PATH descriptor (fchmod refuses those): fchmodat2 with
 * AT_EMPTY_PATH (Linux 6.6), else the descriptor's /proc/self/fd magic link,
 * which names the inode itself, not a path that could be swapped. */
static int path_fd_chmod(int fd, mode_t mode)
{
    if (syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL)
        return -1;
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return chmod(proc, mode);
}

static mode_t entry_mode(const struct xctx *c, struct archive_entry *ent, mode_t dflt)
{
    mode_t m = archive_entry_perm(ent) & 07777;
    if (m == 0)
        m = dflt;
    if (!c->o->privileged)
        m &= 0777;
    return m;
}

static bool want_owner(const struct xctx *c)
{
    return c->o->privileged && c->o->keep_owners;
}

static void entry_times(struct archive_entry *ent, struct timespec ts[2])
{
    ts[0].tv_sec = 0;
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1] = ts[0];
    if (archive_entry_atime_is_set(ent)) {
        ts[0].tv_sec = archive_entry_atime(ent);
        ts[0].tv_nsec = archive_entry_atime_nsec(ent);
    }
    if (archive_entry_mtime_is_set(ent)) {
        ts[1].tv_sec = archive_entry_mtime(ent);
        ts[1].tv_nsec = archive_entry_mtime_nsec(ent);
    }
    for (int i = 0; i < 2; i++)
        if (ts[i].tv_nsec != UTIME_OMIT && (ts[i].tv_nsec < 0 || ts[i].tv_nsec > 999999999))
            ts[i].tv_nsec = 0;
}

/* Rename the temporary name over the final one; on failure remove it. */
static int commit_tmp(struct xctx *c, int pfd, const char *tmp, const char *leaf, const char *path)
{
    if (renameat(pfd, tmp, pfd, leaf) < 0) {
        int e = errno;
        unlinkat(pfd, tmp, 0);
        return entry_errno(c, e, path, "rename");
    }
    placed(c, path);
    c->r->entries++;
    return 0;
}

/* --- regular files --- */

static int mk_file(void *arg, int dirfd, const char *name)
{
    (void)arg;
    return beneath_open(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_NOCTTY, 0600);
}

static int write_all_at(int fd, const void *p, size_t n, off_t off)
{
    const char *q = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, q, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        q += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Copy the entry's data into fd: 0, or -1 (the whole extraction stops). */
static int copy_data(struct xctx *c, int fd, const char *path, int64_t size)
{
    int64_t end = 0;
    for (;;) {
        const void *p;
        size_t n;
        la_int64_t off;
        int ret = archive_read_data_block(c->a, &p, &n, &off);
        if (ret == ARCHIVE_EOF)
            break;
        if (ret != ARCHIVE_OK && ret != ARCHIVE_WARN)
            return fail(c, archive_errno(c->a) > 0 ? archive_errno(c->a) : 0, "bad_archive",
                        path, "%s", archive_error_string(c->a) ? archive_error_string(c->a)
                                                               : "unreadable entry data");
        if (off < 0 || (uint64_t)n > (uint64_t)INT64_MAX || off > size ||
            (int64_t)n > size - off)
            return fail(c, 0, "bad_archive", path, "entry data beyond its declared size");
        if (n > 0 && write_all_at(fd, p, n, off) < 0)
            return fail(c, errno, NULL, path, "write %.120s", path);
        c->r->bytes += n;
        if (off + (int64_t)n > end)
            end = off + (int64_t)n;
    }
    if (end < size && ftruncate(fd, size) < 0)     /* a trailing sparse hole */
        return fail(c, errno, NULL, path, "truncate %.120s", path);
    return 0;
}

static int do_file(struct xctx *c, struct archive_entry *ent, const char *path, const char *parent,
                   const char *leaf)
{
    int pfd = open_parent(c, parent);
    if (pfd < 0)
        return entry_errno(c, errno, path, "open parent of");
    /* Nothing at the name (the usual case): create it there, exclusively and
     * without following anything, and save the rename. Something there: a
     * temporary name renamed over it, so that it is replaced, never written
     * through. */
    char tmp[64];
    const char *made = leaf;     /* the name we created, removed on failure */
    int fd cleanup_close = mk_file(NULL, pfd, leaf);
    if (fd < 0 && errno == EEXIST) {
        fd = with_tmp_name(c, tmp, sizeof tmp, mk_file, NULL, pfd);
        made = tmp;
    }
    if (fd < 0)
        return entry_errno(c, errno, path, "create");
    int64_t size = archive_entry_size_is_set(ent) ? archive_entry_size(ent) : 0;
    if (size < 0)
        size = 0;
    const char *op = NULL;
    if (copy_data(c, fd, path, size) < 0)
        goto undo;
    if (want_owner(c) && fchown(fd, (uid_t)archive_entry_uid(ent), (gid_t)archive_entry_gid(ent)) < 0) {
        op = "chown";
        goto undo_errno;
    }
    if (fchmod(fd, entry_mode(c, ent, 0644)) < 0) {
        op = "chmod";
        goto undo_errno;
    }
    struct timespec ts[2];
    entry_times(ent, ts);
    (void)futimens(fd, ts);     /* out-of-range times are not worth an error */
    if (close(steal_fd(&fd)) < 0 && errno != EINTR) {
        op = "close";
        goto undo_errno;
    }
    if (made == tmp)
        return commit_tmp(c, pfd, tmp, leaf, path);
    placed(c, path);
    c->r->entries++;
    return 0;

undo_errno:;
    int e = errno;
    unlinkat(pfd, made, 0);
    return fail(c, e, NULL, path, "%s %.120s", op, path);
undo:
    unlinkat(pfd, made, 0);
    return -1;
}

/* --- directories --- */

static int apply_fixup(struct xctx *c, const struct fixup *f)
{
    int fd cleanup_close = beneath_open(c->dest, f->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
    int e = errno;
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_dev != f->dev || st.st_ino != f->ino)) {
        e = ELOOP;      /* another directory now: not the one the entry made or named */
        close(steal_fd(&fd));
    }
    if (fd >= 0) {
        e = 0;
        if (f->chown && fchown(fd, f->uid, f->gid) < 0)
            e = errno;
        if (fchmod(fd, f->mode) < 0 && !e)
            e = errno;
        if (f->has_mtime) {
            struct timespec ts[2] = { { .tv_sec = 0, .tv_nsec = UTIME_OMIT }, f->mtime };
            (void)futimens(fd, ts);
        }
    }
    if (!e || (f->existed && (e == EPERM || e == EACCES)))
        return 0;   /* someone else's existing directory keeps its metadata */
    if (e == ENOSPC || e == EDQUOT || e == EIO)
        return fail(c, e, NULL, f->path, "set metadata of %.120s", f->path);
    refuse(c->r, f->path, e == ELOOP || e == ENOTDIR ? "directory replaced before its metadata was set"
                                                       : "could not set directory metadata");
    return 0;
}

static int do_dir(struct xctx *c, struct archive_entry *ent, const char *path, const char *parent,
                  const char *leaf)
{
    int pfd = open_parent(c, parent);
    if (pfd < 0)
        return entry_errno(c, errno, path, "open parent of");
    bool existed = false;
    struct stat st;
    if (mkdirat(pfd, leaf, 0700) < 0) {
        if (errno != EEXIST)
            return entry_errno(c, errno, path, "mkdir");
        if (fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return entry_errno(c, errno, path, "stat");
        if (S_ISDIR(st.st_mode)) {
            existed = true;
        } else {
            /* a file or symlink in the way is replaced, as tar does */
            if (unlinkat(pfd, leaf, 0) < 0 || mkdirat(pfd, leaf, 0700) < 0)
                return entry_errno(c, errno, path, "replace with a directory");
            placed(c, path);
        }
    }
    /* the fixup is for this directory only (checked again by dev/ino); one
     * we made must still be ours: the name may have been swapped already */
    if (!existed && (fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
                     st.st_uid != geteuid())) {
        refuse(c->r, path, "replaced while being created");
        return 0;
    }
    c->r->entries++;
    struct fixup f = {
        .path = xstrdup(path),
        .dev = st.st_dev,
        .ino = st.st_ino,
        .mode = entry_mode(c, ent, 0755),
        .has_mtime = archive_entry_mtime_is_set(ent),
        .chown = want_owner(c),
        .existed = existed,
        .uid = (uid_t)archive_entry_uid(ent),
        .gid = (gid_t)archive_entry_gid(ent),
    };
    struct timespec ts[2];
    entry_times(ent, ts);
    f.mtime = ts[1];
    size_t cost = strlen(path) + 1 + sizeof f;
    if (c->fixbytes + cost > XFER_FIXUPS_MAX_BYTES) {
        int rc = apply_fixup(c, &f);    /* out of room: now rather than never */
        free(f.path);
        return rc;
    }
    if (c->nfix == c->capfix) {
        c->capfix = c->capfix ? 2 * c->capfix : 64;
        c->fix = xrealloc(c->fix, c->capfix * sizeof *c->fix);
    }
    c->fix[c->nfix++] = f;
    c->fixbytes += cost;
    return 0;
}

/* --- symlinks, hardlinks, nodes --- */

struct mk_link_arg {
    const char *target;     /* symlink text, or hardlink source leaf */
    int src_dirfd;          /* hardlink source directory */
    mode_t mode;
    dev_t rdev;
};

static int mk_symlink(void *arg, int dirfd, const char *name)
{
    const struct mk_link_arg *m = arg;
    return symlinkat(m->target, dirfd, name);
}

static int mk_hardlink(void *arg, int dirfd, const char *name)
{
    const struct mk_link_arg *m = arg;
    return linkat(m->src_dirfd, m->target, dirfd, name, 0);     /* 0: a symlink is linked, not followed */
}

static int mk_node(void *arg, int dirfd, const char *name)
{
    const struct mk_link_arg *m = arg;
    return mknodat(dirfd, name, m->mode, m->rdev);
}

static int do_symlink(struct xctx *c, struct archive_entry *ent, const char *path,
                      const char *parent, const char *leaf)
{
    const char *target = archive_entry_symlink(ent);
    if (!target || !target[0]) {
        refuse(c->r, path, "empty symlink target");
        return 0;
    }
    int pfd = open_parent(c, parent);
    if (pfd < 0)
        return entry_errno(c, errno, path, "open parent of");
    char tmp[64];
    struct mk_link_arg m = { .target = target };
    if (with_tmp_name(c, tmp, sizeof tmp, mk_symlink, &m, pfd) < 0)
        return entry_errno(c, errno, path, "symlink");
    int fd cleanup_close = open_made(pfd, tmp, S_IFLNK, 0);
    if (fd < 0) {
        refuse(c->r, path, "replaced while being created");
        return 0;
    }
    if (want_owner(c) &&
        fchownat(fd, "", (uid_t)archive_entry_uid(ent), (gid_t)archive_entry_gid(ent),
                 AT_EMPTY_PATH) < 0) {
        int e = errno;
        unlinkat(pfd, tmp, 0);
        return entry_errno(c, e, path, "chown");
    }
    struct timespec ts[2];
    entry_times(ent, ts);
    (void)utimensat(fd, "", ts, AT_EMPTY_PATH);     /* the link itself (Linux 5.8+; else none) */
    return commit_tmp(c, pfd, tmp, leaf, path);
}

static int do_hardlink(struct xctx *c, const char *path, const char *parent, const char *leaf,
                       const char *link)
{
    char target[XFER_PATH_MAX];
    const char *why = clean_name(link, target, sizeof target);
    if (why) {
        refuse(c->r, path, "hardlink target outside the destination");
        return 0;
    }
    if (!target[0]) {
        refuse(c->r, path, "hardlink to a directory");
        return 0;
    }
    if (strcmp(target, path) == 0) {     /* a link to itself: already there */
        c->r->entries++;
        return 0;
    }
    char *tparent;
    const char *tleaf;
    split(target, &tparent, &tleaf);
    int sfd cleanup_close = tparent[0] ? beneath_open(c->dest, tparent, O_PATH | O_DIRECTORY, 0)
                                       : fcntl(c->dest, F_DUPFD_CLOEXEC, 0);
    if (sfd < 0) {
        if (errno == ENOENT) {
            refuse(c->r, path, "hardlink target missing");
            return 0;
        }
        return entry_errno(c, errno, path, "open hardlink target of");
    }
    struct stat st;
    if (fstatat(sfd, tleaf, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) {
            refuse(c->r, path, "hardlink target missing");
            return 0;
        }
        return entry_errno(c, errno, path, "stat hardlink target of");
    }
    if (S_ISDIR(st.st_mode)) {
        refuse(c->r, path, "hardlink to a directory");
        return 0;
    }
    int pfd = open_parent(c, parent);
    if (pfd < 0)
        return entry_errno(c, errno, path, "open parent of");
    char tmp[64];
    struct mk_link_arg m = { .target = tleaf, .src_dirfd = sfd };
    if (with_tmp_name(c, tmp, sizeof tmp, mk_hardlink, &m, pfd) < 0) {
        if (errno == EPERM) {       /* protected_hardlinks, or a directory after all */
            refuse(c->r, path, "hardlink not permitted");
            return 0;
        }
        return entry_errno(c, errno, path, "link");
    }
    int rc = commit_tmp(c, pfd, tmp, leaf, path);
    /* rename() between two names of one inode does nothing: drop ours */
    unlinkat(pfd, tmp, 0);
    return rc;
}

static int do_node(struct xctx *c, struct archive_entry *ent, const char *path, const char *parent,
                   const char *leaf, mode_t type)
{
    if (!(c->o->privileged && c->o->allow_devices)) {
        refuse(c->r, path, type == AE_IFIFO ? "FIFO not allowed" : "device node not allowed");
        return 0;
    }
    int pfd = open_parent(c, parent);
    if (pfd < 0)
        return entry_errno(c, errno, path, "open parent of");
    char tmp[64];
    mode_t mode = entry_mode(c, ent, 0644);
    struct mk_link_arg m = { .mode = type | 0600, .rdev = archive_entry_rdev(ent) };
    if (with_tmp_name(c, tmp, sizeof tmp, mk_node, &m, pfd) < 0)
        return entry_errno(c, errno, path, "mknod");
    /* O_PATH: opening a device for real could have effects (a tape rewinds) */
    int fd cleanup_close = open_made(pfd, tmp, type, m.rdev);
    if (fd < 0) {
        refuse(c->r, path, "replaced while being created");
        return 0;
    }
    int e = 0;
    if (want_owner(c) &&
        fchownat(fd, "", (uid_t)archive_entry_uid(ent), (gid_t)archive_entry_gid(ent),
                 AT_EMPTY_PATH) < 0)
        e = errno;
    if (!e && path_fd_chmod(fd, mode) < 0)
        e = errno;
    if (e) {
        unlinkat(pfd, tmp, 0);
        return entry_errno(c, e, path, "set mode of");
    }
    struct timespec ts[2];
    entry_times(ent, ts);
    (void)utimensat(fd, "", ts, AT_EMPTY_PATH);
    return commit_tmp(c, pfd, tmp, leaf, path);
}

/* One entry: 0 when done or refused, -1 when the extraction stops. */
static int extract_entry(struct xctx *c, struct archive_entry *ent)
{
    const char *name = archive_entry_pathname(ent);
    if (!name)
        name = archive_entry_pathname_utf8(ent);
    const char *shown = name ? name : "";

    /* every byte of entry data counts, written or skipped (a bomb can hide in
     * a refused entry too) */
    int64_t size = archive_entry_size_is_set(ent) ? archive_entry_size(ent) : 0;
    if (size < 0)
        size = 0;
    if ((uint64_t)size > c->max_bytes - c->consumed)
        return fail(c, 0, "too_large", shown, "archive data exceeds %llu bytes",
                    (unsigned long long)c->max_bytes);
    c->consumed += (uint64_t)size;

    char path[XFER_PATH_MAX];
    const char *why = clean_name(name, path, sizeof path);
    if (why) {
        refuse(c->r, shown, why);
        return 0;
    }
    mode_t type = archive_entry_filetype(ent);
    const char *link = archive_entry_hardlink(ent);
    if (!path[0]) {     /* "./": the destination itself keeps its metadata */
        if (type == AE_IFDIR && !link)
            c->r->entries++;
        else
            refuse(c->r, shown, "names the destination itself");
        return 0;
    }
    char *parent;
    const char *leaf;
    char full[XFER_PATH_MAX];
    memcpy(full, path, strlen(path) + 1);
    split(path, &parent, &leaf);

    if (link)
        return do_hardlink(c, full, parent, leaf, link);
    switch (type) {
    case AE_IFREG:
        return do_file(c, ent, full, parent, leaf);
    case AE_IFDIR:
        return do_dir(c, ent, full, parent, leaf);
    case AE_IFLNK:
        return do_symlink(c, ent, full, parent, leaf);
    case AE_IFCHR: case AE_IFBLK: case AE_IFIFO:
        return do_node(c, ent, full, parent, leaf, type);
    default:
        refuse(c->r, shown, "unsupported entry type");
        return 0;
    }
}

static struct archive *open_reader(int in_fd, struct xctx *c)
{
    struct archive *a = archive_read_new();
    /* tar only (ustar, pax, GNU, v7), plus an empty stream; filters: gzip in
     * process, zstd if built in; never an external program */
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_format_empty(a) != ARCHIVE_OK) {
        fail(c, 0, "internal", "", "libarchive: no tar reader");
        archive_read_free(a);
        return NULL;
    }
    struct archive *probe = archive_read_new();
    bool gz = archive_read_support_filter_gzip(probe) == ARCHIVE_OK;
    archive_read_free(probe);
    if (gz)
        archive_read_support_filter_gzip(a);
    if (xfer_has_zstd())
        archive_read_support_filter_zstd(a);
    if (archive_read_open_fd(a, in_fd, XFER_BLOCK) != ARCHIVE_OK) {
        fail(c, archive_errno(a) > 0 ? archive_errno(a) : 0, "bad_archive", "", "%s",
             archive_error_string(a) ? archive_error_string(a) : "cannot read the archive");
        archive_read_free(a);
        return NULL;
    }
    return a;
}

int xfer_extract(int in_fd, const struct xfer_extract_opts *o, struct xfer_result *r)
{
    struct xctx c = {
        .o = o, .r = r, .dest = o->dest_fd, .cache_fd = -1,
        .max_bytes = o->max_bytes ? o->max_bytes : XFER_DEFAULT_MAX_BYTES,
        .max_entries = o->max_entries ? o->max_entries : XFER_DEFAULT_MAX_ENTRIES,
    };
    struct stat st;
    if (fstat(o->dest_fd, &st) < 0)
        return fail(&c, errno, NULL, "", "destination");
    if (!S_ISDIR(st.st_mode))
        return fail(&c, ENOTDIR, NULL, "", "destination");

    struct xfer_locale loc;
    locale_enter(&loc);
    c.a = open_reader(in_fd, &c);
    int rc = c.a ? 0 : -1;
    while (rc == 0) {
        struct archive_entry *ent;
        int ret = archive_read_next_header(c.a, &ent);
        if (ret == ARCHIVE_EOF)
            break;
        if (ret != ARCHIVE_OK && ret != ARCHIVE_WARN) {
            const char *msg = archive_error_string(c.a);
            rc = fail(&c, 0, "bad_archive", "", "%s", msg ? msg : "damaged archive");
            break;
        }
        if (++c.seen > c.max_entries) {
            const char *n = archive_entry_pathname(ent);
            rc = fail(&c, 0, "too_many", n ? n : "", "archive has more than %llu entries",
                      (unsigned long long)c.max_entries);
            break;
        }
        rc = extract_entry(&c, ent);
    }
    /* deepest first: a parent made read-only does not block its children.
     * Also after a failure (what was extracted stays, with its modes), but
     * then the first error is the one reported. */
    struct xfer_error first = r->error;
    bool had_failed = r->failed;
    for (size_t i = c.nfix; i-- > 0;) {
        if (apply_fixup(&c, &c.fix[i]) < 0)
            rc = -1;
        free(c.fix[i].path);
    }
    if (had_failed)
        r->error = first;
    free(c.fix);
    cache_drop(&c);
    if (c.a)
        archive_read_free(c.a);
    locale_leave(&loc);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Packing.                                                                   */

struct pctx {
    struct archive *a;
    struct archive_entry *ent;
    struct xfer_error *e;
    char *block;
};

static int pack_fail_errno(struct pctx *p, int errnum, const char *path, const char *op)
{
    err_sys(&p->e->err, errnum, "%s %.120s", op, path);
    copy_path(p->e->path, sizeof p->e->path, path);
    return -1;
}

static int pack_fail_archive(struct pctx *p, const char *path)
{
    int en = archive_errno(p->a);
    const char *msg = archive_error_string(p->a);
    if (en > 0)
        err_set(&p->e->err, en, NULL, "write tar: %s", msg ? msg : err_str(en));
    else
        err_set(&p->e->err, 0, "archive_error", "write tar: %s", msg ? msg : "failed");
    copy_path(p->e->path, sizeof p->e->path, path);
    return -1;
}

static int pack_header(struct pctx *p, const char *aname, const struct stat *st, const char *link)
{
    archive_entry_clear(p->ent);
    archive_entry_copy_pathname(p->ent, aname);
    archive_entry_copy_stat(p->ent, st);
    if (link)
        archive_entry_copy_symlink(p->ent, link);
    if (!S_ISREG(st->st_mode))
        archive_entry_set_size(p->ent, 0);
    int ret = archive_write_header(p->a, p->ent);
    if (ret != ARCHIVE_OK && ret != ARCHIVE_WARN)
        return pack_fail_archive(p, aname);
    return 0;
}

static int pack_file(struct pctx *p, int dfd, const char *name, const char *aname)
{
    /* O_NONBLOCK: the name was a regular file at fstatat, but a user may
     * have swapped a FIFO in since, and opening a FIFO without a writer
     * would block forever. The type is checked again on the descriptor. */
    int fd cleanup_close = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC |
                                                 O_NONBLOCK);
    if (fd < 0)
        return pack_fail_errno(p, errno, aname, "open");
    struct stat st;
    if (fstat(fd, &st) < 0)
        return pack_fail_errno(p, errno, aname, "stat");
    if (!S_ISREG(st.st_mode))
        return pack_fail_errno(p, EAGAIN, aname, "changed while packing:");
    if (fd_set_nonblock(fd, false) < 0)
        return pack_fail_errno(p, errno, aname, "open");
    if (pack_header(p, aname, &st, NULL) < 0)
        return -1;
    /* exactly st_size bytes: a file that grows is cut, one that shrinks is
     * zero-padded by libarchive's finish_entry */
    off_t left = st.st_size;
    while (left > 0) {
        size_t want = (size_t)(left < (off_t)XFER_BLOCK ? left : (off_t)XFER_BLOCK);
        ssize_t n = read(fd, p->block, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pack_fail_errno(p, errno, aname, "read");
        if (n == 0)
            break;
        if (archive_write_data(p->a, p->block, (size_t)n) < 0)
            return pack_fail_archive(p, aname);
        left -= n;
    }
    if (archive_write_finish_entry(p->a) != ARCHIVE_OK)
        return pack_fail_archive(p, aname);
    return 0;
}

static int pack_one(struct pctx *p, int dfd, const char *name, const char *aname, int depth,
                    bool top);

static int pack_dir(struct pctx *p, int dfd, const char *name, const char *aname,
                    const struct stat *st, int depth)
{
    if (depth >= XFER_PACK_MAX_DEPTH)
        return pack_fail_errno(p, ELOOP, aname, "too deep:");
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return pack_fail_errno(p, errno, aname, "open");
    DIR *d = fdopendir(fd);
    if (!d) {
        int en = errno;
        close(fd);
        return pack_fail_errno(p, en, aname, "opendir");
    }
    int rc = pack_header(p, aname, st, NULL);
    size_t alen = strlen(aname);
    while (rc == 0) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                rc = pack_fail_errno(p, errno, aname, "readdir");
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        size_t nlen = strlen(de->d_name);
        char *child = xmalloc(alen + nlen + 2);
        memcpy(child, aname, alen);
        child[alen] = '/';
        memcpy(child + alen + 1, de->d_name, nlen + 1);
        rc = pack_one(p, dirfd(d), de->d_name, child, depth + 1, false);
        free(child);
    }
    closedir(d);
    return rc;
}

static int pack_one(struct pctx *p, int dfd, const char *name, const char *aname, int depth,
                    bool top)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT && !top)
            return 0;   /* removed while we walked: as tar, skip it */
        return pack_fail_errno(p, errno, aname, "stat");
    }
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
        return pack_file(p, dfd, name, aname);
    case S_IFDIR:
        return pack_dir(p, dfd, name, aname, &st, depth);
    case S_IFLNK: {
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dfd, name, target, sizeof target);
        if (n < 0)
            return pack_fail_errno(p, errno, aname, "readlink");
        if ((size_t)n >= sizeof target)
            return pack_fail_errno(p, ENAMETOOLONG, aname, "readlink");
        target[n] = '\0';
        return pack_header(p, aname, &st, target);
    }
    case S_IFCHR: case S_IFBLK: case S_IFIFO:
        return pack_header(p, aname, &st, NULL);
    default:
        return 0;       /* sockets have no tar form */
    }
}

/* The name stored for a requested path: no leading "/" or "./", no "//". */
static int archive_name(const char *path, char *out, size_t n, struct xfer_error *e)
{
    while (*path == '/')
        path++;
    const char *why = clean_name(*path ? path : ".", out, n);
    if (why) {
        /* formatted from the copy: gcc's -Wformat-overflow under ASan took
         * path for a possible NULL */
        copy_path(e->path, sizeof e->path, *path ? path : ".");
        err_set(&e->err, EINVAL, "EINVAL", "cannot pack %.120s: %s", e->path, why);
        return -1;
    }
    if (!out[0])        /* "." or "/": stored as "./", children as "./x" */
        snprintf(out, n, ".");
    return 0;
}

struct pack_sink {
    xfer_write_fn fn;
    void *arg;
    bool dead;      /* after a failure: nothing more reaches the sink (no tar
                     * trailer that would make a cut stream look complete) */
    uint64_t bytes;
};

static ssize_t sink_write_cb(struct archive *a, void *arg, const void *buf, size_t n)
{
    struct pack_sink *s = arg;
    if (s->dead)
        return (ssize_t)n;
    if (s->fn(s->arg, buf, n) < 0) {
        archive_set_error(a, errno, "write: %s", err_str(errno));
        return -1;
    }
    s->bytes += n;
    return (ssize_t)n;
}

static int fd_write(void *arg, const void *p, size_t n)
{
    return fd_write_all(*(int *)arg, p, n);
}

int xfer_pack(int out_fd, int base_fd, char *const *paths, size_t n, bool gzip, uint64_t *bytes,
              struct xfer_error *e)
{
    return xfer_pack_to(fd_write, &out_fd, base_fd, paths, n, gzip, bytes, e);
}

int xfer_pack_to(xfer_write_fn fn, void *arg, int base_fd, char *const *paths, size_t n,
                 bool gzip, uint64_t *bytes, struct xfer_error *e)
{
    err_clear(&e->err);
    e->path[0] = '\0';
    if (bytes)
        *bytes = 0;
    /* every requested path, before a byte is written */
    for (size_t i = 0; i < n; i++) {
        char aname[XFER_PATH_MAX];
        struct stat st;
        if (archive_name(paths[i], aname, sizeof aname, e) < 0)
            return -1;
        if (fstatat(base_fd, paths[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            err_sys(&e->err, errno, "%.200s", paths[i]);
            copy_path(e->path, sizeof e->path, paths[i]);
            return -1;
        }
    }

    struct xfer_locale loc;
    locale_enter(&loc);
    struct pack_sink sink = { .fn = fn, .arg = arg };
    struct pctx p = { .a = archive_write_new(), .ent = archive_entry_new(), .e = e,
                      .block = xmalloc(XFER_BLOCK) };
    int rc = 0;
    if (archive_write_set_format_pax_restricted(p.a) != ARCHIVE_OK ||
        (gzip && archive_write_add_filter_gzip(p.a) != ARCHIVE_OK) ||
        archive_write_set_bytes_per_block(p.a, XFER_BLOCK) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(p.a, 1) != ARCHIVE_OK ||
        archive_write_open(p.a, &sink, NULL, sink_write_cb, NULL) != ARCHIVE_OK)
        rc = pack_fail_archive(&p, "");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char aname[XFER_PATH_MAX];
        archive_name(paths[i], aname, sizeof aname, e);
        rc = pack_one(&p, base_fd, paths[i], aname, 0, true);
    }
    if (rc == 0 && archive_write_close(p.a) != ARCHIVE_OK)
        rc = pack_fail_archive(&p, "");
    if (rc < 0)
        sink.dead = true;
    archive_write_free(p.a);
    archive_entry_free(p.ent);
    free(p.block);
    locale_leave(&loc);
    if (bytes)
        *bytes = sink.bytes;
    return rc;
}
