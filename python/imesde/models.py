"""Model preparation without PyTorch: a sentence-transformers BERT checkpoint (``config.json``,
``model.safetensors``, ``tokenizer.json``, pooling config) written straight to an ONNX graph
with the ``onnx`` package, optionally fused by ONNX Runtime's transformer optimizer.

    imesde model build SOURCE_DIR OUT_DIR [--precision fp32|int8] [--max-length N]
    imesde.models.build(source_dir, out_dir)

``OUT_DIR`` then holds ``model.onnx``, ``tokenizer.json`` and ``imesde-model.json`` (a small
manifest: model id, dimension, pooling, max length, precision, sha256 of each file), which
``TextEmbedder(OUT_DIR)`` reads. Needs ``pip install "imesde[build]"`` (onnx).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imesde._models import read_prompts
from imesde.exceptions import InvalidValueError, ModelLoadError, ModelNotFoundError

__all__ = ["BertConfig", "build", "check", "read_safetensors"]

MANIFEST = "imesde-model.json"
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.safetensors`` file as a numpy array (F32, F16, BF16, I64, I32)."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"weights not found: {p}")
    data = p.read_bytes()
    if len(data) < 8:
        raise ModelLoadError(f"{p} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ModelLoadError(f"{p} is not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise ModelLoadError(f"{p} is not a safetensors file ({e})") from None
    body = memoryview(data)[8 + n :]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr: npt.NDArray[Any] = bits.view(np.float32)
        elif dtype in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
        else:
            raise ModelLoadError(f"{p}: tensor {name} has unsupported dtype {dtype}")
        out[name] = arr.reshape(info["shape"])
    return out


#: The encoders ``build`` writes: BERT, and the RoBERTa family (RoBERTa, XLM-RoBERTa and
#: CamemBERT: positions counted from the padding index, no token types).
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
        """Read ``config.json``; refuses architectures other than BERT and RoBERTa's."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        kind = raw.get("model_type", "bert")
        if kind not in ARCHITECTURES:
            raise InvalidValueError(
                f"model_type {kind!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
            )
        if raw.get("hidden_act", "gelu") != "gelu":
            raise InvalidValueError(f"hidden_act {raw['hidden_act']!r} is not supported")
        fields = {f: raw[f] for f in cls.__dataclass_fields__ if f in raw}
        if kind != "bert":
            fields.setdefault("pad_token_id", 1)
        return cls(**fields)


def _weights(w: dict[str, npt.NDArray[Any]], cfg: BertConfig) -> dict[str, npt.NDArray[Any]]:
    """Normalises key names (``bert.`` prefix, old ``gamma``/``beta``) and checks shapes."""
    out = {}
    for k, v in w.items():
        for prefix in ("bert.", "roberta.", "model."):
            k = k.removeprefix(prefix)
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight")
        out[k.replace("LayerNorm.beta", "LayerNorm.bias")] = np.asarray(v, dtype=np.float32)
    need = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, cfg.hidden_size),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, cfg.hidden_size),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, cfg.hidden_size),
    }
    for name, shape in need.items():
        if name not in out:
            raise ModelLoadError(f"the checkpoint has no tensor {name}")
        if out[name].shape != shape:
            raise ModelLoadError(f"{name} has shape {out[name].shape}, config says {shape}")
    for i in range(cfg.num_hidden_layers):
        if f"encoder.layer.{i}.attention.self.query.weight" not in out:
            raise ModelLoadError(f"the checkpoint has no layer {i}")
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
    except ImportError:
        raise ModelLoadError(
            'building models needs the onnx package: pip install "imesde[build]"'
        ) from None

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pooling(source: Path) -> str:
    for cfg_path in (source / "1_Pooling" / "config.json", source / "pooling_config.json"):
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if cfg.get("pooling_mode_mean_tokens", True):
                return "mean"
            raise InvalidValueError(f"{cfg_path}: only mean or CLS pooling is supported")
    return "mean"


def _normalized(source: Path) -> bool:
    modules = source / "modules.json"
    if not modules.is_file():
        return True
    entries = json.loads(modules.read_text(encoding="utf-8"))
    return any(str(e.get("type", "")).endswith("Normalize") for e in entries)


def _max_length(source: Path, cfg: BertConfig) -> int:
    st = source / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int):
            return min(value, cfg.positions)
    return min(512, cfg.positions)


def build(
    source_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    max_length: int | None = None,
    optimize: bool = True,
    calibration: str | os.PathLike[str] | Iterable[str] | None = None,
    min_mean: float = 0.999,
    min_cosine: float = 0.995,
    model_id: str | None = None,
    plan: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Write ``model.onnx``, ``tokenizer.json`` and the manifest for the checkpoint in
    ``source_dir`` into ``out_dir`` (created); returns ``out_dir``.

    ``precision="fp32"`` reproduces the checkpoint exactly; ``optimize`` runs ONNX Runtime's
    transformer optimizer (attention, layer norm and GELU fusion) when it recognises the graph.

    ``precision="int8"`` quantises the weight MatMuls (int8 per-channel weights, uint8
    per-token activations, SmoothQuant strengths chosen per kind of layer) using
    ``calibration`` texts (a list, a ``.txt`` / ``.jsonl`` file, or None for the set shipped
    with imesde): half of them measure activation ranges, the other half check the int8 model
    against the fp32 one. Layers are kept in fp32, costliest first, until that agreement
    reaches ``min_mean`` (mean cosine) and ``min_cosine`` (every text); the manifest records
    the choices and the agreement. ONNX Runtime fuses the int8 graph when it loads it
    (``optimization="all"``, written to the manifest), so ``optimize`` does not apply.

    ``model_id`` names the model in the manifest (default: the source folder's name). ``plan``
    (int8: ``alpha`` per kind of layer and ``fp32_layers``, as the manifest records them)
    skips the search: the model is quantised once and checked, and the search runs only if
    that check misses the bar. ``progress`` prints a line per stage on stderr (a tqdm bar
    when tqdm is installed and stderr is a terminal).
    """
    source, out = Path(source_dir), Path(out_dir)
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (source / needed).is_file():
            raise ModelNotFoundError(
                f"{source / needed} not found (a sentence-transformers folder)"
            )
    if precision not in ("fp32", "int8"):
        raise InvalidValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    if not (0.0 < min_mean <= 1.0 and 0.0 < min_cosine <= 1.0):
        raise InvalidValueError("min_mean and min_cosine must be in (0, 1]")
    cfg = BertConfig.from_file(source / "config.json")
    limit = _max_length(source, cfg) if max_length is None else max_length
    if not 1 <= limit <= cfg.positions:
        raise InvalidValueError(f"max_length must be between 1 and {cfg.positions}, got {limit}")
    from imesde import _quantize
    from imesde._progress import Stages

    steps = 6 if precision == "int8" else (4 if optimize else 3)
    stage = Stages(f"{model_id or source.name} {precision}", steps)
    if not progress:
        stage.quiet()
    # Calibration texts are checked before the weights are read.
    texts = _quantize.calibration_texts(calibration) if precision == "int8" else []
    stage("reading the checkpoint")
    weights = read_safetensors(source / "model.safetensors")
    stage("writing the ONNX graph")
    model = bert_graph(weights, cfg, source.name)
    import onnx

    pooling = _pooling(source)
    report = None
    if precision == "int8":
        model, report = _quantize.build_int8(
            model,
            source / "tokenizer.json",
            texts,
            max_length=limit,
            pooling=pooling,
            min_mean=min_mean,
            min_cosine=min_cosine,
            plan=plan,
            stage=stage,
        )
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    tmp = out / "model.onnx.tmp"
    stage(f"writing {onnx_path.name}")
    onnx.save_model(model, str(tmp))
    optimized = False
    if optimize and precision == "fp32":
        stage("fusing with ONNX Runtime's transformer optimizer")
        optimized = _optimize(tmp, cfg)
    os.replace(tmp, onnx_path)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    manifest = {
        "format": "imesde-model/1",
        "model_id": model_id or source.name,
        "architecture": cfg.model_type,
        "dim": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "pooling": pooling,
        "normalize": _normalized(source),
        "max_length": limit,
        "precision": precision,
        "optimized": optimized,
        "optimization": "all" if precision == "int8" else "basic",
        "sha256": {
            "model.onnx": _sha256(onnx_path),
            "tokenizer.json": _sha256(out / "tokenizer.json"),
        },
    }
    prompts, default_prompt = read_prompts(source)
    if prompts:
        manifest["prompts"] = prompts
        manifest["default_prompt_name"] = default_prompt
    if report is not None:
        manifest["quantization"] = report
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if report is not None:
        agree = report["agreement_with_fp32"]
        stage.done(
            f"int8 vs fp32 cosine mean {agree['mean']:.5f}, min {agree['min']:.5f} "
            f"({report['plan']})"
        )
    else:
        stage.done("")
    return out


def _optimize(path: Path, cfg: BertConfig) -> bool:
    """ONNX Runtime's offline transformer fusions, in place; False when unavailable."""
    import importlib
    import logging

    try:
        optimizer: Any = importlib.import_module("onnxruntime.transformers.optimizer")
    except ImportError:
        return False
    # It warns that the producer is not "pytorch"; the graph has a PyTorch export's shape.
    log = logging.getLogger("onnxruntime.transformers.optimizer")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        opt = optimizer.optimize_model(
            str(path),
            model_type="bert",
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
            opt_level=0,
        )
    except ImportError:
        # Its shape inference needs sympy: without it the model stays unfused (as fast on the
        # CPUs measured, see README).
        return False
    finally:
        log.setLevel(level)
    opt.save_model_to_file(str(path))
    return True


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a built model folder, or None when there is none."""
    p = Path(model_dir)
    p = p / MANIFEST if p.is_dir() else p.parent / MANIFEST
    if not p.is_file():
        return None
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return data


def check(
    model: str | os.PathLike[str] | Any,
    texts: list[str],
    reference: npt.NDArray[np.float32],
) -> dict[str, float]:
    """Embed ``texts`` with ``model`` (a model folder or file, or a ``TextEmbedder``) and
    compare with ``reference`` (one row per text): mean and min cosine similarity, and n."""
    from imesde._imesde import TextEmbedder

    embedder = model if isinstance(model, TextEmbedder) else TextEmbedder(model)
    emb = embedder.embed(texts)
    ref = np.asarray(reference, dtype=np.float32)
    if ref.shape != emb.shape:
        raise InvalidValueError(f"reference has shape {ref.shape}, embeddings {emb.shape}")
    cos = np.sum(emb * ref, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    return {"mean": float(cos.mean()), "min": float(cos.min()), "n": float(len(cos))}
