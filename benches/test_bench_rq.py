"""Semantic IDs: imesde's RQ-KMeans against faiss's ResidualQuantizer and semantic-id 0.2.5,
fit and encode, one group per data set, configuration and step.

Data: the all-MiniLM-L6-v2 embeddings (the packaged int8 file) of 20,000 distinct texts of the
changelog stream, evenly spaced over it (cached in benches/.cache after the first run), and
100,000 x 384 standard Gaussian vectors (seed 0). A smoke run fits on 1,000 of the stream
vectors only, faiss with beam 5 in the 16-64-256 configuration only (it takes seconds even
there), and faiss's OpenMP on one thread.
Configurations: L=3 and L=4 levels of K=256, and K=[16, 64, 256]. Every model trains on the
whole set and is scored on it.

Contenders: faiss-cpu's ``ResidualQuantizer`` with beam 1 (the anchor: greedy, as imesde
encodes by default) and with its default beam 5 (it trains and encodes with the beam);
semantic-id's ``RQKMeans`` (scikit-learn k-means, its defaults: n_init=10, max_iter=100; on the
stream set only, as it takes many minutes per configuration on the Gaussian one, and not in a
smoke run, where it would still take a minute); imesde's plain model, the plain model encoding
with beam 5 (``beam_width=5``: the same fit, timed again) and the balanced model. faiss and
semantic-id are skipped when not installed (``make bench-rq`` installs both).

Group "fit": one fit per contender (the anchors take up to minutes). The fitted model then
encodes the set once, untimed, and its report (``extra_info``) records the reconstruction MSE
per vector, the share of items whose code another item also has (collisions) and the lowest
per-level usage entropy divided by ln K; every model must reconstruct better than the set's
mean does (MSE below the total variance), with codes in range, and the balanced model must use
its codewords evenly (entropy at least 0.98). Group "encode": three timed encodings of the
whole set by the fitted model (vectors per second in ``extra_info``), each equal to the codes
the fit step scored.

``-k`` selects in place of the script's options (``-k "stream and not semantic"``: minutes,
not an hour); semantic-id on the Gaussian set (its ``--semantic-id-gaussian``) is not offered.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

# semantic-id fits for minutes on the stream set.
pytestmark = pytest.mark.timeout(1800)

F32 = npt.NDArray[np.float32]
Codes = npt.NDArray[np.int64]

CONFIGS = {"256x3": [256] * 3, "256x4": [256] * 4, "16-64-256": [16, 64, 256]}
CONTENDERS = [
    "faiss RQ beam 1 (anchor)",
    "faiss RQ beam 5 (default)",
    "semantic-id 0.2.5",
    "imesde",
    "imesde beam 5",
    "imesde balanced",
]


class Method:
    """One contender: how it fits, encodes (the timed call), and turns what ``encode``
    returns into int64 codes and reconstructions."""

    def __init__(self, contender: str, ks: list[int], smoke: bool) -> None:
        self.contender, self.ks, self.smoke = contender, ks, smoke

    def fit(self, x: F32) -> Any:
        raise NotImplementedError

    def encode(self, model: Any, x: F32) -> Any:
        raise NotImplementedError

    def codes(self, model: Any, encoded: Any) -> tuple[Codes, F32]:
        raise NotImplementedError


class Imesde(Method):
    def fit(self, x: F32) -> imesde.RQKMeans:
        balanced = self.contender.endswith("balanced")
        beam = 5 if "beam 5" in self.contender else 1
        model = imesde.RQKMeans(
            len(self.ks), self.ks, balanced=balanced, random_state=0, beam_width=beam
        )
        return model.fit(x)

    def encode(self, model: imesde.RQKMeans, x: F32) -> Any:
        return model.encode(x)

    def codes(self, model: imesde.RQKMeans, encoded: Any) -> tuple[Codes, F32]:
        return encoded.astype(np.int64), model.decode(encoded)


class Faiss(Method):
    def fit(self, x: F32) -> Any:
        faiss = pytest.importorskip("faiss")
        if self.smoke:
            # Nothing is timed; OpenMP threads that spin on a busy 2-vCPU machine are not.
            faiss.omp_set_num_threads(1)
        bits = faiss.UInt64Vector()  # faiss 1.15 wants its own vector type here, not a list
        for k in self.ks:
            bits.push_back(int(np.log2(k)))
        rq = faiss.ResidualQuantizer(x.shape[1], bits)
        rq.max_beam_size = 5 if "beam 5" in self.contender else 1
        rq.train(x)
        return rq

    def encode(self, model: Any, x: F32) -> Any:
        return model.compute_codes(x)

    def codes(self, model: Any, encoded: Any) -> tuple[Codes, F32]:
        # Unpack the bit-packed codes (levels of log2 K bits each, LSB first).
        unpacked = np.unpackbits(encoded, axis=1, bitorder="little")
        codes = np.zeros((len(encoded), len(self.ks)), dtype=np.int64)
        off = 0
        for lvl, k in enumerate(self.ks):
            nb = int(np.log2(k))
            codes[:, lvl] = unpacked[:, off : off + nb].astype(np.int64) @ (1 << np.arange(nb))
            off += nb
        return codes, model.decode(encoded)


class SemanticId(Method):
    def fit(self, x: F32) -> Any:
        rq_kmeans = pytest.importorskip("semantic_id").RQKMeans
        warnings.filterwarnings("ignore")
        model = rq_kmeans(n_levels=len(self.ks), n_clusters=self.ks, random_state=0)
        model.fit(x)
        return model

    def encode(self, model: Any, x: F32) -> Any:
        return model.encode(x)

    def codes(self, model: Any, encoded: Any) -> tuple[Codes, F32]:
        codes = np.asarray(encoded).astype(np.int64)
        return codes, np.asarray(model.decode(codes)).astype(np.float32)


def method(contender: str, ks: list[int], smoke: bool) -> Method:
    if contender.startswith("faiss"):
        return Faiss(contender, ks, smoke)
    if contender.startswith("semantic-id"):
        return SemanticId(contender, ks, smoke)
    return Imesde(contender, ks, smoke)


@dataclass
class Fitted:
    model: Any
    codes: Codes


class Sets:
    """The data sets by name, and each contender's fitted model once fitted."""

    def __init__(self, stream: F32, smoke: bool) -> None:
        self.data = {"stream": stream[::2].copy() if smoke else stream}
        if not smoke:
            rng = np.random.default_rng(0)
            self.data["gaussian"] = rng.standard_normal((100_000, 384)).astype(np.float32)
        self.smoke = smoke
        self.fitted: dict[tuple[str, str, str], Fitted] = {}

    def label(self, data: str) -> str:
        n = len(self.data[data])
        return f"{data} {n // 1000}k" + (" (MiniLM)" if data == "stream" else "")

    def skip_if_too_slow(self, data: str, config: str, contender: str) -> None:
        if data not in self.data:
            pytest.skip("the Gaussian set: full runs only (the smoke run checks the stream set)")
        if self.smoke and contender.startswith("faiss RQ beam 5") and config != "16-64-256":
            pytest.skip("faiss with beam 5 takes seconds: smoke-run on 16-64-256 only")
        if not contender.startswith("semantic-id"):
            return
        if self.smoke:
            pytest.skip("semantic-id fits for a minute even on the smoke set: full runs only")
        if data == "gaussian":
            pytest.skip("semantic-id takes many minutes per configuration on the Gaussian set")


@pytest.fixture(scope="module")
def sets(stream_vectors: F32, smoke: bool) -> Sets:
    return Sets(stream_vectors, smoke)


def metrics(x: F32, codes: Codes, rec: F32, ks: list[int]) -> dict[str, float]:
    usage = imesde.RQKMeans(len(ks), ks).codebook_usage(codes)
    return {
        "mse": float(np.mean(np.sum((x.astype(np.float64) - rec) ** 2, axis=1))),
        "collisions": imesde.RQKMeans.collision_rate(codes),
        "entropy": min(u["entropy"] for u in usage),
    }


PARAMS = pytest.mark.parametrize("contender", CONTENDERS)
CONFIG = pytest.mark.parametrize("config", list(CONFIGS))
DATA = pytest.mark.parametrize("data", ["stream", "gaussian"])


@PARAMS
@CONFIG
@DATA
def test_fit(benchmark: Any, sets: Sets, data: str, config: str, contender: str) -> None:
    sets.skip_if_too_slow(data, config, contender)
    x, ks = sets.data[data], CONFIGS[config]
    benchmark.group = f"fit: {sets.label(data)}, {config}"
    m = method(contender, ks, sets.smoke)
    model = benchmark.pedantic(m.fit, args=(x,), rounds=1)
    codes, rec = m.codes(model, m.encode(model, x))
    sets.fitted[data, config, contender] = Fitted(model, codes)
    scores = metrics(x, codes, rec, ks)
    benchmark.extra_info.update(scores)
    assert codes.shape == (len(x), len(ks))
    assert (codes >= 0).all()
    assert (codes < np.asarray(ks)).all()
    total_variance = float(np.sum(np.var(x.astype(np.float64), axis=0)))
    assert scores["mse"] < total_variance
    assert 0.0 <= scores["collisions"] <= 1.0
    if contender.endswith("balanced"):
        assert scores["entropy"] >= 0.98


@PARAMS
@CONFIG
@DATA
def test_encode(benchmark: Any, sets: Sets, data: str, config: str, contender: str) -> None:
    sets.skip_if_too_slow(data, config, contender)
    x, ks = sets.data[data], CONFIGS[config]
    benchmark.group = f"encode: {sets.label(data)}, {config}"
    m = method(contender, ks, sets.smoke)
    fitted = sets.fitted.get((data, config, contender))
    if fitted is None:  # the fit step was not selected
        model = m.fit(x)
        fitted = Fitted(model, m.codes(model, m.encode(model, x))[0])
    encoded = benchmark.pedantic(m.encode, args=(fitted.model, x), rounds=3)
    if benchmark.enabled:
        benchmark.extra_info["vectors/s"] = len(x) / benchmark.stats.stats.median
    np.testing.assert_array_equal(m.codes(fitted.model, encoded)[0], fitted.codes)
