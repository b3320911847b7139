/* check.h: a minimal test harness for the C unit tests (`make test-c`).
 * Each test file defines tests with TEST(name) and runs them from main via
 * RUN(name); CHECK failures print file:line and count, the exit status is
 * non-zero when anything failed. Ends with "N passed, N failed". */
#ifndef PS_CHECK_H
#define PS_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures_ = 0, tests_passed_ = 0, tests_failed_ = 0;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    check_failures_++; } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (tol))) { \
    fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s=%g %s=%g tol=%g\n", \
            __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol)); \
    check_failures_++; } } while (0)

#define TEST(name) static void name(void)
#define RUN(name) do { int before_ = check_failures_; name(); \
    if (check_failures_ == before_) tests_passed_++; \
    else { tests_failed_++; fprintf(stderr, "FAILED %s\n", #name); } } while (0)
/* A fresh directory under $TMPDIR (or /tmp) named prefix_XXXXXX into dir;
 * 0 on success. */
static inline int make_test_dir(char *dir, size_t n, const char *prefix) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, n, "%s/%s_XXXXXX", base && *base ? base : "/tmp", prefix);
    if (mkdtemp(dir)) return 0;
    perror("mkdtemp");
    return 1;
}

#define CHECK_DONE() (printf("%d passed, %d failed\n", tests_passed_, tests_failed_), \
                      tests_failed_ ? 1 : 0)
#endif
