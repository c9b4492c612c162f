/* Unit tests of the settings (agent/config.c): the PID-1 flags, the config
 * file (cfg_apply_file, --config) and the kernel command line
 * (cfg_apply_cmdline) with their precedence — flags win over the config
 * file, which wins over sandbox_agent.* keys, which win over the defaults —
 * and the peer allow-lists (cfg_vsock_cid_allowed, cfg_uid_allowed). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "log.h"

/* cfg_parse on a NULL-terminated list of flags (argv[0] added). */
#define PARSE(c, e, ...)                                                            \
    ({                                                                              \
        char *argv_[] = {"sandbox-agent", __VA_ARGS__};                             \
        cfg_parse((c), (int)(sizeof argv_ / sizeof argv_[0]) - 1, argv_, (e));      \
    })

static void init_flags_have_defaults_and_parse(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(!c.init && !c.no_mount);
    CHECK(strcmp(c.hostname, "sandbox") == 0);
    CHECK(c.grace_ms == 3000);
    CHECK(c.token_inline == NULL);
    CHECK(c.nlisten == 1 && strcmp(c.listen[0], "vsock:7071") == 0);
    CHECK(PARSE(&c, &e, "--init", "--no-mount", "--hostname", "box1", "--grace-ms", "250", NULL) == 0);
    CHECK(c.init && c.no_mount && strcmp(c.hostname, "box1") == 0 && c.grace_ms == 250);
    CHECK(PARSE(&c, &e, "--grace-ms", "600001", NULL) < 0);
    CHECK(PARSE(&c, &e, "--grace-ms", "-1", NULL) < 0);
    CHECK(PARSE(&c, &e, "--hostname", "", NULL) < 0);
    CHECK(PARSE(&c, &e, "--hostname",
                "a123456789b123456789c123456789d123456789e123456789f123456789g12345", NULL) < 0);
}

/* Flags added after the first ones are accepted as flags too (getopt's
 * range check once stopped at --quiet) and bounded. */
static void upload_caps_as_flags_and_defaults(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(c.upload_max_bytes == 8ull << 30 && c.upload_max_entries == 1u << 20);
    CHECK(PARSE(&c, &e, "--upload-max-bytes", "67108864", "--upload-max-entries", "100", NULL) == 0);
    CHECK(c.upload_max_bytes == 67108864 && c.upload_max_entries == 100);
    CHECK(PARSE(&c, &e, "--upload-max-bytes", "0", NULL) < 0);
    CHECK(PARSE(&c, &e, "--upload-max-entries", "0", NULL) < 0);
    CHECK(PARSE(&c, &e, "--upload-max-entries", "4294967297", NULL) < 0);
}

/* --tunnel and --max-tunnels: flags, config file, kernel command line, in
 * that order of precedence; bad values refused. */
static void tunnel_settings_from_every_source(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(c.tunnel == CFG_TUNNEL_ANY && c.max_tunnels == 128);
    CHECK(PARSE(&c, &e, "--tunnel", "off", "--max-tunnels", "3", NULL) == 0);
    CHECK(c.tunnel == CFG_TUNNEL_OFF && c.max_tunnels == 3);
    CHECK(PARSE(&c, &e, "--tunnel", "everything", NULL) < 0);
    CHECK(PARSE(&c, &e, "--max-tunnels", "0", NULL) < 0);
    CHECK(PARSE(&c, &e, "--max-tunnels", "65537", NULL) < 0);
    CHECK(PARSE(&c, &e, NULL) == 0);
    const char *f = "tunnel = loopback\nmax-tunnels = 9\n";
    CHECK(cfg_apply_file(&c, f, strlen(f), "agent.conf", &e) == 0);
    CHECK(c.tunnel == CFG_TUNNEL_LOOPBACK && c.max_tunnels == 9);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.tunnel=off sandbox_agent.max_tunnels=7", &e) == 0);
    CHECK(c.tunnel == CFG_TUNNEL_LOOPBACK && c.max_tunnels == 9);   /* the file wins */
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.tunnel=loopback sandbox_agent.max_tunnels=7", &e) == 0);
    CHECK(c.tunnel == CFG_TUNNEL_LOOPBACK && c.max_tunnels == 7);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.tunnel=maybe", &e) < 0);
    CHECK(c.tunnel == CFG_TUNNEL_ANY);
    cfg_free(&c);
}

static void cmdline_keys_override_defaults(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    const char *k = "BOOT_IMAGE=/vmlinuz console=ttyS0 reboot=k sandbox_agent.listen=vsock:9000 "
                    "quiet sandbox_agent.workdir=/work sandbox_agent.user=bob\n"
                    "sandbox_agent.listen=unix:/run/a.sock\tsandbox_agent.hostname=vm7 "
                    "sandbox_agent.token=s3cret panic=1\n";
    CHECK(cfg_apply_cmdline(&c, k, &e) == 0);
    CHECK(c.nlisten == 2);
    CHECK(c.nlisten == 2 && strcmp(c.listen[0], "vsock:9000") == 0 &&
          strcmp(c.listen[1], "unix:/run/a.sock") == 0);
    CHECK(strcmp(c.workdir, "/work") == 0);
    CHECK(strcmp(c.user, "bob") == 0);
    CHECK(strcmp(c.hostname, "vm7") == 0);
    CHECK(c.token_inline && strcmp(c.token_inline, "s3cret") == 0);
    cfg_free(&c);
}

/* A token from the kernel command line is readable by every user in
 * /proc/cmdline: loading it says so, loudly, in the log (issue 12 item 2);
 * a token file does not. */
static bool token_load_logs(const char *inline_token, const char *file, char *out, size_t cap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return false;
    log_set_kmsg(p[1]);                 /* the sink owns p[1] */
    struct cfg c;
    struct sa_err e;
    bool ok = PARSE(&c, &e, NULL) == 0;
    c.token_inline = inline_token;
    c.token_file = file;
    ok = ok && cfg_load_token(&c, &e) == 0;
    log_set_kmsg(-1);
    ssize_t n = read(p[0], out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
    close(p[0]);
    cfg_free(&c);
    return ok;
}

static void a_cmdline_token_is_loaded_with_a_loud_warning(void)
{
    char log[4096];
    CHECK(token_load_logs("s3cret", NULL, log, sizeof log));
    CHECK(strstr(log, "KERNEL COMMAND LINE") && strstr(log, "/proc/cmdline"));
    char path[] = "/tmp/sa-test-token-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, "filetoken\n", 10) == 10);
    close(fd);
    CHECK(token_load_logs("s3cret", path, log, sizeof log));
    CHECK(strstr(log, "KERNEL COMMAND LINE") == NULL);
    unlink(path);
}

/* The limits (issue 12): defaults finite, from flags, the config file and
 * the kernel command line, flags first; out-of-range values refused. */
static void limits_from_every_source(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(c.max_connections == 1024 && c.max_commands == 4096 && c.keep_exited == 4096);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.max_connections=7 sandbox_agent.max_commands=8 "
                                "sandbox_agent.keep_exited=9", &e) == 0);
    CHECK(c.max_connections == 7 && c.max_commands == 8 && c.keep_exited == 9);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.max_commands=0", &e) < 0 && c.max_commands == 8);
    cfg_free(&c);

    CHECK(PARSE(&c, &e, "--max-commands", "3", NULL) == 0);
    const char file[] = "max-commands = 5\nmax-connections = 6\nkeep-exited = 65536\n";
    CHECK(cfg_apply_file(&c, file, sizeof file - 1, "f", &e) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.max_commands=9 sandbox_agent.max_connections=9",
                            &e) == 0);
    CHECK(c.max_commands == 3 && c.max_connections == 6 && c.keep_exited == 65536);
    cfg_free(&c);

    CHECK(PARSE(&c, &e, "--max-connections", "65537", NULL) < 0);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--keep-exited", "0", NULL) < 0);
    cfg_free(&c);
}

/* The PID-1 boot keys: modules to load, one interface's address, and the
 * tcp any-address switch (a flag still wins). */
static void cmdline_modules_net_and_tcp_any(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(!c.modules && !c.net && !c.tcp_any);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.modules=/lib/modules/a.ko,/lib/modules/b.ko "
                                "sandbox_agent.net=eth0,10.0.2.15/24,10.0.2.2 "
                                "sandbox_agent.insecure_tcp_any_address=1", &e) == 0);
    CHECK(c.modules && strcmp(c.modules, "/lib/modules/a.ko,/lib/modules/b.ko") == 0);
    CHECK(c.net && strcmp(c.net, "eth0,10.0.2.15/24,10.0.2.2") == 0);
    CHECK(c.tcp_any);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.insecure_tcp_any_address=yes", &e) < 0);
    CHECK(!c.tcp_any);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.net=", &e) < 0 && !c.net);
    cfg_free(&c);
}

static void flags_win_over_the_cmdline(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, "--listen", "tcp:127.0.0.1:1", "--workdir", "/vercel/sandbox",
                "--hostname", "flag-host", NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.listen=vsock:9 sandbox_agent.workdir=/k "
                                "sandbox_agent.user=kuser sandbox_agent.hostname=khost", &e) == 0);
    CHECK(c.nlisten == 1 && strcmp(c.listen[0], "tcp:127.0.0.1:1") == 0);
    CHECK(strcmp(c.workdir, "/vercel/sandbox") == 0);  /* a flag equal to the default still wins */
    CHECK(strcmp(c.hostname, "flag-host") == 0);
    CHECK(strcmp(c.user, "kuser") == 0);               /* not given as a flag */
    cfg_free(&c);
}

static void cmdline_without_keys_changes_nothing(void)
{
    struct cfg c, before;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    before = c;
    CHECK(cfg_apply_cmdline(&c, "console=ttyS0 sandbox_agentX.listen=1 xsandbox_agent.user=x "
                                "sandbox_agent", &e) == 0);
    CHECK(c.nlisten == 1 && c.listen[0] == before.listen[0]);
    CHECK(c.workdir == before.workdir && c.user == before.user && c.hostname == before.hostname);
    CHECK(c.token_inline == NULL);
    CHECK(cfg_apply_cmdline(&c, "", &e) == 0);
    cfg_free(&c);
}

static void unknown_keys_are_ignored_bad_values_rejected_others_applied(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.colour=blue sandbox_agent.novalue "
                                "sandbox_agent.user=ok", &e) == 0);
    CHECK(strcmp(c.user, "ok") == 0);
    cfg_free(&c);

    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.workdir= sandbox_agent.user=u2 "
                                "sandbox_agent.hostname=", &e) < 0);
    CHECK(strstr(e.msg, "workdir") != NULL);           /* the first problem */
    CHECK(strcmp(c.workdir, "/vercel/sandbox") == 0);
    CHECK(strcmp(c.hostname, "sandbox") == 0);
    CHECK(strcmp(c.user, "u2") == 0);
    cfg_free(&c);
}

static void too_many_cmdline_listeners_keep_the_first_sixteen(void)
{
    struct cfg c;
    struct sa_err e;
    char k[2048] = "";
    for (int i = 0; i < CFG_MAX_LISTEN + 2; i++) {
        char w[64];
        snprintf(w, sizeof w, "sandbox_agent.listen=vsock:%d ", 1000 + i);
        strcat(k, w);
    }
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, k, &e) < 0);
    CHECK(c.nlisten == CFG_MAX_LISTEN);
    CHECK(strcmp(c.listen[0], "vsock:1000") == 0 && strcmp(c.listen[15], "vsock:1015") == 0);
    cfg_free(&c);
}

static void vsock_allows_only_the_host_by_default(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_vsock_cid_allowed(&c, 2));
    CHECK(!cfg_vsock_cid_allowed(&c, 3) && !cfg_vsock_cid_allowed(&c, 1) &&
          !cfg_vsock_cid_allowed(&c, 0) && !cfg_vsock_cid_allowed(&c, 0xffffffffu));
    cfg_free(&c);
}

static void vsock_allow_cid_flags_replace_the_default(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "5", "--vsock-allow-cid", "70000", NULL) == 0);
    CHECK(cfg_vsock_cid_allowed(&c, 5) && cfg_vsock_cid_allowed(&c, 70000));
    CHECK(!cfg_vsock_cid_allowed(&c, 2) && !cfg_vsock_cid_allowed(&c, 6));
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "any", NULL) == 0);
    CHECK(cfg_vsock_cid_allowed(&c, 2) && cfg_vsock_cid_allowed(&c, 3) &&
          cfg_vsock_cid_allowed(&c, 123456));
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "x", NULL) < 0);
    CHECK(strstr(e.msg, "--vsock-allow-cid") != NULL);
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "-1", NULL) < 0);
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "4294967295", NULL) < 0);
    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "", NULL) < 0);
    char *argv[2 + 2 * (CFG_MAX_ALLOW + 1)];
    argv[0] = "sandbox-agent";
    for (int i = 0; i <= CFG_MAX_ALLOW; i++) {
        argv[1 + 2 * i] = "--vsock-allow-cid";
        argv[2 + 2 * i] = "9";
    }
    argv[1 + 2 * (CFG_MAX_ALLOW + 1)] = NULL;
    CHECK(cfg_parse(&c, 1 + 2 * CFG_MAX_ALLOW, argv, &e) == 0);   /* 16: fine */
    cfg_free(&c);
    CHECK(cfg_parse(&c, 1 + 2 * (CFG_MAX_ALLOW + 1), argv, &e) < 0);  /* 17 */
    cfg_free(&c);
}

static void vsock_allow_cid_from_the_cmdline_unless_a_flag_set_it(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.vsock_allow_cid=3 sandbox_agent.vsock_allow_cid=4",
                            &e) == 0);
    CHECK(cfg_vsock_cid_allowed(&c, 3) && cfg_vsock_cid_allowed(&c, 4));
    CHECK(!cfg_vsock_cid_allowed(&c, 2));              /* the kernel's list replaces the default */
    cfg_free(&c);

    CHECK(PARSE(&c, &e, "--vsock-allow-cid", "7", NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.vsock_allow_cid=any", &e) == 0);
    CHECK(cfg_vsock_cid_allowed(&c, 7) && !cfg_vsock_cid_allowed(&c, 8));   /* the flag wins */
    cfg_free(&c);

    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.vsock_allow_cid=host", &e) < 0);
    CHECK(strstr(e.msg, "vsock_allow_cid") != NULL);
    CHECK(cfg_vsock_cid_allowed(&c, 2) && !cfg_vsock_cid_allowed(&c, 3));  /* still the default */
    cfg_free(&c);
}

static void unix_peers_root_self_and_allow_uid(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_uid_allowed(&c, 0, 1000) && cfg_uid_allowed(&c, 1000, 1000));
    CHECK(!cfg_uid_allowed(&c, 1001, 1000) && !cfg_uid_allowed(&c, 65534, 0));
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--allow-uid", "1001", "--allow-uid", "65534", NULL) == 0);
    CHECK(cfg_uid_allowed(&c, 1001, 1000) && cfg_uid_allowed(&c, 65534, 0));
    CHECK(cfg_uid_allowed(&c, 0, 1000) && cfg_uid_allowed(&c, 1000, 1000));
    CHECK(!cfg_uid_allowed(&c, 1002, 1000));
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--allow-uid", "alice", NULL) < 0);
    CHECK(PARSE(&c, &e, "--allow-uid", "-5", NULL) < 0);
}

#define FILE_TEXT(c, e, s) cfg_apply_file((c), (s), strlen(s), "agent.conf", (e))

static void config_file_sets_every_kind_of_key(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    const char *t = "# sandbox-agent settings\n"
                    "\n"
                    "listen = unix:/run/a.sock\n"
                    "  listen=vsock:9000  \r\n"
                    "\t# an indented comment\n"
                    "workdir = /srv/work dir\n"
                    "user = bob\n"
                    "dev = true\n"
                    "insecure-tcp-any-address = no\n"
                    "max-frame = 65536\n"
                    "drain-ms = 10\n"
                    "stdin-window = 8192\n"
                    "log-cap = 131072\n"
                    "log-total-cap = 262144\n"
                    "token-file = /etc/token\n"
                    "hostname = vm1\n"
                    "grace-ms = 0\n"
                    "allow-uid = 1001\n"
                    "vsock-allow-cid = 3\n"
                    "vsock-allow-cid = 4\n"
                    "verbose = true\n"
                    "no-mount = 1\n"
                    "init = false";                         /* no final newline */
    CHECK(FILE_TEXT(&c, &e, t) == 0);
    CHECK(c.nlisten == 2 && strcmp(c.listen[0], "unix:/run/a.sock") == 0 &&
          strcmp(c.listen[1], "vsock:9000") == 0);
    CHECK(strcmp(c.workdir, "/srv/work dir") == 0 && strcmp(c.user, "bob") == 0);
    CHECK(c.dev && !c.tcp_any && !c.init && c.no_mount);
    CHECK(c.max_frame == 65536 && c.drain_ms == 10 && c.stdin_window == 8192);
    CHECK(c.log_cap == 131072 && c.log_total_cap == 262144);
    CHECK(strcmp(c.token_file, "/etc/token") == 0 && strcmp(c.hostname, "vm1") == 0);
    CHECK(c.grace_ms == 0);
    CHECK(c.nallow_uids == 1 && c.allow_uids[0] == 1001);
    CHECK(cfg_vsock_cid_allowed(&c, 3) && cfg_vsock_cid_allowed(&c, 4) &&
          !cfg_vsock_cid_allowed(&c, 2));
    CHECK(c.log_level == LOG_DEBUG);
    CHECK(FILE_TEXT(&c, &e, "") == 0);                         /* an empty file is fine */
    cfg_free(&c);
}

static void precedence_flags_then_file_then_cmdline_then_defaults(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, "--workdir", "/flag", "--listen", "tcp:127.0.0.1:1", NULL) == 0);
    CHECK(FILE_TEXT(&c, &e, "workdir = /file\nuser = fileuser\nlisten = vsock:1\n"
                            "listen = vsock:2\nvsock-allow-cid = 9\n") == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.workdir=/k sandbox_agent.user=kuser "
                                "sandbox_agent.hostname=khost sandbox_agent.listen=vsock:3 "
                                "sandbox_agent.vsock_allow_cid=any", &e) == 0);
    CHECK(strcmp(c.workdir, "/flag") == 0);                     /* flag > file, cmdline */
    CHECK(c.nlisten == 1 && strcmp(c.listen[0], "tcp:127.0.0.1:1") == 0);
    CHECK(strcmp(c.user, "fileuser") == 0);                     /* file > cmdline */
    CHECK(cfg_vsock_cid_allowed(&c, 9) && !cfg_vsock_cid_allowed(&c, 2) &&
          !cfg_vsock_cid_allowed(&c, 10));
    CHECK(strcmp(c.hostname, "khost") == 0);                    /* cmdline > default */
    CHECK(c.grace_ms == 3000);                                  /* default */
    cfg_free(&c);
}

static void config_file_errors_name_the_line(void)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"user = a\n\ncolour = blue\n", "agent.conf:3: unknown key 'colour'"},
        {"# c\njust words\n", "agent.conf:2: expected `key = value`"},
        {"workdir =\n", "agent.conf:1: workdir: empty value"},
        {"max-frame = 12\n", "agent.conf:1: --max-frame"},
        {"dev = maybe\n", "agent.conf:1: expected true or false"},
        {"config = other.conf\n", "agent.conf:1: unknown key 'config'"},
        {"help = true\n", "agent.conf:1: unknown key 'help'"},
        {"--user = x\n", "agent.conf:1: unknown key '--user'"},
        {"hostname = a123456789b123456789c123456789d123456789e123456789f123456789g12345\n",
         "agent.conf:1: --hostname"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cfg c;
        struct sa_err e;
        CHECK(PARSE(&c, &e, NULL) == 0);
        int r = FILE_TEXT(&c, &e, bad[i].text);
        CHECK(r < 0);
        if (r < 0 && strstr(e.msg, bad[i].want) == NULL) {
            printf("    %s -> %s\n", bad[i].want, e.msg);
            check_fails++;
        }
        cfg_free(&c);
    }
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_file(&c, "user = a\0b\n", 11, "agent.conf", &e) < 0);
    CHECK(strstr(e.msg, "NUL") != NULL);
    char line[CFG_LINE_MAX + 16];
    memset(line, 'x', sizeof line);
    memcpy(line, "user = ", 7);
    line[CFG_LINE_MAX - 1] = '\n';                 /* exactly CFG_LINE_MAX with the newline */
    CHECK(cfg_apply_file(&c, line, CFG_LINE_MAX, "agent.conf", &e) == 0);
    line[CFG_LINE_MAX - 1] = 'x';
    line[CFG_LINE_MAX] = '\n';
    CHECK(cfg_apply_file(&c, line, CFG_LINE_MAX + 1, "agent.conf", &e) < 0);
    CHECK(strstr(e.msg, "agent.conf:1: line longer than 4096 bytes") != NULL);
    cfg_free(&c);
}

static void config_flag_reads_the_file_and_flags_still_win(void)
{
    char path[] = "/tmp/sa-test-config-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    const char *t = "user = fileuser\nworkdir = /file\ngrace-ms = 42\n";
    CHECK(write(fd, t, strlen(t)) == (ssize_t)strlen(t));
    close(fd);
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, "--workdir", "/flag", "--config", path, NULL) == 0);
    CHECK(strcmp(c.user, "fileuser") == 0 && strcmp(c.workdir, "/flag") == 0 && c.grace_ms == 42);
    CHECK(c.nlisten == 1 && strcmp(c.listen[0], "vsock:7071") == 0);   /* defaults after */
    cfg_free(&c);
    /* a bad file stops start-up, naming file and line */
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "user = u\nbogus = 1\n", 19) == 19);
    close(fd);
    CHECK(PARSE(&c, &e, "--config", path, NULL) < 0);
    CHECK(strstr(e.msg, ":2: unknown key 'bogus'") != NULL && strstr(e.msg, path) != NULL);
    cfg_free(&c);
    /* bounded: 64 KiB of comments is fine, one byte more is not */
    fd = open(path, O_WRONLY | O_TRUNC);
    char chunk[1024];
    memset(chunk, '#', sizeof chunk);
    chunk[sizeof chunk - 1] = '\n';
    for (int i = 0; i < 64; i++)
        CHECK(write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk);
    CHECK(PARSE(&c, &e, "--config", path, NULL) == 0);
    cfg_free(&c);
    CHECK(write(fd, "\n", 1) == 1);
    close(fd);
    CHECK(PARSE(&c, &e, "--config", path, NULL) < 0);
    CHECK(strstr(e.msg, "larger than 65536 bytes") != NULL);
    cfg_free(&c);
    unlink(path);
    CHECK(PARSE(&c, &e, "--config", path, NULL) < 0);          /* missing */
    CHECK(strstr(e.msg, "No such file") != NULL);
    cfg_free(&c);
}

/* Issue 12: a tcp: listener without a token needs --insecure-tcp; the same
 * switch in the config file and on the kernel command line (a flag wins);
 * a root-only token file can be named on the kernel command line. */
static void insecure_tcp_and_token_file_from_every_source(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(!c.insecure_tcp && !c.token_file);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--insecure-tcp", NULL) == 0 && c.insecure_tcp);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.insecure_tcp=0", &e) == 0 && c.insecure_tcp);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(FILE_TEXT(&c, &e, "insecure-tcp = true\n") == 0 && c.insecure_tcp);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.insecure_tcp=1 "
                                "sandbox_agent.token_file=/etc/sandbox-agent/token", &e) == 0);
    CHECK(c.insecure_tcp && !c.tcp_any);
    CHECK(c.token_file && strcmp(c.token_file, "/etc/sandbox-agent/token") == 0);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--token-file", "/flag", NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.token_file=/cmdline", &e) == 0);
    CHECK(strcmp(c.token_file, "/flag") == 0);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.insecure_tcp=maybe", &e) < 0 && !c.insecure_tcp);
    CHECK(cfg_apply_cmdline(&c, "sandbox_agent.token_file=", &e) < 0 && !c.token_file);
    cfg_free(&c);
}

/* The file helpers' idle deadline: 10 minutes by default, bounded. */
static void helper_idle_ms_default_and_bounds(void)
{
    struct cfg c;
    struct sa_err e;
    CHECK(PARSE(&c, &e, NULL) == 0 && c.helper_idle_ms == 600000);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--helper-idle-ms", "2000", NULL) == 0 && c.helper_idle_ms == 2000);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, "--helper-idle-ms", "999", NULL) < 0);
    cfg_free(&c);
    CHECK(PARSE(&c, &e, NULL) == 0);
    CHECK(FILE_TEXT(&c, &e, "helper-idle-ms = 5000\n") == 0 && c.helper_idle_ms == 5000);
    cfg_free(&c);
}

int main(void)
{
    static const struct check_test tests[] = {
#define T(f) CHECK_TEST(f)
        T(init_flags_have_defaults_and_parse),
        T(upload_caps_as_flags_and_defaults),
        T(tunnel_settings_from_every_source),
        T(cmdline_keys_override_defaults),
        T(a_cmdline_token_is_loaded_with_a_loud_warning),
        T(limits_from_every_source),
        T(cmdline_modules_net_and_tcp_any),
        T(flags_win_over_the_cmdline),
        T(cmdline_without_keys_changes_nothing),
        T(unknown_keys_are_ignored_bad_values_rejected_others_applied),
        T(too_many_cmdline_listeners_keep_the_first_sixteen),
        T(vsock_allows_only_the_host_by_default),
        T(vsock_allow_cid_flags_replace_the_default),
        T(vsock_allow_cid_from_the_cmdline_unless_a_flag_set_it),
        T(unix_peers_root_self_and_allow_uid),
        T(config_file_sets_every_kind_of_key),
        T(precedence_flags_then_file_then_cmdline_then_defaults),
        T(config_file_errors_name_the_line),
        T(config_flag_reads_the_file_and_flags_still_win),
        T(insecure_tcp_and_token_file_from_every_source),
        T(helper_idle_ms_default_and_bounds),
    };
    return check_run(tests, sizeof tests / sizeof tests[0]);
}
