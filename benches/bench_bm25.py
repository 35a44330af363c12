"""Lexical search: imesde's BM25 against bm25s, and retrieval quality of dense, BM25 and hybrid.

    python benches/bench_bm25.py [--queries 1000] [--skip-quality]

Speed (one process, the same tokens: bm25s indexes the token lists imesde's analyzer makes):
index the 8,000 debtags documents and the 126,223 stream items, then 1,000 queries (the 176
debtags queries and stream texts), k=10, one query per call, given to both as the same token
lists (imesde also timed with the text, its analyzer included). bm25s runs with its numba
backend when numba is installed, else numpy.

Quality on the debtags set (176 queries: each tag's short and long description; relevance: the
package carries the tag): P@10 and nDCG@10 for dense search (all-MiniLM-L6-v2 int8, 128-token
truncation), BM25, and each fusion of the two via ``Engine.hybrid_search``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import imesde
import numpy as np
from _data import DATA, stream_texts
from _timing import each, machine, percentile
from imesde._locate import packaged_model


def debtags() -> tuple[list[dict[str, Any]], list[tuple[str, str]], dict[str, set[str]]]:
    with gzip.open(DATA / "debtags_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    queries = []
    for line in (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        queries += [(q["qid"], q["query"]), (q["qid"], q["query_long"])]
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in (DATA / "debtags_qrels.txt").read_text(encoding="utf-8").splitlines():
        qid, _, docid, rel = line.split()
        if int(rel) > 0:
            qrels[qid].add(docid)
    return docs, queries, qrels


def tantivy_index(tantivy: Any, texts: Iterable[str], tokenizer: str) -> tuple[Any, Any, float]:
    """A tantivy index of ``texts`` (one field, analysed by ``tokenizer``), its schema and the
    seconds it took to build, with every segment written and merged."""
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", stored=False, tokenizer_name=tokenizer)
    schema = sb.build()
    index = tantivy.Index(schema)
    t = time.perf_counter()
    writer = index.writer()
    for text in texts:
        doc = tantivy.Document()
        doc.add_text("body", text)
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    return index, schema, time.perf_counter() - t


def bench_tantivy(
    tokens: list[list[str]], queries: list[list[str]]
) -> tuple[str, float, list[float]] | None:
    """tantivy (tantivy-py) on the same tokens: documents are the token lists joined by spaces,
    split again by its whitespace tokenizer; a query is a disjunction of term queries."""
    try:
        tantivy: Any = importlib.import_module("tantivy")
    except ImportError:
        return None
    index, schema, build = tantivy_index(tantivy, (" ".join(t) for t in tokens), "whitespace")
    index.reload()
    searcher = index.searcher()
    should = tantivy.Occur.Should

    def search(toks: list[str]) -> object:
        terms = [(should, tantivy.Query.term_query(schema, "body", w)) for w in toks]
        return searcher.search(tantivy.Query.boolean_query(terms), 10).hits

    for q in queries[:20]:
        search(q)
    lat = []
    for q in queries:
        if not q:
            continue
        t0 = time.perf_counter()
        search(q)
        lat.append(time.perf_counter() - t0)
    version = importlib.import_module("importlib.metadata").version("tantivy")
    return (f"tantivy {version} (tantivy-py, tokens given)", build, lat)


def tantivy_text_build(corpus: list[str]) -> tuple[str, float] | None:
    """tantivy indexing the texts with its own English analyzer (``en_stem``: split on
    non-alphanumerics, lowercase, Snowball English): build time only."""
    try:
        tantivy: Any = importlib.import_module("tantivy")
    except ImportError:
        return None
    _, _, build = tantivy_index(tantivy, corpus, "en_stem")
    version = importlib.import_module("importlib.metadata").version("tantivy")
    return (f"tantivy {version} (text given: its en_stem analyzer)", build)


def speed(args: argparse.Namespace) -> None:
    docs, queries, _ = debtags()
    corpus = [d["text"] for d in docs] + stream_texts()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(corpus), size=max(args.queries - len(queries), 0), replace=False)
    query_texts = [q for _, q in queries] + [corpus[int(i)] for i in picks]
    query_texts = query_texts[: args.queries]

    ids = list(range(len(corpus)))
    by_text = imesde.BM25()
    t = time.perf_counter()
    by_text.add_batch(ids, corpus)
    t_text = time.perf_counter() - t
    tokens = [by_text.analyze(d) for d in corpus]
    del by_text
    index = imesde.BM25()
    t = time.perf_counter()
    index.add_batch(ids, tokens)
    t_ours = time.perf_counter() - t
    q_tokens = {q: index.analyze(q) for q in query_texts}
    n_tokens = sum(len(d) for d in tokens)

    bm25s: Any = importlib.import_module("bm25s")
    try:
        importlib.import_module("numba")
        backend = "numba"
    except ImportError:
        backend = "numpy"
    ref = bm25s.BM25(method="lucene", k1=1.2, b=0.75, backend=backend)
    t = time.perf_counter()
    ref.index(tokens, show_progress=False)
    t_ref = time.perf_counter() - t

    tantivy_row = bench_tantivy(tokens, [q_tokens[q] for q in query_texts])
    tantivy_text = tantivy_text_build(corpus)

    def ref_search(q: str) -> object:
        toks = q_tokens[q]
        if not toks:
            return None
        return ref.retrieve([toks], k=10, show_progress=False, n_threads=1)

    for q in query_texts[:20]:
        index.search(q, 10)
        index.search(q_tokens[q], 10)
        ref_search(q)
    ours_text = each(lambda q: index.search(q, 10), query_texts)
    ours = each(lambda q: index.search(q_tokens[q], 10), query_texts)
    theirs = each(ref_search, query_texts)

    print(
        f"# BM25 speed: {len(corpus):,} documents ({n_tokens / 1e6:.1f} M tokens), "
        f"{len(query_texts):,} queries, k=10"
    )
    print(f"machine: {machine()}; bm25s {bm25s.__version__} ({backend} backend)\n")
    print("| | index build | query p50 | query p99 | queries/s |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("**imesde BM25** (tokens given)", t_ours, ours),
        ("imesde BM25 (text given: analyzer included)", t_text, ours_text),
        (f"bm25s {bm25s.__version__}, {backend} backend (tokens given)", t_ref, theirs),
    ]
    if tantivy_row is not None:
        rows.append(tantivy_row)
    for name, build, lat in rows:
        print(
            f"| {name} | {build:.2f} s | {percentile(lat, 50) * 1e6:.0f} us | "
            f"{percentile(lat, 99) * 1e6:.0f} us | {len(lat) / sum(lat):,.0f} |"
        )
    if tantivy_text is not None:
        name, build = tantivy_text
        print(f"| {name} | {build:.2f} s | | | |")
    print(
        f"\nquery p50, same tokens: bm25s / imesde = {np.median(theirs) / np.median(ours):.2f} "
        f"(text in: {np.median(theirs) / np.median(ours_text):.2f}); "
        f"index build, same tokens: bm25s / imesde = {t_ref / t_ours:.2f}"
        + (f", tantivy / imesde = {tantivy_row[1] / t_ours:.2f}" if tantivy_row else "")
        + (
            f"; text in: tantivy (en_stem) / imesde = {tantivy_text[1] / t_text:.2f}"
            if tantivy_text
            else ""
        )
        + f"; imesde memory "
        f"{index.memory_bytes / 1e6:.0f} MB, {index.memory_bytes / index.token_count:.1f} "
        f"bytes per token (after the queries filled its impact cache)"
    )


def metrics(ranked: Sequence[str], relevant: set[str]) -> tuple[float, float]:
    top = ranked[:10]
    p10 = sum(d in relevant for d in top) / 10
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(top) if d in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return p10, (dcg / idcg if idcg else 0.0)


def quality() -> None:
    docs, queries, qrels = debtags()
    model = imesde.TextEmbedder(*packaged_model(), max_length=128)
    engine = imesde.Engine(model, num_shards=16, shard_size=512, lexical=True)
    t = time.perf_counter()
    ids = engine.ingest_batch([d["text"] for d in docs])
    embed_s = time.perf_counter() - t
    docid = {int(i): d["id"] for i, d in zip(ids, docs, strict=True)}
    runs: dict[str, Callable[[str], list[imesde.Hit]]] = {
        "dense": lambda q: engine.search(q, k=10),
        "BM25": lambda q: engine.lexical_search(q, k=10),
    }

    def hybrid(method: Any, alpha: float | None = None) -> Callable[[str], list[imesde.Hit]]:
        return lambda q: engine.hybrid_search(q, k=10, method=method, alpha=alpha)

    for method in ("rrf", "combsum", "combmnz", "borda"):
        runs[f"hybrid {method}"] = hybrid(method)
    for alpha in (0.5, 0.7):
        runs[f"hybrid weighted alpha={alpha}"] = hybrid("weighted", alpha)
    print(
        f"\n# Retrieval quality on debtags: {len(docs):,} documents (embedded in "
        f"{embed_s:.0f} s), {len(queries)} queries, k=10"
    )
    print("| run | P@10 | nDCG@10 |")
    print("|---|---:|---:|")
    for name, run in runs.items():
        scores = [metrics([docid[h.id] for h in run(q)], qrels[qid]) for qid, q in queries]
        p10, ndcg = np.mean(scores, axis=0)
        print(f"| {name} | {p10:.3f} | {ndcg:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not args.skip_speed:
        speed(args)
    if not args.skip_quality:
        quality()


if __name__ == "__main__":
    main()
