"""Contexts, handle lifetimes and tensors: what the graph and model classes share.

Lifetimes. Every C handle is freed exactly once, deterministically: by ``close()``, by
``with``, or by ``__del__``. A handle keeps what it needs alive: a graph or model holds a
reference to its context, and a context asked to close while graphs or models still use
it is only marked closing; the last of them to close destroys it. So no order of
``close()`` calls, garbage collection or interpreter shutdown frees a context under a live
executable.

Threads. Kiln's context holds the last error message, and a context and its graphs are
used by one thread at a time (kiln.h), so every C call on a context holds that context's
lock, except kiln_run: kiln_run is thread-safe (one model may run from several threads at
once, each run with its own arena), so ``Model`` calls run without the lock (ctypes
releases the GIL during the call) and read a failed run's message with
kiln_last_error_copy. Closing a model waits for its runs in flight.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import _capi, _dtypes
from .errors import InvalidArgumentError, KilnError, error_for


class TensorInfo(NamedTuple):
    """Name, shape and numpy dtype of a graph's or model's input or output."""
    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype


class Closable:
    """close() by ``with`` and by the garbage collector."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class Context(Closable):
    """A Kiln context: the thread pool, compile cache and last error of what is made in it.

    Args:
        threads: worker threads for compiled code (0: all cores).
        cache_dir: the compile cache folder (None: ``$KILN_CACHE_DIR`` or ``~/.cache/kiln``;
            ``""`` turns the cache off).
        log_level: 0 quiet, 1 info, 2 debug (on stderr).

    Use it as a context manager, or call ``close()``; graphs and models made in it keep it
    alive until they are closed too.
    """

    def __init__(self, threads: int = 0, cache_dir: Optional[str] = None, log_level: int = 0) -> None:
        if not isinstance(threads, int) or threads < 0:
            raise InvalidArgumentError(f"threads must be an int >= 0, not {threads!r}")
        self._lib = _capi.lib()
        self.lock = threading.RLock()
        self.threads = threads
        self._users = 0
        self._closing = False
        opts = _capi.ContextOptions(None, threads, None if cache_dir is None else cache_dir.encode(),
                                    log_level)
        h = ctypes.c_void_p()
        st = self._lib.kiln_context_create(ctypes.byref(opts), ctypes.byref(h))
        if st != _capi.OK:
            raise error_for(st, "kiln_context_create failed")
        self._handle: Optional[int] = h.value

    @property
    def handle(self) -> int:
        if self._handle is None or self._closing:
            raise InvalidArgumentError("this kiln.Context is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None or self._closing

    def check(self, status: int) -> None:
        """Raises the KilnError for `status` with the context's message (call it holding
        lock, or after kiln_run, whose message is copied under the C context's own lock)."""
        if status != _capi.OK:
            buf = ctypes.create_string_buffer(4096)
            n = self._lib.kiln_last_error_copy(self._handle, buf, len(buf))
            if n >= len(buf):  # cut to fit: again with room for all of it
                buf = ctypes.create_string_buffer(n + 1)
                self._lib.kiln_last_error_copy(self._handle, buf, len(buf))
            raise error_for(status, buf.value.decode("utf-8", "replace"))

    def _acquire(self) -> None:
        with self.lock:
            self.handle  # raises when closed
            self._users += 1

    def _release(self) -> None:
        with self.lock:
            self._users -= 1
            if self._users == 0 and self._closing:
                self._destroy()

    def _destroy(self) -> None:
        if self._handle is not None:
            self._lib.kiln_context_destroy(self._handle)
            self._handle = None

    def close(self) -> None:
        """Destroys the context now, or when the last graph or model made in it closes."""
        with self.lock:
            if self._handle is None:
                return
            self._closing = True
            if self._users == 0:
                self._destroy()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"threads={self.threads}"
        return f"<kiln.Context {state}>"


_defaults: Dict[int, Context] = {}
_defaults_lock = threading.Lock()


def default_context(threads: int = 0) -> Context:
    """The process-wide context for `threads` worker threads (made on first use)."""
    with _defaults_lock:
        ctx = _defaults.get(threads)
        if ctx is None or ctx.closed:
            ctx = _defaults[threads] = Context(threads=threads)
        return ctx


class Handle(Closable):
    """A C handle owned by a Python object, freed once, holding its context alive."""

    _handle: Optional[int] = None
    _ctx: Optional[Context] = None

    def _own(self, ctx: Context, handle: int, destroy: Any) -> None:
        ctx._acquire()
        self._ctx = ctx
        self._handle = handle
        self._destroy_fn = destroy

    @property
    def context(self) -> Context:
        """The context this object was made in."""
        assert self._ctx is not None
        return self._ctx

    @property
    def handle(self) -> int:
        if self._handle is None:
            raise InvalidArgumentError(f"this {type(self).__name__} is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Frees the C object now (later calls on this object raise)."""
        ctx, h = self._ctx, self._handle
        if h is None or ctx is None:
            return
        with ctx.lock:
            if self._handle is None:
                return
            self._handle = None
            self._destroy_fn(h)
        ctx._release()


# ------------------------------------------------------------------ tensors
def shape_tuple(rank: int, dims: Any) -> Tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(rank))


def io_info(fn: Any, handle: int, i: int) -> TensorInfo:
    """Name, shape and dtype through one of the *_input_info / *_output_info functions."""
    name = ctypes.c_char_p()
    dt = ctypes.c_int()
    rank = ctypes.c_int32()
    dims = (ctypes.c_int64 * _capi.MAX_RANK)()
    st = fn(handle, i, ctypes.byref(name), ctypes.byref(dt), ctypes.byref(rank), dims)
    if st != _capi.OK:
        raise error_for(st, f"no input/output {i}")
    return TensorInfo((name.value or b"").decode("utf-8", "replace"), shape_tuple(rank.value, dims),
                      _dtypes.to_numpy(dt.value))


def tensor_of(arr: np.ndarray) -> _capi.Tensor:
    """A kiln_tensor viewing a C-contiguous array (the array must outlive the call)."""
    if arr.ndim > _capi.MAX_RANK:
        raise InvalidArgumentError(f"rank {arr.ndim} is over Kiln's limit of {_capi.MAX_RANK}")
    t = _capi.Tensor()
    t.dtype = _dtypes.from_numpy(arr.dtype)
    t.rank = arr.ndim
    for i, d in enumerate(arr.shape):
        t.dims[i] = d
    t.data = arr.ctypes.data
    return t


def empty_aligned(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized array whose data is 64-byte aligned (Kiln streams large outputs
    with non-temporal stores, which need whole cache lines; an unaligned output is still
    written, more slowly)."""
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n].view(dtype).reshape(shape)


def as_input(x: Any, info: TensorInfo) -> np.ndarray:
    """x as a C-contiguous array of info's dtype and shape, or InvalidArgumentError.

    Arrays must have the dtype exactly (a byte-swapped copy of it is converted); other
    values (lists, scalars) are converted when numpy casts them within their kind.
    """
    if isinstance(x, np.ndarray):
        arr = x
        if arr.dtype != info.dtype:
            if arr.dtype.newbyteorder("=") == info.dtype and arr.dtype.kind != "O":
                arr = arr.astype(info.dtype)
            else:
                raise InvalidArgumentError(
                    f"input '{info.name}': dtype {arr.dtype}, the model takes {info.dtype} "
                    f"(convert it, e.g. x.astype(np.{info.dtype.name}))")
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:
            raise InvalidArgumentError(f"input '{info.name}': not an array: {e}") from e
        if arr.dtype != info.dtype:
            if not np.can_cast(arr.dtype, info.dtype, casting="same_kind"):
                raise InvalidArgumentError(
                    f"input '{info.name}': {type(x).__name__} of {arr.dtype} values, the model "
                    f"takes {info.dtype}")
            arr = arr.astype(info.dtype)
    if arr.shape != info.shape:
        raise InvalidArgumentError(
            f"input '{info.name}': shape {list(arr.shape)}, the model takes {list(info.shape)}"
            + (" (symbolic dims are bound when the model is loaded: kiln.load(..., bind={...}))"
               if arr.ndim == len(info.shape) else ""))
    return contiguous(arr)


def contiguous(x: Any, dtype: Any = None) -> np.ndarray:
    """x as a C-contiguous array in native byte order (np.ascontiguousarray would make a
    0-d array 1-d)."""
    arr = np.asarray(x, dtype=dtype)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.require(arr, requirements="C")


def c_strings(items: List[str]) -> Any:
    arr = (ctypes.c_char_p * max(1, len(items)))()
    for i, s in enumerate(items):
        arr[i] = s.encode()
    return arr


def take_string(ctx: Context, ptr: Optional[int]) -> str:
    """The C string at ptr (allocated by Kiln), freed with kiln_free."""
    if not ptr:
        raise KilnError("Kiln returned no text")
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        ctx._lib.kiln_free(ctx.handle, ptr)
