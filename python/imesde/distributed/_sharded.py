"""An engine sharded over Ray actors: each actor holds one ``imesde.Engine`` and embeds what it
stores; searches go to every shard and their answers are merged exactly."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import json
import logging
import math
import numbers
import os
import queue
import re
import threading
import time
import weakref
import zipfile
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import ray

from imesde._args import (
    enters_top_k,
    integer,
    listed,
    number,
    percentile,
    positive,
    python_values,
    time_column,
)
from imesde._bulk import Progress, wants_bar

if TYPE_CHECKING:
    import imesde
    from imesde.semantic_ids import CollisionStore
from imesde.exceptions import (
    DimensionMismatchError,
    DTypeError,
    ImesdeError,
    IndexCorruptError,
    InvalidValueError,
    ItemNotFoundError,
    OutOfRangeError,
    ShapeError,
    ShardUnavailableError,
    StorageError,
    TextEncodingError,
)

MANIFEST = "manifest.json"
# 2: shard files named by save generation (format 1's readers would find none of them).
FORMAT = 2
_FORMATS = (1, 2)
# The most bytes a manifest holds (the spec and a few counters).
_MAX_MANIFEST = 1 << 20

# What Ray raises for a call on an actor that died or cannot be reached.
_ACTOR_GONE: tuple[type[BaseException], ...] = tuple(
    e
    for e in (
        getattr(ray.exceptions, "RayActorError", None),
        getattr(ray.exceptions, "ActorUnavailableError", None),
    )
    if e is not None
)

Fusion = Literal["rrf", "weighted", "combsum", "combmnz", "borda"]
# (global id, text, score, ts, metadata): a ShardedHit's fields.
_Row = tuple[int, str | None, float, float, dict[str, Any] | None]
# A semantic-id labeler as the shards get it: (generation, [its object ref, or None]); the ref
# inside a list so that Ray passes it on unresolved.
_Labeler = tuple[int, list[Any]]
_NO_LABELER: _Labeler = (0, [None])


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """The fields as a new dict, as ``imesde.Hit.to_dict`` and ``imesde.Item.to_dict``
        give them (``pd.DataFrame([h.to_dict() for h in hits])``)."""
        # A new dict of metadata each time, as imesde.Hit.metadata gives.
        return {
            f.name: dict(v) if isinstance(v := getattr(self, f.name), dict) else v
            for f in fields(self)  # type: ignore[arg-type]
        }

    def _same(self, other: _Record) -> bool:
        """Equal fields, as the native records compare (a vector by its values; dataclass's
        own ``==`` compared arrays elementwise and raised)."""
        mine: Any = self
        return all(
            np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            for a, b in zip(
                (getattr(mine, f.name) for f in fields(mine)),
                (getattr(other, f.name) for f in fields(mine)),
                strict=True,
            )
        )


@dataclass(frozen=True, eq=False)
class ShardedHit(_Record):
    """A search hit or a standing query's event from a ``ShardedEngine``: unpacks as
    ``(text, score)`` like ``imesde.Hit``; equal to a hit with the same fields, and hashed
    by its id and score as ``imesde.Hit`` is (its metadata, a dict, is not hashable). Its
    ``id`` is global: ids increase in ingest order, but are not stream positions as one
    engine's are (``id % num_shards`` is the shard holding it)."""

    id: int
    text: str | None
    score: float
    ts: float
    metadata: dict[str, Any] | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.text, self.score))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.text, self.score)[index]

    def __eq__(self, other: object) -> bool:
        return self._same(other) if isinstance(other, ShardedHit) else NotImplemented

    def __hash__(self) -> int:
        return hash((self.id, self.score + 0.0))


@dataclass(frozen=True, eq=False)
class ShardedItem(_Record):
    """A stored item read back by ``ShardedEngine.get``: equal to an item with the same
    fields (the same vector values), hashed by its id and time as ``imesde.Item`` is."""

    id: int
    vector: npt.NDArray[np.float32]
    text: str | None
    ts: float
    metadata: dict[str, Any] | None

    def __eq__(self, other: object) -> bool:
        return self._same(other) if isinstance(other, ShardedItem) else NotImplemented

    def __hash__(self) -> int:
        return hash((self.id, self.ts + 0.0))


# What a sharded engine's stats() adds up over its shards.
_SUMMED_STATS = (
    "len",
    "capacity",
    "ingested",
    "evicted",
    "deleted",
    "memory_bytes",
    "payload_bytes",
    "lexical_bytes",
    "index_bytes",
    "total_bytes",
)


def _lexical_query(query: Any) -> str | list[str]:
    """A BM25 query as the shards take it: a text, or its terms as a list (a generator is
    read once here, not once per shard); checked here, with ``Engine.lexical_search``'s
    messages."""
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray) or not isinstance(query, Iterable):
        raise DTypeError(
            f"query must be a str or a list of its terms (str), got {type(query).__name__}"
        )
    if isinstance(query, Set | Mapping):
        raise DTypeError(
            f"query terms must be a list, got {type(query).__name__} "
            "(it keeps no order and no repeated term)"
        )
    terms = list(query)
    for i, term in enumerate(terms):
        if not isinstance(term, str):
            raise DTypeError(f"query terms[{i}] must be str, got {type(term).__name__}")
    return terms


def _ring_shards(shard_size: int, most: int) -> int:
    """The most ring shards, up to ``most``, that split ``shard_size`` items evenly (1 for a
    prime one larger than ``most``)."""
    return max(d for d in range(1, min(most, shard_size) + 1) if shard_size % d == 0)


def _check_model(model: object) -> None:
    """``DTypeError`` for a ``model`` no shard could load, before any actor starts: each
    actor loads the model itself, so it takes the model's path, not a loaded ``TextEmbedder``
    (an error loading it, a missing file say, is raised as the shard's own error)."""
    from imesde._imesde import TextEmbedder

    if isinstance(model, TextEmbedder):
        raise DTypeError(
            "ShardedEngine loads its model in every shard's actor: pass the model's path "
            "(model=embedder.model_path, tokenizer=embedder.tokenizer_path), not a "
            "TextEmbedder"
        )
    if isinstance(model, bool | np.bool_) or not isinstance(
        model, str | os.PathLike | numbers.Integral | None
    ):
        raise DTypeError(
            "model must be a model directory or file, a dimension (int) or None, got "
            f"{type(model).__name__}"
        )


def _item_id(value: object, what: str = "id") -> int:
    """An item id: an integer from 0 to 2**64 - 1 (numpy's too; not a bool or a str)."""
    i = integer(value, what)
    if not 0 <= i < 2**64:
        raise OutOfRangeError(f"{what} must be an integer from 0 to 2**64 - 1, got {i}")
    return i


def _raise_cause(e: BaseException) -> NoReturn:
    """Raises what an actor's method raised (``e``: Ray's wrapper of it), as it was raised,
    without Ray's traceback of the actor; ``e`` itself when it wraps no exception."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, Exception):
        raise cause.with_traceback(None) from None
    raise e


def _flat_ids(ids: Any) -> None:
    """``ShapeError`` for ids in an array of more than one dimension (``search_vectors``'
    ids): the one-slot engine's own, as every shard's engine would raise it."""
    if isinstance(ids, np.ndarray) and ids.ndim > 1:
        _probe().get_batch(ids)


def _item_ids(ids: Any) -> list[int]:
    """Ids as ``delete`` and ``update_metadata`` take them: one (an int, a numpy integer or a
    0-d array of one), or a list or array of them; each checked."""
    if isinstance(ids, np.ndarray) and ids.ndim == 0:
        ids = ids.item()
    _flat_ids(ids)
    values = [ids] if isinstance(ids, numbers.Integral) else listed(ids, "ids")
    return [_item_id(value, f"ids[{n}]") for n, value in enumerate(values)]


def _snapshot_path(directory: str | os.PathLike[str], shard: int, generation: int = 0) -> str:
    """Shard ``shard``'s snapshot of save ``generation`` (0: the names of format 1's first
    saves, before generations)."""
    name = f"shard-{shard}.g{generation}.imesde" if generation else f"shard-{shard}.imesde"
    return os.path.join(os.fspath(directory), name)


# A shard snapshot's file (and its ids beside it): shard, generation.
_SHARD_FILE = re.compile(r"shard-(\d+)(?:\.g(\d+))?\.imesde(?:\.ids\.npz)?")


def _read_manifest(directory: str) -> dict[str, Any] | None:
    """The manifest of the snapshot in ``directory``, or None when there is none; a manifest
    that is not one is ``IndexCorruptError``, one that cannot be read ``StorageError``."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_MANIFEST + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    try:
        manifest = json.loads(raw) if len(raw) <= _MAX_MANIFEST else None
    except (ValueError, RecursionError):
        manifest = None
    fields = {"num_shards": 1, "next": 0, "generation": 0}
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") not in _FORMATS
        or not isinstance(manifest.get("spec"), dict)
        or not all(
            type(manifest.get(k, least)) is int and manifest.get(k, least) >= least
            for k, least in fields.items()
        )
        or "num_shards" not in manifest
        or "next" not in manifest
    ):
        raise IndexCorruptError(f"{path}: not a ShardedEngine snapshot (formats {_FORMATS})")
    return manifest


def _columns(n: int, what: str, **columns: Any) -> dict[str, list[Any] | None]:
    """Per-item columns as lists of ``n`` entries: a lone str or bytes is refused (it would be
    read as its characters), ``metadata`` may be one dict for every item (as ``Engine``
    takes it), any other iterable is read once."""
    out: dict[str, list[Any] | None] = {}
    for name, col in columns.items():
        if col is None:
            out[name] = None
            continue
        if name == "metadata" and isinstance(col, Mapping):
            col = [col] * n
        if name == "timestamps":
            # Checked as an engine checks it (a set or a dict is refused, not listed).
            column = time_column(col)
            col = col if column is None else column
        values = listed(python_values(col) if name == "texts" else col, name)
        if name == "metadata":
            values = [_plain(m) for m in values]
        if len(values) != n:
            raise ShapeError(f"{name} has {len(values)} entries for {n} {what}")
        out[name] = values
    return out


def _plain(value: Any) -> Any:
    """``value`` with every mapping in it a dict (a ``MappingProxyType`` cannot be pickled
    to a shard; ``Engine`` takes any mapping)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _remove_generations(directory: str, keep: Callable[[int], bool]) -> None:
    """Removes the shard snapshot files in ``directory`` whose generation ``keep`` refuses."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            m = _SHARD_FILE.fullmatch(name)
            if m is not None and not keep(int(m.group(2) or 0)):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))


def _probe(dim: int = 1) -> imesde.Engine:
    """An engine of one slot, which checks arguments as every shard's engine would: before any
    shard is sent them, so that a refusal is the engines' own error and nothing is sent."""
    import imesde

    return imesde.Engine(dim, num_shards=1, shard_size=1)


def _check_columns(n: int, cols: dict[str, list[Any] | None]) -> None:
    """Texts (of vectors: None and gaps allowed), timestamps and metadata every shard would
    take: read by a one-slot engine before any shard is sent a batch, so that a bad one
    stores nothing anywhere and raises the engine's own error."""
    if all(cols.get(c) is None for c in ("texts", "timestamps", "metadata")):
        return
    rows = np.ones((n, 1), dtype=np.float32)
    _probe().ingest_vectors(
        rows, cols.get("texts"), timestamps=cols["timestamps"], metadata=cols["metadata"]
    )


def _check_texts(texts: Sequence[object], what: str) -> None:
    """Every text a str UTF-8 can carry, checked before any shard is sent a batch, so that a
    bad one stores nothing anywhere."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DTypeError(f"{what}[{i}] must be str, got {type(t).__name__}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TextEncodingError(
                "utf-8", t, e.start, e.end, f"{what}[{i}] holds a lone surrogate"
            ) from None


def _float32(x: object, what: str) -> npt.NDArray[np.float32]:
    """``x`` as ``Engine`` takes vectors: a numpy float32 array, never cast (a list or float64
    is ``DTypeError``, with the conversion to make), made contiguous."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(
            f"{what} must be a numpy float32 array, got {type(x).__name__}; "
            "use np.asarray(x, dtype=np.float32)"
        )
    if x.dtype != np.float32:
        raise DTypeError(
            f"{what} must have dtype float32, got {x.dtype}; convert with "
            "np.ascontiguousarray(x, dtype=np.float32) (imesde never casts silently)"
        )
    return np.ascontiguousarray(x)


def _check_vectors(x: npt.NDArray[np.float32]) -> None:
    """Rows every shard would take: finite and not zero (a bad row stores nothing)."""
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidValueError(f"vectors[{row}] holds NaN or infinite values")
    if x.shape[1] and len(x):
        zero = np.flatnonzero(~x.any(axis=1))
        if len(zero):
            raise InvalidValueError(f"vectors[{int(zero[0])}] is a zero vector (no direction)")


def _lexical_spec(lexical: object) -> bool | dict[str, Any]:
    """``lexical`` as the spec (and the snapshot's JSON manifest) holds it: a bool, or a
    ``BM25``'s settings."""
    import imesde

    if isinstance(lexical, imesde.BM25):
        return {
            "k1": lexical.k1,
            "b": lexical.b,
            "method": lexical.method,
            "delta": 0.5 if lexical.delta is None else lexical.delta,
            "stemmer": lexical.stemmer,
            "stopwords": lexical.stopwords,
        }
    if isinstance(lexical, bool | np.bool_):
        return bool(lexical)
    raise DTypeError(
        f"lexical must be a bool or an imesde.BM25 (its settings), got {type(lexical).__name__}"
    )


def _lexical_of(spec: bool | dict[str, Any]) -> Any:
    """What ``Engine(lexical=...)`` takes for a spec's ``lexical``."""
    import imesde

    return imesde.BM25(**spec) if isinstance(spec, dict) else spec


def _check_shape(spec: dict[str, Any]) -> imesde.Engine:
    """Raises what ``Engine`` raises for the shards' storage and index arguments, before any
    actor starts (an actor that fails to start surfaces as a Ray error instead): a
    one-value engine of the shards' capacity, vectors only, is built and returned (its
    ``nlist`` and ``nprobe`` are the shards')."""
    import imesde

    return imesde.Engine(
        1,
        num_shards=spec["engine_shards"],
        shard_size=spec["ring_shard_size"],
        storage=spec["storage"],
        index=spec.get("index"),
        nlist=spec.get("nlist"),
        nprobe=spec.get("nprobe"),
    )


def _read_slot_ids(
    path: str, capacity: int, held_items: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A shard's saved slot map (``_Shard.ids`` and ``_Shard.locals``), checked: one int64 per
    ring slot each, a local id in the slot it maps to, a global id for each local id and none
    twice, at least as many mapped slots as the engine holds items (``held_items``). Anything
    else is ``IndexCorruptError`` (a shard restored from it would give its
    items wrong ids), a file that cannot be read ``StorageError``."""
    try:
        saved = np.load(path, allow_pickle=False)
        if not isinstance(saved, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with saved:
            ids, locals_ = saved["ids"], saved["locals"]
    except FileNotFoundError:
        raise IndexCorruptError(f"{path}: a shard's ids are missing") from None
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise IndexCorruptError(f"{path}: not a shard's ids ({e})") from None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    slots = np.arange(capacity, dtype=np.int64)
    held = locals_ >= 0 if locals_.dtype == np.int64 and locals_.shape == (capacity,) else None
    if (
        held is None
        or ids.dtype != np.int64
        or ids.shape != (capacity,)
        or (ids < -1).any()
        or (locals_ < -1).any()
        or ((ids >= 0) != held).any()
        or (locals_[held] % capacity != slots[held]).any()
        or len(np.unique(ids[held])) != int(held.sum())
        # Every item the engine holds has a slot mapped (deleted ones may keep theirs).
        or int(held.sum()) < held_items
    ):
        raise IndexCorruptError(f"{path}: not the ids of a shard of {capacity} slots")
    return ids, locals_


class _Shard:
    """One shard: an ``imesde.Engine`` and, per ring slot, the global id of the item there."""

    def __init__(self, index: int, spec: dict[str, Any], directory: str | None) -> None:
        self.index = index
        self.subscriptions: dict[int, Any] = {}
        # The driver's semantic-id labeler this engine labels with (0: none attached).
        self.labeler_generation = 0
        # A model that does not load, or a save that cannot be restored, is kept to raise
        # from `capacity`, the first call the driver waits for: raised here, Ray would report
        # a dead actor (ShardUnavailableError) with the message only.
        self.restore_error: ImesdeError | None = None
        try:
            self._open(spec, directory)
        except ImesdeError as e:
            self.restore_error = e

    def _open(self, spec: dict[str, Any], directory: str | None) -> None:
        import imesde

        index = self.index
        model = spec["model"]
        if not isinstance(model, int):
            model = imesde.TextEmbedder(model, spec.get("tokenizer"), threads=spec["threads"])
        # The last complete save in `directory` (its manifest names the generation): what a
        # restart or restore_shard comes back with.
        snapshot = None
        manifest = None if directory is None else _read_manifest(directory)
        if directory is not None and manifest is not None:
            snapshot = _snapshot_path(directory, index, manifest.get("generation", 0))
        if snapshot is not None:
            if not os.path.exists(snapshot):
                raise IndexCorruptError(
                    f"{directory}: its manifest names a save whose shard {index} "
                    f"({snapshot}) is missing"
                )
            self.engine = imesde.Engine.load(
                snapshot, model=None if isinstance(model, int) else model
            )
            self.ids, self.locals = _read_slot_ids(
                snapshot + ".ids.npz", self.engine.capacity, len(self.engine)
            )
            # Set since that save (`ShardedEngine.nprobe`, `.k_factor`).
            self.tune(spec.get("nprobe"), spec.get("k_factor"))
        else:
            self.engine = imesde.Engine(
                model,
                num_shards=spec["engine_shards"],
                shard_size=spec["ring_shard_size"],
                storage=spec["storage"],
                lexical=_lexical_of(spec["lexical"]),
                index=spec.get("index"),
                nlist=spec.get("nlist"),
                nprobe=spec.get("nprobe"),
            )
            self.tune(None, spec.get("k_factor"))
            self.ids = np.full(self.engine.capacity, -1, dtype=np.int64)
            self.locals = np.full(self.engine.capacity, -1, dtype=np.int64)

    # Ids: the engine's own (local) ids map to global ones through the ring slot they occupy
    # (`ids`: the global id in each slot; `locals`: the local id there).
    def _record(self, local: npt.NDArray[np.int64], global_ids: Sequence[int]) -> None:
        local = np.asarray(local, dtype=np.int64)
        slots = local % len(self.ids)
        self.ids[slots] = np.asarray(global_ids, dtype=np.int64)
        self.locals[slots] = local

    def _local(self, global_ids: Iterable[int]) -> list[int]:
        wanted = np.asarray(list(global_ids), dtype=np.int64)
        out: list[int] = self.locals[np.isin(self.ids, wanted)].tolist()
        return out

    def _row(self, hit: Any) -> _Row:
        return (int(self.ids[hit.id % len(self.ids)]), hit.text, hit.score, hit.ts, hit.metadata)

    def attach_semantic_ids(self, labeler: _Labeler) -> None:
        """Labels what is ingested from now on with the driver's semantic-id labeler
        `(generation, [its object ref, or None])`, when this engine has another one (attached
        since, or none: this actor was restarted or restored). Every ingest call carries the
        labeler, so that an actor never stores items the driver would label unlabelled."""
        generation, (ref,) = labeler
        if generation != self.labeler_generation:
            assign: Any = None if ref is None else ray.get(ref)
            self.engine.attach_semantic_ids(assign)
            self.labeler_generation = generation

    def ingest_batch(
        self,
        texts: list[str],
        timestamps: Any,
        metadata: Any,
        global_ids: list[int],
        labeler: _Labeler = _NO_LABELER,
    ) -> int:
        self.attach_semantic_ids(labeler)
        local = self.engine.ingest_batch(texts, timestamps=timestamps, metadata=metadata)
        self._record(local, global_ids)
        return len(local)

    def ingest_vectors(
        self,
        vectors: npt.NDArray[np.float32],
        texts: Any,
        timestamps: Any,
        metadata: Any,
        global_ids: list[int],
        labeler: _Labeler = _NO_LABELER,
    ) -> int:
        self.attach_semantic_ids(labeler)
        local = self.engine.ingest_vectors(
            vectors, texts=texts, timestamps=timestamps, metadata=metadata
        )
        self._record(local, global_ids)
        return len(local)

    def tune(self, nprobe: int | None, k_factor: int | None) -> None:
        """Gives the engine the driver's `nprobe` (when it has an index) and `k_factor`
        where it has others; None leaves one as it is."""
        if nprobe is not None and self.engine.nlist is not None and self.engine.nprobe != nprobe:
            self.engine.nprobe = nprobe
        if k_factor is not None and self.engine.k_factor != k_factor:
            self.engine.k_factor = k_factor

    def _tuned(self, filters: dict[str, Any]) -> dict[str, Any]:
        """`filters` without the driver's `nprobe` and `k_factor`, which the engine takes
        first (this actor may have been restarted by Ray with older arguments)."""
        filters = dict(filters)
        self.tune(*filters.pop("tuning", (None, None)))
        return filters

    def search(self, query: str, k: int, filters: dict[str, Any]) -> list[_Row]:
        return [self._row(h) for h in self.engine.search(query, k, **self._tuned(filters))]

    def search_batch(self, queries: list[str], k: int, filters: dict[str, Any]) -> list[list[_Row]]:
        found = self.engine.search_batch(queries, k, **self._tuned(filters))
        return [[self._row(h) for h in hs] for hs in found]

    def search_vector(
        self, vector: npt.NDArray[np.float32], k: int, filters: dict[str, Any]
    ) -> list[_Row]:
        found = self.engine.search_vector(vector, k, **self._tuned(filters))
        return [self._row(h) for h in found]

    def search_vectors(
        self, queries: npt.NDArray[np.float32], k: int, filters: dict[str, Any]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        scores, local = self.engine.search_vectors(queries, k, **self._tuned(filters))
        return scores, np.where(local >= 0, self.ids[local % len(self.ids)], -1)

    def corpus_terms(self, query: str | list[str]) -> tuple[int, int, list[tuple[str, int]]]:
        return self.engine._lexical_corpus_terms(query)

    def max_impacts(self, terms: list[str], documents: int, total_length: int) -> list[float]:
        return self.engine._lexical_max_impacts(terms, documents, total_length)

    def lexical_search_corpus(
        self,
        query: str | list[str],
        k: int,
        corpus: tuple[int, int, dict[str, tuple[int, float]]],
        filters: dict[str, Any],
    ) -> list[_Row]:
        hits = self.engine._lexical_search_corpus(query, k, *corpus, **filters)
        return [self._row(h) for h in hits]

    def capacity(self) -> int:
        if self.restore_error is not None:
            raise self.restore_error
        return int(self.engine.capacity)

    def dim(self) -> int:
        return int(self.engine.dim)

    def get(self, global_id: int) -> tuple[Any, ...] | None:
        return self.get_batch([global_id])[0]

    def _local_of(self, global_ids: list[int]) -> dict[int, int]:
        """The local id of each of `global_ids` held here."""
        held = np.isin(self.ids, np.asarray(global_ids, dtype=np.int64))
        return dict(zip(self.ids[held].tolist(), self.locals[held].tolist(), strict=True))

    def get_batch(self, global_ids: list[int]) -> list[tuple[Any, ...] | None]:
        local_of = self._local_of(global_ids)
        items = self.engine.get_batch([local_of.get(g, -1) for g in global_ids])
        return [
            None if item is None else (g, item.vector, item.text, item.ts, item.metadata)
            for g, item in zip(global_ids, items, strict=True)
        ]

    def delete(self, global_ids: list[int] | None, filters: dict[str, Any] | None = None) -> int:
        if global_ids is None:  # those that pass the filters
            return int(self.engine.delete(**(filters or {})))
        local = self._local(global_ids)
        return int(self.engine.delete(local, **(filters or {}))) if local else 0

    def update_metadata(
        self,
        global_ids: list[int] | None,
        metadata: Any,
        merge: bool,
        filters: dict[str, Any],
    ) -> int:
        """`metadata` (one dict, or one per id) for the items `global_ids` held here that
        pass `filters` (every item that passes them, without ids)."""
        if global_ids is None:
            return int(self.engine.update_metadata(None, metadata, merge=merge, **filters))
        local_of = self._local_of(global_ids)
        rows = [n for n, g in enumerate(global_ids) if g in local_of]
        if not rows:
            return 0
        if isinstance(metadata, list):
            metadata = [metadata[n] for n in rows]
        local = [local_of[global_ids[n]] for n in rows]
        return int(self.engine.update_metadata(local, metadata, merge=merge, **filters))

    def recent(self, n: int, filters: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (int(self.ids[i.id % len(self.ids)]), i.vector, i.text, i.ts, i.metadata)
            for i in self.engine.recent(n, **filters)
        ]

    def size(self) -> int:
        return len(self.engine)

    def stats(self) -> dict[str, Any]:
        return dict(self.engine.stats())

    def count(self, filters: dict[str, Any]) -> int:
        return int(self.engine.count(**filters))

    def train_index(self) -> bool:
        return bool(self.engine.train_index())

    def save(self, path: str) -> None:
        self.engine.save(path)
        tmp = path + ".ids.tmp.npz"
        np.savez(tmp, ids=self.ids, locals=self.locals)
        os.replace(tmp, path + ".ids.npz")

    def subscribe(
        self, key: int, query: Any, threshold: Any, where: Any, queue_size: int, top_k: Any
    ) -> float | None:
        if key in self.subscriptions:  # registered already (restore_shard and a poll both ask)
            registered: float | None = self.subscriptions[key].threshold
            return registered
        sub = self.engine.subscribe(
            query, threshold=threshold, top_k=top_k, where=where, queue_size=queue_size
        )
        self.subscriptions[key] = sub
        return sub.threshold

    def poll(self, key: int) -> tuple[list[_Row], int] | None:
        """The subscription's queued events, without waiting (a waiting call would hold the
        actor, which runs one call at a time, away from ingest and search), and how many its
        full queue dropped so far; None when this actor does not know it (it was restarted)."""
        sub = self.subscriptions.get(key)
        if sub is None:
            return None
        return [self._row(e.hit) for e in sub.drain()], int(sub.dropped)

    def unsubscribe(self, key: int) -> bool:
        sub = self.subscriptions.pop(key, None)
        if sub is None:
            return False
        sub.close()
        return True

    def ping(self) -> int:
        if self.restore_error is not None:
            raise self.restore_error
        return self.index


# The actor holding the copy of each in-memory collision store given to a ShardedEngine's
# attach_semantic_ids, by store, with the Ray job that started it: the same each time that
# store is attached again (to any ShardedEngine of this process, one loaded from a save too).
# It stops once the store is freed (and no shard or `semantic_id_store` holds its handle).
_STORE_ACTORS: weakref.WeakKeyDictionary[Any, tuple[str, Any]] = weakref.WeakKeyDictionary()
_STORE_ACTORS_LOCK = threading.Lock()


def _ray_job() -> str:
    """The Ray job this process runs as (a new one after ``ray.shutdown()`` and
    ``ray.init()``, whose actors are gone)."""
    return str(ray.get_runtime_context().get_job_id())


class _IdStoreActor:
    """A Ray actor holding the collision store every shard of a ``ShardedEngine`` claims
    semantic ids through."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def claim(self, keys: list[str], sep: str, owners: list[str] | None) -> list[str]:
        out: list[str] = self.store.claim(keys, sep, owners)
        return out

    def next_suffix(self, key: str) -> int:
        return int(self.store.next_suffix(key))

    def size(self) -> int:
        return len(self.store)


class _SharedIdStore:
    """A collision store held by one Ray actor (``_IdStoreActor``): every shard of a
    ``ShardedEngine`` claims its semantic ids there, so they are unique over all of them.
    Pickles as the actor's handle."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self._actor, method).remote(*args))
        except _ACTOR_GONE as e:
            raise StorageError(
                f"the semantic id store the shards share is gone ({type(e).__name__}): Ray "
                "was shut down; attach the SemanticIdEngine again"
            ) from e
        except ray.exceptions.RayTaskError as e:
            _raise_cause(e)  # what the store raised (a bad key)

    def next_suffix(self, key: str) -> int:
        """As ``InMemoryCollisionStore.next_suffix``, in the store the shards share."""
        out: int = self._call("next_suffix", key)
        return out

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        """As ``InMemoryCollisionStore.claim``, in the store the shards share."""
        out: list[str] = self._call(
            "claim", listed(keys, "keys"), sep, None if owners is None else listed(owners, "owners")
        )
        return out

    def __len__(self) -> int:
        """Number of ids handed out."""
        out: int = self._call("size")
        return out

    def __repr__(self) -> str:
        return "SharedIdStore(on a Ray actor)"


class ShardedEngine:
    """An ``imesde.Engine`` sharded over ``num_shards`` Ray actors.

    Each actor holds an engine of ``shard_size`` items (split into at most ``engine_shards``
    ring shards scanned in parallel, as many as divide ``shard_size`` evenly) and embeds the
    texts routed to it, so texts travel once and vectors never. Items go to the shards in turn,
    one after another (each batch is split over them, and together they hold the window one
    engine of their total capacity holds), or by ``key(text)`` when given. Ids are global
    (increasing in ingest order, ``id % num_shards`` is the shard holding it). Searches ask
    every shard for its top ``k`` and merge them: the answer is the one a single engine holding
    the same items gives (ties to the newer item, as there). A bad argument raises what
    ``Engine`` raises (from the shard, unwrapped); texts and vectors are checked before any
    shard is sent a batch.

    ``model``: as for ``Engine`` (None for the default model, a model path, or an int for
    vectors only; ``tokenizer`` as for ``TextEmbedder`` when it is not beside the model); each
    actor loads it once and runs ONNX Runtime on ``num_cpus`` threads. ``storage``, ``index``,
    ``nlist`` and ``nprobe`` shape each shard's engine as they shape an ``Engine`` of
    ``shard_size`` items (``index="ivf"``: each shard keeps and trains its own index).
    ``max_restarts``: Ray restarts a crashed shard actor up to this many times, from its
    snapshot in ``snapshot_dir`` when one was saved there. ``restore_shard`` does the same on
    demand. ``start_timeout``: seconds to wait for the actors to start (None: as long as
    Ray takes) before raising ``ShardUnavailableError``.
    """

    def __init__(
        self,
        num_shards: int = 2,
        *,
        model: str | os.PathLike[str] | int | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        shard_size: int = 16_384,
        engine_shards: int = 16,
        storage: Literal["f32", "int8", "binary"] = "f32",
        lexical: bool | imesde.BM25 = False,
        index: Literal["ivf"] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        key: Callable[[str], Hashable] | None = None,
        num_cpus: float = 1,
        max_restarts: int = 0,
        snapshot_dir: str | os.PathLike[str] | None = None,
        start_timeout: float | None = 600.0,
    ) -> None:
        num_shards = positive(num_shards, "num_shards")
        shard_size = positive(shard_size, "shard_size")
        engine_shards = positive(engine_shards, "engine_shards")
        _check_model(model)
        self._spec: dict[str, Any] = {
            "model": (
                os.fspath(model)
                if isinstance(model, os.PathLike)
                else integer(model, "model")
                if isinstance(model, numbers.Integral)
                else model
            ),
            "tokenizer": None if tokenizer is None else os.fspath(tokenizer),
            "threads": max(1, int(num_cpus)),
            # Ring shards that split shard_size exactly: at most engine_shards of them (a
            # shard_size of 100 in 16 would hold 112 items, 16 of 7).
            "engine_shards": (ring := _ring_shards(shard_size, engine_shards)),
            "ring_shard_size": shard_size // ring,
            "storage": storage,
            "lexical": _lexical_spec(lexical),
            "index": index,
            "nlist": nlist,
            "nprobe": nprobe,
        }
        checked = _check_shape(self._spec)
        self._spec["nlist"], self._spec["nprobe"] = checked.nlist, checked.nprobe
        self._spec["storage"] = checked.storage  # its name as Engine gives it ("float32": f32)
        if snapshot_dir is not None and _read_manifest(os.fspath(snapshot_dir)) is not None:
            # Its shards would come back with their items while ids started again at 0.
            raise InvalidValueError(
                f"{os.fspath(snapshot_dir)} holds a ShardedEngine snapshot: "
                "ShardedEngine.load(it) continues that engine; give an empty directory to "
                "start a new one"
            )
        self._open(num_shards, key, num_cpus, max_restarts, snapshot_dir, start_timeout)

    def _open(
        self,
        num_shards: int,
        key: Callable[[str], Hashable] | None,
        num_cpus: float,
        max_restarts: int,
        snapshot_dir: str | os.PathLike[str] | None,
        start_timeout: float | None,
        next_seq: int = 0,
    ) -> None:
        """Sets the driver's state and starts one actor per shard (from its snapshot in
        `snapshot_dir` when there is one there)."""
        self._num_shards = num_shards
        self._key = key
        self._num_cpus = num_cpus
        self._max_restarts = max_restarts
        self._snapshot_dir = None if snapshot_dir is None else os.fspath(snapshot_dir)
        self._next = next_seq  # items ingested so far: the next item's sequence number
        # Every item before this sequence number has been acknowledged by its shard (or its
        # batch failed): standing queries deliver events up to it, in stream order. Batches
        # finished out of order wait in `_finished` until those before them are.
        self._acked = next_seq
        self._finished: list[tuple[int, int]] = []
        self._ack_lock = threading.Lock()
        self._lock = threading.Lock()
        self._subscription_keys = 0
        self._standing: dict[int, tuple[Any, ...]] = {}
        # Open subscriptions, closed with the engine (each drops out when it closes).
        self._subscriptions: weakref.WeakSet[ShardedSubscription] = weakref.WeakSet()
        # The semantic-id labeler every ingest call carries, numbered by `_labelers`, and the
        # store its ids are claimed through.
        self._labeler = _NO_LABELER
        self._labelers = 0
        self._semantic_id_store: Any = None
        cpus = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        # Compared as Ray counts CPUs: in units of 1e-4, each request rounded to the nearest.
        if num_shards * round(num_cpus * 1e4) > round(cpus * 1e4):
            # Said now, not after start_timeout: shards that do not fit wait for CPUs.
            logging.getLogger("imesde").warning(
                "%d shards of %g CPUs each need %g CPUs; the cluster has %g: the shards that "
                "do not fit wait (start_timeout=%s s) for the cluster to grow. On a fixed "
                "cluster pass num_cpus=%g or fewer shards.",
                num_shards,
                num_cpus,
                num_shards * num_cpus,
                cpus,
                start_timeout,
                math.floor(cpus / num_shards * 1e4) / 1e4,
            )
        self._actors = [self._start(i) for i in range(num_shards)]
        self._capacity = self._started(start_timeout)
        self._dim: int = self._wait(0, self._actors[0].dim.remote())

    def _started(self, timeout: float | None) -> int:
        """The actors' total capacity once all answer; raises (and stops them) when one does
        not start within `timeout` seconds (a cluster without the CPUs asked for waits
        forever otherwise)."""
        refs = [a.capacity.remote() for a in self._actors]
        deadline = None if timeout is None else time.monotonic() + timeout
        got = 0
        for i, ref in enumerate(refs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got += self._wait(i, ref, left)
            except BaseException as e:
                # No shard is left running for an engine that does not start.
                for a in self._actors:
                    with contextlib.suppress(Exception):
                        ray.kill(a)
                if not isinstance(e, ray.exceptions.GetTimeoutError):
                    raise  # a save that cannot be restored: the shard's own error
                raise ShardUnavailableError(
                    f"shard {i} did not start within {timeout} s: does the cluster have "
                    f"{self._num_cpus} CPUs free per shard?",
                    shard=i,
                ) from e
        return got

    def _start(self, shard: int) -> Any:
        actor_class = ray.remote(_Shard).options(
            num_cpus=self._num_cpus, max_restarts=self._max_restarts
        )
        return actor_class.remote(shard, self._spec, self._snapshot_dir)

    # --- calls to shards -------------------------------------------------------------------

    def _wait(self, shard: int, ref: Any, timeout: float | None = None) -> Any:
        if getattr(self, "_closed", False):
            # ray.kill is asynchronous: a call right after close() could still be answered.
            raise ShardUnavailableError(
                f"shard {shard} is unavailable: the engine was closed", shard=shard
            )
        try:
            return ray.get(ref, timeout=timeout)
        except _ACTOR_GONE as e:
            raise ShardUnavailableError(
                f"shard {shard} is unavailable ({type(e).__name__}); restore it with "
                f"restore_shard({shard}) or pass allow_partial=True",
                shard=shard,
            ) from e
        except ray.exceptions.RayTaskError as e:
            # What the shard's engine raised (an imesde error for a bad argument), as the
            # engine raises it, not wrapped in Ray's traceback of the actor.
            _raise_cause(e)

    def _gather(self, refs: list[tuple[int, Any]], allow_partial: bool = False) -> list[Any]:
        """The answers of `refs` (shard, call), every call waited for; then the first error
        (unavailable shards skipped with `allow_partial`)."""
        out: list[Any] = []
        first: Exception | None = None
        for i, ref in refs:
            try:
                out.append(self._wait(i, ref))
            except ShardUnavailableError as e:
                if not allow_partial and first is None:
                    first = e
            except Exception as e:
                if first is None:
                    first = e
        if first is not None:
            raise first
        return out

    def _scatter(self, method: str, *args: Any, allow_partial: bool = False) -> list[Any]:
        refs = [(i, getattr(a, method).remote(*args)) for i, a in enumerate(self._actors)]
        return self._gather(refs, allow_partial)

    # --- ingest ----------------------------------------------------------------------------

    def _route(self, texts: Sequence[str] | None, n: int) -> list[tuple[int, list[int]]]:
        """The shards the next `n` items go to, with the positions each receives: item after
        item in turn (so every shard holds every `num_shards`-th item of the stream, and
        together they hold the window one engine of their capacity would), or by
        `key(text)` when given."""
        groups: dict[int, list[int]] = {}
        for j in range(n):
            if self._key is None or texts is None:
                shard = (self._next + j) % self.num_shards
            else:
                h = repr(self._key(texts[j])).encode("utf-8")
                shard = zlib.crc32(h) % self.num_shards
            groups.setdefault(shard, []).append(j)
        return sorted(groups.items())

    def _ids(self, positions: list[int], shard: int) -> list[int]:
        """Global ids of the items at `positions` of the next ones, held by `shard`: the
        item's place in the stream * shards + shard (increasing in ingest order)."""
        return [(self._next + p) * self.num_shards + shard for p in positions]

    def _send(
        self,
        method: str,
        n: int,
        batch_size: int,
        items: Callable[[list[int]], Any],
        cols: dict[str, list[Any] | None],
        keys: Sequence[str] | None,
        progress: Progress | None = None,
    ) -> npt.NDArray[np.int64]:
        """Sends `n` items, `batch_size` at a time, to the shards `_route` gives them (by
        `keys` when routing by key): each shard's `method` gets `items(rows)`, the `cols` of
        those rows and their ids. Waits for every shard (see `_stored`, which moves
        `progress` on); returns the ids."""
        out = np.empty(n, dtype=np.int64)
        calls = []
        with self._lock:
            first = self._next
            for start in range(0, n, batch_size):
                end = min(start + batch_size, n)
                chunk = None if keys is None else keys[start:end]
                for shard, pos in self._route(chunk, end - start):
                    ids = self._ids(pos, shard)
                    rows = [start + p for p in pos]
                    out[rows] = ids
                    ref = getattr(self._actors[shard], method).remote(
                        items(rows),
                        *[None if c is None else [c[r] for r in rows] for c in cols.values()],
                        ids,
                        self._labeler,
                    )
                    calls.append((shard, ref, ids))
                self._next += end - start
            last = self._next
        try:
            self._stored(calls, progress)
        finally:
            self._acknowledge(first, last)
        return out

    def _acknowledge(self, first: int, last: int) -> None:
        """The items of sequence numbers `first..last` are acknowledged (or their batch
        failed): moves the watermark on over every batch finished without a gap before it."""
        with self._ack_lock:
            heapq.heappush(self._finished, (first, last))
            while self._finished and self._finished[0][0] <= self._acked:
                self._acked = max(self._acked, heapq.heappop(self._finished)[1])

    def _stored(
        self, calls: list[tuple[int, Any, list[int]]], progress: Progress | None = None
    ) -> None:
        """Waits for every ingest call (shard, call, ids), counting each call's items done on
        `progress`; when one failed, raises its error with ``ingested_ids``: the ids the other
        calls stored."""
        stored: list[int] = []
        first: Exception | None = None
        failed = -1
        for shard, ref, ids in calls:
            try:
                self._wait(shard, ref)
                stored.extend(ids)
                if progress is not None:
                    progress.update(len(ids))
            except Exception as e:
                if first is None:
                    first, failed = e, shard
        if first is not None:
            first.ingested_ids = np.array(sorted(stored), dtype=np.int64)  # type: ignore[attr-defined]
            if hasattr(first, "add_note"):  # Python 3.11+
                first.add_note(
                    f"raised by shard {failed} on its part of the batch (positions in the "
                    "message count within that part)"
                )
                if stored:
                    first.add_note(f"{len(stored):,} items other shards took: ids in ingested_ids")
            raise first

    def ingest(self, text: str, *, metadata: dict[str, Any] | None = None, ts: Any = None) -> int:
        """Embeds and adds one text on its shard; returns its global id."""
        if not isinstance(text, str):
            raise DTypeError(f"text must be str, got {type(text).__name__}")
        ids = self.ingest_batch(
            [text],
            timestamps=None if ts is None else [ts],
            metadata=None if metadata is None else [metadata],
        )
        return int(ids[0])

    def ingest_batch(
        self,
        texts: Iterable[str],
        *,
        timestamps: Iterable[Any] | None = None,
        metadata: Iterable[dict[str, Any] | None] | dict[str, Any] | None = None,
        batch_size: int | None = 1024,
        show_progress_bar: bool | None = None,
    ) -> npt.NDArray[np.int64]:
        """Adds texts, each embedded on the shard that stores it (shards work on their parts
        of a batch in parallel; ``batch_size`` texts are sent at a time, None: 1024); returns
        the global ids in input order. ``timestamps``, ``metadata`` and ``show_progress_bar``
        (the items the shards have stored) as in ``Engine.ingest_batch``. Texts, timestamps and
        metadata an ``Engine`` would refuse are refused before anything is sent; an error on
        a shard (a shard unavailable: ``ShardUnavailableError``) raises with
        ``ingested_ids``, the ids the other shards stored."""
        texts = listed(python_values(texts), "texts")
        _check_texts(texts, "texts")
        batch_size = 1024 if batch_size is None else positive(batch_size, "batch_size")
        cols = _columns(len(texts), "texts", timestamps=timestamps, metadata=metadata)
        _check_columns(len(texts), cols)
        show = wants_bar(show_progress_bar, len(texts))
        progress = Progress(len(texts), "imesde: ingest", show)
        try:
            return self._send(
                "ingest_batch",
                len(texts),
                batch_size,
                lambda rows: [texts[r] for r in rows],
                cols,
                texts,
                progress,
            )
        finally:
            progress.close()

    def ingest_vectors(
        self,
        vectors: npt.NDArray[np.float32],
        texts: Iterable[str | None] | None = None,
        *,
        timestamps: Iterable[Any] | None = None,
        metadata: Iterable[dict[str, Any] | None] | dict[str, Any] | None = None,
        batch_size: int | None = 4096,
    ) -> npt.NDArray[np.int64]:
        """Adds pre-computed vectors (``[n, dim]``), item after item over the shards (the
        ``key`` routing is for texts; ``batch_size`` rows sent at a time, None: 4096). Rows
        that are not finite, or zero, and texts, timestamps and metadata an ``Engine`` would
        refuse are refused before anything is sent; errors on shards raise as in
        ``ingest_batch``."""
        x = _float32(vectors, "vectors")
        if x.ndim == 1:  # one vector, as Engine takes it
            x = x[None]
        if x.ndim != 2:
            raise ShapeError(f"vectors must be [n, dim], got shape {x.shape}")
        if x.shape[1] != self._dim:  # an empty batch too, as Engine checks it
            raise DimensionMismatchError(
                f"vectors has {x.shape[1]} dims, the engine holds {self._dim}-dim vectors"
            )
        _check_vectors(x)
        n = len(x)
        batch_size = 4096 if batch_size is None else positive(batch_size, "batch_size")
        cols = _columns(n, "vectors", texts=texts, timestamps=timestamps, metadata=metadata)
        _check_columns(n, cols)
        return self._send("ingest_vectors", n, batch_size, lambda rows: x[rows], cols, None)

    # --- search ----------------------------------------------------------------------------

    @staticmethod
    def _merge(lists: Iterable[list[_Row]], k: int) -> list[ShardedHit]:
        """The best `k` of the shards' answers: higher score, then (as in one engine) the
        newer item on a tie."""
        rows = [r for rows in lists for r in rows]
        rows.sort(key=lambda r: (-r[2], -r[0]))
        return [ShardedHit(*r) for r in rows[:k]]

    @staticmethod
    def _filters(since: Any, until: Any, where: Any, **more: Any) -> dict[str, Any]:
        return {"since": since, "until": until, "where": _plain(where), **more}

    def _dense_filters(self, since: Any, until: Any, where: Any, exact: bool) -> dict[str, Any]:
        """A dense search's filters, with the ``nprobe`` and ``k_factor`` the shards are to
        use: a shard that Ray restarted by itself was built from the arguments of its first
        start and would search with the settings of then."""
        tuning = (self._spec.get("nprobe"), self._spec.get("k_factor"))
        return self._filters(since, until, where, exact=exact, tuning=tuning)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        exact: bool = False,
    ) -> list[ShardedHit]:
        """The ``k`` items closest in meaning to ``query`` over every shard, best first.
        ``allow_partial``: answer from the shards that are available instead of raising;
        ``exact``: as in ``Engine.search_vector``."""
        f = self._dense_filters(since, until, where, exact)
        return self._merge(self._scatter("search", query, k, f, allow_partial=allow_partial), k)

    def search_vector(
        self,
        query: npt.NDArray[np.float32],
        k: int = 10,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        exact: bool = False,
    ) -> list[ShardedHit]:
        """``search`` for a query vector."""
        q = _float32(query, "query")
        f = self._dense_filters(since, until, where, exact)
        return self._merge(self._scatter("search_vector", q, k, f, allow_partial=allow_partial), k)

    def search_vectors(
        self,
        queries: npt.NDArray[np.float32],
        k: int = 10,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        exact: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-``k`` for a batch of query vectors (``[nq, dim]`` float32) over every shard, as
        ``Engine.search_vectors`` gives it: ``(scores, ids)`` of shape ``[nq, k']`` (``k'``
        the most hits a query got, at most ``k``), best first, ties to the newer item; a
        shorter row is padded with id ``-1`` and score ``-inf``."""
        qs = _float32(queries, "queries")
        f = self._dense_filters(since, until, where, exact)
        parts = self._scatter("search_vectors", qs, k, f, allow_partial=allow_partial)
        if not parts:
            nq = 1 if qs.ndim == 1 else len(qs)
            return np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1).astype(np.int64, copy=False)
        # Higher score first, then the newer (larger) id; the padding (-inf) last.
        order = np.lexsort((-ids, -scores), axis=1)
        # The most hits a query got; without queries, the columns the shards gave (as one
        # engine: min(k, items held)).
        width = min(k, int((ids >= 0).sum(axis=1).max()) if len(ids) else ids.shape[1])
        order = order[:, :width]
        return (
            np.ascontiguousarray(np.take_along_axis(scores, order, axis=1)),
            np.ascontiguousarray(np.take_along_axis(ids, order, axis=1)),
        )

    def search_batch(
        self,
        queries: Iterable[str],
        k: int = 10,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        exact: bool = False,
    ) -> list[list[ShardedHit]]:
        """``search`` for each query (embedded in one batch on each shard)."""
        qs = listed(python_values(queries), "queries")
        f = self._dense_filters(since, until, where, exact)
        per_shard = self._scatter("search_batch", qs, k, f, allow_partial=allow_partial)
        return [self._merge((s[j] for s in per_shard), k) for j in range(len(qs))]

    def _corpus(
        self, query: str | list[str], allow_partial: bool
    ) -> tuple[int, int, dict[str, tuple[int, float]]]:
        """The BM25 statistics of every (available) shard's items taken as one corpus, for
        `query`: documents, total length, and per term its document count and largest
        impact."""
        parts = self._scatter("corpus_terms", query, allow_partial=allow_partial)
        documents = sum(p[0] for p in parts)
        total = sum(p[1] for p in parts)
        dfs: dict[str, int] = {}
        for _, _, terms in parts:
            for term, df in terms:
                dfs[term] = dfs.get(term, 0) + df
        names = list(dfs)
        maxima = self._scatter("max_impacts", names, documents, total, allow_partial=allow_partial)
        best = [max((m[j] for m in maxima), default=0.0) for j in range(len(names))]
        return documents, total, {t: (dfs[t], b) for t, b in zip(names, best, strict=True)}

    def lexical_search(
        self,
        query: str | Iterable[str],
        k: int = 10,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
    ) -> list[ShardedHit]:
        """The ``k`` items whose texts best match ``query``'s words, best first; needs
        ``lexical=True``. ``query`` is a text or its analyzed terms, as in
        ``Engine.lexical_search``. BM25 as one engine holding every shard's items scores it:
        the shards' statistics (document counts, lengths, term frequencies) are gathered
        first, and every shard scores with them."""
        q = _lexical_query(query)
        f = self._filters(since, until, where)
        corpus = self._corpus(q, allow_partial)
        lists = self._scatter("lexical_search_corpus", q, k, corpus, f, allow_partial=allow_partial)
        return self._merge(lists, k)

    def hybrid_search(
        self,
        query: str | Iterable[str],
        k: int = 10,
        method: Fusion = "weighted",
        alpha: float | None = None,
        *,
        vector: npt.NDArray[np.float32] | None = None,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        exact: bool = False,
    ) -> list[ShardedHit]:
        """Dense and lexical results fused as ``Engine.hybrid_search`` fuses them (the best
        ``max(5k, 50)`` of each side over all shards, ``method``, ``alpha`` and ``vector``
        as there; ``query`` may be terms only with ``vector``)."""
        import imesde

        q = _lexical_query(query)

        if alpha is not None and not 0.0 <= number(alpha, "alpha") <= 1.0:
            raise imesde.InvalidValueError(f"alpha must be between 0 and 1, got {alpha}")
        k = min(k, self.capacity)
        depth = min(max(5 * k, 50), self.capacity)
        opts: dict[str, Any] = {
            "since": since,
            "until": until,
            "where": where,
            "allow_partial": allow_partial,
        }
        if vector is not None:
            dense = self.search_vector(vector, depth, exact=exact, **opts)
        elif isinstance(q, str):
            dense = self.search(q, depth, exact=exact, **opts)
        else:
            raise DTypeError(
                "query must be a str without vector= (the model embeds a text, not terms), "
                f"got {type(query).__name__}"
            )
        lexical = self.lexical_search(q, depth, **opts)
        if alpha is None and method == "weighted":
            alpha = 0.5
        # The weights in float32, computed as the engine computes them.
        a = None if alpha is None else np.float32(alpha)
        weights = None if a is None else [float(a), float(np.float32(1.0) - a)]
        fused = imesde.fuse(
            [[(h.id, h.score) for h in dense], [(h.id, h.score) for h in lexical]],
            method=method,
            k=k,
            weights=weights,
        )
        found = {h.id: h for h in (*dense, *lexical)}
        return [
            ShardedHit(i, found[i].text, score, found[i].ts, found[i].metadata)
            for i, score in fused
        ]

    # --- items -----------------------------------------------------------------------------

    def _shard_of(self, item_id: int) -> int:
        return item_id % self.num_shards

    def get(self, id: int) -> ShardedItem:
        """The item ``id``; ``ItemNotFoundError`` (a ``KeyError``) when no shard holds it."""
        item_id = integer(id, "id")
        shard = self._shard_of(item_id)
        # Global ids stay below 2**63 (int64, as everywhere in imesde); -1 (search_vectors'
        # padding) and any other int name no item, as in Engine.get.
        row = (
            None
            if not 0 <= item_id < 2**63
            else self._wait(shard, self._actors[shard].get.remote(item_id))
        )
        if row is None:
            raise ItemNotFoundError(f"no shard holds an item with id {item_id}")
        return ShardedItem(*row)

    def get_batch(self, ids: Iterable[int]) -> list[ShardedItem | None]:
        """The items ``ids`` (a list or an integer array) in order, None for an id no shard
        holds (``-1`` too), as ``Engine.get_batch``; one call per shard that holds any."""
        if isinstance(ids, numbers.Integral | str | bytes | bytearray) or (
            isinstance(ids, np.ndarray) and ids.ndim == 0
        ):
            raise DTypeError(f"ids must be a list of int, got {type(ids).__name__}")
        _flat_ids(ids)
        wanted = [integer(v, f"ids[{n}]") for n, v in enumerate(listed(ids, "ids"))]
        by_shard: dict[int, set[int]] = {}
        for i in wanted:
            if 0 <= i < 2**63:  # no item has another id
                by_shard.setdefault(self._shard_of(i), set()).add(i)
        refs = [
            (s, self._actors[s].get_batch.remote(sorted(g))) for s, g in sorted(by_shard.items())
        ]
        rows = {row[0]: row for s, ref in refs for row in self._wait(s, ref) if row is not None}
        # An item asked for twice comes back as two items (each its own vector), as one
        # engine's get_batch gives them.
        return [
            None if (row := rows.get(i)) is None else ShardedItem(row[0], row[1].copy(), *row[2:])
            for i in wanted
        ]

    def __contains__(self, item_id: object) -> bool:
        """Whether a shard holds the item ``item_id`` (``item_id in sharded``); anything that
        is not a valid id is not held."""
        try:
            i = _item_id(item_id)
        except (DTypeError, OutOfRangeError):
            return False
        if i >= 2**63:
            return False
        shard = self._shard_of(i)
        return self._wait(shard, self._actors[shard].get.remote(i)) is not None

    def delete(
        self,
        ids: int | Iterable[int] | None = None,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
    ) -> int:
        """Deletes the items ``ids`` (one id, or a list or array of them) held, or those that
        pass ``since``, ``until`` and ``where`` (of ``ids`` when given), as
        ``Engine.delete``; returns how many were."""
        f = self._selection(since, until, where)
        if ids is None:
            if f is None:
                raise InvalidValueError(
                    "delete needs ids or a filter (where, since, until); an empty one would "
                    "delete every item"
                )
            return sum(self._scatter("delete", None, f))
        wanted = _item_ids(ids)
        refs = [
            (s, self._actors[s].delete.remote([wanted[n] for n in rows], f))
            for s, rows in self._rows_by_shard(wanted)
        ]
        return sum(self._wait(s, r) for s, r in refs)

    def _selection(self, since: Any, until: Any, where: Any) -> dict[str, Any] | None:
        """The filters of a delete or metadata update, None without any (``where={}`` keeps
        every item: no filter, as ``Engine`` takes it there)."""
        if isinstance(where, Mapping) and not where:
            where = None
        if since is None and until is None and where is None:
            return None
        return self._filters(since, until, where)

    def _rows_by_shard(self, ids: list[int]) -> list[tuple[int, list[int]]]:
        """The positions in `ids` of those each shard would hold, by shard (an id of 2**63
        or more no shard holds)."""
        by_shard: dict[int, list[int]] = {}
        for n, i in enumerate(ids):
            if i < 2**63:
                by_shard.setdefault(self._shard_of(i), []).append(n)
        return sorted(by_shard.items())

    def update_metadata(
        self,
        ids: int | Iterable[int] | None = None,
        metadata: Mapping[str, Any] | Iterable[Mapping[str, Any] | None] | None = None,
        *,
        merge: bool = True,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
    ) -> int:
        """Changes the metadata of the items ``ids``, or of those that pass ``since``,
        ``until`` and ``where`` (of ``ids`` when given), in place, as
        ``Engine.update_metadata`` (one dict for every item, or one per id; ``merge`` sets
        keys and removes those given None, ``merge=False`` replaces); returns how many were
        updated. Bad metadata raises before any shard is sent anything."""
        f = self._selection(since, until, where) or {}
        wanted = None if ids is None else _item_ids(ids)
        if metadata is None:
            raise DTypeError("update_metadata needs metadata: a dict (or one per id)")
        per_id = not isinstance(metadata, Mapping)
        changes: Any = listed(metadata, "metadata") if per_id else dict(metadata)  # type: ignore[arg-type]
        # Checked as one engine checks it (each dict, one per id, and the filter), on an
        # engine of one item: no shard is sent what it would refuse.
        probe = _probe()
        probe.ingest_vectors(np.ones((1, 1), dtype=np.float32))
        probe_ids = None if wanted is None else [0] * len(wanted)
        probe.update_metadata(probe_ids, changes, merge=merge, **f)
        if wanted is None:
            return sum(self._scatter("update_metadata", None, changes, merge, f))
        refs = [
            (
                s,
                self._actors[s].update_metadata.remote(
                    [wanted[n] for n in rows],
                    [changes[n] for n in rows] if per_id else changes,
                    merge,
                    f,
                ),
            )
            for s, rows in self._rows_by_shard(wanted)
        ]
        return sum(self._wait(s, r) for s, r in refs)

    def recent(
        self,
        n: int,
        *,
        since: Any = None,
        until: Any = None,
        where: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
    ) -> list[ShardedItem]:
        """The newest ``n`` items held over every shard, newest first (``Engine.recent``)."""
        n = positive(n, "n")
        rows = [
            r
            for part in self._scatter(
                "recent", n, self._filters(since, until, where), allow_partial=allow_partial
            )
            for r in part
        ]
        rows.sort(key=lambda r: -r[0])
        return [ShardedItem(*r) for r in rows[:n]]

    def upsert(
        self,
        id: int,
        item: str | npt.NDArray[np.float32],
        *,
        metadata: dict[str, Any] | None = None,
        ts: Any = None,
    ) -> int:
        """Replaces the item ``id`` by a new version and returns its id, as ``Engine.upsert``
        does: the new version (a text, or a vector) is a new item at the head of the stream
        and keeps the old one's metadata (and, for a vector, its text) unless given; then
        ``id`` is deleted. An id not held just adds the item; a bad item raises and leaves
        ``id`` as it was."""
        item_id = _item_id(id)
        old = self.get(item_id) if item_id in self else None
        meta = metadata if metadata is not None else (None if old is None else old.metadata)
        stamps = None if ts is None else [ts]
        if isinstance(item, str):
            new = self.ingest_batch([item], timestamps=stamps, metadata=[meta])
        else:
            vector = _float32(item, "item")
            if vector.ndim == 2 and len(vector) == 1:  # one row, as Engine.upsert takes it
                vector = vector[0]
            if vector.ndim != 1:
                raise ShapeError(f"item must be one text or one vector, got shape {vector.shape}")
            text = None if old is None else old.text
            new = self.ingest_vectors(vector[None], [text], timestamps=stamps, metadata=[meta])
        if old is not None:
            self.delete([item_id])
        return int(new[0])

    def close(self) -> None:
        """Closes the subscriptions and stops every shard's actor (their items go with them:
        ``save`` first to keep them). Calls afterwards raise ``ShardUnavailableError``."""
        for sub in list(self._subscriptions):
            sub.close()
        self._closed = True
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)

    def __enter__(self) -> ShardedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise DTypeError(
            "a ShardedEngine lives in the process that made it (it numbers the items): pass "
            "its actors (actor(i)) to other tasks, or save() it and ShardedEngine.load() it "
            "elsewhere"
        )

    def __len__(self) -> int:
        return sum(self._scatter("size"))

    def count(
        self, *, since: Any = None, until: Any = None, where: Mapping[str, Any] | None = None
    ) -> int:
        """How many items held over every shard pass the filters (``Engine.count``)."""
        return sum(self._scatter("count", self._filters(since, until, where)))

    @property
    def dim(self) -> int:
        """The dimension of the vectors the shards hold (the model's, or the one given)."""
        return self._dim

    @property
    def num_shards(self) -> int:
        """How many shards (actors) hold the items."""
        return self._num_shards

    @property
    def capacity(self) -> int:
        """How many items the shards hold together (``num_shards * shard_size``)."""
        return self._capacity

    @property
    def shard_size(self) -> int:
        """How many items each shard holds."""
        return int(self._spec["engine_shards"] * self._spec["ring_shard_size"])

    @property
    def storage(self) -> Literal["f32", "int8", "binary"]:
        """How each shard stores its vectors: ``"f32"``, ``"int8"`` or ``"binary"``."""
        storage: Literal["f32", "int8", "binary"] = self._spec["storage"]
        return storage

    @property
    def lexical(self) -> bool:
        """Whether the shards keep a BM25 index of the items' texts."""
        return bool(self._spec["lexical"])

    @property
    def lexical_settings(self) -> imesde.BM25 | None:
        """The shards' BM25 settings as an empty ``imesde.BM25`` (what
        ``ShardedEngine(lexical=...)`` takes), or None without a BM25 index."""
        import imesde

        spec = self._spec["lexical"]
        if not spec:
            return None
        # `lexical=True`: the settings of a default BM25.
        settings: imesde.BM25 = _lexical_of(spec) if isinstance(spec, dict) else imesde.BM25()
        return settings

    @property
    def nlist(self) -> int | None:
        """Lists of each shard's index (``index="ivf"``); None without one."""
        nlist: int | None = self._spec["nlist"]
        return nlist

    @property
    def nprobe(self) -> int | None:
        """Lists of each shard's index scanned per query; None without an index. Set it at
        any time, as ``Engine.nprobe``: every shard probes that many from then on, a shard
        restarted or restored later too, and ``save`` keeps it."""
        nprobe: int | None = self._spec["nprobe"]
        return nprobe

    @nprobe.setter
    def nprobe(self, nprobe: int) -> None:
        # Checked as the constructor checks it (typed errors, nothing sent on a refusal).
        n = positive(nprobe, "nprobe")
        _check_shape({**self._spec, "nprobe": n})
        self._spec["nprobe"] = n
        self._scatter("tune", n, None)

    @property
    def k_factor(self) -> int:
        """Candidates per hit that each shard's ranking by sign bits keeps to rescore
        (``Engine.k_factor``). Set it at any time: every shard rescores that many from then
        on, a shard restarted or restored later too, and ``save`` keeps it."""
        k_factor: int | None = self._spec.get("k_factor")
        # Unset: the default, as a one-slot engine has it.
        return _probe().k_factor if k_factor is None else k_factor

    @k_factor.setter
    def k_factor(self, k_factor: int) -> None:
        # Checked by an engine of the shards' shape (typed errors, nothing sent on a refusal).
        n = positive(k_factor, "k_factor")
        _check_shape(self._spec).k_factor = n
        self._spec["k_factor"] = n
        self._scatter("tune", None, n)

    def train_index(self) -> bool:
        """Trains every shard's index on the items it holds now and waits (see
        ``Engine.train_index``); returns whether all are trained. Without ``index=`` False."""
        return all(self._scatter("train_index"))

    def shard_sizes(self, *, allow_partial: bool = False) -> list[int | None]:
        """Items held per shard (None for an unavailable shard with ``allow_partial``)."""
        out: list[int | None] = []
        for i, a in enumerate(self._actors):
            try:
                out.append(self._wait(i, a.size.remote()))
            except ShardUnavailableError:
                if not allow_partial:
                    raise
                out.append(None)
        return out

    def stats(self, *, allow_partial: bool = False) -> dict[str, Any]:
        """Each shard's ``Engine.stats()`` (``shards``; None for an unavailable shard with
        ``allow_partial``) and what they add up to: ``len``, ``capacity``, ``ingested``,
        ``evicted``, ``deleted`` and the byte counts (``memory_bytes``, ``payload_bytes``,
        ``lexical_bytes``, ``index_bytes``, ``total_bytes``; None where the shards have none)
        summed over the shards that answered, with ``num_shards`` (the actors), ``dim``,
        ``storage``, ``index``, ``nlist``, ``nprobe``, ``index_trained`` (every shard that
        answered has trained its index) and ``simd`` (the kernels the shards run, a list).
        Each shard counts its own ``searches`` (a search asks every shard) and has its own
        ``shard_size``: see ``shards``."""
        shards: list[dict[str, Any] | None] = []
        for i, a in enumerate(self._actors):
            try:
                shards.append(self._wait(i, a.stats.remote()))
            except ShardUnavailableError:
                if not allow_partial:
                    raise
                shards.append(None)
        answered = [st for st in shards if st is not None]
        out: dict[str, Any] = {}
        for key in _SUMMED_STATS:
            # None where the shards have none (lexical_bytes without a BM25 index).
            values = [st[key] for st in answered if st.get(key) is not None]
            out[key] = sum(values) if values else None
        out.update(
            num_shards=self.num_shards,
            dim=self.dim,
            storage=self.storage,
            index=self._spec.get("index"),
            nlist=self.nlist,
            nprobe=self.nprobe,
            # Every shard that answered has trained its index.
            index_trained=bool(answered) and all(st["index_trained"] for st in answered),
            simd=sorted({st["simd"] for st in answered}),
            shards=shards,
        )
        return out

    # --- snapshots and faults --------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str] | None = None) -> None:
        """Writes one snapshot per shard and a manifest into ``directory`` (default: the
        ``snapshot_dir`` given at creation), each file atomically. Every shard must be
        available. ``restore_shard`` reads from the last directory saved to; Ray's own
        restarts (``max_restarts``) from ``snapshot_dir``, the directory the actors were made
        with."""
        directory = self._snapshot_dir if directory is None else os.fspath(directory)
        if directory is None:
            raise InvalidValueError("no directory: pass one or create the engine with snapshot_dir")
        os.makedirs(directory, exist_ok=True)
        with self._lock:
            # Each save writes files of a new generation and names it in the manifest last: a
            # save that fails on a shard leaves the previous one whole (never a mix of two,
            # whose ids would collide).
            try:
                last = _read_manifest(directory)
            except IndexCorruptError:  # a damaged manifest is replaced, as a file would be
                last = None
            generation = (0 if last is None else last.get("generation", 0)) + 1
            refs = [
                (i, a.save.remote(_snapshot_path(directory, i, generation)))
                for i, a in enumerate(self._actors)
            ]
            try:
                self._gather(refs)
            except BaseException:
                _remove_generations(directory, keep=lambda g: g != generation)
                raise
            manifest = {
                "format": FORMAT,
                "num_shards": self.num_shards,
                "next": self._next,
                "turn": 0,
                "generation": generation,
                "spec": self._spec,
            }
            tmp = os.path.join(directory, MANIFEST + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(directory, MANIFEST))
            _remove_generations(directory, keep=lambda g: g == generation)
        self._snapshot_dir = directory

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        key: Callable[[str], Hashable] | None = None,
        num_cpus: float = 1,
        max_restarts: int = 0,
        start_timeout: float | None = 600.0,
    ) -> ShardedEngine:
        """The engine saved in ``directory``, one actor per shard snapshot."""
        directory = os.fspath(directory)
        manifest = _read_manifest(directory)
        if manifest is None:
            raise StorageError(f"{directory} holds no ShardedEngine snapshot (no {MANIFEST})")
        self = cls.__new__(cls)
        self._spec = manifest["spec"]
        # The index's shape as the shards have it (a manifest may leave the defaults None).
        try:
            checked = _check_shape(self._spec)
        except (KeyError, TypeError, ImesdeError) as e:
            raise IndexCorruptError(
                f"{directory}: its manifest's engine settings are damaged ({e!r})"
            ) from e
        self._spec["nlist"], self._spec["nprobe"] = checked.nlist, checked.nprobe
        self._spec["storage"] = checked.storage  # its name as Engine gives it ("float32": f32)
        self._open(
            int(manifest["num_shards"]),
            key,
            num_cpus,
            max_restarts,
            directory,
            start_timeout,
            manifest["next"],
        )
        return self

    def available(self) -> list[bool]:
        """Whether each shard answers."""
        out = []
        for i, a in enumerate(self._actors):
            try:
                self._wait(i, a.ping.remote())
                out.append(True)
            except ShardUnavailableError:
                out.append(False)
        return out

    def restore_shard(self, shard: int) -> None:
        """Replaces shard ``shard``'s actor by a new one restored from its last snapshot (the
        items it acknowledged after that snapshot are gone; without a snapshot, it starts
        empty), and registers the open standing queries on it again."""
        if not 0 <= shard < self.num_shards:
            raise InvalidValueError(f"no shard {shard} (there are {self.num_shards})")
        with contextlib.suppress(Exception):  # already gone is fine
            ray.kill(self._actors[shard])
        self._actors[shard] = self._start(shard)
        self._wait(shard, self._actors[shard].ping.remote())
        # Standing queries run on the new actor too (from the items it holds now on); its
        # queues start empty. One it cannot take yet (a percentile threshold while it holds
        # nothing) its subscription's polls register when it can.
        for sub in list(self._subscriptions):
            sub._shard_dropped[shard] = 0
        for key, args in list(self._standing.items()):
            with contextlib.suppress(Exception):
                self._wait(shard, self._actors[shard].subscribe.remote(key, *args))

    def actor(self, shard: int) -> Any:
        """The Ray actor handle of shard ``shard`` (for placement, monitoring or tests)."""
        return self._actors[shard]

    # --- semantic ids ----------------------------------------------------------------------

    def attach_semantic_ids(
        self, assign: Callable[[npt.NDArray[np.float32]], Sequence[str]] | None
    ) -> None:
        """As ``Engine.attach_semantic_ids``: each item ingested from now on gets metadata
        ``semantic_id`` from ``assign``, which each shard calls on its part of a batch
        (``None`` detaches). ``assign`` is checked as ``Engine`` checks it (callable; a
        ``SemanticIdEngine`` or ``RQKMeans`` fitted on vectors of this engine's dimension) and
        then sent to every shard, pickled; a shard Ray restarted, or one ``restore_shard``
        replaced, labels with it too.

        Ids stay unique over all the shards: a ``SemanticIdEngine`` whose store is in memory
        (the default) claims them in one copy of that store that every shard shares
        (``semantic_id_store``: an actor; the store given is copied when first attached and
        does not see the ids claimed there). Attached again, to this engine or another of this
        process (one loaded from a save), the same copy goes on, for as long as the store
        given lives. A ``SQLiteCollisionStore`` is shared through its file (on one machine,
        or a file every node sees). Any other callable is copied to each shard with whatever
        state it holds.
        """
        shipped: Any = None
        if assign is not None:
            # Refused as one engine refuses it, before any shard is sent anything.
            _probe(self._dim).attach_semantic_ids(assign)
            shipped = self._shared(assign)
            try:
                ref = ray.put(shipped)
            except Exception as e:
                raise DTypeError(
                    f"assign must pickle to go to the shards: {type(e).__name__}: {e}"
                ) from e
        with self._lock:
            previous = self._labeler, self._semantic_id_store
            self._labelers += 1
            self._labeler = (self._labelers, [None if assign is None else ref])
            resolver = getattr(shipped, "unique_resolver", None)
            self._semantic_id_store = getattr(resolver, "store", None)
            try:
                # A shard that is down takes it with its first ingest once it is back.
                self._scatter("attach_semantic_ids", self._labeler, allow_partial=True)
            except BaseException:
                # Shards that took the new one go back to the previous with their next ingest
                # (its generation differs from theirs).
                self._labeler, self._semantic_id_store = previous
                raise

    @property
    def semantic_id_store(self) -> CollisionStore | None:
        """The store the shards claim semantic ids through (``claim``, ``next_suffix``,
        ``len``) when a ``SemanticIdEngine`` is attached; ids claimed there are unique with
        theirs. None otherwise."""
        store: CollisionStore | None = self._semantic_id_store
        return store

    def _shared(self, assign: Any) -> Any:
        """`assign` as the shards get it: a `SemanticIdEngine` whose store is in memory
        claims through the one actor holding a copy of that store (the same actor each time
        that store is attached, to any engine of this process, so that no id it handed out is
        handed out again)."""
        from imesde.semantic_ids import (
            InMemoryCollisionStore,
            SemanticIdEngine,
            UniqueIdResolver,
        )

        resolver = getattr(assign, "unique_resolver", None)
        if not (
            isinstance(assign, SemanticIdEngine)
            and isinstance(resolver, UniqueIdResolver)
            and type(resolver.store) is InMemoryCollisionStore
        ):
            return assign
        store = resolver.store
        job = _ray_job()
        with _STORE_ACTORS_LOCK:
            job_of, holder = _STORE_ACTORS.get(store, (job, None))
            if holder is None or job_of != job:  # none yet, or Ray was started again since
                holder = ray.remote(_IdStoreActor).options(num_cpus=0).remote(store)
                _STORE_ACTORS[store] = (job, holder)
        shared_resolver = copy.copy(resolver)
        shared_resolver.store = _SharedIdStore(holder)
        shipped = copy.copy(assign)
        shipped.unique_resolver = shared_resolver
        return shipped

    # --- standing queries ------------------------------------------------------------------

    def subscribe(
        self,
        query: str | npt.NDArray[np.float32],
        *,
        threshold: float | str | None = None,
        top_k: int | None = None,
        where: Mapping[str, Any] | None = None,
        callback: Callable[[ShardedHit], object] | None = None,
        queue_size: int = 10_000,
        poll_interval: float = 0.05,
    ) -> ShardedSubscription:
        """A standing query on every shard; their events arrive as ``ShardedHit``s in one
        subscription (iterate it, ``get`` from it, or give ``callback``). A percentile
        threshold (``"p99"``) is calibrated as one engine holding every shard's items
        calibrates it (on those that pass ``where``), then given to each shard as a score.
        ``top_k`` fires for items that enter the k best seen since subscribing over all the
        shards, taken in the order their events reach this process (each shard fires for its
        own k best, a superset; the subscription keeps those that enter the k best of all)."""
        if top_k is not None:
            top_k = positive(top_k, "top_k")
        with self._lock:
            self._subscription_keys += 1
            key = self._subscription_keys
        q = query if isinstance(query, str) else _float32(query, "query")
        threshold = self._calibrated(q, threshold, where)
        args = (q, threshold, _plain(where), queue_size, top_k)
        try:
            held = self._scatter("subscribe", key, *args)
        except BaseException:
            # No shard keeps a standing query that has no subscription to read it.
            for actor in self._actors:
                # A shard that does not answer soon (hung, or gone) is not waited for.
                with contextlib.suppress(Exception):
                    ray.get(actor.unsubscribe.remote(key), timeout=_CLEANUP_WAIT)
            raise
        self._standing[key] = args
        sub = ShardedSubscription(self, key, callback, queue_size, poll_interval, top_k)
        sub.query = query if isinstance(query, str) else None
        # As the shards hold it: a float32, the value scores are compared with (0.3 reads
        # back 0.30000001192092896, as from one engine's subscription).
        sub.threshold = held[0]
        self._subscriptions.add(sub)
        return sub

    def _calibrated(self, query: str | npt.NDArray[np.float32], threshold: Any, where: Any) -> Any:
        """A percentile threshold as the score one engine holding every shard's items
        calibrates it to (the k-th best of the items that pass ``where``, by an exact
        search over the shards); any other threshold as it is."""
        if not isinstance(threshold, str):
            return threshold
        pct = percentile(threshold)
        if pct is None:
            raise InvalidValueError(
                f'threshold {threshold!r} is not a percentile like "p99" or "p99.9"'
            )
        held = self.count(where=where)
        k = min(max(math.ceil((100.0 - pct) / 100.0 * held), 1), held)
        if isinstance(query, str):
            hits = self.search(query, k, where=where, exact=True) if held else []
        else:
            hits = self.search_vector(query, k, where=where, exact=True) if held else []
        if not hits:  # none held (or all gone between the count and the search)
            why = "no item held passes the filter" if where else "on an empty engine: ingest first"
            raise InvalidValueError(f"cannot calibrate threshold {threshold}: {why}")
        return hits[-1].score

    def unsubscribe(self, subscription: ShardedSubscription | int) -> bool:
        """Stops ``subscription`` (or the one with that ``id``), as ``subscription.close()``;
        False when it was not active or is another engine's."""
        if isinstance(subscription, ShardedSubscription):
            found = subscription if subscription._engine is self else None
        else:
            key = integer(subscription, "subscription")
            found = next((s for s in self._subscriptions if s.id == key), None)
        if found is None or not found.active:
            return False
        found.close()
        return True

    def subscriptions(self) -> list[ShardedSubscription]:
        """The active subscriptions, oldest first."""
        return sorted((s for s in self._subscriptions if s.active), key=lambda s: s._key)

    def __repr__(self) -> str:
        return f"ShardedEngine(num_shards={self.num_shards}, next_id_seq={self._next})"


# Seconds a waiting ``ShardedSubscription.get`` sleeps before it looks whether it was closed.
_SLICE = 0.1
# Seconds a failed subscribe waits for each shard to drop what it registered.
_CLEANUP_WAIT = 10.0


class ShardedSubscription:
    """The events of one standing query over every shard of a ``ShardedEngine``, merged in
    the driver by a polling thread: iterate it, ``get`` from it, or read them in a callback.
    ``delivered`` / ``dropped`` (a queue full, here or on a shard) / ``errors`` (callback
    raised) count events; ``threshold`` is the score an event reaches (a percentile
    calibrated over every shard), None without one; ``unavailable`` holds the shards whose
    last poll failed; ``restarted`` the shards Ray restarted, on which the query was
    registered again (items they took before that did not fire). ``error`` is what stopped
    the subscription when something other than a shard failed (Ray shut down): it is then
    closed."""

    def __init__(
        self,
        engine: ShardedEngine,
        key: int,
        callback: Callable[[ShardedHit], object] | None,
        queue_size: int,
        poll_interval: float,
        top_k: int | None = None,
    ) -> None:
        self._engine = engine
        self._key = key
        self._callback = callback
        # The k best scores delivered so far (a min-heap), for a running top-k over shards.
        self._top_k = top_k
        self._best: list[float] = []
        self._queue: queue.Queue[ShardedHit] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._closed_at = 0.0
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.unavailable: set[int] = set()
        self.restarted: set[int] = set()
        self.error: BaseException | None = None
        # The score an item must reach (a percentile threshold calibrated), None for none.
        self.threshold: float | None = None
        # The query text, None for a vector query.
        self.query: str | None = None
        # Per shard, the drops its queue had counted at the last poll.
        self._shard_dropped: dict[int, int] = {}
        # Events of items whose batch is still in flight on another shard: delivered once
        # every item before them is acknowledged, so events come in stream order.
        self._held: list[_Row] = []
        self._interval = poll_interval
        self._thread = threading.Thread(target=self._run, name=f"imesde-sub-{key}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> int:
        """The subscription's id in its engine (``ShardedEngine.unsubscribe`` takes it)."""
        return self._key

    @property
    def active(self) -> bool:
        """Whether events are still being received."""
        return not self._stop.is_set()

    @property
    def top_k(self) -> int | None:
        """The running top-k size over every shard, None without one."""
        return self._top_k

    @property
    def pending(self) -> int:
        """Events waiting in the queue (in this process; a shard's own queue is read at each
        poll)."""
        return self._queue.qsize()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._poll():
                    self._stop.wait(self._interval)
        except Exception as e:  # Ray shut down, a shard broke: closed, and said why
            self.error = e
            self._closed_at = time.monotonic()
            self._stop.set()

    def _poll(self) -> int:
        """One round over the shards; returns how many events it delivered or dropped."""
        # Read before the shards are: every item acknowledged by then has its events queued
        # on its shard already, so this round sees all of them.
        limit = self._engine._acked * self._engine.num_shards
        actors = self._engine._actors
        refs = [(i, a.poll.remote(self._key)) for i, a in enumerate(actors)]
        rows: list[_Row] = []
        for i, ref in refs:
            try:
                got = ray.get(ref)
            except _ACTOR_GONE:
                self.unavailable.add(i)
                continue
            self.unavailable.discard(i)
            if got is None:
                # Ray restarted the shard: its standing query is gone; register it again (a
                # shard that cannot take it yet, such as a percentile threshold on an empty
                # shard, is asked again at the next round; the others deliver meanwhile).
                args = self._engine._standing.get(self._key)
                if args is not None and not self._stop.is_set():
                    try:
                        ray.get(actors[i].subscribe.remote(self._key, *args))
                    except Exception:
                        self.unavailable.add(i)
                        continue
                    self.restarted.add(i)
                    self._shard_dropped[i] = 0
                continue
            events, dropped = got
            rows.extend(events)
            self.dropped += dropped - self._shard_dropped.get(i, 0)
            self._shard_dropped[i] = dropped
        # In stream order, as one engine fires them: up to the items every shard has
        # acknowledged (a batch spans the shards; one shard's part may be stored first).
        rows.extend(self._held)
        ready = sorted((r for r in rows if r[0] < limit), key=lambda r: r[0])
        self._held = [r for r in rows if r[0] >= limit]
        for row in ready:
            hit = ShardedHit(*row)
            if enters_top_k(self._best, self._top_k, hit.score):
                self._deliver(hit)
        return len(ready)

    def _deliver(self, hit: ShardedHit) -> None:
        if self._callback is not None:
            try:
                self._callback(hit)
            except Exception:  # a failing callback must not stop delivery: logged, counted
                self.errors += 1
                logging.getLogger("imesde").exception(
                    "imesde: the callback of a sharded subscription raised (event id %d)", hit.id
                )
            self.delivered += 1
            return
        try:
            self._queue.put_nowait(hit)
            self.delivered += 1
        except queue.Full:
            self.dropped += 1

    def get(self, timeout: float | None = None) -> ShardedHit | None:
        """The next event, waiting at most ``timeout`` seconds (None: until one arrives or the
        subscription is closed); None when there is none."""
        if timeout is not None and not timeout >= 0:
            raise InvalidValueError(
                f"timeout must be a number of seconds >= 0 or None, got {timeout}"
            )
        if self._callback is not None:
            # As one engine's: nothing ever queues here (a wait would last until close()).
            raise InvalidValueError(
                "this subscription passes its events to its callback; none queue here to get"
            )
        deadline = None if timeout is None else time.monotonic() + min(timeout, 1e9)
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            try:
                return self._queue.get(timeout=max(left, 0.0))
            except queue.Empty:
                # Closed, and the polling thread has handed over its last events (a callback
                # that closed it is that thread: it ends right after).
                done = self._stop.is_set() and (
                    not self._thread.is_alive()
                    or threading.current_thread() is self._thread
                    or time.monotonic() > self._closed_at + _CLEANUP_WAIT  # a shard hangs
                )
                if done or (deadline is not None and time.monotonic() >= deadline):
                    return None

    def drain(self) -> list[ShardedHit]:
        """Every queued event, without waiting."""
        out: list[ShardedHit] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stops the standing query on every shard (queued events can still be read). A
        callback may close its own subscription."""
        if self._stop.is_set():
            return
        self._closed_at = time.monotonic()
        self._stop.set()
        self._engine._standing.pop(self._key, None)
        for i, a in enumerate(self._engine._actors):
            try:
                ray.get(a.unsubscribe.remote(self._key), timeout=_CLEANUP_WAIT)
            except Exception:  # gone, hung, or Ray shut down: nothing more comes from it
                self.unavailable.add(i)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __iter__(self) -> Iterator[ShardedHit]:
        return self

    def __aiter__(self) -> ShardedSubscription:
        """``async for event in sub``: each step polls the queue from the event loop (every
        ``poll_interval`` s), holding no thread; it ends once the subscription is closed and
        its queue read."""
        return self

    async def __anext__(self) -> ShardedHit:
        if self._callback is not None:
            self.get(0)  # raises, as a blocking read does
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                if self._stop.is_set() and not self._thread.is_alive() and self._queue.empty():
                    raise StopAsyncIteration from None
            await asyncio.sleep(self._interval)

    def __next__(self) -> ShardedHit:
        hit = self.get()
        if hit is None:
            raise StopIteration
        return hit

    def __enter__(self) -> ShardedSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
