/*
 * check.h -- the C tests' one assertion: CHECK(cond, fmt, ...) counts a
 * pass or prints "not ok - ..." with where; a test ends with
 * CHECK_DONE(), which prints "N passed, M failed" and gives the exit status.
 */
#ifndef SH_TEST_CHECK_H
#define SH_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            printf("not ok - ");                                             \
            printf(__VA_ARGS__);                                             \
            printf(" (%s:%d)\n", __FILE__, __LINE__);                        \
        }                                                                    \
    } while (0)

#define CHECK_DONE()                                                         \
    (printf("%d passed, %d failed\n", passed, failed), failed != 0)

#endif /* SH_TEST_CHECK_H */
