"""Kiln's exceptions: one class per kiln_status code, all under KilnError.

Each also derives from the closest built-in exception (ValueError, OSError, ...), so code
that catches those keeps working. The message is Kiln's own (kiln_last_error): it names
the file, the ONNX node and the op where the problem is.
"""
from __future__ import annotations

from typing import Dict, Type

from . import _capi


class KilnError(Exception):
    """A Kiln call failed. ``status`` is the kiln_status code, ``status_name`` its name."""

    status: int = _capi.ERR_INTERNAL

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message

    @property
    def status_name(self) -> str:
        return _capi.status_name(self.status)

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(KilnError, ValueError):
    """A wrong argument: a bad option, or an input of the wrong shape or dtype."""
    status = _capi.ERR_INVALID_ARGUMENT


class KilnIOError(KilnError, OSError):
    """A missing or unreadable file, or one that cannot be written."""
    status = _capi.ERR_IO

    def __init__(self, message: str, status: int | None = None) -> None:
        KilnError.__init__(self, message, status)

    def __str__(self) -> str:
        return self.message


class ParseError(KilnError, ValueError):
    """A malformed model or IR text."""
    status = _capi.ERR_PARSE


class UnsupportedError(KilnError, NotImplementedError):
    """An op, dtype or attribute Kiln does not handle (yet); the message names the node."""
    status = _capi.ERR_UNSUPPORTED


class ShapeError(KilnError, ValueError):
    """Shapes or dtypes that do not fit an op."""
    status = _capi.ERR_SHAPE


class OutOfMemoryError(KilnError, MemoryError):
    status = _capi.ERR_OUT_OF_MEMORY


class BackendError(KilnError, RuntimeError):
    """LLVM, the linker, NVRTC or the CUDA driver failed."""
    status = _capi.ERR_BACKEND


class NoDeviceError(KilnError, RuntimeError):
    """The CUDA target was asked for and there is no GPU or driver."""
    status = _capi.ERR_NO_DEVICE


class InternalError(KilnError, RuntimeError):
    """A bug in Kiln: please report it with the message."""
    status = _capi.ERR_INTERNAL


_BY_STATUS: Dict[int, Type[KilnError]] = {
    cls.status: cls
    for cls in (InvalidArgumentError, KilnIOError, ParseError, UnsupportedError, ShapeError,
                OutOfMemoryError, BackendError, NoDeviceError, InternalError)
}


def error_for(status: int, message: str) -> KilnError:
    """The exception for a kiln_status code and message."""
    cls = _BY_STATUS.get(status, KilnError)
    return cls(message or _capi.status_name(status), status)
