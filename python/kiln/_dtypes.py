"""Kiln dtypes (kiln_dtype) and numpy dtypes, both ways."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from .errors import InvalidArgumentError

try:  # numpy has no bfloat16; ml_dtypes (a dependency of jax and onnx tools) has one
    import ml_dtypes as _ml_dtypes  # type: ignore
    _BF16: Any = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _BF16 = None

# kiln_dtype value -> numpy dtype, in kiln.h's order
_TO_NUMPY = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), _BF16,
             np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64),
             np.dtype(np.uint8), np.dtype(np.bool_)]
NAMES = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
         "uint8", "bool"]
_FROM_NUMPY: Dict[Any, int] = {dt: i for i, dt in enumerate(_TO_NUMPY) if dt is not None}


def to_numpy(code: int) -> np.dtype:
    """The numpy dtype of kiln_dtype `code`."""
    if not 0 <= code < len(_TO_NUMPY):
        raise InvalidArgumentError(f"unknown Kiln dtype {code}")
    dt = _TO_NUMPY[code]
    if dt is None:
        raise InvalidArgumentError("bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)")
    return dt


def from_numpy(dtype: Any) -> int:
    """The kiln_dtype of a numpy dtype (or anything np.dtype() takes, e.g. "float32")."""
    if isinstance(dtype, str) and dtype == "bfloat16" and _BF16 is not None:
        return 3
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise InvalidArgumentError(f"not a dtype: {dtype!r}") from e
    code = _FROM_NUMPY.get(dt.newbyteorder("="))
    if code is None:
        raise InvalidArgumentError(
            f"dtype {dt} has no Kiln equivalent (Kiln has {', '.join(NAMES)})")
    return code
