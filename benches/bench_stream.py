"""Live streams: ingest throughput with 0 / 1 / 10 / 100 standing queries, event latency,
and search latency while ingesting.

    python benches/bench_stream.py [--items 20000]

Data: the first ``--items`` texts of the changelog stream; standing queries: the debtags
queries (short and long forms, 100 of them), threshold 0.45. Texts are embedded once up front;
the vector rows isolate what standing queries cost on top of ingestion (embedding a text costs
far more, see the text row). The anchor is the same engine with no subscription, in the same
process.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import imesde
from _data import debtags_query_texts, stream_texts
from _timing import machine, percentile
from imesde._locate import packaged_model

BATCH = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20_000)
    args = ap.parse_args()
    texts = stream_texts(args.items)
    queries = debtags_query_texts()[:100]
    model = imesde.TextEmbedder(*packaged_model())
    vectors = model.embed(texts)
    qvecs = model.embed(queries)
    print(f"machine: {machine()}; {len(texts):,} items, batches of {BATCH}")

    def run(n_subs: int) -> tuple[float, list[float], int]:
        engine = imesde.Engine(384, num_shards=16, shard_size=2048)
        latencies: list[float] = []
        start = [0.0]

        def on_event(_: imesde.Event) -> None:
            latencies.append(time.perf_counter() - start[0])

        for q in qvecs[:n_subs]:
            engine.subscribe(q, threshold=0.45, callback=on_event)
        t0 = time.perf_counter()
        for i in range(0, len(vectors), BATCH):
            start[0] = time.perf_counter()
            engine.ingest_vectors(vectors[i : i + BATCH], texts[i : i + BATCH])
        return len(vectors) / (time.perf_counter() - t0), latencies, len(latencies)

    run(0)  # warm-up
    base = statistics.median(run(0)[0] for _ in range(3))
    print(
        f"\n{'standing queries':>16} {'items/s':>10} {'vs none':>8} {'us/item/sub':>12} "
        f"{'events':>8} {'event p50 ms':>13} {'event p99 ms':>13}"
    )
    print(f"{0:>16} {base:>10,.0f} {'1.00x':>8} {'':>12} {0:>8} {'':>13} {'':>13}")
    for n in (1, 10, 100):
        runs = [run(n) for _ in range(3)]
        rate = statistics.median(r[0] for r in runs)
        lat = runs[-1][1]
        per_sub = (1 / rate - 1 / base) / n * 1e6
        print(
            f"{n:>16} {rate:>10,.0f} {rate / base:>7.2f}x {per_sub:>12.3f} {runs[-1][2]:>8,} "
            f"{percentile(lat, 50) * 1e3:>13.2f} {percentile(lat, 99) * 1e3:>13.2f}"
        )

    # Text ingestion (embedding included) with 100 standing queries vs none.
    # No cache: both runs embed every text.
    fresh = imesde.TextEmbedder(*packaged_model(), cache_size=0)
    for n in (0, 100):
        engine = imesde.Engine(fresh, num_shards=16, shard_size=2048)
        for q in queries[:n]:
            engine.subscribe(q, threshold=0.45, callback=lambda e: None)
        sample = texts[:2000]
        t0 = time.perf_counter()
        for i in range(0, len(sample), BATCH):
            engine.ingest_batch(sample[i : i + BATCH])
        rate = len(sample) / (time.perf_counter() - t0)
        print(f"text ingest (embedding included), {n:>3} standing queries: {rate:,.0f} texts/s")

    # Search latency while another thread ingests (100 standing queries), vs idle.
    engine = imesde.Engine(384, num_shards=16, shard_size=2048)
    engine.ingest_vectors(vectors, texts)
    for q in qvecs:
        engine.subscribe(q, threshold=0.45, callback=lambda e: None)

    def searches(count: int) -> list[float]:
        out = []
        for i in range(count):
            t = time.perf_counter()
            engine.search_vector(qvecs[i % len(qvecs)], k=10)
            out.append(time.perf_counter() - t)
        return out

    idle = searches(500)
    stop = threading.Event()

    def ingest_forever() -> None:
        i = 0
        while not stop.is_set():
            j = i % len(vectors)
            engine.ingest_vectors(vectors[j : j + BATCH], texts[j : j + BATCH])
            i += BATCH

    writer = threading.Thread(target=ingest_forever)
    writer.start()
    busy = searches(500)
    stop.set()
    writer.join()
    print(
        f"\nsearch over {len(engine):,} items (100 standing queries), k=10: "
        f"idle p50 {percentile(idle, 50) * 1e3:.2f} ms / p99 {percentile(idle, 99) * 1e3:.2f} ms; "
        f"while ingesting p50 "
        f"{percentile(busy, 50) * 1e3:.2f} ms / p99 {percentile(busy, 99) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
