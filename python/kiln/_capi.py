"""The ctypes binding of Kiln's C API (include/kiln.h) and where libkiln.so is found.

Only this module knows the C declarations; the rest of the package calls ``lib()``.
The library is looked up, in order:

1. ``$KILN_LIBRARY`` (a path to ``libkiln.so``), when set;
2. the copy bundled into the installed package (``kiln/_lib/libkiln.so*``, put there by
   ``pip install ./python`` from the build's ``build/lib``);
3. the build tree next to a source checkout (``<repo>/build/lib/libkiln.so``), so that
   ``PYTHONPATH=python`` works right after ``make build``.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from ctypes import (POINTER, Structure, c_char_p, c_double, c_int, c_int32, c_int64,
                    c_size_t, c_void_p)
from typing import Optional

MAX_RANK = 8  # KILN_TENSOR_MAX_RANK

# kiln_status codes, in kiln.h's order.
OK = 0
STATUS_NAMES = ("KILN_OK", "KILN_ERR_INVALID_ARGUMENT", "KILN_ERR_IO", "KILN_ERR_PARSE",
                "KILN_ERR_UNSUPPORTED", "KILN_ERR_SHAPE", "KILN_ERR_OUT_OF_MEMORY",
                "KILN_ERR_BACKEND", "KILN_ERR_NO_DEVICE", "KILN_ERR_INTERNAL")
ERR_INVALID_ARGUMENT, ERR_IO, ERR_PARSE, ERR_UNSUPPORTED, ERR_SHAPE = 1, 2, 3, 4, 5
ERR_OUT_OF_MEMORY, ERR_BACKEND, ERR_NO_DEVICE, ERR_INTERNAL = 6, 7, 8, 9

TARGET_CPU, TARGET_CUDA = 0, 1
FUSION_FULL, FUSION_ELEMENTWISE, FUSION_NONE = 0, 1, 2


class Tensor(Structure):
    """kiln_tensor: dense, row-major, caller-owned data."""
    _fields_ = [("dtype", c_int), ("rank", c_int32), ("dims", c_int64 * MAX_RANK),
                ("data", c_void_p)]


class Value(Structure):
    """kiln_value: a value of a graph under construction (invalid when id < 0)."""
    _fields_ = [("id", c_int32)]


class ContextOptions(Structure):
    _fields_ = [("allocator", c_void_p), ("threads", c_int), ("cache_dir", c_char_p),
                ("log_level", c_int)]


class LoadOptions(Structure):
    _fields_ = [("n_bindings", c_int32), ("binding_names", POINTER(c_char_p)),
                ("binding_values", POINTER(c_int64)), ("default_dim", c_int64),
                ("n_constant_inputs", c_int32), ("constant_input_names", POINTER(c_char_p)),
                ("constant_input_values", POINTER(Tensor))]


class CompileOptions(Structure):
    _fields_ = [("target", c_int), ("fusion", c_int), ("cuda_arch", c_char_p),
                ("disable_passes", c_char_p), ("print_after", c_char_p), ("verify", c_int),
                ("cpu", c_char_p), ("triple", c_char_p)]


class ExeStats(Structure):
    _fields_ = [("kernels", c_int32), ("bytes_moved", c_int64), ("arena_bytes", c_int64),
                ("flops", c_int64), ("cache_hit", c_int32)]


_P = c_void_p  # every opaque handle
_DIMS = POINTER(c_int64)
_INFO = [_P, c_int32, POINTER(c_char_p), POINTER(c_int), POINTER(c_int32), _DIMS]

# name -> (restype, argtypes). The builder functions are added below from short lists.
_SIGNATURES = {
    "kiln_status_name": (c_char_p, [c_int]),
    "kiln_context_create": (c_int, [POINTER(ContextOptions), POINTER(_P)]),
    "kiln_context_destroy": (None, [_P]),
    "kiln_last_error": (c_char_p, [_P]),
    "kiln_last_error_copy": (c_size_t, [_P, c_char_p, c_size_t]),
    "kiln_load_onnx": (c_int, [_P, c_char_p, POINTER(LoadOptions), POINTER(_P)]),
    "kiln_load_onnx_bytes": (c_int, [_P, c_char_p, c_size_t, POINTER(LoadOptions), POINTER(_P)]),
    "kiln_load_text": (c_int, [_P, c_char_p, POINTER(_P)]),
    "kiln_parse_text": (c_int, [_P, c_char_p, POINTER(_P)]),
    "kiln_graph_create": (c_int, [_P, c_char_p, POINTER(_P)]),
    "kiln_graph_destroy": (None, [_P]),
    "kiln_graph_status": (c_int, [_P]),
    "kiln_graph_error": (c_char_p, [_P]),
    "kiln_graph_to_text": (c_void_p, [_P, _P]),
    "kiln_free": (None, [_P, c_void_p]),
    "kiln_graph_num_inputs": (c_int32, [_P]),
    "kiln_graph_num_outputs": (c_int32, [_P]),
    "kiln_graph_input_info": (c_int, _INFO),
    "kiln_graph_output_info": (c_int, _INFO),
    "kiln_value_info": (c_int, [_P, Value, POINTER(c_int), POINTER(c_int32), _DIMS]),
    "kiln_input": (Value, [_P, c_char_p, c_int, c_int32, _DIMS]),
    "kiln_constant": (Value, [_P, c_char_p, c_int, c_int32, _DIMS, c_void_p]),
    "kiln_scalar": (Value, [_P, c_int, c_double]),
    "kiln_output": (c_int, [_P, c_char_p, Value]),
    "kiln_cast": (Value, [_P, Value, c_int]),
    "kiln_where": (Value, [_P, Value, Value, Value]),
    "kiln_reshape": (Value, [_P, Value, c_int32, _DIMS]),
    "kiln_transpose": (Value, [_P, Value, POINTER(c_int32)]),
    "kiln_concat": (Value, [_P, c_int32, POINTER(Value), c_int32]),
    "kiln_reduce_sum": (Value, [_P, Value, c_int32, POINTER(c_int32), c_int]),
    "kiln_reduce_max": (Value, [_P, Value, c_int32, POINTER(c_int32), c_int]),
    "kiln_softmax": (Value, [_P, Value, c_int32]),
    "kiln_conv2d": (Value, [_P, Value, Value, _DIMS, _DIMS, c_int32]),
    "kiln_compile": (c_int, [_P, _P, POINTER(CompileOptions), POINTER(_P)]),
    "kiln_run": (c_int, [_P, POINTER(Tensor), c_size_t, POINTER(Tensor), c_size_t]),
    "kiln_executable_destroy": (None, [_P]),
    "kiln_executable_stats": (c_int, [_P, POINTER(ExeStats)]),
    "kiln_executable_num_inputs": (c_int32, [_P]),
    "kiln_executable_num_outputs": (c_int32, [_P]),
    "kiln_executable_input_info": (c_int, _INFO),
    "kiln_executable_output_info": (c_int, _INFO),
    "kiln_fusion_report": (c_int, [_P, _P, POINTER(CompileOptions), c_int, POINTER(c_void_p)]),
    "kiln_export": (c_int, [_P, _P, POINTER(CompileOptions), c_char_p, c_char_p, c_char_p]),
    "kiln_load_library": (c_int, [_P, c_char_p, POINTER(_P)]),
}
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min", "matmul")
UNARY_OPS = ("neg", "exp", "log", "sqrt", "tanh", "sigmoid", "erf", "relu")
for _op in BINARY_OPS:
    _SIGNATURES["kiln_" + _op] = (Value, [_P, Value, Value])
for _op in UNARY_OPS:
    _SIGNATURES["kiln_" + _op] = (Value, [_P, Value])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def _candidates() -> list:
    env = os.environ.get("KILN_LIBRARY")
    if env:
        return [("$KILN_LIBRARY", env)]
    found = []
    bundled = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_lib", "libkiln.so*")), key=len)
    if bundled:
        found.append(("the installed package", bundled[0]))
    tree = os.path.join(os.path.dirname(os.path.dirname(_PACKAGE_DIR)), "build", "lib", "libkiln.so")
    if os.path.exists(tree):
        found.append(("the build tree", tree))
    return found


def _bind(cdll: ctypes.CDLL) -> None:
    missing = []
    for name, (res, args) in _SIGNATURES.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = res
        fn.argtypes = args
    if missing:
        raise ImportError(f"{_path}: this libkiln.so lacks {', '.join(missing)} "
                          "(an older build? run `make build` and reinstall the package)")


def lib() -> ctypes.CDLL:
    """The loaded libkiln.so, loaded and bound on first use."""
    global _lib, _path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        cands = _candidates()
        if not cands:
            raise ImportError(
                "kiln: libkiln.so not found: not bundled in the package "
                f"({os.path.join(_PACKAGE_DIR, '_lib')}) and $KILN_LIBRARY is not set. Build "
                "Kiln (`make build`) and `pip install ./python`, or set "
                "KILN_LIBRARY=/path/to/build/lib/libkiln.so")
        where, path = cands[0]
        try:
            cdll = ctypes.CDLL(path)
        except OSError as e:
            raise ImportError(f"kiln: cannot load libkiln.so from {where} ({path}): {e}") from e
        _path = path
        _bind(cdll)
        _lib = cdll
        return _lib


def library_path() -> str:
    """The path of the libkiln.so this process uses (loading it if needed)."""
    lib()
    assert _path is not None
    return _path


def status_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"status {code}"
