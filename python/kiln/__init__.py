"""Kiln from Python: load an ONNX model (or build a graph), compile it, run it on numpy arrays.

    import kiln, numpy as np
    model = kiln.compile("model.onnx")                 # loads, optimizes, JIT-compiles
    y = model(np.zeros(model.inputs[0].shape, np.float32))
    model.export("libmodel.so", header="model.h")      # ahead of time: a C library
    model.fusion_report()                              # what was fused, as a dict
    model.bench(runs=50)                               # median/min ms

The package is a thin ctypes layer over libkiln.so (the C API of include/kiln.h); no
compiler toolchain is needed beyond what libkiln.so itself uses. ``kiln.backend`` is the
``onnx.backend`` interface (for ONNX's own backend test runner).
"""
from __future__ import annotations

from ._capi import library_path
from ._core import Context, TensorInfo, default_context
from .errors import (BackendError, InternalError, InvalidArgumentError, KilnError, KilnIOError, NoDeviceError,
                     OutOfMemoryError, ParseError, ShapeError, UnsupportedError)
from .graph import Graph, Value
from .model import Model, compile, load, load_library, parse

__version__ = "0.1.0"

__all__ = [
    "load", "parse", "compile", "load_library", "Graph", "Value", "Model", "Context", "TensorInfo",
    "default_context", "library_path", "KilnError", "InvalidArgumentError", "KilnIOError", "ParseError",
    "UnsupportedError", "ShapeError", "OutOfMemoryError", "BackendError", "NoDeviceError", "InternalError",
]
