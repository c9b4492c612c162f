/* fop.h — file operations (PROTOCOL.md "Files"; docs/files.md).
 *
 * Every upload, download, read, write, stat, ls, mkdir, remove, rename and
 * chmod runs in a helper process forked for it (fop_child.c), which takes the
 * identity of the user the operation is done for before it touches a path.
 * The helper writes finished protocol frames (ok, data, entries, end, error)
 * for its request to a pipe; the agent relays them whole to the connection,
 * pausing the pipe while the connection has more than CONN_OUT_HIGH bytes
 * unwritten. Bytes the client sends (`chunk` requests of an upload or write)
 * go into a second pipe within the stdin window, each chunk acknowledged once
 * written into it; a third pipe carries one byte when the client's `eof` was
 * reached, so the helper can tell the end of the input from a cancellation.
 * The event loop itself never does file I/O.
 *
 * Bounds: FOP_MAX helpers at once; per helper, input queued up to the
 * stdin window, and one relayed frame (at most max_frame) plus one read of
 * FOP_READ_CHUNK bytes buffered.
 */
#ifndef SA_FOP_H
#define SA_FOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "ident.h"
#include "msg.h"

#define FOP_MAX 64                      /* file operations running at once */
#define FOP_IDLE_CHECKS 20               /* --helper-idle-ms is checked this often per period */
#define FOP_CANCEL_GRACE_S 5.           /* a cancelled upload/write's time to clean up */
#define FOP_READ_CHUNK (64u << 10)      /* one read of a helper's frames */
#define FOP_READS_PER_CB 4
#define FOP_PIPE_SIZE (1u << 20)        /* F_SETPIPE_SZ of the data pipes (best effort) */
#define FOP_DATA_MAX (64u << 10)        /* bytes in one `data` event */
#define FOP_LS_BATCH 256                /* entries in one `entries` event */
#define FOP_ENTRY_FIXED 512             /* an ls/stat entry's bytes besides name and target */
#define FOP_RM_MAX_DEPTH 1024           /* directory nesting a recursive remove descends */
#define FOP_UPLOAD_TRAILER_MAX (1u << 20) /* bytes accepted after an archive's end */
/* The archive helper (SA_XFER_EXEC builds): --xfer-helper, else this name
 * beside the agent's own binary, else (no /proc) the default path. */
#define FOP_XFER_HELPER_NAME "sandbox-agent-xfer"
#define FOP_XFER_HELPER_DEFAULT "/usr/sbin/sandbox-agent-xfer"

enum fop_kind {
    FOP_UPLOAD, FOP_DOWNLOAD, FOP_READ, FOP_WRITE, FOP_STAT, FOP_LS, FOP_MKDIR, FOP_REMOVE,
    FOP_RENAME, FOP_CHMOD,
};

/* One operation, as the helper needs it. Built in the agent from the
 * request; the helper gets it as a copy (fork), so its strings may point into
 * the request's decode zone. */
struct fop_job {
    enum fop_kind kind;
    uint64_t id;                /* the request's id, echoed in every frame */
    uint32_t max_frame;         /* no frame the helper writes is larger */
    const char *cwd;            /* relative paths start here */
    const char *path;           /* the path; upload: dest; rename: from */
    const char *path2;          /* rename: to */
    char **paths;               /* download */
    size_t npaths;
    uint64_t offset, length;    /* read */
    bool has_length;
    uint32_t mode;              /* write, mkdir, chmod */
    bool has_mode;
    bool follow, parents, recursive, force, append, gzip, overwrite;
    bool privileged;            /* runs as root: keeps setuid bits, may ask for the two below */
    bool keep_owners, allow_devices;
    uint64_t max_bytes, max_entries; /* upload caps */
};

struct agent;
struct conn;
struct fop;

/* A file operation's request as request.c parsed it: job holds its kind and
 * the fields of that kind (paths, mode, flags); fop_request adds the rest
 * (id, limits, cwd, privilege). Strings point into the decode zone. */
struct fop_req {
    struct fop_job job;
    const char *user;           /* NULL: the default user */
    bool sudo;
};

/* `chunk {ref, data?, eof?}`: data points into the decode zone. */
struct fop_chunk_req {
    uint64_t ref;
    const char *data;
    size_t n;
    bool eof;
};

/* The requests of PROTOCOL.md "Files", parsed by request.c. */
int fop_request(struct conn *c, const struct wire_req *r, const struct fop_req *q,
                struct sa_err *e);
int fop_chunk(struct conn *c, const struct wire_req *r, const struct fop_chunk_req *q,
              struct sa_err *e);
/* At exit: kill the helpers still running and free everything (the archive
 * helper's path too). */
void fop_free_all(struct agent *a);

/* Helper side (fop_child.c): run j with fd 0 the input (or /dev/null), fd 1
 * the frame pipe, fd 3 the end-of-input pipe (upload, write), already as the
 * right user. Never returns. */
void fop_child_run(const struct fop_job *j) __attribute__((noreturn));
/* The archive operations (fop_xfer.c), in the same setting. */
void fop_upload(void) __attribute__((noreturn));
void fop_download(void) __attribute__((noreturn));
/* main() of sandbox-agent-xfer (agent/xfer_main.c): a job as fio_job_argv
 * wrote it; switches identity, then runs it. */
int fop_xfer_main(int argc, char **argv);

#endif
