/* xfer.h — the archive engine of uploads and downloads (library sa_xfer,
 * common/README.md).
 *
 * In the agent this module runs inside a forked helper that already has the
 * identity of the user the transfer is done for; sandboxctl packs with it in a
 * child of its own. It does no forking, no identity switching and no protocol
 * I/O of its own. It reads or writes a tar stream on a plain fd.
 *
 * Upload (xfer_extract): a tar stream (ustar, pax, GNU; plain, gzip, or zstd
 * when the linked libarchive has it built in; detected from the bytes) is
 * extracted under a destination directory fd. libarchive only parses the
 * format; every file-system operation is done here, each path resolved
 * relative to the destination with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS), so that no archive content (`..`, absolute names,
 * symlinks planted by the archive or already on disk, hardlinks) can write
 * outside it. Entries that cannot be extracted safely are skipped and listed in
 * the result with a reason; the extraction goes on. See docs/files.md.
 *
 * Download (xfer_pack): paths packed into a tar (pax, ustar where it fits),
 * optionally gzip'd, written to an fd. Symlinks are stored, never followed.
 *
 * Errors follow protocol/err.h; a failed transfer also names the path it
 * failed on (struct xfer_error).
 */
#ifndef SA_XFER_H
#define SA_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* Bounds. */
#define XFER_BLOCK (64u * 1024)                    /* I/O block: memory per transfer */
#define XFER_DEFAULT_MAX_BYTES (8ull << 30)        /* when opts->max_bytes is 0 */
#define XFER_DEFAULT_MAX_ENTRIES (1u << 20)        /* when opts->max_entries is 0 */
#define XFER_REFUSED_MAX 256                       /* refusals listed; the rest counted */
#define XFER_REFUSED_PATH_MAX 1024                 /* a listed path is cut to this */
#define XFER_ERR_PATH_MAX 1024                     /* the failing path is cut to this */
#define XFER_PATH_MAX 4096                         /* longer archive names are refused */
#define XFER_FIXUPS_MAX_BYTES (16u << 20)          /* deferred directory metadata */
#define XFER_PACK_MAX_DEPTH 256                    /* directory nesting packed */

struct xfer_extract_opts {
    int dest_fd;          /* directory fd (O_PATH is enough) of the destination */
    bool privileged;      /* a root upload: keeps setuid/setgid/sticky bits and may ... */
    bool allow_devices;   /* ... create device nodes and FIFOs (privileged only) */
    bool keep_owners;     /* ... keep the archive's numeric owners (privileged only) */
    uint64_t max_bytes;   /* cap on entry data consumed (written or skipped); 0: default */
    uint64_t max_entries; /* cap on entries read; 0: default */
};

/* Where and why a whole transfer failed. */
struct xfer_error {
    struct sa_err err;              /* code: errno name, "bad_archive", "too_large", "too_many" */
    char path[XFER_ERR_PATH_MAX];   /* the entry or file it failed on, or "" */
};

struct xfer_refusal {
    char *path;           /* as named in the archive, cut to XFER_REFUSED_PATH_MAX */
    const char *reason;   /* static text */
};

struct xfer_result {
    uint64_t entries;                  /* entries extracted */
    uint64_t bytes;                    /* file data bytes written */
    struct xfer_refusal refused[XFER_REFUSED_MAX];
    size_t nrefused;                   /* listed in refused[] */
    uint64_t refused_more;             /* refused but not listed */
    bool failed;                       /* the extraction stopped: see error */
    struct xfer_error error;
};

void xfer_result_init(struct xfer_result *r);
void xfer_result_free(struct xfer_result *r);

/* Read a tar stream from in_fd until its end and extract it under o->dest_fd.
 * Returns 0, or -1 with r->failed set and r->error filled. Either way r holds
 * what was done so far. Entries already extracted stay in place on failure. */
int xfer_extract(int in_fd, const struct xfer_extract_opts *o, struct xfer_result *r);

/* The upload's terminal message (PROTOCOL.md "Files") for request id, as one
 * frame appended to out: {type: "end", id, entries, bytes, refused: [{path,
 * reason}], refused_more}, or when failed {type: "error", id, code, message,
 * path, and the same counts}. Refusals are listed as far as the frame stays
 * within max_frame; the others are added to refused_more. */
void xfer_result_encode(const struct xfer_result *r, uint64_t id, uint32_t max_frame,
                        struct buf *out);

/* Write a tar of paths to out_fd; relative paths are taken under base_fd
 * (AT_FDCWD allowed), absolute ones from "/" and stored without the leading
 * "/". Directories are packed recursively; symlinks are stored as symlinks,
 * other special files (devices, FIFOs) as their header. Every top-level path is
 * checked before anything is written: a missing one is an error with code
 * ENOENT naming it. Returns 0 or -1 with e filled; after a late failure the
 * stream on out_fd is incomplete. *bytes (may be NULL) gets the bytes written. */
int xfer_pack(int out_fd, int base_fd, char *const *paths, size_t n, bool gzip,
              uint64_t *bytes, struct xfer_error *e);

/* Where xfer_pack_to writes: all n bytes, or -1 with errno set. */
typedef int (*xfer_write_fn)(void *arg, const void *p, size_t n);

/* xfer_pack, writing through fn in blocks of at most XFER_BLOCK bytes. */
int xfer_pack_to(xfer_write_fn fn, void *arg, int base_fd, char *const *paths, size_t n,
                 bool gzip, uint64_t *bytes, struct xfer_error *e);

/* Whether the linked libarchive reads zstd in-process (a `zstd` capability). */
bool xfer_has_zstd(void);

#endif
