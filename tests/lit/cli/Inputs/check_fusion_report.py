"""check_fusion_report.py - reads a `kiln dump --fusion-report json` report on stdin,
checks it against the schema of docs/fusion-report.md (every field present with its
type, no unknown field, totals equal to the sums over the kernels) and prints one line
per kernel and per refused fusion for FileCheck. Exits 1 on a schema violation."""
import json
import sys

TOP = {"version": int, "model": str, "fusion": str, "target": str, "kernels": list,
       "refused": list, "totals": dict, "arena_bytes": int}
KERNEL = {"index": int, "name": str, "kind": str, "category": str, "dtype": str,
          "sources": list, "domain": list, "reduce": list, "bytes_read": int,
          "bytes_written": int, "flops": int, "fused": list}
REFUSED = {"producer": str, "consumer": str, "reason": str}
TOTALS = {"kernels": int, "bytes_read": int, "bytes_written": int, "bytes_moved": int,
          "flops": int}
CATEGORIES = {"leaf", "elementwise", "movement", "reduce", "window", "contraction", "opaque"}


def fields(obj, spec, what):
    if set(obj) != set(spec):
        sys.exit(f"{what}: fields {sorted(obj)}, the schema has {sorted(spec)}")
    for k, t in spec.items():
        if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
            sys.exit(f"{what}: {k} is {obj[k]!r}, not {t.__name__}")


r = json.load(sys.stdin)
fields(r, TOP, "report")
assert r["version"] == 1, r["version"]
assert r["fusion"] in ("none", "elementwise", "full"), r["fusion"]
assert r["target"] in ("cpu", "cuda"), r["target"]
fields(r["totals"], TOTALS, "totals")
print(f"report fusion={r['fusion']} target={r['target']} kernels={len(r['kernels'])}")
sums = {"bytes_read": 0, "bytes_written": 0, "flops": 0}
for i, k in enumerate(r["kernels"]):
    fields(k, KERNEL, f"kernel {i}")
    assert k["index"] == i, (k["index"], i)
    assert k["kind"] in ("loop", "gemm", "opaque"), k["kind"]
    assert k["category"] in CATEGORIES, k["category"]
    assert all(isinstance(s, str) for s in k["sources"])
    assert all(isinstance(d, int) and d >= 0 for d in k["domain"] + k["reduce"])
    assert set(k["fused"]) <= {"pack", "epilogue"} and k["kind"] == "gemm" or not k["fused"]
    assert min(k["bytes_read"], k["bytes_written"], k["flops"]) >= 0
    for f in sums:
        sums[f] += k[f]
    print(f"kernel {i} {k['kind']} {k['category']} sources={json.dumps(k['sources'])} "
          f"domain={k['domain']} reduce={k['reduce']} read={k['bytes_read']} "
          f"written={k['bytes_written']} flops={k['flops']} fused={k['fused']}")
t = r["totals"]
assert t["kernels"] == len(r["kernels"]), t
for f in sums:
    assert t[f] == sums[f], (f, t[f], sums[f])
assert t["bytes_moved"] == t["bytes_read"] + t["bytes_written"], t
for i, x in enumerate(r["refused"]):
    fields(x, REFUSED, f"refused {i}")
    print(f"refused {json.dumps(x['producer'])} -> {json.dumps(x['consumer'])}: {x['reason']}")
print(f"totals read={t['bytes_read']} written={t['bytes_written']} flops={t['flops']} "
      f"arena={r['arena_bytes']}")
print("schema ok")
