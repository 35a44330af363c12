"""Lexical search: imesde's BM25 against bm25s and tantivy, and retrieval quality of dense,
BM25 and hybrid search.

Speed, on the same tokens: bm25s and tantivy index the token lists imesde's analyzer makes
(``BM25.add_batch(ids, token_lists)``, as bm25s takes them) and get each query as its token
list. The corpus is the 8,000 debtags documents and the 126,223 stream items (2,000 of each in
a smoke run); the queries are the 176 debtags queries and texts of the corpus, 1,000 in all
(100 in a smoke run; a query with no term left after analysis is left out for all), k=10.

Group "index build": imesde from the tokens (the anchor), imesde from the texts (its analyzer
included), bm25s (lucene, k1=1.2, b=0.75) from the tokens, tantivy (tantivy-py) from the
tokens (joined by spaces, split again by its whitespace tokenizer) and tantivy from the texts
with its own English analysis (``en_stem``: no query group, its terms differ).

Group "query": one query per call, cycling through the queries (so the report's median is the
query p50; p50 and p99 in microseconds and queries per second are in ``extra_info``), for imesde
given the tokens (the anchor) and given the text, bm25s given the tokens (one thread) and
tantivy given a disjunction of term queries. bm25s runs with its numba backend when numba is
installed (the numpy backend in a smoke run and when numba is not: numba compiles for seconds
on the first query); bm25s and tantivy are skipped when not installed (``make bench-bm25``
installs bm25s, numba and tantivy). Checks: imesde from the text finds what it finds from the
tokens; bm25s' top-10 scores equal imesde's to 1e-5 relative for every query (ids may differ
only among ties); tantivy, whose document lengths are stored in a lossy byte (its scores move
by a few per cent), must return documents whose exact scores are at least 0.9 of imesde's 10th
best (its top-10 overlap with imesde's, which the stream's many equal texts lower, is in
``extra_info``; the index it queries also stores each document's id to check by, which the
queries never read).

Group "debtags quality": 176 queries (each tag's short and long description; relevant: the
package carries the tag) over the 8,000 debtags documents (every 80th in a smoke run, with the
queries that have a relevant document among them), embedded with the packaged all-MiniLM-L6-v2
int8 file at 128 tokens: dense search (the anchor), BM25, and each fusion of the two via
``Engine.hybrid_search``. P@10 and nDCG@10 are in ``extra_info``; each run must reach three
times the P@10 of a random ranking. A round runs every query; the query embeddings come from
the embedder's cache after the first, so the times are those of search and fusion.
``-k "not quality"`` skips embedding the 8,000 documents (minutes), as ``--skip-quality`` did.

Group "debtags quality, BM25 methods": the same queries and qrels on a ``BM25`` index of each
method (``"lucene"``, the default, is the anchor) at the default ``k1``, ``b`` and ``delta``;
``search_batch`` answers every query in a round. No embedding: ``-k methods`` runs it alone.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.metadata
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any

import imesde
import numpy as np
import pytest
from _data import DATA, stream_texts
from _timing import percentile
from imesde._locate import packaged_model

K = 10


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


def optional(name: str) -> Any:
    """An optional anchor, imported by name so the type check needs none installed."""
    return pytest.importorskip(name)


class Speed:
    """The corpus, its tokens, the queries, and imesde's index of the tokens (the reference)."""

    def __init__(self, smoke: bool) -> None:
        docs, queries, _ = debtags()
        if smoke:
            corpus = [d["text"] for d in docs[:2_000]] + stream_texts(2_000)
        else:
            corpus = [d["text"] for d in docs] + stream_texts()
        n_queries = 100 if smoke else 1_000
        rng = np.random.default_rng(0)
        picks = rng.choice(len(corpus), size=max(n_queries - len(queries), 0), replace=False)
        query_texts = ([q for _, q in queries] + [corpus[int(i)] for i in picks])[:n_queries]
        self.corpus = corpus
        self.ids = list(range(len(corpus)))
        self.reference = imesde.BM25()
        self.tokens = [self.reference.analyze(d) for d in corpus]
        self.reference.add_batch(self.ids, self.tokens)
        # Queries with no term at all find nothing anywhere: left out for every contender.
        pairs = [(q, self.reference.analyze(q)) for q in query_texts]
        self.queries = [q for q, toks in pairs if toks]
        self.query_tokens = [toks for _, toks in pairs if toks]
        self.smoke = smoke

    def top(self, i: int) -> list[imesde.BM25Hit]:
        return self.reference.search(self.query_tokens[i], K)

    def exact_scores(self, i: int, ids: list[int]) -> list[float]:
        """The exact scores of documents ``ids`` for query ``i`` (0 where no term matches)."""
        hits = self.reference.search(self.query_tokens[i], 1_000)
        if not {h.id for h in hits} >= set(ids):  # past many ties: rank everything
            hits = self.reference.search(self.query_tokens[i], len(self.corpus))
        scores = {h.id: h.score for h in hits}
        return [scores.get(d, 0.0) for d in ids]

    @cached_property
    def bm25s_backend(self) -> str:
        if self.smoke:
            return "numpy"
        try:
            importlib.import_module("numba")
        except ImportError:
            return "numpy"
        return "numba"

    def bm25s(self) -> Any:
        bm25s = optional("bm25s")
        ref = bm25s.BM25(method="lucene", k1=1.2, b=0.75, backend=self.bm25s_backend)
        ref.index(self.tokens, show_progress=False)
        return ref

    def tantivy(self, text_given: bool, with_ids: bool = False) -> Any:
        """A tantivy index of the corpus (one field, not stored) and its schema: of the
        tokens joined by spaces (its whitespace tokenizer splits them again), or of the texts
        with its English analysis, with every segment written and merged. ``with_ids`` adds a
        stored ``id`` field (to check answers by; queries never read it)."""
        tantivy = optional("tantivy")
        sb = tantivy.SchemaBuilder()
        sb.add_text_field(
            "body", stored=False, tokenizer_name="en_stem" if text_given else "whitespace"
        )
        if with_ids:
            sb.add_unsigned_field("id", stored=True)
        schema = sb.build()
        index = tantivy.Index(schema)
        writer = index.writer()
        texts: Iterable[str] = self.corpus if text_given else (" ".join(t) for t in self.tokens)
        for i, text in enumerate(texts):
            doc = tantivy.Document()
            doc.add_text("body", text)
            if with_ids:
                doc.add_unsigned("id", i)
            writer.add_document(doc)
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        return index, schema


@pytest.fixture(scope="module")
def speed(smoke: bool) -> Speed:
    return Speed(smoke)


def version(package: str) -> str:
    return importlib.metadata.version(package)


@pytest.mark.parametrize(
    "contender",
    [
        "imesde, tokens given (anchor)",
        "imesde, text given",
        "bm25s, tokens given",
        "tantivy, tokens given",
        "tantivy, text given (en_stem)",
    ],
)
def test_index_build(benchmark: Any, speed: Speed, contender: str) -> None:
    n = len(speed.corpus)
    benchmark.group = f"index build: {n:,} documents ({sum(map(len, speed.tokens)):,} tokens)"
    rounds = 1 if speed.smoke else 3
    if contender.startswith("imesde"):
        docs: Sequence[Any] = speed.corpus if "text" in contender else speed.tokens

        def build() -> imesde.BM25:
            index = imesde.BM25()
            index.add_batch(speed.ids, docs)
            return index

        index = benchmark.pedantic(build, rounds=rounds * 2, warmup_rounds=1)
        assert len(index) == n
        assert index.token_count == speed.reference.token_count
        for i in range(0, len(speed.queries), 10):
            got = index.search(speed.query_tokens[i], K)
            assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in speed.top(i)]
        return
    if contender.startswith("bm25s"):
        optional("bm25s")
        benchmark.extra_info["bm25s"] = f"{version('bm25s')}, {speed.bm25s_backend} backend"
        ref = benchmark.pedantic(speed.bm25s, rounds=rounds)
        for i in range(0, len(speed.queries), 10):
            want = [h.score for h in speed.top(i)]
            scores = ref.get_scores(speed.query_tokens[i])
            np.testing.assert_allclose(-np.sort(-scores)[: len(want)], want, rtol=1e-5)
        return
    optional("tantivy")
    benchmark.extra_info["tantivy"] = version("tantivy")
    text_given = "text" in contender
    index, _ = benchmark.pedantic(lambda: speed.tantivy(text_given), rounds=rounds)
    assert index.searcher().num_docs == n


Search = Callable[[int], Any]


def query_runner(speed: Speed, contender: str) -> tuple[Search, Search]:
    """The contender's search of query ``i`` as timed (the bare call), and its top 10 as
    (corpus id, score) pairs."""
    if contender.startswith("imesde"):
        index = speed.reference
        queries: Sequence[Any] = speed.queries if "text" in contender else speed.query_tokens

        def imesde_search(i: int) -> list[imesde.BM25Hit]:
            return index.search(queries[i], K)

        return imesde_search, lambda i: [(h.id, h.score) for h in imesde_search(i)]
    if contender.startswith("bm25s"):
        ref = speed.bm25s()

        def bm25s_search(i: int) -> Any:
            return ref.retrieve([speed.query_tokens[i]], k=K, show_progress=False, n_threads=1)

        def bm25s_pairs(i: int) -> list[tuple[int, float]]:
            docs, scores = bm25s_search(i)
            pairs = zip(docs[0], scores[0], strict=True)
            return [(int(d), float(s)) for d, s in pairs if s > 0]

        return bm25s_search, bm25s_pairs
    tantivy = optional("tantivy")
    index, schema = speed.tantivy(text_given=False, with_ids=True)
    searcher = index.searcher()
    should = tantivy.Occur.Should

    def tantivy_search(i: int) -> Any:
        terms = [
            (should, tantivy.Query.term_query(schema, "body", w)) for w in speed.query_tokens[i]
        ]
        return searcher.search(tantivy.Query.boolean_query(terms), K).hits

    def tantivy_pairs(i: int) -> list[tuple[int, float]]:
        return [(searcher.doc(a)["id"][0], float(s)) for s, a in tantivy_search(i)]

    return tantivy_search, tantivy_pairs


@pytest.mark.parametrize(
    "contender",
    [
        "imesde, tokens given (anchor)",
        "imesde, text given",
        "bm25s, tokens given",
        "tantivy, tokens given",
    ],
)
def test_query(benchmark: Any, speed: Speed, contender: str) -> None:
    nq = len(speed.queries)
    benchmark.group = f"query: {len(speed.corpus):,} documents, k={K}, one query per call"
    search, answers = query_runner(speed, contender)
    order = itertools.cycle(range(nq))
    benchmark.pedantic(lambda: search(next(order)), rounds=nq, warmup_rounds=min(20, nq))
    if benchmark.enabled:
        lat = benchmark.stats.stats.data
        benchmark.extra_info["p50 us"] = percentile(lat, 50) * 1e6
        benchmark.extra_info["p99 us"] = percentile(lat, 99) * 1e6
        benchmark.extra_info["queries/s"] = len(lat) / sum(lat)
    if contender.startswith("imesde, tokens"):
        ref = speed.reference
        benchmark.extra_info["memory MB"] = ref.memory_bytes / 1e6
        benchmark.extra_info["bytes per token"] = ref.memory_bytes / ref.token_count
    overlap: list[float] = []
    near: list[float] = []
    for i in range(nq):
        got, want = answers(i), [(h.id, h.score) for h in speed.top(i)]
        if contender.startswith("imesde"):
            assert got == want, speed.queries[i]
        elif contender.startswith("bm25s"):
            # The same scores; ids may differ only among scores equal to the last one.
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)
            last = want[-1][1] * (1 + 1e-5)
            assert {d for d, s in got if s > last} == {d for d, s in want if s > last}
        else:
            assert len(got) == len(want), speed.queries[i]
            exact = speed.exact_scores(i, [d for d, _ in got])
            overlap.append(len({d for d, _ in got} & {d for d, _ in want}) / max(len(want), 1))
            near.append(float(np.mean([x >= 0.99 * want[-1][1] for x in exact])) if want else 1.0)
            # Its lossy lengths move scores by a few per cent, never a document far from the
            # top: each it returns scores (exactly) at least 0.9 of the 10th best.
            assert min(exact, default=1.0) >= 0.9 * want[-1][1], speed.queries[i]
    if overlap:
        benchmark.extra_info["tantivy top-10 overlap with imesde"] = float(np.mean(overlap))
        benchmark.extra_info["tantivy hits within 1 % of the 10th best"] = float(np.mean(near))


class Quality:
    """The debtags documents in an engine with a BM25 index, the queries and their qrels."""

    def __init__(self, smoke: bool) -> None:
        docs, queries, qrels = debtags()
        if smoke:
            docs = docs[::80]
            held = {d["id"] for d in docs}
            queries = [(qid, q) for qid, q in queries if qrels[qid] & held]
        self.docs, self.queries, self.qrels = docs, queries, qrels
        # One ONNX Runtime thread in a smoke run (nothing is timed; spinning pools slow a busy
        # 2-vCPU machine several-fold).
        model = imesde.TextEmbedder(*packaged_model(), max_length=128, threads=1 if smoke else None)
        self.engine = imesde.Engine(
            model, num_shards=16, shard_size=-(-len(docs) // 16), lexical=True
        )
        ids = self.engine.ingest_batch([d["text"] for d in docs])
        self.docid = {int(i): d["id"] for i, d in zip(ids, docs, strict=True)}
        held = set(self.docid.values())
        # What a random ranking's P@10 is worth on this set.
        self.random_p10 = float(np.mean([len(qrels[qid] & held) / len(held) for qid, _ in queries]))


@pytest.fixture(scope="module")
def quality(smoke: bool) -> Quality:
    return Quality(smoke)


def metrics(ranked: Sequence[str], relevant: set[str]) -> tuple[float, float]:
    top = ranked[:K]
    p10 = sum(d in relevant for d in top) / K
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(top) if d in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(K, len(relevant))))
    return p10, (dcg / idcg if idcg else 0.0)


RUNS = [
    "dense (anchor)",
    "BM25",
    "hybrid rrf",
    "hybrid combsum",
    "hybrid combmnz",
    "hybrid borda",
    "hybrid weighted alpha=0.5",
    "hybrid weighted alpha=0.7",
]


@pytest.mark.parametrize("run", RUNS)
def test_debtags_quality(benchmark: Any, quality: Quality, run: str) -> None:
    benchmark.group = (
        f"debtags quality: {len(quality.queries)} queries over {len(quality.docs):,} documents"
    )
    engine = quality.engine
    search: Callable[[str], list[imesde.Hit]]
    if run.startswith("dense"):
        search = lambda q: engine.search(q, k=K)  # noqa: E731
    elif run == "BM25":
        search = lambda q: engine.lexical_search(q, k=K)  # noqa: E731
    else:
        method: Any = run.split()[1]
        alpha = float(run.split("=")[1]) if "=" in run else None
        search = lambda q: engine.hybrid_search(q, k=K, method=method, alpha=alpha)  # noqa: E731
    texts = [q for _, q in quality.queries]
    found = benchmark.pedantic(lambda: [search(q) for q in texts], rounds=5, warmup_rounds=1)
    scores = [
        metrics([quality.docid[h.id] for h in hits], quality.qrels[qid])
        for hits, (qid, _) in zip(found, quality.queries, strict=True)
    ]
    p10, ndcg = np.mean(scores, axis=0)
    benchmark.extra_info["P@10"] = float(p10)
    benchmark.extra_info["nDCG@10"] = float(ndcg)
    # BM25 finds only documents with a query term; dense and fused runs always find k.
    assert all(len(hits) == K or (run == "BM25" and len(hits) < K) for hits in found)
    assert p10 >= 3 * quality.random_p10


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25+", "bm25l"])
def test_debtags_bm25_methods(benchmark: Any, smoke: bool, method: Any) -> None:
    docs, queries, qrels = debtags()
    if smoke:
        docs = docs[::80]
        held = {d["id"] for d in docs}
        queries = [(qid, q) for qid, q in queries if qrels[qid] & held]
    benchmark.group = (
        f"debtags quality, BM25 methods: {len(queries)} queries over {len(docs):,} documents"
    )
    index = imesde.BM25(method=method)
    index.add_batch(range(len(docs)), [d["text"] for d in docs])
    texts = [q for _, q in queries]
    found = benchmark.pedantic(lambda: index.search_batch(texts, k=K), rounds=5, warmup_rounds=1)
    scores = [
        metrics([docs[h.id]["id"] for h in hits], qrels[qid])
        for hits, (qid, _) in zip(found, queries, strict=True)
    ]
    p10, ndcg = np.mean(scores, axis=0)
    benchmark.extra_info["P@10"] = float(p10)
    benchmark.extra_info["nDCG@10"] = float(ndcg)
    random_p10 = np.mean(
        [len(qrels[qid] & {d["id"] for d in docs}) / len(docs) for qid, _ in queries]
    )
    assert p10 >= 3 * random_p10
