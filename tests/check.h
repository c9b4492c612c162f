/* check.h — the tiny test runner shared by the plain-C unit tests: CHECK
 * counts a failure of the running test and says where; CHECK_SKIP says the
 * running test could not run here, and why (printed on its line, never
 * silently); check_run runs a table of tests (those whose name contains
 * `only`, when given), prints one line each and the closing "N passed,
 * M failed" (", K skipped" when some were). */
#ifndef SA_CHECK_H
#define SA_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_fails;         /* failed checks of the running test */
static const char *check_skip_why; /* the running test skipped itself: why */

#define CHECK_SKIP(why) (check_skip_why = (why))

#define CHECK(x)                                                                    \
    do {                                                                            \
        if (!(x)) {                                                                 \
            printf("    %s:%d: CHECK(%s)\n", __FILE__, __LINE__, #x);               \
            check_fails++;                                                          \
        }                                                                           \
    } while (0)

struct check_test {
    const char *name;
    void (*fn)(void);
};
#define CHECK_TEST(f) {#f, f}

/* Exit status for main: 0 when every test run passed. only: NULL, or a
 * substring of the names to run (a test binary's first argument). */
static inline int check_run_only(const struct check_test *t, size_t n, const char *only)
{
    int passed = 0, failed = 0, skipped = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        if (only && !strstr(t[i].name, only))
            continue;
        check_fails = 0;
        check_skip_why = NULL;
        t[i].fn();
        if (check_skip_why && !check_fails) {
            printf("skip %s: %s\n", t[i].name, check_skip_why);
            skipped++;
            continue;
        }
        printf("%s %s\n", check_fails ? "FAIL" : "ok  ", t[i].name);
        failed += check_fails > 0;
        passed += check_fails == 0;
    }
    if (skipped)
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else
        printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

static inline int check_run(const struct check_test *t, size_t n)
{
    return check_run_only(t, n, NULL);
}

#endif
