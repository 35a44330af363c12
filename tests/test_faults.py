"""Damaged and half-written files, for all three formats (engine snapshots, BM25 indexes,
RQ-KMeans codebooks): every truncation and random byte change is IndexCorruptError, and a
save killed at any moment leaves the previous file loadable and no temporary behind that a
later save keeps."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import pytest

Format = tuple[Callable[[Path], None], Callable[[Path], Any]]


def _engine(path: Path) -> None:
    e = imesde.Engine(8, num_shards=2, shard_size=8, storage="int8")
    e.ingest_vectors(
        np.random.default_rng(3).standard_normal((12, 8), dtype=np.float32),
        [f"item {i} \u00e9t\u00e9" for i in range(12)],
        metadata=[{"n": str(i)} for i in range(12)],
    )
    e.save(path)


def _bm25(path: Path) -> None:
    index = imesde.BM25(method="bm25+", stopwords=["the", "a"])
    index.add_batch(list(range(20)), [f"the nfs client {i} fixes a leak" for i in range(20)])
    index.remove(3)
    index.save(path)


def _rq(path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((200, 6)).astype(np.float32)
    imesde.RQKMeans(2, 4, balanced=True, random_state=0).fit(x).save(path)


FORMATS: dict[str, Format] = {
    "engine": (_engine, imesde.Engine.load),
    "bm25": (_bm25, imesde.BM25.load),
    "rq": (_rq, imesde.RQKMeans.load),
}


@pytest.mark.parametrize("kind", FORMATS)
def test_every_truncation_and_random_change_is_corrupt(kind: str, tmp_path: Path) -> None:
    save, load = FORMATS[kind]
    good = tmp_path / "good"
    save(good)
    load(good)
    data = good.read_bytes()
    bad = tmp_path / "bad"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(imesde.IndexCorruptError):
            load(bad)
    rng = random.Random(kind)
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        bad.write_bytes(bytes(b))
        with pytest.raises(imesde.IndexCorruptError):
            load(bad)
    # Extra bytes after a whole file are damage too.
    bad.write_bytes(data + b"\0")
    with pytest.raises(imesde.IndexCorruptError):
        load(bad)


_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import imesde
    kind, path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(int(sys.argv[3]))
    print("ready", flush=True)
    while True:
        n = int(rng.integers(50, 3000))
        if kind == "engine":
            e = imesde.Engine(32, num_shards=4, shard_size=1024)
            e.ingest_vectors(rng.standard_normal((n, 32), dtype=np.float32))
            e.save(path)
        elif kind == "bm25":
            index = imesde.BM25()
            index.add_batch(list(range(n)), [f"doc {i} nfs {i % 13}" for i in range(n)])
            index.save(path)
        else:
            x = rng.standard_normal((max(n, 64), 16)).astype(np.float32)
            imesde.RQKMeans(2, 8, random_state=0).fit(x).save(path)
    """
)


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.timeout(300)
def test_a_save_killed_at_any_moment_leaves_the_previous_file(kind: str, tmp_path: Path) -> None:
    save, load = FORMATS[kind]
    path = tmp_path / f"target.{kind}"
    save(path)
    rng = random.Random(kind)
    for attempt in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, kind, str(path), str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()  # SIGKILL; TerminateProcess on Windows
        proc.wait(timeout=60)
        # Whatever the moment: the file is one whole save, the old one or a new one.
        load(path)
        # The next save (any process) removes what the killed one left behind (on Unix,
        # where a lock tells a dead writer's file from a live one's).
        save(path)
        load(path)
        if sys.platform != "win32":
            assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], attempt
    assert os.path.getsize(path) > 0
