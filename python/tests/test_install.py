"""The package as installed: the files `pip install ./python` puts in site-packages, used
from outside the checkout with no KILN_LIBRARY, must find their own bundled libkiln.so and
AOT runtime, run the README's one-liner on an example model, and export a library.

test_bundled_package builds those files with setup.py's build_py (what pip runs to build
the wheel) into a temporary folder; test_pip_install runs pip itself (--target, no build
isolation, so no network), which needs setuptools and wheel in this Python: without
wheel it is skipped, saying so."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import BUILD, ROOT, assert_close_to_reference, model_io

PYDIR = os.path.join(ROOT, "python")

# The README's one-liner, on an example model and its input; prints where libkiln came from.
ONE_LINER = """
import sys, numpy as np, kiln
x = np.load(sys.argv[2])
m = kiln.compile(sys.argv[1]); y = m(x)
np.save(sys.argv[3], y)
m.export(sys.argv[4], header=sys.argv[5], prefix="cnn")
assert np.array_equal(kiln.load_library(sys.argv[4])(x), y)
print(kiln.library_path())
"""


def _egg_base(tmp_path):
    """setup.py's metadata goes to tmp_path, not into the source tree."""
    return ["egg_info", "--egg-base", str(tmp_path)]


def _clean_env(site):
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_LIBRARY", "KILN_AOTRT", "PYTHONPATH")}
    env["PYTHONPATH"] = site
    env["KILN_BUILD_DIR"] = BUILD
    return env


def _use_installed(site, tmp_path, example_models):
    path, (x,), (want,) = model_io(example_models, "cnn")
    np.save(tmp_path / "x.npy", x)
    out, so, h = tmp_path / "y.npy", tmp_path / "libcnn.so", tmp_path / "cnn.h"
    p = subprocess.run([sys.executable, "-c", ONE_LINER, path, str(tmp_path / "x.npy"), str(out), str(so), str(h)],
                       cwd=str(tmp_path), env=_clean_env(site), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lib = p.stdout.strip().splitlines()[-1]
    assert lib.startswith(os.path.join(site, "kiln", "_lib")), f"loaded {lib}, not the bundled copy"
    assert_close_to_reference(np.load(out), want, "cnn through the installed package")
    assert so.exists() and "cnn_run" in h.read_text()


def test_bundled_package(tmp_path, example_models):
    site = str(tmp_path / "site")
    p = subprocess.run([sys.executable, "setup.py", "-q", *_egg_base(tmp_path), "build_py", "--build-lib", site], cwd=PYDIR,
                       env=dict(os.environ, KILN_BUILD_DIR=BUILD), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert os.path.isfile(os.path.join(site, "kiln", "_lib", "libkiln.so"))
    assert os.path.isfile(os.path.join(site, "kiln", "_lib", "kiln", "libkiln_aotrt.a"))
    assert not os.path.islink(os.path.join(site, "kiln", "_lib", "libkiln.so"))
    _use_installed(site, tmp_path, example_models)


def test_pip_install(tmp_path, example_models):
    missing = [m for m in ("setuptools", "wheel") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"pip cannot build the package offline: {', '.join(missing)} not installed in {sys.executable} "
                    "(test_bundled_package checks the same files, built by setup.py)")
    site = str(tmp_path / "site")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", site, PYDIR], env=dict(os.environ, KILN_BUILD_DIR=BUILD),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    _use_installed(site, tmp_path, example_models)


def test_missing_build_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "setup.py", "-q", *_egg_base(tmp_path), "build_py", "--build-lib",
                        str(tmp_path / "site")],
                       cwd=PYDIR, env=dict(os.environ, KILN_BUILD_DIR=str(tmp_path / "nobuild")),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "build Kiln first" in p.stderr + p.stdout
