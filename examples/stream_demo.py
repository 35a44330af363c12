"""Stream real data into an imesde engine and search it while it streams.

The stream: 406 real texts (Debian changelog items and package descriptions) with their
all-MiniLM-L6-v2 embeddings, from ``../shared/data``. Text embedding inside imesde arrives
with the embedding pipeline; until then this demo feeds the precomputed vectors.

    python examples/stream_demo.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import imesde
import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    lines = (DATA / "golden_texts.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    vectors = np.load(DATA / "golden_minilm_l6_st.npy")
    engine = imesde.Engine(384, num_shards=4, shard_size=64)  # holds the newest 256
    print(f"{engine!r}, simd={imesde.simd_backend()}")

    t = time.perf_counter()
    for start in range(0, len(texts), 32):  # arrives in bursts of 32
        engine.ingest_vectors(
            vectors[start : start + 32],
            texts[start : start + 32],
            metadata={"kind": "changelog" if start < 300 else "package"},
        )
    dt = time.perf_counter() - t
    print(
        f"ingested {len(texts)} items in {dt * 1e3:.2f} ms ({len(texts) / dt:,.0f} items/s); "
        f"holding the newest {len(engine)} of capacity {engine.capacity}"
    )

    # Queries: the meaning of a few items, searched over what the ring holds now.
    for i in (160, 250, 330, 380):
        t = time.perf_counter()
        hits = engine.search_vector(vectors[i], k=4)
        ms = (time.perf_counter() - t) * 1e3
        print(f"\nquery  {texts[i][:90]!r}  ({ms:.3f} ms)")
        for h in hits:
            print(f"  {h.score:.3f}  #{h.id:<4} {h.metadata}  {(h.text or '')[:80]!r}")

    hits = engine.search_vector(vectors[330], k=3, where={"kind": "changelog"})
    print("\nsame query, only changelog items:")
    for text, score in hits:
        print(f"  {score:.3f}  {(text or '')[:80]!r}")
    print("\nstats:", engine.stats())


if __name__ == "__main__":
    main()
