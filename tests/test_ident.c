/* Unit tests of agent/ident.c's passwd(5) and group(5) line parsers.
 *
 * The agent parses /etc/passwd and /etc/group itself (ident.c says why).
 * Hand-made lines prove the refusals (missing fields, empty names, ids that
 * are not decimals below 2^32-1, comments, blank lines) and the membership
 * test; a differential test holds the parser to glibc's own
 * fgetpwent_r/fgetgrent_r over this machine's /etc/passwd and /etc/group and
 * a set of awkward but valid lines, so the two builds and glibc agree.
 */
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ident.h"

static void test_passwd_line(void)
{
    char l1[] = "vercel-sandbox:x:1000:1001:Vercel Sandbox,,,:/home/vercel-sandbox:/bin/bash";
    struct ident_pw pw;
    CHECK(ident_parse_passwd(l1, &pw) == 0);
    CHECK(strcmp(pw.name, "vercel-sandbox") == 0);
    CHECK(pw.uid == 1000 && pw.gid == 1001);
    CHECK(strcmp(pw.home, "/home/vercel-sandbox") == 0);
    CHECK(strcmp(pw.shell, "/bin/bash") == 0);

    char l2[] = "  nobody:*:4294967294:65534:::";     /* leading blanks, empty fields */
    CHECK(ident_parse_passwd(l2, &pw) == 0);
    CHECK(strcmp(pw.name, "nobody") == 0 && pw.uid == 4294967294u);
    CHECK(pw.home[0] == '\0' && pw.shell[0] == '\0');

    char l3[] = "odd:x:7:7::/h:/bin/sh:extra";       /* the shell is the rest */
    CHECK(ident_parse_passwd(l3, &pw) == 0);
    CHECK(strcmp(pw.shell, "/bin/sh:extra") == 0);
}

static void test_passwd_refusals(void)
{
    const char *bad[] = {
        "",                                   /* blank */
        "   \t",
        "# root:x:0:0::/root:/bin/sh",        /* comment */
        "root:x:0:0::/root",                  /* six fields */
        "root:x:0:0",
        "root",
        ":x:0:0::/root:/bin/sh",              /* empty name */
        "a:x::0::/:/bin/sh",                  /* empty uid */
        "a:x:0::::/bin/sh",                   /* empty gid */
        "a:x:-1:0::/:/bin/sh",                /* not decimal */
        "a:x:+1:0::/:/bin/sh",
        "a:x: 1:0::/:/bin/sh",
        "a:x:1x:0::/:/bin/sh",
        "a:x:0x10:0::/:/bin/sh",
        "a:x:4294967295:0::/:/bin/sh",        /* (uid_t)-1 */
        "a:x:99999999999999999999:0::/:/bin/sh",
        "a:x:0:4294967296::/:/bin/sh",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char line[128];
        struct ident_pw pw;
        snprintf(line, sizeof line, "%s", bad[i]);
        if (ident_parse_passwd(line, &pw) == 0) {
            printf("    accepted: \"%s\"\n", bad[i]);
            CHECK(0);
        }
    }
}

static void test_group_line_and_members(void)
{
    char l1[] = "sudo:x:27:alice,vercel-sandbox,bob";
    struct ident_gr gr;
    CHECK(ident_parse_group(l1, &gr) == 0);
    CHECK(strcmp(gr.name, "sudo") == 0 && gr.gid == 27);
    CHECK(ident_group_has(gr.members, "vercel-sandbox"));
    CHECK(ident_group_has(gr.members, "alice"));
    CHECK(ident_group_has(gr.members, "bob"));
    CHECK(!ident_group_has(gr.members, "vercel"));        /* prefixes are not members */
    CHECK(!ident_group_has(gr.members, "vercel-sandbox2"));
    CHECK(!ident_group_has(gr.members, "ali"));
    CHECK(!ident_group_has(gr.members, ""));

    char l2[] = "empty:x:1000:";
    CHECK(ident_parse_group(l2, &gr) == 0);
    CHECK(gr.gid == 1000 && gr.members[0] == '\0');
    CHECK(!ident_group_has(gr.members, "root"));

    char l3[] = "gaps:x:5:,a,,b,";
    CHECK(ident_parse_group(l3, &gr) == 0);
    CHECK(ident_group_has(gr.members, "a") && ident_group_has(gr.members, "b"));

    const char *bad[] = {"", "#wheel:x:10:root", "wheel:x:10", "wheel:x", ":x:10:",
                         "wheel:x::root", "wheel:x:ten:root", "wheel:x:4294967295:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char line[64];
        snprintf(line, sizeof line, "%s", bad[i]);
        if (ident_parse_group(line, &gr) == 0) {
            printf("    accepted: \"%s\"\n", bad[i]);
            CHECK(0);
        }
    }
}

/* Our side of a differential test: the lines of a text, parsed in turn. */
struct ours {
    char text[1 << 16];
    char *save, *line;
};

static bool ours_init(struct ours *o, const char *text, size_t n)
{
    if (n >= sizeof o->text)
        return false;
    memcpy(o->text, text, n);
    o->text[n] = '\0';
    o->save = NULL;
    o->line = strtok_r(o->text, "\n", &o->save);
    return true;
}

/* Our next entry: the first line left that parse takes; false at the end. */
static bool ours_next(struct ours *o, int (*parse)(char *, void *), void *out)
{
    for (; o->line; o->line = strtok_r(NULL, "\n", &o->save))
        if (parse(o->line, out) == 0) {
            o->line = strtok_r(NULL, "\n", &o->save);
            return true;
        }
    return false;
}

static int parse_pw(char *line, void *out) { return ident_parse_passwd(line, out); }
static int parse_gr(char *line, void *out) { return ident_parse_group(line, out); }

/* Every entry glibc's parser finds in text, ours finds alike, and no other. */
static void same_as_glibc_passwd(const char *what, char *text, size_t n)
{
    static struct ours o;
    FILE *f = fmemopen(text, n, "r");
    CHECK(f && ours_init(&o, text, n));
    struct passwd pw, *res;
    struct ident_pw mine;
    char buf[4096];
    int entries = 0;
    while (f && fgetpwent_r(f, &pw, buf, sizeof buf, &res) == 0) {
        if (!ours_next(&o, parse_pw, &mine) || strcmp(mine.name, pw.pw_name) != 0 ||
            mine.uid != pw.pw_uid || mine.gid != pw.pw_gid ||
            strcmp(mine.home, pw.pw_dir) != 0 || strcmp(mine.shell, pw.pw_shell) != 0) {
            printf("    %s: glibc has %s:%u:%u:%s:%s, we differ\n", what, pw.pw_name,
                   (unsigned)pw.pw_uid, (unsigned)pw.pw_gid, pw.pw_dir, pw.pw_shell);
            CHECK(0);
            break;
        }
        entries++;
    }
    if (f)
        fclose(f);
    CHECK(entries > 0 && !ours_next(&o, parse_pw, &mine));
}

static void same_as_glibc_group(const char *what, char *text, size_t n)
{
    static struct ours o;
    FILE *f = fmemopen(text, n, "r");
    CHECK(f && ours_init(&o, text, n));
    struct group gr, *res;
    struct ident_gr mine;
    char buf[8192];
    int entries = 0;
    while (f && fgetgrent_r(f, &gr, buf, sizeof buf, &res) == 0) {
        bool same = ours_next(&o, parse_gr, &mine) && strcmp(mine.name, gr.gr_name) == 0 &&
                    mine.gid == gr.gr_gid;
        for (char **m = gr.gr_mem; same && *m; m++)
            same = ident_group_has(mine.members, *m);
        if (!same) {
            printf("    %s: glibc has group %s:%u, we differ\n", what, gr.gr_name,
                   (unsigned)gr.gr_gid);
            CHECK(0);
            break;
        }
        entries++;
    }
    if (f)
        fclose(f);
    CHECK(entries > 0 && !ours_next(&o, parse_gr, &mine));
}

static size_t slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    if (f)
        fclose(f);
    return got;
}

static void test_same_entries_as_glibc(void)
{
    char pw[] = "root:x:0:0:root:/root:/bin/bash\n"
                "# a comment\n"
                "\n"
                "  indented:x:1:1:gecos, with spaces:/home/indented:/bin/sh\n"
                "noshell:x:2:2:::\n"
                "big:x:4294967294:4294967294:big:/:/usr/sbin/nologin\n"
                "last:x:3:3::/home/last:/bin/zsh";   /* no final newline */
    same_as_glibc_passwd("fixture", pw, strlen(pw));
    char gr[] = "root:x:0:\n"
                "sudo:x:27:alice,bob\n"
                "# users:x:100:\n"
                "users:x:100:root\n"
                "last:x:3:a,b,c";
    same_as_glibc_group("fixture", gr, strlen(gr));

    static char text[1 << 16];
    size_t n = slurp("/etc/passwd", text, sizeof text);
    if (n)
        same_as_glibc_passwd("/etc/passwd", text, n);
    n = slurp("/etc/group", text, sizeof text);
    if (n)
        same_as_glibc_group("/etc/group", text, n);
}

int main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        CHECK_TEST(test_passwd_line),
        CHECK_TEST(test_passwd_refusals),
        CHECK_TEST(test_group_line_and_members),
        CHECK_TEST(test_same_entries_as_glibc),
    };
    return check_run_only(tests, sizeof tests / sizeof *tests, argc > 1 ? argv[1] : NULL);
}
