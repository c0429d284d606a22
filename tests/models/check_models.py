#!/usr/bin/env python3
"""check_models.py - runs the example models through the kiln CLI and compares with ONNX Runtime.

Usage: check_models.py BUILDDIR MODELDIR [--only NAME[,NAME]] [--checks jit,aot,...] [--keep]

MODELDIR holds what examples/gen_models.py writes: M.onnx, M.input_K.npy and the reference
outputs M.output_K.npy (made by onnxruntime). Each model gets these checks:
  jit          kiln run M.onnx                          (fusion full, the default)
  fusion-none  kiln run M.onnx --fusion none
  fusion-elementwise  kiln run M.onnx --fusion elementwise
  aot          kiln compile M.onnx -o libM.so --header M.h, then kiln run libM.so
  cuda         kiln compile M.onnx --target cuda (NVRTC compiles every kernel; no GPU needed)
  cuda-run     kiln run M.onnx --target cuda (only where a GPU is present, or when asked for
               with --checks)
A check passes when every output has the reference's shape and
max|out - ref| <= 1e-3 * max|ref| (1e-3 of the output's scale; 1e-6 when it is all zeros). One line per check, then the closing line
`models: N passed, N failed, N skipped`; the exit status is 1 if anything failed.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ALL_CHECKS = ["jit", "fusion-none", "fusion-elementwise", "aot", "cuda", "cuda-run"]
GPU_CHECKS = {"cuda-run"}
TIMEOUT_S = 600


class CheckFailed(Exception):
    pass


def run(cmd, timeout=TIMEOUT_S):
    """Runs a kiln command; a non-zero exit raises CheckFailed carrying its stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"timed out after {timeout} s: {' '.join(cmd)}")
    except OSError as e:
        raise CheckFailed(f"cannot run {cmd[0]}: {e}")
    if p.returncode != 0:
        how = (f"killed by signal {-p.returncode}" if p.returncode < 0
               else f"exit status {p.returncode}")
        raise CheckFailed(f"{how}: {' '.join(cmd)}\n{p.stderr.rstrip() or p.stdout.rstrip()}")
    return p


def compare(outdir, refs):
    """Max abs error over all outputs, relative to the criterion; raises on a mismatch."""
    worst = 0.0
    for k, ref in enumerate(refs):
        path = os.path.join(outdir, f"output_{k}.npy")
        if not os.path.exists(path):
            raise CheckFailed(f"kiln wrote no {path}")
        out = np.load(path)
        if tuple(out.shape) != tuple(ref.shape):
            raise CheckFailed(f"output {k}: shape {list(out.shape)}, expected {list(ref.shape)}")
        if out.dtype != ref.dtype:
            raise CheckFailed(f"output {k}: dtype {out.dtype}, expected {ref.dtype}")
        out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
        if not np.all(np.isfinite(out64)):
            raise CheckFailed(f"output {k}: {int(np.sum(~np.isfinite(out64)))} non-finite values")
        err = float(np.max(np.abs(out64 - ref64))) if out.size else 0.0
        scale = float(np.max(np.abs(ref64))) if ref.size else 0.0
        tol = 1e-3 * scale if scale > 0 else 1e-6
        if err > tol:
            i = np.unravel_index(int(np.argmax(np.abs(out64 - ref64))), out.shape)
            raise CheckFailed(f"output {k}: max_err={err:.3g} > tol={tol:.3g} at index "
                              f"{list(map(int, i))} (got {out64[i]:.6g}, want {ref64[i]:.6g})")
        extra = os.path.join(outdir, f"output_{len(refs)}.npy")
        if os.path.exists(extra):
            raise CheckFailed(f"kiln wrote more outputs than the reference has ({extra})")
        worst = max(worst, err)
    return worst


def check(kiln, name, model, inputs, refs, which, tmp):
    """Runs one check; returns a string of details for the PASS line."""
    in_args = [a for x in inputs for a in ("--input", x)]
    outdir = os.path.join(tmp, f"{name}.{which}")
    os.makedirs(outdir, exist_ok=True)
    if which == "jit":
        run([kiln, "run", model, *in_args, "--output-dir", outdir])
    elif which.startswith("fusion-"):
        run([kiln, "run", model, *in_args, "--output-dir", outdir,
             "--fusion", which[len("fusion-"):]])
    elif which == "aot":
        so, header = os.path.join(tmp, f"lib{name}.so"), os.path.join(tmp, f"{name}.h")
        run([kiln, "compile", model, "-o", so, "--header", header])
        for f in (so, header):
            if not os.path.exists(f) or os.path.getsize(f) == 0:
                raise CheckFailed(f"kiln compile did not write {f}")
        run([kiln, "run", so, *in_args, "--output-dir", outdir])
    elif which == "cuda-run":
        run([kiln, "run", model, *in_args, "--output-dir", outdir, "--target", "cuda"])
    elif which == "cuda":
        run([kiln, "compile", model, "-o", os.path.join(tmp, f"{name}.cubin-check"),
             "--target", "cuda"])
        return ""
    else:
        raise ValueError(which)
    return f"max_err={compare(outdir, refs):.3g}"


def have_gpu():
    """True when nvidia-smi lists a GPU (then the CUDA kernels are also run, not only built)."""
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "GPU" in p.stdout


def backends(kiln):
    """The backends this kiln was built with, from `kiln --version`."""
    try:
        p = subprocess.run([kiln, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return []
    for line in p.stdout.splitlines():
        if line.startswith("backends:"):
            return line.split()[1:]
    return []


def find_models(modeldir, only):
    models = []
    for path in sorted(glob.glob(os.path.join(modeldir, "*.onnx"))):
        name = os.path.basename(path)[:-len(".onnx")]
        if only and name not in only:
            continue
        inputs = sorted(glob.glob(os.path.join(modeldir, f"{name}.input_*.npy")),
                        key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
        outputs = sorted(glob.glob(os.path.join(modeldir, f"{name}.output_*.npy")),
                         key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
        models.append((name, path, inputs, outputs))
    return models


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builddir")
    ap.add_argument("modeldir")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--checks", help="comma-separated subset of " + ",".join(ALL_CHECKS) +
                    " (default: all; cuda-run only where a GPU is present)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    kiln = os.path.join(os.path.abspath(args.builddir), "kiln")
    skipped_checks = {}
    if args.checks:
        checks = [c for c in args.checks.split(",") if c]
    else:
        checks = list(ALL_CHECKS)
        if not have_gpu():
            for c in GPU_CHECKS:
                skipped_checks[c] = "no GPU here (scripts/gpu-check.sh runs it on a GPU machine)"
        if "cuda" not in backends(kiln):
            for c in ALL_CHECKS:
                if c.startswith("cuda"):
                    skipped_checks[c] = "this kiln was built without the CUDA backend"
        checks = [c for c in checks if c not in skipped_checks]
    bad = [c for c in checks if c not in ALL_CHECKS]
    if bad:
        ap.error(f"unknown checks {bad}; known: {ALL_CHECKS}")
    only = set(args.only.split(",")) if args.only else None
    models = find_models(args.modeldir, only)

    passed = failed = skipped = 0
    for c, why in skipped_checks.items():
        print(f"SKIP {c} for every model: {why}")
        skipped += len(models)
    if not os.access(kiln, os.X_OK):
        print(f"FAIL setup: no kiln executable at {kiln} (build the kiln_cli target)")
        failed += 1
    if not models:
        print(f"FAIL setup: no models in {args.modeldir} (run examples/gen_models.py)")
        failed += 1
    if failed:
        print(f"models: {passed} passed, {failed} failed")
        return 1

    tmp = tempfile.mkdtemp(prefix="kiln-models-")
    for name, path, inputs, outputs in models:
        if not inputs or not outputs:
            print(f"FAIL {name} setup: missing {name}.input_*.npy or {name}.output_*.npy")
            failed += 1
            continue
        refs = [np.load(p) for p in outputs]
        for which in checks:
            try:
                detail = check(kiln, name, path, inputs, refs, which, tmp)
                print(f"PASS {name} {which} {detail}".rstrip(), flush=True)
                passed += 1
            except CheckFailed as e:
                lines = str(e).splitlines()
                print(f"FAIL {name} {which}: {lines[0]}", flush=True)
                for line in lines[1:]:
                    print(f"    {line}")
                failed += 1
    if args.keep or failed:
        print(f"(outputs kept in {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"models: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
