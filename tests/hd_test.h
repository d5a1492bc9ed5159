/*
 * hd_test.h - the minimal unit-test harness used by every C test in tests/.
 *
 * HD_TEST(name) defines a test; HD_CHECK*(...) record failures without stopping the test;
 * hd_test_main() runs them all (or those named on the command line), prints one line per
 * failure and the closing line "N passed, N failed" (", N skipped" when some skip), and
 * exits non-zero on any failure. HD_SKIP(why) marks a test SKIPPED visibly.
 */
#ifndef HD_TEST_H
#define HD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} hd_test_case_t;

extern int hd_test_failures;
extern int hd_test_skipped_flag;

#define HD_TEST_MAX 256
extern hd_test_case_t hd_test_cases[HD_TEST_MAX];
extern int hd_test_n;

#define HD_TEST(tname)                                                                              \
    static void tname(void);                                                                        \
    __attribute__((constructor)) static void tname##_register(void)                                 \
    {                                                                                              \
        if (hd_test_n < HD_TEST_MAX) {                                                             \
            hd_test_cases[hd_test_n].name = #tname;                                                 \
            hd_test_cases[hd_test_n].fn = tname;                                                    \
            hd_test_n++;                                                                           \
        }                                                                                          \
    }                                                                                              \
    static void tname(void)

#define HD_CHECK_MSG(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            hd_test_failures++;                                                                    \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)
#define HD_CHECK_TRUE(cond) HD_CHECK_MSG(cond, "false")
#define HD_CHECK_INT_EQ(a, b)                                                                      \
    HD_CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))
#define HD_CHECK_STR_EQ(a, b)                                                                      \
    HD_CHECK_MSG(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))
#define HD_CHECK_NEAR(a, b, tol)                                                                   \
    HD_CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a),   \
                 (double)(b), (double)(tol))
#define HD_SKIP(...)                                                                               \
    do {                                                                                           \
        fprintf(stdout, "  SKIPPED: ");                                                            \
        fprintf(stdout, __VA_ARGS__);                                                              \
        fprintf(stdout, "\n");                                                                     \
        hd_test_skipped_flag = 1;                                                                  \
        return;                                                                                    \
    } while (0)

int hd_test_main(int argc, char **argv);

#ifdef HD_TEST_IMPLEMENT
int hd_test_failures;
int hd_test_skipped_flag;
hd_test_case_t hd_test_cases[HD_TEST_MAX];
int hd_test_n;

int hd_test_main(int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < hd_test_n; i++) {
        int selected = argc <= 1;
        for (int a = 1; a < argc; a++) {
            if (strcmp(argv[a], hd_test_cases[i].name) == 0) {
                selected = 1;
            }
        }
        if (!selected) {
            continue;
        }
        int before = hd_test_failures;
        hd_test_skipped_flag = 0;
        fprintf(stdout, "[ RUN  ] %s\n", hd_test_cases[i].name);
        fflush(stdout);
        hd_test_cases[i].fn();
        if (hd_test_failures != before) {
            failed++;
            fprintf(stdout, "[ FAIL ] %s\n", hd_test_cases[i].name);
        } else if (hd_test_skipped_flag) {
            skipped++;
            fprintf(stdout, "[ SKIP ] %s\n", hd_test_cases[i].name);
        } else {
            passed++;
            fprintf(stdout, "[  OK  ] %s\n", hd_test_cases[i].name);
        }
        fflush(stdout);
    }
    if (skipped) {
        fprintf(stdout, "%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    } else {
        fprintf(stdout, "%d passed, %d failed\n", passed, failed);
    }
    return failed ? 1 : 0;
}
#endif

#endif /* HD_TEST_H */
