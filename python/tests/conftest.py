"""pytest setup for Kiln's Python tests: where the build and the test models are.

Environment: KILN_BUILD_DIR (default: the checkout's build/), KILN_LIBRARY (which
libkiln.so the package loads; see kiln/_capi.py), KILN_CACHE_DIR (the compile cache;
default here: BUILD/cache, never the user's home), KILN_PYTEST_TIMEOUT (seconds one test
may take before the process is ended with every thread's traceback, default 900: a hang
must fail, not stall `make test`; under pytest-xdist only that worker dies and the test
is reported as failed).

The example models (examples/gen_models.py) and the PyTorch exports with refilled
weights (tests/models/torch_refill.py) are the ones `make test` writes into BUILD/models
and BUILD/torch_models; when missing, the fixtures write them there the same way.
"""
import collections
import faulthandler
import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")))
os.environ.setdefault("KILN_CACHE_DIR", os.path.join(BUILD, "cache"))
# ONNX's runner writes the expected outputs of its "light" real-model tests under
# $ONNX_HOME: keep them in the build tree too.
os.environ.setdefault("ONNX_HOME", os.path.join(BUILD, "onnx_home"))

# Tests notes shown at the end of the run (e.g. tests not collected, and why).
NOTES = []


def pytest_report_header(config):
    import kiln
    return [f"kiln: {kiln.__file__}", f"libkiln: {kiln.library_path()}", f"build: {BUILD}"]


TIMEOUT_S = float(os.environ.get("KILN_PYTEST_TIMEOUT", "900"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    faulthandler.dump_traceback_later(TIMEOUT_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_terminal_summary(terminalreporter):
    for note in NOTES:
        terminalreporter.write_line(f"note: {note}")
    # ONNX's backend runner by test class (node, simple, real, pytorch-*), to compare the
    # node tests with the C runner (build/kiln_conformance); printed last (unconfigure)
    counts = collections.defaultdict(collections.Counter)
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if "OnnxBackend" in rep.nodeid and (rep.when == "call" or outcome != "passed"):
                cls = rep.nodeid.split("::")[1].replace("OnnxBackend", "").replace("ModelTest", "")
                counts[cls]["failed" if outcome == "error" else outcome] += 1
                if outcome in ("failed", "error"):
                    BACKEND_FAILURES.append(f"FAIL {rep.nodeid.split('::')[-1]}: {_one_line(rep)}")
    total = collections.Counter()
    for cls in sorted(counts):
        c = counts[cls]
        total.update(c)
        BACKEND_COUNTS.append(f"onnx-backend {cls}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    if counts:
        BACKEND_COUNTS.append(f"onnx-backend: {total['passed']} passed, {total['failed']} failed, "
                              f"{total['skipped']} skipped")


BACKEND_COUNTS = []
BACKEND_FAILURES = []


def _one_line(rep):
    """The first line of a failed test's exception message."""
    crash = getattr(rep.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(rep.longrepr).strip().splitlines()[-1]
    return text.splitlines()[0][:300] if text else "(no message)"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The ONNX backend runner's counts as the last lines of the output, after pytest's."""
    if BACKEND_COUNTS and not hasattr(config, "workerinput"):
        print("\n".join(sorted(BACKEND_FAILURES) + BACKEND_COUNTS))


@pytest.fixture(scope="session")
def build_dir():
    return BUILD


@pytest.fixture(scope="session")
def kiln_cli():
    path = os.path.join(BUILD, "kiln")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make build` (or set KILN_BUILD_DIR)")
    return path


def _generate(outdir, commands):
    """Runs the commands that write outdir's models unless outdir/.generated exists (the
    stamp tests/run_all.sh uses too)."""
    stamp = os.path.join(outdir, ".generated")
    if os.path.exists(stamp):
        return outdir
    os.makedirs(outdir, exist_ok=True)
    for cmd in commands:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{p.stderr or p.stdout}")
    open(stamp, "w").close()
    return outdir


def _example_names():
    spec = importlib.util.spec_from_file_location("gen_models", os.path.join(ROOT, "examples", "gen_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return tuple(mod.MODELS)


EXAMPLE_MODELS = _example_names()  # examples/gen_models.py's MODELS
TORCH_MODELS = tuple(sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "tests/models/torch/*.onnx"))))


@pytest.fixture(scope="session")
def example_models():
    """BUILD/models: the example models with their inputs and onnxruntime's outputs."""
    out = os.path.join(BUILD, "models")
    return _generate(out, [[sys.executable, "examples/gen_models.py", out]])


@pytest.fixture(scope="session")
def torch_models():
    """BUILD/torch_models: the PyTorch exports of tests/models/torch with weights refilled,
    their inputs and onnxruntime's outputs."""
    out = os.path.join(BUILD, "torch_models")
    return _generate(out, [[sys.executable, "tests/models/torch_refill.py", os.path.join("tests/models/torch", m + ".onnx"),
                            os.path.join(out, m + ".onnx")] for m in TORCH_MODELS])


def model_io(folder, name):
    """The model's path, its inputs and reference outputs (M.input_K.npy, M.output_K.npy)."""
    def arrays(kind):
        found = []
        while os.path.exists(os.path.join(folder, f"{name}.{kind}_{len(found)}.npy")):
            found.append(np.load(os.path.join(folder, f"{name}.{kind}_{len(found)}.npy")))
        return found
    return os.path.join(folder, name + ".onnx"), arrays("input"), arrays("output")


def assert_close_to_reference(got, want, what=""):
    """The criterion of tests/models/check_models.py: same shape and dtype, and
    max|got - want| <= 1e-3 * max|want| (1e-6 when want is all zeros)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    assert np.all(np.isfinite(g64)), f"{what}: non-finite values"
    err = float(np.max(np.abs(g64 - w64))) if got.size else 0.0
    scale = float(np.max(np.abs(w64))) if want.size else 0.0
    tol = 1e-3 * scale if scale > 0 else 1e-6
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"
