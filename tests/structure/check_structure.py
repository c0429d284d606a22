#!/usr/bin/env python3
"""check_structure.py - the structure rules Kiln keeps (STYLE.md, issue 10), checked on
the sources and on the objects of a build:

  - no file in passes/ or codegen/ over 1,200 lines;
  - no function anywhere in the library or the tool over 120 lines;
  - no test of which target it is in passes/ (they ask the target's description);
  - no circle of calls between the files of a module (from the objects' symbol tables:
    file A defines what B uses and B defines what A uses, directly or around a loop).

    check_structure.py SOURCE_DIR BUILD_DIR

Prints each rule with its violations, and a closing 'structure: N passed, N failed' line
(a rule is one check); exits 1 when any rule is broken.
"""
import os
import re
import subprocess
import sys

MODULES = ["ir", "runtime", "frontend", "passes", "codegen", "cuda", "driver", "tools"]
FILE_LIMIT = {"passes": 1200, "codegen": 1200}
FUNC_LIMIT = 120


def c_files(src, mod):
    d = os.path.join(src, mod)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".c")) if os.path.isdir(d) else []


def functions(path):
    """(name, first line, length) of each function definition: a line at column 0 that
    opens a body, up to the '}' at column 0 that closes it."""
    out, start, name = [], None, None
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    for i, line in enumerate(lines):
        if start is None:
            m = re.match(r"^[A-Za-z_][^;=]*?\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", line)
            if m and not line.startswith(("typedef", "struct ", "enum ", "#")) and (
                    line.rstrip().endswith("{") or not line.rstrip().endswith(";")):
                # the body opens on this line or a following one before any ';'
                j = i
                while j < len(lines) and "{" not in lines[j] and ";" not in lines[j]:
                    j += 1
                if j < len(lines) and "{" in lines[j] and lines[j].rstrip().endswith("{"):
                    start, name = i, m.group(1)
        elif line.startswith("}"):
            out.append((name, start + 1, i - start + 1))
            start = None
    return out


def symbols(obj):
    """(defined, undefined) global symbols of an object file."""
    res = subprocess.run(["nm", "-g", obj], capture_output=True, text=True)
    d, u = set(), set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            u.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRC":
            d.add(parts[2])
    return d, u


def cycles(edges):
    """Every elementary cycle found by a depth-first walk (enough to report a circle)."""
    found, seen = [], set()

    def walk(node, path, on_path):
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cyc = tuple(path[path.index(nxt):])
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc)
            elif len(path) < 8:
                walk(nxt, path + [nxt], on_path | {nxt})

    for n in sorted(edges):
        walk(n, [n], {n})
    return found


def main():
    src, build = sys.argv[1], sys.argv[2]
    checks = []  # (rule, violations)

    size, funcs = [], []
    for mod in MODULES:
        for f in c_files(src, mod):
            rel = os.path.relpath(f, src)
            n = sum(1 for _ in open(f, encoding="utf-8", errors="replace"))
            if mod in FILE_LIMIT and n > FILE_LIMIT[mod]:
                size.append(f"{rel}: {n} lines (at most {FILE_LIMIT[mod]})")
            funcs += [f"{rel}:{line}: {name} is {length} lines (at most {FUNC_LIMIT})"
                      for name, line, length in functions(f) if length > FUNC_LIMIT]
    checks.append(("files of passes/ and codegen/ at most 1,200 lines", size))
    checks.append((f"functions at most {FUNC_LIMIT} lines", funcs))
    target = []
    for f in c_files(src, "passes"):
        bad = re.findall(r"KILN_TARGET_(?:CPU|CUDA)", open(f, encoding="utf-8").read())
        if bad:
            target.append(f"{os.path.relpath(f, src)}: tests which target it is ({len(bad)}x KILN_TARGET_*)")
    checks.append(("passes/ asks the target's description, never which target", target))
    objdirs = {"ir": "kiln_ir", "runtime": "kiln_rt", "frontend": "kiln_frontend", "passes": "kiln_passes",
               "codegen": "kiln_llvm", "cuda": "kiln_cuda", "driver": "kiln"}
    for mod, tgt in objdirs.items():
        d = os.path.join(build, "CMakeFiles", tgt + ".dir", mod)
        if not os.path.isdir(d):
            continue
        syms = {o[:-4]: symbols(os.path.join(d, o)) for o in sorted(os.listdir(d)) if o.endswith(".c.o")}
        edges = {a: {b for b in syms if b != a and syms[a][1] & syms[b][0]} for a in syms}
        circ = [f"a circle of calls: " + " -> ".join(x + ".c" for x in c + (c[0],)) for c in cycles(edges)]
        checks.append((f"{mod}/: no circle of calls between its files ({len(syms)} files)", circ))
    passed = failed = 0
    for rule, bad in checks:
        print(("FAIL " if bad else "ok   ") + rule)
        for b in bad:
            print("       " + b)
        failed += bool(bad)
        passed += not bad
    print(f"structure: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
