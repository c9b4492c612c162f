/* ctl_files.c — sandboxctl's file commands (docs/sandboxctl.md "Files"):
 * upload, download, get, put, stat, ls, mkdir, rm, mv, chmod, over the
 * requests of PROTOCOL.md "Files".
 *
 * Sending (upload, put): chunks of at most CHUNK_MAX bytes (less when the
 * agent's max_frame is smaller), with at most the hello's stdin_window bytes
 * unacknowledged. A local directory or plain file is packed into a tar by a
 * child process (xfer_pack) writing into a pipe; an archive is sent as it is.
 * The eof chunk goes out only once the source ended cleanly, so a local
 * failure never looks like a complete upload to the agent.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "ackwin.h"
#include "ctl.h"
#include "json.h"
#include "wire.h"
#include "xfer.h"

#define CHUNK_MAX (256u << 10)          /* bytes in one chunk request */
#define CHUNK_OVERHEAD 64               /* a chunk request's bytes besides its data */

/* Who the operation runs as: --user NAME, --sudo. */
struct who {
    const char *user;
    bool sudo;
};

/* The options of the file commands: one vocabulary, and each command takes
 * the ones in its mask (--user and --sudo always). */
enum {
    F_PARENTS = 1u << 0,    /* -p, --parents */
    F_GZIP = 1u << 1,       /* -z, --gzip */
    F_KEEP = 1u << 2,       /* --keep-owners */
    F_MODE = 1u << 3,       /* -m, --mode M */
    F_APPEND = 1u << 4,     /* --append */
    F_JSON = 1u << 5,       /* --json */
    F_FOLLOW = 1u << 6,     /* -L */
    F_LONG = 1u << 7,       /* -l */
    F_RECURSIVE = 1u << 8,  /* -r, -R, --recursive */
    F_FORCE = 1u << 9,      /* -f, --force */
    F_NOCLOBBER = 1u << 10, /* -n, --no-clobber */
};
enum { OPT_USER = 300, OPT_SUDO, OPT_JSON, OPT_KEEP, OPT_APPEND };

static const struct {
    int ch;                 /* < 256: also a short option */
    const char *name;       /* the long option, or NULL */
    int has_arg;
    unsigned bit;           /* 0: every command takes it */
} fopt_table[] = {
    {'p', "parents", no_argument, F_PARENTS},   {'z', "gzip", no_argument, F_GZIP},
    {OPT_KEEP, "keep-owners", no_argument, F_KEEP}, {'m', "mode", required_argument, F_MODE},
    {OPT_APPEND, "append", no_argument, F_APPEND}, {OPT_JSON, "json", no_argument, F_JSON},
    {'L', NULL, no_argument, F_FOLLOW},         {'l', NULL, no_argument, F_LONG},
    {'r', "recursive", no_argument, F_RECURSIVE}, {'R', NULL, no_argument, F_RECURSIVE},
    {'f', "force", no_argument, F_FORCE},       {'n', "no-clobber", no_argument, F_NOCLOBBER},
    {OPT_USER, "user", required_argument, 0},   {OPT_SUDO, "sudo", no_argument, 0},
};
#define FOPT_N (sizeof fopt_table / sizeof *fopt_table)

struct fopts {
    struct who who;
    unsigned set;           /* F_* given */
    uint32_t mode;          /* with F_MODE */
};

static int parse_mode(const char *s, uint32_t *mode);

/* Options of command what (those in allowed) into *o; the operands are
 * argv[optind..]. 0, or the usage error's status (message printed). Options
 * may follow operands; "--" ends them. */
static int fopts_parse(int argc, char **argv, const char *what, unsigned allowed, struct fopts *o)
{
    char shorts[2 * FOPT_N + 2] = ":";
    struct option longs[FOPT_N + 1];
    size_t ns = 1, nl = 0;
    for (size_t i = 0; i < FOPT_N; i++) {
        if (fopt_table[i].bit && !(allowed & fopt_table[i].bit))
            continue;
        if (fopt_table[i].ch < 256) {
            shorts[ns++] = (char)fopt_table[i].ch;
            if (fopt_table[i].has_arg)
                shorts[ns++] = ':';
        }
        if (fopt_table[i].name)
            longs[nl++] = (struct option){ fopt_table[i].name, fopt_table[i].has_arg, NULL,
                                           fopt_table[i].ch };
    }
    shorts[ns] = '\0';
    longs[nl] = (struct option){ NULL, 0, NULL, 0 };
    memset(o, 0, sizeof *o);
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (ch == ':')
            return usage_error("%s: %s needs an argument", what, opt_name(argv));
        if (ch == '?')
            return usage_error("%s: unknown option %s", what, opt_name(argv));
        if (ch == OPT_USER)
            o->who.user = optarg;
        else if (ch == OPT_SUDO)
            o->who.sudo = true;
        if (ch == 'm' && parse_mode(optarg, &o->mode) < 0)
            return usage_error("%s: '%s' is not an octal mode", what, optarg);
        for (size_t i = 0; i < FOPT_N; i++)
            if (fopt_table[i].ch == ch)
                o->set |= fopt_table[i].bit;
    }
    return 0;
}

static void who_pack(struct wire_enc *enc, const struct who *w)
{
    if (w->user)
        wire_kv_str(enc, "user", w->user);
    if (w->sudo)
        wire_kv_bool(enc, "sudo", true);
}

/* An error reply's message (it names the path) for people; 1. */
static int reply_failed(const char *what, const msgpack_object *m)
{
    const char *msg = "", *code = "?";
    size_t mn = 0, cn = 1;
    wire_obj_str(wire_get(m, "message"), &msg, &mn);
    wire_obj_str(wire_get(m, "code"), &code, &cn);
    warnmsg("%s: %.*s (%.*s)", what, (int)mn, msg, (int)cn, code);
    return EXIT_FAILED;
}

static int conn_failed(const char *what, const struct sa_err *e)
{
    warnmsg("%s: %s", what, e->msg);
    return EXIT_CONN;
}

static int parse_mode(const char *s, uint32_t *mode)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (!*s || *end || errno || v > 07777)
        return -1;
    *mode = (uint32_t)v;
    return 0;
}

/* --- one-shot requests ----------------------------------------------------------- */

/* Send the queued request id and wait for its ok (0) or error (message, 1). */
static int one_shot(struct client *c, uint64_t id, const char *what, msgpack_object *reply)
{
    struct sa_err e;
    int r = client_call(c, id, -1, reply, &e);
    if (r < 0)
        return conn_failed(what, &e);
    if (r > 0)
        return reply_failed(what, reply);
    return 0;
}

/* --- sending bytes: upload, put ------------------------------------------------------ */

/* Where the bytes come from: a fd (a file, stdin, or the pipe of a packer
 * child whose exit status says whether the stream is complete). */
struct source {
    int fd;
    pid_t packer;                /* > 0: a child writing a tar into fd */
    const char *name;            /* for messages */
};

/* The source ended: cleanly (0), or not (message, -1). */
static int source_close(struct source *s)
{
    close(s->fd);
    s->fd = -1;
    if (s->packer <= 0)
        return 0;
    int st;
    while (waitpid(s->packer, &st, 0) < 0 && errno == EINTR)
        ;
    s->packer = 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    return -1;                   /* the child said why on stderr */
}

/* Stream src as the chunks of request id; the terminal message in *final
 * (valid until the next receive). 0 when it is an end, else the exit status
 * (message printed). */
static int send_stream(struct client *c, uint64_t id, struct source *src, const char *what,
                       msgpack_object *final)
{
    const struct client_hello *h = client_hello(c);
    size_t chunk = CHUNK_MAX;
    if (chunk > h->stdin_window)
        chunk = h->stdin_window;
    if (chunk + CHUNK_OVERHEAD > h->max_frame)
        chunk = h->max_frame - CHUNK_OVERHEAD;
    uint8_t *block = xmalloc(chunk);
    struct ackwin_sender *win = xmalloc(sizeof *win);
    ackwin_sender_init(win, h->stdin_window);
    bool eof_sent = false, stopped = false, got_final = false;
    int rc = 0;
    struct sa_err e;
    while (!got_final) {
        /* fill the window */
        while (!eof_sent && !stopped && ackwin_room(win) >= chunk) {
            ssize_t n;
            do
                n = read(src->fd, block, chunk);
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                warnmsg("%s: %s: %s", what, src->name, strerror(errno));
                rc = EXIT_FAILED;
                goto out;
            }
            bool eof = n == 0;
            if (eof && source_close(src) < 0) {
                rc = EXIT_FAILED;
                goto out;        /* no eof chunk: closing the connection cancels */
            }
            struct wire_enc w;
            uint64_t cid = client_begin(c, &w, "chunk");
            wire_kv_uint(&w, "ref", id);
            wire_kv_bin(&w, "data", block, (size_t)n);
            if (eof)
                wire_kv_bool(&w, "eof", true);
            if (client_end(c, &w, &e) < 0) {
                rc = conn_failed(what, &e);
                goto out;
            }
            ackwin_sent(win, cid, (uint64_t)n);
            eof_sent = eof;
            if (client_pending(c) >= chunk * 2)
                break;
        }
        if (client_flush_all(c, -1, &e) < 0) {
            rc = conn_failed(what, &e);
            goto out;
        }
        msgpack_object m;
        if (client_recv(c, -1, &m, &e) < 0) {
            rc = conn_failed(what, &e);
            goto out;
        }
        if (client_msg_id(&m, id)) {
            if (client_msg_is(&m, "ok"))
                continue;
            *final = m;
            got_final = true;
            if (!client_msg_is(&m, "end"))
                rc = client_msg_is(&m, "error") ? reply_failed(what, &m) : EXIT_CONN;
            continue;
        }
        uint64_t rid;
        if (wire_obj_uint(wire_get(&m, "id"), &rid) && ackwin_acked(win, rid) &&
            client_msg_is(&m, "error"))
            stopped = true;      /* the final reply says why */
    }
out:
    free(block);
    free(win);
    return rc;
}

/* A tar of paths (relative to base_fd) packed by a child into a pipe. */
static int start_packer(struct source *s, int base_fd, char **paths, size_t n, bool gzip)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        warnmsg("pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        warnmsg("fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        struct xfer_error xe;
        if (xfer_pack(p[1], base_fd, paths, n, gzip, NULL, &xe) < 0) {
            warnmsg("upload: %s: %s", xe.path[0] ? xe.path : s->name, xe.err.msg);
            _exit(1);
        }
        _exit(0);
    }
    close(p[1]);
    s->fd = p[0];
    s->packer = pid;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A directory's entries (not . and ..), sorted; NULL-terminated. */
static char **dir_entries(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    size_t cap = 64;
    char **v = xmalloc(cap * sizeof *v);
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (*n + 1 >= cap)
            v = xrealloc(v, (cap *= 2) * sizeof *v);
        v[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(v, *n, sizeof *v, name_cmp);
    v[*n] = NULL;
    return v;
}

/* Whether the file is a tar archive the agent reads (plain, gzip, zstd). */
static bool is_tar(int fd)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_format_tar(a);
    struct archive_entry *ent;
    bool yes = archive_read_open_fd(a, fd, 65536) == ARCHIVE_OK &&
               archive_read_next_header(a, &ent) == ARCHIVE_OK;
    archive_read_free(a);
    lseek(fd, 0, SEEK_SET);
    return yes;
}

/* The upload's source: - (a tar on stdin), a directory (its contents), a tar
 * archive (as it is), any other file (itself, under its base name). */
static int open_upload_source(const char *src, bool gzip, struct source *s)
{
    s->name = src;
    s->packer = 0;
    if (strcmp(src, "-") == 0) {
        s->fd = STDIN_FILENO;
        return 0;
    }
    struct stat st;
    if (stat(src, &st) < 0) {
        warnmsg("upload: %s: %s", src, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        size_t n;
        char **names = dir_entries(src, &n);
        int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (!names || dfd < 0) {
            warnmsg("upload: %s: %s", src, strerror(errno));
            return -1;
        }
        int r = n == 0 ? 0 : start_packer(s, dfd, names, n, gzip);
        if (n == 0) {           /* an empty directory: an empty archive */
            s->fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            r = s->fd < 0 ? -1 : 0;
        }
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        close(dfd);
        return r;
    }
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        warnmsg("upload: %s: %s", src, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && is_tar(fd)) {
        s->fd = fd;
        return 0;
    }
    close(fd);
    char *dup = xstrdup(src);
    char *slash = strrchr(dup, '/');
    while (slash && slash[1] == '\0' && slash != dup) {   /* "a/b/" */
        *slash = '\0';
        slash = strrchr(dup, '/');
    }
    char *base = slash ? slash + 1 : dup;
    const char *dir = slash ? (slash == dup ? "/" : (*slash = '\0', dup)) : ".";
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = -1;
    if (dfd < 0)
        warnmsg("upload: %s: %s", dir, strerror(errno));
    else
        r = start_packer(s, dfd, &base, 1, gzip);
    if (dfd >= 0)
        close(dfd);
    free(dup);
    return r;
}

/* The end of an upload: refusals on stderr; 1 when any. */
static int upload_report(const msgpack_object *m)
{
    uint64_t entries = 0, bytes = 0, more = 0;
    wire_obj_uint(wire_get(m, "entries"), &entries);
    wire_obj_uint(wire_get(m, "bytes"), &bytes);
    wire_obj_uint(wire_get(m, "refused_more"), &more);
    const msgpack_object *ref = wire_get(m, "refused");
    uint32_t nref = ref && ref->type == MSGPACK_OBJECT_ARRAY ? ref->via.array.size : 0;
    for (uint32_t i = 0; i < nref; i++) {
        const char *p = "", *r = "";
        size_t pn = 0, rn = 0;
        wire_obj_str(wire_get(&ref->via.array.ptr[i], "path"), &p, &pn);
        wire_obj_str(wire_get(&ref->via.array.ptr[i], "reason"), &r, &rn);
        warnmsg("upload: refused %.*s: %.*s", (int)pn, p, (int)rn, r);
    }
    if (nref + more == 0)
        return 0;
    warnmsg("upload: %" PRIu64 " entries (%" PRIu64 " bytes) extracted, %" PRIu64 " refused",
            entries, bytes, nref + more);
    return EXIT_FAILED;
}

int verb_upload(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "upload", F_PARENTS | F_GZIP | F_KEEP, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool parents = o.set & F_PARENTS, gzip = o.set & F_GZIP, keep = o.set & F_KEEP;
    if (argc - optind != 2)
        return usage_error("upload: expected SRC DEST");
    const char *src = argv[optind], *dest = argv[optind + 1];
    struct client *c = connect_cap(addr, "files", "upload", &rc);
    if (!c)
        return rc;
    struct source s = { .fd = -1 };
    if (open_upload_source(src, gzip, &s) < 0) {
        client_free(c);
        return EXIT_FAILED;
    }
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "upload");
    wire_kv_str(&w, "dest", dest);
    if (parents)
        wire_kv_bool(&w, "parents", true);
    if (keep)
        wire_kv_bool(&w, "keep_owners", true);
    who_pack(&w, &who);
    msgpack_object final;
    if (client_end(c, &w, &e) < 0)
        rc = conn_failed("upload", &e);
    else
        rc = send_stream(c, id, &s, "upload", &final);
    if (rc == 0)
        rc = upload_report(&final);
    if (s.fd >= 0 && s.fd != STDIN_FILENO)
        close(s.fd);
    if (s.packer > 0) {
        kill(s.packer, SIGKILL);
        waitpid(s.packer, NULL, 0);
    }
    client_free(c);
    return rc;
}

int verb_put(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "put", F_MODE | F_APPEND, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool has_mode = o.set & F_MODE, append = o.set & F_APPEND;
    uint32_t mode = o.mode;
    if (argc - optind != 2)
        return usage_error("put: expected LOCAL REMOTE");
    const char *local = argv[optind], *remote = argv[optind + 1];
    struct source s = { .fd = STDIN_FILENO, .name = local };
    if (strcmp(local, "-") != 0) {
        struct stat st;
        s.fd = open(local, O_RDONLY | O_CLOEXEC);
        if (s.fd < 0 || fstat(s.fd, &st) < 0) {
            warnmsg("put: %s: %s", local, strerror(errno));
            return EXIT_FAILED;
        }
        if (S_ISDIR(st.st_mode)) {
            warnmsg("put: %s: is a directory (use upload)", local);
            close(s.fd);
            return EXIT_FAILED;
        }
    }
    struct client *c = connect_cap(addr, "files", "put", &rc);
    if (!c)
        return rc;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "write");
    wire_kv_str(&w, "path", remote);
    wire_kv_bool(&w, "parents", true);
    if (has_mode)
        wire_kv_uint(&w, "mode", mode);
    if (append)
        wire_kv_bool(&w, "append", true);
    who_pack(&w, &who);
    msgpack_object final;
    rc = client_end(c, &w, &e) < 0 ? conn_failed("put", &e)
                                   : send_stream(c, id, &s, "put", &final);
    if (s.fd >= 0 && s.fd != STDIN_FILENO)
        close(s.fd);
    client_free(c);
    return rc;
}

/* --- receiving bytes: download, get ---------------------------------------------------- */

/* After request id's ok: its data events into fd until the end. 0, or the
 * exit status (message printed). */
static int recv_stream(struct client *c, uint64_t id, int fd, const char *what)
{
    uint64_t expect = 0;
    struct sa_err e;
    bool ok_seen = false;
    for (;;) {
        msgpack_object m;
        if (client_recv(c, -1, &m, &e) < 0)
            return conn_failed(what, &e);
        if (!client_msg_id(&m, id))
            continue;
        if (client_msg_is(&m, "error"))
            return reply_failed(what, &m);
        if (client_msg_is(&m, "end"))
            return 0;
        if (client_msg_is(&m, "ok") && !ok_seen) {
            ok_seen = true;
            continue;
        }
        const char *data;
        size_t n;
        uint64_t off;
        if (!client_msg_is(&m, "data") || !wire_obj_uint(wire_get(&m, "offset"), &off) ||
            !wire_obj_bytes(wire_get(&m, "data"), &data, &n) || off != expect) {
            warnmsg("%s: unexpected message from the agent", what);
            return EXIT_CONN;
        }
        int r = write_full(fd, data, n);
        if (r < 0) {
            if (r != -EPIPE)
                warnmsg("%s: write: %s", what, strerror(-r));
            return EXIT_FAILED;
        }
        expect += n;
    }
}

int verb_download(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "download", F_GZIP, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool gzip = o.set & F_GZIP;
    if (optind >= argc)
        return usage_error("download: no PATH given");
    if (isatty(STDOUT_FILENO))
        return usage_error("download: refusing to write a tar archive to a terminal "
                           "(redirect stdout)");
    struct client *c = connect_cap(addr, "files", "download", &rc);
    if (!c)
        return rc;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "download");
    wire_key(&w, "paths");
    msgpack_pack_array(&w.pk, (uint32_t)(argc - optind));
    for (int i = optind; i < argc; i++)
        wire_str(&w, argv[i]);
    if (gzip)
        wire_kv_bool(&w, "gzip", true);
    who_pack(&w, &who);
    if (client_end(c, &w, &e) < 0 || client_flush_all(c, -1, &e) < 0)
        rc = conn_failed("download", &e);
    else
        rc = recv_stream(c, id, STDOUT_FILENO, "download");
    client_free(c);
    return rc;
}

int verb_fget(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "get", 0, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    if (argc - optind < 1 || argc - optind > 2)
        return usage_error("get: expected REMOTE [LOCAL]");
    const char *remote = argv[optind];
    const char *local = argc - optind == 2 ? argv[optind + 1] : "-";
    /* LOCAL: a temporary file beside it, renamed over it once complete */
    char *target = NULL, *tmp = NULL;
    int fd = STDOUT_FILENO;
    if (strcmp(local, "-") != 0) {
        struct stat st;
        if (stat(local, &st) == 0 && S_ISDIR(st.st_mode)) {
            const char *base = strrchr(remote, '/') ? strrchr(remote, '/') + 1 : remote;
            if (!*base)
                return usage_error("get: REMOTE '%s' has no file name", remote);
            if (asprintf(&target, "%s/%s", local, base) < 0)
                return EXIT_FAILED;
        } else {
            target = xstrdup(local);
        }
        if (asprintf(&tmp, "%s.sandboxctl-XXXXXX", target) < 0)
            return EXIT_FAILED;
        mode_t um = umask(0);
        umask(um);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0 || fchmod(fd, 0666 & ~um) < 0) {
            warnmsg("get: %s: %s", target, strerror(errno));
            free(target);
            free(tmp);
            return EXIT_FAILED;
        }
    }
    struct client *c = connect_cap(addr, "files", "get", &rc);
    if (c) {
        struct wire_enc w;
        struct sa_err e;
        uint64_t id = client_begin(c, &w, "read");
        wire_kv_str(&w, "path", remote);
        who_pack(&w, &who);
        if (client_end(c, &w, &e) < 0 || client_flush_all(c, -1, &e) < 0)
            rc = conn_failed("get", &e);
        else
            rc = recv_stream(c, id, fd, "get");
        client_free(c);
    }
    if (tmp) {
        if (rc == 0 && close(fd) < 0) {
            warnmsg("get: %s: %s", target, strerror(errno));
            rc = EXIT_FAILED;
        } else if (rc != 0) {
            close(fd);
        }
        if (rc == 0 && rename(tmp, target) < 0) {
            warnmsg("get: %s: %s", target, strerror(errno));
            rc = EXIT_FAILED;
        }
        if (rc != 0)
            unlink(tmp);
    }
    free(target);
    free(tmp);
    return rc;
}

/* --- stat, ls ------------------------------------------------------------------------ */

static uint64_t field_u(const msgpack_object *m, const char *k)
{
    uint64_t v = 0;
    wire_obj_uint(wire_get(m, k), &v);
    return v;
}

static int64_t field_i(const msgpack_object *m, const char *k)
{
    int64_t v = 0;
    wire_obj_int(wire_get(m, k), &v);
    return v;
}

/* "drwxr-xr-x" for a type name and mode bits. */
static void mode_string(const msgpack_object *ent, char out[11])
{
    static const struct { const char *t; char c; } types[] = {
        {"dir", 'd'}, {"symlink", 'l'}, {"char", 'c'}, {"block", 'b'}, {"fifo", 'p'},
        {"socket", 's'},
    };
    out[0] = '-';
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (wire_obj_is(wire_get(ent, "type"), types[i].t))
            out[0] = types[i].c;
    uint64_t m = field_u(ent, "mode");
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = m & (0400u >> i) ? rwx[i] : '-';
    if (m & 04000)
        out[3] = m & 0100 ? 's' : 'S';
    if (m & 02000)
        out[6] = m & 010 ? 's' : 'S';
    if (m & 01000)
        out[9] = m & 01 ? 't' : 'T';
    out[10] = '\0';
}

static void fmt_mtime(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, n, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(out, n, "?");
}

int verb_stat(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "stat", F_FOLLOW | F_JSON, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool follow = o.set & F_FOLLOW, json = o.set & F_JSON;
    if (argc - optind != 1)
        return usage_error("stat: expected one PATH");
    struct client *c = connect_cap(addr, "fs", "stat", &rc);
    if (!c)
        return rc;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "stat");
    wire_kv_str(&w, "path", argv[optind]);
    if (follow)
        wire_kv_bool(&w, "follow", true);
    who_pack(&w, &who);
    msgpack_object reply;
    rc = client_end(c, &w, &e) < 0 ? conn_failed("stat", &e) : one_shot(c, id, "stat", &reply);
    if (rc == 0) {
        const msgpack_object *st = wire_get(&reply, "stat");
        struct buf b;
        buf_init(&b);
        if (!st) {
            rc = EXIT_CONN;
        } else if (json) {
            json_write(&b, st);
            buf_append(&b, "\n", 1);
        } else {
            char ms[11], when[32], line[256];
            mode_string(st, ms);
            fmt_mtime(field_i(st, "mtime_ms"), when, sizeof when);
            const char *t = "";
            size_t tn = 0;
            wire_obj_str(wire_get(st, "type"), &t, &tn);
            snprintf(line, sizeof line,
                     "path: %s\ntype: %.*s\nsize: %" PRIu64 "\nmode: %04" PRIo64 " (%s)\n"
                     "uid: %" PRIu64 "\ngid: %" PRIu64 "\nlinks: %" PRIu64 "\nmtime: %s UTC\n",
                     argv[optind], (int)tn, t, field_u(st, "size"), field_u(st, "mode"), ms,
                     field_u(st, "uid"), field_u(st, "gid"), field_u(st, "nlink"), when);
            buf_append(&b, line, strlen(line));
            const char *tg;
            size_t tgn;
            if (wire_obj_str(wire_get(st, "target"), &tg, &tgn)) {
                buf_append(&b, "target: ", 8);
                buf_append(&b, tg, tgn);
                buf_append(&b, "\n", 1);
            }
        }
        if (rc == 0)
            rc = out_flush(&b, "stat");
        buf_free(&b);
    }
    client_free(c);
    return rc;
}

/* One listed entry, copied out of the message it came in. */
struct lent {
    char *name;
    char *line;                  /* the rendered line */
};

static int lent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct lent *)a)->name, ((const struct lent *)b)->name);
}

static char *render_entry(const msgpack_object *ent, bool longfmt, bool json)
{
    struct buf b;
    buf_init(&b);
    if (json) {
        json_write(&b, ent);
    } else {
        const char *name = "";
        size_t nn = 0;
        wire_obj_str(wire_get(ent, "name"), &name, &nn);
        if (longfmt) {
            char ms[11], when[32], head[160];
            mode_string(ent, ms);
            fmt_mtime(field_i(ent, "mtime_ms"), when, sizeof when);
            snprintf(head, sizeof head, "%s %3" PRIu64 " %6" PRIu64 " %6" PRIu64 " %10" PRIu64 " %s ",
                     ms, field_u(ent, "nlink"), field_u(ent, "uid"), field_u(ent, "gid"),
                     field_u(ent, "size"), when);
            buf_append(&b, head, strlen(head));
        }
        buf_append(&b, name, nn);
        const char *tg;
        size_t tgn;
        if (longfmt && wire_obj_str(wire_get(ent, "target"), &tg, &tgn)) {
            buf_append(&b, " -> ", 4);
            buf_append(&b, tg, tgn);
        }
    }
    buf_append(&b, "\n", 2);     /* with the NUL */
    char *s = xstrdup((const char *)buf_ptr(&b));
    buf_free(&b);
    return s;
}

int verb_ls(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "ls", F_LONG | F_JSON, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool longfmt = o.set & F_LONG, json = o.set & F_JSON;
    if (argc - optind > 1)
        return usage_error("ls: expected at most one PATH");
    const char *path = optind < argc ? argv[optind] : ".";
    struct client *c = connect_cap(addr, "fs", "ls", &rc);
    if (!c)
        return rc;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "ls");
    wire_kv_str(&w, "path", path);
    who_pack(&w, &who);
    struct lent *v = NULL;
    size_t n = 0, cap = 0;
    if (client_end(c, &w, &e) < 0 || client_flush_all(c, -1, &e) < 0) {
        rc = conn_failed("ls", &e);
    } else {
        for (;;) {
            msgpack_object m;
            if (client_recv(c, -1, &m, &e) < 0) {
                rc = conn_failed("ls", &e);
                break;
            }
            if (!client_msg_id(&m, id) || client_msg_is(&m, "ok"))
                continue;
            if (client_msg_is(&m, "error")) {
                rc = reply_failed("ls", &m);
                break;
            }
            if (client_msg_is(&m, "end"))
                break;
            const msgpack_object *ents = wire_get(&m, "entries");
            if (!client_msg_is(&m, "entries") || !ents || ents->type != MSGPACK_OBJECT_ARRAY) {
                warnmsg("ls: unexpected message from the agent");
                rc = EXIT_CONN;
                break;
            }
            for (uint32_t i = 0; i < ents->via.array.size; i++) {
                const msgpack_object *ent = &ents->via.array.ptr[i];
                const char *name = "";
                size_t nn = 0;
                wire_obj_str(wire_get(ent, "name"), &name, &nn);
                if (n == cap)
                    v = xrealloc(v, (cap = cap ? cap * 2 : 256) * sizeof *v);
                v[n].name = xstrndup(name, nn);
                v[n].line = render_entry(ent, longfmt, json);
                n++;
            }
        }
    }
    client_free(c);
    qsort(v, n, sizeof *v, lent_cmp);
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            buf_append(&b, v[i].line, strlen(v[i].line));
            if (buf_size(&b) > (256u << 10))
                rc = out_flush(&b, "ls");
        }
        free(v[i].name);
        free(v[i].line);
    }
    if (rc == 0)
        rc = out_flush(&b, "ls");
    buf_free(&b);
    free(v);
    return rc;
}

/* --- mkdir, rm, mv, chmod -------------------------------------------------------------- */

/* Request type for every path, pipelined, with the options of o (parents,
 * recursive, force, mode); every failure reported; 1 when any. */
static int for_each_path(const char *addr, const char *type, const char *what,
                         const struct fopts *o, int n, char **paths)
{
    static const struct { unsigned bit; const char *key; } flags[] = {
        {F_PARENTS, "parents"}, {F_RECURSIVE, "recursive"}, {F_FORCE, "force"},
    };
    int rc;
    struct client *c = connect_cap(addr, "fs", what, &rc);
    if (!c)
        return rc;
    uint64_t first = 0;
    struct sa_err e;
    for (int i = 0; i < n; i++) {
        struct wire_enc w;
        uint64_t id = client_begin(c, &w, type);
        if (i == 0)
            first = id;
        wire_kv_str(&w, "path", paths[i]);
        for (size_t k = 0; k < sizeof flags / sizeof *flags; k++)
            if (o->set & flags[k].bit)
                wire_kv_bool(&w, flags[k].key, true);
        if (o->set & F_MODE)
            wire_kv_uint(&w, "mode", o->mode);
        who_pack(&w, &o->who);
        if (client_end(c, &w, &e) < 0) {
            client_free(c);
            return conn_failed(what, &e);
        }
    }
    /* the helpers run in parallel: replies come in any order */
    if (client_flush_all(c, -1, &e) < 0) {
        client_free(c);
        return conn_failed(what, &e);
    }
    rc = 0;
    for (int left = n; left > 0;) {
        msgpack_object m;
        if (client_recv(c, -1, &m, &e) < 0) {
            rc = conn_failed(what, &e);
            break;
        }
        uint64_t id;
        if (!wire_obj_uint(wire_get(&m, "id"), &id) || id < first || id >= first + (uint64_t)n)
            continue;
        left--;
        if (client_msg_is(&m, "error"))
            rc = reply_failed(what, &m);
    }
    client_free(c);
    return rc;
}

int verb_mkdir(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "mkdir", F_PARENTS | F_MODE, &o);
    if (rc != 0)
        return rc;
    if (optind >= argc)
        return usage_error("mkdir: no PATH given");
    return for_each_path(addr, "mkdir", "mkdir", &o, argc - optind, argv + optind);
}

int verb_rm(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "rm", F_RECURSIVE | F_FORCE, &o);
    if (rc != 0)
        return rc;
    if (optind >= argc)
        return usage_error("rm: no PATH given");
    return for_each_path(addr, "remove", "rm", &o, argc - optind, argv + optind);
}

int verb_chmod(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "chmod", 0, &o);
    if (rc != 0)
        return rc;
    if (argc - optind < 2)
        return usage_error("chmod: expected MODE PATH...");
    if (parse_mode(argv[optind], &o.mode) < 0)
        return usage_error("chmod: '%s' is not an octal mode", argv[optind]);
    o.set |= F_MODE;
    return for_each_path(addr, "chmod", "chmod", &o, argc - optind - 1, argv + optind + 1);
}

int verb_mv(const char *addr, int argc, char **argv)
{
    struct fopts o;
    int rc = fopts_parse(argc, argv, "mv", F_NOCLOBBER, &o);
    if (rc != 0)
        return rc;
    struct who who = o.who;
    bool noclobber = o.set & F_NOCLOBBER;
    if (argc - optind != 2)
        return usage_error("mv: expected FROM TO");
    struct client *c = connect_cap(addr, "fs", "mv", &rc);
    if (!c)
        return rc;
    struct wire_enc w;
    struct sa_err e;
    uint64_t id = client_begin(c, &w, "rename");
    wire_kv_str(&w, "from", argv[optind]);
    wire_kv_str(&w, "to", argv[optind + 1]);
    if (noclobber)
        wire_kv_bool(&w, "overwrite", false);
    who_pack(&w, &who);
    msgpack_object reply;
    rc = client_end(c, &w, &e) < 0 ? conn_failed("mv", &e) : one_shot(c, id, "mv", &reply);
    client_free(c);
    return rc;
}
