/* test_xfer.c — the archive engine: round trips, archives from other tools,
 * and hostile archives that must not write outside the destination.
 *
 * Every test works in its own temporary directory T = mkdtemp under /tmp:
 *   T/dest     the destination;
 *   T/outside  a sentinel directory holding one file, "keep", which every
 *              hostile archive aims at. After each extraction T must hold
 *              exactly {dest, outside} and outside exactly {keep}, unchanged.
 * Archives are built in memory with libarchive's writer, or at run time with
 * GNU tar, bsdtar and /usr/bin/python3's tarfile when those exist (skipped
 * visibly otherwise).
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "rmtree.h"
#include "err.h"
#include "wire.h"
#include "xfer.h"


/* ------------------------------------------------------------------------ */
/* Fixture.                                                                   */

struct fx {
    char root[64];
    char dest[128];
    char outside[128];
    int dest_fd;
};

static void write_file(const char *path, const char *data, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data)) {
        perror(path);
        exit(2);
    }
    close(fd);
}

static void fx_init(struct fx *f)
{
    strcpy(f->root, "/tmp/xfer-test-XXXXXX");
    if (!mkdtemp(f->root)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(f->dest, sizeof f->dest, "%s/dest", f->root);
    snprintf(f->outside, sizeof f->outside, "%s/outside", f->root);
    if (mkdir(f->dest, 0755) < 0 || mkdir(f->outside, 0755) < 0) {
        perror("mkdir");
        exit(2);
    }
    char keep[256];
    snprintf(keep, sizeof keep, "%s/keep", f->outside);
    write_file(keep, "keep", 0644);
    f->dest_fd = open(f->dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static void fx_free(struct fx *f)
{
    close(f->dest_fd);
    rm_rf_at(AT_FDCWD, f->root);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    char *p = xmalloc((size_t)st.st_size + 1);
    ssize_t n = read(fd, p, (size_t)st.st_size);
    close(fd);
    p[n < 0 ? 0 : n] = '\0';
    if (len)
        *len = n < 0 ? 0 : (size_t)n;
    return p;
}

/* The sentinel is untouched: T = {dest, outside}, outside = {keep}, keep = "keep", nlink 1. */
static bool fx_outside_intact(const struct fx *f)
{
    char keep[256];
    snprintf(keep, sizeof keep, "%s/keep", f->outside);
    struct stat st;
    char *s = slurp(keep, NULL);
    bool ok = count_entries(f->root) == 2 && count_entries(f->outside) == 1 && s &&
              strcmp(s, "keep") == 0 && lstat(keep, &st) == 0 && st.st_nlink == 1 &&
              (st.st_mode & 07777) == 0644;
    free(s);
    return ok;
}

static bool has_refusal(const struct xfer_result *r, const char *path)
{
    for (size_t i = 0; i < r->nrefused; i++)
        if (strcmp(r->refused[i].path, path) == 0)
            return true;
    return false;
}

static const char *err_code(const struct xfer_result *r)
{
    return r->failed && r->error.err.code ? r->error.err.code : "";
}

/* ------------------------------------------------------------------------ */
/* Archives in memory.                                                        */

struct ab {
    struct archive *a;
    struct archive_entry *e;
    struct buf out;
};

static ssize_t ab_write_cb(struct archive *a, void *arg, const void *p, size_t n)
{
    (void)a;
    buf_append(arg, p, n);
    return (ssize_t)n;
}

static void ab_begin(struct ab *b, int format, bool gzip)
{
    buf_init(&b->out);
    b->a = archive_write_new();
    b->e = archive_entry_new();
    archive_write_set_format(b->a, format);
    if (gzip)
        archive_write_add_filter_gzip(b->a);
    archive_write_set_bytes_in_last_block(b->a, 1);
    archive_write_open(b->a, &b->out, NULL, ab_write_cb, NULL);
}

static void ab_entry(struct ab *b, const char *name, mode_t type, mode_t mode, const void *data,
                     size_t len, const char *symlink, const char *hardlink, dev_t rdev)
{
    archive_entry_clear(b->e);
    archive_entry_copy_pathname(b->e, name);
    archive_entry_set_filetype(b->e, type);
    archive_entry_set_perm(b->e, mode);
    archive_entry_set_mtime(b->e, 1600000000, 0);
    archive_entry_set_size(b->e, (la_int64_t)len);
    if (symlink)
        archive_entry_copy_symlink(b->e, symlink);
    if (hardlink)
        archive_entry_copy_hardlink(b->e, hardlink);
    if (rdev)
        archive_entry_set_rdev(b->e, rdev);
    if (archive_write_header(b->a, b->e) < ARCHIVE_WARN)
        fprintf(stderr, "ab_entry %s: %s\n", name, archive_error_string(b->a));
    if (len)
        archive_write_data(b->a, data, len);
}

static void ab_file(struct ab *b, const char *name, mode_t mode, const char *data)
{
    ab_entry(b, name, AE_IFREG, mode, data, strlen(data), NULL, NULL, 0);
}

static void ab_end(struct ab *b)
{
    archive_write_close(b->a);
    archive_write_free(b->a);
    archive_entry_free(b->e);
}

static int memfd_of(const void *p, size_t n)
{
    int fd = memfd_create("tar", MFD_CLOEXEC);
    const char *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w <= 0)
            exit(2);
        q += w;
        n -= (size_t)w;
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static int extract_mem(const struct fx *f, const void *p, size_t n, struct xfer_extract_opts *o,
                       struct xfer_result *r)
{
    int fd = memfd_of(p, n);
    o->dest_fd = f->dest_fd;
    xfer_result_init(r);
    int rc = xfer_extract(fd, o, r);
    close(fd);
    return rc;
}

static int extract_file(const struct fx *f, const char *path, struct xfer_extract_opts *o,
                        struct xfer_result *r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    o->dest_fd = f->dest_fd;
    xfer_result_init(r);
    int rc = xfer_extract(fd, o, r);
    close(fd);
    return rc;
}

static struct xfer_extract_opts plain_opts(void)
{
    struct xfer_extract_opts o = { .max_bytes = 64u << 20, .max_entries = 10000 };
    return o;
}

/* ------------------------------------------------------------------------ */
/* Trees.                                                                     */

static char *path2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void set_mtime(const char *path, time_t t)
{
    struct timespec ts[2] = { { .tv_sec = t }, { .tv_sec = t } };
    utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

/* A tree with what a round trip must keep. */
static void make_tree(const char *dir)
{
    char p[512];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0750);
    snprintf(p, sizeof p, "%s/sub/deeper", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/plain.txt", dir);
    write_file(p, "hello\n", 0644);
    chmod(p, 0640);
    set_mtime(p, 1500000000);
    snprintf(p, sizeof p, "%s/run.sh", dir);
    write_file(p, "#!/bin/sh\necho hi\n", 0755);
    chmod(p, 0755);
    snprintf(p, sizeof p, "%s/empty", dir);
    write_file(p, "", 0600);
    chmod(p, 0600);
    snprintf(p, sizeof p, "%s/sub/deeper/h\xc3\xa9llo w\xc3\xb6rld.txt", dir);
    write_file(p, "utf-8 name\n", 0644);
    snprintf(p, sizeof p,
             "%s/sub/a-very-long-directory-name-that-goes-on-and-on-0123456789abcdef", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p,
             "%s/sub/a-very-long-directory-name-that-goes-on-and-on-0123456789abcdef/"
             "and-a-file-name-that-is-also-rather-long-so-that-the-path-exceeds-100-bytes.txt",
             dir);
    write_file(p, "long name\n", 0644);
    snprintf(p, sizeof p, "%s/link-rel", dir);
    symlink("plain.txt", p);
    snprintf(p, sizeof p, "%s/link-abs", dir);
    symlink("/nonexistent/target/of/a/symlink", p);
    snprintf(p, sizeof p, "%s/sub/link-dir", dir);
    symlink("deeper", p);
    /* a 200 KiB file: several data blocks */
    snprintf(p, sizeof p, "%s/big.bin", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char blk[4096];
    for (int i = 0; i < 50; i++) {
        memset(blk, 'a' + i % 26, sizeof blk);
        if (write(fd, blk, sizeof blk) != (ssize_t)sizeof blk)
            exit(2);
    }
    close(fd);
    set_mtime(p, 1234567890);
    snprintf(p, sizeof p, "%s/sub/deeper", dir);
    set_mtime(p, 1400000000);
    snprintf(p, sizeof p, "%s/sub", dir);
    set_mtime(p, 1300000000);
    snprintf(p, sizeof p, "%s/link-rel", dir);
    set_mtime(p, 1200000000);
}

/* Compare two trees: types, modes, sizes, contents, link targets, mtimes
 * (mtimes of symlinks only when check_link_mtime). Returns mismatches. */
static int compare_trees(const char *a, const char *b, bool check_link_mtime)
{
    int bad = 0;
    struct stat sa, sb;
    if (lstat(a, &sa) < 0 || lstat(b, &sb) < 0) {
        fprintf(stderr, "compare: missing %s or %s\n", a, b);
        return 1;
    }
    if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
        fprintf(stderr, "compare: type differs %s\n", b);
        return 1;
    }
    if (!S_ISLNK(sa.st_mode) && (sa.st_mode & 07777) != (sb.st_mode & 07777)) {
        fprintf(stderr, "compare: mode %o vs %o %s\n", sa.st_mode & 07777, sb.st_mode & 07777, b);
        bad++;
    }
    if ((!S_ISLNK(sa.st_mode) || check_link_mtime) && sa.st_mtim.tv_sec != sb.st_mtim.tv_sec) {
        fprintf(stderr, "compare: mtime %ld vs %ld %s\n", (long)sa.st_mtim.tv_sec,
                (long)sb.st_mtim.tv_sec, b);
        bad++;
    }
    if (S_ISREG(sa.st_mode)) {
        size_t na = 0, nb = 0;
        char *ca = slurp(a, &na), *cb = slurp(b, &nb);
        if (!ca || !cb || na != nb || memcmp(ca, cb, na) != 0) {
            fprintf(stderr, "compare: content differs %s\n", b);
            bad++;
        }
        free(ca);
        free(cb);
    } else if (S_ISLNK(sa.st_mode)) {
        char ta[PATH_MAX] = "", tb[PATH_MAX] = "";
        if (readlink(a, ta, sizeof ta - 1) < 0 || readlink(b, tb, sizeof tb - 1) < 0 ||
            strcmp(ta, tb) != 0) {
            fprintf(stderr, "compare: link target differs %s\n", b);
            bad++;
        }
    } else if (S_ISDIR(sa.st_mode)) {
        if (count_entries(a) != count_entries(b)) {
            fprintf(stderr, "compare: entry count %d vs %d in %s\n", count_entries(a),
                    count_entries(b), b);
            bad++;
        }
        DIR *d = opendir(a);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char *ca = path2(a, de->d_name), *cb = path2(b, de->d_name);
            bad += compare_trees(ca, cb, check_link_mtime);
            free(ca);
            free(cb);
        }
        if (d)
            closedir(d);
    }
    return bad;
}

/* ------------------------------------------------------------------------ */
/* Round trips.                                                               */

static void pack_to_file(int base_fd, const char *name, bool gzip, const char *out, int *rc,
                         struct xfer_error *e)
{
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char *paths[] = { (char *)name };
    uint64_t bytes = 0;
    *rc = xfer_pack(fd, base_fd, paths, 1, gzip, &bytes, e);
    struct stat st;
    fstat(fd, &st);
    CHECK(*rc < 0 || bytes == (uint64_t)st.st_size);
    close(fd);
}

static void test_round_trip(bool gzip)
{
    struct fx f;
    fx_init(&f);
    char *src = path2(f.outside, "tree");
    make_tree(src);
    int out_fd = open(f.outside, O_PATH | O_DIRECTORY | O_CLOEXEC);
    char tarpath[256];
    snprintf(tarpath, sizeof tarpath, "%s/../pack.tar", f.dest);
    struct xfer_error e;
    int rc;
    pack_to_file(out_fd, "tree", gzip, tarpath, &rc, &e);
    CHECK(rc == 0);
    if (gzip) {
        size_t n = 0;
        char *p = slurp(tarpath, &n);
        CHECK(n > 2 && (uint8_t)p[0] == 0x1f && (uint8_t)p[1] == 0x8b);
        free(p);
    }
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_file(&f, tarpath, &o, &r) == 0);
    CHECK(r.nrefused == 0 && !r.failed);
    CHECK(r.entries == 13);
    char *got = path2(f.dest, "tree");
    CHECK(compare_trees(src, got, true) == 0);
    xfer_result_free(&r);

    /* extracting again over the same tree: files replaced, same result */
    CHECK(extract_file(&f, tarpath, &o, &r) == 0);
    CHECK(r.nrefused == 0 && compare_trees(src, got, true) == 0);
    xfer_result_free(&r);
    free(got);
    free(src);
    close(out_fd);
    unlink(tarpath);
    fx_free(&f);
}

/* ustar prefix, pax path/linkpath, GNU long names, written by libarchive. */
static void test_formats(void)
{
    static const struct { int format; const char *name; } fmts[] = {
        { ARCHIVE_FORMAT_TAR_USTAR, "ustar" },
        { ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, "pax" },
        { ARCHIVE_FORMAT_TAR_GNUTAR, "gnutar" },
    };
    const char *longdir = "d0123456789/d0123456789/d0123456789/d0123456789/d0123456789/"
                          "d0123456789/d0123456789/d0123456789";
    char longfile[512];
    snprintf(longfile, sizeof longfile, "%s/file-with-a-name.txt", longdir);
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        for (int gz = 0; gz < 2; gz++) {
            int fails_before = check_fails;
            struct fx f;
            fx_init(&f);
            struct ab b;
            ab_begin(&b, fmts[i].format, gz);
            ab_file(&b, longfile, 0644, "long");
            if (fmts[i].format != ARCHIVE_FORMAT_TAR_USTAR) {
                ab_file(&b, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt", 0600, "utf8");
                char longtarget[400];
                snprintf(longtarget, sizeof longtarget, "%s/%s", longdir, longdir);
                ab_entry(&b, "ln", AE_IFLNK, 0777, NULL, 0, longtarget, NULL, 0);
            }
            ab_end(&b);
            struct xfer_extract_opts o = plain_opts();
            struct xfer_result r;
            CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
            CHECK(r.nrefused == 0);
            char *p = path2(f.dest, longfile);
            char *s = slurp(p, NULL);
            CHECK(s && strcmp(s, "long") == 0);
            free(s);
            free(p);
            if (fmts[i].format != ARCHIVE_FORMAT_TAR_USTAR) {
                p = path2(f.dest, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt");
                s = slurp(p, NULL);
                CHECK(s && strcmp(s, "utf8") == 0);
                struct stat st;
                CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0600 &&
                      st.st_mtim.tv_sec == 1600000000);
                free(s);
                free(p);
                char t[600] = "";
                p = path2(f.dest, "ln");
                CHECK(readlink(p, t, sizeof t - 1) > 100 && strncmp(t, longdir, 20) == 0);
                free(p);
            }
            if (check_fails != fails_before)
                fprintf(stderr, "  (format %s gzip %d)\n", fmts[i].name, gz);
            xfer_result_free(&r);
            buf_free(&b.out);
            CHECK(fx_outside_intact(&f));
            fx_free(&f);
        }
    }
}

/* A size field in base-256 (GNU/star extension for sizes >= 8 GiB), made by
 * patching a ustar header. */
static void test_base256_size(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, false);
    ab_file(&b, "b256.txt", 0644, "12345");
    ab_end(&b);
    uint8_t *h = buf_ptr(&b.out);
    for (int i = 124; i < 136; i++)
        h[i] = 0;
    h[124] = 0x80;
    h[135] = 5;
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    char *p = path2(f.dest, "b256.txt");
    char *s = slurp(p, NULL);
    CHECK(s && strcmp(s, "12345") == 0);
    free(s);
    free(p);
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

/* Archives made by the real tools, when present. */
static bool have(const char *prog)
{
    return access(prog, X_OK) == 0;
}

/* cmd sees $SRC (the directory holding "tree") and $OUT (the archive). */
static void tool_case(const char *label, const char *cmd)
{
    struct fx f;
    fx_init(&f);
    char *src = path2(f.outside, "tree");
    make_tree(src);
    char tarpath[256];
    snprintf(tarpath, sizeof tarpath, "%s/t.tar", f.root);
    setenv("SRC", f.outside, 1);
    setenv("OUT", tarpath, 1);
    int st = system(cmd);
    CHECK(st == 0);
    if (st != 0) {
        fprintf(stderr, "  tool %s failed: %s\n", label, cmd);
    } else {
        struct xfer_extract_opts o = plain_opts();
        struct xfer_result r;
        CHECK(extract_file(&f, tarpath, &o, &r) == 0);
        CHECK(r.nrefused == 0);
        char *got = path2(f.dest, "tree");
        int bad = compare_trees(src, got, false);
        CHECK(bad == 0);
        if (bad || r.failed)
            fprintf(stderr, "  tool %s: %d mismatches, %s\n", label, bad, r.error.err.msg);
        free(got);
        xfer_result_free(&r);
    }
    unlink(tarpath);
    free(src);
    fx_free(&f);
}

static void test_tools(void)
{
    if (have("/usr/bin/tar") || have("/bin/tar")) {
        /* ustar cannot hold the 100+-byte file name of the tree: GNU tar
         * leaves it out with a warning, so only the other formats compare */
        tool_case("gnu tar gnu", "tar -C \"$SRC\" --format=gnu -cf \"$OUT\" tree");
        tool_case("gnu tar pax", "tar -C \"$SRC\" --format=pax -cf \"$OUT\" tree");
        tool_case("gnu tar pax gzip", "tar -C \"$SRC\" --format=pax -czf \"$OUT\" tree");
        tool_case("gnu tar posix ./",
                  "mkdir \"$OUT.d\" && tar -C \"$SRC\" --format=posix -cf \"$OUT.d/t\" tree && "
                  "mv \"$OUT.d/t\" \"$OUT\" && rmdir \"$OUT.d\"");
    } else {
        printf("SKIP: GNU tar not installed\n");
    }
    if (have("/usr/bin/bsdtar")) {
        tool_case("bsdtar", "bsdtar -C \"$SRC\" -cf \"$OUT\" tree");
        tool_case("bsdtar gzip", "bsdtar -C \"$SRC\" -czf \"$OUT\" tree");
    } else {
        printf("SKIP: bsdtar not installed\n");
    }
    if (have("/usr/bin/python3")) {
        tool_case("python ustar",
                  "cd \"$SRC\" && /usr/bin/python3 -c \"import tarfile,os; t=tarfile.open("
                  "os.environ['OUT'],'w',format=tarfile.USTAR_FORMAT); t.add('tree'); t.close()\"");
        tool_case("python gnu",
                  "cd \"$SRC\" && /usr/bin/python3 -c \"import tarfile,os; t=tarfile.open("
                  "os.environ['OUT'],'w',format=tarfile.GNU_FORMAT); t.add('tree'); t.close()\"");
        tool_case("python pax gz",
                  "cd \"$SRC\" && /usr/bin/python3 -c \"import tarfile,os; t=tarfile.open("
                  "os.environ['OUT'],'w:gz',format=tarfile.PAX_FORMAT); t.add('tree'); t.close()\"");
    } else {
        printf("SKIP: /usr/bin/python3 not installed\n");
    }
}

/* The "./" entry GNU tar writes for `-C dir .` extracts into dest without
 * touching dest's own metadata. */
static void test_dot_entry(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, false);
    ab_entry(&b, "./", AE_IFDIR, 0700, NULL, 0, NULL, NULL, 0);
    ab_file(&b, "./a//b/./c.txt", 0644, "c");
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    struct stat st;
    CHECK(stat(f.dest, &st) == 0 && (st.st_mode & 07777) == 0755);
    char *p = path2(f.dest, "a/b/c.txt");
    CHECK(stat(p, &st) == 0 && S_ISREG(st.st_mode));
    free(p);
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

/* ------------------------------------------------------------------------ */
/* Hostile archives.                                                          */

static void test_dotdot_and_absolute(void)
{
    struct fx f;
    fx_init(&f);
    char abs[256];
    snprintf(abs, sizeof abs, "%s/abs", f.outside);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, false);
    ab_file(&b, "../outside/escape", 0644, "x");
    ab_file(&b, "a/../../outside/escape2", 0644, "x");
    ab_file(&b, abs, 0644, "x");
    ab_file(&b, "ok.txt", 0644, "fine");
    ab_entry(&b, "..", AE_IFDIR, 0777, NULL, 0, NULL, NULL, 0);
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(r.entries == 1);
    CHECK(r.nrefused == 4);
    CHECK(has_refusal(&r, "../outside/escape"));
    CHECK(has_refusal(&r, abs));
    CHECK(fx_outside_intact(&f));
    CHECK(count_entries(f.dest) == 1);
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

/* A symlink (absolute or relative) leaving dest, then files written through it. */
static void test_symlink_escape(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_GNUTAR, false);
    ab_entry(&b, "abs", AE_IFLNK, 0777, NULL, 0, f.outside, NULL, 0);
    ab_file(&b, "abs/pwn", 0644, "pwned");
    ab_file(&b, "abs/sub/pwn", 0644, "pwned");
    ab_entry(&b, "rel", AE_IFLNK, 0777, NULL, 0, "../outside", NULL, 0);
    ab_file(&b, "rel/pwn", 0644, "pwned");
    ab_entry(&b, "rel/newdir", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    char keep[256];
    snprintf(keep, sizeof keep, "%s/keep", f.outside);
    ab_entry(&b, "filelink", AE_IFLNK, 0777, NULL, 0, keep, NULL, 0);
    ab_file(&b, "filelink", 0644, "replaced, not followed");
    /* a symlink that stays inside may be followed */
    ab_entry(&b, "real", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    ab_entry(&b, "inside", AE_IFLNK, 0777, NULL, 0, "real", NULL, 0);
    ab_file(&b, "inside/f", 0644, "via inside link");
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(!r.failed);
    CHECK(has_refusal(&r, "abs/pwn") && has_refusal(&r, "abs/sub/pwn"));
    CHECK(has_refusal(&r, "rel/pwn") && has_refusal(&r, "rel/newdir"));
    CHECK(fx_outside_intact(&f));
    struct stat st;
    char *p = path2(f.dest, "filelink");
    CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode));
    free(p);
    p = path2(f.dest, "real/f");
    char *s = slurp(p, NULL);
    CHECK(s && strcmp(s, "via inside link") == 0);
    free(s);
    free(p);
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

/* A symlink already on disk in dest pointing outside (dest/link -> outside),
 * and an archive writing link/passwd and link/ itself. */
static void test_existing_symlink(void)
{
    struct fx f;
    fx_init(&f);
    char *l = path2(f.dest, "link");
    symlink(f.outside, l);
    char *l2 = path2(f.dest, "rlink");
    symlink("../outside", l2);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, false);
    ab_file(&b, "link/passwd", 0644, "root::0:0::/:/bin/sh");
    ab_file(&b, "link/keep", 0644, "overwritten?");
    ab_file(&b, "rlink/keep", 0644, "overwritten?");
    ab_entry(&b, "link/x/y", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    ab_entry(&b, "rlink/h", AE_IFREG, 0644, NULL, 0, NULL, "rlink/keep", 0);
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(r.entries == 0 && r.nrefused == 5);
    CHECK(fx_outside_intact(&f));
    xfer_result_free(&r);
    buf_free(&b.out);
    free(l);
    free(l2);
    fx_free(&f);
}

static void test_hardlinks(void)
{
    struct fx f;
    fx_init(&f);
    char keep[256];
    snprintf(keep, sizeof keep, "%s/keep", f.outside);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, false);
    ab_entry(&b, "h1", AE_IFREG, 0644, NULL, 0, NULL, "../outside/keep", 0);
    ab_entry(&b, "h2", AE_IFREG, 0644, NULL, 0, NULL, keep, 0);
    /* through a symlink to the outside file: links the symlink, not the file */
    ab_entry(&b, "s", AE_IFLNK, 0777, NULL, 0, keep, NULL, 0);
    ab_entry(&b, "h3", AE_IFREG, 0644, NULL, 0, NULL, "s", 0);
    /* through a symlinked directory that leaves dest */
    ab_entry(&b, "sd", AE_IFLNK, 0777, NULL, 0, f.outside, NULL, 0);
    ab_entry(&b, "h4", AE_IFREG, 0644, NULL, 0, NULL, "sd/keep", 0);
    /* the same for directories */
    ab_entry(&b, "dir", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    ab_entry(&b, "hd", AE_IFDIR, 0755, NULL, 0, NULL, "dir", 0);
    ab_entry(&b, "hdo", AE_IFDIR, 0755, NULL, 0, NULL, "../outside", 0);
    /* a good one */
    ab_file(&b, "file", 0640, "shared");
    ab_entry(&b, "dir/h5", AE_IFREG, 0640, NULL, 0, NULL, "file", 0);
    ab_entry(&b, "missing", AE_IFREG, 0640, NULL, 0, NULL, "nope", 0);
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(!r.failed);
    CHECK(has_refusal(&r, "h1") && has_refusal(&r, "h2") && has_refusal(&r, "h4"));
    CHECK(has_refusal(&r, "hd") && has_refusal(&r, "hdo") && has_refusal(&r, "missing"));
    CHECK(fx_outside_intact(&f));
    struct stat st, st2;
    char *p = path2(f.dest, "h3");
    CHECK(lstat(p, &st) == 0 && S_ISLNK(st.st_mode));
    free(p);
    p = path2(f.dest, "dir/h5");
    char *q = path2(f.dest, "file");
    CHECK(stat(p, &st) == 0 && stat(q, &st2) == 0 && st.st_ino == st2.st_ino && st.st_nlink == 2);
    free(p);
    free(q);
    CHECK(count_entries(f.dest) == 5);  /* s h3 sd dir file: nothing else */
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

static void test_devices(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, false);
    ab_entry(&b, "null", AE_IFCHR, 0666, NULL, 0, NULL, NULL, makedev(1, 3));
    ab_entry(&b, "sda", AE_IFBLK, 0660, NULL, 0, NULL, NULL, makedev(8, 0));
    ab_entry(&b, "fifo", AE_IFIFO, 0644, NULL, 0, NULL, NULL, 0);
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(r.entries == 0 && r.nrefused == 3 && count_entries(f.dest) == 0);
    xfer_result_free(&r);

    o.privileged = true;     /* root, but devices not asked for */
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(r.entries == 0 && r.nrefused == 3 && count_entries(f.dest) == 0);
    xfer_result_free(&r);

    if (geteuid() == 0) {
        o.allow_devices = true;
        CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
        CHECK(r.entries == 3 && r.nrefused == 0);
        struct stat st;
        char *p = path2(f.dest, "null");
        CHECK(lstat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) &&
              (st.st_mode & 0777) == 0666);
        free(p);
        p = path2(f.dest, "fifo");
        CHECK(lstat(p, &st) == 0 && S_ISFIFO(st.st_mode));
        free(p);
        xfer_result_free(&r);
    } else {
        printf("SKIP: device nodes as privileged (needs root)\n");
    }
    buf_free(&b.out);
    CHECK(fx_outside_intact(&f));
    fx_free(&f);
}

static void test_setuid(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, false);
    ab_file(&b, "suid", 04755, "#!/bin/sh\n");
    ab_file(&b, "sgid", 02755, "#!/bin/sh\n");
    ab_entry(&b, "sticky", AE_IFDIR, 01777, NULL, 0, NULL, NULL, 0);
    ab_entry(&b, "zero", AE_IFREG, 0, "z", 1, NULL, NULL, 0);
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    struct stat st;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    char *p1 = path2(f.dest, "suid"), *p2 = path2(f.dest, "sgid"), *p3 = path2(f.dest, "sticky"),
         *p4 = path2(f.dest, "zero");
    CHECK(stat(p1, &st) == 0 && (st.st_mode & 07777) == 0755);
    CHECK(stat(p2, &st) == 0 && (st.st_mode & 07777) == 0755);
    CHECK(stat(p3, &st) == 0 && (st.st_mode & 07777) == 0777);
    CHECK(stat(p4, &st) == 0 && (st.st_mode & 07777) == 0644);
    xfer_result_free(&r);
    o.privileged = true;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(stat(p1, &st) == 0 && (st.st_mode & 07777) == 04755);
    CHECK(stat(p2, &st) == 0 && (st.st_mode & 07777) == 02755);
    CHECK(stat(p3, &st) == 0 && (st.st_mode & 07777) == 01777);
    xfer_result_free(&r);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
    buf_free(&b.out);
    fx_free(&f);
}

static uint64_t du_bytes(const char *dir)
{
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *p = path2(dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0)
            total += S_ISDIR(st.st_mode) ? du_bytes(p) : (uint64_t)st.st_blocks * 512;
        free(p);
    }
    if (d)
        closedir(d);
    return total;
}

/* 1 GiB of zeros in one entry, and 32 MiB in 1 MiB entries, capped at 10 MiB. */
static void test_bombs(void)
{
    struct fx f;
    fx_init(&f);
    char *zeros = xcalloc(1, 1 << 20);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, true);
    archive_entry_clear(b.e);
    archive_entry_copy_pathname(b.e, "bomb");
    archive_entry_set_filetype(b.e, AE_IFREG);
    archive_entry_set_perm(b.e, 0644);
    archive_entry_set_size(b.e, 1ll << 30);
    archive_write_header(b.a, b.e);
    for (int i = 0; i < 1024; i++)
        archive_write_data(b.a, zeros, 1 << 20);
    ab_end(&b);
    CHECK(buf_size(&b.out) < (8u << 20));
    struct xfer_extract_opts o = plain_opts();
    o.max_bytes = 10u << 20;
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) < 0);
    CHECK(strcmp(err_code(&r), "too_large") == 0);
    CHECK(r.bytes <= o.max_bytes && du_bytes(f.dest) <= o.max_bytes);
    xfer_result_free(&r);
    buf_free(&b.out);

    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, true);
    for (int i = 0; i < 32; i++) {
        char name[32];
        snprintf(name, sizeof name, "z%02d", i);
        ab_entry(&b, name, AE_IFREG, 0644, zeros, 1 << 20, NULL, NULL, 0);
    }
    ab_end(&b);
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) < 0);
    CHECK(strcmp(err_code(&r), "too_large") == 0);
    CHECK(r.entries == 10 && r.bytes == o.max_bytes);
    CHECK(du_bytes(f.dest) <= o.max_bytes + 65536);
    CHECK(count_entries(f.dest) == 10);    /* no temporary file left behind */
    xfer_result_free(&r);

    /* a cap on entries */
    o.max_bytes = 64u << 20;
    o.max_entries = 5;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) < 0);
    CHECK(strcmp(err_code(&r), "too_many") == 0 && r.entries == 5);
    xfer_result_free(&r);
    buf_free(&b.out);
    free(zeros);
    CHECK(fx_outside_intact(&f));
    fx_free(&f);
}

static void test_bad_archives(void)
{
    struct fx f;
    fx_init(&f);
    char data[5000];
    memset(data, 'q', sizeof data);
    for (int gz = 0; gz < 2; gz++) {
        struct ab b;
        ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, gz);
        ab_entry(&b, "first", AE_IFREG, 0644, data, sizeof data, NULL, NULL, 0);
        ab_entry(&b, "second", AE_IFREG, 0644, data, sizeof data, NULL, NULL, 0);
        ab_end(&b);
        /* cut in the middle of the second entry's data */
        size_t cut = gz ? buf_size(&b.out) / 2 : 512 * 3 + 5000 + 700;
        struct xfer_extract_opts o = plain_opts();
        struct xfer_result r;
        CHECK(extract_mem(&f, buf_ptr(&b.out), cut, &o, &r) < 0);
        CHECK(strcmp(err_code(&r), "bad_archive") == 0);
        CHECK(r.error.err.msg[0] != '\0');
        if (!gz)
            CHECK(strcmp(r.error.path, "second") == 0);
        xfer_result_free(&r);
        buf_free(&b.out);
    }
    /* garbage */
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, data, sizeof data, &o, &r) < 0);
    CHECK(strcmp(err_code(&r), "bad_archive") == 0);
    xfer_result_free(&r);
    /* gzip magic then garbage */
    data[0] = (char)0x1f;
    data[1] = (char)0x8b;
    data[2] = 8;
    data[3] = 0;
    CHECK(extract_mem(&f, data, sizeof data, &o, &r) < 0);
    CHECK(strcmp(err_code(&r), "bad_archive") == 0);
    xfer_result_free(&r);
    /* an empty stream is an empty archive */
    CHECK(extract_mem(&f, "", 0, &o, &r) == 0 && r.entries == 0);
    xfer_result_free(&r);
    CHECK(count_entries(f.dest) == 1 || count_entries(f.dest) == 0);
    CHECK(fx_outside_intact(&f));
    fx_free(&f);
}

/* Things in the way: a directory where a file goes, a file where a directory goes. */
static void test_in_the_way(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, false);
    ab_entry(&b, "d", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    ab_file(&b, "d/inner", 0644, "x");
    ab_file(&b, "d", 0644, "a file over a non-empty dir");
    ab_file(&b, "f", 0644, "file");
    ab_entry(&b, "f", AE_IFDIR, 0755, NULL, 0, NULL, NULL, 0);
    ab_file(&b, "g", 0644, "file");
    ab_file(&b, "g/under", 0644, "under a file");
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(has_refusal(&r, "d") && has_refusal(&r, "g/under"));
    struct stat st;
    char *p = path2(f.dest, "f");
    CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode));
    free(p);
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

/* As root: a helper running as nobody cannot extract into root's directory. */
static void test_identity(void)
{
    if (geteuid() != 0) {
        printf("SKIP: identity test (needs root)\n");
        return;
    }
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, false);
    ab_file(&b, "x", 0644, "x");
    ab_end(&b);
    int fd = memfd_of(buf_ptr(&b.out), buf_size(&b.out));
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(3);
        struct xfer_extract_opts o = plain_opts();
        o.dest_fd = f.dest_fd;
        struct xfer_result r;
        xfer_result_init(&r);
        int rc = xfer_extract(fd, &o, &r);
        _exit(rc < 0 && strcmp(err_code(&r), "EACCES") == 0 && r.entries == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(count_entries(f.dest) == 0);
    close(fd);
    buf_free(&b.out);
    fx_free(&f);
}

/* ------------------------------------------------------------------------ */
/* Packing and the result frame.                                              */

static void test_pack(void)
{
    struct fx f;
    fx_init(&f);
    int base = open(f.outside, O_PATH | O_DIRECTORY | O_CLOEXEC);
    char *lnk = path2(f.outside, "lnk");
    symlink("keep", lnk);
    char tarpath[256];
    snprintf(tarpath, sizeof tarpath, "%s/p.tar", f.dest);
    int fd = open(tarpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char *paths[] = { "keep", "lnk", "nope/missing" };
    struct xfer_error e;
    uint64_t bytes = 7;
    CHECK(xfer_pack(fd, base, paths, 3, false, &bytes, &e) < 0);
    CHECK(e.err.code && strcmp(e.err.code, "ENOENT") == 0 && strcmp(e.path, "nope/missing") == 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == 0 && bytes == 0);   /* checked before writing */

    /* symlinks stored as symlinks; gzip readable by libarchive */
    char *absk = path2(f.outside, "keep");
    char *paths2[] = { "keep", "lnk", absk };
    CHECK(xfer_pack(fd, base, paths2, 3, true, &bytes, &e) == 0);
    close(fd);
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_filter_gzip(a);
    CHECK(archive_read_open_filename(a, tarpath, 10240) == ARCHIVE_OK);
    struct archive_entry *ent;
    int n = 0;
    while (archive_read_next_header(a, &ent) == ARCHIVE_OK) {
        n++;
        const char *name = archive_entry_pathname(ent);
        if (strcmp(name, "lnk") == 0)
            CHECK(archive_entry_filetype(ent) == AE_IFLNK &&
                  strcmp(archive_entry_symlink(ent), "keep") == 0);
        else if (strcmp(name, "keep") == 0)
            CHECK(archive_entry_filetype(ent) == AE_IFREG && archive_entry_size(ent) == 4);
        else
            CHECK(strcmp(name, absk + 1) == 0);   /* stored without the leading "/" */
    }
    CHECK(n == 3);
    CHECK(archive_filter_code(a, 0) == ARCHIVE_FILTER_GZIP);
    archive_read_free(a);

    /* "." packs the directory's contents as ./x */
    fd = open(tarpath, O_WRONLY | O_TRUNC | O_CLOEXEC);
    char *paths3[] = { "." };
    CHECK(xfer_pack(fd, base, paths3, 1, false, NULL, &e) == 0);
    close(fd);
    struct fx g;
    fx_init(&g);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_file(&g, tarpath, &o, &r) == 0 && r.nrefused == 0);
    char *k = path2(g.dest, "keep");
    char *ks = slurp(k, NULL);
    CHECK(ks && strcmp(ks, "keep") == 0);
    free(ks);
    free(k);
    xfer_result_free(&r);
    fx_free(&g);

    free(absk);
    free(lnk);
    close(base);
    unlink(tarpath);
    fx_free(&f);
}

static void test_result_encode(void)
{
    struct xfer_result r;
    xfer_result_init(&r);
    r.entries = 3;
    r.bytes = 99;
    for (int i = 0; i < XFER_REFUSED_MAX + 10; i++) {
        char p[32];
        snprintf(p, sizeof p, "p%d", i);
        /* through the real path: refusals come from extraction; emulate */
        if (r.nrefused < XFER_REFUSED_MAX) {
            r.refused[r.nrefused].path = xstrdup(p);
            r.refused[r.nrefused++].reason = "absolute path";
        } else {
            r.refused_more++;
        }
    }
    r.failed = true;
    err_set(&r.error.err, ENOSPC, NULL, "write x: No space left on device");
    strcpy(r.error.path, "x");
    struct buf out;
    buf_init(&out);
    xfer_result_encode(&r, 42, WIRE_MAX_FRAME_DEFAULT, &out);
    uint32_t len = 0;
    struct sa_err e;
    CHECK(wire_frame_peek(buf_ptr(&out), buf_size(&out), WIRE_MAX_FRAME_DEFAULT, &len, &e) == 1);
    CHECK(len == buf_size(&out) - WIRE_HDR_LEN);
    msgpack_zone z;
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    msgpack_object root;
    CHECK(wire_decode(buf_ptr(&out) + WIRE_HDR_LEN, len, &z, &root, &e) == 0);
    uint64_t v = 0;
    CHECK(wire_obj_uint(wire_get(&root, "entries"), &v) && v == 3);
    CHECK(wire_obj_uint(wire_get(&root, "bytes"), &v) && v == 99);
    CHECK(wire_obj_uint(wire_get(&root, "refused_more"), &v) && v == 10);
    const msgpack_object *ref = wire_get(&root, "refused");
    CHECK(ref && ref->type == MSGPACK_OBJECT_ARRAY && ref->via.array.size == XFER_REFUSED_MAX);
    if (ref && ref->type == MSGPACK_OBJECT_ARRAY && ref->via.array.size > 0)
        CHECK(wire_obj_is(wire_get(&ref->via.array.ptr[0], "path"), "p0") &&
              wire_obj_is(wire_get(&ref->via.array.ptr[0], "reason"), "absolute path"));
    CHECK(wire_obj_is(wire_get(&root, "type"), "error"));
    CHECK(wire_obj_uint(wire_get(&root, "id"), &v) && v == 42);
    CHECK(wire_obj_is(wire_get(&root, "code"), "ENOSPC") && wire_obj_is(wire_get(&root, "path"), "x"));
    msgpack_zone_destroy(&z);

    /* a small max_frame lists fewer and counts the rest */
    buf_reset(&out, 0);
    xfer_result_encode(&r, 42, 4096, &out);
    CHECK(buf_size(&out) - WIRE_HDR_LEN <= 4096);
    msgpack_zone_init(&z, WIRE_ZONE_CHUNK);
    CHECK(wire_decode(buf_ptr(&out) + WIRE_HDR_LEN, buf_size(&out) - WIRE_HDR_LEN, &z, &root, &e) == 0);
    ref = wire_get(&root, "refused");
    uint64_t more = 0;
    CHECK(ref && ref->type == MSGPACK_OBJECT_ARRAY && ref->via.array.size > 0 &&
          ref->via.array.size < XFER_REFUSED_MAX);
    CHECK(wire_obj_uint(wire_get(&root, "refused_more"), &more) && ref &&
          more + ref->via.array.size == XFER_REFUSED_MAX + 10);
    msgpack_zone_destroy(&z);
    buf_free(&out);
    xfer_result_free(&r);
}

/* A refusal list is bounded whatever the archive holds. */
static void test_many_refusals(void)
{
    struct fx f;
    fx_init(&f);
    struct ab b;
    ab_begin(&b, ARCHIVE_FORMAT_TAR_USTAR, true);
    for (int i = 0; i < 300; i++) {
        char name[32];
        snprintf(name, sizeof name, "../x%d", i);
        ab_file(&b, name, 0644, "");
    }
    ab_end(&b);
    struct xfer_extract_opts o = plain_opts();
    struct xfer_result r;
    CHECK(extract_mem(&f, buf_ptr(&b.out), buf_size(&b.out), &o, &r) == 0);
    CHECK(r.nrefused == XFER_REFUSED_MAX && r.refused_more == 300 - XFER_REFUSED_MAX);
    CHECK(fx_outside_intact(&f));
    xfer_result_free(&r);
    buf_free(&b.out);
    fx_free(&f);
}

static void test_round_trip_plain(void)
{
    test_round_trip(false);
}

static void test_round_trip_gzip(void)
{
    test_round_trip(true);
}

int main(int argc, char **argv)
{
    umask(022);
    printf("zstd %s\n", xfer_has_zstd() ? "available" : "not built in");
    static const struct check_test tests[] = {
        CHECK_TEST(test_round_trip_plain),
        CHECK_TEST(test_round_trip_gzip),
        CHECK_TEST(test_formats),
        CHECK_TEST(test_base256_size),
        CHECK_TEST(test_tools),
        CHECK_TEST(test_dot_entry),
        CHECK_TEST(test_dotdot_and_absolute),
        CHECK_TEST(test_symlink_escape),
        CHECK_TEST(test_existing_symlink),
        CHECK_TEST(test_hardlinks),
        CHECK_TEST(test_devices),
        CHECK_TEST(test_setuid),
        CHECK_TEST(test_bombs),
        CHECK_TEST(test_bad_archives),
        CHECK_TEST(test_in_the_way),
        CHECK_TEST(test_identity),
        CHECK_TEST(test_pack),
        CHECK_TEST(test_result_encode),
        CHECK_TEST(test_many_refusals),
    };
    return check_run_only(tests, sizeof tests / sizeof *tests, argc > 1 ? argv[1] : NULL);
}
