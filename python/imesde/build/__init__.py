"""Model preparation without PyTorch: a sentence-transformers BERT checkpoint (``config.json``,
``model.safetensors``, ``tokenizer.json``, pooling config) written straight to an ONNX graph
with the ``onnx`` package, optionally fused by ONNX Runtime's transformer optimizer.

    imesde model build SOURCE_DIR OUT_DIR [--precision fp32|int8] [--max-length N]
    imesde.build.build(source_dir, out_dir)

``OUT_DIR`` then holds ``model.onnx``, ``tokenizer.json`` and ``imesde-model.json`` (a small
manifest: model id, dimension, pooling, max length, precision, sha256 of each file), which
``TextEmbedder(OUT_DIR)`` reads. Needs ``pip install "imesde[build]"`` (onnx).
"""

from __future__ import annotations

from imesde._manifest import MANIFEST, read_manifest
from imesde.build.graph import ARCHITECTURES, BertConfig, bert_graph
from imesde.build.model import build, check, measure
from imesde.build.safetensors import read_safetensors

__all__ = [
    "ARCHITECTURES",
    "MANIFEST",
    "BertConfig",
    "bert_graph",
    "build",
    "check",
    "measure",
    "read_manifest",
    "read_safetensors",
]
