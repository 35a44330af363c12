"""Backfills on Ray: embedding a ``ray.data.Dataset`` of stream texts with
``imesde.distributed.embed`` (1 and 2 actors, each with ONNX Runtime threads = its CPUs) against
the anchor, a plain ``map_batches`` over onnxruntime-python and tokenizers with the same model
file (one actor, as many threads as CPUs), on a local Ray of this machine's CPUs.

Each round builds the dataset's embeddings from scratch (``materialize``), actor start and
model load included, as a backfill job pays them; texts/s is in ``extra_info``. The anchor's
vectors are checked against imesde's (same model, same pooling: cosine > 0.99).

    make bench-ray     # = pytest benches/test_bench_ray.py --benchmark-enable
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from _data import stream_texts

ray = pytest.importorskip("ray")
ort = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

CPUS = os.cpu_count() or 1


class OrtEmbed:
    """The anchor's callable class: tokenizers, an ONNX Runtime session, mean pooling."""

    def __init__(self, model: str, tokenizer: str, threads: int) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.tok = tokenizers.Tokenizer.from_file(tokenizer)
        # Its tokenizer.json pads every text to 128 tokens: off, each run pads to its longest.
        self.tok.no_padding()
        self.tok.enable_truncation(256)

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        enc = self.tok.encode_batch([str(t) for t in batch["text"]])
        # Sorted by length and run 32 at a time, each padded to its own longest (as the
        # embedding benchmark's anchor does): one pad to a batch's longest text costs ~10x.
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        out = np.empty((len(enc), 384), dtype=np.float32)
        for start in range(0, len(order), 32):
            part = order[start : start + 32]
            width = max(len(enc[i].ids) for i in part)
            ids = np.zeros((len(part), width), dtype=np.int64)
            mask = np.zeros((len(part), width), dtype=np.int64)
            for r, i in enumerate(part):
                n = len(enc[i].ids)
                ids[r, :n] = enc[i].ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out[part] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        batch["embedding"] = out
        return batch


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    # The anchor's class travels by value: Ray's workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def texts(smoke: bool) -> list[str]:
    return stream_texts(128 if smoke else 2000)


@pytest.mark.timeout(1800)
@pytest.mark.benchmark(group="embed stream texts on a local Ray (texts/s in extra_info)")
@pytest.mark.parametrize(
    "contender", ["onnxruntime map_batches (anchor)", "imesde 1 actor", "imesde 2 actors"]
)
def test_ray_embed(
    benchmark: Any, local_ray: Any, texts: list[str], smoke: bool, contender: str
) -> None:
    import imesde
    import imesde.distributed as dist
    from imesde._locate import packaged_model

    model, tokenizer = (os.fspath(p) for p in packaged_model())
    ds = ray.data.from_items([{"text": t} for t in texts])

    def run() -> npt.NDArray[np.float32]:
        if contender.startswith("onnxruntime"):
            out = ds.map_batches(
                OrtEmbed,
                fn_constructor_kwargs={"model": model, "tokenizer": tokenizer, "threads": CPUS},
                batch_size=256,
                batch_format="numpy",
                concurrency=1,
                num_cpus=CPUS,
            )
        else:
            actors = int(contender.split()[1])
            out = dist.embed(
                ds, model=model, tokenizer=tokenizer, batch_size=256, concurrency=actors
            )
        rows = out.materialize().take_all()
        return np.stack([r["embedding"] for r in rows])

    rounds = 1 if smoke else 3
    got = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
    assert got.shape == (len(texts), 384)
    ref = imesde.TextEmbedder(model, tokenizer).embed(texts[:64])
    # Rows come back in dataset order for a single input block; compare as sets of rows.
    cos = got @ ref.T
    assert float(np.min(cos.max(axis=0))) > 0.99
    if benchmark.stats is not None:
        benchmark.extra_info["texts/s"] = round(len(texts) / benchmark.stats.stats.min, 1)
