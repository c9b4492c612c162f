/* fuzz_archive.c — libFuzzer target for the upload path (common/xfer.c).
 *
 * The input is the byte stream an upload would carry (plain tar, gzip, zstd:
 * detected from the bytes). Each run extracts it into a fresh directory
 * P/dest, where P is a per-process temporary directory that also holds a
 * sentinel P/outside/keep. Before each run dest gets two planted symlinks that
 * lead out — dest/out -> P/outside (absolute) and dest/rout -> ../outside —
 * so that archives can try to write through them.
 *
 * Besides the sanitizers, the target aborts when an invariant breaks:
 *   - P holds exactly {dest, outside}, outside exactly {keep}, and keep is
 *     unchanged (content, mode, one link): nothing was written outside dest;
 *   - the result is bounded (refusal list, bytes within the cap) and a failed
 *     extraction carries one of the documented codes;
 *   - the result frame decodes.
 * dest is removed after each run without following symlinks.
 *
 * Build with -DSA_FUZZ=ON (clang); the seed corpus is tests/fuzz/corpus/archive/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "fuzz.h"
#include "rmtree.h"
#include "wire.h"
#include "xfer.h"

#define MAX_BYTES (1u << 20)
#define MAX_ENTRIES 64

static char parent[64];
static char outside[96];
static int parent_fd = -1;
static int in_fd = -1;

static void teardown(void)
{
    rm_rf_at(AT_FDCWD, parent);
}

static void setup(void)
{
    strcpy(parent, "/tmp/fuzz-archive-XXXXXX");
    INVARIANT(mkdtemp(parent) != NULL);
    snprintf(outside, sizeof outside, "%s/outside", parent);
    INVARIANT(mkdir(outside, 0755) == 0);
    char keep[128];
    snprintf(keep, sizeof keep, "%s/keep", outside);
    int fd = open(keep, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    INVARIANT(fd >= 0 && write(fd, "keep", 4) == 4);
    close(fd);
    INVARIANT(chmod(keep, 0644) == 0);
    parent_fd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    in_fd = memfd_create("fuzz-archive", MFD_CLOEXEC);
    INVARIANT(parent_fd >= 0 && in_fd >= 0);
    atexit(teardown);
}

static int count_at(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void outside_intact(void)
{
    INVARIANT(count_at(parent_fd, ".") == 2);
    INVARIANT(count_at(parent_fd, "outside") == 1);
    char keep[128];
    snprintf(keep, sizeof keep, "%s/keep", outside);
    struct stat st;
    INVARIANT(lstat(keep, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
              (st.st_mode & 07777) == 0644 && st.st_size == 4);
    char b[8] = "";
    int fd = open(keep, O_RDONLY | O_CLOEXEC);
    INVARIANT(fd >= 0 && read(fd, b, sizeof b) == 4 && memcmp(b, "keep", 4) == 0);
    close(fd);
}

static void check_result(const struct xfer_result *r)
{
    INVARIANT(r->nrefused <= XFER_REFUSED_MAX);
    INVARIANT(r->bytes <= MAX_BYTES);
    INVARIANT(r->entries <= MAX_ENTRIES);
    for (size_t i = 0; i < r->nrefused; i++)
        INVARIANT(r->refused[i].path && r->refused[i].reason &&
                  strlen(r->refused[i].path) <= XFER_REFUSED_PATH_MAX);
    if (r->failed)
        INVARIANT(r->error.err.code && r->error.err.code[0]);
    struct buf out;
    buf_init(&out);
    xfer_result_encode(r, 1, WIRE_MAX_FRAME_LIMIT, &out);
    uint32_t len = 0;
    struct sa_err e;
    INVARIANT(wire_frame_peek(buf_ptr(&out), buf_size(&out), WIRE_MAX_FRAME_LIMIT, &len, &e) == 1);
    INVARIANT(len == buf_size(&out) - WIRE_HDR_LEN);
    msgpack_zone z;
    INVARIANT(msgpack_zone_init(&z, WIRE_ZONE_CHUNK));
    msgpack_object root;
    INVARIANT(wire_decode(buf_ptr(&out) + WIRE_HDR_LEN, len, &z, &root, &e) == 0);
    msgpack_zone_destroy(&z);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (parent_fd < 0)
        setup();
    INVARIANT(mkdirat(parent_fd, "dest", 0755) == 0);
    int dest = openat(parent_fd, "dest", O_PATH | O_DIRECTORY | O_CLOEXEC);
    INVARIANT(dest >= 0);
    INVARIANT(symlinkat(outside, dest, "out") == 0);
    INVARIANT(symlinkat("../outside", dest, "rout") == 0);

    INVARIANT(ftruncate(in_fd, 0) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(in_fd, data + off, size - off, (off_t)off);
        INVARIANT(w > 0);
        off += (size_t)w;
    }
    INVARIANT(lseek(in_fd, 0, SEEK_SET) == 0);

    struct xfer_extract_opts o = {
        .dest_fd = dest, .max_bytes = MAX_BYTES, .max_entries = MAX_ENTRIES,
    };
    struct xfer_result r;
    xfer_result_init(&r);
    int rc = xfer_extract(in_fd, &o, &r);
    INVARIANT((rc < 0) == r.failed);
    check_result(&r);
    xfer_result_free(&r);

    outside_intact();
    close(dest);
    INVARIANT(rm_rf_at(parent_fd, "dest") == 0);
    return 0;
}
