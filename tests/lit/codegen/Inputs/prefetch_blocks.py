"""prefetch_blocks.py - reads an LLVM module (kiln dump --llvm) on stdin and prints, for
function FN (argv[1]), one line per basic block that prefetches: the number of prefetches
and which of the markers it holds (maxnum: a max reduction's loop; fmuladd: polynomial
work such as exp's), so a lit test can say in which loop the prefetches went."""
import re
import sys

fn = sys.argv[1]
body, inside = [], False
for line in sys.stdin:
    if line.startswith("define") and ("@" + fn + "(") in line:
        inside = True
    elif inside and line.startswith("}"):
        break
    elif inside:
        body.append(line)
blocks, cur = [], None
for line in body:
    if re.match(r"^[A-Za-z0-9_.]+:", line):
        cur = {"prefetch": 0, "maxnum": False, "fmuladd": False}
        blocks.append(cur)
    elif cur is not None:
        cur["prefetch"] += "@llvm.prefetch" in line
        cur["maxnum"] |= "@llvm.maxnum" in line
        cur["fmuladd"] |= "fmuladd" in line or "fma." in line
for b in blocks:
    if b["prefetch"]:
        marks = [m for m in ("maxnum", "fmuladd") if b[m]]
        print("prefetching block: %d prefetches, %s" % (b["prefetch"], " ".join(marks) or "no marker"))
