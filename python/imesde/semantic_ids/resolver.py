"""``UniqueIdResolver`` (unique ids through a store) and ``SemanticIdEngine`` (an encoder and a
resolver), as the ``semantic-id`` package names them."""

# ``X`` (capital) is the argument name semantic-id and scikit-learn users pass by keyword.
# ruff: noqa: N803

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from imesde._args import listed
from imesde._imesde import Labeler
from imesde.exceptions import ShapeError
from imesde.semantic_ids.rqkmeans import RQKMeans, _check_compat
from imesde.semantic_ids.stores import (
    CollisionStore,
    InMemoryCollisionStore,
    _str_list,
)

__all__ = ["SemanticIdEngine", "UniqueIdResolver"]


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
        item_ids: Iterable[Any] | None = None,
        sep: str = "-",
    ) -> list[str]:
        """Unique ids for ``semantic_ids``, in order. ``item_ids`` (one per id, compared as
        ``str(item)``) name the items the ids are for."""
        keys = _str_list(semantic_ids, "semantic_ids")
        owners = None
        if item_ids is not None:
            items = listed(item_ids, "item_ids")
            if len(items) != len(keys):
                raise ShapeError(f"{len(items)} item_ids for {len(keys)} semantic ids")
            owners = [str(item) for item in items]
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


class _Encoder(Protocol):
    """What ``SemanticIdEngine`` needs of its encoder (``RQKMeans`` has it)."""

    def fit(self, X: Any, *, device: str = ...) -> object: ...
    def encode(self, X: Any) -> Any: ...
    def semantic_id(
        self,
        codes: Any,
        *,
        sep: str = ...,
        fmt: Literal["plain", "token"] = ...,
        formatter: Callable[[npt.NDArray[np.int64]], str] | None = ...,
    ) -> list[str]: ...


_Engine = TypeVar("_Engine", bound="SemanticIdEngine")


class SemanticIdEngine:
    """An encoder plus a resolver: ``fit`` trains, ``unique_ids`` labels items.

    Args:
        encoder: A :class:`RQKMeans` (or anything with ``fit``, ``encode`` and
            ``semantic_id``).
        unique_resolver: Default: a :class:`UniqueIdResolver` over an in-memory store.
    """

    def __init__(self, encoder: _Encoder, unique_resolver: UniqueIdResolver | None = None):
        self.encoder = encoder
        self.unique_resolver = (
            unique_resolver if unique_resolver is not None else UniqueIdResolver()
        )

    def fit(self: _Engine, X: Any, *, device: str = "cpu") -> _Engine:
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
        item_ids: Iterable[Any] | None = None,
    ) -> list[str]:
        """Encode ``X``, format the codes and resolve collisions through the store."""
        _check_compat(device, batch_size)
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
        return (
            f"SemanticIdEngine(encoder={self.encoder!r}, unique_resolver={self.unique_resolver!r})"
        )
