#!/usr/bin/env python3
"""fusion.py - the fusion benchmark of issue 3: every example model at --fusion none,
elementwise and full, then memory-bound microbenchmarks against a copy kernel's
bandwidth and against ONNX Runtime, all measured in one run and written to
bench/results/fusion-DATE.md (+ fusion-DATE.png, a chart of time and bytes moved).

Usage: bench/fusion.py BUILDDIR [--runs N] [--reps R] [--threads T] [--skip-models]
                        [--skip-micro] [--install-matplotlib] [--out DIR]
       (`make bench-fusion` runs it with --install-matplotlib)

Models: examples/models/*.onnx where that folder has models, else the example models that
examples/gen_models.py writes into BUILDDIR/models (generated when missing), plus the
PyTorch exports bert_layer (BERT-base encoder layer 0) and resnet18 with refilled
weights (from BUILDDIR/torch_models, or refilled into BUILDDIR/bench_fusion). Each is
timed with `kiln bench M --fusion L --json --threads T --runs N`, R times interleaved
over the levels; the table has the median of the R medians, and kiln's kernels,
bytes_moved and arena_bytes. Then the layout pass: every model it runs channels last
(plus the mobilenet_v2 and efficientnet_b0 exports) at --fusion full, against the same
with --disable-pass layout (channels first), interleaved.

Microbenchmarks on a [32768, 768] f32 tensor, written as ONNX models by this script:
  copy                Identity (Kiln lowers it to one plain load/store LOOP kernel; this
                      script checks that in `kiln dump --kernels`)
  bias_gelu           x + b[768], then erf GELU spelled as PyTorch exports it
  layernorm           LayerNormalization over the last axis, with scale and bias
  softmax             Softmax(axis=-1)
  residual_layernorm  LayerNormalization(x + r)
Kiln runs each at --fusion full; ONNX Runtime (CPUExecutionProvider, all graph
optimizations, T intra-op threads, outputs bound to preallocated buffers so no copy is
timed) runs in a child process started with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset
(env -u), which halve OpenBLAS's speed on this machine. Bandwidth counts compulsory bytes
only: every input and initializer read once, the output written once.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = ["none", "elementwise", "full"]
ROWS, COLS = 32768, 768
MICRO = ["copy", "bias_gelu", "layernorm", "softmax", "residual_layernorm"]
ORT_ENV_UNSET = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]


def sh(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"fusion.py: command failed ({p.returncode}): {' '.join(cmd)}\n"
                 f"{(p.stderr or p.stdout).rstrip()}")
    return p.stdout


# ------------------------------------------------------------------------ the models
def example_models(build):
    ex = sorted(os.path.join(ROOT, "examples", "models", f)
                for f in os.listdir(os.path.join(ROOT, "examples", "models"))
                if f.endswith(".onnx")) if os.path.isdir(
        os.path.join(ROOT, "examples", "models")) else []
    if ex:
        return ex
    d = os.path.join(build, "models")
    gen = os.path.join(ROOT, "examples", "gen_models.py")
    if not os.path.exists(os.path.join(d, "cnn.onnx")) or \
            os.path.getmtime(gen) > os.path.getmtime(os.path.join(d, "cnn.onnx")):
        print(f"generating the example models into {d}", flush=True)
        sh([sys.executable, gen, d])
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".onnx"))


def torch_models(build, names):
    sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
    out = []
    for name in names:
        p = os.path.join(build, "torch_models", name + ".onnx")
        if not os.path.exists(p):
            import torch_refill
            src = os.path.join(ROOT, "tests", "models", "torch", name + ".onnx")
            p = os.path.join(build, "bench_fusion", name + ".onnx")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if not os.path.exists(p) or os.path.getmtime(p) < os.path.getmtime(src):
                print(f"refilling {src} -> {p}", flush=True)
                torch_refill.refill(src, p)
        out.append(p)
    return out


def micro_models(d):
    """Writes the microbenchmark models into d; returns {name: path}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    shape = [ROWS, COLS]

    def vec(name, lo=None):
        a = rng.uniform(0.5, 1.5, COLS) if lo else rng.standard_normal(COLS) * 0.1
        return numpy_helper.from_array(a.astype(np.float32), name)

    def scalar(name, v):
        return numpy_helper.from_array(np.array(v, np.float32), name)

    N = helper.make_node
    specs = {
        "copy": (["x"], [N("Identity", ["x"], ["y"])], []),
        "bias_gelu": (["x"], [
            N("Add", ["x", "b"], ["h"]),
            N("Div", ["h", "sqrt2"], ["hs"]),
            N("Erf", ["hs"], ["e"]),
            N("Add", ["e", "one"], ["e1"]),
            N("Mul", ["h", "e1"], ["he"]),
            N("Mul", ["he", "half"], ["y"]),
        ], [vec("b"), scalar("sqrt2", np.sqrt(2.0)), scalar("one", 1.0),
            scalar("half", 0.5)]),
        "layernorm": (["x"], [N("LayerNormalization", ["x", "g", "beta"], ["y"],
                                axis=-1, epsilon=1e-5)], [vec("g", 1), vec("beta")]),
        "softmax": (["x"], [N("Softmax", ["x"], ["y"], axis=-1)], []),
        "residual_layernorm": (["x", "r"], [
            N("Add", ["x", "r"], ["s"]),
            N("LayerNormalization", ["s", "g", "beta"], ["y"], axis=-1, epsilon=1e-5),
        ], [vec("g", 1), vec("beta")]),
    }
    paths = {}
    for name, (ins, nodes, inits) in specs.items():
        g = helper.make_graph(
            nodes, name, [helper.make_tensor_value_info(i, TensorProto.FLOAT, shape)
                          for i in ins],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="kiln-bench-fusion")
        m.ir_version = 8
        onnx.checker.check_model(m)
        p = os.path.join(d, name + ".onnx")
        onnx.save(m, p)
        paths[name] = p
    return paths


def compulsory_bytes(path):
    """Every graph input and initializer read once plus every output written once."""
    import onnx
    m = onnx.load(path)
    n = 0
    for vi in list(m.graph.input) + list(m.graph.output):
        n += 4 * int(np.prod([d.dim_value for d in vi.type.tensor_type.shape.dim]))
    for t in m.graph.initializer:
        n += 4 * int(np.prod(t.dims)) if len(t.dims) else 4
    return n


# ------------------------------------------------------------------------ measuring
def kiln_bench(kiln, model, level, runs, threads, budget_s, probe, extra=()):
    """kiln bench --json; a kernel that takes long gets fewer runs (at least 3) so that
    one call stays near budget_s, and one under a millisecond more (up to 50x), whose
    20-run median swung by 2x with the machine's noise (the 20-microsecond transformer).
    probe: {key: ms of one run} remembered across calls. extra: more kiln options."""
    key = (model, level, tuple(extra))
    if key not in probe:
        j = json.loads(sh([kiln, "bench", model, "--fusion", level, "--json", "--runs", "1",
                           "--warmup", "1", "--threads", str(threads), *extra]))
        probe[key] = j["median_ms"]
    n = max(3, min(runs if probe[key] >= 1.0 else 50 * runs, int(budget_s * 1e3 / max(probe[key], 1e-3))))
    warm = 3 if n >= runs else 1
    out = sh([kiln, "bench", model, "--fusion", level, "--json", "--runs", str(n),
              "--warmup", str(warm), "--threads", str(threads), *extra])
    return json.loads(out)


def channels_last(kiln, model):
    """Whether the layout pass runs some of model's convolutions channels last."""
    return "conv_cl" in sh([kiln, "dump", model, "--print-after", "layout"])


def check_copy_kernel(kiln, path):
    """Says whether Kiln compiled the copy model to one LOOP kernel that only loads."""
    out = sh([kiln, "dump", path, "--kernels", "--fusion", "full"])
    kernels = [l for l in out.splitlines() if l.startswith("  kernel ")]
    body = [l.strip() for l in out.splitlines() if l.startswith("    %")]
    alu_f = [l for l in body if "alu" in l and " f32 " in l]
    ok = len(kernels) == 1 and " loop " in kernels[0] and not alu_f
    return ok, (kernels[0].strip() if kernels else "no kernel")


def ort_child(paths, runs, threads, budget_s):
    """In the child process: ORT median ms for each model, as JSON on stdout."""
    import onnxruntime as ort
    res = {"ort_version": ort.__version__,
           "env_unset": {v: v not in os.environ for v in ORT_ENV_UNSET}}
    rng = np.random.default_rng(0)
    for name, path in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        keep = []
        for i in sess.get_inputs():
            x = rng.standard_normal([ROWS, COLS]).astype(np.float32)
            keep.append(x)
            io.bind_cpu_input(i.name, x)
        for o in sess.get_outputs():
            y = np.empty([ROWS, COLS], np.float32)
            keep.append(y)
            io.bind_output(o.name, "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        one = time.perf_counter() - t0
        for _ in range(2):
            sess.run_with_iobinding(io)
        t = []
        for _ in range(max(3, min(runs, int(budget_s / max(one, 1e-6))))):
            t0 = time.perf_counter()
            sess.run_with_iobinding(io)
            t.append((time.perf_counter() - t0) * 1e3)
        res[name] = statistics.median(t)
    print(json.dumps(res))


def run_ort(paths, runs, threads, budget_s):
    cmd = ["env"] + [a for v in ORT_ENV_UNSET for a in ("-u", v)] + \
        [sys.executable, os.path.abspath(__file__), "--ort-child", json.dumps(paths),
         "--runs", str(runs), "--threads", str(threads), "--budget-s", str(budget_s)]
    return json.loads(sh(cmd).strip().splitlines()[-1]), " ".join(cmd[:1 + 2 * len(ORT_ENV_UNSET)])


# ------------------------------------------------------------------------ output
def chart(rows, path, install):
    try:
        import matplotlib
    except ImportError:
        if not install:
            return "matplotlib is not installed: chart skipped (pip install matplotlib, " \
                   "or run `make bench-fusion`, which installs it)"
        print("matplotlib is missing: installing it with pip for the chart", flush=True)
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return f"matplotlib could not be installed (pip: {p.stderr.strip()[-200:]}): " \
                   "chart skipped, the table is complete"
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["name"] for r in rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(models)), 8))
    w = 0.8 / len(LEVELS)
    for ax, key, label, scale in ((axes[0], "median_ms", "median time (ms)", 1.0),
                                  (axes[1], "bytes_moved", "bytes moved (MB)", 1e-6)):
        for j, lv in enumerate(LEVELS):
            ys = [next((r[key] * scale for r in rows if r["name"] == m and r["fusion"] == lv),
                       0) for m in models]
            ax.bar([i + (j - 1) * w for i in range(len(models))], ys, w, label=lv)
        ax.set_yscale("log")
        ax.set_ylabel(label + ", log scale")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20)
        ax.legend(title="--fusion")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("Kiln per fusion level")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builddir", nargs="?")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per kiln bench")
    ap.add_argument("--reps", type=int, default=3, help="kiln bench calls per measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=2.0,
                    help="a slow kernel gets fewer than --runs runs (at least 3) so that one "
                    "kiln bench call takes about this long")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--install-matplotlib", action="store_true",
                    help="pip install matplotlib when it is missing (else the chart is "
                    "skipped with a message)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--ort-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_child:
        ort_child(json.loads(args.ort_child), args.runs, args.threads, args.budget_s)
        return 0
    if not args.builddir:
        ap.error("BUILDDIR is required")
    build = os.path.abspath(args.builddir)
    kiln = os.path.join(build, "kiln")
    if not os.access(kiln, os.X_OK):
        sys.exit(f"fusion.py: no kiln at {kiln} (build the kiln_cli target)")
    os.environ.setdefault("KILN_CACHE_DIR", os.path.join(build, "cache"))
    probe = {}
    date = datetime.date.today().isoformat()
    os.makedirs(args.out, exist_ok=True)
    # a partial run gets its own file so that it never overwrites the day's full one
    part = "-micro" if args.skip_models else "-models" if args.skip_micro else ""
    md_path = os.path.join(args.out, f"fusion-{date}{part}.md")
    png_path = os.path.join(args.out, f"fusion-{date}.png")
    load0 = os.getloadavg()[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    blas_env = ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in ORT_ENV_UNSET)
    md = [f"# Fusion benchmark, {date}", "",
          f"`bench/fusion.py {args.builddir} --runs {args.runs} --reps {args.reps} "
          f"--threads {args.threads}` at commit {commit}; {os.cpu_count()} cores ({cpu}), "
          f"{args.threads} threads for Kiln and ONNX Runtime. Each time is the median of "
          f"{args.reps} `kiln bench --runs {args.runs}` medians (fewer runs, at least 3, "
          f"where one run takes longer than {args.budget_s:g} s / {args.runs}; up to 50x "
          f"more where one run takes under 1 ms). "
          f"Timings on a shared machine are noisy: compare within one file. Kiln ran "
          f"with {blas_env}.", ""]

    if not args.skip_models:
        models = example_models(build) + torch_models(build, ["bert_layer", "resnet18"])
        rows = []
        print(f"models at --fusion {'/'.join(LEVELS)} ({len(models)} models, "
              f"{args.reps} x {args.runs} runs each)", flush=True)
        for m in models:
            got = {lv: [] for lv in LEVELS}
            for _ in range(args.reps):
                for lv in LEVELS:
                    got[lv].append(kiln_bench(kiln, m, lv, args.runs, args.threads,
                                             args.budget_s, probe))
            name = os.path.basename(m)[:-len(".onnx")]
            print(f"  {name}: " + ", ".join(
                f"{lv} {statistics.median(g['median_ms'] for g in got[lv]):.3f} ms"
                for lv in LEVELS), flush=True)
            for lv in LEVELS:
                j = got[lv][0]
                rows.append({"name": name, "fusion": lv, "kernels": j["kernels"],
                             "bytes_moved": j["bytes_moved"], "arena_bytes": j["arena_bytes"],
                             "median_ms": statistics.median(g["median_ms"] for g in got[lv])})
        base = {r["name"]: r["median_ms"] for r in rows if r["fusion"] == "none"}
        hdr = "| model | fusion | kernels | bytes moved (MB) | arena (MB) | median ms | " \
              "speedup vs none |"
        md += ["## Example models per fusion level", "", hdr,
               "|---|---|--:|--:|--:|--:|--:|"]
        for r in rows:
            md.append(f"| {r['name']} | {r['fusion']} | {r['kernels']} | "
                      f"{r['bytes_moved'] / 1e6:.2f} | {r['arena_bytes'] / 1e6:.2f} | "
                      f"{r['median_ms']:.3f} | {base[r['name']] / r['median_ms']:.2f}x |")
        # The layout pass at full: channels last (the default) against --disable-pass layout
        # (channels first), interleaved, on the models it changes.
        conv = [m for m in models + torch_models(build, ["mobilenet_v2", "efficientnet_b0"])
                if channels_last(kiln, m)]
        print(f"layout at --fusion full: channels last / first ({len(conv)} models)", flush=True)
        md += ["", "## Layout at --fusion full: channels last (default) and first", "",
               "`kiln bench M --fusion full` against the same with `--disable-pass layout`, "
               "interleaved.", "",
               "| model | channels last ms | channels first ms | speedup |", "|---|--:|--:|--:|"]
        for m in conv:
            got = {"last": [], "first": []}
            for _ in range(args.reps):
                got["last"].append(kiln_bench(kiln, m, "full", args.runs, args.threads, args.budget_s, probe))
                got["first"].append(kiln_bench(kiln, m, "full", args.runs, args.threads, args.budget_s, probe,
                                               ("--disable-pass", "layout")))
            last = statistics.median(g["median_ms"] for g in got["last"])
            first = statistics.median(g["median_ms"] for g in got["first"])
            name = os.path.basename(m)[:-len(".onnx")]
            print(f"  {name}: channels last {last:.3f} ms, first {first:.3f} ms", flush=True)
            md.append(f"| {name} | {last:.3f} | {first:.3f} | {first / last:.2f}x |")
        md.append("")
        why = chart(rows, png_path, args.install_matplotlib)
        md += ["", f"Chart: `{os.path.basename(png_path)}` (time and bytes moved per "
               "level per model, log scale)." if why is None else f"Chart: none ({why}).", ""]
        if why:
            print(why)

    if not args.skip_micro:
        paths = micro_models(os.path.join(build, "bench_fusion", "micro"))
        ok, kline = check_copy_kernel(kiln, paths["copy"])
        print(f"microbenchmarks on [{ROWS}, {COLS}] f32 (copy kernel: {kline}"
              f"{'' if ok else ' -- NOT a plain load/store kernel'})", flush=True)
        nbytes = {n: compulsory_bytes(p) for n, p in paths.items()}
        kres = {n: [] for n in MICRO}
        for _ in range(args.reps):  # interleaved so that load changes hit every kernel
            for n in MICRO:
                kres[n].append(kiln_bench(kiln, paths[n], "full", args.runs, args.threads,
                                          args.budget_s, probe))
        kms = {n: statistics.median(j["median_ms"] for j in kres[n]) for n in MICRO}
        ort_res, ort_env = run_ort(paths, args.runs * args.reps, args.threads,
                                   args.budget_s * args.reps)
        note = (f"ONNX Runtime {ort_res['ort_version']} ran in a child process started as "
                f"`{ort_env} python3 ...`, i.e. with "
                f"{' and '.join(ORT_ENV_UNSET)} unset for that command only "
                f"(unset there: {all(ort_res['env_unset'].values())}); median of up to "
                f"{args.runs * args.reps} runs, outputs bound to preallocated buffers")
        print(note)
        gbs = lambda n, ms: nbytes[n] / (ms * 1e-3) / 1e9  # noqa: E731
        kcopy, ocopy = gbs("copy", kms["copy"]), gbs("copy", ort_res["copy"])
        md += [f"## Memory-bound microbenchmarks, [{ROWS}, {COLS}] f32", "",
               f"Kiln at --fusion full; copy = `Identity`, which Kiln compiles to "
               f"`{kline}`{'' if ok else ' (NOT a plain load/store kernel!)'}. GB/s over "
               "compulsory bytes (inputs and initializers read once, output written "
               "once). \"% copy\" is against the copy kernel measured in the same run: "
               "Kiln's for Kiln; for ONNX Runtime both against Kiln's copy and against "
               "ONNX Runtime's own Identity. Kiln/ORT is ORT ms / Kiln ms (above 1: "
               "Kiln is faster). " + note + ". Kiln's copy, like every Kiln kernel with an "
               "output of 64 MiB or more, writes its output with streaming (non-temporal) "
               "stores; with ordinary stores it ran at about 25 GB/s here "
               "(bench/results/fusion-2026-11-26-micro.md).", "",
               "| kernel | MB | Kiln kernels | Kiln ms | Kiln GB/s | Kiln % copy | ORT ms | "
               "ORT GB/s | ORT % Kiln copy | ORT % ORT copy | Kiln/ORT |",
               "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        print(f"{'kernel':<20}{'kiln ms':>9}{'GB/s':>7}{'%copy':>7}{'ort ms':>9}{'GB/s':>7}"
              f"{'%copy':>7}{'kiln/ort':>9}")
        for n in MICRO:
            kg, og = gbs(n, kms[n]), gbs(n, ort_res[n])
            md.append(f"| {n} | {nbytes[n] / 1e6:.1f} | {kres[n][0]['kernels']} | "
                      f"{kms[n]:.2f} | {kg:.1f} | {100 * kg / kcopy:.0f}% | "
                      f"{ort_res[n]:.2f} | {og:.1f} | {100 * og / kcopy:.0f}% | "
                      f"{100 * og / ocopy:.0f}% | {ort_res[n] / kms[n]:.2f} |")
            print(f"{n:<20}{kms[n]:>9.2f}{kg:>7.1f}{100 * kg / kcopy:>6.0f}%"
                  f"{ort_res[n]:>9.2f}{og:>7.1f}{100 * og / ocopy:>6.0f}%"
                  f"{ort_res[n] / kms[n]:>9.2f}")
        md += ["", "Target (issue 3): each fused kernel at >= 75% of the copy bandwidth.", ""]

    # the machine is shared: say how busy it was, since every time above depends on it
    md += [f"Load average (1 min) at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}, "
           f"on {os.cpu_count()} cores.", ""]
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    print("\n".join(l for l in md if l.startswith("|")) if not args.skip_models else "")
    print(f"wrote {md_path}" + (f" and {png_path}" if os.path.exists(png_path) and
                                not args.skip_models else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
