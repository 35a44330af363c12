"""Filtered search: the top 10 of 65,536 embedded stream items among those a ``where`` keeps,
at 50 %, 5 % and 0.5 % selectivity, one group per selectivity; and among those whose text
contains a string (``{"$contains": s}``, against chromadb's ``where_document``; imesde with
the filter repeated and new), for three strings that about 12 %, 5 % and 0.4 % of the texts
contain.

Contenders: imesde without the filter (the anchor: filtering should cost next to nothing),
imesde with it (from the second round on, the answers of a repeated filter are remembered per
slot), imesde with a filter it has never seen for every query (the same filter plus a
condition on a key no item has, so nothing is remembered: the cost of a first search), and
chromadb's in-memory client (``EphemeralClient``, cosine space) with the
same ``where`` on the same vectors (skipped when chromadb is not installed; ``make
bench-filters`` installs it). Each round searches 20 real queries one at a time, as a chroma
user calls ``collection.query``. Every contender's results are checked against a numpy
reference; chromadb's agreement with it (top-10 overlap) is recorded in the report.
"""

from __future__ import annotations

import itertools
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from _data import debtags_query_texts, stream_embeddings, stream_sample

QUERIES = 20
K = 10

# selectivity -> (where, what it keeps, given the metadata columns)
FILTERS: dict[str, dict[str, Any]] = {
    "50%": {"even": True},
    "5%": {"bucket": {"$lt": 50}},
    "0.5%": {"bucket": {"$in": [0, 1, 2, 3, 4]}},
}


# Strings in a text (case as written; chromadb's $contains is case-sensitive too): "the" in
# about 12 % of the texts, "CVE-" in 5 %, "crash" in 0.4 %.
TEXT_FILTERS = ("the", "CVE-", "crash")


class Corpus:
    def __init__(self, vectors: npt.NDArray[np.float32]) -> None:
        self.vectors = vectors
        n = len(vectors)
        self.texts = stream_sample(n)
        bucket = np.random.default_rng(0).permutation(n) % 1000
        self.bucket = bucket
        self.metadata = [{"bucket": int(b), "even": bool(b % 2 == 0)} for b in bucket]
        self.engine = imesde.Engine(vectors.shape[1], num_shards=16, shard_size=n // 16)
        self.engine.ingest_vectors(vectors, self.texts, metadata=self.metadata)
        from imesde._locate import packaged_model

        texts = debtags_query_texts()[:QUERIES]
        self.queries = imesde.TextEmbedder(*packaged_model()).embed(texts)

    def kept(self, selectivity: str) -> npt.NDArray[np.bool_]:
        if selectivity == "50%":
            return np.asarray(self.bucket % 2 == 0)
        if selectivity == "5%":
            return np.asarray(self.bucket < 50)
        return np.asarray(self.bucket < 5)

    def holding(self, needle: str) -> npt.NDArray[np.bool_]:
        return np.array([needle in t for t in self.texts])

    def reference(self, kept: npt.NDArray[np.bool_]) -> list[list[int]]:
        """The exact top-k per query among the items ``kept``, by numpy."""
        ids = np.flatnonzero(kept)
        scores = self.queries @ self.vectors[ids].T
        return [ids[np.argsort(-s, kind="stable")[:K]].tolist() for s in scores]


@pytest.fixture(scope="module")
def corpus(smoke: bool) -> Corpus:
    return Corpus(stream_embeddings(2_048 if smoke else 65_536))


@pytest.fixture(scope="module")
def chroma(corpus: Corpus) -> Any:
    chromadb = pytest.importorskip("chromadb")
    client = chromadb.EphemeralClient()
    col = client.create_collection(
        "bench",
        metadata={"hnsw:space": "cosine", "hnsw:construction_ef": 200, "hnsw:search_ef": 200},
    )
    n = len(corpus.vectors)
    step = 4096
    for start in range(0, n, step):
        end = min(start + step, n)
        col.add(
            ids=[str(i) for i in range(start, end)],
            embeddings=corpus.vectors[start:end],
            metadatas=corpus.metadata[start:end],
            documents=corpus.texts[start:end],
        )
    return col


def overlap(got: list[list[int]], want: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def run_imesde(corpus: Corpus, where: dict[str, Any] | None) -> list[list[int]]:
    return [[h.id for h in corpus.engine.search_vector(q, K, where=where)] for q in corpus.queries]


NEVER_SEEN = itertools.count()


def run_imesde_cold(corpus: Corpus, where: dict[str, Any]) -> list[list[int]]:
    """Each query with a filter never searched before: ``where`` and ``nonce != n``."""
    out = []
    for q in corpus.queries:
        fresh = {"$and": [where, {"nonce": {"$ne": next(NEVER_SEEN)}}]}
        out.append([h.id for h in corpus.engine.search_vector(q, K, where=fresh)])
    return out


@pytest.mark.parametrize("selectivity", list(FILTERS))
@pytest.mark.parametrize(
    "contender", ["imesde unfiltered (anchor)", "imesde", "imesde, new filter", "chromadb"]
)
def test_filtered_search(
    benchmark: Any, request: pytest.FixtureRequest, corpus: Corpus, selectivity: str, contender: str
) -> None:
    benchmark.group = (
        f"top-{K} of {len(corpus.vectors):,} items, {selectivity} kept, {QUERIES} queries"
    )
    where = FILTERS[selectivity]
    want = corpus.reference(corpus.kept(selectivity))
    if contender.startswith("imesde unfiltered"):
        got = benchmark(run_imesde, corpus, None)
        assert all(len(g) == K for g in got)
        return
    if contender == "imesde":
        got = benchmark(run_imesde, corpus, where)
        assert got == want
        return
    if contender == "imesde, new filter":
        got = benchmark(run_imesde_cold, corpus, where)
        assert got == want
        return
    chroma_against(benchmark, request.getfixturevalue("chroma"), corpus, want, where=where)


@pytest.mark.parametrize("needle", TEXT_FILTERS)
@pytest.mark.parametrize(
    "contender", ["imesde unfiltered (anchor)", "imesde", "imesde, new filter", "chromadb"]
)
def test_text_filtered_search(
    benchmark: Any, request: pytest.FixtureRequest, corpus: Corpus, needle: str, contender: str
) -> None:
    kept = corpus.holding(needle)
    benchmark.group = (
        f"top-{K} of {len(corpus.vectors):,} items, text contains {needle!r} "
        f"({kept.mean():.1%} kept), {QUERIES} queries"
    )
    want = corpus.reference(kept)
    if contender.startswith("imesde unfiltered"):
        got = benchmark(run_imesde, corpus, None)
        assert all(len(g) == K for g in got)
        return
    if contender == "imesde":
        got = benchmark(run_imesde, corpus, {"$contains": needle})
        assert got == want
        return
    if contender == "imesde, new filter":
        got = benchmark(run_imesde_cold, corpus, {"$contains": needle})
        assert got == want
        return
    col = request.getfixturevalue("chroma")
    chroma_against(benchmark, col, corpus, want, where_document={"$contains": needle})


def chroma_against(
    benchmark: Any, col: Any, corpus: Corpus, want: list[list[int]], **filters: Any
) -> None:
    """Times chromadb's answers to the queries one at a time, as a chroma user calls
    ``collection.query``; records their agreement with the exact ``want``."""

    def run_chroma() -> list[list[int]]:
        res = col.query(query_embeddings=corpus.queries, n_results=K, **filters)
        return [[int(i) for i in ids] for ids in res["ids"]]

    def one_by_one() -> list[list[int]]:
        out = []
        for q in corpus.queries:
            res = col.query(query_embeddings=q[None], n_results=K, **filters)
            out.append([int(i) for i in res["ids"][0]])
        return out

    got = benchmark(one_by_one)
    agreement = overlap(got, want)
    benchmark.extra_info["top10 overlap with exact"] = agreement
    assert agreement > 0.5, "chromadb answers the same question"
    assert overlap(run_chroma(), want) == agreement
