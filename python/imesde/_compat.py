"""``PyImesde``: the constructor and methods of the original imesde, on the new engine."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from imesde._imesde import Engine, TextEmbedder


class PyImesde:
    """Drop-in for ``imesde.PyImesde`` of imesde <= 0.5.

    ``PyImesde(model_path, tokenizer_path)`` takes the ``model.onnx`` and ``tokenizer.json``
    files; ``search(query, k)`` returns ``(text, score)`` pairs, best first. The engine underneath
    is :attr:`engine` (an :class:`imesde.Engine`) for everything the old API did not have.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        num_shards: int = 16,
        shard_size: int = 1024,
    ) -> None:
        self.engine = Engine(
            TextEmbedder(model_path, tokenizer_path), num_shards=num_shards, shard_size=shard_size
        )

    def ingest(self, text: str) -> int:
        """Embeds and stores one text; returns its id."""
        return self.engine.ingest(text)

    def ingest_batch(self, texts: Sequence[str]) -> list[int]:
        """Embeds and stores texts; returns their ids."""
        return [int(i) for i in self.engine.ingest_batch(texts)]

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` stored texts closest in meaning to ``query``, as ``(text, score)``."""
        return [(h.text or "", h.score) for h in self.engine.search(query, k)]

    def embed_query(self, text: str) -> list[float]:
        """The unit vector of ``text`` as a query (with the model's query prompt, if it has
        one: the vector ``search`` compares)."""
        model = self._model()
        prompt = "query" if "query" in model.prompts else None
        return [float(x) for x in model.embed_one(text, prompt)]

    def ingest_raw(self, vector: Sequence[float] | npt.ArrayLike, text: str) -> int:
        """Stores a precomputed vector with its text; returns its id."""
        v = np.ascontiguousarray(vector, dtype=np.float32)
        return int(self.engine.ingest_vectors(v, [text])[0])

    def ingest_batch_raw(
        self, vectors: Sequence[Sequence[float]] | npt.ArrayLike, texts: Sequence[str]
    ) -> list[int]:
        """Stores precomputed vectors with their texts; returns their ids."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        return [int(i) for i in self.engine.ingest_vectors(v, texts)]

    def search_raw(
        self, query_vector: Sequence[float] | npt.ArrayLike, k: int
    ) -> list[tuple[str, float]]:
        """Like :meth:`search` for a precomputed query vector."""
        q = np.ascontiguousarray(query_vector, dtype=np.float32)
        return [(h.text or "", h.score) for h in self.engine.search_vector(q, k)]

    def __len__(self) -> int:
        return len(self.engine)

    def _model(self) -> TextEmbedder:
        model = self.engine.model
        assert model is not None  # always built with one
        return model
