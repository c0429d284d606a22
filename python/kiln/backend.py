"""kiln.backend: Kiln as an ONNX backend (onnx.backend.base.Backend).

    import kiln.backend
    rep = kiln.backend.prepare(model_proto, "CPU")
    outputs = rep.run([x])                       # a namedtuple-like of numpy arrays
    kiln.backend.run_node(node, [x, y])

so ONNX's own test runner runs on Kiln::

    import onnx.backend.test, kiln.backend
    globals().update(onnx.backend.test.BackendTest(kiln.backend, __name__).test_cases)

Kiln compiles static shapes, and some values it must know at compile time (a Reshape's
shape, a reduction's axes, a Pad's pads, TopK's K). A BackendRep therefore compiles the
model for the inputs it is given:

- symbolic input dims (``dim_param``, or dims with neither a value nor a name) are bound
  to the shapes of the inputs of each run;
- when loading fails because a value Kiln needs at compile time depends on graph inputs
  (Kiln's error names them: "... depends on graph input 'shape'"), those inputs are
  frozen: the model is compiled with their values of this run as constants
  (kiln.load's ``constant_inputs``), and fed the other inputs. This is what the C
  conformance runner (tests/conformance/runner.c) does with each test data set.

Compiled models are kept per input shapes and frozen values (the last few), so repeated
runs with the same shapes compile once. ``is_compatible`` says False for models with
types Kiln cannot represent (sequences, maps, optionals, sparse tensors; string,
complex, uint16/32/64, float8/4, int4/uint4 tensors), the cases the C runner skips.
"""
from __future__ import annotations

import collections
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from . import model as _model
from .errors import KilnError, UnsupportedError
from .graph import Graph

# Options every prepare() passes to kiln.compile unless given (the conformance runner sets
# threads=1 here, as the C runner does).
DEFAULT_OPTIONS: Dict[str, Any] = {}
CACHE_SIZE = 8
_DEPENDS = re.compile(r"depends on graph input '([^']*)'")
# ONNX elem types Kiln has a dtype for (0, undefined, says nothing)
_KILN_ELEM_TYPES = {0, TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT16,
                    TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT16,
                    TensorProto.DOUBLE, TensorProto.BFLOAT16}
_DTYPE_ATTRS = {"to", "dtype", "output_dtype"}


# ------------------------------------------------------------------ what Kiln can represent
def _type_problem(tp: onnx.TypeProto) -> Optional[str]:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return _elem_problem(tp.tensor_type.elem_type)
    if kind is None:
        return None
    return f"non-tensor type {kind.replace('_type', '').replace('sparse_tensor', 'sparse tensor')}"


def _elem_problem(t: int) -> Optional[str]:
    if t in _KILN_ELEM_TYPES:
        return None
    name = TensorProto.DataType.Name(t).lower() if t in TensorProto.DataType.values() else str(t)
    return f"dtype {name}"


def _graph_problem(g: onnx.GraphProto) -> Optional[str]:
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        p = _type_problem(vi.type)
        if p:
            return p
    for t in g.initializer:
        p = _elem_problem(t.data_type)
        if p:
            return p
    for st in g.sparse_initializer:
        p = _elem_problem(st.values.data_type)
        if p:
            return p
    for n in g.node:
        for a in n.attribute:
            p = _attribute_problem(a)
            if p:
                return p
    return None


def _attribute_problem(a: onnx.AttributeProto) -> Optional[str]:
    if a.name in ("value_string", "value_strings"):
        return "dtype string"
    if a.name in _DTYPE_ATTRS and a.type == onnx.AttributeProto.INT:
        p = _elem_problem(a.i)
        if p:
            return p
    tensors = ([a.t] if a.HasField("t") else []) + list(a.tensors)
    tensors += [s.values for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else [])]
    tensors += [s.values for s in a.sparse_tensors]
    for t in tensors:
        p = _elem_problem(t.data_type)
        if p:
            return p
    for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
        p = _graph_problem(g)
        if p:
            return p
    for tp in ([a.tp] if a.HasField("tp") else []) + list(a.type_protos):
        p = _type_problem(tp)
        if p:
            return p
    return None


def unsupported_reason(model: ModelProto) -> Optional[str]:
    """Why Kiln's API cannot represent this model's values at all, or None."""
    return _graph_problem(model.graph)


# ------------------------------------------------------------------ the prepared model
class KilnBackendRep(BackendRep):
    """A model prepared for Kiln: compiled per input shapes (and frozen values) on demand."""

    def __init__(self, model: ModelProto, device: str = "CPU", **options: Any) -> None:
        self.options = {**DEFAULT_OPTIONS, **options}
        self.options.setdefault("target", "cuda" if Device(device).type == DeviceType.CUDA else "cpu")
        model = _copy_with_named_dims(model)
        self._bytes = model.SerializeToString()
        inits = {t.name for t in model.graph.initializer}
        # each fed input: its name and, per dim, the symbol bound to the data's size (or None)
        self._inputs: List[Tuple[str, List[Optional[str]]]] = [
            (i.name, [d.dim_param or None for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input if i.name not in inits]
        self._outputs = [o.name for o in model.graph.output]
        self._frozen: List[str] = []
        self._cache: "collections.OrderedDict[Any, _model.Model]" = collections.OrderedDict()
        # Without symbols, compile now: errors surface at prepare, and runs need no compile
        # unless the model turns out to need frozen inputs.
        if not any(p for _, dims in self._inputs for p in dims):
            try:
                self._cache[self._key({}, {})] = self._compile({}, {})
            except KilnError as e:
                if not self._add_frozen(e):
                    raise

    def _add_frozen(self, e: KilnError) -> bool:
        """Adds the graph inputs that a load error says must be known; False when none new."""
        fed = {n for n, _ in self._inputs}
        new = [n for n in _DEPENDS.findall(str(e)) if n in fed and n not in self._frozen]
        self._frozen.extend(new)
        return bool(new)

    def _key(self, binds: Dict[str, int], frozen: Dict[str, np.ndarray]) -> Any:
        return (tuple(sorted(binds.items())),
                tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in sorted(frozen.items())))

    def _compile(self, binds: Dict[str, int], frozen: Dict[str, np.ndarray]) -> _model.Model:
        opts = dict(self.options)
        graph = _model.load(self._bytes, bind=binds, constant_inputs=frozen, context=opts.pop("context", None))
        with graph:
            return _model.compile(graph, **opts)

    def _model_for(self, arrays: Dict[str, np.ndarray]) -> _model.Model:
        binds: Dict[str, int] = {}
        for name, dims in self._inputs:
            shape = arrays[name].shape
            for d, sym in enumerate(dims):
                if sym is not None and d < len(shape):
                    if binds.setdefault(sym, shape[d]) != shape[d]:
                        raise UnsupportedError(f"input '{name}': dim {d} ('{sym}') is {shape[d]}, "
                                               f"another input binds '{sym}' to {binds[sym]}")
        while True:
            frozen = {n: arrays[n] for n in self._frozen}
            key = self._key(binds, frozen)
            m = self._cache.get(key)
            if m is not None:
                self._cache.move_to_end(key)
                return m
            try:
                m = self._compile(binds, frozen)
            except KilnError as e:
                if self._add_frozen(e):
                    continue
                raise
            self._cache[key] = m
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)[1].close()
            return m

    def run(self, inputs: Any, **kwargs: Any) -> Tuple[Any, ...]:
        """Runs the model: inputs as a list (graph input order, initializers left out), a
        dict by name, or one array. Returns the outputs in graph output order."""
        names = [n for n, _ in self._inputs]
        if isinstance(inputs, dict):
            arrays = {n: np.asarray(inputs[n]) for n in names}
        else:
            seq = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(seq) != len(names):
                raise KilnError(f"the model takes {len(names)} inputs ({', '.join(names)}), {len(seq)} given")
            arrays = {n: np.asarray(x) for n, x in zip(names, seq)}
        m = self._model_for(arrays)
        outs = m.run([arrays[i.name] for i in m.inputs])
        return namedtupledict("Outputs", self._outputs)(*outs)


def _copy_with_named_dims(model: ModelProto) -> ModelProto:
    """The model with every input dim that has neither a value nor a name named
    (``kiln_unk_I_D``), so that it is bound to the data's size like a dim_param."""
    out = ModelProto()
    out.CopyFrom(model)
    for i, inp in enumerate(out.graph.input):
        if inp.type.WhichOneof("value") != "tensor_type":
            continue
        for d, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and not dim.HasField("dim_param"):
                dim.dim_param = f"kiln_unk_{i}_{d}"
    return out


# ------------------------------------------------------------------ the backend
class KilnBackend(Backend):
    """onnx.backend.base.Backend on Kiln (CPU through LLVM; CUDA where a GPU is present)."""

    _cuda: Optional[bool] = None

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        """False when the model has values Kiln cannot represent (see unsupported_reason)."""
        return unsupported_reason(model) is None and cls.supports_device(device)

    @classmethod
    def prepare(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> KilnBackendRep:
        """Loads (and, without symbolic dims, compiles) the model; kwargs go to kiln.compile
        (fusion, threads, verify, ...)."""
        super().prepare(model, device, **kwargs)  # onnx.checker
        return KilnBackendRep(model, device, **kwargs)

    @classmethod
    def run_model(cls, model: ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> Tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Optional[Sequence[Tuple[np.dtype, Tuple[int, ...]]]] = None,
                 **kwargs: Any) -> Tuple[Any, ...]:
        """Runs one node on `inputs` (in the node's input order, empty names left out)."""
        opset = kwargs.pop("opset_version", None)
        super().run_node(node, inputs, device, outputs_info, **({"opset_version": opset} if opset else {}))
        names = [n for n in node.input if n]
        arrays = [np.asarray(x) for x in (inputs.values() if isinstance(inputs, dict) else inputs)]
        if len(arrays) != len(names):
            raise KilnError(f"node '{node.name}' ({node.op_type}) has {len(names)} inputs, {len(arrays)} given")
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in zip(names, arrays)]
        if outputs_info:
            outs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                    for n, (dt, shape) in zip(node.output, outputs_info)]
        else:
            outs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = helper.make_graph([node], f"{node.op_type or 'node'}_graph", ins, outs)
        opsets = [helper.make_opsetid(node.domain or "", opset or onnx.defs.onnx_opset_version())]
        model = helper.make_model(graph, opset_imports=opsets)
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """CPU always; CUDA when Kiln has a CUDA backend and finds a GPU and driver."""
        kind = Device(device).type
        if kind == DeviceType.CPU:
            return True
        if kind != DeviceType.CUDA:
            return False
        if cls._cuda is None:
            cls._cuda = _probe_cuda()
        return cls._cuda


def _probe_cuda() -> bool:
    g = Graph("cuda_probe")
    x = g.input("x", (1,))
    g.output("y", g.exp(x))
    try:
        with _model.compile(g, target="cuda") as m:
            m(np.zeros(1, np.float32))
        return True
    except KilnError:  # no GPU or driver, no CUDA backend built, NVRTC missing or failing
        return False
    finally:
        g.close()


prepare = KilnBackend.prepare
run_model = KilnBackend.run_model
run_node = KilnBackend.run_node
supports_device = KilnBackend.supports_device
is_compatible = KilnBackend.is_compatible
