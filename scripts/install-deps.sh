#!/usr/bin/env bash
# install-deps.sh - installs what Kiln needs and is missing: Debian packages (apt) and
# Python packages (pip). Quiet and quick when everything is already there.
set -euo pipefail

APT_PKGS="cmake make gcc g++ pkg-config llvm-19-dev llvm-19-tools libopenblas-dev libcriterion-dev \
protobuf-c-compiler libprotobuf-c-dev libonnx-dev zlib1g-dev libzstd-dev python3 python3-pip"
PIP_PKGS="onnx==1.22.0 onnxruntime numpy pytest"

missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install-deps: apt packages missing:$missing"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY - <<'PYEOF' 2>/dev/null
import onnx, onnxruntime, numpy, pytest
assert onnx.__version__ == "1.22.0", onnx.__version__
PYEOF
then
  echo "install-deps: installing Python packages: $PIP_PKGS"
  $PY -m pip install -q $PIP_PKGS 2>/dev/null || $PY -m pip install -q --break-system-packages $PIP_PKGS
fi
