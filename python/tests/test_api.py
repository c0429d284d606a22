"""The kiln package's API: the builder, loading, compiling, running, errors, export,
fusion report, bench, lifetimes. Every result is compared with numpy or ONNX Runtime."""
import ctypes
import math
import os
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.uniform(-1, 1, shape).astype(dtype)


def onnx_model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def ort_run(model, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


# ------------------------------------------------------------------ the builder
def test_builder_mlp_matches_numpy():
    W, b = rand(4, 3), rand(3)
    g = kiln.Graph("mlp")
    x = g.input("x", (2, 4))
    g.output("y", g.relu(x @ g.constant(W, "W") + g.constant(b, "b")))
    m = kiln.compile(g)
    xv = rand(2, 4)
    np.testing.assert_allclose(m(xv), np.maximum(xv @ W + b, 0), rtol=1e-5, atol=1e-6)
    assert m.inputs == [kiln.TensorInfo("x", (2, 4), np.dtype(np.float32))]
    assert [o.name for o in m.outputs] == ["y"]


UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "erf": np.vectorize(math.erf), "relu": lambda v: np.maximum(v, 0),
}
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "max": np.maximum, "min": np.minimum,
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_builder_unary(op):
    g = kiln.Graph(op)
    x = g.input("x", (3, 5))
    g.output("y", getattr(g, op)(x))
    xv = RNG.uniform(0.1, 2, (3, 5)).astype(np.float32)  # in every op's domain
    np.testing.assert_allclose(kiln.compile(g)(xv), UNARY[op](xv), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_builder_binary_broadcasts(op):
    g = kiln.Graph(op)
    a, b = g.input("a", (2, 3, 4)), g.input("b", (3, 1))
    g.output("y", getattr(g, op)(a, b))
    av, bv = RNG.uniform(0.5, 2, (2, 3, 4)).astype(np.float32), RNG.uniform(0.5, 2, (3, 1)).astype(np.float32)
    np.testing.assert_allclose(kiln.compile(g)(av, bv), BINARY[op](av, bv), rtol=1e-5)


def test_builder_operators_and_python_scalars():
    g = kiln.Graph("ops")
    a, b = g.input("a", (4,)), g.input("b", (4,))
    g.output("y", (2.0 * a - b / 4 + 1) ** 2 + (-a))
    av, bv = rand(4), rand(4)
    np.testing.assert_allclose(kiln.compile(g)(av, bv), (2 * av - bv / 4 + 1) ** 2 - av, rtol=1e-5)


def test_builder_movement_reductions_where_cast():
    g = kiln.Graph("mix")
    x = g.input("x", (2, 3, 4))
    t = g.transpose(x, (2, 0, 1))                       # [4, 2, 3]
    r = g.reshape(t, (4, 6))
    c = g.concat([r, r * 2], axis=1)                    # [4, 12]
    s = g.reduce_sum(c, [1], keepdims=True)             # [4, 1]
    mx = g.reduce_max(c, -1)                            # [4]
    sm = g.softmax(c, axis=-1)
    w = g.where(g.cast(g.relu(c), np.bool_), c, 0.5)
    i = g.cast(c * 10, np.int32)
    for name, v in [("s", s), ("mx", mx), ("sm", sm), ("w", w), ("i", i)]:
        g.output(name, v)
    assert sm.shape == (4, 12) and i.dtype == np.int32 and s.shape == (4, 1)
    xv = rand(2, 3, 4)
    rv = xv.transpose(2, 0, 1).reshape(4, 6)
    cv = np.concatenate([rv, rv * 2], axis=1)
    e = np.exp(cv - cv.max(-1, keepdims=True))
    got = kiln.compile(g).run({"x": xv})
    assert list(got) == ["s", "mx", "sm", "w", "i"]
    np.testing.assert_allclose(got["s"], cv.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mx"], cv.max(-1), rtol=1e-6)
    np.testing.assert_allclose(got["sm"], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["w"], np.where(cv > 0, cv, 0.5), rtol=1e-6)
    np.testing.assert_array_equal(got["i"], (cv * 10).astype(np.int32))


def test_builder_conv2d_matches_onnxruntime():
    xv, wv = rand(1, 4, 9, 9), rand(6, 2, 3, 3)
    g = kiln.Graph("conv")
    x = g.input("x", xv.shape)
    g.output("y", g.conv2d(x, g.constant(wv), strides=(2, 1), pads=(1, 0, 1, 2), groups=2))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 1], pads=[1, 0, 1, 2], group=2)
    ref = onnx_model([conv], [vi("x", xv.shape)], [vi("y", None)], [numpy_helper.from_array(wv, "w")])
    (want,) = ort_run(ref, {"x": xv})
    np.testing.assert_allclose(kiln.compile(g)(xv), want, rtol=1e-4, atol=1e-5)


def test_builder_error_raises_at_the_call_naming_the_op():
    g = kiln.Graph("bad")
    a, b = g.input("a", (2, 3)), g.input("b", (4, 5))
    with pytest.raises(kiln.ShapeError, match="matmul") as e:
        g.matmul(a, b)
    assert e.value.status_name == "KILN_ERR_SHAPE" and isinstance(e.value, ValueError)
    g.output("y", a)
    with pytest.raises(kiln.KilnError, match="builder error"):  # the error sticks to the graph
        kiln.compile(g)


def test_builder_rejects_foreign_values():
    g1, g2 = kiln.Graph("one"), kiln.Graph("two")
    a = g1.input("a", (2,))
    with pytest.raises(kiln.InvalidArgumentError, match="another graph"):
        g2.exp(a)
    with pytest.raises(kiln.InvalidArgumentError, match="dtype"):
        g1.input("z", (2,), np.uint16)


def test_text_round_trip():
    g = kiln.Graph("rt")
    x = g.input("x", (3,))
    g.output("y", g.tanh(x) * 3.0)
    g2 = kiln.parse(g.to_text())
    xv = rand(3)
    np.testing.assert_allclose(kiln.compile(g2)(xv), np.tanh(xv) * 3, rtol=1e-5)
    assert g2.to_text() == g.to_text()


# ------------------------------------------------------------------ loading ONNX
def _reshape_model():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    return onnx_model(nodes, [vi("x", ["batch", 6]), vi("shape", [2], TensorProto.INT64)], [vi("y", None)])


def test_load_bind_and_constant_inputs():
    m = _reshape_model()
    with pytest.raises(kiln.KilnError, match="depends on graph input 'shape'"):
        kiln.load(m, bind={"batch": 2})
    shape = np.array([3, -1], np.int64)
    g = kiln.load(m, bind={"batch": 2}, constant_inputs={"shape": shape})
    assert [(i.name, i.shape) for i in g.inputs] == [("x", (2, 6))]
    xv = rand(2, 6)
    (want,) = ort_run(m, {"x": xv, "shape": shape})
    np.testing.assert_array_equal(kiln.compile(g)(xv), want)


@pytest.mark.parametrize("form", ["path", "bytes", "proto"])
def test_load_forms(tmp_path, form):
    W = rand(5, 2)
    mm = onnx_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [vi("x", [1, 5])], [vi("y", [1, 2])],
                    [numpy_helper.from_array(W, "W")])
    src = {"bytes": mm.SerializeToString(), "proto": mm}.get(form)
    if form == "path":
        src = tmp_path / "m.onnx"
        onnx.save(mm, str(src))
    xv = rand(1, 5)
    np.testing.assert_allclose(kiln.compile(src)(xv), xv @ W, rtol=1e-5)


def test_load_errors():
    with pytest.raises(kiln.KilnIOError, match="/no/such/model.onnx") as e:
        kiln.load("/no/such/model.onnx")
    assert isinstance(e.value, OSError)
    with pytest.raises(kiln.ParseError, match="not a valid ONNX model"):
        kiln.load(b"\x08\x07 this is not protobuf")
    bad = onnx_model([helper.make_node("NoSuchOp", ["x"], ["y"], name="the_odd_node")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(kiln.UnsupportedError, match='NoSuchOp.*"the_odd_node"') as e:
        kiln.compile(bad)
    assert isinstance(e.value, NotImplementedError)
    with pytest.raises(kiln.InvalidArgumentError, match="bind"):
        kiln.load(_reshape_model(), bind={"batch": -1})
    with pytest.raises(kiln.InvalidArgumentError, match="fusion must be one of"):
        kiln.compile(_reshape_model(), fusion="most")


# ------------------------------------------------------------------ running
def compile_two_in_two_out():
    g = kiln.Graph("two")
    a, b = g.input("a", (2, 3)), g.input("b", (2, 3))
    g.output("sum", a + b)
    g.output("prod", a * b)
    return kiln.compile(g)


@pytest.fixture(scope="module")
def two_in_two_out():
    return compile_two_in_two_out()


def test_run_forms(two_in_two_out):
    m = two_in_two_out
    av, bv = rand(2, 3), rand(2, 3)
    s, p = m(av, bv)
    np.testing.assert_allclose(s, av + bv, rtol=1e-6)
    np.testing.assert_allclose(p, av * bv, rtol=1e-6)
    s2, p2 = m(av, b=bv)
    np.testing.assert_array_equal(s2, s)
    out = m.run({"b": bv, "a": av})
    assert list(out) == ["sum", "prod"]
    np.testing.assert_array_equal(out["prod"], p)
    lst = m.run([av, bv])
    assert isinstance(lst, list) and np.array_equal(lst[0], s)
    # non-contiguous views and nested lists are converted
    big = rand(3, 2).T
    np.testing.assert_allclose(m(big, bv.tolist())[0], big + bv, rtol=1e-6)


def test_run_input_errors(two_in_two_out):
    m = two_in_two_out
    av = rand(2, 3)
    with pytest.raises(kiln.InvalidArgumentError, match=r"input 'a': shape \[3, 2\], the model takes \[2, 3\]"):
        m(rand(3, 2), av)
    with pytest.raises(kiln.InvalidArgumentError, match="input 'b': dtype float64, the model takes float32"):
        m(av, av.astype(np.float64))
    with pytest.raises(kiln.InvalidArgumentError, match="takes 2 inputs"):
        m(av)
    with pytest.raises(kiln.InvalidArgumentError, match="no input named 'c'"):
        m.run({"a": av, "c": av})
    with pytest.raises(kiln.InvalidArgumentError, match="input 'b': dtype int64"):
        m(av, np.array([[1, 2, 3], [4, 5, 6]]))
    np.testing.assert_allclose(m(av, [[1, 2, 3], [4, 5, 6]])[0], av + np.float32([[1, 2, 3], [4, 5, 6]]), rtol=1e-6)


def test_run_refuses_lossy_list_conversion():
    g = kiln.Graph("ints")
    g.output("y", g.input("i", (2,), np.int64) * 2)
    m = kiln.compile(g)
    assert m([3, 4]).tolist() == [6, 8]
    with pytest.raises(kiln.InvalidArgumentError, match="float64 values, the model takes int64"):
        m([1.5, 2.0])


def test_data_error_names_the_node():
    # an index out of range at run time is Kiln's own check (kiln.h: names the node)
    g = helper.make_node("Gather", ["data", "idx"], ["y"], name="lookup")
    m = onnx_model([g], [vi("data", [4, 2]), vi("idx", [3], TensorProto.INT64)], [vi("y", None)])
    model = kiln.compile(m)
    ok = model(rand(4, 2), np.array([0, 3, -1]))
    assert ok.shape == (3, 2)
    with pytest.raises(kiln.InvalidArgumentError, match="lookup"):
        model(rand(4, 2), np.array([0, 9, 1]))


def in_threads(work, n, meanwhile=lambda: None):
    """work(k) for k in range(n), each in its own thread; meanwhile() on this one."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    meanwhile()
    for t in threads:
        t.join()


def test_concurrent_runs_from_threads(two_in_two_out):
    m = two_in_two_out
    inputs = [(rand(2, 3), rand(2, 3)) for _ in range(8)]
    wrong = []

    def work(k):
        for _ in range(50):
            a, b = inputs[k]
            s, p = m(a, b)
            if not (np.allclose(s, a + b) and np.allclose(p, a * b)):
                wrong.append(k)

    in_threads(work, 8)
    assert wrong == []


def test_concurrent_failing_runs_carry_kilns_message():
    # runs take no Python lock (kiln_run is thread-safe); a failed run's message is copied
    # with kiln_last_error_copy, so every failure still names the node
    g = helper.make_node("Gather", ["data", "idx"], ["y"], name="lookup")
    model = kiln.compile(onnx_model([g], [vi("data", [4, 2]), vi("idx", [3], TensorProto.INT64)], [vi("y", None)]))
    data, bad, good = rand(4, 2), np.array([0, 9, 1]), np.array([0, 3, 1])
    problems = []

    def work(k):
        for _ in range(30):
            try:
                if k % 2:
                    model(data, bad)
                    problems.append("no error")
                elif not np.array_equal(model(data, good), data[good]):
                    problems.append("wrong")
            except kiln.InvalidArgumentError as e:
                if k % 2 == 0 or "lookup" not in str(e):
                    problems.append(str(e))

    in_threads(work, 6)
    assert problems == []


def test_close_waits_for_runs_in_flight():
    # close() from one thread while others run: no run sees a freed executable; each
    # either completes correctly or raises "closed"
    m = compile_two_in_two_out()  # its own: the module's shared one stays open
    a, b = rand(2, 3), rand(2, 3)
    outcomes = []
    started = threading.Barrier(5)

    def work():
        started.wait()
        for _ in range(200):
            try:
                s, _ = m(a, b)
                outcomes.append(bool(np.allclose(s, a + b)))
            except kiln.InvalidArgumentError as e:
                outcomes.append("closed" in str(e))
                return

    in_threads(lambda k: work(), 4, meanwhile=lambda: (started.wait(), m.close()))
    assert m.closed and outcomes and all(outcomes)


# ------------------------------------------------------------------ lifetimes
def test_model_keeps_its_context_alive():
    ctx = kiln.Context(threads=1, cache_dir="")
    g = kiln.Graph("life", context=ctx)
    x = g.input("x", (2,))
    g.output("y", g.exp(x))
    m = kiln.compile(g, context=ctx)
    ctx.close()           # deferred: the graph and the model still use it
    g.close()
    assert ctx._handle is not None and ctx.closed
    xv = rand(2)
    np.testing.assert_allclose(m(xv), np.exp(xv), rtol=1e-6)
    m.close()             # the last user: the context goes now
    assert ctx._handle is None
    with pytest.raises(kiln.InvalidArgumentError, match="closed"):
        m(xv)
    with pytest.raises(kiln.InvalidArgumentError, match="closed"):
        kiln.Graph("late", context=ctx)


def test_compile_with_threads_and_closed_graph(tmp_path):
    g = kiln.Graph("thr")
    g.output("y", g.exp(g.input("x", (3,))))
    m = kiln.compile(g, threads=2)  # the graph's context has 0 threads: compiled in another
    assert m.context.threads == 2 and g.context.threads == 0
    xv = rand(3)
    np.testing.assert_allclose(m(xv), np.exp(xv), rtol=1e-6)
    assert m.fusion_report()["totals"]["kernels"] == m.stats["kernels"]
    g.close()
    np.testing.assert_allclose(m(xv), np.exp(xv), rtol=1e-6)  # runs need no graph
    for call in (m.fusion_report, lambda: m.export(tmp_path / "lib.so")):
        with pytest.raises(kiln.InvalidArgumentError, match="graph this model was compiled from is closed"):
            call()


def test_context_manager_and_del():
    with kiln.Context(threads=1, cache_dir="") as ctx:
        with kiln.Graph("cm", context=ctx) as g:
            g.output("y", g.sqrt(g.input("x", (3,))))
            with kiln.compile(g, context=ctx) as m:
                assert m(np.array([4, 9, 16], np.float32)).tolist() == [2, 3, 4]
            assert m.closed
        assert g.closed
    assert ctx._handle is None
    ctx2 = kiln.Context(threads=1, cache_dir="")
    g2 = kiln.Graph("d", context=ctx2)
    del g2  # __del__ frees the graph and releases the context
    assert ctx2._users == 0


def test_kiln_library_override(build_dir):
    code = "import kiln; print(kiln.library_path())"
    env = dict(os.environ, KILN_LIBRARY="/nonexistent/libkiln.so", PYTHONPATH=os.path.dirname(kiln.__path__[0]))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "/nonexistent/libkiln.so" in p.stderr
    lib = os.path.join(build_dir, "lib", "libkiln.so")
    env["KILN_LIBRARY"] = lib
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == lib


# ------------------------------------------------------------------ export, report, bench
def _cnn(build_dir):
    path = os.path.join(build_dir, "models", "cnn.onnx")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: examples/gen_models.py {build_dir}/models makes it")
    return path


def test_export_then_load_library_ctypes_and_cli(tmp_path, build_dir, kiln_cli):
    m = kiln.compile(_cnn(build_dir))
    xv = rand(*m.inputs[0].shape)
    want = m(xv)
    so, h = tmp_path / "libcnn.so", tmp_path / "cnn.h"
    assert m.export(so, header=h, prefix="cnn") == str(so)
    assert "int cnn_run(cnn *model" in h.read_text()
    # 1. through Kiln's loader
    lib = kiln.load_library(so)
    assert lib.inputs == m.inputs and lib.outputs == m.outputs
    np.testing.assert_allclose(lib(xv), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(kiln.InvalidArgumentError, match="no graph"):
        lib.fusion_report()
    # 2. the generated C entry points, called through ctypes (no Kiln in the loop)
    c = ctypes.CDLL(str(so))
    inst = ctypes.c_void_p()
    assert c.cnn_create(ctypes.byref(inst), None) == 0
    out = np.zeros(m.outputs[0].shape, np.float32)
    c.cnn_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    assert c.cnn_run(inst, xv.ctypes.data, out.ctypes.data) == 0
    c.cnn_destroy(inst)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # 3. kiln run lib.so
    np.save(tmp_path / "x.npy", xv)
    subprocess.run([kiln_cli, "run", str(so), "--input", str(tmp_path / "x.npy"), "--output-dir", str(tmp_path)],
                   check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "output_0.npy"), want, rtol=1e-5, atol=1e-5)


def test_export_error_is_io(tmp_path, build_dir):
    m = kiln.compile(_cnn(build_dir))
    with pytest.raises(kiln.KilnError):
        m.export(tmp_path / "no" / "such" / "dir" / "lib.so")


def test_fusion_report(build_dir):
    m = kiln.compile(_cnn(build_dir))
    r = m.fusion_report()
    assert r["model"] == "cnn" and r["fusion"] == "full" and r["target"] == "cpu"
    assert r["totals"]["kernels"] == len(r["kernels"]) == m.stats["kernels"] > 0
    assert all(k["sources"] for k in r["kernels"])
    assert r["totals"]["flops"] == m.stats["flops"] and r["arena_bytes"] == m.stats["arena_bytes"]
    assert m.fusion_report("text").startswith("fusion report for 'cnn' (fusion full, target cpu)")
    none = kiln.compile(_cnn(build_dir), fusion="none").fusion_report()
    assert none["fusion"] == "none" and len(none["kernels"]) > len(r["kernels"])


def test_bench(build_dir):
    m = kiln.compile(_cnn(build_dir), threads=1)
    b = m.bench(runs=5, warmup=1)
    assert b["runs"] == 5 and b["threads"] == 1
    assert 0 < b["min_ms"] <= b["median_ms"] <= b["max_ms"]
    assert b["kernels"] == m.stats["kernels"] and b["compile_ms"] > 0
    with pytest.raises(kiln.InvalidArgumentError, match="runs"):
        m.bench(runs=0)


@pytest.mark.parametrize("fusion", ["none", "elementwise", "full"])
def test_fusion_levels_agree_with_onnxruntime(build_dir, fusion):
    path = _cnn(build_dir)
    m = kiln.compile(path, fusion=fusion)
    xv = rand(*m.inputs[0].shape)
    (want,) = ort_run(onnx.load(path), {m.inputs[0].name: xv})
    np.testing.assert_allclose(m(xv), want, rtol=1e-3, atol=1e-4)


def test_errors_map_status_codes():
    from kiln.errors import error_for
    for code, cls in [(1, kiln.InvalidArgumentError), (2, kiln.KilnIOError), (3, kiln.ParseError),
                      (4, kiln.UnsupportedError), (5, kiln.ShapeError), (6, kiln.OutOfMemoryError),
                      (7, kiln.BackendError), (8, kiln.NoDeviceError), (9, kiln.InternalError)]:
        e = error_for(code, "msg")
        assert type(e) is cls and e.status == code and str(e) == "msg" and isinstance(e, kiln.KilnError)
