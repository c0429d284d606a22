#!/usr/bin/env bash
# demo.sh - what `make run` shows: Kiln's main job on a bundled example. Generates the
# example models, compiles the ResNet-style CNN ahead of time into a shared library with
# a C header, builds examples/aot_demo.c against that header, runs it, then runs the same
# model through the JIT and from Python (the kiln package in python/, over libkiln.so)
# and checks that all three agree with each other and with onnxruntime.
set -euo pipefail
BUILD=${1:-build}
KILN=$BUILD/kiln
OUT=$BUILD/demo
MODELS=$BUILD/models
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$MODELS"

if [ ! -f "$MODELS/cnn.onnx" ] || [ examples/gen_models.py -nt "$MODELS/cnn.onnx" ]; then
  echo "== generating example models into $MODELS"
  $PY examples/gen_models.py "$MODELS" >/dev/null
fi

echo "== kiln compile: cnn.onnx -> $OUT/libcnn.so + $OUT/cnn.h (AOT, LLVM)"
$KILN compile "$MODELS/cnn.onnx" -o "$OUT/libcnn.so" --header "$OUT/cnn.h" --name cnn

echo "== building examples/aot_demo.c against the generated header"
${CC:-cc} -O2 -Wall -I"$OUT" examples/aot_demo.c -L"$OUT" -lcnn -Wl,-rpath,"$(cd "$OUT" && pwd)" -o "$OUT/aot_demo"

$PY -c "import numpy as np, sys; np.load(sys.argv[1]).astype('<f4').tofile(sys.argv[2])" \
  "$MODELS/cnn.input_0.npy" "$OUT/input.f32"
echo "== running the AOT program"
"$OUT/aot_demo" "$OUT/input.f32" "$OUT/output_aot.f32" 50

echo "== the same model through the JIT (kiln run)"
$KILN run "$MODELS/cnn.onnx" --input "$MODELS/cnn.input_0.npy" --output-dir "$OUT/jit"
$KILN bench "$MODELS/cnn.onnx" --runs 20

# The package from the checkout (no install): `pip install ./python` puts the same package,
# with libkiln.so bundled, into site-packages, and then plain `python3 -c` does this.
echo "== the same model from Python: kiln.compile + a numpy call (python/kiln over $BUILD/lib/libkiln.so)"
CODE="import kiln, numpy as np; m = kiln.compile('$MODELS/cnn.onnx'); y = m(np.load('$MODELS/cnn.input_0.npy')); print(y)"
echo "\$ python3 -c \"$CODE\""
PYTHONPATH=python KILN_LIBRARY="$BUILD/lib/libkiln.so" $PY -c "$CODE; np.save('$OUT/py_output.npy', y)"

$PY - "$OUT/output_aot.f32" "$OUT/jit/output_0.npy" "$MODELS/cnn.output_0.npy" "$OUT/py_output.npy" <<'PYEOF'
import sys, numpy as np
aot = np.fromfile(sys.argv[1], dtype='<f4')
jit = np.load(sys.argv[2]).reshape(-1)
ort = np.load(sys.argv[3]).reshape(-1)
py = np.load(sys.argv[4]).reshape(-1)
d_aj = float(np.max(np.abs(aot - jit)))
d_ao = float(np.max(np.abs(aot - ort)))
d_pj = float(np.max(np.abs(py - jit)))
print(f"== AOT vs JIT max difference {d_aj:.3g}; Python vs JIT {d_pj:.3g}; AOT vs onnxruntime {d_ao:.3g}")
scale = max(1.0, float(np.max(np.abs(jit))))
ok = d_aj <= 1e-4 * scale and d_pj <= 1e-4 * scale and d_ao <= 1e-3 * max(1.0, float(np.max(np.abs(ort))))
print("== AOT, JIT and Python agree" if ok else "== MISMATCH")
sys.exit(0 if ok else 1)
PYEOF
