/* runner.c - runs the tests registered through the stand-in criterion.h (TSan builds, see
 * there): each in turn in this process, printing Criterion-style [PASS]/[FAIL] lines and
 * the same "Synthesis:" line, and exiting 1 when a test failed. A ThreadSanitizer report
 * ends the process on its own (TSAN_OPTIONS halt_on_error=1, exitcode=66). */
#include "criterion/criterion.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAX_TESTS = 256 };
static struct {
  const char *suite, *name;
  kiln_tsan_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
static atomic_int failed_checks; /* in the running test (any thread may report) */
static jmp_buf end_test;
static pthread_t runner;

void kiln_tsan_register(const char *suite, const char *name, kiln_tsan_test_fn fn) {
  if (n_tests == MAX_TESTS) {
    fprintf(stderr, "tsan runner: more than %d tests\n", MAX_TESTS);
    exit(2);
  }
  tests[n_tests].suite = suite;
  tests[n_tests].name = name;
  tests[n_tests++].fn = fn;
}

void kiln_tsan_fail(const char *file, int line, bool fatal, const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[----] %s:%d: %s failed: %s\n[----]  ", file, line, fatal ? "Assertion" : "Expectation", cond);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  failed_checks++;
  if (!fatal) return;
  if (!pthread_equal(pthread_self(), runner)) abort(); /* cannot end the test from another thread */
  longjmp(end_test, 1);
}

int main(void) {
  runner = pthread_self();
  static int passed, failed, i; /* static: kept across the longjmp that ends a test */
  for (i = 0; i < n_tests; i++) {
    failed_checks = 0;
    if (!setjmp(end_test)) tests[i].fn();
    bool ok = failed_checks == 0;
    printf("[%s] %s::%s\n", ok ? "PASS" : "FAIL", tests[i].suite, tests[i].name);
    fflush(stdout);
    ok ? passed++ : failed++;
  }
  printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: 0\n", n_tests, passed, failed);
  return failed ? 1 : 0;
}
