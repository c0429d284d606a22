#!/usr/bin/env python3
"""make_files.py - small files for the CLI lit tests.

  make_files.py sym OUT.onnx           an ONNX model y = x + x, x f32 [batch, 3] ('batch'
                                       a symbolic dim, ONNX dim_param)
  make_files.py npy OUT.npy V D0 D1..  a float32 .npy of shape [D0, D1, ...] filled with V
"""
import sys

import numpy as np


def main(argv):
    if len(argv) >= 3 and argv[1] == "sym":
        import onnx
        from onnx import TensorProto, helper
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
        node = helper.make_node("Add", ["x", "x"], ["y"], name="Add_0")
        graph = helper.make_graph([node], "sym", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.save(model, argv[2])
        return 0
    if len(argv) >= 4 and argv[1] == "npy":
        np.save(argv[2], np.full([int(d) for d in argv[4:]], float(argv[3]), dtype=np.float32))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
