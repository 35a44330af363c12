from __future__ import annotations

import gzip
import json

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from helpers import DATA

# Fixtures that read DATA: their tests get the `data` marker, so a checkout without
# ../shared (the wheel workflow on GitHub) can deselect them with -m "not data".
DATA_FIXTURES = {"golden", "stream", "debtags", "embedded"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def golden() -> tuple[list[str], npt.NDArray[np.float32]]:
    """406 real texts and their all-MiniLM-L6-v2 embeddings (sentence-transformers, fp32)."""
    texts = [
        json.loads(line)["text"]
        for line in (DATA / "golden_texts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    vectors = np.load(DATA / "golden_minilm_l6_st.npy")
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(texts), 384)
    return texts, vectors


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def embedder() -> imesde.TextEmbedder:
    """The default model (all-MiniLM-L6-v2 in this CPU class's default build), shared by the
    tests that only read from it."""
    return imesde.TextEmbedder(threads=2)


@pytest.fixture(scope="session")
def stream() -> list[dict[str, str]]:
    """The first 3,000 items of the real Debian changelog stream, in time order."""
    items = []
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            items.append(json.loads(line))
            if len(items) == 3000:
                break
    return items


@pytest.fixture(scope="session")
def embedded(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The distinct texts of ``stream`` and their embeddings by the default model."""
    texts = list(dict.fromkeys(item["text"] for item in stream))
    return texts, embedder.embed(texts)
