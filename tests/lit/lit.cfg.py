# lit.cfg.py - lit configuration for Kiln's FileCheck tests (tests/lit/**/*.kir).
#
#   python3 /usr/lib/llvm-19/build/utils/lit/lit.py -sv tests/lit --param kiln_build=BUILD
#
# Substitutions: %kiln is BUILD/kiln, %kiln_build BUILD, %python this Python, %src_root the
# source tree; FileCheck, not, count and split-file come from LLVM 19.
# Scratch files (%t) go under BUILD/lit, never into the source tree.
import os
import shutil
import sys

import lit.formats

config.name = "kiln"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".kir"]
config.excludes = ["Inputs"]  # helper files for tests, not tests themselves
config.test_source_root = os.path.dirname(os.path.abspath(__file__))

_build = lit_config.params.get(
    "kiln_build", os.path.join(config.test_source_root, "..", "..", "build"))
_build = os.path.abspath(_build)
config.test_exec_root = os.path.join(_build, "lit")

_kiln = os.path.join(_build, "kiln")
if not os.access(_kiln, os.X_OK):
    # Keep going: every test that uses %kiln then fails and says why, instead of the whole
    # suite silently passing nothing.
    lit_config.warning(f"no kiln executable at {_kiln} (build the kiln_cli target)")

_llvm_bin = "/usr/lib/llvm-19/bin"
if not os.path.isdir(_llvm_bin):
    _fc = shutil.which("FileCheck-19") or shutil.which("FileCheck")
    _llvm_bin = os.path.dirname(_fc) if _fc else _llvm_bin
_filecheck = os.path.join(_llvm_bin, "FileCheck")
if not os.access(_filecheck, os.X_OK):
    lit_config.fatal(f"FileCheck not found at {_filecheck} (install llvm-19-tools)")

# Substitutions are regular expressions applied to RUN lines; \b keeps 'FileCheck' from
# matching inside a longer word.
config.substitutions.append(("%kiln\\b", _kiln))
config.substitutions.append(("%kiln_build\\b", _build))
# Python (the one running lit: it has numpy and onnx) and the source tree's root.
config.substitutions.append(("%python\\b", sys.executable))
config.substitutions.append(("%src_root\\b", os.path.dirname(os.path.dirname(config.test_source_root))))
config.substitutions.append(("\\bFileCheck\\b", _filecheck))

# LLVM's helper tools (not, count, split-file) by name, and a cache that does not touch
# the user's home directory.
config.environment["PATH"] = os.pathsep.join([_llvm_bin, config.environment.get("PATH", os.environ.get("PATH", ""))])
config.environment["KILN_CACHE_DIR"] = os.path.join(_build, "lit", "cache")

if shutil.which("nvidia-smi") and os.system("nvidia-smi -L >/dev/null 2>&1") == 0:
    config.available_features.add("cuda-gpu")
