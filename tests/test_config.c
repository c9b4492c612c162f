/* Unit tests of the settings (agent/config.c): the PID-1 flags and the
 * kernel command line (cfg_apply_cmdline) with its precedence — flags win
 * over sandbox_agent.* keys, which win over the defaults. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static int failed, passed;
#define CHECK(x)                                                                    \
    do {                                                                            \
        if (!(x)) {                                                                 \
            printf("    %s:%d: CHECK(%s)\n", __FILE__, __LINE__, #x);               \
            failed_now = 1;                                                         \
        }                                                                           \
    } while (0)
static int failed_now;

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

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
#define T(f) {#f, f}
        T(init_flags_have_defaults_and_parse),
        T(cmdline_keys_override_defaults),
        T(flags_win_over_the_cmdline),
        T(cmdline_without_keys_changes_nothing),
        T(unknown_keys_are_ignored_bad_values_rejected_others_applied),
        T(too_many_cmdline_listeners_keep_the_first_sixteen),
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        failed_now = 0;
        tests[i].fn();
        printf("%s %s\n", failed_now ? "FAIL" : "ok", tests[i].name);
        failed += failed_now;
        passed += !failed_now;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
