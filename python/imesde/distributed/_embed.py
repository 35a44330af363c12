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


def embed(
    dataset: ray.data.Dataset,
    column: str = "text",
    model: str | os.PathLike[str] | None = None,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    concurrency: int | None = None,
    num_cpus: int | None = None,
    output_column: str = "embedding",
    **embedder_kwargs: Any,
) -> ray.data.Dataset:
    """``dataset`` with an ``output_column`` of float32 vectors: the texts of ``column``
    embedded by ``concurrency`` actors, each loading the model once (``model``, ``tokenizer``
    and ``embedder_kwargs`` as for ``imesde.TextEmbedder``; None is the default model).

    Each actor reserves ``num_cpus`` CPUs and runs ONNX Runtime on as many threads, so that
    actors x threads is what Ray was given: by default ``concurrency`` is 1 and ``num_cpus``
    the cluster's CPUs divided by ``concurrency``. Lazy, like every Ray Data transform: the
    work runs when the dataset is consumed (``take``, ``write_parquet``, ``iter_batches``...).
    The vectors are those ``TextEmbedder.embed`` gives for the same texts.
    """
    batch_size = positive(batch_size, "batch_size")
    actors = 1 if concurrency is None else positive(concurrency, "concurrency")
    if num_cpus is None:
        total = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        num_cpus = max(1, total // actors)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float):
        raise DTypeError(f"num_cpus must be a number, got {type(num_cpus).__name__}")
    if not num_cpus >= 1:
        raise InvalidValueError(f"num_cpus must be at least 1, got {num_cpus}")
    return dataset.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "tokenizer": tokenizer,
            "threads": num_cpus,
            "column": column,
            "output_column": output_column,
            "kwargs": embedder_kwargs,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=num_cpus,
    )
