"""Semantic IDs: RQ-KMeans codes as strings like ``"12-5-33"``, made unique on demand.

The API follows the ``semantic-id`` package, so switching is a change of import::

    from imesde import RQKMeans, SemanticIdEngine, SQLiteCollisionStore, UniqueIdResolver

    encoder = RQKMeans(n_levels=3, n_clusters=256, random_state=42)
    engine = SemanticIdEngine(encoder, UniqueIdResolver(SQLiteCollisionStore("ids.db")))
    engine.fit(X)
    ids = engine.unique_ids(X)  # "12-5-33", "12-5-33-1", ...

Training, encoding and decoding run in Rust (``imesde._imesde.RQCodebooks``): seeded k-means
per level on the residuals of the previous levels, parallel Lloyd iterations on SIMD kernels
whose rounding is the same on every CPU, so a ``random_state`` gives the same codebooks on
every machine and thread count.
"""

# ``X`` (capital) is the argument name semantic-id and scikit-learn users pass by keyword.
# ruff: noqa: N803

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from imesde._imesde import IdStore, Labeler, RQCodebooks, rq_codebook_usage, rq_collision_rate
from imesde.exceptions import (
    DTypeError,
    ImesdeError,
    IndexCorruptError,
    InvalidValueError,
    OutOfRangeError,
    ShapeError,
    StorageError,
)

__all__ = [
    "CollisionStore",
    "InMemoryCollisionStore",
    "RQKMeans",
    "SQLiteCollisionStore",
    "SemanticIdEngine",
    "UniqueIdResolver",
    "codes_to_ids",
]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _matrix(x: Any, what: str = "X") -> npt.NDArray[np.float32]:
    """``x`` as a C-contiguous float32 ``(n, dim)`` array (lists and float64 are converted, as
    in ``semantic-id``)."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ShapeError(f"{what} must be 2-D (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"{what} is empty (shape {arr.shape})")
    return arr


def _codes(codes: Any) -> npt.NDArray[np.int64]:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ShapeError(f"codes must be 2-D (n, n_levels), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidValueError(f"codes must be integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def codes_to_ids(
    codes: Any,
    *,
    sep: str = "-",
    fmt: Literal["plain", "token"] = "plain",
    formatter: Callable[[npt.NDArray[np.int64]], str] | None = None,
) -> list[str]:
    """Turn codes ``(n, n_levels)`` into strings.

    ``fmt="plain"`` joins the codes with ``sep`` (``"3-9-1"``); ``fmt="token"`` writes one token
    per level (``"<a_3><b_9><c_1>"``, for language models); ``formatter`` maps one row of codes
    to a string and overrides both.
    """
    arr = _codes(codes)
    if formatter is not None:
        return [formatter(row) for row in arr]
    if fmt == "token":
        return [
            "".join(f"<{_LETTERS[lvl % 26]}_{c}>" for lvl, c in enumerate(row))
            for row in arr.tolist()
        ]
    if fmt != "plain":
        raise InvalidValueError(f"fmt must be 'plain' or 'token', got {fmt!r}")
    return [sep.join(map(str, row)) for row in arr.tolist()]


class RQKMeans:
    """Residual-quantisation k-means: ``n_levels`` codebooks, each trained on what the previous
    levels leave unexplained; a vector's code is one codeword index per level.

    Args:
        n_levels: Number of levels (the length of a code).
        n_clusters: Codebook size, one number for every level or one per level
            (``[16, 64, 256]``).
        balanced: Give every codeword of a level nearly the same number of training vectors
            (size-capped assignment); the learnt per-codeword biases keep encoding balanced.
        max_iter: Most Lloyd iterations per level.
        tol: Stop a level when the summed squared centroid shift is below ``tol`` times the
            mean per-feature variance.
        random_state: Seed; the same seed gives bit-identical codebooks on every machine and
            thread count. ``None`` draws one.
        sample_size: Train each level on at most this many vectors.
        max_points_per_centroid: And on at most this many per codeword (faiss's rule and
            default; ``None`` trains on everything).
        init: ``"random"`` (k distinct training vectors, the same ones at every level) or
            ``"k-means++"``.
        refine: Rounds of joint codebook refinement after training: each re-encodes the
            training set and moves every codeword to its least-squares optimum; a balanced
            model then learns its biases again so codes stay evenly used. ``None``: 3 rounds
            for a plain model, 1 for a balanced one (every round lowers the error and, for a
            balanced model, adds a few collisions).
        beam_width: Default beam width of :meth:`encode` (1 is greedy).
    """

    def __init__(
        self,
        n_levels: int = 4,
        n_clusters: int | Sequence[int] = 256,
        *,
        balanced: bool = False,
        max_iter: int = 25,
        tol: float = 1e-4,
        random_state: int | None = None,
        sample_size: int | None = None,
        max_points_per_centroid: int | None = 256,
        init: Literal["random", "k-means++"] = "random",
        refine: int | None = None,
        beam_width: int = 1,
    ) -> None:
        if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
            raise InvalidValueError(f"n_levels must be a positive int, got {n_levels!r}")
        if isinstance(n_clusters, int):
            ks = [n_clusters] * n_levels
        else:
            ks = [int(k) for k in n_clusters]
            if len(ks) != n_levels:
                raise InvalidValueError(f"len(n_clusters) is {len(ks)} but n_levels is {n_levels}")
        if any(k < 1 for k in ks):
            raise InvalidValueError(f"every n_clusters must be >= 1, got {ks}")
        if init not in ("random", "k-means++"):
            raise InvalidValueError(f"init must be 'random' or 'k-means++', got {init!r}")
        if beam_width < 1:
            raise InvalidValueError(f"beam_width must be >= 1, got {beam_width}")
        self.n_levels = n_levels
        self.n_clusters = ks
        self.balanced = balanced
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.sample_size = sample_size
        self.max_points_per_centroid = max_points_per_centroid
        self.init = init
        self.refine = refine
        self.beam_width = beam_width
        self.fit_report_: list[dict[str, Any]] = []
        self._books: RQCodebooks | None = None

    def _fitted(self) -> RQCodebooks:
        if self._books is None:
            raise ImesdeError("this RQKMeans is not fitted yet: call fit(X) or RQKMeans.load")
        return self._books

    @property
    def is_fitted(self) -> bool:
        """Whether codebooks exist (after :meth:`fit` or :meth:`load`)."""
        return self._books is not None

    @property
    def D_(self) -> int | None:  # noqa: N802 (the name scikit-learn-style users know)
        """The vector dimension, once fitted."""
        return None if self._books is None else self._books.dim

    @property
    def codebooks_(self) -> list[npt.NDArray[np.float32]]:
        """Copies of the codebooks, one ``(k, dim)`` float32 array per level."""
        return self._fitted().codebooks

    def fit(self, X: Any, *, device: str = "cpu") -> RQKMeans:
        """Train the codebooks on ``X`` ``(n, dim)``; returns ``self``.

        ``device`` exists for ``semantic-id`` compatibility; only ``"cpu"`` is supported.
        """
        if device != "cpu":
            raise InvalidValueError(f"imesde runs RQ-KMeans on the CPU; got device={device!r}")
        seed = self.random_state if self.random_state is not None else secrets.randbits(63)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DTypeError(f"random_state must be an int or None, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise OutOfRangeError(f"random_state must be from 0 to 2**64 - 1, got {seed}")
        books, report = RQCodebooks.fit(
            _matrix(X),
            self.n_clusters,
            balanced=self.balanced,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=seed,
            sample_size=self.sample_size,
            max_points_per_centroid=self.max_points_per_centroid,
            init=self.init,
            refine=self.refine,
        )
        self._books = books
        self.fit_report_ = [
            {"level": i, "iterations": it, "converged": conv, "mse": mse}
            for i, (it, conv, mse) in enumerate(report)
        ]
        return self

    def encode(
        self,
        X: Any,
        *,
        beam_width: int | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
    ) -> npt.NDArray[np.int32]:
        """Codes of ``X``: an int32 array ``(n, n_levels)``.

        ``beam_width`` (default: the constructor's) keeps that many partial codes per vector and
        returns the best reconstruction; 1 is greedy. ``device`` and ``batch_size`` are accepted
        for ``semantic-id`` compatibility (encoding is already parallel and chunked).
        """
        del device, batch_size
        beam = self.beam_width if beam_width is None else beam_width
        return self._fitted().encode(_matrix(X), beam)

    def decode(self, codes: Any) -> npt.NDArray[np.float32]:
        """Reconstructions ``(n, dim)``: the sum of each level's codeword."""
        return self._fitted().decode(_codes(codes))

    def semantic_id(
        self,
        codes: Any,
        *,
        sep: str = "-",
        fmt: Literal["plain", "token"] = "plain",
        formatter: Callable[[npt.NDArray[np.int64]], str] | None = None,
    ) -> list[str]:
        """Codes as strings (see :func:`codes_to_ids`)."""
        return codes_to_ids(codes, sep=sep, fmt=fmt, formatter=formatter)

    def __call__(self, X: Any) -> list[str]:
        """``semantic_id(encode(X))``: lets a fitted model label items in an ``Engine``."""
        return self.semantic_id(self.encode(X))

    def _native_labeler(self, store: IdStore | None = None) -> Labeler | None:
        """What an ``Engine`` runs in Rust in place of calling ``self`` per batch (the same ids,
        made unique through ``store`` when given); None when a subclass changes how ids are
        made."""
        cls = type(self)
        if (cls.__call__, cls.encode, cls.semantic_id) != (
            RQKMeans.__call__,
            RQKMeans.encode,
            RQKMeans.semantic_id,
        ):
            return None
        return self._fitted().labeler(self.beam_width, store)

    def reconstruction_error(self, X: Any) -> float:
        """Mean over vectors of ``|x - decode(encode(x))|^2``."""
        x = _matrix(X)
        rec = self.decode(self.encode(x))
        return float(np.mean(np.sum((x.astype(np.float64) - rec) ** 2, axis=1)))

    @staticmethod
    def collision_rate(codes: Any) -> float:
        """Fraction of items whose full code is shared with at least one other item."""
        return rq_collision_rate(_codes(codes))

    def codebook_usage(self, codes: Any) -> list[dict[str, Any]]:
        """Per level: ``used`` codewords, normalised ``entropy`` (1.0 is perfectly even) and
        ``counts`` per codeword."""
        usage = rq_codebook_usage(_codes(codes), self.n_clusters)
        return [{"used": u, "entropy": e, "counts": c} for u, e, c in usage]

    def score(self, X: Any) -> dict[str, Any]:
        """Quality of the codes of ``X``: ``mse``, ``collision_rate``, ``usage_entropy`` and
        ``codebook_utilization`` (fraction of codewords used) per level."""
        x = _matrix(X)
        codes = self.encode(x)
        rec = self.decode(codes)
        usage = self.codebook_usage(codes)
        return {
            "mse": float(np.mean(np.sum((x.astype(np.float64) - rec) ** 2, axis=1))),
            "collision_rate": self.collision_rate(codes),
            "usage_entropy": [u["entropy"] for u in usage],
            "codebook_utilization": [
                u["used"] / k for u, k in zip(usage, self.n_clusters, strict=True)
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the codebooks to one file (versioned, checksummed, written atomically)."""
        self._fitted().save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RQKMeans:
        """Read codebooks written by :meth:`save`; a damaged file raises
        ``IndexCorruptError``. The codes are the same as before saving, on any machine."""
        books = RQCodebooks.load(path)
        model = cls(len(books.n_clusters), books.n_clusters)
        model.balanced = any(b.size for b in books.biases)
        model._books = books
        return model

    def __repr__(self) -> str:
        state = f"dim={self.D_}" if self.is_fitted else "not fitted"
        return (
            f"RQKMeans(n_levels={self.n_levels}, n_clusters={self.n_clusters}, "
            f"balanced={self.balanced}, {state})"
        )


@runtime_checkable
class CollisionStore(Protocol):
    """What :class:`UniqueIdResolver` needs from a store (the ``semantic-id`` protocol).

    ``next_suffix(key)`` returns how many times ``key`` was seen before and counts this one:
    0 the first time, then 1, 2, ... A store may also offer ``claim(keys, sep, owners=None)``,
    which returns the final unique ids of a batch atomically; the built-in stores do, and
    guarantee that no id is ever handed out twice (even when a suffixed id looks like another
    item's code) and that an owner asking again for the same key gets its own id back.
    """

    def next_suffix(self, key: str) -> int:
        """The number of earlier occurrences of ``key``; counts this one."""
        ...


def _claim(
    keys: Sequence[str],
    owners: Sequence[str] | None,
    sep: str,
    count: Callable[[str], int],
    owned: Callable[[str, str], str | None],
    take: Callable[[str, str | None], bool],
) -> tuple[list[str], dict[str, int]]:
    """The claim rule of the stores (the in-memory one runs the same rule in Rust:
    ``imesde_engine::IdStore::claim``). Without an owner, the first ``k`` stays ``k`` and later
    ones get ``k-1``, ``k-2``, ... (``count(key)`` is the stored counter, read once per key).
    With one, an owner that holds an id for ``k`` gets it back (``owned``); otherwise it gets
    ``k``, else ``k-<owner>``, else ``k-<owner>-1``, ``k-<owner>-2``, ... Every candidate that
    ``take(id, owner)`` reports as already handed out is skipped. Returns the ids and each
    key's new counter."""
    counts: dict[str, int] = {}
    mine: dict[tuple[str, str], str] = {}  # ids this batch gave owners
    out = []
    for i, key in enumerate(keys):
        owner = None if owners is None else owners[i]
        if owner is not None:
            sid = mine.get((key, owner)) or owned(key, owner)
            if sid is None:
                tail = (f"{key}{sep}{owner}{sep}{n}" for n in itertools.count(1))
                candidates = itertools.chain((key, f"{key}{sep}{owner}"), tail)
                sid = next(c for c in candidates if take(c, owner))
            mine[(key, owner)] = sid
            out.append(sid)
            continue
        n = counts[key] if key in counts else count(key)
        while True:
            cand = key if n == 0 else f"{key}{sep}{n}"
            n += 1
            if take(cand, None):
                break
        counts[key] = n
        out.append(cand)
    return out, counts


class InMemoryCollisionStore:
    """A thread-safe store in memory: unique within one process, gone when it ends. Its state
    lives in Rust, where an ``Engine`` labelling items with it reads and writes it too."""

    def __init__(self) -> None:
        self._ids = IdStore()

    def next_suffix(self, key: str) -> int:
        """The number of earlier occurrences of ``key``; counts this one."""
        return self._ids.next_suffix(key)

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        """Unique ids for ``keys`` (see :class:`UniqueIdResolver` for the rule)."""
        return self._ids.claim(
            [str(k) for k in keys], sep, None if owners is None else [str(o) for o in owners]
        )

    def __len__(self) -> int:
        """Number of ids handed out by :meth:`claim`."""
        return len(self._ids)

    def __repr__(self) -> str:
        return f"InMemoryCollisionStore(ids={len(self)})"


class SQLiteCollisionStore:
    """A store in an SQLite database (stdlib ``sqlite3``), shared safely by threads and by
    processes: each batch is one ``BEGIN IMMEDIATE`` transaction, so concurrent resolvers
    serialise on the database lock and never hand out the same id.

    Args:
        path: The database file (created if missing).
        timeout: Seconds to wait for another writer's lock before raising.

    Raises:
        StorageError: The database cannot be created, opened or written (a read-only folder,
            a lock held past ``timeout``); ``IndexCorruptError`` when the file is not an
            SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str] = "collisions.db", *, timeout: float = 60.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS imesde_sid_counts"
                " (key TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS imesde_sid_issued (id TEXT PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS imesde_sid_owned"
                " (key TEXT NOT NULL, owner TEXT NOT NULL, id TEXT NOT NULL,"
                " PRIMARY KEY (key, owner))"
            )

        self._transaction(create)

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise _storage_error(self.path, e) from e

    def next_suffix(self, key: str) -> int:
        """The number of earlier occurrences of ``key``; counts this one."""

        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT n FROM imesde_sid_counts WHERE key = ?", (key,)).fetchone()
            n = 0 if row is None else int(row[0])
            conn.execute(
                "INSERT INTO imesde_sid_counts (key, n) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET n = excluded.n",
                (key, n + 1),
            )
            return n

        result: int = self._transaction(work)
        return result

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        """Unique ids for ``keys`` in one transaction (see :class:`UniqueIdResolver`)."""

        def work(conn: sqlite3.Connection) -> list[str]:
            def count(key: str) -> int:
                row = conn.execute("SELECT n FROM imesde_sid_counts WHERE key = ?", (key,))
                found = row.fetchone()
                return 0 if found is None else int(found[0])

            def owned(key: str, owner: str) -> str | None:
                row = conn.execute(
                    "SELECT id FROM imesde_sid_owned WHERE key = ? AND owner = ?", (key, owner)
                ).fetchone()
                return None if row is None else str(row[0])

            def take(cand: str, owner: str | None) -> bool:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO imesde_sid_issued (id) VALUES (?)", (cand,)
                )
                return cur.rowcount == 1

            out, counts = _claim(keys, owners, sep, count, owned, take)
            conn.executemany(
                "INSERT INTO imesde_sid_counts (key, n) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET n = excluded.n",
                list(counts.items()),
            )
            if owners is not None:
                conn.executemany(
                    "INSERT OR IGNORE INTO imesde_sid_owned (key, owner, id) VALUES (?, ?, ?)",
                    list(zip(keys, owners, out, strict=True)),
                )
            return out

        result: list[str] = self._transaction(work)
        return result

    def __len__(self) -> int:
        """Number of ids handed out by :meth:`claim`."""

        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM imesde_sid_issued").fetchone()[0])

        result: int = self._transaction(work)
        return result

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteCollisionStore({self.path!r}, timeout={self.timeout!r})"


def _storage_error(path: str, e: sqlite3.Error) -> ImesdeError:
    """An SQLite error as imesde's: a file that is not a database is corrupt, anything else
    (permissions, a read-only folder, a lock held too long) a storage error."""
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
        return IndexCorruptError(f"{path}: {e}")
    return StorageError(f"{path}: {e}")


class UniqueIdResolver:
    """Makes semantic ids unique: the first ``"12-5-33"`` stays as is, later ones become
    ``"12-5-33-1"``, ``"12-5-33-2"``, ... With ``item_ids``, an item gets ``"12-5-33"`` if it is
    free, else ``"12-5-33-<item id>"`` (then ``"12-5-33-<item id>-1"``, ... if that is taken);
    an item asking again for the same code gets its own id back. With the built-in stores an
    id, once handed out, is never handed out again, whichever way it was asked for.

    Args:
        store: Where counts live (default: a new :class:`InMemoryCollisionStore`). Any object
            with ``next_suffix(key) -> int`` works (:class:`CollisionStore`); only stores with
            ``claim`` give the guarantees above.
    """

    def __init__(self, store: CollisionStore | None = None) -> None:
        self.store: CollisionStore = store if store is not None else InMemoryCollisionStore()

    def assign(
        self,
        semantic_ids: Sequence[str],
        *,
        item_ids: Sequence[Any] | None = None,
        sep: str = "-",
    ) -> list[str]:
        """Unique ids for ``semantic_ids``, in order. ``item_ids`` (one per id, compared as
        ``str(item)``) name the items the ids are for."""
        keys = list(semantic_ids)
        owners = None
        if item_ids is not None:
            if len(item_ids) != len(keys):
                raise ShapeError(f"{len(item_ids)} item_ids for {len(keys)} semantic ids")
            owners = [str(item) for item in item_ids]
        claim = getattr(self.store, "claim", None)
        if callable(claim):
            claimed: list[str] = claim(keys, sep, owners)
            return claimed
        if owners is not None:
            return [
                sid if self.store.next_suffix(sid) == 0 else f"{sid}{sep}{owner}"
                for sid, owner in zip(keys, owners, strict=True)
            ]
        out = []
        for sid in keys:
            n = self.store.next_suffix(sid)
            out.append(sid if n == 0 else f"{sid}{sep}{n}")
        return out

    def __repr__(self) -> str:
        return f"UniqueIdResolver(store={self.store!r})"


class SemanticIdEngine:
    """An encoder plus a resolver: ``fit`` trains, ``unique_ids`` labels items.

    Args:
        encoder: A :class:`RQKMeans` (or anything with ``fit``, ``encode`` and
            ``semantic_id``).
        unique_resolver: Default: a :class:`UniqueIdResolver` over an in-memory store.
    """

    def __init__(self, encoder: RQKMeans, unique_resolver: UniqueIdResolver | None = None):
        self.encoder = encoder
        self.unique_resolver = (
            unique_resolver if unique_resolver is not None else UniqueIdResolver()
        )

    def fit(self, X: Any, *, device: str = "cpu") -> SemanticIdEngine:
        """Train the encoder; returns ``self``."""
        self.encoder.fit(X, device=device)
        return self

    def semantic_ids(
        self,
        X: Any,
        *,
        sep: str = "-",
        fmt: Literal["plain", "token"] = "plain",
        formatter: Callable[[npt.NDArray[np.int64]], str] | None = None,
    ) -> list[str]:
        """The raw (possibly shared) semantic ids of ``X``."""
        return self.encoder.semantic_id(
            self.encoder.encode(X), sep=sep, fmt=fmt, formatter=formatter
        )

    def unique_ids(
        self,
        X: Any,
        *,
        device: str = "cpu",
        batch_size: int | None = None,
        sep: str = "-",
        fmt: Literal["plain", "token"] = "plain",
        formatter: Callable[[npt.NDArray[np.int64]], str] | None = None,
        item_ids: Sequence[Any] | None = None,
    ) -> list[str]:
        """Encode ``X``, format the codes and resolve collisions through the store."""
        del device, batch_size
        sids = self.semantic_ids(X, sep=sep, fmt=fmt, formatter=formatter)
        return self.unique_resolver.assign(sids, item_ids=item_ids, sep=sep)

    def __call__(self, X: Any) -> list[str]:
        """``unique_ids(X)``: lets an ``Engine`` label what it ingests
        (``engine.attach_semantic_ids(sid_engine)``)."""
        return self.unique_ids(X)

    def _native_labeler(self) -> Labeler | None:
        """What an ``Engine`` runs in Rust in place of calling ``self`` per batch: an
        :class:`RQKMeans` encoder with an in-memory store gives the same ids there; None for
        anything customised (another encoder, store or resolver, or a subclass)."""
        cls = type(self)
        if (cls.__call__, cls.unique_ids, cls.semantic_ids) != (
            SemanticIdEngine.__call__,
            SemanticIdEngine.unique_ids,
            SemanticIdEngine.semantic_ids,
        ):
            return None
        resolver, encoder = self.unique_resolver, self.encoder
        if type(resolver) is not UniqueIdResolver or not isinstance(encoder, RQKMeans):
            return None
        store = resolver.store
        if type(store) is not InMemoryCollisionStore:
            return None
        return encoder._native_labeler(store._ids)

    def __repr__(self) -> str:
        return f"SemanticIdEngine(encoder={self.encoder!r}, resolver={self.unique_resolver!r})"
