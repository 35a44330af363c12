"""Semantic IDs: RQ-KMeans on real embeddings, unique ids through in-memory and SQLite stores
(several processes at once), and Engine integration."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

Golden = tuple[list[str], npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def vectors(golden: Golden) -> npt.NDArray[np.float32]:
    return golden[1]


def test_fit_encode_decode_on_real_embeddings(vectors: npt.NDArray[np.float32]) -> None:
    model = imesde.RQKMeans(n_levels=3, n_clusters=[8, 16, 16], random_state=0)
    assert not model.is_fitted
    assert model.fit(vectors) is model
    assert model.D_ == 384
    assert [c.shape for c in model.codebooks_] == [(8, 384), (16, 384), (16, 384)]
    codes = model.encode(vectors)
    assert codes.dtype == np.int32
    assert codes.shape == (len(vectors), 3)
    assert codes.min() >= 0
    assert (codes.max(axis=0) < [8, 16, 16]).all()
    rec = model.decode(codes)
    assert rec.dtype == np.float32
    assert rec.shape == vectors.shape
    err = float(np.mean(np.sum((vectors - rec) ** 2, axis=1)))
    assert err == pytest.approx(model.reconstruction_error(vectors), rel=1e-5)
    # Unit vectors: reconstructing with 3 levels must explain a good part of the norm, and
    # each level lowers the training error.
    assert err < 0.8
    mses = [r["mse"] for r in model.fit_report_]
    assert mses == sorted(mses, reverse=True)
    # Beam search reconstructs at least as well as greedy on average.
    assert model.reconstruction_error(vectors) >= float(
        np.mean(np.sum((vectors - model.decode(model.encode(vectors, beam_width=8))) ** 2, 1))
    )
    score = model.score(vectors)
    assert score["mse"] == pytest.approx(err, rel=1e-5)
    assert 0.0 <= score["collision_rate"] <= 1.0
    assert len(score["usage_entropy"]) == 3


def test_same_seed_same_codebooks_and_lists_or_float64_accepted(
    vectors: npt.NDArray[np.float32],
) -> None:
    a = imesde.RQKMeans(2, 8, random_state=7).fit(vectors)
    b = imesde.RQKMeans(2, 8, random_state=7).fit(vectors.astype(np.float64))
    c = imesde.RQKMeans(2, 8, random_state=8).fit(vectors)
    for x, y in zip(a.codebooks_, b.codebooks_, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a.codebooks_, c.codebooks_, strict=True))
    np.testing.assert_array_equal(a.encode(vectors[:5].tolist()), a.encode(vectors[:5]))


def test_kmeans_plus_plus_and_sampling(vectors: npt.NDArray[np.float32]) -> None:
    m = imesde.RQKMeans(2, 8, init="k-means++", sample_size=200, random_state=1).fit(vectors)
    assert m.encode(vectors).shape == (len(vectors), 2)
    with pytest.raises(imesde.InvalidValueError, match="training vectors"):
        imesde.RQKMeans(1, 16, sample_size=10, random_state=1).fit(vectors)


def test_balanced_codes_are_used_evenly(vectors: npt.NDArray[np.float32]) -> None:
    plain = imesde.RQKMeans(2, 16, random_state=3).fit(vectors)
    bal = imesde.RQKMeans(2, 16, balanced=True, random_state=3).fit(vectors)
    pu = plain.codebook_usage(plain.encode(vectors))
    bu = bal.codebook_usage(bal.encode(vectors))
    for p, b in zip(pu, bu, strict=True):
        assert b["entropy"] >= 0.98
        assert b["entropy"] >= p["entropy"]
        assert b["used"] == 16
        assert int(b["counts"].sum()) == len(vectors)


def test_balanced_refinement_lowers_the_error_and_keeps_codes_even(
    vectors: npt.NDArray[np.float32],
) -> None:
    errors = []
    for refine in (0, None, 3):  # None: one round for a balanced model
        m = imesde.RQKMeans(3, [8, 16, 16], balanced=True, random_state=4, refine=refine)
        codes = m.fit(vectors).encode(vectors)
        # Refinement moves the codewords; the biases learnt again keep every level even.
        for u in m.codebook_usage(codes):
            assert u["entropy"] >= 0.98, (refine, u["entropy"])
        errors.append(m.reconstruction_error(vectors))
    assert errors[1] < errors[0]
    assert errors[2] < errors[1] * 1.001


def test_balanced_biases_keep_encoding_even_after_refinement(
    embedded: tuple[list[str], npt.NDArray[np.float32]],
) -> None:
    # Encoding scores every codeword with the learnt biases: it splits the training data
    # about as evenly as the capped assignment did (crates/imesde-rq: a codeword in no
    # vector's shortlist keeps its price).
    _, x = embedded
    m = imesde.RQKMeans(4, 64, balanced=True, random_state=0).fit(x)
    for u in m.codebook_usage(m.encode(x)):
        assert u["entropy"] >= 0.995, u["entropy"]
        assert int(u["counts"].max()) <= 2 * -(-len(x) // 64), u["counts"].max()


def test_save_load_same_codes_and_damage_is_an_error(
    vectors: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    m = imesde.RQKMeans(3, [4, 8, 8], balanced=True, random_state=5).fit(vectors)
    path = tmp_path / "codes.rq"
    m.save(path)
    back = imesde.RQKMeans.load(path)
    assert back.n_clusters == [4, 8, 8]
    assert back.balanced
    assert back.D_ == 384
    np.testing.assert_array_equal(back.encode(vectors), m.encode(vectors))
    np.testing.assert_array_equal(
        back.encode(vectors, beam_width=4), m.encode(vectors, beam_width=4)
    )
    # The beam is the encoder's setting, not the file's: given again, the same codes.
    beamed = imesde.RQKMeans(3, [4, 8, 8], random_state=5, beam_width=4).fit(vectors)
    beamed.save(path)
    again = imesde.RQKMeans.load(path, beam_width=4)
    assert again.beam_width == 4
    np.testing.assert_array_equal(again(vectors[:50]), beamed(vectors[:50]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(imesde.IndexCorruptError, match=r"truncated|checksum"):
        imesde.RQKMeans.load(path)
    bad = bytearray(data)
    bad[100] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(imesde.IndexCorruptError):
        imesde.RQKMeans.load(path)
    with pytest.raises(imesde.StorageError):
        imesde.RQKMeans.load(tmp_path / "missing.rq")


def test_semantic_id_formats() -> None:
    codes = np.array([[3, 9, 1], [12, 5, 33]])
    assert imesde.codes_to_ids(codes) == ["3-9-1", "12-5-33"]
    assert imesde.codes_to_ids(codes, sep="/") == ["3/9/1", "12/5/33"]
    assert imesde.codes_to_ids(codes, fmt="token")[0] == "<a_3><b_9><c_1>"
    assert imesde.codes_to_ids(codes, formatter=lambda r: "x".join(map(str, r))) == [
        "3x9x1",
        "12x5x33",
    ]
    with pytest.raises(imesde.InvalidValueError):
        imesde.codes_to_ids(codes, fmt="bogus")  # type: ignore[arg-type]
    # Ids that could be read two ways, or codes no codebook has.
    for sep in ("", "1"):
        with pytest.raises(imesde.InvalidValueError, match="sep"):
            imesde.codes_to_ids([[1, 23], [12, 3]], sep=sep)
    with pytest.raises(imesde.OutOfRangeError):
        imesde.codes_to_ids([[-1, 2]])
    with pytest.raises(imesde.DTypeError):
        imesde.UniqueIdResolver().assign("abc")


def test_bad_input_is_a_typed_error(vectors: npt.NDArray[np.float32]) -> None:
    with pytest.raises(imesde.InvalidValueError, match="not fitted"):
        imesde.RQKMeans(2, 4).encode(vectors)
    with pytest.raises(imesde.InvalidValueError):
        imesde.RQKMeans(2, [4, 4, 4])
    with pytest.raises(imesde.InvalidValueError):
        imesde.RQKMeans(2, 0)
    with pytest.raises(imesde.InvalidValueError):
        imesde.RQKMeans(2, 4, init="bogus")  # type: ignore[arg-type]
    with pytest.raises(imesde.ShapeError):
        imesde.RQKMeans(2, 4).fit(vectors[0])
    with pytest.raises(imesde.InvalidValueError, match="training vectors"):
        imesde.RQKMeans(1, 1000).fit(vectors)
    nan = vectors.copy()
    nan[3, 7] = np.nan
    with pytest.raises(imesde.InvalidValueError, match="NaN"):
        imesde.RQKMeans(2, 4).fit(nan)
    m = imesde.RQKMeans(2, 4, random_state=0).fit(vectors)
    with pytest.raises(imesde.DimensionMismatchError):
        m.encode(vectors[:, :100])
    with pytest.raises(imesde.InvalidValueError, match="NaN"):
        m.encode(nan)
    with pytest.raises(imesde.InvalidValueError, match="out of range"):
        m.decode(np.array([[0, 4]]))
    with pytest.raises(imesde.InvalidValueError, match="out of range"):
        m.decode(np.array([[-1, 0]]))
    with pytest.raises(imesde.ShapeError):
        m.decode(np.array([[0, 1, 2]]))
    with pytest.raises(imesde.InvalidValueError):
        m.encode(vectors, beam_width=0)
    # Bounds on what could take all memory or time: the beam (encode aborted the process
    # allocating for 10**6; one wider than the codes is exhaustive, and taken), the levels,
    # the refinement rounds.
    wide = imesde.RQKMeans(4, 256, random_state=0, beam_width=10**12).fit(vectors)
    assert wide.beam_width == 10**12
    with pytest.raises(imesde.InvalidValueError, match="beam_width"):
        wide.encode(vectors[:4])
    with pytest.raises(imesde.InvalidValueError, match="beam_width"):
        imesde.Engine(384).attach_semantic_ids(wide)
    np.testing.assert_array_equal(
        m.encode(vectors[:9], beam_width=10**9), m.encode(vectors[:9], beam_width=16)
    )
    for n_levels, refine in ((10**9, None), (2, 10**9), (2, -1)):
        with pytest.raises(imesde.InvalidValueError):
            imesde.RQKMeans(n_levels, 4, refine=refine)
    with pytest.raises(imesde.DTypeError):
        m.encode(np.array([["a", "b"]]))
    # semantic-id's device and batch_size: checked everywhere as fit checks device (encode
    # and unique_ids took device="cuda" and batch_size="x" without a word).
    sid = imesde.SemanticIdEngine(encoder=m)
    for call in (
        lambda: m.encode(vectors[:2], device="cuda"),
        lambda: sid.unique_ids(vectors[:2], device="cuda"),
        lambda: sid.fit(vectors, device="cuda"),
    ):
        with pytest.raises(imesde.InvalidValueError, match="CPU"):
            call()
    # A choice given as an array (or anything not a str) is a DTypeError, not numpy's "truth
    # value of an array is ambiguous" from an elementwise ==.
    not_str: list[Callable[[], object]] = [
        lambda: m.encode(vectors[:2], device=np.array(["cpu", "cpu"])),  # type: ignore[arg-type]
        lambda: m.fit(vectors, device=np.ones(2)),  # type: ignore[arg-type]
        lambda: imesde.RQKMeans(2, 4, init=np.array(["random", "x"])),  # type: ignore[arg-type]
        lambda: imesde.codes_to_ids(np.zeros((2, 2), np.int64), fmt=["plain"]),  # type: ignore[arg-type]
    ]
    for bad in not_str:
        with pytest.raises(imesde.DTypeError, match="must be a str"):
            bad()
    for size, error in ((0, imesde.InvalidValueError), ("x", imesde.DTypeError)):
        with pytest.raises(error, match="batch_size"):
            m.encode(vectors[:2], batch_size=size)  # type: ignore[arg-type]
        with pytest.raises(error, match="batch_size"):
            sid.unique_ids(vectors[:2], batch_size=size)  # type: ignore[arg-type]
    assert len(sid.unique_ids(vectors[:2], device="cpu", batch_size=1)) == 2
    # Its repr names its arguments as the constructor does.
    assert repr(sid).startswith("SemanticIdEngine(encoder=RQKMeans(")
    assert ", unique_resolver=UniqueIdResolver(" in repr(sid)
    # The model still works after every error.
    assert m.encode(vectors).shape == (len(vectors), 2)


def test_resolver_suffixes_and_never_repeats_an_id() -> None:
    r = imesde.UniqueIdResolver()
    assert r.assign(["12-5-33", "12-5-33", "7-1-2", "12-5-33"]) == [
        "12-5-33",
        "12-5-33-1",
        "7-1-2",
        "12-5-33-2",
    ]
    # A later code that looks like a suffixed id gets a fresh suffix instead of a duplicate.
    assert r.assign(["12-5-33-1"]) == ["12-5-33-1-1"]
    assert r.assign(["3-3"], sep="_") == ["3-3"]
    assert r.assign(["3-3"], sep="_") == ["3-3_1"]
    by_item = imesde.UniqueIdResolver()
    assert by_item.assign(["1-2", "1-2"], item_ids=["sku9", "sku10"]) == ["1-2", "1-2-sku10"]
    with pytest.raises(imesde.ShapeError):
        by_item.assign(["1-2"], item_ids=[])


def test_a_user_store_needs_only_next_suffix() -> None:
    class CountingStore:
        def __init__(self) -> None:
            self.seen: dict[str, int] = {}

        def next_suffix(self, key: str) -> int:
            n = self.seen.get(key, 0)
            self.seen[key] = n + 1
            return n

    store = CountingStore()
    assert isinstance(store, imesde.CollisionStore)
    r = imesde.UniqueIdResolver(store)
    assert r.assign(["a", "a", "b"]) == ["a", "a-1", "b"]


def test_sqlite_store_persists(tmp_path: Path) -> None:
    db = tmp_path / "ids.db"
    first = imesde.UniqueIdResolver(imesde.SQLiteCollisionStore(db))
    assert first.assign(["1-2-3", "1-2-3"]) == ["1-2-3", "1-2-3-1"]
    store = imesde.SQLiteCollisionStore(db)
    again = imesde.UniqueIdResolver(store)
    assert again.assign(["1-2-3", "4-5-6"]) == ["1-2-3-2", "4-5-6"]
    assert len(store) == 4
    assert store.next_suffix("9-9") == 0
    assert store.next_suffix("9-9") == 1
    store.close()
    # Values edited into the file that this store never writes: refused, typed, the rest of
    # the store still usable (a text count was a bare ValueError, a negative one gave "k--3").
    import sqlite3

    for i, bad in enumerate(("'abc'", "-3", "9223372036854775807", "x'00ff'")):
        with sqlite3.connect(db) as conn:
            conn.execute(f"UPDATE imesde_sid_counts SET n = {bad} WHERE key = '1-2-3'")
        edited = imesde.SQLiteCollisionStore(db)
        with pytest.raises(imesde.IndexCorruptError, match="count of '1-2-3'"):
            edited.claim(["1-2-3"])
        assert edited.claim([f"7-{i}"]) == [f"7-{i}"]
        edited.close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO imesde_sid_owned VALUES ('c', 'o', x'ff00')")
    with pytest.raises(imesde.IndexCorruptError, match="not a str"):
        imesde.SQLiteCollisionStore(db).claim(["c"], owners=["o"])


_WORKER = textwrap.dedent(
    """
    import json, sys
    import imesde
    store = imesde.SQLiteCollisionStore(sys.argv[1], timeout=120)
    resolver = imesde.UniqueIdResolver(store)
    worker = int(sys.argv[2])
    out = []
    for batch in range(30):
        keys = [f"{(worker + batch + i) % 5}-{i % 3}" for i in range(10)]
        out += resolver.assign(keys)
    print(json.dumps(out))
    """
)


def test_sqlite_store_many_processes_never_share_an_id(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    imesde.SQLiteCollisionStore(db)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db), str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    ids: list[str] = []
    for p in procs:
        out, errs = p.communicate(timeout=300)
        assert p.returncode == 0, errs
        ids += json.loads(out)
    assert len(ids) == 4 * 300
    assert len(set(ids)) == len(ids)
    # 15 distinct keys: each appears once without a suffix.
    assert sum(1 for i in ids if i.count("-") == 1) == 15


def test_semantic_id_engine_and_engine_labels_ingested_items(
    vectors: npt.NDArray[np.float32], golden: Golden
) -> None:
    sid = imesde.SemanticIdEngine(imesde.RQKMeans(2, [4, 4], random_state=0))
    assert sid.fit(vectors) is sid
    raw = sid.semantic_ids(vectors[:50])
    ids = sid.unique_ids(vectors[:50])
    assert len(set(ids)) == 50
    assert [i.split("-")[:2] for i in ids] == [r.split("-") for r in raw]

    texts = golden[0]
    engine = imesde.Engine(384, num_shards=2, shard_size=64)
    engine.attach_semantic_ids(sid)
    new = engine.ingest_vectors(vectors[50:60], texts[50:60], metadata={"src": "golden"})
    item = engine.get(int(new[0]))
    assert item.metadata is not None
    assert item.metadata["src"] == "golden"
    label = item.metadata["semantic_id"]
    assert label.split("-")[:2] == sid.semantic_ids(vectors[50:51])[0].split("-")
    hits = engine.search_vector(vectors[50], k=5, where={"semantic_id": label})
    assert [h.id for h in hits] == [int(new[0])]

    def broken(_: Any) -> list[str]:
        raise RuntimeError("store offline")

    engine.attach_semantic_ids(broken)
    with pytest.raises(RuntimeError, match="store offline"):
        engine.ingest_vectors(vectors[60:62])
    engine.attach_semantic_ids(lambda x: ["one"])
    with pytest.raises(imesde.ShapeError):
        engine.ingest_vectors(vectors[60:62])
    with pytest.raises(imesde.DTypeError):
        engine.attach_semantic_ids(42)  # type: ignore[arg-type]
    assert len(engine) == 10
    engine.attach_semantic_ids(None)
    engine.ingest_vectors(vectors[60:62])
    assert len(engine) == 12


@pytest.mark.model
def test_text_engine_with_semantic_ids(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]]
) -> None:
    texts = [s["text"] for s in stream[:600]]
    x = embedder.embed(texts)
    sid = imesde.SemanticIdEngine(imesde.RQKMeans(2, [16, 16], random_state=0)).fit(x)
    engine = imesde.Engine(embedder, num_shards=2, shard_size=512)
    engine.attach_semantic_ids(sid)
    engine.ingest_batch(texts[:100])
    hit = engine.search(texts[5], k=1)[0]
    assert hit.text == texts[5]
    assert hit.metadata is not None
    assert hit.metadata["semantic_id"].split("-")[:2] == sid.semantic_ids(x[5:6])[0].split("-")


def test_engine_labels_in_rust_exactly_as_python_would(
    vectors: npt.NDArray[np.float32], golden: Golden
) -> None:
    """An Engine labels with imesde's own SemanticIdEngine / RQKMeans in Rust: the same ids,
    collisions and store state as calling them from Python batch by batch."""
    encoder = imesde.RQKMeans(2, [4, 4], random_state=0).fit(vectors)
    native = imesde.SemanticIdEngine(encoder)
    python = imesde.SemanticIdEngine(encoder)
    assert isinstance(native._native_labeler(), imesde._imesde.Labeler)
    by_rust = imesde.Engine(384, num_shards=4, shard_size=128)
    by_python = imesde.Engine(384, num_shards=4, shard_size=128)
    by_rust.attach_semantic_ids(native)
    by_python.attach_semantic_ids(lambda x: python(x))  # a plain function: called per batch
    plain = imesde.Engine(384, num_shards=4, shard_size=128)
    plain.attach_semantic_ids(encoder)
    n = len(vectors)
    for start in range(0, n, 37):
        batch = vectors[start : start + 37]
        for e in (by_rust, by_python, plain):
            e.ingest_vectors(batch)

    def labels(e: imesde.Engine) -> list[str]:
        return [(e.get(i).metadata or {})["semantic_id"] for i in range(len(e))]

    assert labels(by_rust) == labels(by_python)
    assert len(set(labels(by_rust))) == n  # 16 codes, n unique ids
    assert labels(plain) == encoder(vectors)
    # The store is the SemanticIdEngine's own: what it hands out next never repeats.
    store = native.unique_resolver.store
    assert isinstance(store, imesde.InMemoryCollisionStore)
    assert len(store) == n
    assert native.unique_ids(vectors[:3]) == python.unique_ids(vectors[:3])
    assert not set(native.unique_ids(vectors[:50])) & set(labels(by_rust))


def test_customised_labelers_are_called_from_python(vectors: npt.NDArray[np.float32]) -> None:
    encoder = imesde.RQKMeans(2, [4, 4], random_state=0).fit(vectors)
    calls: list[int] = []

    class Tagged(imesde.SemanticIdEngine):
        def unique_ids(self, X: Any, **kwargs: Any) -> list[str]:  # noqa: N803 (its name)
            calls.append(len(X))
            return [f"t-{s}" for s in super().unique_ids(X, **kwargs)]

    class Prefixed(imesde.RQKMeans):
        def semantic_id(self, codes: Any, **kwargs: Any) -> list[str]:
            return ["p" + s for s in super().semantic_id(codes, **kwargs)]

    prefixed = Prefixed(2, [4, 4], random_state=0).fit(vectors)
    sqlite = imesde.SemanticIdEngine(
        encoder, imesde.UniqueIdResolver(imesde.SQLiteCollisionStore(":memory:"))
    )
    for custom in (Tagged(encoder), prefixed, imesde.SemanticIdEngine(prefixed), sqlite):
        assert custom._native_labeler() is None
    engine = imesde.Engine(384, num_shards=2, shard_size=64)
    engine.attach_semantic_ids(Tagged(encoder))
    ids = engine.ingest_vectors(vectors[:5])
    assert calls == [5]
    assert all((engine.get(int(i)).metadata or {})["semantic_id"].startswith("t-") for i in ids)
    engine.attach_semantic_ids(prefixed)
    ids = engine.ingest_vectors(vectors[5:10])
    assert all((engine.get(int(i)).metadata or {})["semantic_id"].startswith("p") for i in ids)
    # Beam width and refits are read per batch, as a call from Python would.
    encoder.beam_width = 4
    assert imesde.SemanticIdEngine(encoder)._native_labeler() is not None


def test_a_python_without_sqlite_imports_imesde() -> None:
    """``stores.py`` imported sqlite3 with the package: a Python built without _sqlite3
    could not ``import imesde`` at all."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["_sqlite3"] = None  # as a Python built without it
        import imesde
        store = imesde.InMemoryCollisionStore()
        print(imesde.UniqueIdResolver(store).assign(["1-2", "1-2"]))
        try:
            imesde.SQLiteCollisionStore(":memory:")
        except ImportError as e:
            print("refused:", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "['1-2', '1-2-1']" in out.stdout
    assert "refused: SQLiteCollisionStore needs Python's sqlite3 module" in out.stdout


def test_training_refuses_data_one_row_would_flatten() -> None:
    """One row 1e25 times the others: scaled to it, every other row's distances fell below
    f32's range and all got one code. Such data is refused, naming the row."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x[123] *= 1e25
    with pytest.raises(imesde.InvalidValueError, match="vector 123"):
        imesde.RQKMeans(2, 8, random_state=0).fit(x)
    x[123] /= 1e25
    x[7] = 0.0  # zero rows are no spread
    x[9] *= 1e12  # far, but within what f32 distances hold
    model = imesde.RQKMeans(2, 8, random_state=0).fit(x)
    assert len(set(map(tuple, model.encode(x).tolist()))) > 8


def test_a_codebook_size_past_u32_is_refused_as_given() -> None:
    for k in (2**32, 2**64, [4, 2**40]):
        with pytest.raises(imesde.InvalidValueError, match="at most 4294967295"):
            imesde.RQKMeans(2, k)


def test_token_ids_name_every_level_apart() -> None:
    codes = np.zeros((1, 30), np.int64)
    (tokens,) = imesde.codes_to_ids(codes, fmt="token")
    names = [t.split("_")[0].lstrip("<") for t in tokens.rstrip(">").split("><")]
    assert len(set(names)) == 30
    assert names[:2] == ["a", "b"]
    assert names[25:28] == ["z", "aa", "ab"]


def test_a_codebook_file_with_more_levels_than_imesde_writes_is_corrupt(tmp_path: Path) -> None:
    import struct
    import zlib

    magic = b"IMESDE-RQ\n"
    body = magic + struct.pack("<IIIf", 2, 4, 257, 1.0)
    for _ in range(257):
        body += struct.pack("<IB", 1, 0) + np.ones(4, "<f4").tobytes()
    path = tmp_path / "many.rq"
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(imesde.IndexCorruptError, match="levels"):
        imesde.RQKMeans.load(path)
