#!/usr/bin/env bash
# run.sh - Kiln as an installed library, used the way a program outside the tree uses it
# (a suite of `make test`):
#
#   tests/install/run.sh BUILDDIR
#
# Installs BUILDDIR into a fresh prefix under BUILDDIR/install-test, then checks:
#   - libkiln.so exports exactly the functions kiln.h declares;
#   - kiln.h compiles as C11 with -Wall -Wextra -Werror and as C++;
#   - a program built with `pkg-config --cflags --libs kiln`, and one built by CMake with
#     find_package(Kiln) (tests/install/consumer.c), JIT-runs and AOT-exports a model;
#   - kiln.h's worked example, cut out of the header comment, compiles and prints its
#     documented result;
#   - the prefix moved elsewhere still works (nothing points back into the build tree):
#     pkg-config, and the installed `kiln compile` (it finds its AOT runtime relative to
#     itself) and `kiln run` of the library it wrote;
#   - without a C compiler, or without the AOT runtime beside it, kiln compile says so.
# Last line: install: N passed, N failed.
set -u
if [ $# -ne 1 ]; then
  echo "usage: tests/install/run.sh BUILDDIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$1" && pwd)
T=$BUILD/install-test
CC=${CC:-cc}
rm -rf "$T"
mkdir -p "$T/out"
PASSED=0
FAILED=0

# check NAME COMMAND...: runs the command (output in $T/NAME.log), counts it.
check() {
  local name=$1
  shift
  if "$@" >"$T/$name.log" 2>&1; then
    echo "ok      $name"
    PASSED=$((PASSED + 1))
  else
    echo "FAILED  $name (exit status $?):"
    sed 's/^/    /' "$T/$name.log" | tail -25
    FAILED=$((FAILED + 1))
  fi
}

P=$T/prefix
check install cmake --install "$BUILD" --prefix "$P"

exports_match_header() {
  local lib
  lib=$(ls "$P"/lib*/libkiln.so | head -1)
  nm -D --defined-only "$lib" | awk '{print $3}' | sort >"$T/exported.txt"
  sed -n 's/^    \(kiln_[a-z0-9_]*\);$/\1/p' "$BUILD/gen/kiln.map" | sort >"$T/declared.txt"
  diff "$T/declared.txt" "$T/exported.txt" && [ -s "$T/declared.txt" ]
}
check exports-are-kiln.h exports_match_header

header_compiles() {
  printf '#include <kiln.h>\nint main(void) { return kiln_status_name(KILN_OK) == 0; }\n' >"$T/h.c"
  $CC -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$P/include" "$T/h.c" &&
    c++ -x c++ -Wall -Wextra -Werror -fsyntax-only -I"$P/include" "$T/h.c"
}
check header-c11-and-c++ header_compiles

export PKG_CONFIG_PATH="$P/lib/pkgconfig"
pkgconfig_consumer() {
  # shellcheck disable=SC2046 # pkg-config's words are separate flags
  $CC -std=c11 -Wall -Wextra -Werror "$ROOT/tests/install/consumer.c" $(pkg-config --cflags --libs kiln) -lm \
    -o "$T/consumer_pc" && LD_LIBRARY_PATH="$P/lib" "$T/consumer_pc" "$T/out"
}
check pkg-config-program pkgconfig_consumer

cmake_consumer() {
  cmake -S "$ROOT/tests/install" -B "$T/cmake-build" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$T/cmake-build" && "$T/cmake-build/consumer" "$T/out"
}
check find_package-program cmake_consumer

# The worked example: the lines from "WORKED EXAMPLE" to the blank line before "Loading
# ONNX instead", without the comment's " * " margin, as the body of main.
worked_example() {
  {
    printf '#include <kiln.h>\n#include <stdio.h>\nint main(void) {\n'
    sed -n '/WORKED EXAMPLE/,/Loading ONNX instead/p' "$P/include/kiln.h" | sed -n '/^ \*   /s/^ \*   //p'
    printf '  return 0;\n}\n'
  } >"$T/example.c"
  # shellcheck disable=SC2046
  $CC -std=c11 -Wall -Wextra -Werror "$T/example.c" $(pkg-config --cflags --libs kiln) -o "$T/example" &&
    LD_LIBRARY_PATH="$P/lib" KILN_CACHE_DIR= "$T/example" >"$T/example.out" && cat "$T/example.out" &&
    grep -qx 'y = 0.5 0' "$T/example.out"
}
check kiln.h-worked-example worked_example

# Move the prefix: what it holds must find itself from where it is.
P2=$T/moved
mv "$P" "$P2"
export PKG_CONFIG_PATH="$P2/lib/pkgconfig"
cat >"$T/tiny.kir" <<'EOF'
graph "tiny" {
  %0 = input f32[2,3] "x"
  %1 = exp f32[2,3] (%0) "e"
  %2 = add f32[2,3] (%1, %0) "y"
  output %2 "y"
}
EOF
moved_prefix() {
  [ "$(pkg-config --variable=libdir kiln)" -ef "$P2/lib" ] &&
    "$P2/bin/kiln" compile "$T/tiny.kir" -o "$T/out/libtiny.so" --header "$T/out/tiny.h" &&
    grep -q 'tiny_describe' "$T/out/tiny.h" &&
    "$P2/bin/kiln" run "$T/out/libtiny.so" --random-inputs
}
check moved-prefix-kiln-compile moved_prefix

no_compiler() {
  ! CC=/no/such/cc "$P2/bin/kiln" compile "$T/tiny.kir" -o "$T/out/x.so" 2>"$T/nocc.err" &&
    grep -q "no C compiler to link the model library: '/no/such/cc' is not an executable file" "$T/nocc.err" &&
    ! env -u CC PATH=/nonexistent "$P2/bin/kiln" compile "$T/tiny.kir" -o "$T/out/x.so" 2>"$T/nocc2.err" &&
    grep -q "'cc' is not on PATH" "$T/nocc2.err"
}
check no-c-compiler-is-named no_compiler

no_runtime() {
  mkdir -p "$T/lonely/bin" && cp "$P2/bin/kiln" "$T/lonely/bin/" &&
    ! env -u KILN_AOTRT "$T/lonely/bin/kiln" compile "$T/tiny.kir" -o "$T/out/y.so" 2>"$T/nort.err" &&
    grep -q "cannot find Kiln's AOT runtime (libkiln_aotrt.a" "$T/nort.err" &&
    KILN_AOTRT="$P2/lib/kiln/libkiln_aotrt.a" "$T/lonely/bin/kiln" compile "$T/tiny.kir" -o "$T/out/y.so"
}
check missing-aot-runtime-is-named no_runtime

echo "install: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
