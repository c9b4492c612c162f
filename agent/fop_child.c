/* fop_child.c — the helper side of file operations (fop.h).
 *
 * Runs in a forked process that already has the requesting user's identity
 * (or root's for sudo), umask 0, fd 0 the input (write), fd 1 the frame pipe
 * to the agent, fd 3 the end-of-input pipe. Every path is used by plain
 * system calls as that user, so the kernel's permission checks are the ones
 * that apply. Each operation writes its frames (PROTOCOL.md "Files", through
 * fop_io.h) and _exits. Uploads and downloads are in fop_xfer.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdio.h"
#include "fop.h"
#include "fop_io.h"
#include "wire.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* --- read, write ------------------------------------------------------------------ */

static void need_regular(const struct stat *st, const char *path)
{
    if (S_ISDIR(st->st_mode)) {
        errno = EISDIR;
        fio_fail_sys("open", path);
    }
    if (!S_ISREG(st->st_mode))
        fio_fail(0, "EINVAL", path, "%.300s is not a regular file", path);
}

static __attribute__((noreturn)) void op_read(void)
{
    const char *path = fio_job->path;
    fio_need_cwd(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        fio_fail_sys("open", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        fio_fail_sys("stat", path);
    need_regular(&st, path);
    struct wire_enc w;
    wire_begin(&w, fio_out());
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_kv_uint(&w, "size", (uint64_t)st.st_size);
    wire_end(&w);
    fio_flush();
    static char block[FOP_DATA_MAX];
    uint64_t off = fio_job->offset, left = fio_job->has_length ? fio_job->length : UINT64_MAX, total = 0;
    while (left > 0) {
        size_t want = left < sizeof block ? (size_t)left : sizeof block;
        ssize_t n = pread(fd, block, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fio_fail_sys("read", path);
        if (n == 0)
            break;
        fio_data(block, (size_t)n);
        off += (uint64_t)n;
        left -= (uint64_t)n;
        total += (uint64_t)n;
    }
    fio_end("bytes", total);
}

static char tmp_path[PATH_MAX];         /* write's temporary file, removed on failure */

static __attribute__((noreturn)) void write_fail(const char *op, const char *path)
{
    int err = errno;
    if (tmp_path[0])
        unlink(tmp_path);
    errno = err;
    fio_fail_sys(op, path);
}

/* Where the bytes of a write go: a temporary file to rename over path, or
 * path itself (append; or when a rename would change what path is). */
static int write_open(const char *path, mode_t *final_mode)
{
    struct stat st;
    bool exists = lstat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        fio_fail_sys("stat", path);
    if (exists && S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        fio_fail_sys("open", path);
    }
    mode_t create = fio_job->has_mode ? fio_job->mode : 0644;
    bool replace = !fio_job->append &&
                   (!exists || (S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == geteuid()));
    if (!replace) {
        /* a FIFO without a reader would fail ENXIO, with one it would see a
         * writer come and go: tell what the path is before opening it */
        struct stat tst;
        if (stat(path, &tst) == 0)
            need_regular(&tst, path);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                                (fio_job->append ? O_APPEND : O_TRUNC), create);
        if (fd < 0)
            fio_fail_sys("open", path);
        struct stat fst;
        if (fstat(fd, &fst) < 0)
            fio_fail_sys("stat", path);
        need_regular(&fst, path);
        if (fio_job->has_mode && fchmod(fd, fio_job->mode) < 0)
            fio_fail_sys("chmod", path);
        *final_mode = (mode_t)-1;
        return fd;
    }
    *final_mode = fio_job->has_mode ? fio_job->mode : exists ? (st.st_mode & 07777) : 0644;
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path + 1) : 0;
    int n = snprintf(tmp_path, sizeof tmp_path, "%.*s.sa-write.%d.%s", dlen, path, (int)getpid(),
                     slash ? slash + 1 : path);
    if (n < 0 || (size_t)n >= sizeof tmp_path || strlen(slash ? slash + 1 : path) > NAME_MAX - 24) {
        tmp_path[0] = '\0';
        errno = ENAMETOOLONG;
        fio_fail_sys("open", path);
    }
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        tmp_path[0] = '\0';
        fio_fail_sys("create a temporary file beside", path);
    }
    return fd;
}

static __attribute__((noreturn)) void op_write(void)
{
    const char *path = fio_job->path;
    fio_need_cwd(path);
    char bad[PATH_MAX];
    if (fio_job->parents && fio_make_parents(path, false, bad, sizeof bad) < 0)
        fio_fail_sys("mkdir", bad);
    mode_t final_mode;
    int fd = write_open(path, &final_mode);
    fio_ok();
    static char block[FOP_DATA_MAX];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(FOP_IN_FD, block, sizeof block);
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
    if (!fio_input_complete()) {
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
    fio_end("bytes", total);
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
    size_t room = fio_job->max_frame > FOP_ENTRY_FIXED + (name ? strlen(name) : 0)
                      ? fio_job->max_frame - FOP_ENTRY_FIXED - (name ? strlen(name) : 0) : 0;
    bool cut = tn >= 0 && (size_t)tn > room;
    if (cut)
        tn = (ssize_t)room;
    unsigned entry = wire_map_begin(w);
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
    wire_map_end(w, entry);
}

static __attribute__((noreturn)) void op_stat(void)
{
    const char *path = fio_job->path;
    fio_need_cwd(path);
    struct stat st;
    if ((fio_job->follow ? stat(path, &st) : lstat(path, &st)) < 0)
        fio_fail_sys("stat", path);
    struct wire_enc w;
    wire_begin(&w, fio_out());
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_key(&w, "stat");
    pack_stat(&w, NULL, &st, AT_FDCWD, path);
    wire_end(&w);
    fio_finish();
}

static struct buf batch;                /* encoded entries of the next `entries` event */
static size_t nbatch;

static void ls_flush(void)
{
    if (nbatch == 0)
        return;
    struct wire_enc w;
    wire_begin(&w, fio_out());
    wire_kv_str(&w, "type", "entries");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_key(&w, "entries");
    msgpack_pack_array(&w.pk, (uint32_t)nbatch);
    buf_append(fio_out(), buf_ptr(&batch), buf_size(&batch));
    wire_end(&w);
    fio_flush();
    buf_reset(&batch, 0);
    nbatch = 0;
}

static __attribute__((noreturn)) void op_ls(void)
{
    const char *path = fio_job->path;
    fio_need_cwd(path);
    DIR *d = opendir(path);
    if (!d)
        fio_fail_sys("open directory", path);
    fio_ok();
    /* an entry is at most ~4.5 KiB (a name, a link target): keep the event
     * within max_frame; below 16 KiB frames, one entry per event (pack_stat
     * cuts a target that would not fit) */
    size_t budget = fio_job->max_frame > 16384 ? fio_job->max_frame - 8192 : 0;
    uint64_t count = 0;
    buf_init(&batch);
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                fio_fail_sys("read directory", path);
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
    fio_end("count", count);
}

/* --- mkdir, remove, rename, chmod ------------------------------------------------ */

/* mkdir(2) drops setuid/setgid (Linux keeps only the sticky bit): set them
 * on the directory just made, through a descriptor of it. By name, a user who
 * can write in the parent could swap the fresh name for a symlink and have
 * root chmod the symlink's target. O_NOFOLLOW refuses a symlink; a directory
 * owned by someone else is not the one we made. */
static void mkdir_special_bits(const char *path, mode_t mode)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        fio_fail_sys("open the new directory", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        fio_fail_sys("stat", path);
    if (st.st_uid != geteuid())
        fio_fail(EAGAIN, NULL, path, "%.300s was replaced while being created", path);
    if (fchmod(fd, mode) < 0)
        fio_fail_sys("chmod", path);
    close(fd);
}

static __attribute__((noreturn)) void op_mkdir(void)
{
    const char *path = fio_job->path;
    fio_need_cwd(path);
    char bad[PATH_MAX];
    if (fio_job->parents && fio_make_parents(path, false, bad, sizeof bad) < 0)
        fio_fail_sys("mkdir", bad);
    if (mkdir(path, fio_job->mode) < 0) {
        struct stat st;
        if (!(fio_job->parents && errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
            fio_fail_sys("mkdir", path);
    } else if (fio_job->mode & 07000) {
        mkdir_special_bits(path, fio_job->mode);
    }
    fio_ok();
    _exit(0);
}

static char rm_path[PATH_MAX];          /* the path being removed, for errors */

static __attribute__((noreturn)) void rm_fail(int err, size_t len)
{
    rm_path[len < sizeof rm_path ? len : sizeof rm_path - 1] = '\0';
    errno = err;
    fio_fail_sys("remove", rm_path);
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
    const char *path = fio_job->path;
    fio_need_cwd(path);
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT && fio_job->force) {
            fio_ok();
            _exit(0);
        }
        fio_fail_sys("remove", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && !(errno == ENOENT && fio_job->force))
            fio_fail_sys("remove", path);
    } else if (!fio_job->recursive) {
        if (rmdir(path) < 0)
            fio_fail_sys("remove", path);
    } else {
        size_t n = strlen(path);
        if (n >= sizeof rm_path) {
            errno = ENAMETOOLONG;
            fio_fail_sys("remove", path);
        }
        memcpy(rm_path, path, n + 1);
        rm_tree(AT_FDCWD, path, n, 0);
    }
    fio_ok();
    _exit(0);
}

static __attribute__((noreturn)) void op_rename(void)
{
    fio_need_cwd(fio_job->path);
    fio_need_cwd(fio_job->path2);
    if (syscall(SYS_renameat2, AT_FDCWD, fio_job->path, AT_FDCWD, fio_job->path2,
                fio_job->overwrite ? 0 : RENAME_NOREPLACE) < 0) {
        int err = errno;
        bool to = err == EEXIST || err == ENOTEMPTY || err == EISDIR;
        errno = err;
        if (to)
            fio_fail(err, NULL, fio_job->path2, "rename %.300s to %.300s", fio_job->path, fio_job->path2);
        fio_fail(err, NULL, fio_job->path, "rename %.300s to %.300s", fio_job->path, fio_job->path2);
    }
    fio_ok();
    _exit(0);
}

static __attribute__((noreturn)) void op_chmod(void)
{
    fio_need_cwd(fio_job->path);
    if (chmod(fio_job->path, fio_job->mode) < 0)
        fio_fail_sys("chmod", fio_job->path);
    fio_ok();
    _exit(0);
}

void fop_child_run(const struct fop_job *j)
{
    fio_init(j, chdir(j->cwd) < 0 ? errno : 0);
    switch (j->kind) {
#if SA_XFER_EXEC
    case FOP_UPLOAD: case FOP_DOWNLOAD: break;  /* sandbox-agent-xfer's (fop.c) */
#else
    case FOP_UPLOAD: fop_upload();
    case FOP_DOWNLOAD: fop_download();
#endif
    case FOP_READ: op_read();
    case FOP_WRITE: op_write();
    case FOP_STAT: op_stat();
    case FOP_LS: op_ls();
    case FOP_MKDIR: op_mkdir();
    case FOP_REMOVE: op_remove();
    case FOP_RENAME: op_rename();
    case FOP_CHMOD: op_chmod();
    }
    fio_fail(0, "internal", "", "unknown file operation");
}
