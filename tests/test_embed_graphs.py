"""Other graph shapes than the default model's: a graph that pools itself, int32 token inputs,
no token_type_ids. Tiny models are built with the ``onnx`` package and run by the real ONNX
Runtime; the expected vectors come from the same token ids in numpy."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

onnx = pytest.importorskip("onnx")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.model

VOCAB, DIM = 30522, 8
TEXTS = ["kernel panic on boot", "fix memory leak", "a much longer text about the scheduler"]


def table() -> npt.NDArray[np.float32]:
    return np.random.default_rng(7).standard_normal((VOCAB, DIM)).astype(np.float32)


def build(path: Path, *, pooled: bool, int32: bool, token_types: bool) -> Path:
    h = onnx.helper
    ty = onnx.TensorProto.INT32 if int32 else onnx.TensorProto.INT64
    inputs = [
        h.make_tensor_value_info("input_ids", ty, ["batch", "seq"]),
        h.make_tensor_value_info("attention_mask", ty, ["batch", "seq"]),
    ]
    if token_types:
        inputs.append(h.make_tensor_value_info("token_type_ids", ty, ["batch", "seq"]))
    nodes = [h.make_node("Gather", ["E", "input_ids"], ["states"])]
    if pooled:
        # A graph that pools itself: the mean over all positions (padding included, so imesde
        # must not pool again: its mask-aware mean would differ).
        nodes.append(
            h.make_node("ReduceMean", ["states", "axes"], ["sentence_embedding"], keepdims=0)
        )
        out = h.make_tensor_value_info("sentence_embedding", onnx.TensorProto.FLOAT, ["batch", DIM])
    else:
        nodes.append(h.make_node("Identity", ["states"], ["last_hidden_state"]))
        out = h.make_tensor_value_info(
            "last_hidden_state", onnx.TensorProto.FLOAT, ["batch", "seq", DIM]
        )
    inits = [
        onnx.numpy_helper.from_array(table(), "E"),
        onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    ]
    graph = h.make_graph(nodes, "tiny", inputs, [out], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def token_ids(tokenizer_path: str, texts: list[str]) -> list[list[int]]:
    tok = tokenizers.Tokenizer.from_file(tokenizer_path)
    tok.no_padding()
    tok.enable_truncation(256)
    return [e.ids for e in tok.encode_batch(texts)]


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out


def sentence_model(
    folder: Path,
    tokenizer: str,
    nodes: list[Any],
    outputs: list[Any],
    inits: list[Any],
    batch: int | str = "batch",
) -> Path:
    """A model folder: a graph over int64 ``input_ids`` and ``attention_mask`` of ``[batch,
    seq]`` with ``nodes`` and ``outputs`` (initializers ``inits``), and ``tokenizer``."""
    h = onnx.helper
    inputs = [
        h.make_tensor_value_info(n, onnx.TensorProto.INT64, [batch, "seq"])
        for n in ("input_ids", "attention_mask")
    ]
    graph = h.make_graph(nodes, folder.name, inputs, outputs, initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy(tokenizer, folder / "tokenizer.json")
    return folder


def test_token_states_with_int32_inputs(tmp_path: Path, embedder: imesde.TextEmbedder) -> None:
    path = build(tmp_path / "hidden.onnx", pooled=False, int32=True, token_types=True)
    model = imesde.TextEmbedder(path, embedder.tokenizer_path, threads=1)
    assert model.dim == DIM
    got = model.embed(TEXTS)
    e = table()
    want = np.stack(
        [unit(e[ids].mean(axis=0)) for ids in token_ids(embedder.tokenizer_path, TEXTS)]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    cls = imesde.TextEmbedder(path, embedder.tokenizer_path, threads=1, pooling="cls")
    np.testing.assert_allclose(cls.embed(TEXTS), unit(e[np.full(3, 101)]), atol=1e-5)


def test_a_graph_that_pools_itself(tmp_path: Path, embedder: imesde.TextEmbedder) -> None:
    path = build(tmp_path / "pooled.onnx", pooled=True, int32=False, token_types=False)
    model = imesde.TextEmbedder(path, embedder.tokenizer_path, threads=1, batch_size=8)
    e = table()
    ids = token_ids(embedder.tokenizer_path, TEXTS)
    # All three texts share one sub-batch, padded to the longest with id 0.
    seq = max(len(i) for i in ids)
    want = np.stack([unit(e[i + [0] * (seq - len(i))].mean(axis=0)) for i in ids])
    np.testing.assert_allclose(model.embed(TEXTS), want, atol=1e-5)


def test_a_graph_without_the_inputs_of_a_sentence_model(tmp_path: Path) -> None:
    h = onnx.helper
    x = h.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, [1, 3])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = h.make_graph([h.make_node("Identity", ["pixels"], ["y"])], "g", [x], [y])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "model.onnx"))
    (tmp_path / "tokenizer.json").symlink_to(imesde.TextEmbedder().tokenizer_path)
    with pytest.raises(imesde.ModelLoadError, match="pixels"):
        imesde.TextEmbedder(tmp_path)


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def st_folder(folder: Path, tokenizer: str, *, pooling: dict[str, bool]) -> Path:
    """A sentence-transformers folder as the hub has it, with its export in ``onnx/``: a
    graph of token states, ``pooling`` in ``1_Pooling``, no Normalize module, 4 tokens."""
    (folder / "onnx").mkdir(parents=True)
    build(folder / "onnx" / "model.onnx", pooled=False, int32=False, token_types=True)
    shutil.copy(tokenizer, folder / "tokenizer.json")
    write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": DIM, **pooling})
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 4})
    write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ],
    )
    return folder


def test_an_export_in_a_sentence_transformers_folder_is_used_as_the_folder_says(
    tmp_path: Path, embedder: imesde.TextEmbedder
) -> None:
    """Pooling, normalisation and length come from the folder around an ONNX export, as
    sentence-transformers reads them (a CLS-pooled model mean-pooled is another model);
    what the caller passes still wins, and a pooling mode imesde lacks is refused."""
    cls = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    folder = st_folder(tmp_path / "st", embedder.tokenizer_path, pooling=cls)
    model = imesde.TextEmbedder(folder, threads=1)
    assert (model.pooling, model.normalize, model.max_length) == ("cls", False, 4)
    e = table()
    np.testing.assert_allclose(model.embed(TEXTS), e[np.full(3, 101)], atol=1e-6)
    chosen = imesde.TextEmbedder(folder, threads=1, pooling="mean", normalize=True, max_length=256)
    want = [unit(e[ids].mean(axis=0)) for ids in token_ids(embedder.tokenizer_path, TEXTS)]
    np.testing.assert_allclose(chosen.embed(TEXTS), np.stack(want), atol=1e-5)
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode_max_tokens": True})
    with pytest.raises(imesde.ModelLoadError, match="max_tokens"):
        imesde.TextEmbedder(folder, threads=1)
    assert imesde.TextEmbedder(folder, threads=1, pooling="cls").pooling == "cls"
    # "false" as a string is not a flag (it was true: CLS pooling, silently).
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode_cls_token": "false"})
    with pytest.raises(imesde.ModelLoadError, match="true or false"):
        imesde.TextEmbedder(folder, threads=1)
    # Two modes are concatenated by sentence-transformers (twice the width): they were
    # silently one of them (mean+max as mean, cls+mean as cls).
    for two in (
        {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
        cls | {"pooling_mode_mean_tokens": True},
    ):
        write_json(folder / "1_Pooling" / "config.json", two)
        with pytest.raises(imesde.ModelLoadError, match=r"\+"):
            imesde.TextEmbedder(folder, threads=1)
    write_json(folder / "1_Pooling" / "config.json", cls)
    # do_lower_case: sentence-transformers lowercases before a tokenizer that may not (it
    # was ignored: other tokens); fine when the tokenizer lowercases itself, as this one does.
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 4, "do_lower_case": True})
    assert imesde.TextEmbedder(folder, threads=1).pooling == "cls"
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["lowercase"] = False
    write_json(folder / "tokenizer.json", spec)
    with pytest.raises(imesde.ModelLoadError, match="do_lower_case"):
        imesde.TextEmbedder(folder, threads=1)
    # The tokenizer loaded decides, whatever its size (a large vocabulary's file is past what a
    # settings file may hold) or place (a cased one passed for a folder whose own lowercases).
    cased = tmp_path / "cased.json"
    write_json(cased, spec)
    spec["normalizer"]["lowercase"] = True
    text = json.dumps(spec) + " " * (2 << 20)
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    assert imesde.TextEmbedder(folder, threads=1).pooling == "cls"
    with pytest.raises(imesde.ModelLoadError, match="do_lower_case"):
        imesde.TextEmbedder(folder, tokenizer_path=cased, threads=1)
    # A model in a plain subfolder is not governed by the settings of a folder above it.
    nested = tmp_path / "proj" / "m"
    nested.mkdir(parents=True)
    build(nested / "model.onnx", pooled=False, int32=False, token_types=True)
    shutil.copy(embedder.tokenizer_path, nested / "tokenizer.json")
    write_json(tmp_path / "proj" / "modules.json", {"name": "not a module list"})
    plain = imesde.TextEmbedder(nested, threads=1)
    assert (plain.pooling, plain.normalize, plain.max_length) == ("mean", True, 256)


def test_a_graph_with_its_own_sentence_embedding_is_read_there(
    tmp_path: Path, embedder: imesde.TextEmbedder
) -> None:
    """An export that outputs token states and the sentence vector it computes (optimum's
    sentence-transformers export): the sentence vector is the model's, whatever pooling the
    token states would get."""
    h = onnx.helper
    nodes = [
        h.make_node("Gather", ["E", "input_ids"], ["token_embeddings"]),
        # The sentence vector: the first token's state, scaled (what a mean would not give).
        h.make_node("Gather", ["token_embeddings", "zero"], ["first"], axis=1),
        h.make_node("Mul", ["first", "three"], ["sentence_embedding"]),
    ]
    outs = [
        h.make_tensor_value_info("token_embeddings", onnx.TensorProto.FLOAT, ["batch", "seq", DIM]),
        h.make_tensor_value_info("sentence_embedding", onnx.TensorProto.FLOAT, ["batch", DIM]),
    ]
    inits = [
        onnx.numpy_helper.from_array(table(), "E"),
        onnx.numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three"),
    ]
    sentence_model(tmp_path, embedder.tokenizer_path, nodes, outs, inits)
    loaded = imesde.TextEmbedder(tmp_path, threads=1, normalize=False)
    np.testing.assert_allclose(loaded.embed(TEXTS), 3.0 * table()[np.full(3, 101)], atol=1e-5)
    # Pickled, it reads the same output again.
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(loaded)).embed(TEXTS), loaded.embed(TEXTS)
    )
    # A pooling the caller names pools the token states instead.
    cls = imesde.TextEmbedder(tmp_path, threads=1, normalize=False, pooling="cls")
    np.testing.assert_allclose(cls.embed(TEXTS), table()[np.full(3, 101)], atol=1e-5)


def test_a_graph_exported_for_one_row_at_a_time(
    tmp_path: Path, embedder: imesde.TextEmbedder
) -> None:
    """Inputs of a fixed batch of 1: loads (its probe runs a row at a time) with batch_size=1."""
    h = onnx.helper
    nodes = [h.make_node("Gather", ["E", "input_ids"], ["last_hidden_state"])]
    out = h.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, [1, "seq", DIM])
    inits = [onnx.numpy_helper.from_array(table(), "E")]
    sentence_model(tmp_path, embedder.tokenizer_path, nodes, [out], inits, batch=1)
    one = imesde.TextEmbedder(tmp_path, threads=1, batch_size=1)
    want = [unit(table()[ids].mean(axis=0)) for ids in token_ids(embedder.tokenizer_path, TEXTS)]
    np.testing.assert_allclose(one.embed(TEXTS), np.stack(want), atol=1e-5)


def test_a_classifier_is_not_a_sentence_model(
    tmp_path: Path, embedder: imesde.TextEmbedder
) -> None:
    """A cross-encoder's or classifier's logits are refused at load, not searched by."""
    h = onnx.helper
    nodes = [
        h.make_node("Gather", ["E", "input_ids"], ["states"]),
        h.make_node("ReduceMean", ["states", "axes"], ["logits"], keepdims=0),
    ]
    out = h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])
    e = np.random.default_rng(3).standard_normal((VOCAB, 2)).astype(np.float32)
    inits = [
        onnx.numpy_helper.from_array(e, "E"),
        onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    ]
    sentence_model(tmp_path, embedder.tokenizer_path, nodes, [out], inits)
    with pytest.raises(imesde.ModelLoadError, match="not a sentence-embedding model"):
        imesde.TextEmbedder(tmp_path, threads=1)


@pytest.mark.parametrize("damage", ["id_past_the_table", "pad_id_past_the_table", "no_unk"])
def test_a_tokenizer_the_model_cannot_take_is_refused_at_load(
    tmp_path: Path, embedder: imesde.TextEmbedder, damage: str
) -> None:
    """A tokenizer that gives ids the model has no row for, pads with one, or has no token for
    text outside its vocabulary: ``ModelLoadError`` when loading, not an ``EmbeddingError``
    for some later text (and for a whole batch with it)."""
    build(tmp_path / "model.onnx", pooled=False, int32=False, token_types=True)
    tok = json.loads(Path(embedder.tokenizer_path).read_text(encoding="utf-8"))
    if damage == "id_past_the_table":
        tok["model"]["vocab"]["zzzbig"] = VOCAB + 10
    elif damage == "pad_id_past_the_table":
        tok["padding"] = {**(tok.get("padding") or {}), "pad_id": VOCAB + 10, "pad_token": "[PAD]"}
    else:
        del tok["model"]["vocab"]["[UNK]"]
    write_json(tmp_path / "tokenizer.json", tok)
    with pytest.raises(imesde.ModelLoadError):
        imesde.TextEmbedder(tmp_path, threads=1)


def test_a_graph_of_zero_vectors_is_refused(tmp_path: Path, embedder: imesde.TextEmbedder) -> None:
    """All-zero outputs have no direction: refused at load, not handed out as vectors."""
    h = onnx.helper
    nodes = [h.make_node("Gather", ["E", "input_ids"], ["last_hidden_state"])]
    out = h.make_tensor_value_info(
        "last_hidden_state", onnx.TensorProto.FLOAT, ["batch", "seq", DIM]
    )
    zeros = onnx.numpy_helper.from_array(np.zeros((VOCAB, DIM), np.float32), "E")
    sentence_model(tmp_path, embedder.tokenizer_path, nodes, [out], [zeros])
    with pytest.raises(imesde.ModelLoadError, match="all-zero"):
        imesde.TextEmbedder(tmp_path, threads=1)


def test_a_folder_whose_pipeline_imesde_cannot_run_is_refused(
    tmp_path: Path, embedder: imesde.TextEmbedder
) -> None:
    """A Dense layer after pooling (distiluse, LaBSE), left out of an export of the
    transformer alone, and pooling that leaves the prompt's tokens out (INSTRUCTOR-style):
    both gave other vectors without an error."""
    mean = {"pooling_mode_mean_tokens": True}
    dense = st_folder(tmp_path / "dense", embedder.tokenizer_path, pooling=mean)
    modules = json.loads((dense / "modules.json").read_text(encoding="utf-8"))
    modules.append(
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    write_json(dense / "modules.json", modules)
    with pytest.raises(imesde.ModelLoadError, match="Dense"):
        imesde.TextEmbedder(dense, threads=1)
    prompted = st_folder(tmp_path / "prompted", embedder.tokenizer_path, pooling=mean)
    write_json(
        prompted / "1_Pooling" / "config.json",
        {"word_embedding_dimension": DIM, **mean, "include_prompt": False},
    )
    assert imesde.TextEmbedder(prompted, threads=1).pooling == "mean"  # no prompts: no matter
    write_json(prompted / "config_sentence_transformers.json", {"prompts": {"query": "query: "}})
    with pytest.raises(imesde.ModelLoadError, match="include_prompt"):
        imesde.TextEmbedder(prompted, threads=1)


def test_a_huge_cache_size_reserves_nothing_up_front() -> None:
    """The cache grows as vectors come: a cache_size of 10**11 bounded by cache_bytes aborted
    the process allocating for every entry at once."""
    import subprocess
    import sys

    code = (
        "import imesde; e = imesde.TextEmbedder(cache_size=10**11, cache_bytes=1 << 20, "
        "threads=1); e.embed(['a', 'b']); e.embed(['a']); print(e.stats()['cache_hits'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]
