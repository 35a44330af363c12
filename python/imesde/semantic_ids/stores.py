"""Where unique ids are counted: the ``CollisionStore`` protocol, an in-memory store (its state
in Rust, shared with an ``Engine``'s labeler) and an SQLite store shared by processes."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

try:
    import sqlite3

    _NO_SQLITE: str | None = None
except ImportError as e:  # a Python built without _sqlite3: only SQLiteCollisionStore needs it
    _NO_SQLITE = str(e)

from imesde._args import listed
from imesde._imesde import IdStore
from imesde.exceptions import (
    DTypeError,
    ImesdeError,
    IndexCorruptError,
    InvalidValueError,
    ShapeError,
    StorageError,
    TextEncodingError,
)

__all__ = ["CollisionStore", "InMemoryCollisionStore", "SQLiteCollisionStore"]


@runtime_checkable
class CollisionStore(Protocol):
    """What :class:`UniqueIdResolver` needs from a store (the ``semantic-id`` protocol).

    ``next_suffix(key)`` returns how many times ``key`` was seen before and counts this one:
    0 the first time, then 1, 2, ... (the built-in stores skip a suffix whose id ``key-n`` was
    handed out already, by either method, and hand this one out). A store may also offer
    ``claim(keys, sep, owners=None)``, which returns the final unique ids of a batch
    atomically; the built-in stores do, and guarantee that no id is ever handed out twice
    (even when a suffixed id looks like another item's code) and that an owner asking again
    for the same key gets its own id back.
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
            sid = mine.get((key, owner))
            if sid is None:
                sid = owned(key, owner)
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


# The store's tables, each with its primary key, which makes a second claim of an id a no-op.
_KEYS = {
    "imesde_sid_counts": ["key"],
    "imesde_sid_issued": ["id"],
    "imesde_sid_owned": ["key", "owner"],
}
_TABLES = tuple(_KEYS)


def _check_schema(conn: sqlite3.Connection, path: str) -> None:
    """``IndexCorruptError`` unless the store's names are its three tables, each with its
    primary key and no trigger, view or unique index of another's: a database given to the
    store could hold such things under them (``CREATE TABLE IF NOT EXISTS`` keeps what is
    there), and a trigger that ignored inserts made every id look handed out, so a claim
    looked for a free one for ever; without its key, an id could be handed out twice. An
    ordinary index a user added for their own lookups is kept. SQLite's names ignore case."""
    marks = ",".join("?" * len(_TABLES))
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master"
        f" WHERE lower(tbl_name) IN ({marks}) OR lower(name) IN ({marks})",
        _TABLES * 2,
    ).fetchall()
    tables = sorted(name.lower() for kind, name, _ in rows if kind == "table")
    found = [
        f"{kind} {name}"
        for kind, name, sql in rows
        if kind in ("trigger", "view")
        or (kind == "index" and sql is not None and "UNIQUE" in sql.upper())
    ]
    for table, key in _KEYS.items():
        if table not in tables:
            continue
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        pk = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
        if pk != key:
            found.append(f"table {table} keyed by {pk or 'nothing'}, not {key}")
    if tables != sorted(_TABLES) or found:
        raise IndexCorruptError(
            f"{path}: not a store's database: its tables {', '.join(_TABLES)} must be the "
            f"store's, with no trigger or view (found {', '.join(found) or 'tables missing'})"
        )


class InMemoryCollisionStore:
    """A thread-safe store in memory: unique within one process, gone when it ends. Its state
    lives in Rust, where an ``Engine`` labelling items with it reads and writes it too."""

    def __init__(self) -> None:
        self._ids = IdStore()

    def next_suffix(self, key: str) -> int:
        """The suffix ``claim([key])`` gives (0 for ``key``, ``n`` for ``key-n``), handed out
        as that id: never one handed out before, whichever way it was asked for."""
        _strs([key], "key")
        return self._ids.next_suffix(key)

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        """Unique ids for ``keys`` (see :class:`UniqueIdResolver` for the rule)."""
        return self._ids.claim(*_claim_args(keys, sep, owners))

    def __len__(self) -> int:
        """Number of ids handed out (by :meth:`claim` or :meth:`next_suffix`)."""
        return len(self._ids)

    def __repr__(self) -> str:
        return f"InMemoryCollisionStore(ids={len(self)})"


# Every SQLite store of this process. A fork waits until no thread is inside one of their
# transactions, so that the child inherits neither a held lock (it would wait for it
# forever) nor a connection in the middle of a transaction (SQLite's locks are per process:
# the child's own connection would find the database locked).
_SQLITE_STORES: weakref.WeakSet[SQLiteCollisionStore] = weakref.WeakSet()
# How long a fork waits for a transaction in flight (as imesde's native fork gate does).
_FORK_WAIT = 60.0
_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    for store in list(_SQLITE_STORES):
        if store._lock.acquire(timeout=_FORK_WAIT):
            _held_for_fork.append(store._lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


# The parent's connections a child inherited: kept referenced and never used or closed (SQLite
# says a connection must not be touched across fork(); closing it could touch the parent's
# database locks).
_inherited: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    _held_for_fork.clear()
    for store in list(_SQLITE_STORES):
        # The child opens its own connection on first use.
        if store._conn is not None:
            _inherited.append(store._conn)
        store._lock = threading.Lock()
        store._conn = None
        if store._private:
            store._gone = "a private database does not cross fork() (give the store a file)"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _strs(values: Sequence[str], what: str) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DTypeError(f"{what}[{i}] must be str, got {type(v).__name__}")
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise TextEncodingError(
                    e.encoding, e.object, e.start, e.end, f"{e.reason}: {what}[{i}]"
                ) from None


def _str_list(values: Any, what: str) -> list[str]:
    """``values`` (a sequence or iterable of str) as a checked list."""
    out = listed(values, what)
    _strs(out, what)
    return out


def _claim_args(
    keys: Sequence[str], sep: str, owners: Sequence[str] | None
) -> tuple[list[str], str, list[str] | None]:
    """The arguments of a store's ``claim``, checked the same way for every store."""
    keys = _str_list(keys, "keys")
    _strs([sep], "sep")
    if owners is not None:
        owners = _str_list(owners, "owners")
        if len(owners) != len(keys):
            raise ShapeError(f"{len(owners)} owners for {len(keys)} keys")
    return keys, sep, owners


class SQLiteCollisionStore:
    """A store in an SQLite database (stdlib ``sqlite3``), shared safely by threads and by
    processes: each batch is one ``BEGIN IMMEDIATE`` transaction, so concurrent resolvers
    serialise on the database lock and never hand out the same id.

    Args:
        path: The database file (created if missing; ``path`` keeps it absolute, as named
            in the working directory of the moment). ``":memory:"`` (or ``""``) is a private
            database of this store's connection: its ids are gone when it is closed, and it
            does not pickle or cross ``fork()`` (a copy would hand out the same ids again).
        timeout: Seconds to wait for another writer's lock before raising.

    Raises:
        StorageError: The database cannot be created, opened or written (a read-only folder,
            a lock held past ``timeout``); ``IndexCorruptError`` when the file is not an
            SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str] = "collisions.db", *, timeout: float = 60.0):
        if _NO_SQLITE is not None:
            raise ImportError(
                f"SQLiteCollisionStore needs Python's sqlite3 module, which this Python was "
                f"built without ({_NO_SQLITE}); InMemoryCollisionStore needs none"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise DTypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        if not (math.isfinite(timeout) and timeout >= 0):
            raise InvalidValueError(
                f"timeout must be a finite number of seconds >= 0, got {timeout}"
            )
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise DTypeError(
                f"path must be a str or os.PathLike, got {type(path).__name__}"
            ) from None
        if not isinstance(self.path, str):
            raise DTypeError("path must be a str path, not bytes")
        self.timeout = float(timeout)
        # A private database lives in its connection: once that is gone, so are its ids.
        self._private = self.path in ("", ":memory:")
        if not self._private:
            # The file as named here and now: a copy (pickled to a Ray worker, or read after
            # a chdir) opens this one whatever its working directory.
            self.path = os.path.abspath(self.path)
        self._gone: str | None = None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        _SQLITE_STORES.add(self)

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
            _check_schema(conn, self.path)

        self._transaction(create)

    def _connection(self) -> sqlite3.Connection:
        # None in a forked child too (see `_after_fork_in_child`): a connection must not
        # cross fork().
        if self._conn is None:
            if self._gone is not None:
                raise StorageError(f"{self!r}: {self._gone}")
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                # Functions a given database's schema names (its views, triggers) do not run.
                conn.execute("PRAGMA trusted_schema=OFF")
                conn.execute("PRAGMA journal_mode=WAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
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
                    # SQLite may have rolled back already (a file that is not a database): the
                    # error that did it is the one to raise, not "no transaction is active".
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise _storage_error(self.path, e) from e

    def next_suffix(self, key: str) -> int:
        """The suffix ``claim([key])`` gives (0 for ``key``, ``n`` for ``key-n``), handed out
        as that id: never one handed out before, whichever way it was asked for."""
        _strs([key], "key")
        (got,) = self.claim([key])
        return 0 if got == key else int(got.rsplit("-", 1)[1])

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        """Unique ids for ``keys`` in one transaction (see :class:`UniqueIdResolver`)."""
        keys, sep, owners = _claim_args(keys, sep, owners)

        def work(conn: sqlite3.Connection) -> list[str]:
            def count(key: str) -> int:
                row = conn.execute("SELECT n FROM imesde_sid_counts WHERE key = ?", (key,))
                found = row.fetchone()
                if found is None:
                    return 0
                # What this store writes: a count from 1 (another value, edited in, could
                # hand out an id twice or suffixes such as "k--3").
                if type(found[0]) is not int or not 0 < found[0] < 2**62:
                    raise IndexCorruptError(
                        f"{self.path}: the count of {key!r} is {found[0]!r}, not one this "
                        "store writes"
                    )
                return found[0]

            def owned(key: str, owner: str) -> str | None:
                row = conn.execute(
                    "SELECT id FROM imesde_sid_owned WHERE key = ? AND owner = ?", (key, owner)
                ).fetchone()
                if row is not None and type(row[0]) is not str:
                    raise IndexCorruptError(
                        f"{self.path}: the id of ({key!r}, {owner!r}) is {row[0]!r}, not a str"
                    )
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
        """Number of ids handed out (by :meth:`claim` or :meth:`next_suffix`)."""

        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM imesde_sid_issued").fetchone()[0])

        result: int = self._transaction(work)
        return result

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its file (its absolute path, as named when the store was made) and
        timeout: a copy (in a ``spawn`` worker or a Ray actor, whatever its working directory)
        opens the same database and shares its ids. A private database (``":memory:"``) does
        not pickle."""
        if self._private:
            raise TypeError(
                f"cannot pickle {self!r}: its ids live in this process's private database "
                "(a copy would hand them out again); give it a file"
            )
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], timeout=state["timeout"])  # type: ignore[misc]

    def close(self) -> None:
        """Close this process's connection (it reopens on next use; a private database is
        gone with it, and using the store then raises ``StorageError``)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                if self._private:
                    self._gone = "its private database was closed, with its ids"

    def __repr__(self) -> str:
        return f"SQLiteCollisionStore({self.path!r}, timeout={self.timeout!r})"


def _storage_error(path: str, e: sqlite3.Error) -> ImesdeError:
    """An SQLite error as imesde's: a file that is not a database is corrupt, anything else
    (permissions, a read-only folder, a lock held too long) a storage error."""
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
        return IndexCorruptError(f"{path}: {e}")
    return StorageError(f"{path}: {e}")
