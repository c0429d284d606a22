"""Loading models and running them: kiln.load, kiln.compile and the compiled kiln.Model."""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _capi
from ._core import (Context, Handle, TensorInfo, as_input, c_strings, contiguous, default_context, empty_aligned,
                    io_info, take_string, tensor_of)
from .errors import InvalidArgumentError, KilnError
from .graph import Graph

PathLike = Union[str, "os.PathLike[str]"]
ModelSource = Union[PathLike, bytes, bytearray, memoryview, Any]  # Any: an onnx.ModelProto

_FUSION = {"full": _capi.FUSION_FULL, "elementwise": _capi.FUSION_ELEMENTWISE, "none": _capi.FUSION_NONE}
_TARGET = {"cpu": _capi.TARGET_CPU, "cuda": _capi.TARGET_CUDA}


def _load_options(bind: Optional[Mapping[str, int]], constant_inputs: Optional[Mapping[str, Any]],
                  default_dim: int, keep: list) -> _capi.LoadOptions:
    """kiln_load_options; the ctypes arrays it points to are appended to `keep`."""
    lo = _capi.LoadOptions()
    bind = dict(bind or {})
    for k, v in bind.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise InvalidArgumentError(f"bind: '{k}' must be bound to an int >= 0, not {v!r}")
    names = c_strings(list(bind))
    values = (ctypes.c_int64 * max(1, len(bind)))(*[int(v) for v in bind.values()])
    lo.n_bindings = len(bind)
    lo.binding_names = ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p))
    lo.binding_values = ctypes.cast(values, ctypes.POINTER(ctypes.c_int64))
    lo.default_dim = default_dim
    consts = dict(constant_inputs or {})
    arrays = [contiguous(v) for v in consts.values()]
    tensors = (_capi.Tensor * max(1, len(arrays)))(*[tensor_of(a) for a in arrays])
    cnames = c_strings(list(consts))
    lo.n_constant_inputs = len(consts)
    lo.constant_input_names = ctypes.cast(cnames, ctypes.POINTER(ctypes.c_char_p))
    lo.constant_input_values = ctypes.cast(tensors, ctypes.POINTER(_capi.Tensor))
    keep.extend([names, values, arrays, tensors, cnames])
    return lo


def load(source: ModelSource, bind: Optional[Mapping[str, int]] = None,
         constant_inputs: Optional[Mapping[str, Any]] = None, *, default_dim: int = 0,
         context: Optional[Context] = None) -> Graph:
    """Loads a model as a Graph.

    Args:
        source: a path to an ``.onnx`` file (any other suffix is read as Kiln IR text), the
            bytes of a serialized ONNX model, or an ``onnx.ModelProto``.
        bind: values for symbolic input dims (ONNX ``dim_param``), e.g. ``{"batch": 8}``.
        constant_inputs: graph inputs whose values are known now (a Reshape's shape, a Pad's
            pads, ...), as ``{name: array}``: they become constants of the graph and are no
            longer inputs, so the shape computations depending on them fold.
        default_dim: the value of symbolic dims not in `bind` (0: 1).
        context: the kiln.Context to load into (default: the process-wide one).

    Raises:
        KilnIOError (missing file), ParseError, UnsupportedError (listing every unsupported
        node), ShapeError, InvalidArgumentError: with Kiln's message naming file and node.
    """
    ctx = context or default_context()
    lib = ctx._lib
    if hasattr(source, "SerializeToString") and not isinstance(source, (bytes, bytearray)):
        source = source.SerializeToString()
    keep: list = []
    h = ctypes.c_void_p()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        lo = _load_options(bind, constant_inputs, default_dim, keep)
        name = "model"
        with ctx.lock:
            ctx.check(lib.kiln_load_onnx_bytes(ctx.handle, data, len(data), ctypes.byref(lo), ctypes.byref(h)))
    else:
        path = os.fspath(source)
        name = os.path.splitext(os.path.basename(path))[0]
        if path.endswith(".onnx"):
            lo = _load_options(bind, constant_inputs, default_dim, keep)
            with ctx.lock:
                ctx.check(lib.kiln_load_onnx(ctx.handle, os.fsencode(path), ctypes.byref(lo), ctypes.byref(h)))
        else:
            if bind or constant_inputs:
                raise InvalidArgumentError(f"{path}: bind and constant_inputs apply to ONNX models only")
            with ctx.lock:
                ctx.check(lib.kiln_load_text(ctx.handle, os.fsencode(path), ctypes.byref(h)))
    return Graph._adopt(ctx, h.value, name)


def parse(text: str, *, context: Optional[Context] = None) -> Graph:
    """A Graph from Kiln's textual IR (``Graph.to_text()``, ``kiln dump``)."""
    ctx = context or default_context()
    h = ctypes.c_void_p()
    with ctx.lock:
        ctx.check(ctx._lib.kiln_parse_text(ctx.handle, text.encode(), ctypes.byref(h)))
    return Graph._adopt(ctx, h.value, "graph")


def _choice(what: str, value: str, table: Mapping[str, int]) -> int:
    if value not in table:
        raise InvalidArgumentError(f"{what} must be one of {', '.join(table)}, not {value!r}")
    return table[value]


def compile(source: Union[Graph, ModelSource], target: str = "cpu", fusion: str = "full", threads: int = 0, *,
            bind: Optional[Mapping[str, int]] = None, constant_inputs: Optional[Mapping[str, Any]] = None,
            verify: bool = False, disable_passes: Union[str, Sequence[str], None] = None,
            cuda_arch: Optional[str] = None, context: Optional[Context] = None) -> "Model":
    """Compiles a graph (or loads and compiles a model file, bytes or ModelProto) to a Model.

    Args:
        source: a kiln.Graph, or anything ``kiln.load`` takes (then `bind` and
            `constant_inputs` are passed to it).
        target: "cpu" (LLVM, JIT in this process) or "cuda" (NVRTC; needs a GPU to run).
        fusion: "full" (default), "elementwise" or "none"; every level computes the same.
        threads: worker threads of the compiled code (0: all cores). Models compiled with the
            same value share one default context (and its thread pool).
        verify: check every run against Kiln's reference interpreter (slow; for debugging).
        disable_passes: pass names to skip ("fold,cse" or ["fold", "cse"]).
        cuda_arch: the CUDA architecture ("sm_90" by default).
        context: a kiln.Context to compile in (then leave `threads` at 0; the context's own
            thread count applies).
    """
    if context is not None and threads:
        raise InvalidArgumentError("give threads to kiln.Context(threads=...) when passing a context")
    ctx = context or (source.context if isinstance(source, Graph) and not threads else default_context(threads))
    if isinstance(disable_passes, (list, tuple)):
        disable_passes = ",".join(disable_passes)
    opts = _Options(_choice("target", target, _TARGET), _choice("fusion", fusion, _FUSION), cuda_arch,
                    disable_passes, bool(verify))
    if isinstance(source, Graph):
        if bind or constant_inputs:
            raise InvalidArgumentError("bind and constant_inputs apply when loading: pass them to kiln.load")
        graph = source
    else:
        graph = load(source, bind=bind, constant_inputs=constant_inputs, context=ctx)
    h = ctypes.c_void_p()
    t0 = time.perf_counter()
    with ctx.lock:
        ctx.check(ctx._lib.kiln_compile(ctx.handle, graph.handle, opts.c(), ctypes.byref(h)))
    m = Model._adopt(ctx, h.value, graph, opts)
    m.compile_ms = (time.perf_counter() - t0) * 1e3
    return m


def load_library(path: PathLike, *, context: Optional[Context] = None) -> "Model":
    """A Model from a shared library written by ``Model.export`` (or ``kiln compile``).

    Such a model runs and describes its inputs and outputs; it has no graph, so it cannot
    be exported again or give a fusion report.
    """
    ctx = context or default_context()
    h = ctypes.c_void_p()
    with ctx.lock:
        ctx.check(ctx._lib.kiln_load_library(ctx.handle, os.fsencode(os.fspath(path)), ctypes.byref(h)))
    return Model._adopt(ctx, h.value, None, None)


class _Options:
    """kiln_compile_options with the strings it points to kept alive."""

    def __init__(self, target: int, fusion: int, cuda_arch: Optional[str], disable: Optional[str],
                 verify: bool) -> None:
        self.target, self.fusion, self.verify = target, fusion, verify
        self.cuda_arch = cuda_arch.encode() if cuda_arch else None
        self.disable = disable.encode() if disable else None

    def c(self, cpu: Optional[str] = None, triple: Optional[str] = None) -> Any:
        self._cpu = cpu.encode() if cpu else None
        self._triple = triple.encode() if triple else None
        return ctypes.byref(_capi.CompileOptions(self.target, self.fusion, self.cuda_arch, self.disable, None,
                                                 int(self.verify), self._cpu, self._triple))


class Model(Handle):
    """A compiled model (kiln_executable). Call it with numpy arrays.

    ``model(x, y)`` takes the inputs positionally in graph order (or by name as keywords)
    and returns one array when the model has one output, else a tuple in output order.
    ``model.run(inputs)`` takes a sequence (returns a list) or a dict by input name
    (returns a dict by output name). Inputs are checked against ``model.inputs`` (shape and
    dtype; see ``as_input``) before Kiln runs; outputs are new arrays.
    """

    compile_ms: float = 0.0

    @classmethod
    def _adopt(cls, ctx: Context, handle: int, graph: Optional[Graph], opts: Optional[_Options]) -> "Model":
        m = cls.__new__(cls)
        m._lib = ctx._lib
        m._graph = graph
        m._opts = opts
        m._runs_done = threading.Condition()
        m._own(ctx, handle, ctx._lib.kiln_executable_destroy)
        n_in = m._lib.kiln_executable_num_inputs(handle)
        n_out = m._lib.kiln_executable_num_outputs(handle)
        m.inputs = [io_info(m._lib.kiln_executable_input_info, handle, i) for i in range(n_in)]
        m.outputs = [io_info(m._lib.kiln_executable_output_info, handle, i) for i in range(n_out)]
        return m

    inputs: List[TensorInfo]
    outputs: List[TensorInfo]

    @property
    def graph(self) -> Optional[Graph]:
        """The graph this model was compiled from (None for a loaded library)."""
        return self._graph

    def __repr__(self) -> str:
        def fmt(infos: List[TensorInfo]) -> str:
            return ", ".join(f"{i.name}: {i.dtype}{list(i.shape)}" for i in infos)
        state = " closed" if self.closed else ""
        return f"<kiln.Model{state} ({fmt(self.inputs)}) -> ({fmt(self.outputs)})>"

    # ------------------------------------------------------------------ running
    @staticmethod
    def _tensors(arrays: List[np.ndarray]) -> Any:
        return (_capi.Tensor * max(1, len(arrays)))(*[tensor_of(a) for a in arrays])

    # kiln_run is thread-safe (kiln.h THREADS), so runs take no context lock; close()
    # waits for the runs in flight, since an executable must outlive its last run.
    _runs = 0
    _runs_done: Optional[threading.Condition] = None

    def _call(self, tin: Any, n_in: int, tout: Any, n_out: int) -> None:
        ctx, cv = self.context, self._runs_done
        assert cv is not None
        with cv:
            h = self.handle  # raises when closed
            self._runs += 1
        try:
            ctx.check(self._lib.kiln_run(h, tin, n_in, tout, n_out))
        finally:
            with cv:
                self._runs -= 1
                cv.notify_all()

    def _run(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        outs = [empty_aligned(o.shape, o.dtype) for o in self.outputs]
        self._call(self._tensors(arrays), len(arrays), self._tensors(outs), len(outs))
        return outs

    def _inputs_from(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> List[np.ndarray]:
        names = [i.name for i in self.inputs]
        if kwargs:
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                raise InvalidArgumentError(f"no input named {', '.join(map(repr, unknown))}; the model's inputs "
                                           f"are {', '.join(map(repr, names))}")
            given = list(args) + [None] * (len(names) - len(args))
            for i, n in enumerate(names):
                if n in kwargs:
                    if i < len(args):
                        raise InvalidArgumentError(f"input '{n}' given twice (positionally and by name)")
                    given[i] = kwargs[n]
            missing = [n for n, v in zip(names, given) if v is None]
            if missing:
                raise InvalidArgumentError(f"missing input {', '.join(map(repr, missing))}")
            args = given
        if len(args) != len(names):
            raise InvalidArgumentError(f"the model takes {len(names)} inputs "
                                       f"({', '.join(map(repr, names))}), {len(args)} given")
        return [as_input(x, info) for x, info in zip(args, self.inputs)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the model: one array for one output, else a tuple of arrays."""
        outs = self._run(self._inputs_from(args, kwargs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> Any:
        """Runs the model on a sequence of inputs (returns a list of outputs, in order) or a
        dict by input name (returns a dict by output name)."""
        if isinstance(inputs, Mapping):
            outs = self._run(self._inputs_from((), inputs))
            return {o.name: a for o, a in zip(self.outputs, outs)}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        return self._run(self._inputs_from(list(inputs), {}))

    # ------------------------------------------------------------------ facts
    @property
    def stats(self) -> Dict[str, int]:
        """kiln_exe_stats: kernels per run, bytes moved, arena bytes, flops, cache_hit."""
        s = _capi.ExeStats()
        with self.context.lock:
            self.context.check(self._lib.kiln_executable_stats(self.handle, ctypes.byref(s)))
        return {f: int(getattr(s, f)) for f, _ in _capi.ExeStats._fields_}

    def _need_graph(self, what: str) -> Graph:
        if self._graph is None or self._opts is None:
            raise InvalidArgumentError(f"{what}: this model was loaded from a library and has no graph")
        if self._graph.closed:
            raise InvalidArgumentError(f"{what}: the graph this model was compiled from is closed (keep it open "
                                       "for export and fusion_report)")
        return self._graph

    def fusion_report(self, form: str = "dict") -> Any:
        """The fusion report (docs/fusion-report.md): every kernel with the model nodes it
        covers, its costs, and every fusion refused with the reason.

        Args:
            form: "dict" (the JSON report parsed), "json" (its text) or "text" (for people).
        """
        if form not in ("dict", "json", "text"):
            raise InvalidArgumentError(f"form must be 'dict', 'json' or 'text', not {form!r}")
        g = self._need_graph("fusion_report")
        ctx = self.context
        out = ctypes.c_void_p()
        assert self._opts is not None
        with ctx.lock:
            ctx.check(self._lib.kiln_fusion_report(ctx.handle, g.handle, self._opts.c(), int(form != "text"),
                                                   ctypes.byref(out)))
            text = take_string(ctx, out.value)
        return json.loads(text) if form == "dict" else text

    def export(self, path: PathLike, header: Optional[PathLike] = None, prefix: Optional[str] = None, *,
               cpu: Optional[str] = None, triple: Optional[str] = None) -> str:
        """Writes the model ahead of time as a self-contained shared library (and a C header).

        Args:
            path: the ``.so`` to write.
            header: the C header to write (None: none).
            prefix: the C name prefix of the entry points (``PREFIX_create``, ``PREFIX_run``;
                None: the graph's name).
            cpu: the LLVM CPU to generate code for ("x86-64" runs on any x86-64; None: this
                machine's CPU); triple: another target triple.

        Returns the path written. ``kiln.load_library(path)`` runs it from Python.
        """
        g = self._need_graph("export")
        ctx = self.context
        so = os.fsencode(os.fspath(path))
        h = os.fsencode(os.fspath(header)) if header is not None else None
        assert self._opts is not None
        with ctx.lock:
            ctx.check(self._lib.kiln_export(ctx.handle, g.handle, self._opts.c(cpu, triple), so, h,
                                            prefix.encode() if prefix else None))
        return os.fspath(path)

    def random_inputs(self, seed: int = 0) -> List[np.ndarray]:
        """Inputs of the model's shapes, as ``kiln bench`` makes them: floats uniform in
        [-1, 1), ints in [0, 4), bools 0 or 1."""
        rng = np.random.default_rng(seed)
        out = []
        for i in self.inputs:
            if i.dtype.kind == "f" or i.dtype.name == "bfloat16":
                out.append(rng.uniform(-1, 1, i.shape).astype(i.dtype))
            elif i.dtype.kind == "b":
                out.append(rng.integers(0, 2, i.shape).astype(np.bool_))
            else:
                out.append(rng.integers(0, 4, i.shape).astype(i.dtype))
        return out

    def bench(self, runs: int = 20, warmup: int = 3, inputs: Optional[Sequence[Any]] = None,
              seed: int = 0) -> Dict[str, Any]:
        """Times `runs` runs after `warmup` (inputs: given, or ``random_inputs(seed)``).

        Each time is of one kiln_run call from Python with the inputs and outputs prepared
        beforehand, so it includes the ctypes call (a few microseconds) and nothing else.
        Returns median_ms, min_ms, mean_ms, max_ms, runs, and the model's stats and
        compile_ms. Timings are not tests: the machine's load moves them.
        """
        if runs < 1 or warmup < 0:
            raise InvalidArgumentError(f"bench: runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
        arrays = self._inputs_from(list(inputs) if inputs is not None else self.random_inputs(seed), {})
        outs = [empty_aligned(o.shape, o.dtype) for o in self.outputs]
        tin, tout = self._tensors(arrays), self._tensors(outs)
        times = []
        for r in range(warmup + runs):
            t0 = time.perf_counter()
            self._call(tin, len(arrays), tout, len(outs))
            if r >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        result: Dict[str, Any] = {"median_ms": statistics.median(times), "min_ms": min(times),
                                  "mean_ms": statistics.fmean(times), "max_ms": max(times), "runs": runs,
                                  "warmup": warmup, "threads": self.context.threads,
                                  "compile_ms": self.compile_ms}
        result.update(self.stats)
        return result

    def close(self) -> None:
        """Frees the executable once the runs in flight (other threads') returned (the graph
        and context stay while others use them)."""
        cv = self._runs_done
        if cv is not None:
            with cv:
                cv.wait_for(lambda: self._runs == 0)
                super().close()
        else:
            super().close()
        self._graph = None


__all__ = ["load", "parse", "compile", "load_library", "Model", "KilnError"]
