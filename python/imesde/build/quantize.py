"""int8 quantisation of a BERT graph written by :func:`imesde.models.bert_graph`, checked
against the fp32 graph on calibration texts.

The scheme (W8A8, run by ONNX Runtime's integer GEMM):

* weights: int8, one scale per output channel; 7-bit (``-63..63``) on x86 CPUs without VNNI,
  whose integer GEMM (``vpmaddubsw``) adds two uint8 x int8 products in 16 bits and saturates
  once they pass 32,767 (``255 * 127 * 2`` does; ``255 * 63 * 2`` does not);
* activations: uint8, one scale per token (computed in the graph for every row), so a long
  or unusual text does not widen the range of the others in its batch;
* SmoothQuant: the few hidden channels that carry outliers (LayerNorm outputs, GELU outputs)
  are divided by a per-channel factor that is multiplied back into the weights, with the
  migration strength ``alpha`` chosen per kind of layer on held-out calibration texts;
* GELU outputs are shifted by GELU's minimum (-0.17) so they use the whole uint8 range; the
  shift is folded into the bias.

Layers whose quantisation costs the most agreement are kept in fp32 until the model agrees
with the fp32 graph on the held-out texts (mean and min cosine).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imesde._args import number
from imesde.exceptions import DTypeError, InvalidValueError, ModelLoadError, StorageError

#: -min over x of x * Phi(x): GELU's outputs are >= -GELU_MIN.
GELU_MIN = 0.1700
#: SmoothQuant strengths tried for each kind of layer.
ALPHAS = (0.35, 0.5, 0.65, 0.8, 0.9)

_F32 = npt.NDArray[np.float32]


def weight_levels() -> int:
    """The largest int8 weight code this machine's ONNX Runtime multiplies without saturating:
    127 where its integer GEMM has a dot-product instruction (x86 VNNI, AVX-512 or AVX-VNNI)
    or is not x86, 63 on other x86 CPUs (AVX2, AVX-512 without VNNI), whose ``vpmaddubsw``
    adds two u8 x s8 products in 16 bits. A model built here is meant to run here (the default
    model is cached per machine, and its cache folder names the weight bits)."""
    from imesde._locate import cpu_class

    return 63 if cpu_class() in ("x86-avx2", "x86") else 127


def weight_bits(levels: int) -> int:
    """The bits a weight range of ``-levels..levels`` takes: 8 for 127, 7 for 63."""
    return int(levels).bit_length() + 1


def calibration_texts(source: str | os.PathLike[str] | Iterable[str] | None) -> list[str]:
    """Calibration texts (at least 16): a list of strings, a ``.txt`` file (one per line), a
    ``.jsonl`` file (a ``text`` field per line) or None for the set that ships with imesde
    (512 Debian changelog entries and package descriptions)."""
    if source is None or isinstance(source, (str, os.PathLike)):
        if source is None:
            where = "imesde/data/calibration.jsonl"
            raw = resources.files("imesde").joinpath("data/calibration.jsonl").read_text("utf-8")
            jsonl = True
        else:
            path = Path(source)
            if path.is_dir():
                raise InvalidValueError(f"calibration texts: {path} is a directory, not a file")
            if not path.is_file():
                raise InvalidValueError(f"calibration file not found: {path}")
            try:
                raw = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise InvalidValueError(f"calibration texts: {path} is not UTF-8 ({e})") from None
            except OSError as e:
                raise StorageError(f"cannot read {path}: {e}") from None
            where, jsonl = str(path), path.suffix == ".jsonl"
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        try:
            texts = [str(json.loads(ln)["text"]) for ln in lines] if jsonl else lines
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidValueError(f"{where}: every line needs a 'text' field ({e})") from None
    else:
        texts = list(source)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidValueError("calibration texts must be strings")
    if len(texts) < 16:
        raise InvalidValueError(f"int8 calibration needs at least 16 texts, got {len(texts)}")
    return texts


def kind_of(prefix: str) -> str:
    """The kind of a weight from its checkpoint name (``encoder.layer.3.intermediate.dense``):
    ``"qkv"`` (query/key/value; input a LayerNorm output), ``"attn_out"`` (input the attention
    context), ``"ffn_in"`` (a LayerNorm output) or ``"ffn_out"`` (a GELU output)."""
    if ".attention.self." in prefix:
        return "qkv"
    if ".attention.output." in prefix:
        return "attn_out"
    if ".intermediate." in prefix:
        return "ffn_in"
    return "ffn_out"


def _layer_of(prefix: str) -> int:
    return int(prefix.split("encoder.layer.")[1].split(".")[0])


def _group(prefix: str) -> str:
    """``"layer:kind"``, the unit that is kept in fp32 when int8 costs too much."""
    return f"{_layer_of(prefix)}:{kind_of(prefix)}"


def _other_kind(kind: str, prefix: str) -> bool:
    return kind_of(prefix) != kind


def _other_group(group: str, prefix: str) -> bool:
    return _group(prefix) != group


#: The kinds of layer a plan gives a smoothing strength (``attn_out`` is never smoothed).
SMOOTHED = ("qkv", "ffn_in", "ffn_out")
_KINDS = ("qkv", "attn_out", "ffn_in", "ffn_out")


def check_plan(plan: object) -> None:
    """``DTypeError`` / ``InvalidValueError`` unless ``plan`` is one as the manifest records
    it: ``alpha`` (a strength in [0, 1] for each kind of layer it smooths, of ``qkv``,
    ``ffn_in``, ``ffn_out``), optionally ``fp32_layers`` (groups kept in fp32,
    ``"<layer>:<kind>"``) and ``measured`` (a ``.npz`` written by ``imesde.build.measure``:
    a path, or a file name in ``imesde/data``). Other keys (what a manifest records besides)
    are ignored."""
    if not isinstance(plan, dict):
        raise DTypeError(f"plan must be a dict, got {type(plan).__name__}")
    alpha = plan.get("alpha")
    if not isinstance(alpha, dict):
        raise DTypeError("plan['alpha'] must be a dict of a strength per kind of layer")
    for kind, value in alpha.items():
        if kind not in SMOOTHED:
            raise InvalidValueError(f"plan['alpha'] names {kind!r}; the kinds are {SMOOTHED}")
        if not 0.0 <= number(value, f"plan['alpha'][{kind!r}]") <= 1.0:
            raise InvalidValueError(f"plan['alpha'][{kind!r}] must be in [0, 1], got {value}")
    layers = plan.get("fp32_layers", [])
    if not isinstance(layers, (list, tuple)):
        raise DTypeError("plan['fp32_layers'] must be a list of '<layer>:<kind>' groups")
    for group in layers:
        layer, _, kind = group.partition(":") if isinstance(group, str) else ("", "", "")
        if not (layer.isdigit() and kind in _KINDS):
            raise InvalidValueError(
                f"plan['fp32_layers'] holds {group!r}, not a '<layer>:<kind>' group "
                f"(kinds: {_KINDS})"
            )
    measured = plan.get("measured")
    if measured is not None and not isinstance(measured, (str, os.PathLike)):
        raise DTypeError(f"plan['measured'] must be a path, got {type(measured).__name__}")


def _in_groups(groups: set[str], prefix: str) -> bool:
    return _group(prefix) in groups


def _prefix(weight_name: str) -> str:
    return weight_name.split(".weight_t")[0]


class Runner:
    """Runs graphs over tokenized calibration batches with ONNX Runtime's Python API."""

    def __init__(self, tokenizer: Path, texts: Sequence[str], max_length: int, pooling: str):
        try:
            from imesde._locate import quiet_runtime

            quiet_runtime()
            ort: Any = importlib.import_module("onnxruntime")
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ModelLoadError(
                f"int8 builds need onnxruntime and tokenizers, which did not import ({e}): "
                'pip install "imesde[build]"'
            ) from e
        self._ort = ort
        try:
            tok = Tokenizer.from_file(str(tokenizer))
            tok.no_padding()
            tok.enable_truncation(max_length)
            encodings = tok.encode_batch(list(texts))
        except Exception as e:  # tokenizers raises a bare Exception for a bad file
            raise ModelLoadError(f"{tokenizer}: not a usable tokenizer ({e})") from None
        # Sorted by length like TextEmbedder; embeddings come back in this order, the same
        # for every model compared.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        self.batches: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        for start in range(0, len(order), 32):
            chunk = [encodings[i] for i in order[start : start + 32]]
            seq = max(len(enc.ids) for enc in chunk)
            ids = np.zeros((len(chunk), seq), np.int64)
            mask = np.zeros((len(chunk), seq), np.int64)
            for r, enc in enumerate(chunk):
                ids[r, : len(enc.ids)] = enc.ids
                mask[r, : len(enc.ids)] = 1
            self.batches.append((ids, mask))
        self.pooling = pooling

    def session(self, model: Any) -> Any:
        opts = self._ort.SessionOptions()
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return self._ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    def run(self, session: Any, outputs: list[str]) -> Iterable[tuple[list[Any], Any]]:
        declared = {i.name for i in session.get_inputs()}
        for ids, mask in self.batches:
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            yield session.run(outputs, {k: v for k, v in feed.items() if k in declared}), mask

    def embed(self, model: Any) -> _F32:
        """Pooled, L2-normalised embeddings of the texts in model order."""
        session = self.session(model)
        rows = []
        for (hidden,), mask in self.run(session, ["last_hidden_state"]):
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                m = mask[..., None].astype(np.float32)
                pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)
            rows.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(rows).astype(np.float32)


def activation_ranges(model: Any, runner: Runner) -> dict[str, _F32]:
    """Per-channel max |x| over real tokens of the input of every weight MatMul, by weight
    prefix."""
    from onnx import TensorProto, helper

    m = type(model)()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    taps = {
        _prefix(n.input[1]): n.input[0]
        for n in m.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits
    }
    outputs = sorted(set(taps.values()))
    for name in outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    ranges: dict[str, _F32] = {}
    for values, mask in runner.run(runner.session(m), outputs):
        real = mask.astype(bool)
        for name, value in zip(outputs, values, strict=True):
            amax = np.abs(value[real]).max(0)
            ranges[name] = np.maximum(ranges[name], amax) if name in ranges else amax
    return {prefix: ranges[name] for prefix, name in taps.items()}


def quantize(
    model: Any,
    ranges: dict[str, _F32],
    alphas: dict[str, float],
    keep: Callable[[str], bool] = lambda prefix: False,
    w_levels: int = 127,
) -> Any:
    """A copy of the fp32 BERT ``model`` with every weight MatMul (and its bias Add) replaced
    by a W8A8 block (weights in ``-w_levels..w_levels``), except those whose prefix ``keep``
    selects."""
    from onnx import TensorProto, helper, numpy_helper

    m = type(model)()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    groups: dict[str, list[Any]] = {}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        if n.op_type == "MatMul" and n.input[1] in inits and not keep(_prefix(n.input[1])):
            groups.setdefault(n.input[0], []).append(n)
    new_inits: list[Any] = []
    counter = [0]

    def name(hint: str) -> str:
        counter[0] += 1
        return f"q8_{hint}_{counter[0]}"

    def const(arr: Any, hint: str) -> str:
        nm = name(hint)
        new_inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    eps = const(np.array(1e-8, np.float32), "eps")
    one = const(np.array(1.0, np.float32), "one")
    zero = const(np.array(0.0, np.float32), "zero")
    flat = const(np.array([-1], np.int64), "flat")
    zp128 = const(np.array(128, np.uint8), "zp128")
    levels = {127: const(np.array(127.0, np.float32), "l127")}
    levels[255] = const(np.array(255.0, np.float32), "l255")
    zp_values = {v: const(np.array(float(v), np.float32), f"zp{v}") for v in (0, 128)}

    before: dict[str, list[Any]] = {}
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    for x, matmuls in groups.items():
        prefix = _prefix(matmuls[0].input[1])
        kind = kind_of(prefix)
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in matmuls]  # [K, N] each
        k = weights[0].shape[0]
        nodes: list[Any] = []

        def op(
            kind_: str, inputs: list[str], hint: str, out: list[Any] = nodes, **attrs: Any
        ) -> str:
            o = name(hint)
            out.append(helper.make_node(kind_, inputs, [o], name=o, **attrs))
            return o

        smooth = np.ones(k, np.float32)
        alpha = alphas.get(kind)
        xs = x
        if alpha is not None and kind != "attn_out":
            a = np.maximum(ranges[prefix], 1e-5)
            w_max = np.maximum(np.max([np.abs(w).max(1) for w in weights], 0), 1e-5)
            smooth = (a**alpha / w_max ** (1 - alpha)).astype(np.float32)
            xs = op("Mul", [x, const((1.0 / smooth).astype(np.float32), "inv_smooth")], "xs")
        shift = None
        if kind == "ffn_out":
            # GELU >= -GELU_MIN: shift to >= 0 and use all 256 levels with zero point 0.
            shift = (GELU_MIN / smooth).astype(np.float32)
            xs = op("Add", [xs, const(shift, "shift")], "xshift")
            peak = op("ReduceMax", [xs], "peak", axes=[-1], keepdims=1)
            zpv, lv = 0, 255
        else:
            peak = op("ReduceMax", [op("Abs", [xs], "abs")], "peak", axes=[-1], keepdims=1)
            zpv, lv = 128, 127
        sx = op("Div", [op("Max", [peak, eps], "peak_eps"), levels[lv]], "x_scale")
        sx_flat = op("Reshape", [sx, flat], "x_scale_flat")
        zp = op(
            "Cast",
            [op("Add", [op("Mul", [sx_flat, zero], "zp0"), zp_values[zpv]], "zpf")],
            "x_zp",
            to=TensorProto.UINT8,
        )
        rows = op("Reshape", [xs, const(np.array([-1, k], np.int64), "rows_shape")], "rows")
        q_rows = op("QuantizeLinear", [rows, sx_flat, zp], "x_q_rows", axis=0)
        xq = op("Reshape", [q_rows, op("Shape", [xs], "x_shape")], "x_q")
        before[x] = nodes

        for n, w in zip(matmuls, weights, strict=True):
            ws = w * smooth[:, None]
            w_scale = (np.maximum(np.abs(ws).max(0), 1e-12) / w_levels).astype(np.float32)
            wq = np.clip(np.round(ws / w_scale), -w_levels, w_levels).astype(np.int8)
            cons = consumers.get(n.output[0], [])
            bias_add = (
                cons[0]
                if len(cons) == 1 and cons[0].op_type == "Add" and cons[0].input[1] in inits
                else None
            )
            if bias_add is not None:
                bias = numpy_helper.to_array(inits[bias_add.input[1]]).astype(np.float64)
                dropped.add(id(bias_add))
            else:
                bias = np.zeros(w.shape[1])
            if shift is not None:
                bias = bias - shift.astype(np.float64) @ ws.astype(np.float64)
            out: list[Any] = []
            y = op(
                "MatMulIntegerToFloat",
                [xq, const(wq, "w_q"), one, const(w_scale, "w_scale")] + ([zp128] if zpv else []),
                "mm",
                out=out,
                domain="com.microsoft",
            )
            y = op("Mul", [y, sx], "y", out=out)
            target = bias_add.output[0] if bias_add is not None else n.output[0]
            out.append(
                helper.make_node(
                    "Add", [y, const(bias.astype(np.float32), "bias")], [target], name=name("b")
                )
            )
            replaced[id(n)] = out

    nodes_out: list[Any] = []
    placed: set[str] = set()
    for n in g.node:
        if id(n) in dropped:
            continue
        if id(n) in replaced:
            if n.input[0] not in placed:
                nodes_out += before[n.input[0]]
                placed.add(n.input[0])
            nodes_out += replaced[id(n)]
        else:
            nodes_out.append(n)
    del g.node[:]
    g.node.extend(nodes_out)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


#: Bumped when what :func:`fingerprint` covers or the measurements file's layout changes.
MEASURED_FORMAT = "imesde-measured/1"


def fingerprint(
    model: Any, tokenizer: Path, texts: Sequence[str], max_length: int, pooling: str
) -> str:
    """What the fp32 measurements of an int8 build depend on, as a sha256: the graph's nodes
    and weights (not its name or the onnx version that wrote it), the tokenizer file, the
    calibration texts, ``max_length`` and ``pooling``."""
    h = hashlib.sha256(f"{MEASURED_FORMAT}\0{max_length}\0{pooling}\0".encode())
    g = model.graph
    for part in (*g.input, *g.output, *g.node, *g.initializer):
        data = part.SerializeToString()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    h.update(tokenizer.read_bytes())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def save_measured(path: Path, key: str, ranges: dict[str, _F32], reference: _F32) -> None:
    """Write an int8 build's fp32 measurements (activation ranges by weight prefix, the
    held-out texts' fp32 embeddings) under ``key`` (:func:`fingerprint`), for a plan to ship."""
    arrays: dict[str, Any] = {f"range:{p}": np.asarray(v, np.float32) for p, v in ranges.items()}
    arrays.update(key=np.array(key), reference=reference.astype(np.float32))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def shipped_measured(plan: dict[str, Any] | None, key: str) -> tuple[dict[str, _F32], _F32] | None:
    """The fp32 measurements a plan ships (``"measured"``: a file :func:`save_measured`
    wrote, by path, or by name in ``imesde/data``) when they were taken of this graph,
    tokenizer and calibration set (``key``); else None."""
    name = (plan or {}).get("measured")
    if not isinstance(name, (str, os.PathLike)):
        return None
    try:
        path = Path(name)
        raw = (
            path.read_bytes()
            if path.is_file()
            else resources.files("imesde").joinpath(f"data/{os.fspath(name)}").read_bytes()
        )
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            ranges = {k[len("range:") :]: z[k] for k in z.files if k.startswith("range:")}
            return ranges, z["reference"]
    except Exception:  # a damaged file (BadZipFile, zlib.error, ...): measured instead
        return None


def agreement(a: _F32, b: _F32) -> dict[str, float]:
    """Mean and min cosine between matching rows of two normalised embedding matrices."""
    cos = np.sum(a * b, 1)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}


def build_int8(
    model: Any,
    tokenizer: Path,
    texts: Sequence[str],
    *,
    max_length: int,
    pooling: str,
    min_mean: float,
    min_cosine: float,
    w_levels: int | None = None,
    plan: dict[str, Any] | None = None,
    stage: Callable[[str], None] = lambda _: None,
) -> tuple[Any, dict[str, Any]]:
    """The int8 model for the fp32 ``model`` and a report: the chosen alphas, the layers kept
    in fp32 and the agreement with fp32 on the held-out half of ``texts``. Weights use
    ``w_levels`` levels each side of 0 (default: :func:`weight_levels`).

    With a ``plan`` (``alpha`` per kind of layer and ``fp32_layers``, found ahead of time for
    this model and CPU class) the model is quantised once and checked; the search for
    strengths and fp32 layers runs only when that check misses ``min_mean`` / ``min_cosine``.
    A plan may also ship the fp32 measurements (``"measured"``, :func:`save_measured`), used
    when their :func:`fingerprint` is this build's (the same graph, tokenizer, texts and
    settings), else taken again. ``stage`` is told what starts (for progress lines)."""
    levels = weight_levels() if w_levels is None else w_levels
    held_out = Runner(tokenizer, texts[1::2], max_length, pooling)
    shipped = (
        shipped_measured(plan, fingerprint(model, tokenizer, texts, max_length, pooling))
        if (plan or {}).get("measured")
        else None
    )
    origin = "measured" if shipped is None else "shipped"
    if shipped is not None:
        stage("reading the fp32 measurements shipped with the plan")
        ranges, reference = shipped
    else:
        stage("measuring activation ranges")
        ranges = activation_ranges(model, Runner(tokenizer, texts[0::2], max_length, pooling))
        stage("embedding the check texts with the fp32 graph")
        reference = held_out.embed(model)
    if not np.isfinite(reference).all():
        # Weights that overflow: no int8 model can agree with NaN.
        raise ModelLoadError("the fp32 model gives non-finite embeddings for calibration texts")
    prefixes = sorted(
        {
            _prefix(i.name)
            for i in model.graph.initializer
            if ".weight_t" in i.name and "encoder.layer." in i.name
        }
    )

    def trial(
        alphas: dict[str, float], keep: Callable[[str], bool]
    ) -> tuple[Any, dict[str, float]]:
        """The int8 model for these choices and its agreement with fp32 on held-out texts."""
        candidate = quantize(model, ranges, alphas, keep, levels)
        return candidate, agreement(held_out.embed(candidate), reference)

    def score(alphas: dict[str, float], keep: Callable[[str], bool]) -> float:
        return trial(alphas, keep)[1]["mean"]

    bits = weight_bits(levels)
    if plan is not None:
        stage(f"quantising with the shipped plan ({bits}-bit weights)")
        alphas = {k: float(v) for k, v in plan["alpha"].items()}
        kept: set[str] = set(plan.get("fp32_layers", []))
        final, result = trial(alphas, partial(_in_groups, kept))
        if result["mean"] >= min_mean and result["min"] >= min_cosine:
            return final, _report(bits, alphas, kept, texts, result, "shipped plan", origin)
        stage(
            f"the plan agrees with fp32 at {result['mean']:.5f} mean / {result['min']:.5f} min, "
            f"below {min_mean} / {min_cosine}: searching"
        )
    else:
        stage("searching smoothing strengths and fp32 layers")
    # The best smoothing strength for each kind, the others left in fp32.
    alphas = {}
    for kind in SMOOTHED:
        trials = {a: score({kind: a}, partial(_other_kind, kind)) for a in ALPHAS}
        alphas[kind] = max(trials, key=trials.__getitem__)
    kept = set()
    final, result = trial(alphas, partial(_in_groups, kept))
    if result["mean"] < min_mean or result["min"] < min_cosine:
        # Keep the groups (layer:kind) that cost the most in fp32 until the model agrees.
        groups = sorted({_group(p) for p in prefixes})
        cost = {grp: score(alphas, partial(_other_group, grp)) for grp in groups}
        for grp in sorted(groups, key=cost.__getitem__):
            kept.add(grp)
            final, result = trial(alphas, partial(_in_groups, kept))
            if result["mean"] >= min_mean and result["min"] >= min_cosine:
                break
    return final, _report(bits, alphas, kept, texts, result, "searched", origin)


def _report(
    bits: int,
    alphas: dict[str, float],
    kept: set[str],
    texts: Sequence[str],
    result: dict[str, float],
    how: str,
    origin: str,
) -> dict[str, Any]:
    """The manifest's record of an int8 build."""
    return {
        "scheme": f"w{bits}a8: int8 per-channel weights ({bits}-bit range), uint8 per-token "
        "activations, SmoothQuant",
        "weight_bits": bits,
        "alpha": alphas,
        "fp32_layers": sorted(kept, key=lambda g: (int(g.split(":")[0]), g)),
        "plan": how,
        "calibration_texts": len(texts),
        "fp32_measurements": origin,
        "agreement_with_fp32": result,
    }
