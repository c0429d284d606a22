#!/usr/bin/env bash
# run.sh - first benchmark: each example model at each fusion level through `kiln bench`
# (median of 20 runs after 3 warm-ups), written as JSON lines to bench/results/latest.jsonl
# and as a table. Timings on a shared machine are noisy: compare within one run.
set -euo pipefail
BUILD=${1:-build}
MODELS=$BUILD/models
PY=${PYTHON:-python3}
mkdir -p bench/results
if [ ! -f "$MODELS/cnn.onnx" ]; then $PY examples/gen_models.py "$MODELS" >/dev/null; fi
out=bench/results/latest.jsonl
: > "$out"
for m in mlp cnn mobilenet_block transformer; do
  for f in none elementwise full; do
    "$BUILD/kiln" bench "$MODELS/$m.onnx" --fusion $f --runs 20 --json >> "$out"
  done
done
$PY - "$out" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'model':<28}{'fusion':<13}{'kernels':>8}{'MB moved':>10}{'arena MB':>10}{'median ms':>11}")
for r in rows:
    name = r['model'].rsplit('/', 1)[-1]
    print(f"{name:<28}{r['fusion']:<13}{r['kernels']:>8}{r['bytes_moved']/1e6:>10.2f}{r['arena_bytes']/1e6:>10.2f}{r['median_ms']:>11.3f}")
PYEOF
