"""``RQKMeans``: residual-quantisation k-means with the ``semantic-id`` package's API, over the
native ``RQCodebooks``."""

# ``X`` (capital) is the argument name semantic-id and scikit-learn users pass by keyword.
# ruff: noqa: N803

from __future__ import annotations

import numbers
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from imesde._args import choice, integer, positive
from imesde._imesde import IdStore, Labeler, RQCodebooks, rq_codebook_usage, rq_collision_rate
from imesde.exceptions import (
    DTypeError,
    IndexCorruptError,
    InvalidValueError,
    OutOfRangeError,
    ShapeError,
)
from imesde.semantic_ids.format import _codes, codes_to_ids

__all__ = ["RQKMeans"]

#: A file path, as ``RQCodebooks.save`` / ``load`` take it.
_FilePath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
#: ``RQKMeans`` or a subclass: what ``fit`` and ``load`` give back.
_Model = TypeVar("_Model", bound="RQKMeans")

#: The most levels a model has (each a codebook, each trained in turn): beyond any use.
MAX_LEVELS = 256
#: The most codewords a level has (a code is a u32).
MAX_CLUSTERS = 2**32 - 1
#: The most rounds of joint refinement (each re-encodes the training set and updates every
#: codebook; a few are what helps).
MAX_REFINE = 100


def _matrix(x: Any, what: str = "X") -> npt.NDArray[np.float32]:
    """``x`` as a C-contiguous float32 ``(n, dim)`` array (lists and float64 are converted, as
    in ``semantic-id``)."""
    try:
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise DTypeError(f"{what} must be an array of numbers: {e}") from None
    if arr.ndim != 2:
        raise ShapeError(f"{what} must be 2-D (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"{what} is empty (shape {arr.shape})")
    return arr


def _is_int(x: object) -> bool:
    """An integer: ``int`` or a numpy integer scalar (not a bool, not an array)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_compat(device: str, batch_size: int | None = None) -> None:
    """``device`` and ``batch_size`` as ``semantic-id`` takes them: imesde runs on the CPU, and
    chunks on its own (a ``batch_size`` is checked, then not needed)."""
    if isinstance(device, str) and device != "cpu":
        raise InvalidValueError(f"imesde runs RQ-KMeans on the CPU; got device={device!r}")
    choice(device, "device", ("cpu",))
    if batch_size is not None:
        positive(batch_size, "batch_size")


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
            for a plain model, 1 for a balanced one (every round lowers a plain model's error;
            a balanced model's rounds add a few collisions, and the rebalancing after each can
            raise its error, as on data with many repeated rows).
        beam_width: Default beam width of :meth:`encode` (1 is greedy).
    """

    def __init__(
        self,
        n_levels: int = 4,
        n_clusters: int | Sequence[int] | npt.NDArray[np.integer[Any]] = 256,
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
        n_levels = positive(n_levels, "n_levels")
        # Checked before anything is made of it (a list of 2**40 sizes).
        if n_levels > MAX_LEVELS:
            raise InvalidValueError(f"n_levels must be at most {MAX_LEVELS}, got {n_levels}")
        if _is_int(n_clusters):
            ks = [positive(n_clusters, "n_clusters")] * n_levels
        elif (
            isinstance(n_clusters, str | bytes)
            or not isinstance(n_clusters, Iterable)
            or np.ndim(n_clusters) == 0
        ):
            raise DTypeError(
                f"n_clusters must be an int or a list of ints, got {type(n_clusters).__name__}"
            )
        else:
            ks = [positive(k, "every n_clusters") for k in n_clusters]
            if len(ks) != n_levels:
                raise InvalidValueError(f"len(n_clusters) is {len(ks)} but n_levels is {n_levels}")
        # Codes are u32 (and no training set holds more points than a u32 counts anyway).
        if max(ks) > MAX_CLUSTERS:
            raise InvalidValueError(f"n_clusters must be at most {MAX_CLUSTERS}, got {max(ks)}")
        choice(init, "init", ("random", "k-means++"))
        beam_width = positive(beam_width, "beam_width")
        if refine is not None and not 0 <= integer(refine, "refine") <= MAX_REFINE:
            raise InvalidValueError(f"refine must be from 0 to {MAX_REFINE}, got {refine}")
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
            raise InvalidValueError("this RQKMeans is not fitted yet: call fit(X) or RQKMeans.load")
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

    def fit(
        self: _Model, X: Any, *, device: str = "cpu", show_progress_bar: bool | None = None
    ) -> _Model:
        """Train the codebooks on ``X`` ``(n, dim)``; returns ``self``.

        ``device`` exists for ``semantic-id`` compatibility; only ``"cpu"`` is supported.
        ``show_progress_bar``: a tqdm bar over the k-means iterations of all levels (None:
        when stderr is a terminal and ``X`` has at least 10,000 rows).
        """
        _check_compat(device)
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
            show_progress_bar=show_progress_bar,
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
        for ``semantic-id`` compatibility (encoding is already parallel and chunked), and
        checked as ``fit`` checks them: ``"cpu"`` only, a positive int or None.
        """
        _check_compat(device, batch_size)
        beam = self.beam_width if beam_width is None else positive(beam_width, "beam_width")
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

    def save(self, path: _FilePath) -> None:
        """Write the codebooks to one file (versioned, checksummed, written atomically). The
        file holds the model, not the encoder's settings: give ``beam_width`` to
        :meth:`load` again (pickling keeps it)."""
        self._fitted().save(path)

    @classmethod
    def load(cls: type[_Model], path: _FilePath, *, beam_width: int = 1) -> _Model:
        """Read codebooks written by :meth:`save`; a damaged file raises
        ``IndexCorruptError``. With the ``beam_width`` the saved model had, the codes are the
        same as before saving, on any machine."""
        books = RQCodebooks.load(path)
        if len(books.n_clusters) > MAX_LEVELS:
            raise IndexCorruptError(
                f"{os.fsdecode(path)}: {len(books.n_clusters)} levels, more than imesde writes "
                f"({MAX_LEVELS})"
            )
        model = cls(len(books.n_clusters), books.n_clusters, beam_width=beam_width)
        model.balanced = any(b.size for b in books.biases)
        model._books = books
        return model

    def __repr__(self) -> str:
        state = f"dim={self.D_}" if self.is_fitted else "not fitted"
        return (
            f"RQKMeans(n_levels={self.n_levels}, n_clusters={self.n_clusters}, "
            f"balanced={self.balanced}, {state})"
        )
