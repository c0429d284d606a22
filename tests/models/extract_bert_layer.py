#!/usr/bin/env python3
"""extract_bert_layer.py [SRC.onnx] [OUT.onnx] - cuts encoder layer 0 out of the PyTorch
export of BERT-base (tests/models/torch/bert_base.onnx) and writes it as
tests/models/torch/bert_layer.onnx: "a transformer encoder layer as PyTorch exports it"
for issue 3's kernel-count target.

Inputs of the cut: the hidden states entering layer 0 (the embeddings' LayerNorm output,
[1, 128, 768]) and the additive attention mask as the graph computes it (the Where
output, [1, 1, 128, 128], added to the attention scores); output: layer 0's output (its
second LayerNorm). Batch 1 and sequence length 128, as exported. The source's weights are
already stripped (empty tensors with "kiln-stats" doc strings), and the extractor copies
the initializers as they are, so torch_refill.py refills this model like the others.
"""
import os
import sys

import numpy as np
import onnx
import onnx.utils
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "torch", "bert_base.onnx")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "torch", "bert_layer.onnx")

HIDDEN = "/m/embeddings/LayerNorm/LayerNormalization_output_0"
MASK = "/m/Where_1_output_0"
LAYER_OUT = "/m/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0"

m = onnx.load(SRC)
consumers = {i for n in m.graph.node if n.name.startswith("/m/encoder/layer.0/")
             for i in n.input}
for t in (HIDDEN, MASK):
    if t not in consumers:
        sys.exit(f"extract_bert_layer: layer 0 does not read {t}: the export changed")
# onnx's shape inference cannot follow the export's mask arithmetic (it leaves the batch
# and mask dims symbolic), so the cut's boundary gets the shapes onnxruntime computes for
# the full model with its exported [1, 128] inputs.
F = onnx.TensorProto.FLOAT
e = onnx.utils.Extractor(m)
for name, shape in ((HIDDEN, [1, 128, 768]), (MASK, [1, 1, 128, 128]),
                    (LAYER_OUT, [1, 128, 768])):
    e.value_infos[name] = onnx.helper.make_tensor_value_info(name, F, shape)
sub = e.extract_model([HIDDEN, MASK], [LAYER_OUT])
# the copied value_info holds those symbolic dims; infer them afresh from the fixed inputs
del sub.graph.value_info[:]
sub = onnx.shape_inference.infer_shapes(sub, strict_mode=True)
sub.graph.name = "bert_base_encoder_layer0"
sub.graph.doc_string = ("Encoder layer 0 of tests/models/torch/bert_base.onnx, cut by "
                        "tests/models/extract_bert_layer.py")
# the checker refuses the stripped (empty) weights: check a copy with zeros in them
filled = onnx.ModelProto()
filled.CopyFrom(sub)
for t in filled.graph.initializer:
    if t.doc_string.startswith("kiln-stats"):
        z = np.zeros(tuple(t.dims), onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        t.CopyFrom(numpy_helper.from_array(z, t.name))
onnx.checker.check_model(filled, full_check=True)
onnx.save(sub, OUT)
ops = {}
for n in sub.graph.node:
    ops[n.op_type] = ops.get(n.op_type, 0) + 1
print(f"wrote {OUT}: {len(sub.graph.node)} nodes {dict(sorted(ops.items()))}, "
      f"inputs {[(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in sub.graph.input]}, "
      f"{os.path.getsize(OUT)} bytes")
