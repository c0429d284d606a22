/* test_gen_models.h - the ONNX models unit tests load, written at test time by a generator
 * script of tests/unit/data/ (python3 + onnx) into a fresh temporary folder, gen_dir,
 * which the suite's .fini (gen_cleanup) removes. Without python3 and the onnx and numpy
 * packages the test that needs the models is skipped, saying why. */
#ifndef KILN_TEST_GEN_MODELS_H
#define KILN_TEST_GEN_MODELS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char gen_dir[64];

static void gen_cleanup(void) {
  if (!gen_dir[0]) return;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", gen_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", gen_dir);
}

/* Makes gen_dir (/tmp/kiln_TAG_XXXXXX) and runs `SCRIPT gen_dir ARG` there for each ARG
 * of args (NULL-terminated), or `SCRIPT gen_dir` once when args is NULL. */
static void gen_models(const char *tag, const char *script, const char *const *args) {
  if (system("python3 -c 'import onnx, numpy' >/dev/null 2>&1") != 0)
    cr_skip_test("python3 with the onnx and numpy packages is not available");
  snprintf(gen_dir, sizeof gen_dir, "/tmp/kiln_%s_XXXXXX", tag);
  cr_assert(mkdtemp(gen_dir), "mkdtemp failed");
  do {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/unit/data/%s' '%s' %s", KILN_SOURCE_DIR, script, gen_dir,
             args && *args ? *args : "");
    cr_assert_eq(system(cmd), 0, "model generator failed: %s", cmd);
  } while (args && *args && *++args);
}

#endif
