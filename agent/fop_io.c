/* fop_io.c — what every file helper shares (fop_io.h): the frames it
 * writes to the agent, the end-of-input check, mkdir -p. */
#include "fop_io.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xfer.h"

static struct buf out;                  /* frames not yet written to FOP_OUT_FD */
const struct fop_job *fio_job;
static int cwd_errno;                   /* chdir(fio_job->cwd) failed with this */

void fio_init(const struct fop_job *j, int chdir_errno)
{
    fio_job = j;
    cwd_errno = chdir_errno;
    buf_init(&out);
}

struct buf *fio_out(void)
{
    return &out;
}

/* --- frames -------------------------------------------------------------------- */

void fio_flush(void)
{
    while (buf_size(&out) > 0) {
        ssize_t n = write(FOP_OUT_FD, buf_ptr(&out), buf_size(&out));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);                   /* the agent stopped listening: cancelled */
        buf_consume(&out, (size_t)n);
    }
    buf_reset(&out, 64u << 10);
}

void fio_finish(void)
{
    fio_flush();
    _exit(0);
}

void fio_fail(int errnum, const char *code, const char *path, const char *fmt, ...)
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
    wire_begin(&w, &out);
    wire_kv_str(&w, "type", "error");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_kv_str(&w, "code", e.code ? e.code : "internal");
    wire_kv_str(&w, "message", e.msg);
    wire_kv_strn(&w, "path", path, strnlen(path, XFER_ERR_PATH_MAX));
    wire_end(&w);
    fio_finish();
}

void fio_fail_sys(const char *op, const char *path)
{
    fio_fail(errno, NULL, path, "%s %.300s", op, path);
}

void fio_ok(void)
{
    struct wire_enc w;
    wire_begin(&w, &out);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_end(&w);
    fio_flush();
}

void fio_end(const char *key, uint64_t v)
{
    struct wire_enc w;
    wire_begin(&w, &out);
    wire_kv_str(&w, "type", "end");
    wire_kv_uint(&w, "id", fio_job->id);
    wire_kv_uint(&w, key, v);
    wire_end(&w);
    fio_finish();
}

/* Bytes of data that fit in one `data` event. */
static size_t data_room(void)
{
    size_t room = fio_job->max_frame > 128 ? fio_job->max_frame - 128 : 1;
    return room < FOP_DATA_MAX ? room : FOP_DATA_MAX;
}

static uint64_t data_offset;

void fio_data(const void *p, size_t n)
{
    const char *q = p;
    size_t room = data_room();
    while (n > 0) {
        size_t k = n < room ? n : room;
        struct wire_enc w;
        wire_begin(&w, &out);
        wire_kv_str(&w, "type", "data");
        wire_kv_uint(&w, "id", fio_job->id);
        wire_kv_uint(&w, "offset", data_offset);
        wire_kv_bin(&w, "data", q, k);
        wire_end(&w);
        fio_flush();
        data_offset += k;
        q += k;
        n -= k;
    }
}

/* A relative path while the cwd could not be entered fails with that. */
void fio_need_cwd(const char *path)
{
    if (path[0] != '/' && cwd_errno)
        fio_fail(cwd_errno, NULL, path, "working directory %.300s", fio_job->cwd);
}

/* The client's eof arrived (1), or the input was cut off (0): called after
 * EOF on FOP_IN_FD, when the agent has written the byte or closed without it. */
bool fio_input_complete(void)
{
    char b;
    ssize_t n;
    do
        n = read(FOP_CTL_FD, &b, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 && b == 'E';
}

/* mkdir -p: every missing directory of path (all of it, or all but the last
 * component with !whole) with mode 0755; an existing directory, or a symlink
 * to one, is fine. On failure errno is set and *bad names the component. */
int fio_make_parents(const char *path, bool whole, char *bad, size_t badsz)
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


/* --- the archive helper's command line -------------------------------------------- */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return s;
}

/* Every field of a job as "key=value" words, then "--" and the paths. */
char **fio_job_argv(const char *helper, const struct fop_job *j, const struct ident *id,
                    pid_t parent)
{
    size_t n = 0, cap = 24 + j->npaths;
    char **v = xcalloc(cap, sizeof *v);
    v[n++] = xstrdup(helper);
    v[n++] = xstrdup(j->kind == FOP_UPLOAD ? "upload" : "download");
#define KV(fmt, ...) (v[n++] = xasprintf(fmt, __VA_ARGS__))
    KV("id=%llu", (unsigned long long)j->id);
    KV("max_frame=%u", j->max_frame);
    KV("parent=%d", (int)parent);
    KV("cwd=%s", j->cwd);
    if (id) {
        KV("uid=%u", (unsigned)id->uid);
        KV("gid=%u", (unsigned)id->gid);
        struct buf g;
        buf_init(&g);
        buf_append(&g, "groups=", 7);
        for (int i = 0; i < id->ngroups; i++) {
            char one[16];
            int k = snprintf(one, sizeof one, "%s%u", i ? "," : "", (unsigned)id->groups[i]);
            buf_append(&g, one, (size_t)k);
        }
        buf_append(&g, "", 1);
        v[n++] = xstrdup((const char *)buf_ptr(&g));
        buf_free(&g);
    }
    if (j->path)
        KV("dest=%s", j->path);
    KV("flags=%s%s%s%s%s", j->parents ? "p" : "", j->privileged ? "r" : "", j->keep_owners ? "o" : "",
       j->allow_devices ? "d" : "", j->gzip ? "z" : "");
    KV("max_bytes=%llu", (unsigned long long)j->max_bytes);
    KV("max_entries=%llu", (unsigned long long)j->max_entries);
#undef KV
    v[n++] = xstrdup("--");
    for (size_t i = 0; i < j->npaths; i++)
        v[n++] = xstrdup(j->paths[i]);
    v[n] = NULL;
    return v;
}

static int num(const char *s, uint64_t max, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (!*s || *end || errno || x > max)
        return -1;
    *v = x;
    return 0;
}

int fio_job_parse(int argc, char **argv, struct fop_job *j, struct ident *id, bool *has_id,
                  pid_t *parent)
{
    static gid_t groups[IDENT_MAX_GROUPS];
    memset(j, 0, sizeof *j);
    memset(id, 0, sizeof *id);
    *has_id = false;
    if (argc < 3)
        return -1;
    if (strcmp(argv[1], "upload") == 0)
        j->kind = FOP_UPLOAD;
    else if (strcmp(argv[1], "download") == 0)
        j->kind = FOP_DOWNLOAD;
    else
        return -1;
    int i = 2;
    uint64_t v;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            return -1;
        const char *k = argv[i], *val = eq + 1;
        size_t kn = (size_t)(eq - k);
#define IS(name) (kn == strlen(name) && memcmp(k, name, kn) == 0)
        if (IS("id") && num(val, UINT64_MAX, &v) == 0) {
            j->id = v;
        } else if (IS("max_frame") && num(val, UINT32_MAX, &v) == 0) {
            j->max_frame = (uint32_t)v;
        } else if (IS("parent") && num(val, INT32_MAX, &v) == 0) {
            *parent = (pid_t)v;
        } else if (IS("cwd")) {
            j->cwd = val;
        } else if (IS("uid") && num(val, UINT32_MAX - 1, &v) == 0) {
            id->uid = (uid_t)v;
            *has_id = true;
        } else if (IS("gid") && num(val, UINT32_MAX - 1, &v) == 0) {
            id->gid = (gid_t)v;
        } else if (IS("groups")) {
            char *save = NULL, *copy = xstrdup(val);
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (id->ngroups == IDENT_MAX_GROUPS || num(t, UINT32_MAX - 1, &v) < 0) {
                    free(copy);
                    return -1;
                }
                groups[id->ngroups++] = (gid_t)v;
            }
            free(copy);
            id->groups = groups;
        } else if (IS("dest")) {
            j->path = val;
        } else if (IS("flags")) {
            j->parents = strchr(val, 'p') != NULL;
            j->privileged = strchr(val, 'r') != NULL;
            j->keep_owners = strchr(val, 'o') != NULL;
            j->allow_devices = strchr(val, 'd') != NULL;
            j->gzip = strchr(val, 'z') != NULL;
        } else if (IS("max_bytes") && num(val, UINT64_MAX, &v) == 0) {
            j->max_bytes = v;
        } else if (IS("max_entries") && num(val, UINT64_MAX, &v) == 0) {
            j->max_entries = v;
        } else {
            return -1;
        }
#undef IS
    }
    if (i == argc || !j->cwd || j->max_frame == 0 || *parent <= 0)
        return -1;
    j->paths = argv + i + 1;
    j->npaths = (size_t)(argc - i - 1);
    if ((j->kind == FOP_UPLOAD && !j->path) || (j->kind == FOP_DOWNLOAD && j->npaths == 0))
        return -1;
    return 0;
}
