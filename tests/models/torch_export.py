#!/usr/bin/env python3
"""torch_export.py OUTDIR - exports real architectures from PyTorch to ONNX and strips
their weights, keeping the graph exactly as PyTorch wrote it.

Run where PyTorch, torchvision and transformers are installed (the GPU machine has
them; this machine does not). Every float initializer with more than 64 elements is
replaced by an empty tensor of the same dtype and shape whose doc_string holds its
statistics ("kiln-stats mean std min max"); torch_refill.py turns those back into
random weights with the same statistics, so the stripped models are small enough to
keep in the repository while the graphs stay PyTorch's own.
"""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else "torch_models"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)


class WideAndDeep(torch.nn.Module):
    """Wide-and-deep recommender: categorical embeddings + dense features into an MLP
    (deep), a linear model over per-category weights (wide), summed into a sigmoid."""

    def __init__(self, vocab=(1000, 500, 200, 50), dim=16, dense=13):
        super().__init__()
        self.emb = torch.nn.ModuleList(torch.nn.Embedding(v, dim) for v in vocab)
        self.wide = torch.nn.ModuleList(torch.nn.Embedding(v, 1) for v in vocab)
        self.deep = torch.nn.Sequential(
            torch.nn.Linear(dim * len(vocab) + dense, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
        self.dense_wide = torch.nn.Linear(dense, 1)

    def forward(self, cat, dense):
        e = [m(cat[:, i]) for i, m in enumerate(self.emb)]
        deep = self.deep(torch.cat(e + [dense], dim=1))
        wide = sum(m(cat[:, i]) for i, m in enumerate(self.wide)) + self.dense_wide(dense)
        return torch.sigmoid(deep + wide)


def models():
    import torchvision
    from transformers import BertConfig, BertModel
    img = torch.randn(1, 3, 224, 224)
    yield "resnet18", torchvision.models.resnet18(), (img,), ["input"], None
    yield "mobilenet_v2", torchvision.models.mobilenet_v2(), (img,), ["input"], None
    yield "efficientnet_b0", torchvision.models.efficientnet_b0(), (img,), ["input"], None
    # eval-mode attention would take PyTorch's fused fast path, which has no ONNX export
    torch.backends.mha.set_fastpath_enabled(False)
    yield "vit_b_16", torchvision.models.vit_b_16(), (img,), ["input"], None
    cfg = BertConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads
    cfg._attn_implementation = "eager"  # the classic MatMul/Softmax attention graph

    class Bert(torch.nn.Module):  # positional inputs, tuple outputs, for the exporter
        def __init__(self):
            super().__init__()
            self.m = BertModel(cfg, add_pooling_layer=True)

        def forward(self, ids, mask):
            o = self.m(input_ids=ids, attention_mask=mask)
            return o.last_hidden_state, o.pooler_output

    ids = torch.randint(0, 30522, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.int64)
    yield "bert_base", Bert(), (ids, mask), ["input_ids", "attention_mask"], None
    cat = torch.stack([torch.randint(0, v, (4,)) for v in (1000, 500, 200, 50)], dim=1)
    yield "wide_deep", WideAndDeep(), (cat, torch.randn(4, 13)), ["cat", "dense"], None


def strip(path):
    m = onnx.load(path, load_external_data=True)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and a.size > 64:
            a64 = a.astype(np.float64)
            stats = f"kiln-stats {a64.mean():.9g} {a64.std():.9g} {a64.min():.9g} {a64.max():.9g}"
            dims, dt, name = list(t.dims), t.data_type, t.name
            t.Clear()
            t.name, t.data_type, t.doc_string = name, dt, stats
            t.dims.extend(dims)
    onnx.save(m, path)


only = set(sys.argv[2:])
for name, model, args, in_names, _ in models():
    if only and name not in only:
        continue
    model.eval()
    path = os.path.join(OUT, name + ".onnx")
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, path, input_names=in_names, output_names=None,
                              opset_version=17, dynamo=False)
        strip(path)
        print(f"exported {name}: {os.path.getsize(path)} bytes", flush=True)
    except Exception as e:  # report and go on with the next model
        print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
