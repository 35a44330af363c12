"""Unique semantic ids under any interleaving: an id, once handed out, is never handed out to
another item, and an item asking again gets its own id back, with either store and from
several processes sharing one SQLite file."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

import hypothesis.strategies as st
import imesde
import numpy as np
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, rule

# Codes that collide with each other's suffixed forms ("1-2" + item 3 is "1-2-3").
KEYS = st.sampled_from(["1-2", "1-2-1", "1-2-3", "1-2-3-1", "3", "3-1", "1"])
ITEMS = st.sampled_from([1, 3, "1", "a", 2, "3-1", ""])


def test_the_reported_sequences() -> None:
    for store in (imesde.InMemoryCollisionStore(), None):
        with tempfile.TemporaryDirectory() as d:
            s = store if store is not None else imesde.SQLiteCollisionStore(Path(d) / "x.db")
            r = imesde.UniqueIdResolver(s)
            first = r.assign(["1-2", "1-2"])
            assert first == ["1-2", "1-2-1"]
            again = r.assign(["1-2"], item_ids=[1])
            assert again[0] not in first
            assert r.assign(["1-2"], item_ids=[1]) == again
            held = r.assign(["1-2-3"])
            assert held == ["1-2-3"]
            # Item 3's suffixed id would be "1-2-3", which another item holds.
            assert r.assign(["1-2"], item_ids=[3]) != held
            if isinstance(s, imesde.SQLiteCollisionStore):
                s.close()


class ResolverMachine(RuleBasedStateMachine):
    """A resolver driven by random batches, with and without item ids, against a plain model
    of who holds which id."""

    def make_store(self) -> imesde.CollisionStore:
        return imesde.InMemoryCollisionStore()

    def __init__(self) -> None:
        super().__init__()
        self.resolver = imesde.UniqueIdResolver(self.make_store())
        self.holder: dict[str, str | None] = {}  # id -> owner (None: anonymous)
        self.mine: dict[tuple[str, str], str] = {}  # (code, owner) -> its id

    def _new(self, sid: str, key: str, owner: str | None) -> None:
        assert sid not in self.holder, f"{sid} handed out twice"
        assert sid == key or sid.startswith(key + "-")
        self.holder[sid] = owner

    @rule(keys=st.lists(KEYS, max_size=6))
    def anonymous(self, keys: list[str]) -> None:
        out = self.resolver.assign(keys)
        assert len(out) == len(keys)
        for key, sid in zip(keys, out, strict=True):
            self._new(sid, key, None)

    @rule(pairs=st.lists(st.tuples(KEYS, ITEMS), max_size=6))
    def by_item(self, pairs: list[tuple[str, object]]) -> None:
        keys = [k for k, _ in pairs]
        out = self.resolver.assign(keys, item_ids=[i for _, i in pairs])
        for (key, item), sid in zip(pairs, out, strict=True):
            owner = str(item)
            if (key, owner) in self.mine:
                assert sid == self.mine[(key, owner)], "an item asking again got another id"
            else:
                self._new(sid, key, owner)
                self.mine[(key, owner)] = sid


class SQLiteResolverMachine(ResolverMachine):
    def make_store(self) -> imesde.CollisionStore:
        self.folder = tempfile.mkdtemp()
        self.store = imesde.SQLiteCollisionStore(Path(self.folder) / "ids.db")
        return self.store

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)


TestInMemoryResolver = ResolverMachine.TestCase
TestInMemoryResolver.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestSQLiteResolver = SQLiteResolverMachine.TestCase
TestSQLiteResolver.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


_WORKER = textwrap.dedent(
    """
    import json, random, sys
    import imesde
    store = imesde.SQLiteCollisionStore(sys.argv[1], timeout=120)
    resolver = imesde.UniqueIdResolver(store)
    rng = random.Random(int(sys.argv[2]))
    keys = ["1-2", "1-2-1", "1-2-3", "3", "3-1"]
    items = [1, 3, "1", "a", "3-1"]
    out = []
    for _ in range(60):
        batch = [rng.choice(keys) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            out += [[k, None, s] for k, s in zip(batch, resolver.assign(batch))]
        else:
            owners = [rng.choice(items) for _ in batch]
            ids = resolver.assign(batch, item_ids=owners)
            out += [[k, str(o), s] for k, o, s in zip(batch, owners, ids)]
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(300)
def test_processes_sharing_one_database_never_share_an_id(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    imesde.SQLiteCollisionStore(db).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    claims: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        for key, owner, sid in json.loads(out):
            claims[sid].append((key, owner))
    assert claims
    for sid, who in claims.items():
        anonymous = [w for w in who if w[1] is None]
        # One anonymous claim, or any number of claims by one item for one code.
        assert (len(who) == 1 and anonymous) or (not anonymous and len(set(who)) == 1), (
            sid,
            who,
        )


def test_store_arguments_are_checked(tmp_path: Path) -> None:
    from imesde.semantic_ids import InMemoryCollisionStore, SQLiteCollisionStore

    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(imesde.InvalidValueError):
            SQLiteCollisionStore(tmp_path / "a.db", timeout=bad)
    with pytest.raises(imesde.DTypeError):
        SQLiteCollisionStore(tmp_path / "a.db", timeout="5")  # type: ignore[arg-type]
    # Both stores refuse what is not a str alike (an array of codes is not a key).
    for store in (SQLiteCollisionStore(tmp_path / "a.db", timeout=1), InMemoryCollisionStore()):
        for keys in ([1], [b"k"], ["k", None], [np.array([12, 5])]):
            with pytest.raises(imesde.DTypeError):
                store.claim(keys)  # type: ignore[arg-type]
        with pytest.raises(imesde.DTypeError):
            store.claim(["k"], sep=5)  # type: ignore[arg-type]
        with pytest.raises(imesde.DTypeError):
            store.claim(["k"], owners=[3])  # type: ignore[list-item]
        # Nothing was counted by the refused calls.
        assert store.claim(["k", "k"]) == ["k", "k-1"]


def test_a_forged_store_state_is_refused() -> None:
    from imesde._imesde import IdStore

    store = IdStore()
    store.claim(["k", "k"], "-", ["a", "b"])
    assert IdStore._from_state(*store.__reduce__()[1]).claim(["k"], "-", ["b"]) == ["k-b"]
    # States no store can be in, each of which could hand out an id twice.
    for names, owned in [
        ([], [("k", "o", "x")]),  # an owner's id never handed out
        ([("x", 1, True)], [("k", "o", "x"), ("j", "p", "x")]),  # one id, two owners
        ([("a", 0, True), ("a", 5, False)], []),  # a name twice
        ([("k", 2**64 - 1, False)], []),  # a count that wraps
    ]:
        with pytest.raises(imesde.InvalidValueError, match="state"):
            IdStore._from_state(names, owned)


@pytest.mark.parametrize(
    "forgery",
    [
        # Every insert ignored: each id looked handed out, and a claim looked for ever.
        "CREATE TABLE imesde_sid_issued (id TEXT PRIMARY KEY);"
        "CREATE TRIGGER t BEFORE INSERT ON imesde_sid_issued BEGIN SELECT RAISE(IGNORE); END;",
        "CREATE VIEW imesde_sid_counts AS SELECT 'k' AS key, 1 AS n;",
        # SQLite's names ignore case.
        "CREATE TABLE imesde_sid_issued (id TEXT PRIMARY KEY);"
        "CREATE TRIGGER t BEFORE INSERT ON IMESDE_SID_ISSUED BEGIN SELECT RAISE(IGNORE); END;",
        # Without its key an id is handed out twice.
        "CREATE TABLE imesde_sid_issued (id TEXT);",
    ],
)
def test_a_given_database_with_more_than_the_store_s_tables_is_refused(
    tmp_path: Path, forgery: str
) -> None:
    import sqlite3

    path = tmp_path / "ids.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(forgery)
    conn.close()
    with pytest.raises(imesde.IndexCorruptError, match="not a store's database"):
        imesde.SQLiteCollisionStore(str(path), timeout=1)
    # The store's own database is taken, reopened and used as before, also with an index a
    # user added for their own lookups.
    own = tmp_path / "own.db"
    assert imesde.SQLiteCollisionStore(str(own)).claim(["a", "a"]) == ["a", "a-1"]
    with sqlite3.connect(own) as conn:
        conn.execute("CREATE INDEX mine ON imesde_sid_owned (id)")
    conn.close()
    assert imesde.SQLiteCollisionStore(str(own)).claim(["a"]) == ["a-2"]


def test_next_suffix_and_claim_never_hand_out_one_id_twice(tmp_path: Path) -> None:
    from imesde.semantic_ids import InMemoryCollisionStore, SQLiteCollisionStore

    for store in (InMemoryCollisionStore(), SQLiteCollisionStore(tmp_path / "s.db")):
        # next_suffix's ids (k, k-1) are taken for claim, and claim's for next_suffix.
        assert [store.next_suffix("k"), store.next_suffix("k")] == [0, 1]
        assert store.claim(["k-1", "k"]) == ["k-1-1", "k-2"]
        assert store.claim(["w", "w"]) == ["w", "w-1"]
        assert store.next_suffix("w-1") == 1  # "w-1" is claim's: this one is "w-1-1"
        assert store.next_suffix("w") == 2
        assert len(store) == 8


def test_a_private_sqlite_database_is_never_copied_or_reopened_empty() -> None:
    """``":memory:"`` lives in its connection: a pickled copy or a forked child opened a new,
    empty database and handed the same ids out again; after ``close()`` every id was gone."""
    import os
    import pickle

    store = imesde.SQLiteCollisionStore(":memory:")
    resolver = imesde.UniqueIdResolver(store)
    assert resolver.assign(["1-2", "1-2"]) == ["1-2", "1-2-1"]
    with pytest.raises(TypeError, match="private"):
        pickle.dumps(store)
    if hasattr(os, "fork"):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the store must refuse, not start over
            try:
                store.claim(["1-2"])
                os.write(write, b"claimed")
            except imesde.StorageError:
                os.write(write, b"refused")
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 16) == b"refused"
        os.close(read)
    assert resolver.assign(["1-2"]) == ["1-2-2"]  # the parent's store goes on
    store.close()
    with pytest.raises(imesde.StorageError, match="closed"):
        store.claim(["1-2"])


def test_store_arguments_are_typed_errors_and_both_stores_agree(tmp_path: Path) -> None:
    stores: list[imesde.InMemoryCollisionStore | imesde.SQLiteCollisionStore] = [
        imesde.InMemoryCollisionStore(),
        imesde.SQLiteCollisionStore(tmp_path / "ids.db"),
    ]
    for store in stores:
        with pytest.raises(imesde.ShapeError):
            store.claim(["a", "b"], "-", ["x"])
        with pytest.raises(imesde.TextEncodingError):
            store.claim(["\ud800"])
        with pytest.raises(imesde.DTypeError):
            store.claim(None)  # type: ignore[arg-type]
        resolver = imesde.UniqueIdResolver(store)
        with pytest.raises(imesde.DTypeError):
            resolver.assign(None)  # type: ignore[arg-type]
        # An empty item id is an item id: the same item asking twice gets one id.
        assert resolver.assign(["", ""], item_ids=["sku1", "sku1"]) == ["", ""]
        # Any iterable of item ids.
        got = resolver.assign(["k", "k"], item_ids=(i for i in ("a", "b")))
        assert got == ["k", "k-b"]
        assert len(store) == 3
    with pytest.raises(imesde.DTypeError):
        imesde.SQLiteCollisionStore(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_batch_the_engine_refuses_hands_out_no_ids(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    store = (
        imesde.InMemoryCollisionStore()
        if kind == "memory"
        else imesde.SQLiteCollisionStore(tmp_path / "ids.db")
    )
    encoder = imesde.RQKMeans(2, [4, 4], random_state=0).fit(x)
    engine = imesde.Engine(16, num_shards=1, shard_size=64)
    engine.attach_semantic_ids(imesde.SemanticIdEngine(encoder, imesde.UniqueIdResolver(store)))
    bad = x[:3].copy()
    bad[2] = 0.0  # a zero vector: refused by the engine
    with pytest.raises(imesde.InvalidValueError):
        engine.ingest_vectors(bad)
    assert len(store) == 0
    assert len(engine) == 0
    (first,) = engine.ingest_vectors(x[:1])
    assert engine.get(int(first)).metadata == {
        "semantic_id": encoder.semantic_id(encoder.encode(x[:1]))[0]
    }


def test_in_memory_store_keeps_a_codes_suffixes_as_one_run() -> None:
    from imesde.semantic_ids import InMemoryCollisionStore

    store = InMemoryCollisionStore()
    codes = [f"{i % 7}-{i % 5}" for i in range(35)]
    for _ in range(2_000):
        store.claim(codes)
    assert len(store) == 70_000
    # What it knows is a count and a run per code, not 70,000 ids (a pickle of it too).
    state = store._ids.__reduce__()[1]
    assert len(state[0]) == 35
    assert len(state[2]) == 35
    copy = pickle.loads(pickle.dumps(store._ids))
    assert len(copy) == 70_000
    # The copy and the original go on alike; a code that looks like a suffixed id in a run
    # is not handed out again.
    want = ["0-0-2000", "0-0-5-1", "6-4-2000"]
    assert copy.claim(["0-0", "0-0-5", "6-4"], "-") == want
    assert store.claim(["0-0", "0-0-5", "6-4"]) == want
    assert store.claim(["0-0"], sep="_") == ["0-0_2001"]
