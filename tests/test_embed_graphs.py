"""Other graph shapes than the default model's: a graph that pools itself, int32 token inputs,
no token_type_ids. Tiny models are built with the ``onnx`` package and run by the real ONNX
Runtime; the expected vectors come from the same token ids in numpy."""

from __future__ import annotations

from pathlib import Path

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
