/* fop_child.c — the helper side of file operations (fop.h).
 *
 * Runs in a forked process that already has the requesting user's identity
 * (or root's for sudo), umask 0, fd 0 the input (upload, write), fd 1 the
 * frame pipe to the agent, fd 3 the end-of-input pipe. Every path is used by
 * plain system calls as that user, so the kernel's permission checks are the
 * ones that apply; the archive engine (xfer.c) adds its own confinement to
 * the destination. Each operation writes its frames (PROTOCOL.md "Files") and
 * _exits; a write to the agent that fails (the connection went away) ends it
 * at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdio.h"
#include "fop.h"
#include "wire.h"
#include "xfer.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define IN_FD 0
#define OUT_FD 1
#define CTL_FD 3

static struct buf out;                  /* frames not yet written to OUT_FD */
static const struct fop_job *job;
static int cwd_errno;                   /* chdir(job->cwd) failed with this */

/* --- frames -------------------------------------------------------------------- */

static void flush(void)
{
    while (buf_size(&out) > 0) {
        ssize_t n = write(OUT_FD, buf_ptr(&out), buf_size(&out));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);                   /* the agent stopped listening: cancelled */
        buf_consume(&out, (size_t)n);
    }
    buf_reset(&out, 64u << 10);
}

static __attribute__((noreturn)) void finish(void)
{
    flush();
    _exit(0);
}

static __attribute__((noreturn)) void fail(int errnum, const char *code, const char *path,
                                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static __attribute__((noreturn)) void fail(int errnum, const char *code, const char *path,
                                           const char *fmt, ...)
{
    struct sa_err e;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (errnum)
        err_sys(&e, errnum, "%s", msg);
    else
        err_set(&e, 0, code, "%s", msg);
    struct wire_enc w;
    wire_begin(&w, &out, 5);
    wire_kv_str(&w, "type", "error");
    wire_kv_uint(&w, "id", job->id);
    wire_kv_str(&w, "code", e.code ? e.code : "internal");
    wire_kv_str(&w, "message", e.msg);
    wire_kv_strn(&w, "path", path, strnlen(path, XFER_ERR_PATH_MAX));
    wire_end(&w);
    finish();
}

static __attribute__((noreturn)) void fail_sys(const char *op, const char *path)
{
    fail(errno, NULL, path, "%s %.300s", op, path);
}

static void send_ok(void)
{
    struct wire_enc w;
    wire_begin(&w, &out, 2);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", job->id);
    wire_end(&w);
    flush();
}

static __attribute__((noreturn)) void send_end(const char *key, uint64_t v)
{
    struct wire_enc w;
    wire_begin(&w, &out, 3);
    wire_kv_str(&w, "type", "end");
    wire_kv_uint(&w, "id", job->id);
    wire_kv_uint(&w, key, v);
    wire_end(&w);
    finish();
}

/* Bytes of data that fit in one `data` event. */
static size_t data_room(void)
{
    size_t room = job->max_frame > 128 ? job->max_frame - 128 : 1;
    return room < FOP_DATA_MAX ? room : FOP_DATA_MAX;
}

static uint64_t data_offset;

static void send_data(const void *p, size_t n)
{
    const char *q = p;
    size_t room = data_room();
    while (n > 0) {
        size_t k = n < room ? n : room;
        struct wire_enc w;
        wire_begin(&w, &out, 4);
        wire_kv_str(&w, "type", "data");
        wire_kv_uint(&w, "id", job->id);
        wire_kv_uint(&w, "offset", data_offset);
        wire_kv_bin(&w, "data", q, k);
        wire_end(&w);
        flush();
        data_offset += k;
        q += k;
        n -= k;
    }
}

/* A relative path while the cwd could not be entered fails with that. */
static void need_cwd(const char *path)
{
    if (path[0] != '/' && cwd_errno)
        fail(cwd_errno, NULL, path, "working directory %.300s", job->cwd);
}

/* The client's eof arrived (1), or the input was cut off (0): called after
 * EOF on IN_FD, when the agent has written the byte or closed without it. */
static bool input_complete(void)
{
    char b;
    ssize_t n;
    do
        n = read(CTL_FD, &b, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 && b == 'E';
}

/* mkdir -p: every missing directory of path (all of it, or all but the last
 * component with !whole) with mode 0755; an existing directory, or a symlink
 * to one, is fine. On failure errno is set and *bad names the component. */
static int make_parents(const char *path, bool whole, char *bad, size_t badsz)
{
    char p[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof p) {
        errno = ENAMETOOLONG;
        snprintf(bad, badsz, "%s", path);
        return -1;
    }
    memcpy(p, path, n + 1);
    if (!whole) {
        char *slash = strrchr(p, '/');
        if (!slash)
            return 0;
        *slash = '\0';
        n = (size_t)(slash - p);
    }
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char keep = p[i];
        p[i] = '\0';
        if (p[i - 1] != '/' && mkdir(p, 0755) < 0 && errno != EEXIST) {
            snprintf(bad, badsz, "%s", p);
            return -1;
        }
        struct stat st;
        if (p[i - 1] != '/' && errno == EEXIST && (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))) {
            errno = ENOTDIR;
            snprintf(bad, badsz, "%s", p);
            return -1;
        }
        errno = 0;
        p[i] = keep;
    }
    return 0;
}

/* --- upload, download ------------------------------------------------------------- */

/* What is left after an archive's end (padding, a compressor's trailer) is
 * read up to FOP_UPLOAD_TRAILER_MAX; 0 once the input ended. */
static int drain_trailer(void)
{
    static char scratch[XFER_BLOCK];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(IN_FD, scratch, sizeof scratch);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        total += (uint64_t)n;
        if (total > FOP_UPLOAD_TRAILER_MAX)
            return -1;
    }
}

static __attribute__((noreturn)) void op_upload(void)
{
    const char *dest = job->path;
    need_cwd(dest);
    char bad[PATH_MAX];
    if (job->parents && make_parents(dest, true, bad, sizeof bad) < 0)
        fail_sys("mkdir", bad);
    int dfd = open(dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        fail_sys("destination", dest);
    send_ok();
    struct xfer_extract_opts o = {
        .dest_fd = dfd,
        .privileged = job->privileged,
        .allow_devices = job->allow_devices,
        .keep_owners = job->keep_owners,
        .max_bytes = job->max_bytes,
        .max_entries = job->max_entries,
    };
    static struct xfer_result r;
    xfer_result_init(&r);
    xfer_extract(IN_FD, &o, &r);
    if (!r.failed) {
        if (drain_trailer() < 0) {
            r.failed = true;
            err_set(&r.error.err, 0, "bad_archive",
                    "more than %u bytes after the end of the archive", FOP_UPLOAD_TRAILER_MAX);
        } else if (!input_complete()) {
            _exit(0);                   /* cancelled: nobody to tell */
        }
    }
    xfer_result_encode(&r, job->id, job->max_frame, &out);
    finish();
}

static bool ok_sent;

static int pack_sink(void *arg, const void *p, size_t n)
{
    (void)arg;
    if (!ok_sent) {
        send_ok();
        ok_sent = true;
    }
    send_data(p, n);
    return 0;
}

static __attribute__((noreturn)) void op_download(void)
{
    for (size_t i = 0; i < job->npaths; i++)
        need_cwd(job->paths[i]);
    struct xfer_error xe;
    uint64_t bytes = 0;
    if (xfer_pack_to(pack_sink, NULL, AT_FDCWD, job->paths, job->npaths, job->gzip, &bytes,
                     &xe) < 0)
        fail(0, xe.err.code ? xe.err.code : "internal", xe.path, "%s", xe.err.msg);
    if (!ok_sent)
        send_ok();
    send_end("bytes", bytes);
}

/* --- read, write ------------------------------------------------------------------ */

static void need_regular(const struct stat *st, const char *path)
{
    if (S_ISDIR(st->st_mode)) {
        errno = EISDIR;
        fail_sys("open", path);
    }
    if (!S_ISREG(st->st_mode))
        fail(0, "EINVAL", path, "%.300s is not a regular file", path);
}

static __attribute__((noreturn)) void op_read(void)
{
    const char *path = job->path;
    need_cwd(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        fail_sys("open", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        fail_sys("stat", path);
    need_regular(&st, path);
    struct wire_enc w;
    wire_begin(&w, &out, 3);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", job->id);
    wire_kv_uint(&w, "size", (uint64_t)st.st_size);
    wire_end(&w);
    flush();
    static char block[FOP_DATA_MAX];
    uint64_t off = job->offset, left = job->has_length ? job->length : UINT64_MAX, total = 0;
    while (left > 0) {
        size_t want = left < sizeof block ? (size_t)left : sizeof block;
        ssize_t n = pread(fd, block, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_sys("read", path);
        if (n == 0)
            break;
        send_data(block, (size_t)n);
        off += (uint64_t)n;
        left -= (uint64_t)n;
        total += (uint64_t)n;
    }
    send_end("bytes", total);
}

static char tmp_path[PATH_MAX];         /* write's temporary file, removed on failure */

static __attribute__((noreturn)) void write_fail(const char *op, const char *path)
{
    int err = errno;
    if (tmp_path[0])
        unlink(tmp_path);
    errno = err;
    fail_sys(op, path);
}

/* Where the bytes of a write go: a temporary file to rename over path, or
 * path itself (append; or when a rename would change what path is). */
static int write_open(const char *path, mode_t *final_mode)
{
    struct stat st;
    bool exists = lstat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        fail_sys("stat", path);
    if (exists && S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        fail_sys("open", path);
    }
    mode_t create = job->has_mode ? job->mode : 0644;
    bool replace = !job->append &&
                   (!exists || (S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == geteuid()));
    if (!replace) {
        /* a FIFO without a reader would fail ENXIO, with one it would see a
         * writer come and go: tell what the path is before opening it */
        struct stat tst;
        if (stat(path, &tst) == 0)
            need_regular(&tst, path);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                                (job->append ? O_APPEND : O_TRUNC), create);
        if (fd < 0)
            fail_sys("open", path);
        struct stat fst;
        if (fstat(fd, &fst) < 0)
            fail_sys("stat", path);
        need_regular(&fst, path);
        if (job->has_mode && fchmod(fd, job->mode) < 0)
            fail_sys("chmod", path);
        *final_mode = (mode_t)-1;
        return fd;
    }
    *final_mode = job->has_mode ? job->mode : exists ? (st.st_mode & 07777) : 0644;
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path + 1) : 0;
    int n = snprintf(tmp_path, sizeof tmp_path, "%.*s.sa-write.%d.%s", dlen, path, (int)getpid(),
                     slash ? slash + 1 : path);
    if (n < 0 || (size_t)n >= sizeof tmp_path || strlen(slash ? slash + 1 : path) > NAME_MAX - 24) {
        tmp_path[0] = '\0';
        errno = ENAMETOOLONG;
        fail_sys("open", path);
    }
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        tmp_path[0] = '\0';
        fail_sys("create a temporary file beside", path);
    }
    return fd;
}

static __attribute__((noreturn)) void op_write(void)
{
    const char *path = job->path;
    need_cwd(path);
    char bad[PATH_MAX];
    if (job->parents && make_parents(path, false, bad, sizeof bad) < 0)
        fail_sys("mkdir", bad);
    mode_t final_mode;
    int fd = write_open(path, &final_mode);
    send_ok();
    static char block[XFER_BLOCK];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(IN_FD, block, sizeof block);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            write_fail("read the input for", path);
        if (n == 0)
            break;
        if (fd_write_all(fd, block, (size_t)n) < 0)
            write_fail("write", path);
        total += (uint64_t)n;
    }
    if (!input_complete()) {
        if (tmp_path[0])
            unlink(tmp_path);
        _exit(0);                       /* cancelled: the old file stays */
    }
    if (tmp_path[0] && fchmod(fd, final_mode) < 0)
        write_fail("chmod", path);
    if (close(fd) < 0)
        write_fail("write", path);
    if (tmp_path[0] && rename(tmp_path, path) < 0)
        write_fail("rename into place", path);
    send_end("bytes", total);
}

/* --- stat, ls --------------------------------------------------------------------- */

static const char *type_name(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    default: return "unknown";
    }
}

/* One entry's fields as a map: name (when given), type, size, mode, uid,
 * gid, nlink, mtime_ms, and target for a symlink (dirfd/name to read it). */
static void pack_stat(struct wire_enc *w, const char *name, const struct stat *st, int dirfd,
                      const char *lname)
{
    char target[PATH_MAX];
    ssize_t tn = -1;
    if (S_ISLNK(st->st_mode))
        tn = readlinkat(dirfd, lname, target, sizeof target);
    /* with a small max_frame, a long link target is cut so that the entry
     * still fits in one frame (target_cut says so) */
    size_t room = job->max_frame > FOP_ENTRY_FIXED + (name ? strlen(name) : 0)
                      ? job->max_frame - FOP_ENTRY_FIXED - (name ? strlen(name) : 0) : 0;
    bool cut = tn >= 0 && (size_t)tn > room;
    if (cut)
        tn = (ssize_t)room;
    msgpack_pack_map(&w->pk, 7 + (name ? 1 : 0) + (tn >= 0 ? 1 : 0) + (cut ? 1 : 0));
    if (name)
        wire_kv_str(w, "name", name);
    wire_kv_str(w, "type", type_name(st->st_mode));
    wire_kv_uint(w, "size", (uint64_t)st->st_size);
    wire_kv_uint(w, "mode", st->st_mode & 07777);
    wire_kv_uint(w, "uid", st->st_uid);
    wire_kv_uint(w, "gid", st->st_gid);
    wire_kv_uint(w, "nlink", (uint64_t)st->st_nlink);
    int64_t ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
    wire_kv_int(w, "mtime_ms", ms);
    if (tn >= 0)
        wire_kv_strn(w, "target", target, (size_t)tn);
    if (cut)
        wire_kv_bool(w, "target_cut", true);
}

static __attribute__((noreturn)) void op_stat(void)
{
    const char *path = job->path;
    need_cwd(path);
    struct stat st;
    if ((job->follow ? stat(path, &st) : lstat(path, &st)) < 0)
        fail_sys("stat", path);
    struct wire_enc w;
    wire_begin(&w, &out, 3);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", job->id);
    wire_key(&w, "stat");
    pack_stat(&w, NULL, &st, AT_FDCWD, path);
    wire_end(&w);
    finish();
}

static struct buf batch;                /* encoded entries of the next `entries` event */
static size_t nbatch;

static void ls_flush(void)
{
    if (nbatch == 0)
        return;
    struct wire_enc w;
    wire_begin(&w, &out, 3);
    wire_kv_str(&w, "type", "entries");
    wire_kv_uint(&w, "id", job->id);
    wire_key(&w, "entries");
    msgpack_pack_array(&w.pk, (uint32_t)nbatch);
    buf_append(&out, buf_ptr(&batch), buf_size(&batch));
    wire_end(&w);
    flush();
    buf_reset(&batch, 0);
    nbatch = 0;
}

static __attribute__((noreturn)) void op_ls(void)
{
    const char *path = job->path;
    need_cwd(path);
    DIR *d = opendir(path);
    if (!d)
        fail_sys("open directory", path);
    send_ok();
    /* an entry is at most ~4.5 KiB (a name, a link target): keep the event
     * within max_frame; below 16 KiB frames, one entry per event (pack_stat
     * cuts a target that would not fit) */
    size_t budget = job->max_frame > 16384 ? job->max_frame - 8192 : 0;
    uint64_t count = 0;
    buf_init(&batch);
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                fail_sys("read directory", path);
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;                   /* gone since readdir */
        struct wire_enc w;
        wire_enc_raw(&w, &batch);
        pack_stat(&w, de->d_name, &st, dirfd(d), de->d_name);
        nbatch++;
        count++;
        if (nbatch == FOP_LS_BATCH || buf_size(&batch) > budget)
            ls_flush();
    }
    ls_flush();
    send_end("count", count);
}

/* --- mkdir, remove, rename, chmod ------------------------------------------------ */

static __attribute__((noreturn)) void op_mkdir(void)
{
    const char *path = job->path;
    need_cwd(path);
    char bad[PATH_MAX];
    if (job->parents && make_parents(path, false, bad, sizeof bad) < 0)
        fail_sys("mkdir", bad);
    if (mkdir(path, job->mode) < 0) {
        struct stat st;
        if (!(job->parents && errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
            fail_sys("mkdir", path);
    } else if (job->mode & 07000 && chmod(path, job->mode) < 0) {
        fail_sys("chmod", path);        /* mkdir(2) may drop the special bits */
    }
    send_ok();
    _exit(0);
}

static char rm_path[PATH_MAX];          /* the path being removed, for errors */

static __attribute__((noreturn)) void rm_fail(int err, size_t len)
{
    rm_path[len < sizeof rm_path ? len : sizeof rm_path - 1] = '\0';
    errno = err;
    fail_sys("remove", rm_path);
}

/* Remove the directory name under parent (rm_path holds its path, len
 * bytes) and everything in it, following no symlink. */
static void rm_tree(int parent, const char *name, size_t len, int depth)
{
    if (depth > FOP_RM_MAX_DEPTH)
        rm_fail(ELOOP, len);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        rm_fail(errno, len);
    DIR *d = fdopendir(fd);
    if (!d)
        rm_fail(errno, len);
    for (int pass = 0;; pass++) {
        struct dirent *de;
        while ((errno = 0, de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            size_t n = len;
            if (n + 1 + strlen(de->d_name) < sizeof rm_path) {
                rm_path[n] = '/';
                strcpy(rm_path + n + 1, de->d_name);
                n += 1 + strlen(de->d_name);
            }
            bool dir = de->d_type == DT_DIR;
            if (de->d_type == DT_UNKNOWN) {
                struct stat st;
                dir = fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
            }
            if (dir)
                rm_tree(fd, de->d_name, n, depth + 1);
            else if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT)
                rm_fail(errno, n);
            rm_path[len] = '\0';
        }
        if (errno)
            rm_fail(errno, len);
        if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            break;
        if (errno != ENOTEMPTY || pass == 2)   /* filled again meanwhile: retry twice */
            rm_fail(errno, len);
        rewinddir(d);
    }
    closedir(d);
}

static __attribute__((noreturn)) void op_remove(void)
{
    const char *path = job->path;
    need_cwd(path);
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT && job->force) {
            send_ok();
            _exit(0);
        }
        fail_sys("remove", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && !(errno == ENOENT && job->force))
            fail_sys("remove", path);
    } else if (!job->recursive) {
        if (rmdir(path) < 0)
            fail_sys("remove", path);
    } else {
        size_t n = strlen(path);
        if (n >= sizeof rm_path) {
            errno = ENAMETOOLONG;
            fail_sys("remove", path);
        }
        memcpy(rm_path, path, n + 1);
        rm_tree(AT_FDCWD, path, n, 0);
    }
    send_ok();
    _exit(0);
}

static __attribute__((noreturn)) void op_rename(void)
{
    need_cwd(job->path);
    need_cwd(job->path2);
    if (syscall(SYS_renameat2, AT_FDCWD, job->path, AT_FDCWD, job->path2,
                job->overwrite ? 0 : RENAME_NOREPLACE) < 0) {
        int err = errno;
        bool to = err == EEXIST || err == ENOTEMPTY || err == EISDIR;
        errno = err;
        if (to)
            fail(err, NULL, job->path2, "rename %.300s to %.300s", job->path, job->path2);
        fail(err, NULL, job->path, "rename %.300s to %.300s", job->path, job->path2);
    }
    send_ok();
    _exit(0);
}

static __attribute__((noreturn)) void op_chmod(void)
{
    need_cwd(job->path);
    if (chmod(job->path, job->mode) < 0)
        fail_sys("chmod", job->path);
    send_ok();
    _exit(0);
}

void fop_child_run(const struct fop_job *j)
{
    job = j;
    buf_init(&out);
    if (chdir(j->cwd) < 0)
        cwd_errno = errno;
    switch (j->kind) {
    case FOP_UPLOAD: op_upload();
    case FOP_DOWNLOAD: op_download();
    case FOP_READ: op_read();
    case FOP_WRITE: op_write();
    case FOP_STAT: op_stat();
    case FOP_LS: op_ls();
    case FOP_MKDIR: op_mkdir();
    case FOP_REMOVE: op_remove();
    case FOP_RENAME: op_rename();
    case FOP_CHMOD: op_chmod();
    }
    fail(0, "internal", "", "unknown file operation");
}
