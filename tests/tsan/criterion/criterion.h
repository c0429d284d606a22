/* criterion.h - a stand-in for Criterion's header in ThreadSanitizer builds (make
 * test-tsan). Criterion itself cannot run under TSan: it aborts at start-up with "Could not
 * initialize inheritable arena" (Criterion issue #274). The TSan build compiles the same
 * test files against this header instead: Test() registers a function that runner.c calls
 * in order, in one process; the cr_ macros the TSan tests use (cr_assert, cr_assert_eq,
 * cr_expect, cr_expect_eq) check and report like Criterion's (a failed cr_assert ends its
 * test). */
#ifndef KILN_TSAN_CRITERION_H
#define KILN_TSAN_CRITERION_H

#include <stdbool.h>

typedef void (*kiln_tsan_test_fn)(void);
void kiln_tsan_register(const char *suite, const char *name, kiln_tsan_test_fn fn);
/* Records a failed check; fatal ends the current test (from its own thread only). */
void kiln_tsan_fail(const char *file, int line, bool fatal, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define Test(suite, name)                                                                     \
  static void suite##_##name(void);                                                           \
  __attribute__((constructor)) static void kiln_tsan_reg_##suite##_##name(void) {             \
    kiln_tsan_register(#suite, #name, suite##_##name);                                        \
  }                                                                                           \
  static void suite##_##name(void)

/* The message is optional, as in Criterion: " " glues onto a literal format or stands alone. */
#define KILN_TSAN_CHECK(fatal, cond, ...)                                                     \
  do {                                                                                        \
    if (!(cond)) kiln_tsan_fail(__FILE__, __LINE__, fatal, #cond, " " __VA_ARGS__);             \
  } while (0)
#define cr_assert(cond, ...) KILN_TSAN_CHECK(true, cond, __VA_ARGS__)
#define cr_expect(cond, ...) KILN_TSAN_CHECK(false, cond, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) KILN_TSAN_CHECK(true, (a) == (b), __VA_ARGS__)
#define cr_expect_eq(a, b, ...) KILN_TSAN_CHECK(false, (a) == (b), __VA_ARGS__)

#endif
