"""Backfills: a ``ray.data.Dataset`` of texts embedded by a pool of model actors."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from imesde._args import positive
from imesde.exceptions import DTypeError, InvalidValueError, ShapeError


class _Embedder:
    """One model per actor; called by Ray Data with a batch of rows as numpy columns."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None,
        tokenizer: str | os.PathLike[str] | None,
        threads: int,
        column: str,
        output_column: str,
        kwargs: dict[str, Any],
    ) -> None:
        from imesde import TextEmbedder

        self.embedder = TextEmbedder(model, tokenizer, threads=threads, **kwargs)
        self.column = column
        self.output_column = output_column

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        if self.column not in batch:
            raise ShapeError(f"the dataset has no column {self.column!r}")
        texts = batch[self.column].tolist()
        # Each cell is the text itself: a cell of another type (None, bytes, a list) is an
        # error, never the embedding of its repr.
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DTypeError(
                    f"column {self.column!r} must hold str, got {type(t).__name__} in row {i} "
                    "of a batch"
                )
        batch[self.output_column] = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        return batch


def _default_cpus(actors: int) -> float:
    """CPUs per actor when the caller names none: the cluster's CPUs but one (for the tasks
    upstream), shared by the ``actors``, and no more than the largest live node has."""
    total = float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    largest = max(nodes, default=total)
    return min(max(total - 1, 0.0) / actors, largest)


def embed(
    dataset: ray.data.Dataset,
    column: str = "text",
    model: str | os.PathLike[str] | None = None,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    concurrency: int | None = None,
    num_cpus: float | None = None,
    output_column: str = "embedding",
    **embedder_kwargs: Any,
) -> ray.data.Dataset:
    """``dataset`` with an ``output_column`` of float32 vectors: the texts of ``column``
    embedded by ``concurrency`` actors, each loading the model once (``model``, ``tokenizer``
    and ``embedder_kwargs`` as for ``imesde.TextEmbedder``; None is the default model).

    Each actor reserves ``num_cpus`` CPUs and runs ONNX Runtime on as many threads (at least
    one). By default ``concurrency`` is 1 and the actors share the cluster's CPUs but one,
    which stays free for the tasks that read and prepare the dataset upstream (actors holding
    every CPU would leave them none, and the job would wait for ever); an actor never asks for
    more CPUs than the largest node has. Lazy, like every Ray Data transform: the work runs
    when the dataset is consumed (``take``, ``write_parquet``, ``iter_batches``...). The
    vectors are those ``TextEmbedder.embed`` gives for the same texts.
    """
    batch_size = positive(batch_size, "batch_size")
    actors = 1 if concurrency is None else positive(concurrency, "concurrency")
    if num_cpus is None:
        num_cpus = _default_cpus(actors)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float):
        raise DTypeError(f"num_cpus must be a number, got {type(num_cpus).__name__}")
    if not 0 <= num_cpus < float("inf"):
        raise InvalidValueError(f"num_cpus must be a number of CPUs >= 0, got {num_cpus}")
    threads = max(1, int(num_cpus))
    # A column the dataset is known (without reading it) not to have: said now, not as Ray's
    # wrapper of the error on the first batch once the dataset is consumed.
    schema = dataset.schema(fetch_if_missing=False)
    if schema is not None and column not in schema.names:
        raise ShapeError(f"the dataset has no column {column!r} (its columns: {schema.names})")
    return dataset.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "tokenizer": tokenizer,
            "threads": threads,
            "column": column,
            "output_column": output_column,
            "kwargs": embedder_kwargs,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
    )
