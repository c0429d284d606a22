"""kiln.Graph: a model graph, loaded (kiln.load) or built op by op in Python.

The builder mirrors kiln.h's: each op is a method returning a Value, and Values have
the arithmetic operators (``+ - * / ** @``, unary ``-``), with Python numbers becoming
scalars of the other operand's dtype. A builder error (wrong shapes, an unknown axis)
raises at the call that caused it, with Kiln's message naming the op; the graph keeps
that error (kiln.h: builder errors stick), so build a new graph after one.
"""
from __future__ import annotations

import ctypes
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _capi, _dtypes
from ._core import Context, Handle, TensorInfo, contiguous, default_context, io_info, shape_tuple, take_string
from .errors import InvalidArgumentError, error_for

DTypeLike = Any  # a numpy dtype, a numpy scalar type or a name ("float32")
Operand = Union["Value", int, float, bool]


class Value:
    """A value of a graph under construction: an input, a constant or an op's result."""

    __slots__ = ("graph", "id")
    __array_priority__ = 1000  # numpy array <op> Value goes to Value's reflected operators

    def __init__(self, graph: "Graph", vid: int) -> None:
        self.graph = graph
        self.id = vid

    def _info(self) -> Tuple[int, Tuple[int, ...]]:
        dt, rank = ctypes.c_int(), ctypes.c_int32()
        dims = (ctypes.c_int64 * _capi.MAX_RANK)()
        st = self.graph._lib.kiln_value_info(self.graph.handle, _capi.Value(self.id), ctypes.byref(dt),
                                             ctypes.byref(rank), dims)
        if st != _capi.OK:
            raise error_for(st, f"value {self.id} is not in the graph")
        return dt.value, shape_tuple(rank.value, dims)

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the value."""
        return _dtypes.to_numpy(self._info()[0])

    @property
    def shape(self) -> Tuple[int, ...]:
        """The (static) shape of the value."""
        return self._info()[1]

    def __repr__(self) -> str:
        dt, shape = self._info()
        return f"<kiln.Value %{self.id}: {_dtypes.NAMES[dt]}{list(shape)}>"

    def __add__(self, o: Operand) -> "Value": return self.graph.add(self, o)
    def __radd__(self, o: Operand) -> "Value": return self.graph.add(o, self)
    def __sub__(self, o: Operand) -> "Value": return self.graph.sub(self, o)
    def __rsub__(self, o: Operand) -> "Value": return self.graph.sub(o, self)
    def __mul__(self, o: Operand) -> "Value": return self.graph.mul(self, o)
    def __rmul__(self, o: Operand) -> "Value": return self.graph.mul(o, self)
    def __truediv__(self, o: Operand) -> "Value": return self.graph.div(self, o)
    def __rtruediv__(self, o: Operand) -> "Value": return self.graph.div(o, self)
    def __pow__(self, o: Operand) -> "Value": return self.graph.pow(self, o)
    def __rpow__(self, o: Operand) -> "Value": return self.graph.pow(o, self)
    def __matmul__(self, o: "Value") -> "Value": return self.graph.matmul(self, o)
    def __rmatmul__(self, o: "Value") -> "Value": return self.graph.matmul(o, self)
    def __neg__(self) -> "Value": return self.graph.neg(self)


def _binary(op: str, doc: str) -> Any:
    def method(self: "Graph", a: Operand, b: Operand) -> Value:
        a, b = self._operands(a, b)
        return self._check(getattr(self._lib, "kiln_" + op)(self.handle, a, b), op)
    method.__name__ = op
    method.__doc__ = doc
    return method


def _unary(op: str, doc: str) -> Any:
    def method(self: "Graph", x: Value) -> Value:
        return self._check(getattr(self._lib, "kiln_" + op)(self.handle, self._value(x)), op)
    method.__name__ = op
    method.__doc__ = doc
    return method


class Graph(Handle):
    """A Kiln graph. ``Graph(name)`` starts an empty one to build; ``kiln.load`` reads one.

    Example::

        g = kiln.Graph("mlp")
        x = g.input("x", (1, 4))
        y = g.relu(x @ g.constant(W) + g.constant(b))
        g.output("y", y)
        model = kiln.compile(g)
    """

    def __init__(self, name: str = "graph", *, context: Optional[Context] = None) -> None:
        ctx = context or default_context()
        self._lib = ctx._lib
        h = ctypes.c_void_p()
        with ctx.lock:
            ctx.check(self._lib.kiln_graph_create(ctx.handle, name.encode(), ctypes.byref(h)))
        self.name = name
        self._own(ctx, h.value, self._lib.kiln_graph_destroy)

    @classmethod
    def _adopt(cls, ctx: Context, handle: int, name: str) -> "Graph":
        g = cls.__new__(cls)
        g._lib = ctx._lib
        g.name = name
        g._own(ctx, handle, ctx._lib.kiln_graph_destroy)
        return g

    def __repr__(self) -> str:
        if self.closed:
            return f"<kiln.Graph '{self.name}' closed>"
        return (f"<kiln.Graph '{self.name}': {len(self.inputs)} inputs, "
                f"{len(self.outputs)} outputs>")

    # ------------------------------------------------------------------ queries
    @property
    def inputs(self) -> List[TensorInfo]:
        """The graph inputs (name, shape, dtype), in order."""
        n = self._lib.kiln_graph_num_inputs(self.handle)
        return [io_info(self._lib.kiln_graph_input_info, self.handle, i) for i in range(n)]

    @property
    def outputs(self) -> List[TensorInfo]:
        """The graph outputs (name, shape, dtype), in order."""
        n = self._lib.kiln_graph_num_outputs(self.handle)
        return [io_info(self._lib.kiln_graph_output_info, self.handle, i) for i in range(n)]

    def to_text(self) -> str:
        """The graph in Kiln's textual IR (what ``kiln dump`` prints; ``kiln.parse`` reads it)."""
        with self.context.lock:
            return take_string(self.context, self._lib.kiln_graph_to_text(self.context.handle, self.handle))

    def compile(self, **options: Any) -> Any:
        """``kiln.compile(self, **options)``."""
        from .model import compile as _compile
        return _compile(self, **options)

    # ------------------------------------------------------------------ helpers
    def _check(self, v: _capi.Value, what: str) -> Value:
        if v.id < 0:
            st = self._lib.kiln_graph_status(self.handle)
            msg = self._lib.kiln_graph_error(self.handle)
            text = msg.decode("utf-8", "replace") if msg else ""
            raise error_for(st or _capi.ERR_INVALID_ARGUMENT, text if st else f"{what}: invalid operand")
        return Value(self, v.id)

    def _value(self, x: Any) -> _capi.Value:
        if not isinstance(x, Value):
            raise InvalidArgumentError(f"expected a kiln.Value, got {type(x).__name__}")
        if x.graph is not self:
            raise InvalidArgumentError("the value belongs to another graph")
        return _capi.Value(x.id)

    def _operands(self, a: Operand, b: Operand) -> Tuple[_capi.Value, _capi.Value]:
        """Two operands, a Python number becoming a scalar of the other's dtype."""
        if not isinstance(a, Value) and not isinstance(b, Value):
            raise InvalidArgumentError("at least one operand must be a kiln.Value")
        if not isinstance(a, Value):
            a = self.scalar(a, b.dtype)  # type: ignore[union-attr]
        if not isinstance(b, Value):
            b = self.scalar(b, a.dtype)
        return self._value(a), self._value(b)

    # ------------------------------------------------------------------ leaves
    def input(self, name: str, shape: Sequence[int], dtype: DTypeLike = np.float32) -> Value:
        """A graph input of the given (static) shape and dtype."""
        dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        v = self._lib.kiln_input(self.handle, name.encode(), _dtypes.from_numpy(dtype), len(shape), dims)
        return self._check(v, f"input '{name}'")

    def constant(self, array: Any, name: Optional[str] = None, dtype: Optional[DTypeLike] = None) -> Value:
        """A constant holding a copy of `array` (converted to `dtype` when given)."""
        arr = contiguous(array, dtype)
        code = _dtypes.from_numpy(arr.dtype)
        dims = (ctypes.c_int64 * max(1, arr.ndim))(*arr.shape)
        nm = (name or "constant").encode()
        v = self._lib.kiln_constant(self.handle, nm, code, arr.ndim, dims, arr.ctypes.data)
        return self._check(v, f"constant '{name or 'constant'}'")

    def scalar(self, value: float, dtype: DTypeLike = np.float32) -> Value:
        """A rank-0 constant."""
        return self._check(self._lib.kiln_scalar(self.handle, _dtypes.from_numpy(dtype), float(value)), "scalar")

    def output(self, name: str, value: Value) -> None:
        """Marks `value` as the graph output `name` (outputs keep the order of these calls)."""
        st = self._lib.kiln_output(self.handle, name.encode(), self._value(value))
        if st != _capi.OK:
            msg = self._lib.kiln_graph_error(self.handle)
            raise error_for(st, msg.decode("utf-8", "replace") if msg else f"output '{name}'")

    # ------------------------------------------------------------------ elementwise
    add = _binary("add", "a + b, broadcasting with numpy's rules.")
    sub = _binary("sub", "a - b, broadcasting.")
    mul = _binary("mul", "a * b, broadcasting.")
    div = _binary("div", "a / b, broadcasting.")
    pow = _binary("pow", "a ** b, broadcasting.")
    max = _binary("max", "The elementwise maximum, broadcasting.")
    min = _binary("min", "The elementwise minimum, broadcasting.")
    neg = _unary("neg", "-x")
    exp = _unary("exp", "e ** x")
    log = _unary("log", "The natural logarithm.")
    sqrt = _unary("sqrt", "The square root.")
    tanh = _unary("tanh", "The hyperbolic tangent.")
    sigmoid = _unary("sigmoid", "1 / (1 + exp(-x))")
    erf = _unary("erf", "The error function.")
    relu = _unary("relu", "max(x, 0)")

    def cast(self, x: Value, dtype: DTypeLike) -> Value:
        """x converted to `dtype`."""
        return self._check(self._lib.kiln_cast(self.handle, self._value(x), _dtypes.from_numpy(dtype)), "cast")

    def where(self, cond: Value, a: Operand, b: Operand) -> Value:
        """a where cond (a bool value) holds, else b; broadcasting."""
        va, vb = self._operands(a, b)
        return self._check(self._lib.kiln_where(self.handle, self._value(cond), va, vb), "where")

    # ------------------------------------------------------------------ movement
    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        """x with a new shape of the same number of elements."""
        dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        return self._check(self._lib.kiln_reshape(self.handle, self._value(x), len(shape), dims), "reshape")

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        """x with its axes permuted: output axis i is input axis perm[i]."""
        p = (ctypes.c_int32 * max(1, len(perm)))(*perm)
        if len(perm) != len(x.shape):
            raise InvalidArgumentError(f"transpose: {len(perm)} axes in perm for a rank-{len(x.shape)} value")
        return self._check(self._lib.kiln_transpose(self.handle, self._value(x), p), "transpose")

    def concat(self, xs: Sequence[Value], axis: int) -> Value:
        """The values joined along `axis`."""
        arr = (_capi.Value * max(1, len(xs)))(*[self._value(x) for x in xs])
        return self._check(self._lib.kiln_concat(self.handle, len(xs), arr, axis), "concat")

    # ------------------------------------------------------------------ reductions
    def _reduce(self, fn: Any, what: str, x: Value, axes: Union[int, Sequence[int]], keepdims: bool) -> Value:
        ax = [axes] if isinstance(axes, int) else list(axes)
        arr = (ctypes.c_int32 * max(1, len(ax)))(*ax)
        return self._check(fn(self.handle, self._value(x), len(ax), arr, int(keepdims)), what)

    def reduce_sum(self, x: Value, axes: Union[int, Sequence[int]], keepdims: bool = False) -> Value:
        """The sum over `axes` (negative counts from the end)."""
        return self._reduce(self._lib.kiln_reduce_sum, "reduce_sum", x, axes, keepdims)

    def reduce_max(self, x: Value, axes: Union[int, Sequence[int]], keepdims: bool = False) -> Value:
        """The maximum over `axes` (negative counts from the end)."""
        return self._reduce(self._lib.kiln_reduce_max, "reduce_max", x, axes, keepdims)

    def softmax(self, x: Value, axis: int = -1) -> Value:
        """exp(x - max) / sum(exp(x - max)) along `axis`."""
        return self._check(self._lib.kiln_softmax(self.handle, self._value(x), axis), "softmax")

    # ------------------------------------------------------------------ contractions
    matmul = _binary("matmul", "numpy's matmul (batched, broadcasting the batch dims).")

    def conv2d(self, x: Value, w: Value, strides: Sequence[int] = (1, 1),
               pads: Sequence[int] = (0, 0, 0, 0), groups: int = 1) -> Value:
        """2-D convolution of NCHW `x` with OIHW weights `w`; pads are top, left, bottom, right."""
        if len(strides) != 2 or len(pads) != 4:
            raise InvalidArgumentError("conv2d: strides takes 2 values and pads 4 (top, left, bottom, right)")
        st = (ctypes.c_int64 * 2)(*strides)
        pd = (ctypes.c_int64 * 4)(*pads)
        return self._check(self._lib.kiln_conv2d(self.handle, self._value(x), self._value(w), st, pd, groups),
                           "conv2d")
