/* fop_xfer.c — the archive operations of the file helpers: upload
 * (xfer_extract) and download (xfer_pack_to), and fop_xfer_main, the entry of
 * the separate archive helper `sandbox-agent-xfer`.
 *
 * Where libarchive is a shared library (the regular build), the agent does
 * not link it: its shared libraries and theirs (libxml2, ICU, libstdc++,
 * nettle, ...) would more than double the agent's idle RSS. Uploads and
 * downloads then run in `sandbox-agent-xfer`, which the forked helper execs
 * (as root, with an empty environment); it switches to the user itself
 * before it touches a path, so it is not dumpable by that user. In the
 * static build (SA_XFER_EXEC off) libarchive is inside the agent, costs no
 * memory until used, and the forked helper calls these functions directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fop_io.h"
#include "spawn.h"
#include "xfer.h"

/* --- upload, download ------------------------------------------------------------- */

/* What is left after an archive's end (padding, a compressor's trailer) is
 * read up to FOP_UPLOAD_TRAILER_MAX; 0 once the input ended. */
static int drain_trailer(void)
{
    static char scratch[XFER_BLOCK];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(FOP_IN_FD, scratch, sizeof scratch);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        total += (uint64_t)n;
        if (total > FOP_UPLOAD_TRAILER_MAX)
            return -1;
    }
}

void fop_upload(void)
{
    const char *dest = fio_job->path;
    fio_need_cwd(dest);
    char bad[PATH_MAX];
    if (fio_job->parents && fio_make_parents(dest, true, bad, sizeof bad) < 0)
        fio_fail_sys("mkdir", bad);
    int dfd = open(dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        fio_fail_sys("destination", dest);
    fio_ok();
    struct xfer_extract_opts o = {
        .dest_fd = dfd,
        .privileged = fio_job->privileged,
        .allow_devices = fio_job->allow_devices,
        .keep_owners = fio_job->keep_owners,
        .max_bytes = fio_job->max_bytes,
        .max_entries = fio_job->max_entries,
    };
    static struct xfer_result r;
    xfer_result_init(&r);
    xfer_extract(FOP_IN_FD, &o, &r);
    if (!r.failed) {
        if (drain_trailer() < 0) {
            r.failed = true;
            err_set(&r.error.err, 0, "bad_archive",
                    "more than %u bytes after the end of the archive", FOP_UPLOAD_TRAILER_MAX);
        } else if (!fio_input_complete()) {
            _exit(0);                   /* cancelled: nobody to tell */
        }
    }
    xfer_result_encode(&r, fio_job->id, fio_job->max_frame, fio_out());
    fio_finish();
}

static bool ok_sent;

static int pack_sink(void *arg, const void *p, size_t n)
{
    (void)arg;
    if (!ok_sent) {
        fio_ok();
        ok_sent = true;
    }
    fio_data(p, n);
    return 0;
}

void fop_download(void)
{
    for (size_t i = 0; i < fio_job->npaths; i++)
        fio_need_cwd(fio_job->paths[i]);
    struct xfer_error xe;
    uint64_t bytes = 0;
    if (xfer_pack_to(pack_sink, NULL, AT_FDCWD, fio_job->paths, fio_job->npaths, fio_job->gzip, &bytes,
                     &xe) < 0)
        fio_fail(0, xe.err.code ? xe.err.code : "internal", xe.path, "%s", xe.err.msg);
    if (!ok_sent)
        fio_ok();
    fio_end("bytes", bytes);
}


int fop_xfer_main(int argc, char **argv)
{
    static struct fop_job j;
    static struct ident id;
    bool has_id;
    pid_t parent = 0;
    if (fio_job_parse(argc, argv, &j, &id, &has_id, &parent) < 0) {
        fprintf(stderr, "sandbox-agent-xfer: the archive helper of sandbox-agent; it is run by "
                        "the agent only (docs/agent.md \"File operations\")\n");
        return 2;
    }
    /* the user first, then the parent-death signal (a change of
     * credentials clears it); no longer dumpable by that user after it */
    if (has_id && spawn_set_identity(&id) < 0)
        _exit(1);                       /* the agent reports "helper died" */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);
    umask(0);
    fio_init(&j, chdir(j.cwd) < 0 ? errno : 0);
    if (j.kind == FOP_UPLOAD)
        fop_upload();
    fop_download();
}
