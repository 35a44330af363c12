"""A BERT-family encoder (BERT, RoBERTa, XLM-R, CamemBERT) written as an ONNX graph with the
``onnx`` package, from its config and weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imesde._manifest import read_json
from imesde.exceptions import InvalidValueError, ModelLoadError

__all__ = ["ARCHITECTURES", "BertConfig", "bert_graph"]


ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "camembert")


@dataclass(frozen=True)
class BertConfig:
    """The parts of a Hugging Face ``config.json`` a BERT-family encoder needs."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    model_type: str = "bert"
    pad_token_id: int = 0

    @property
    def roberta(self) -> bool:
        """Positions start after the padding index and skip padding; no token types."""
        return self.model_type != "bert"

    @property
    def positions(self) -> int:
        """Token positions the model has (RoBERTa's table also holds ``pad_token_id + 1``
        rows before the first real position)."""
        if self.roberta:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BertConfig:
        """Read ``config.json``; refuses architectures other than BERT and RoBERTa's, and
        sizes that no model has (``ModelLoadError`` naming the field)."""
        raw = read_json(Path(path), dict)
        kind = raw.get("model_type", "bert")
        if kind not in ARCHITECTURES:
            raise InvalidValueError(
                f"model_type {kind!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
            )
        if raw.get("hidden_act", "gelu") != "gelu":
            raise InvalidValueError(f"hidden_act {raw['hidden_act']!r} is not supported")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise InvalidValueError(
                f"position_embedding_type {raw['position_embedding_type']!r} is not supported "
                "(absolute positions only)"
            )
        fields = {f: raw[f] for f in cls.__dataclass_fields__ if f in raw}
        if fields.get("pad_token_id") is None:  # absent, or null as some configs write it
            fields["pad_token_id"] = 0 if kind == "bert" else 1
        for name, least in _SIZES.items():
            if name not in fields:
                raise ModelLoadError(f"{path} has no {name}")
            value = fields[name]
            if type(value) is not int or value < least:
                raise ModelLoadError(f"{path}: {name} must be an int >= {least}, got {value!r}")
        eps = fields.get("layer_norm_eps", 1e-12)
        if type(eps) not in (int, float) or not 0 < eps < 1:
            raise ModelLoadError(f"{path}: layer_norm_eps must be a number in (0, 1), got {eps!r}")
        config = cls(**fields)
        if config.positions < 1:
            raise ModelLoadError(
                f"{path}: pad_token_id {config.pad_token_id} leaves no rows of the "
                f"{config.max_position_embeddings} position embeddings for tokens"
            )
        return config


# The sizes of a config and their least values.
_SIZES = {
    "hidden_size": 1,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 1,
    "max_position_embeddings": 1,
    "type_vocab_size": 1,
    "vocab_size": 1,
    "pad_token_id": 0,
}


def _weights(w: dict[str, npt.NDArray[Any]], cfg: BertConfig) -> dict[str, npt.NDArray[Any]]:
    """Normalises key names (``bert.`` prefix, old ``gamma``/``beta``) and checks shapes."""
    out = {}
    named: dict[str, str] = {}
    for original, v in w.items():
        k = original
        for prefix in ("bert.", "roberta.", "model."):
            k = k.removeprefix(prefix)
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight")
        k = k.replace("LayerNorm.beta", "LayerNorm.bias")
        if k in named:
            raise ModelLoadError(
                f"the checkpoint holds {named[k]!r} and {original!r}, two copies of one weight"
            )
        named[k] = original
        out[k] = np.asarray(v, dtype=np.float32)
    need: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, cfg.hidden_size),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, cfg.hidden_size),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, cfg.hidden_size),
    }
    h, inner = cfg.hidden_size, cfg.intermediate_size
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        if f"{p}.attention.self.query.weight" not in out:
            raise ModelLoadError(f"the checkpoint has no layer {i}")
        for part in ("query", "key", "value"):
            need[f"{p}.attention.self.{part}.weight"] = (h, h)
            need[f"{p}.attention.self.{part}.bias"] = (h,)
        need[f"{p}.attention.output.dense.weight"] = (h, h)
        need[f"{p}.intermediate.dense.weight"] = (inner, h)
        need[f"{p}.intermediate.dense.bias"] = (inner,)
        need[f"{p}.output.dense.weight"] = (h, inner)
        for dense in ("attention.output.dense", "output.dense"):
            need[f"{p}.{dense}.bias"] = (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            need[f"{p}.{norm}.weight"] = (h,)
            need[f"{p}.{norm}.bias"] = (h,)
    need["embeddings.LayerNorm.weight"] = (h,)
    need["embeddings.LayerNorm.bias"] = (h,)
    # Encoder weights the config leaves out would be dropped silently: another model.
    unused = sorted(k for k in out if k.startswith("encoder.") and k not in need)
    if unused:
        raise ModelLoadError(
            f"the checkpoint has encoder tensors its config does not use ({unused[0]}, "
            f"{len(unused)} in all; num_hidden_layers is {cfg.num_hidden_layers})"
        )
    for name, shape in need.items():
        if name not in out:
            raise ModelLoadError(f"the checkpoint has no tensor {name}")
        if out[name].shape != shape:
            raise ModelLoadError(f"{name} has shape {out[name].shape}, config says {shape}")
        if not np.isfinite(out[name]).all():
            raise ModelLoadError(f"{name} holds NaN or infinite values")
    return out


def bert_graph(weights: dict[str, npt.NDArray[Any]], cfg: BertConfig, name: str = "bert") -> Any:
    """A BERT-family encoder as an ONNX model (opset 17): inputs ``input_ids``,
    ``attention_mask`` and for BERT ``token_type_ids`` (int64 ``[batch, seq]``), output
    ``last_hidden_state`` (``[batch, seq, hidden]``). The graph has the shape of a PyTorch
    export, so ONNX Runtime's transformer optimizer recognises its attention, layer norm and
    GELU. For the RoBERTa family a token's position is the number of non-padding tokens up to
    it (as Hugging Face's ``create_position_ids_from_input_ids``), looked up in the rows of the
    position table after the padding index; its one token type is added as a constant."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise ModelLoadError(
            f"building models needs the onnx package, which did not import ({e}): pip install "
            '"imesde[build]"'
        ) from e

    w = _weights(weights, cfg)
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    if h % heads:
        raise InvalidValueError(f"hidden_size {h} is not divisible by {heads} heads")
    dh = h // heads
    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]

    def const(arr: npt.NDArray[Any], hint: str) -> str:
        counter[0] += 1
        nm = f"{hint}_{counter[0]}"
        inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(kind: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        counter[0] += 1
        out = f"{hint}_{counter[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def linear(x: str, prefix: str) -> str:
        wt = const(w[f"{prefix}.weight"].T.copy(), f"{prefix}.weight_t")
        b = const(w[f"{prefix}.bias"], f"{prefix}.bias")
        return op("Add", [op("MatMul", [x, wt], f"{prefix}.matmul"), b], f"{prefix}.add")

    def layer_norm(x: str, prefix: str) -> str:
        g = const(w[f"{prefix}.weight"], f"{prefix}.gamma")
        b = const(w[f"{prefix}.bias"], f"{prefix}.beta")
        return op("LayerNormalization", [x, g, b], prefix, axis=-1, epsilon=cfg.layer_norm_eps)

    # Embeddings.
    table = w["embeddings.position_embeddings.weight"]
    if cfg.roberta:
        # Real tokens: (number of non-padding tokens so far) - 1 into the rows after the
        # padding index; padding tokens: row 0 (masked out of attention and pooling).
        real = op(
            "Cast",
            [
                op(
                    "Not",
                    [
                        op(
                            "Equal",
                            ["input_ids", const(np.array(cfg.pad_token_id, np.int64), "pad_id")],
                            "is_pad",
                        )
                    ],
                    "not_pad",
                )
            ],
            "real",
            to=TensorProto.INT64,
        )
        count = op("CumSum", [real, const(np.array(1, dtype=np.int64), "seq_axis")], "count")
        positions = op(
            "Mul",
            [op("Sub", [count, const(np.array(1, dtype=np.int64), "one_i")], "from0"), real],
            "positions",
        )
        table = table[cfg.pad_token_id + 1 :]
    else:
        seq_len = op(
            "Gather",
            [op("Shape", ["input_ids"], "shape"), const(np.array(1, dtype=np.int64), "one")],
            "seq_len",
            axis=0,
        )
        positions = op(
            "Range",
            [
                const(np.array(0, dtype=np.int64), "zero"),
                seq_len,
                const(np.array(1, dtype=np.int64), "step"),
            ],
            "positions",
        )
    words = op(
        "Gather", [const(w["embeddings.word_embeddings.weight"], "word_emb"), "input_ids"], "words"
    )
    pos = op("Gather", [const(table, "pos_emb"), positions], "pos")
    if cfg.roberta:
        types = const(w["embeddings.token_type_embeddings.weight"][0], "type_emb")
    else:
        types = op(
            "Gather",
            [const(w["embeddings.token_type_embeddings.weight"], "type_emb"), "token_type_ids"],
            "types",
        )
    x = layer_norm(op("Add", [op("Add", [words, pos], "wp"), types], "emb"), "embeddings.LayerNorm")

    # Attention mask: (1 - mask) * -10000, broadcast to [batch, 1, 1, seq].
    # (Unsqueeze, Unsqueeze, Cast, Sub, Mul: the order a PyTorch export has, which ONNX
    # Runtime's attention fusion looks for.)
    mask = op("Unsqueeze", ["attention_mask", const(np.array([1], dtype=np.int64), "ax1")], "m3")
    mask = op("Unsqueeze", [mask, const(np.array([2], dtype=np.int64), "ax2")], "m4")
    mask = op("Cast", [mask], "mask_f", to=TensorProto.FLOAT)
    mask = op("Sub", [const(np.array(1.0, dtype=np.float32), "one_f"), mask], "mask_inv")
    mask = op("Mul", [mask, const(np.array(-10000.0, dtype=np.float32), "neg")], "mask_add")

    split_shape = const(np.array([0, 0, heads, dh], dtype=np.int64), "split_shape")
    merge_shape = const(np.array([0, 0, h], dtype=np.int64), "merge_shape")
    scale = const(np.array(np.sqrt(dh), dtype=np.float32), "sqrt_dh")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        q = op(
            "Transpose",
            [op("Reshape", [linear(x, f"{p}.attention.self.query"), split_shape], "q_r")],
            "q_t",
            perm=[0, 2, 1, 3],
        )
        k = op(
            "Transpose",
            [op("Reshape", [linear(x, f"{p}.attention.self.key"), split_shape], "k_r")],
            "k_t",
            perm=[0, 2, 3, 1],
        )
        v = op(
            "Transpose",
            [op("Reshape", [linear(x, f"{p}.attention.self.value"), split_shape], "v_r")],
            "v_t",
            perm=[0, 2, 1, 3],
        )
        scores = op("Div", [op("MatMul", [q, k], "qk"), scale], "scores")
        probs = op("Softmax", [op("Add", [scores, mask], "masked")], "probs", axis=-1)
        ctx = op("Transpose", [op("MatMul", [probs, v], "ctx")], "ctx_t", perm=[0, 2, 1, 3])
        ctx = op("Reshape", [ctx, merge_shape], "ctx_r")
        attn = linear(ctx, f"{p}.attention.output.dense")
        x = layer_norm(op("Add", [attn, x], "res1"), f"{p}.attention.output.LayerNorm")
        inter = linear(x, f"{p}.intermediate.dense")
        # Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
        erf = op(
            "Erf",
            [op("Div", [inter, const(np.array(np.sqrt(2.0), dtype=np.float32), "sqrt2")], "g_div")],
            "g_erf",
        )
        gelu = op(
            "Mul",
            [
                op(
                    "Mul",
                    [
                        inter,
                        op("Add", [erf, const(np.array(1.0, dtype=np.float32), "g_one")], "g_add"),
                    ],
                    "g_mul",
                ),
                const(np.array(0.5, dtype=np.float32), "g_half"),
            ],
            "gelu",
        )
        out = linear(gelu, f"{p}.output.dense")
        x = layer_norm(op("Add", [out, x], "res2"), f"{p}.output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    inputs = ("input_ids", "attention_mask") + (() if cfg.roberta else ("token_type_ids",))
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in inputs
    ]
    outs = [
        helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", h]
        )
    ]
    graph = helper.make_graph(nodes, name, ints, outs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="imesde"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    return model
