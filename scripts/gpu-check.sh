#!/usr/bin/env bash
# gpu-check.sh - the one script run on a machine with an NVIDIA GPU: runs the CUDA unit
# tests for real (kernels launched, not just compiled), runs every example model with
# `kiln run --target cuda` and compares with onnxruntime on the same inputs, and times
# `kiln bench --target cuda`. Prints PASS/FAIL per step and ends with
# "gpu-check: N passed, N failed". Exits non-zero when anything failed.
#
# Run from anywhere; it works in the repo root. Expects (carried from the build machine):
#   build-gpu/          a build of this tree (-DKILN_WITH_LLVM=OFF -DKILN_WITH_OPENBLAS=OFF)
#   .gpu/lib/           shared libraries the build needs that the GPU machine lacks
#                       (libprotobuf-c.so.1; optionally libnvrtc*.so.13)
#   examples/models/    *.onnx (from examples/gen_models.py), with M.input_K.npy if made
# Environment: BUILD (default build-gpu), MODELS (default examples/models), WORK (scratch dir, default /tmp/kiln-gpu-check),
# OUT (if set, the log is also written to $OUT/gpu-check.log).
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build-gpu}
TARGET=${TARGET:-cuda}   # cpu: dry-run this script on a machine without a GPU
WORK=${WORK:-/tmp/kiln-gpu-check}
rm -rf "$WORK"
mkdir -p "$WORK"
LOG="$WORK/gpu-check.log"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then LOG="$OUT/gpu-check.log"; fi
exec > >(tee "$LOG") 2>&1

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS  $*"; }
ko() { failed=$((failed + 1)); echo "FAIL  $*"; }

# ---------------------------------------------------------------- libraries
# The build dlopens libcuda.so.1 (driver), libnvrtc and libcublas. Prefer the toolkit's
# lib64; else the pip wheels PyTorch brought (nvidia/*/lib).
libdirs="$PWD/.gpu/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && libdirs="$libdirs:$d"
done
pip_dirs=$(timeout 20 python3 - <<'EOF' 2>/dev/null
import glob, os, site
seen = []
roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
for r in roots:
    for pat in ("nvidia/**/libnvrtc.so*", "nvidia/**/libcublas.so*", "nvidia/**/libcublasLt.so*"):
        for f in glob.glob(os.path.join(r, pat), recursive=True):
            d = os.path.dirname(f)
            if d not in seen:
                seen.append(d)
print(":".join(seen))
EOF
)
[ -n "$pip_dirs" ] && libdirs="$libdirs:$pip_dirs"
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
export KILN_CACHE_DIR="$WORK/cache"
echo "== machine"
nvidia-smi -L || echo "(nvidia-smi failed)"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcuda.so.1 libnvrtc.so libnvrtc.so.13 libnvrtc.so.12 libcublas.so.13 libcublas.so.12; do
  python3 -c "import ctypes,sys; ctypes.CDLL(sys.argv[1])" "$lib" 2>/dev/null && echo "  loads: $lib"
done

if [ ! -d "$BUILD" ]; then
  ko "no build directory $BUILD (build with -DKILN_WITH_LLVM=OFF -DKILN_WITH_OPENBLAS=OFF and carry it)"
  echo "gpu-check: $passed passed, $failed failed"
  exit 1
fi

# ---------------------------------------------------------------- unit tests, for real
echo "== CUDA unit tests"
found=0
for t in "$BUILD"/tests/test_cuda_*; do
  [ -x "$t" ] || continue
  found=1
  # KILN_REQUIRE_GPU: a test that finds no device fails instead of checking the error path
  tlog="$WORK/$(basename "$t").log"
  KILN_REQUIRE_GPU=1 timeout 120 "$t" -j4 >"$tlog" 2>&1
  rc=$?
  tail -25 "$tlog"
  if [ $rc -eq 0 ]; then ok "$(basename "$t")"; else ko "$(basename "$t") (exit $rc)"; fi
done
[ $found = 1 ] || ko "no $BUILD/tests/test_cuda_* binaries"

# ---------------------------------------------------------------- models vs onnxruntime
KILN="$BUILD/kiln"
MODELS=${MODELS:-examples/models}
models=("$MODELS"/*.onnx)
# The PyTorch-exported architectures (weights stripped in the repository): refill them
# here with random weights of the recorded statistics, as make test does.
if [ -d tests/models/torch ] && [ -z "${NO_TORCH_MODELS:-}" ]; then
  mkdir -p "$WORK/torch_models"
  for t in tests/models/torch/*.onnx; do
    if timeout 120 python3 tests/models/torch_refill.py "$t" "$WORK/torch_models/$(basename "$t")"; then
      models+=("$WORK/torch_models/$(basename "$t")")
    else
      ko "$(basename "$t" .onnx): torch_refill.py failed"
    fi
  done
fi
echo "== models (${#models[@]})"
if [ ! -x "$KILN" ]; then
  ko "no $KILN"
elif [ ! -e "${models[0]}" ]; then
  ko "no $MODELS/*.onnx (run examples/gen_models.py examples/models and carry it)"
else
  for m in "${models[@]}"; do
    name=$(basename "$m" .onnx)
    dir="$WORK/$name"
    mkdir -p "$dir/kiln"
    # inputs: the generator's M.input_K.npy when present, else seeded numpy values;
    # the reference: onnxruntime on this machine (M.output_K.npy if it cannot run)
    if ! timeout 60 python3 - "$m" "$dir" <<'EOF'; then
import glob, os, sys
import numpy as np
model, out = sys.argv[1], sys.argv[2]
base = model[:-len(".onnx")]
try:
    import onnxruntime as ort
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
except Exception as e:
    sess = None
    print("  onnxruntime unavailable (%s): using the stored outputs" % e)
rng = np.random.default_rng(1)
types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
feeds = {}
n_in = len(sess.get_inputs()) if sess else len(glob.glob(base + ".input_*.npy"))
for k in range(n_in):
    path = "%s.input_%d.npy" % (base, k)
    if os.path.exists(path):
        x = np.load(path)
    else:
        i = sess.get_inputs()[k]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = types.get(i.type, np.float32)
        if np.issubdtype(dt, np.floating):
            x = rng.uniform(-1, 1, shape).astype(dt)
        elif dt == np.bool_:
            x = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            x = rng.integers(0, 4, shape).astype(dt)
    np.save(os.path.join(out, "input_%d.npy" % k), x)
    if sess:
        feeds[sess.get_inputs()[k].name] = x
if sess:
    ys = sess.run(None, feeds)
else:
    ys = [np.load(p) for p in sorted(glob.glob(base + ".output_*.npy"))]
for k, y in enumerate(ys):
    np.save(os.path.join(out, "ref_%d.npy" % k), np.asarray(y))
print("  %s: %d inputs, %d outputs" % (os.path.basename(model), n_in, len(ys)))
EOF
      ko "$name: preparing inputs/reference failed"
      continue
    fi
    args=()
    for f in $(ls "$dir"/input_*.npy 2>/dev/null | sort -V); do args+=(--input "$f"); done
    if ! timeout 300 "$KILN" run "$m" --target "$TARGET" "${args[@]}" --output-dir "$dir/kiln"; then
      ko "$name: kiln run --target $TARGET failed"
      continue
    fi
    if timeout 30 python3 - "$dir" <<'EOF'; then
import glob, os, sys
import numpy as np
d = sys.argv[1]
refs = sorted(glob.glob(os.path.join(d, "ref_*.npy")), key=lambda p: int(p.rsplit("_", 1)[1][:-4]))
bad = 0
for k, rp in enumerate(refs):
    r = np.load(rp)
    kp = os.path.join(d, "kiln", "output_%d.npy" % k)
    if not os.path.exists(kp):
        print("  output %d: missing %s" % (k, kp)); bad += 1; continue
    y = np.load(kp)
    if y.shape != r.shape:
        print("  output %d: shape %s, onnxruntime %s" % (k, y.shape, r.shape)); bad += 1; continue
    if r.dtype.kind in "fc":
        r64, y64 = r.astype(np.float64), y.astype(np.float64)
        err = float(np.max(np.abs(y64 - r64))) if r.size else 0.0
        scale = float(np.max(np.abs(r64))) if r.size else 0.0
        good = np.allclose(y64, r64, rtol=1e-3, atol=1e-4 * max(1.0, scale), equal_nan=True)
        print("  output %d: max abs error %.3g (max |ref| %.3g) %s" % (k, err, scale, "ok" if good else "MISMATCH"))
    else:
        good = np.array_equal(y, r)
        print("  output %d: %d of %d elements differ" % (k, int(np.sum(y != r)), r.size))
    bad += 0 if good else 1
sys.exit(1 if bad else 0)
EOF
      ok "$name: matches onnxruntime"
    else
      ko "$name: differs from onnxruntime"
    fi
  done

  # ---------------------------------------------------------------- timing
  echo "== bench (--target $TARGET --runs 20)"
  if "$KILN" 2>&1 | grep -q "bench"; then
    for m in "$MODELS"/*.onnx; do   # the small example models: NVRTC time stays short
      if timeout 300 "$KILN" bench "$m" --target "$TARGET" --runs 20; then
        ok "bench $(basename "$m" .onnx)"
      else
        ko "bench $(basename "$m" .onnx)"
      fi
    done
  else
    echo "  (kiln has no bench command: skipped)"
  fi
fi

echo "gpu-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
