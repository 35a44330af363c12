from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from helpers import unit


def test_cosine_similarity_shapes_and_values(rng: np.random.Generator) -> None:
    a = rng.standard_normal((5, 33), dtype=np.float32)
    b = rng.standard_normal((7, 33), dtype=np.float32)
    m = imesde.cosine_similarity(a, b)
    assert m.shape == (5, 7)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, unit(a) @ unit(b).T, rtol=1e-5, atol=1e-6)
    one = imesde.cosine_similarity(a[0], b[0])
    assert isinstance(one, float)
    assert one == pytest.approx(float(unit(a[0]) @ unit(b[0])), abs=1e-6)
    np.testing.assert_allclose(
        imesde.batch_cosine_similarity(a[0], b), unit(b) @ unit(a[0]), rtol=1e-5, atol=1e-6
    )


def test_distances(rng: np.random.Generator) -> None:
    a = rng.standard_normal((4, 10), dtype=np.float32)
    b = rng.standard_normal((6, 10), dtype=np.float32)
    diff = a[:, None, :] - b[None, :, :]
    np.testing.assert_allclose(
        imesde.euclidean_distance(a, b), np.sqrt((diff**2).sum(-1)), rtol=1e-5
    )
    np.testing.assert_allclose(imesde.manhattan_distance(a, b), np.abs(diff).sum(-1), rtol=1e-5)
    assert imesde.euclidean_distance(a[0], a[0]) == 0.0
    assert imesde.manhattan_distance(a[0], b[0]) == pytest.approx(
        float(np.abs(a[0] - b[0]).sum()), rel=1e-5
    )


def test_normalize_l2(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 9), dtype=np.float32)
    np.testing.assert_allclose(imesde.normalize_l2(x), unit(x), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(imesde.normalize_l2(x[0])), 1.0, rtol=1e-6)
    with pytest.raises(imesde.InvalidValueError, match="all zeros"):
        imesde.normalize_l2(np.zeros((2, 3), np.float32))


def test_top_k(rng: np.random.Generator) -> None:
    s = rng.standard_normal(1000).astype(np.float32)
    val, idx = imesde.top_k(s, 10)
    want = np.argsort(-s, kind="stable")[:10]
    assert idx.tolist() == want.tolist()
    np.testing.assert_array_equal(val, s[want])
    _, idx2 = imesde.top_k(np.stack([s, -s]), 3)
    assert idx2.shape == (2, 3)
    assert idx2[1].tolist() == np.argsort(s, kind="stable")[:3].tolist()
    assert imesde.top_k(np.array([1.0, 1.0, 0.5], np.float32), 5)[1].tolist() == [0, 1, 2]
    with pytest.raises(imesde.InvalidValueError):
        imesde.top_k(np.array([1.0, np.nan], np.float32), 1)
    with pytest.raises(imesde.InvalidValueError):
        imesde.top_k(s, 0)


def test_helper_input_errors() -> None:
    with pytest.raises(imesde.DimensionMismatchError):
        imesde.cosine_similarity(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(imesde.DTypeError):
        imesde.euclidean_distance(np.ones(3), np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        imesde.cosine_similarity(np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(imesde.ShapeError):
        imesde.batch_cosine_similarity(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


_FIT = """
import sys
import imesde
import numpy as np
x = np.load(sys.argv[1])
model = imesde.RQKMeans(3, 16, balanced=True, random_state=7).fit(x)
np.save(sys.argv[2], np.concatenate([c.ravel() for c in model.codebooks_]))
print(imesde.simd_backend())
"""


def test_imesde_simd_caps_every_kernel_and_names_no_backend_loudly(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """``IMESDE_SIMD`` caps RQ-KMeans's kernels too (whose codebooks are the same at every
    width, as documented), and a value that names no backend says so instead of being
    silently ignored."""
    np.save(tmp_path / "x.npy", unit(rng.standard_normal((3000, 40)).astype(np.float32)))

    def fit(simd: str | None) -> tuple[str, str, npt.NDArray[np.float32]]:
        env = {k: v for k, v in os.environ.items() if k != "IMESDE_SIMD"}
        if simd is not None:
            env["IMESDE_SIMD"] = simd
        out = tmp_path / f"{simd}.npy"
        done = subprocess.run(
            [sys.executable, "-c", _FIT, str(tmp_path / "x.npy"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return done.stdout.strip(), done.stderr, np.load(out)

    native, quiet, books = fit(None)
    assert "IMESDE_SIMD" not in quiet
    for cap in ("scalar", "avx2"):
        backend, _, capped = fit(cap)
        if cap == "scalar" or native.startswith("avx"):
            assert backend == cap
        assert np.array_equal(capped, books)
    backend, warned, _ = fit("avx1024")
    assert backend == native
    assert 'IMESDE_SIMD="avx1024" names no backend' in warned
