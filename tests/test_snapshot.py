"""Snapshots (Engine.save / Engine.load) and bounded memory under a long stream."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import imesde
import numpy as np
import numpy.typing as npt
import pytest

if TYPE_CHECKING:
    from imesde._imesde import _Storage

Golden = tuple[list[str], npt.NDArray[np.float32]]


def filled(golden: Golden, storage: _Storage) -> imesde.Engine:
    texts, vecs = golden
    engine = imesde.Engine(384, num_shards=4, shard_size=64, storage=storage)
    n = len(vecs)
    for i in range(0, n, 50):
        engine.ingest_vectors(
            vecs[i : i + 50],
            texts[i : i + 50],
            timestamps=[1_700_000_000.0 + j for j in range(i, min(i + 50, n))],
            metadata=[{"half": str(j % 2)} if j % 3 else None for j in range(i, min(i + 50, n))],
        )
    return engine


@pytest.mark.parametrize("storage", ["f32", "int8"])
def test_save_load_restores_exactly(golden: Golden, tmp_path: Path, storage: _Storage) -> None:
    texts, vecs = golden
    engine = filled(golden, storage)  # 406 items through 256 slots: the ring has wrapped
    assert len(engine) == 256
    path = tmp_path / "engine.imesde"
    engine.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["engine.imesde"]
    back = imesde.Engine.load(path)
    assert len(back) == len(engine)
    assert back.capacity == engine.capacity
    assert back.model is None
    for q in (vecs[0], vecs[300], vecs[405]):
        a = engine.search_vector(q, k=20)
        b = back.search_vector(q, k=20)
        assert [(h.id, h.score, h.text, h.ts, h.metadata) for h in a] == [
            (h.id, h.score, h.text, h.ts, h.metadata) for h in b
        ]
        fa = engine.search_vector(q, k=5, where={"half": "1"}, since=1_700_000_200.0)
        fb = back.search_vector(q, k=5, where={"half": "1"}, since=1_700_000_200.0)
        assert [h.id for h in fa] == [h.id for h in fb]
    for i in range(150, 406):
        a_item, b_item = engine.get(i), back.get(i)
        np.testing.assert_array_equal(a_item.vector, b_item.vector)
        assert (a_item.text, a_item.ts, a_item.metadata) == (
            b_item.text,
            b_item.ts,
            b_item.metadata,
        )
    # The stream goes on where it stopped.
    assert int(back.ingest_vectors(vecs[:1], texts[:1])[0]) == 406


def test_damaged_or_missing_files_are_clear_errors(golden: Golden, tmp_path: Path) -> None:
    engine = filled(golden, "f32")
    path = tmp_path / "e.imesde"
    engine.save(path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(imesde.IndexCorruptError):
            imesde.Engine.load(path)
    bad = bytearray(data)
    bad[len(data) // 3] ^= 0x40
    path.write_bytes(bytes(bad))
    with pytest.raises(imesde.IndexCorruptError, match="checksum"):
        imesde.Engine.load(path)
    with pytest.raises(imesde.StorageError):
        imesde.Engine.load(tmp_path / "missing.imesde")
    with pytest.raises(imesde.StorageError):
        engine.save(tmp_path / "no" / "such" / "dir" / "e.imesde")
    assert len(engine) == 256  # the engine is untouched


@pytest.mark.parametrize(
    ("real", "forged", "why"),
    [
        (struct.pack("<d", 1000.0), struct.pack("<d", 1e308), "years 1 to 9999"),
        (b"\x02\x00\x00\x00ab", b"\x02\x00\x00\x00aa", "key repeats"),
    ],
)
def test_a_snapshot_holds_only_what_ingest_takes(real: bytes, forged: bytes, why: str) -> None:
    """A forged file (its CRC-32 made to match) with a time ingest refuses, or a metadata key
    twice, loaded: the time was searched and saved again, the repeat dropped unseen."""
    engine = imesde.Engine(4, num_shards=1, shard_size=4)
    x = np.eye(4, dtype=np.float32)[:1]
    engine.ingest_vectors(x, metadata={"aa": 1, "ab": 2}, timestamps=[1000.0])
    data = engine.to_bytes()
    assert data.count(real) == 1
    body = data[:-4].replace(real, forged)
    with pytest.raises(imesde.IndexCorruptError, match=why):
        imesde.Engine.from_bytes(body + zlib.crc32(body).to_bytes(4, "little"))
    assert imesde.Engine.from_bytes(data).get(0).metadata == {"aa": 1, "ab": 2}


def test_snapshot_while_ingesting_holds_whole_batches(golden: Golden, tmp_path: Path) -> None:
    texts, vecs = golden
    engine = imesde.Engine(384, num_shards=8, shard_size=512)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            engine.ingest_vectors(vecs[:100], texts[:100])

    t = threading.Thread(target=writer)
    t.start()
    try:
        for k in range(5):
            path = tmp_path / f"s{k}.imesde"
            engine.save(path)
            back = imesde.Engine.load(path)
            ids = sorted(item.id for item in back.recent(back.capacity))
            if not ids:
                continue
            assert (ids[-1] + 1) % 100 == 0  # ends on a batch boundary
            assert ids == list(range(ids[0], ids[-1] + 1))  # no holes
            assert len(ids) == min(ids[-1] + 1, back.capacity)
    finally:
        stop.set()
        t.join(timeout=30)


def test_memory_stays_flat_over_ten_times_the_capacity(golden: Golden) -> None:
    texts, vecs = golden

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    engine = imesde.Engine(384, num_shards=8, shard_size=512)  # 4,096 slots
    fixed = engine.stats()["memory_bytes"]
    batch_v = np.ascontiguousarray(np.tile(vecs, (11, 1))[:4096])
    batch_t = [f"{texts[i % len(texts)]} #{i}" for i in range(4096)]
    engine.ingest_vectors(batch_v, batch_t)
    after_fill = rss()
    payload = engine.stats()["payload_bytes"]
    for _ in range(10):
        engine.ingest_vectors(batch_v, batch_t)
    assert len(engine) == 4096
    assert engine.stats()["memory_bytes"] == fixed
    assert engine.stats()["payload_bytes"] == payload
    # Ten more rings' worth of texts went through; what is kept must not grow with them.
    assert rss() - after_fill < 16 * 2**20


@pytest.mark.model
def test_text_engine_with_bm25_round_trips_and_refuses_another_model(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]], tmp_path: Path
) -> None:
    engine = imesde.Engine(embedder, num_shards=4, shard_size=256, lexical=True)
    engine.ingest_batch([s["text"] for s in stream[:1200]])
    path = tmp_path / "text.imesde"
    engine.save(path)
    back = imesde.Engine.load(path, embedder)
    assert back.lexical
    for q in ("memory leak fixed", "translation update"):
        assert [(h.id, h.score) for h in engine.search(q, k=10)] == [
            (h.id, h.score) for h in back.search(q, k=10)
        ]
        assert [(h.id, h.score) for h in engine.lexical_search(q, k=10)] == [
            (h.id, h.score) for h in back.lexical_search(q, k=10)
        ]
    other = imesde.TextEmbedder(embedder.model_path, embedder.tokenizer_path, pooling="cls")
    with pytest.raises(imesde.InvalidValueError, match="snapshot was made with model"):
        imesde.Engine.load(path, other)
    # Without a model: the default one with the settings the snapshot recorded, as a pickle
    # makes its embedder again.
    tuned = imesde.Engine(imesde.TextEmbedder(max_length=24, pooling="cls"), num_shards=1)
    tuned.ingest_batch([s["text"] for s in stream[:50]])
    tuned.save(path)
    for back in (imesde.Engine.load(path), imesde.Engine.from_bytes(tuned.to_bytes())):
        assert back.model is not None
        assert (back.model.max_length, back.model.pooling) == (24, "cls")
        q = stream[7]["text"]
        assert [(h.id, h.score) for h in back.search(q)] == [
            (h.id, h.score) for h in tuned.search(q)
        ]
    vec_path = tmp_path / "small.imesde"
    small = imesde.Engine(16)
    small.ingest_vectors(np.ones((1, 16), dtype=np.float32))
    small.save(vec_path)
    with pytest.raises(imesde.DimensionMismatchError):
        imesde.Engine.load(vec_path, embedder)
