#!/usr/bin/env bash
# run_all.sh - the body of `make test`: every test suite of Kiln, one after the other.
#
#   tests/run_all.sh BUILDDIR
#
# Suites: each Criterion unit-test binary BUILDDIR/tests/test_*, the lit/FileCheck tests
# (tests/lit), the example models (examples/gen_models.py into BUILDDIR/models, then
# tests/models/check_models.py against ONNX Runtime), and the PyTorch-exported
# architectures of tests/models/torch (weights refilled by torch_refill.py, then the same
# checks), the Python package's pytest tests (python/tests), issue 3's fusion targets
# (tests/models/check_fusion_targets.py --assert: kernel counts and arena size, not
# timing), the installed library (tests/install: programs built against an installed
# prefix), and the structure rules (tests/structure/check_structure.py). A failing suite
# does not stop the run. Individual tests are counted where the suite's output says how
# many ran; a suite that cannot run at all (missing tool, crash, timeout, unparsable
# output) counts as one failed test, never as a silent skip. The last line is always
#   tests: N passed, N failed, N skipped
# and the exit status is 1 if anything failed.
#
# Environment: KILN_TEST_JOBS (Criterion --jobs, default 2), KILN_TEST_TIMEOUT (seconds
# per suite, default 900), PYTHON (default python3), LIT (path to lit.py).
set -u

if [ $# -ne 1 ]; then
  echo "usage: tests/run_all.sh BUILDDIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "run_all.sh: no build directory $1" >&2; exit 2; }
cd "$ROOT"

PYTHON=${PYTHON:-python3}
JOBS=${KILN_TEST_JOBS:-2}
TIMEOUT=${KILN_TEST_TIMEOUT:-900}
LIT=${LIT:-/usr/lib/llvm-19/build/utils/lit/lit.py}
# Compiled models go to a cache inside the build tree, not the user's home.
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-$BUILD/cache}

PASSED=0
FAILED=0
SKIPPED=0
SUMMARY=()
LOG=$(mktemp -d "${TMPDIR:-/tmp}/kiln-tests.XXXXXX")
trap 'rm -rf "$LOG"' EXIT

header() {
  echo
  echo "======================================================================"
  echo "== $1"
  echo "======================================================================"
}

# record SUITE PASSED FAILED SKIPPED NOTE
record() {
  PASSED=$((PASSED + $2))
  FAILED=$((FAILED + $3))
  SKIPPED=$((SKIPPED + $4))
  local status=ok
  [ "$3" -gt 0 ] && status=FAILED
  SUMMARY+=("$(printf '%-8s %-34s %5d passed %5d failed %5d skipped  %s' "$status" "$1" "$2" "$3" "$4" "${5:-}")")
}

# Runs a command with the suite timeout, its output both shown and kept in $LOG/out.
# Returns the command's exit status (124 on timeout).
run_logged() {
  timeout --kill-after=10 "$TIMEOUT" "$@" >"$LOG/out" 2>&1
  local rc=$?
  cat "$LOG/out"
  return $rc
}

why_failed() { # exit status -> words
  case $1 in
    124 | 137) echo "timed out after ${TIMEOUT}s" ;;
    126 | 127) echo "could not be executed (status $1)" ;;
    *) if [ "$1" -gt 128 ]; then echo "killed by signal $(($1 - 128))"; else echo "exit status $1"; fi ;;
  esac
}

# ------------------------------------------------------------------ Criterion unit tests
unit_suite() {
  local bin=$1 name
  name=$(basename "$bin")
  header "unit: $name"
  run_logged "$bin" --jobs "$JOBS" --timeout 120 --color=never
  local rc=$?
  local syn
  syn=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG/out" | grep -a 'Synthesis: Tested:' | tail -1)
  if [ -z "$syn" ]; then
    echo ">> $name produced no Criterion synthesis line: $(why_failed $rc)"
    record "unit/$name" 0 1 0 "no synthesis ($(why_failed $rc))"
    return
  fi
  local tested passing failing listed skipped
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$syn")
  passing=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn")
  failing=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn")
  # Criterion leaves skipped and disabled tests out of "Tested": count them from --list.
  listed=$("$bin" --list 2>/dev/null | sed -n 's/^.*: \([0-9]*\) tests\?$/\1/p' | awk '{s += $1} END {print s + 0}')
  skipped=$((listed > tested ? listed - tested : 0))
  # A non-zero exit with every test passing (e.g. a crash at teardown) still fails.
  if [ $rc -ne 0 ] && [ "$failing" -eq 0 ]; then
    failing=1
    echo ">> $name: all tests passed but the binary $(why_failed $rc)"
  fi
  record "unit/$name" "$passing" "$failing" "$skipped"
}

shopt -s nullglob
UNIT_BINS=()
for f in "$BUILD"/tests/test_*; do
  [ -f "$f" ] && [ -x "$f" ] && UNIT_BINS+=("$f")
done
if [ ${#UNIT_BINS[@]} -eq 0 ]; then
  header "unit"
  echo ">> no Criterion binaries in $BUILD/tests (is libcriterion-dev installed? did the build run?)"
  record "unit" 0 1 0 "no test binaries"
fi
for bin in "${UNIT_BINS[@]}"; do
  unit_suite "$bin"
done

# ------------------------------------------------------------------ lit / FileCheck
header "lit: tests/lit"
if [ ! -f "$LIT" ]; then
  echo ">> lit not found at $LIT (install llvm-19-tools, or set LIT=)"
  record "lit" 0 1 0 "lit missing"
else
  run_logged "$PYTHON" "$LIT" -sv --no-progress-bar tests/lit --param "kiln_build=$BUILD"
  rc=$?
  out=$(cat "$LOG/out")
  count() { # the number after "  LABEL:" in lit's summary, 0 when absent
    sed -n "s/^ *$1: *\([0-9][0-9]*\).*/\1/p" <<<"$out" | tail -1 | awk '{n = $1} END {print n + 0}'
  }
  p=$(($(count Passed) + $(count "Expectedly Failed")))
  f=$(($(count Failed) + $(count "Unexpectedly Passed") + $(count "Timed Out") + $(count Unresolved)))
  s=$(($(count Unsupported) + $(count Skipped) + $(count Excluded)))
  if [ $((p + f + s)) -eq 0 ] || { [ $rc -ne 0 ] && [ $f -eq 0 ]; }; then
    echo ">> lit did not report results: $(why_failed $rc)"
    f=$((f + 1))
  fi
  record "lit" "$p" "$f" "$s"
fi

# ------------------------------------------------------------------ example models
header "models: examples/gen_models.py -> $BUILD/models"
MODELS=$BUILD/models
STAMP=$MODELS/.generated
models_ok=1
if [ ! -f "$STAMP" ] || [ examples/gen_models.py -nt "$STAMP" ]; then
  rm -rf "$MODELS"
  if run_logged "$PYTHON" examples/gen_models.py "$MODELS"; then
    touch "$STAMP"
  else
    rc=$?
    echo ">> gen_models.py failed: $(why_failed $rc)"
    record "models/generate" 0 1 0 "gen_models.py $(why_failed $rc)"
    models_ok=0
  fi
else
  echo "up to date (delete $STAMP to regenerate)"
fi

# Runs tests/models/check_models.py over MODELDIR and records it as suite NAME.
model_suite() {
  local name=$1 dir=$2
  header "$name: tests/models/check_models.py $dir"
  run_logged "$PYTHON" tests/models/check_models.py "$BUILD" "$dir"
  local rc=$?
  local line
  line=$(grep -a '^models: [0-9]* passed, [0-9]* failed' "$LOG/out" | tail -1)
  if [ -z "$line" ]; then
    echo ">> check_models.py printed no summary: $(why_failed $rc)"
    record "$name" 0 1 0 "no summary ($(why_failed $rc))"
  else
    local p f s
    p=$(sed -n 's/^models: \([0-9]*\) passed.*/\1/p' <<<"$line")
    f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
    s=$(sed -n 's/.* \([0-9]*\) skipped.*/\1/p' <<<"$line")
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    record "$name" "$p" "$f" "${s:-0}"
  fi
}

[ $models_ok -eq 1 ] && model_suite models "$MODELS"

# ------------------------------------------------------------------ PyTorch-exported models
# tests/models/torch/*.onnx are graphs exported by PyTorch (tests/models/torch_export.py)
# with their weights stripped; torch_refill.py gives them random weights of the recorded
# statistics and onnxruntime's outputs.
header "torch models: tests/models/torch_refill.py -> $BUILD/torch_models"
TORCH=$BUILD/torch_models
TSTAMP=$TORCH/.generated
torch_ok=1
if [ ! -f "$TSTAMP" ] || [ tests/models/torch_refill.py -nt "$TSTAMP" ] || [ -n "$(find tests/models/torch -newer "$TSTAMP" -name '*.onnx')" ]; then
  rm -rf "$TORCH"
  mkdir -p "$TORCH"
  for m in tests/models/torch/*.onnx; do
    if ! run_logged "$PYTHON" tests/models/torch_refill.py "$m" "$TORCH/$(basename "$m")"; then
      echo ">> torch_refill.py $m failed"
      record "torch-models/refill" 0 1 0 "torch_refill.py $m"
      torch_ok=0
    fi
  done
  [ $torch_ok -eq 1 ] && touch "$TSTAMP"
else
  echo "up to date (delete $TSTAMP to regenerate)"
fi
[ $torch_ok -eq 1 ] && model_suite torch-models "$TORCH"

# ------------------------------------------------------------------ Python package
# python/tests (pytest) on the package in python/kiln and this build's libkiln.so, through
# PYTHONPATH and KILN_LIBRARY (nothing installed): the API, the example models and the
# PyTorch exports above against onnxruntime, the installed package's layout, and a smoke
# set of ONNX's backend runner on kiln.backend (all of it: make conformance-py). Errors
# and unexpected passes count as failed, expected failures as skipped.
header "python: pytest python/tests"
if ! "$PYTHON" -c 'import pytest' 2>/dev/null; then
  echo ">> pytest is not installed for $PYTHON"
  record "python" 0 1 0 "pytest missing"
else
  KILN_BUILD_DIR=$BUILD KILN_LIBRARY=$BUILD/lib/libkiln.so PYTHONPATH=$ROOT/python \
    run_logged "$PYTHON" -m pytest -p no:cacheprovider -q -rfEs python/tests
  rc=$?
  line=$(grep -aE '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s' "$LOG/out" | tail -1)
  pyc() { # the count before WORD in pytest's summary line, 0 when absent
    sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1[,= ].*/\1/p; s/^\([0-9][0-9]*\) $1[,= ].*/\1/p" <<<"$line " | tail -1 | awk '{n = $1} END {print n + 0}'
  }
  p=$(pyc passed)
  f=$(($(pyc failed) + $(pyc errors) + $(pyc error) + $(pyc xpassed)))
  s=$(($(pyc skipped) + $(pyc xfailed)))
  if [ -z "$line" ] || { [ $rc -ne 0 ] && [ $f -eq 0 ]; }; then
    echo ">> pytest did not report results: $(why_failed $rc)"
    f=$((f + 1))
  fi
  record "python" "$p" "$f" "$s"
fi

# ------------------------------------------------------------------ fusion targets
# Issue 3's "done when" targets (kernel counts of bert_layer and resnet18, ResNet-50's
# arena; tests/models/check_fusion_targets.py), asserted: each met target counts as
# passed, each missed one as failed. The timing target is measured by bench/, not here.
# KILN_FUSION_ASSERT=0 turns them back into an informational report (missed = skipped).
FUSION_TARGETS_ASSERT=${KILN_FUSION_ASSERT:-1}
if [ "$FUSION_TARGETS_ASSERT" = 1 ]; then
  header "fusion targets: tests/models/check_fusion_targets.py --assert"
  run_logged "$PYTHON" tests/models/check_fusion_targets.py "$BUILD" --torch-models "$TORCH" --assert
else
  header "fusion targets (informational, not asserted): tests/models/check_fusion_targets.py"
  run_logged "$PYTHON" tests/models/check_fusion_targets.py "$BUILD" --torch-models "$TORCH"
fi
rc=$?
line=$(grep -a '^fusion-targets: [0-9]* met, [0-9]* missed' "$LOG/out" | tail -1)
if [ -z "$line" ] || [ $rc -eq 2 ] || { [ $rc -ne 0 ] && [ $rc -ne 1 ]; }; then
  echo ">> check_fusion_targets.py could not measure the targets: $(why_failed $rc)"
  record "fusion-targets" 0 1 0 "could not measure ($(why_failed $rc))"
else
  met=$(sed -n 's/^fusion-targets: \([0-9]*\) met.*/\1/p' <<<"$line")
  missed=$(sed -n 's/.* \([0-9]*\) missed.*/\1/p' <<<"$line")
  if [ "$FUSION_TARGETS_ASSERT" = 1 ]; then
    record "fusion-targets" "$met" "$missed" 0
  else
    record "fusion-targets" "$met" 0 "$missed" "informational: $missed of $((met + missed)) targets missed (not asserted)"
  fi
fi

# ------------------------------------------------------------------ installed library
# cmake --install into a fresh prefix under the build tree; programs built against it with
# pkg-config and with find_package(Kiln), kiln.h's worked example, the installed kiln tool
# from a moved prefix (tests/install/run.sh). Each check counts as one test.
header "install: tests/install/run.sh"
run_logged tests/install/run.sh "$BUILD"
rc=$?
line=$(grep -a '^install: [0-9]* passed, [0-9]* failed' "$LOG/out" | tail -1)
if [ -z "$line" ]; then
  echo ">> tests/install/run.sh printed no summary: $(why_failed $rc)"
  record "install" 0 1 0 "no summary ($(why_failed $rc))"
else
  p=$(sed -n 's/^install: \([0-9]*\) passed.*/\1/p' <<<"$line")
  f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
  [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
  record "install" "$p" "$f" 0
fi

# ------------------------------------------------------------------ structure
# The structure rules of STYLE.md and issue 10 (file and function sizes, no target tests
# in passes/, no circle of calls between a module's files; tests/structure), from the
# sources and the objects of this build.
header "structure: tests/structure/check_structure.py"
run_logged "$PYTHON" tests/structure/check_structure.py "$ROOT" "$BUILD"
rc=$?
line=$(grep -a '^structure: [0-9]* passed, [0-9]* failed' "$LOG/out" | tail -1)
if [ -z "$line" ] || { [ $rc -ne 0 ] && [ $rc -ne 1 ]; }; then
  record "structure" 0 1 0 "could not check ($(why_failed $rc))"
else
  record "structure" "$(sed -n 's/^structure: \([0-9]*\) passed.*/\1/p' <<<"$line")" \
    "$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")" 0
fi

# ------------------------------------------------------------------ summary
header "summary"
printf '%s\n' "${SUMMARY[@]}"
echo "tests: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
