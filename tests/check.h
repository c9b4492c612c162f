/* check.h — the tiny test runner shared by the plain-C unit tests: CHECK
 * marks the running test failed and says where; check_run runs a table of
 * tests, prints one line each and the closing "N passed, M failed". */
#ifndef SA_CHECK_H
#define SA_CHECK_H

#include <stdio.h>

static int check_failed_now;

#define CHECK(x)                                                                    \
    do {                                                                            \
        if (!(x)) {                                                                 \
            printf("    %s:%d: CHECK(%s)\n", __FILE__, __LINE__, #x);               \
            check_failed_now = 1;                                                   \
        }                                                                           \
    } while (0)

struct check_test {
    const char *name;
    void (*fn)(void);
};
#define CHECK_TEST(f) {#f, f}

/* Exit status for main: 0 when every test passed. */
static inline int check_run(const struct check_test *t, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        check_failed_now = 0;
        t[i].fn();
        printf("%s %s\n", check_failed_now ? "FAIL" : "ok", t[i].name);
        failed += check_failed_now;
        passed += !check_failed_now;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
