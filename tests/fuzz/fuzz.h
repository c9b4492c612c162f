/* fuzz.h — what every libFuzzer target here shares: the entry point's
 * prototype, UBSan made fatal, and INVARIANT (a broken one is a crash that
 * libFuzzer keeps). */
#ifndef SA_FUZZ_H
#define SA_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__ubsan_default_options(void);

/* The fuzz build does not compile with -fno-sanitize-recover: make undefined
 * behaviour fatal here, so that libFuzzer keeps it as a crash. */
const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:print_stacktrace=1";
}

#define INVARIANT(cond)                                                               \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#endif
