#!/usr/bin/env bash
# run_tsan.sh - the body of `make test-tsan`: the concurrency tests (one executable run
# from many threads, the thread pool, GEMM threading) built with ThreadSanitizer
# (-DKILN_TSAN=ON), each run to its end; any TSan report fails its test binary.
#
#   tests/run_tsan.sh BUILDDIR TEST...
#
# TSan stops a binary at its first report (halt_on_error, exit status 66) and prints the
# report with both stacks. tests/tsan/suppressions.txt lists what is suppressed, each with
# the reason it is benign. Last line: tests: N passed, N failed, 0 skipped.
set -u
if [ $# -lt 2 ]; then
  echo "usage: tests/run_tsan.sh BUILDDIR TEST..." >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$1
shift
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$BUILD/cache}
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$ROOT/tests/tsan/suppressions.txt ${TSAN_OPTIONS:-}"
PASSED=0
FAILED=0
for t in "$@"; do
  echo "== tsan: $t"
  out=$(timeout --kill-after=10 "${KILN_TEST_TIMEOUT:-1200}" "$BUILD/tests/$t" 2>&1)
  rc=$?
  echo "$out"
  syn=$(grep -a 'Synthesis: Tested:' <<<"$out" | tail -1)
  p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn")
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn")
  p=${p:-0}
  f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    if [ $rc -eq 66 ]; then echo ">> $t: ThreadSanitizer reported (above)"; else echo ">> $t: exit status $rc"; fi
  fi
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
done
echo "tests: $PASSED passed, $FAILED failed, 0 skipped"
[ "$FAILED" -eq 0 ]
