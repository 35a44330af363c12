"""BM25 against bm25s on real documents, edits against rebuilds (hypothesis), files, fusion,
and the lexical side of the engine."""

from __future__ import annotations

import gzip
import json
import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import imesde
import numpy as np
import pytest
from helpers import DATA
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def debtags() -> tuple[list[str], list[str]]:
    with gzip.open(DATA / "debtags_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    queries = []
    for line in (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        queries += [q["query"], q["query_long"]]
    return docs, queries


def test_lucene_scores_equal_bm25s(debtags: tuple[list[str], list[str]]) -> None:
    bm25s = pytest.importorskip("bm25s")
    docs, queries = debtags
    index = imesde.BM25()
    index.add_batch(list(range(len(docs))), docs)
    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    doc_tokens = [index.analyze(d) for d in docs]
    reference.index(doc_tokens, show_progress=False)
    # The same tokens given as token lists, as bm25s takes them.
    by_tokens = imesde.BM25()
    by_tokens.add_batch(list(range(len(docs))), doc_tokens)
    assert by_tokens.token_count == index.token_count == sum(map(len, doc_tokens))
    checked = 0
    for q in queries:
        tokens = index.analyze(q)
        want = np.asarray(reference.get_scores(tokens), dtype=np.float64)
        for hits in (index.search(q, k=len(docs)), by_tokens.search(tokens, k=len(docs))):
            got = np.zeros(len(docs))
            for hit in hits:
                got[hit.id] = hit.score
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=q)
        checked += int((want > 0).sum())
    assert checked > 10_000


Method = Literal["lucene", "robertson", "atire", "bm25+", "bm25l"]
IDF: dict[Method, Callable[[int, int], float]] = {
    "lucene": lambda n, df: np.log(1 + (n - df + 0.5) / (df + 0.5)),
    "robertson": lambda n, df: np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0)),
    "atire": lambda n, df: np.log(n / df),
    "bm25+": lambda n, df: np.log((n + 1) / df),
    "bm25l": lambda n, df: np.log((n + 1) / (df + 0.5)),
}


def tf_part(method: str, tf: np.ndarray, norm: np.ndarray, k1: float, delta: float) -> np.ndarray:
    """Each method's TF part for ``tf`` occurrences (Kamphuis et al., ECIR 2020)."""
    if method == "bm25l":
        c = tf / norm + delta
        return np.asarray((k1 + 1) * c / (k1 + c))
    if method == "bm25+":
        return np.asarray((k1 + 1) * tf / (k1 * norm + tf) + delta)
    return np.asarray(tf * (k1 + 1 if method == "atire" else 1) / (tf + k1 * norm))


@pytest.mark.parametrize("method", list(IDF))
def test_every_method_scores_as_its_formula(
    method: Method, debtags: tuple[list[str], list[str]]
) -> None:
    """Every score of every method is its formula, computed here from the analyzed terms alone
    (the query terms a document holds count; a document holding none is not a hit)."""
    docs, queries = debtags
    docs = docs[:3000]
    k1, b, delta = 0.9, 0.6, 0.3
    index = imesde.BM25(k1, b, method=method, delta=delta)
    index.add_batch(list(range(len(docs))), docs)
    counts = [Counter(index.analyze(d)) for d in docs]
    lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
    norm = 1 - b + b * lengths / lengths.mean()
    for q in queries[:60]:
        want = np.zeros(len(docs))
        # A term the query repeats counts once per time, as in bm25s and Lucene.
        for term, times in Counter(index.analyze(q)).items():
            tf = np.array([c[term] for c in counts], dtype=np.float64)
            held = tf > 0
            if not held.any():
                continue
            idf = IDF[method](len(docs), held.sum())
            want[held] += times * idf * tf_part(method, tf[held], norm[held], k1, delta)
        got = np.zeros(len(docs))
        hits = index.search(q, k=len(docs))
        for hit in hits:
            got[hit.id] = hit.score
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5, err_msg=q)
        assert len(hits) == int((want != 0).sum()), q


@pytest.mark.parametrize("method", ["robertson", "atire", "bm25+", "bm25l"])
def test_other_methods_score_as_bm25s(method: Method, debtags: tuple[list[str], list[str]]) -> None:
    """bm25s' scores, less what bm25s adds for each query term a document lacks (BM25+ and
    BM25L score a term as if ``tf = 0`` there: ``delta``, or ``(k1 + 1) delta / (k1 + delta)``,
    times its IDF); imesde scores only the terms a document holds, as the papers do."""
    bm25s = pytest.importorskip("bm25s")
    docs, queries = debtags
    docs = docs[:3000]
    index = imesde.BM25(method=method, delta=0.5)
    index.add_batch(list(range(len(docs))), docs)
    tokens = [index.analyze(d) for d in docs]
    reference = bm25s.BM25(method=method, k1=1.2, b=0.75, delta=0.5)
    reference.index(tokens, show_progress=False)
    held = [set(t) for t in tokens]
    at_zero = {"bm25+": 0.5, "bm25l": 2.2 * 0.5 / (1.2 + 0.5)}.get(method, 0.0)
    for q in queries[:100]:
        terms = list(dict.fromkeys(index.analyze(q)))
        want = np.asarray(reference.get_scores(terms), dtype=np.float64)
        dfs = {t: sum(t in h for h in held) for t in terms}
        for d, h in enumerate(held):
            want[d] -= sum(
                at_zero * IDF[method](len(docs), dfs[t]) for t in terms if t not in h and dfs[t]
            )
        got = np.zeros(len(docs))
        for hit in index.search(terms, k=len(docs)):
            got[hit.id] = hit.score
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=q)


def test_search_batch_answers_each_query_as_search_does(
    debtags: tuple[list[str], list[str]],
) -> None:
    """Many queries at once (bm25s' ``retrieve`` takes a list): texts or token lists, each
    answered as ``search`` answers it; bad queries are named by their place."""
    docs, queries = debtags
    index = imesde.BM25()
    index.add_batch(list(range(len(docs))), docs)
    tokens = [index.analyze(q) for q in queries]
    for k, floor in ((10, 0.0), (3, 5.0)):
        want = [[(h.id, h.score) for h in index.search(q, k, floor)] for q in queries]
        by_text = index.search_batch(queries, k, floor)
        by_tokens = index.search_batch(tokens, k=k, min_score=floor)
        assert [[(h.id, h.score) for h in hits] for hits in by_text] == want
        assert [[(h.id, h.score) for h in hits] for hits in by_tokens] == want
    assert index.search_batch([]) == []
    assert index.search_batch(iter(["zzzz unknownword"])) == [[]]
    with pytest.raises(imesde.DTypeError, match="one str"):
        index.search_batch("kernel")
    with pytest.raises(imesde.DTypeError, match=r"queries\[1\] \(as queries\[0\]\) must be str"):
        index.search_batch(["kernel", 3])  # type: ignore[list-item]
    with pytest.raises(imesde.InvalidValueError, match="k must be"):
        index.search_batch(["kernel"], k=0)
    assert index.document_count == len(docs)


def test_pruned_top_k_equals_full_ranking_on_the_stream(
    debtags: tuple[list[str], list[str]],
) -> None:
    # The pruned search (MaxScore, admission and candidate pruning) against the full ranking
    # (k = every document: nothing can be pruned), on real package descriptions and changelog
    # items queried with the debtags queries and with items of the corpus itself.
    docs, queries = debtags
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as f:
        stream = [json.loads(line)["text"] for _, line in zip(range(40_000), f, strict=False)]
    corpus = docs + stream
    index = imesde.BM25()
    index.add_batch(list(range(len(corpus))), corpus)
    rng = np.random.default_rng(5)
    picked = [corpus[int(i)] for i in rng.choice(len(corpus), 150, replace=False)]
    for q in queries[::3] + picked:
        for k in (1, 10, 100):
            fast = index.search(q, k)
            full = index.search(q, len(corpus))[:k]
            assert len(fast) == len(full), q
            np.testing.assert_allclose(
                [h.score for h in fast], [h.score for h in full], rtol=1e-5, err_msg=q
            )
            # Ids may differ only among scores equal to the last one.
            last = full[-1].score if full else 0.0
            assert {h.id for h in fast if h.score > last * (1 + 1e-5)} == {
                h.id for h in full if h.score > last * (1 + 1e-5)
            }, q


def test_top_k_and_matched_terms(debtags: tuple[list[str], list[str]]) -> None:
    docs, _ = debtags
    index = imesde.BM25(stopwords="english")
    index.add_batch(list(range(len(docs))), docs)
    hits = index.search("python web framework", k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(set(h.terms) <= {"python", "web", "framework"} and h.terms for h in hits)
    doc_id, score = hits[0]
    assert (doc_id, score) == (hits[0].id, hits[0].score)
    floor = index.search("python web framework", k=5, min_score=hits[2].score)
    assert [h.id for h in floor[:3]] == [h.id for h in hits[:3]]
    assert all(h.score >= hits[2].score for h in floor)
    # The same query as terms already analyzed (a bm25s-style token list): the same hits.
    terms = index.analyze("python web framework")
    by_terms = index.search(terms, k=5)
    assert [(h.id, h.score, h.terms) for h in by_terms] == [(h.id, h.score, h.terms) for h in hits]
    # Matched terms are exactly the query terms the document holds.
    for h in hits:
        assert sorted(h.terms) == sorted(set(terms) & set(index.analyze(docs[h.id])))
    # Terms are taken as given: an unanalyzed form matches nothing, a repeat counts again.
    assert index.search(["Python"], k=5) == []
    twice = index.search([*terms, "python"], k=1)[0]
    once = index.search(terms, k=1)[0]
    assert twice.score > once.score
    assert index.document_count == len(docs) == len(index)
    assert index.token_count == sum(len(index.analyze(d)) for d in docs)
    assert 8 * index.token_count < index.memory_bytes < 200 * index.token_count
    assert index.term_count > 10_000
    assert 5 < index.average_document_length < 200


def test_analyzer() -> None:
    a = imesde.BM25()
    assert a.analyze("Fix CVE-2024-1234 in net/mlx5e (eth0)") == [
        "fix", "cve", "2024", "1234", "cve-2024-1234", "in", "net", "mlx5e", "net/mlx5e", "eth0",
    ]  # fmt: skip
    assert imesde.BM25(stopwords="english").analyze("the leaks in the kernels") == [
        "leak",
        "kernel",
    ]
    assert imesde.BM25(stemmer=None).analyze("Running Leaks") == ["running", "leaks"]
    assert imesde.BM25(stemmer="french").analyze("traductions") == ["traduct"]
    assert imesde.BM25(stopwords=["kernel"]).analyze("kernel panic") == ["panic"]
    # Words Unicode keeps whole across . _ : give their parts too (stemmed as words).
    assert a.analyze("sshd:accepted from 10.0.0.7") == [
        "sshd", "accept", "sshd:accepted", "from", "10", "0", "0", "7", "10.0.0.7",
    ]  # fmt: skip


def test_glued_words_are_found_by_their_parts_and_whole() -> None:
    index = imesde.BM25()
    docs = ["login from 10.0.0.7", "call foo_bar()", "mail to ops@example.com", "disk full"]
    index.add_batch(range(len(docs)), docs)
    for query, doc in [("10", 0), ("10.0.0.7", 0), ("foo", 1), ("foo_bar", 1), ("example", 2)]:
        assert [h.id for h in index.search(query, k=2)] == [doc], query


def test_text_as_other_sources_write_it_matches() -> None:
    """Typographic apostrophes, decomposed or fullwidth letters, hex ids, emoji, Thai and
    French elision: a query finds the document that holds its words, as they are written
    elsewhere (word processors, macOS, chat, logs)."""
    index = imesde.BM25()
    docs = [
        "the user\u2019s password expired",  # a typographic apostrophe
        "cafe\u0301 cre\u0300me bru\u0302le\u0301e",  # decomposed accents (NFD)
        "deploy 7f3a9c2e ok",
        "deploy 7f3a9c2 ok",
        "build is \U0001f525 today",
        "ภาษาไทย",
        "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 text",  # fullwidth letters
        "ยาย",
        "\u05e9\u05dc\u05d5\u05dd\u200f \u05e2\u05d5\u05dc\u05dd",  # a right-to-left mark
        "retry of \u2068upload-7\u2069 failed",  # an isolated value in a log line
    ]
    index.add_batch(range(len(docs)), docs)
    for query, doc in [
        ("user", 0),
        ("user's", 0),
        ("caf\u00e9", 1),
        ("7f3a9c2e", 2),
        ("7f3a9c2", 3),
        ("\U0001f525", 4),
        ("ไทย", None),
        ("ภาษาไทย", 5),
        ("fullwidth", 6),
        ("\u05e9\u05dc\u05d5\u05dd", 8),
        ("upload-7", 9),
    ]:
        got = [h.id for h in index.search(query, k=1)]
        assert got == ([] if doc is None else [doc]), query
    french = imesde.BM25(stemmer="french")
    french.add_batch(
        [1, 2], ["L\u2019\u00e9l\u00e8ve a \u00e9t\u00e9 d\u00e9\u00e7u", "Les chiens"]
    )
    assert [h.id for h in french.search("\u00e9l\u00e8ve")] == [1]
    turkish = imesde.BM25(stemmer="turkish")
    turkish.add_batch(
        [1, 2], ["\u0130stanbul'da kar ya\u011f\u0131yor", "Ankara\u2019ya gidiyorum"]
    )
    assert [h.id for h in turkish.search("\u0130stanbul")] == [1]
    assert [h.id for h in turkish.search("ankara")] == [2]
    # The engine's BM25 folds alike (its index is rebuilt from the texts on load).
    engine = imesde.Engine(4, num_shards=1, shard_size=8, lexical=True)
    engine.ingest_vectors(np.eye(4, dtype=np.float32)[:2], ["don\u2019t panic", "keep calm"])
    assert [h.text for h in engine.lexical_search("don't")] == ["don\u2019t panic"]


def test_parameters_read_back_as_written_and_bad_arguments_are_named() -> None:
    index = imesde.BM25(k1=1.2, b=0.75)
    assert (index.k1, index.b) == (1.2, 0.75)
    plus = imesde.BM25(k1=0.9, method="bm25+", delta=0.25, stemmer="german", stopwords=["der"])
    assert (plus.delta, plus.stemmer, plus.stopwords) == (0.25, "german", ["der"])
    assert (imesde.BM25(method="bm25l").delta, imesde.BM25(method="atire", delta=2).delta) == (
        0.5,
        None,
    )
    with pytest.raises(imesde.InvalidValueError, match="bm25l"):
        imesde.BM25(method="bm25-l")  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError, match="delta"):
        imesde.BM25(method="bm25l", delta=-1)
    assert (index.delta, index.stemmer, index.stopwords) == (None, "english", [])
    # The repr shows what makes two indexes score apart (two of these read the same).
    assert repr(plus) == (
        "BM25(k1=0.9, b=0.75, method='bm25+', delta=0.25, stemmer='german', stopwords=['der'], "
        "documents=0, terms=0)"
    )
    assert "stemmer=None, stopwords=[]" in repr(imesde.BM25(stemmer=None))
    assert " words], " in repr(imesde.BM25(stopwords="english"))
    with pytest.raises(imesde.DTypeError, match="bool"):
        imesde.BM25(k1=True)
    index.add_batch([1, 2], ["a b", "b c"])
    with pytest.raises(imesde.DTypeError, match="bool"):
        index.search("b", k=True)
    with pytest.raises(imesde.DTypeError, match="got bytes"):
        index.add_batch([3], [b"bytes"])  # type: ignore[list-item]
    assert len(index) == 2


def test_an_engines_bm25_takes_an_index_s_settings() -> None:
    """``Engine(lexical=BM25(...))``: a stream in another language gets its stemmer and stop
    words (and the scores of a BM25 of those settings); snapshots and pickles keep them."""
    texts = ["Die \u00dcbersetzungen der B\u00fccher", "Ein Hund und die Katze", "Der Hund"]
    settings = imesde.BM25(k1=0.9, b=0.4, stemmer="german", stopwords=["der", "die", "das"])
    german = imesde.Engine(4, num_shards=1, shard_size=16, lexical=settings)
    english = imesde.Engine(4, num_shards=1, shard_size=16, lexical=True)
    x = np.eye(4, dtype=np.float32)[:3]
    for engine in (german, english):
        engine.ingest_vectors(x, texts)
    assert [h.id for h in german.lexical_search("\u00dcbersetzung")] == [0]
    assert english.lexical_search("\u00dcbersetzung") == []
    assert len(settings) == 0  # it only described the settings
    ref = imesde.BM25(k1=0.9, b=0.4, stemmer="german", stopwords=["der", "die", "das"])
    ref.add_batch(range(3), texts)
    for q in ("Hund", "die Katze", "B\u00fccher"):
        assert [(h.id, h.score) for h in german.lexical_search(q)] == [
            (h.id, h.score) for h in ref.search(q)
        ], q

    def settings_of(engine: imesde.Engine) -> tuple[object, ...]:
        s = engine.lexical_settings
        assert s is not None
        assert len(s) == 0
        return (s.k1, s.b, s.method, s.delta, s.stemmer, s.stopwords)

    want = (0.9, 0.4, "lucene", None, "german", ["der", "die", "das"])
    assert settings_of(german) == want
    assert settings_of(english) == (1.2, 0.75, "lucene", None, "english", [])
    assert imesde.Engine(4).lexical_settings is None
    for back in (imesde.Engine.from_bytes(german.to_bytes()), pickle.loads(pickle.dumps(german))):
        assert back.lexical_search("\u00dcbersetzung") == german.lexical_search("\u00dcbersetzung")
        # A loaded engine says what it keeps, and an engine made with that is made alike.
        assert settings_of(back) == want
        kept = back.lexical_settings
        assert kept is not None
        alike = imesde.Engine(4, num_shards=1, shard_size=16, lexical=kept)
        alike.ingest_vectors(x, texts)
        got = [(h.id, h.score) for h in alike.lexical_search("Hund")]
        assert got == [(h.id, h.score) for h in german.lexical_search("Hund")]
    plus = imesde.Engine(4, lexical=imesde.BM25(method="bm25+", delta=0.25, stemmer=None))
    assert settings_of(plus)[2:5] == ("bm25+", 0.25, None)
    bm25l = imesde.Engine(4, lexical=imesde.BM25(method="bm25l", delta=0.75))
    assert settings_of(imesde.Engine.from_bytes(bm25l.to_bytes()))[2:4] == ("bm25l", 0.75)
    with pytest.raises(imesde.DTypeError, match="lexical"):
        imesde.Engine(4, lexical="german")  # type: ignore[arg-type]


def test_exact_technical_tokens_rank_first() -> None:
    index = imesde.BM25()
    index.add(1, "fix CVE-2024-1234 in the nfs client")
    index.add(2, "CVE-2024-9999 and CVE-2023-1234 fixed")
    index.add(3, "net/mlx5e: fix a race on eth0")
    assert index.search("CVE-2024-1234", k=1)[0].id == 1
    assert index.search("mlx5e", k=1)[0].id == 3


def test_errors_leave_the_index_intact(tmp_path: Path) -> None:
    index = imesde.BM25()
    index.add(1, "kernel panic")
    with pytest.raises(imesde.InvalidValueError, match="already indexed"):
        index.add(1, "again")
    # A repeat within the batch is named as such ("already indexed; use update" misled).
    with pytest.raises(imesde.InvalidValueError, match="id 2 is given twice in the batch"):
        index.add_batch([2, 2], ["a", "b"])
    with pytest.raises(imesde.ShapeError):
        index.add_batch([2, 3], ["a"])
    with pytest.raises(imesde.DTypeError, match="one str"):
        index.add_batch([2], "a")
    with pytest.raises(
        imesde.DTypeError, match=r"texts\[1\] \(as texts\[0\]\) must be str, got list"
    ):
        index.add_batch([2, 3], ["a", ["b"]])
    with pytest.raises(imesde.DTypeError, match=r"texts\[1\]\[0\] must be str, got int"):
        index.add_batch([2, 3], [["a"], [4]])  # type: ignore[list-item]
    # A str that is not text names its place alone (it read "texts[1] (as texts[0])").
    with pytest.raises(imesde.TextEncodingError, match=r": texts\[1\] is not valid Unicode"):
        index.add_batch([2, 3], ["a", "b\ud800"])
    with pytest.raises(imesde.DTypeError, match=r"texts\[1\] must be a token list"):
        index.add_batch([2, 3], [["a"], "b"])
    with pytest.raises(imesde.DTypeError, match="got int"):
        index.add_batch([2], 7)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        index.add_batch([2], ["\ud800"])
    with pytest.raises(KeyError):
        index.remove(42)
    with pytest.raises(imesde.InvalidValueError, match="method"):
        imesde.BM25(method="tfidf")  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError, match="stemmer"):
        imesde.BM25(stemmer="klingon")
    with pytest.raises(imesde.InvalidValueError, match="b must"):
        imesde.BM25(b=2.0)
    with pytest.raises(imesde.InvalidValueError):
        index.search("kernel", k=0)
    with pytest.raises(TypeError, match=r"query terms\[1\] must be str"):
        index.search(["kernel", 3], k=1)  # type: ignore[list-item]
    with pytest.raises(imesde.DTypeError, match="query must be a str or a list of its terms"):
        index.search(42, k=1)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match="got bytes"):
        index.search(b"kernel", k=1)  # type: ignore[arg-type]
    assert len(index) == 1
    assert 1 in index
    assert index.search("panic")[0].id == 1


def test_aliases_and_update() -> None:
    index = imesde.BM25()
    index.add_document(7, "memory leak")
    index.update_document(7, "disk full")
    assert index.search("leak") == []
    assert index.search("disk")[0].id == 7
    index.update(8, "new document")  # update adds when absent
    index.remove_document(7)
    assert len(index) == 1


def test_save_load_and_damaged_files(tmp_path: Path, debtags: tuple[list[str], list[str]]) -> None:
    docs, queries = debtags
    index = imesde.BM25(0.9, 0.4, method="bm25+", stopwords="english")
    index.add_batch(list(range(500)), docs[:500])
    for i in range(0, 500, 5):
        index.remove(i)
    path = tmp_path / "docs.bm25"
    index.save(path)
    back = imesde.BM25.load(str(path))
    assert back.k1 == pytest.approx(0.9)
    assert back.b == pytest.approx(0.4)
    assert (back.method, len(back)) == ("bm25+", 400)
    for q in queries[:20]:
        assert [(h.id, h.score) for h in back.search(q)] == [
            (h.id, h.score) for h in index.search(q)
        ]
    data = path.read_bytes()
    for damaged in (
        data[: len(data) // 2],
        data[:-1],
        data[:10],
        b"",
        data[:40] + b"X" + data[41:],
    ):
        path.write_bytes(damaged)
        with pytest.raises(imesde.IndexCorruptError):
            imesde.BM25.load(path)
    with pytest.raises(imesde.StorageError):
        imesde.BM25.load(tmp_path / "missing.bm25")
    with pytest.raises(imesde.StorageError, match=r"dir\.bm25"):
        index.save(tmp_path / "no" / "such" / "dir.bm25")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "update"]),
            st.integers(0, 15),
            st.lists(st.sampled_from(["leak", "kernel", "panic", "disk", "CVE-2024-1", "the"])),
        ),
        max_size=60,
    )
)
def test_edits_score_like_a_rebuild(ops: list[tuple[str, int, list[str]]]) -> None:
    index = imesde.BM25()
    truth: dict[int, str] = {}
    for op, doc_id, words in ops:
        text = " ".join(words)
        if op == "add" and doc_id not in truth:
            index.add(doc_id, text)
            truth[doc_id] = text
        elif op == "remove" and doc_id in truth:
            index.remove(doc_id)
            del truth[doc_id]
        elif op == "update":
            index.update(doc_id, text)
            truth[doc_id] = text
    fresh = imesde.BM25()
    for doc_id, text in truth.items():
        fresh.add(doc_id, text)
    assert index.document_count == fresh.document_count
    assert index.term_count == fresh.term_count
    assert index.average_document_length == pytest.approx(fresh.average_document_length)
    for q in ["leak", "kernel panic", "cve-2024-1 disk", "the the leak"]:
        got = {h.id: h.score for h in index.search(q, k=100)}
        want = {h.id: h.score for h in fresh.search(q, k=100)}
        assert got.keys() == want.keys()
        for doc_id, score in got.items():
            assert score == pytest.approx(want[doc_id], rel=1e-5)


def test_fuse() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 12.0), (1, 8.0), (4, 1.0)]
    fused = imesde.fuse([dense, lexical])
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert imesde.fuse([dense, lexical], k=2) == fused[:2]
    weighted = imesde.fuse([dense, lexical], method="weighted", weights=[0.0, 1.0])
    assert weighted[0][0] == 3
    assert weighted[0][1] == pytest.approx(1.0)
    assert imesde.fuse([dense, lexical], method="combmnz")[0][0] in (1, 3)
    assert [i for i, _ in imesde.fuse([dense, lexical], method="borda")][:2] == [1, 3]
    index = imesde.BM25()
    index.add(5, "memory leak")
    assert imesde.fuse([index.search("leak"), dense], method="combsum")[0][0] == 5
    with pytest.raises(imesde.InvalidValueError):
        imesde.fuse([dense], method="max")  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        imesde.fuse([dense, lexical], weights=[1.0])
    with pytest.raises(TypeError):
        imesde.fuse([[("a", "b")]])  # type: ignore[list-item]


@pytest.mark.model
def test_engine_keeps_bm25_in_step_with_the_ring(embedder: imesde.TextEmbedder) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=8, lexical=True)
    assert engine.lexical
    texts = [f"routine log line number {i}" for i in range(30)]
    texts[3] = "fix CVE-2024-1234 in the nfs client"
    texts[25] = "fix CVE-2024-5678 in the smb client"
    engine.ingest_batch(texts[:10])
    assert engine.lexical_search("CVE-2024-1234", k=1)[0].text == texts[3]
    engine.ingest_batch(texts[10:])  # the ring holds 16: ids 14..29 survive
    held = {h.id for h in engine.lexical_search("routine log line", k=100)}
    assert held == set(range(14, 30)) - {25}
    hits = engine.lexical_search("CVE-2024-1234", k=3)
    assert texts[3] not in [h.text for h in hits]
    assert hits[0].text == texts[25]  # shares "fix", "cve", "2024", "in", "the", "client"
    vector_only = engine.ingest_vectors(embedder.embed_one("no text"))  # nothing to index
    assert engine.lexical_search("routine", k=100)[-1].id != int(vector_only[0])
    hybrid = engine.hybrid_search("nfs client security fix", k=5)
    assert len(hybrid) == 5
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    # The default: weighted min-max fusion at alpha 0.5, so fused scores stay in [0, 1].
    explicit = engine.hybrid_search("nfs client security fix", k=5, method="weighted", alpha=0.5)
    assert [(h.id, h.score) for h in hybrid] == [(h.id, h.score) for h in explicit]
    assert all(0.0 <= h.score <= 1.0 for h in hybrid)
    alpha = engine.hybrid_search("CVE-2024-5678", k=3, method="weighted", alpha=0.0)
    assert alpha[0].text == texts[25]
    with pytest.raises(imesde.InvalidValueError):
        engine.hybrid_search("x", alpha=1.5)
    plain = imesde.Engine(embedder, num_shards=1, shard_size=4)
    with pytest.raises(imesde.ImesdeError, match="lexical=True"):
        plain.lexical_search("x")
    # Every query answered counts in stats()["searches"] (lexical ones counted none).
    before = engine.stats()["searches"]
    engine.lexical_search("nfs", k=2)
    engine.hybrid_search("nfs", k=2)
    engine.search("nfs", k=2)
    assert engine.stats()["searches"] == before + 3
    # The index's memory is in stats(), as a standalone index of the held texts counts it
    # (it was in no key: a service sizing itself by stats() missed it), None without one.
    assert plain.stats()["lexical_bytes"] is None
    index = imesde.BM25()
    texts_held = {h.id: h.text for h in engine.recent(100) if h.text is not None}
    index.add_batch(list(texts_held), list(texts_held.values()))
    assert engine.stats()["lexical_bytes"] >= index.memory_bytes > 0


def test_engine_big_batches_index_like_one_at_a_time(
    debtags: tuple[list[str], list[str]],
) -> None:
    # Batches big enough to be analysed on all cores, partly overwritten within the batch
    # itself: the engine's BM25 index holds exactly the items the ring holds, scored as an
    # index that added them one at a time.
    docs, queries = debtags
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((len(docs), 16)).astype(np.float32)
    engine = imesde.Engine(16, num_shards=4, shard_size=1_500, lexical=True)
    engine.ingest_vectors(vectors[:500], texts=docs[:500])
    ids = engine.ingest_vectors(vectors[500:], texts=docs[500:])
    held = list(zip(ids[-6_000:].tolist(), docs[-6_000:], strict=True))
    reference = imesde.BM25()
    for i, text in held:
        reference.add(i, text)
    for q in queries[::5]:
        got = engine.lexical_search(q, k=20)
        want = reference.search(q, k=20)
        assert [h.id for h in got] == [h.id for h in want], q
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)
    assert {h.id for h in engine.lexical_search(docs[100], k=50)} <= {i for i, _ in held}


def test_engine_searches_a_query_given_as_its_terms() -> None:
    """``Engine.lexical_search`` takes a query's analyzed terms as ``BM25.search`` does (the
    engine's analyzer is ``lexical_settings.analyze``): the same hits as the text, filters
    and ``hybrid_search(vector=...)`` included; a term is looked up as given."""
    texts = ["the kernel panics on boot", "network is down", "kernel network bug", "running jobs"]
    engine = imesde.Engine(4, num_shards=2, shard_size=8, lexical=True)
    x = np.eye(4, dtype=np.float32)
    engine.ingest_vectors(x, texts, metadata=[{"n": i} for i in range(4)])
    settings = engine.lexical_settings
    assert settings is not None
    for query in ("kernel networks", "Running the kernel", "jobs"):
        terms = settings.analyze(query)
        want = [(h.id, h.score) for h in engine.lexical_search(query)]
        assert want
        for as_given in (terms, tuple(terms), iter(terms)):
            assert [(h.id, h.score) for h in engine.lexical_search(as_given)] == want, query
        assert engine.lexical_search(terms, where={"n": 2}) == engine.lexical_search(
            query, where={"n": 2}
        )
        for v in x:
            assert engine.hybrid_search(terms, vector=v) == engine.hybrid_search(query, vector=v)
    # Terms are not analyzed again: "running" is indexed as "run".
    assert [h.id for h in engine.lexical_search(["run"])] == [3]
    assert engine.lexical_search(["running"]) == []
    assert engine.lexical_search([]) == []
    for bad, match in (
        (42, "query must be a str or a list of its terms"),
        (b"kernel", "got bytes"),
        (["kernel", None], r"query terms\[1\] must be str"),
        # No order and no repeats: not a query's terms.
        ({"kernel", "network"}, "got set"),
        ({"kernel": 2}, "got dict"),
    ):
        with pytest.raises(imesde.DTypeError, match=match):
            engine.lexical_search(bad)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match="without vector="):
        engine.hybrid_search(["kernel"])
    assert len(engine) == 4


def test_any_finite_k1_scores_as_the_formula() -> None:
    """A huge k1 overflowed ``tf (k1 + 1)`` in f32: inf scores, a matching document dropped."""
    docs = ["apple banana apple", "apple cherry", "banana"]
    for method in ("atire", "bm25+"):
        index = imesde.BM25(k1=3e38, b=0.75, method=method)
        index.add_batch(list(range(3)), docs)
        hits = index.search("apple", k=3)
        assert sorted(h.id for h in hits) == [0, 1]
        assert all(np.isfinite(h.score) for h in hits)
        # tf (k1 + 1) / (tf + k1 norm) -> tf / norm as k1 grows (lengths 3, 2, 1: mean 2).
        tf, lengths = np.array([2.0, 1.0]), np.array([3.0, 2.0])
        norm = 1 - 0.75 + 0.75 * lengths / 2.0
        idf = np.log(3 / 2) if method == "atire" else np.log(4 / 2)
        delta = 0.5 if method == "bm25+" else 0.0
        want = idf * (tf / norm + delta)
        got = {h.id: h.score for h in hits}
        np.testing.assert_allclose([got[0], got[1]], want, rtol=1e-5)


@pytest.mark.model
def test_hybrid_search_at_alpha_0_and_1_gives_one_side_s_ranking(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]]
) -> None:
    """``alpha=0``: the lexical ranking (a text with none of the query's words took the
    place of the weakest keyword match, which min-max scaling tied with it at 0); ``alpha=1``:
    the dense one."""
    texts = list(dict.fromkeys(item["text"] for item in stream))[:400]
    engine = imesde.Engine(embedder, num_shards=2, shard_size=256, lexical=True)
    engine.ingest_batch(texts)
    # Queries of a few words from held texts, and one that mixes two of them.
    queries = [" ".join(texts[i].split()[:3]) for i in (5, 150, 390)]
    queries.append(f"{texts[40].split()[0]} {texts[300].split()[-1]}")
    for query in queries:
        for k in (3, 10):
            lexical = [h.id for h in engine.lexical_search(query, k)]
            assert lexical, query
            for method in ("weighted", "rrf", "combmnz"):
                got = engine.hybrid_search(query, k, method, alpha=0.0)
                assert [h.id for h in got] == lexical
                dense = engine.hybrid_search(query, k, method, alpha=1.0)
                assert [h.id for h in dense] == [h.id for h in engine.search(query, k)]


@pytest.mark.model
def test_hybrid_search_takes_the_query_s_embedding(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]]
) -> None:
    """``vector=``: a vectors-only engine (``Engine(384, lexical=True)``: the user embeds)
    gets hybrid search; it raised "has no model". The dense side searches the vector given,
    fused as ``fuse`` fuses the two sides."""
    texts = list(dict.fromkeys(item["text"] for item in stream))[:500]
    x = embedder.embed(texts)
    vectors_only = imesde.Engine(384, num_shards=2, shard_size=256, lexical=True)
    vectors_only.ingest_vectors(x, texts)
    with_model = imesde.Engine(embedder, num_shards=2, shard_size=256, lexical=True)
    with_model.ingest_vectors(x, texts)
    for i in (3, 120, 444):
        query = " ".join(texts[i].split()[:3])
        v = embedder.embed_one(query)
        depth = 50
        dense = [(h.id, h.score) for h in vectors_only.search_vector(v, depth)]
        lexical = [(h.id, h.score) for h in vectors_only.lexical_search(query, depth)]
        for method, alpha in (("weighted", 0.5), ("rrf", None), ("weighted", 0.8)):
            got = vectors_only.hybrid_search(query, 10, method, alpha, vector=v)  # type: ignore[arg-type]
            weights = None if alpha is None else [alpha, 1 - alpha]
            want = imesde.fuse([dense, lexical], method, k=10, weights=weights)  # type: ignore[arg-type]
            assert [h.id for h in got] == [i for i, _ in want]
            np.testing.assert_allclose([h.score for h in got], [s for _, s in want], rtol=1e-5)
        # The model's own embedding of the query, given or not: the same answer.
        same = with_model.hybrid_search(query, 10, vector=with_model.model.embed_one(query))  # type: ignore[union-attr]
        assert [h.id for h in same] == [h.id for h in with_model.hybrid_search(query, 10)]
    with pytest.raises(imesde.ImesdeError, match="model"):
        vectors_only.hybrid_search("kernel")
    with pytest.raises(imesde.DimensionMismatchError):
        vectors_only.hybrid_search("kernel", vector=np.ones(8, np.float32))
    with pytest.raises(imesde.ShapeError, match="vector must be one vector"):
        vectors_only.hybrid_search("kernel", vector=x[:2])
    with pytest.raises(imesde.ImesdeError, match="lexical"):
        imesde.Engine(384).hybrid_search("kernel", vector=x[0])
    assert len(vectors_only) == 500


def test_lexical_and_hybrid_search_fill_k_while_other_threads_ingest() -> None:
    """The index lets an overwritten item go after the ring has replaced it: ranked in that
    moment it took a place in the top k and was then dropped, so searches came back short
    (once empty) while another thread ingested, about a quarter of them. And a search whose
    thread waited for a core between ranking and reading back found the whole 256-item
    ring overwritten meanwhile: 0-4 hits in about 1 of 150 calls on a loaded machine (here
    three writers on fewer cores make that wait common)."""
    import threading

    engine = imesde.Engine(num_shards=2, shard_size=128, lexical=True)
    rng = np.random.default_rng(0)
    texts = [f"disk failure on node {i}" for i in range(29)]
    engine.ingest_vectors(
        rng.standard_normal((256, 384)).astype(np.float32),
        [f"disk failure on node {i}" for i in range(256)],
    )
    stop = threading.Event()

    def ingest(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            engine.ingest_vectors(local.standard_normal((29, 384)).astype(np.float32), texts)

    writers = [threading.Thread(target=ingest, args=(seed,)) for seed in range(3)]
    for w in writers:
        w.start()
    try:
        found = [len(engine.lexical_search("disk failure", k=20)) for _ in range(400)]
        found += [len(engine.hybrid_search("disk failure", k=20)) for _ in range(400)]
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert found == [20] * len(found)
