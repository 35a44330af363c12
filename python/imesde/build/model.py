"""Building a model folder (``model.onnx``, ``tokenizer.json``, manifest) from a checkpoint,
and checking a built model against reference embeddings."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imesde._args import choice, number, positive
from imesde._manifest import (
    MANIFEST,
    lowercases,
    read_json,
    read_prompts,
    read_sentence_settings,
    sha256_file,
    write_manifest,
)
from imesde.build.graph import BertConfig, bert_graph
from imesde.build.safetensors import header_values, read_safetensors
from imesde.exceptions import (
    InvalidValueError,
    ModelLoadError,
    ModelNotFoundError,
    StorageError,
)

__all__ = ["build", "check", "measure"]


#: The most bytes of a ``tokenizer.json`` the builder reads (multilingual ones are ~20 MB).
MAX_TOKENIZER_BYTES = 1 << 30
#: The most bytes of fp32 weights a model built here holds: one ONNX file is one protobuf
#: message, at most 2 GiB (with room for the graph itself).
MAX_WEIGHT_BYTES = (1 << 31) - (1 << 26)
#: A staging folder this old in an output folder is a killed build's: removed by the next one.
STALE_STAGING_SECONDS = 24 * 3600


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
    source, out = _source(source_dir), Path(out_dir)
    choice(precision, "precision", ("fp32", "int8"))
    for value, what in ((min_mean, "min_mean"), (min_cosine, "min_cosine")):
        if not 0.0 < number(value, what) <= 1.0:
            raise InvalidValueError(f"{what} must be in (0, 1], got {value}")
    cfg, pooling, normalize, limit = _checkpoint_settings(source, max_length)
    prompts, default_prompt = read_prompts(source)
    from imesde._progress import Stages
    from imesde.build import quantize as _quantize

    if plan is not None and precision == "int8":
        _quantize.check_plan(plan)
    name = model_id or _name(source)
    measured = precision == "int8" and bool((plan or {}).get("measured"))
    steps = (5 if measured else 6) if precision == "int8" else (4 if optimize else 3)
    stage = Stages(f"{name} {precision}", steps)
    if not progress:
        stage.quiet()
    # Calibration texts and the output folder are checked before the weights are read.
    texts = _quantize.calibration_texts(calibration) if precision == "int8" else []
    with _output_folder(out) as staging:
        stage("reading the checkpoint")
        weights = _read_weights(source)
        stage("writing the ONNX graph")
        model = bert_graph(weights, cfg, name)
        import onnx

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
            agree = report["agreement_with_fp32"]
            if not np.isfinite([agree["mean"], agree["min"]]).all():
                raise ModelLoadError(f"the int8 model's agreement with fp32 is {agree}")
        # Written in the staging folder beside the folder's files, then swapped in: a build
        # that fails leaves a model already there whole.
        onnx_path = staging / "model.onnx"
        stage(f"writing {onnx_path.name}")
        onnx.save_model(model, str(onnx_path))
        optimized = False
        if optimize and precision == "fp32":
            stage("fusing with ONNX Runtime's transformer optimizer")
            optimized = _optimize(onnx_path, cfg)
        shutil.copyfile(source / "tokenizer.json", staging / "tokenizer.json")
        manifest: dict[str, Any] = {
            "model_id": name,
            "architecture": cfg.model_type,
            "dim": cfg.hidden_size,
            "layers": cfg.num_hidden_layers,
            "pooling": pooling,
            "normalize": normalize,
            "max_length": limit,
            "precision": precision,
            "optimized": optimized,
            "optimization": "all" if precision == "int8" else "basic",
            "sha256": {
                "model.onnx": sha256_file(onnx_path),
                "tokenizer.json": sha256_file(staging / "tokenizer.json"),
            },
        }
        if prompts:
            manifest["prompts"] = prompts
            manifest["default_prompt_name"] = default_prompt
        if report is not None:
            manifest["quantization"] = report
        write_manifest(staging, manifest)
        _loads(staging)
        for file in ("model.onnx", "tokenizer.json", MANIFEST):
            os.replace(staging / file, out / file)
    if report is not None:
        agree = report["agreement_with_fp32"]
        stage.done(
            f"int8 vs fp32 cosine mean {agree['mean']:.5f}, min {agree['min']:.5f} "
            f"({report['plan']})"
        )
    else:
        stage.done("")
    return out


def _loads(folder: Path) -> None:
    """Loads the model built in ``folder`` as every user will (``TextEmbedder`` runs its
    tokenizer and graph together once, and refuses NaN): a checkpoint that builds into a
    model that cannot embed (weights that overflow, a tokenizer of the wrong shape) fails the
    build, and the output folder keeps what it had."""
    from imesde._imesde import TextEmbedder

    try:
        TextEmbedder(folder, cache_size=0, threads=1)
    except ModelLoadError as e:
        raise ModelLoadError(f"the built model does not load: {e}") from None


def _source(source_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint folder ``source_dir``, with the files a build reads."""
    source = Path(source_dir)
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (source / needed).is_file():
            raise ModelNotFoundError(
                f"{source / needed} not found (a sentence-transformers folder)"
            )
    return source


def _name(source: Path) -> str:
    """A checkpoint's name: its folder's (``.`` is the folder it stands for)."""
    return source.resolve().name or "model"


@contextlib.contextmanager
def _output_folder(out: Path) -> Iterator[Path]:
    """Makes ``out`` (and its parents) if missing and a staging folder in it, before any work
    (``StorageError`` if it cannot), and yields the staging folder, removed when the ``with``
    block ends. The folders made for ``out`` are removed again when the build fails and
    leaves them empty (another build's staging folder keeps them)."""
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"{out} exists and is not a directory: give a folder to build into")
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            _remove_stale_staging(out)
            staging = Path(tempfile.mkdtemp(prefix=".imesde-build-", dir=out))
        except OSError as e:
            raise StorageError(f"cannot build into {out}: {e.strerror or e}") from None
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _remove_stale_staging(out: Path) -> None:
    """Removes the staging folders a killed build left in ``out`` (a day old: a build running
    beside this one keeps its own)."""
    now = time.time()
    for old in out.glob(".imesde-build-*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and now - old.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(old, ignore_errors=True)


def _read_weights(source: Path) -> dict[str, npt.NDArray[Any]]:
    """The checkpoint's weights, refused (``ModelLoadError``) before the file is read when
    their fp32 graph would not fit in one ONNX file: by the file's size (what reading it
    takes), and by its header's shapes (the values it holds, which reading checks)."""
    path = source / "model.safetensors"

    def too_large(size: int) -> ModelLoadError:
        return ModelLoadError(
            f"{source}: its weights are {size / 1e9:.2f} GB as fp32, more than one ONNX file "
            f"holds ({MAX_WEIGHT_BYTES / 1e9:.2f} GB); imesde does not build models with "
            "external weights"
        )

    if path.stat().st_size > MAX_WEIGHT_BYTES:
        raise too_large(path.stat().st_size)
    # Half-precision weights double as fp32: counted from the header before they are read.
    as_fp32 = header_values(path) * 4
    if as_fp32 > MAX_WEIGHT_BYTES:
        raise too_large(as_fp32)
    return read_safetensors(path)


def _checkpoint_settings(source: Path, max_length: int | None) -> tuple[BertConfig, str, bool, int]:
    """The checkpoint's config, pooling, normalisation and the max length a build uses
    (``max_length``, else the checkpoint's, at most its position table). Every side file is
    read (and refused when damaged) before anything is written."""
    cfg = BertConfig.from_file(source / "config.json")
    settings = read_sentence_settings(source)
    if settings.get("unsupported_modules"):
        raise ModelLoadError(
            f"{source}: its pipeline has {settings['unsupported_modules']} after pooling, which "
            "imesde's builder does not write"
        )
    if settings.get("include_prompt") is False and read_prompts(source)[0]:
        raise ModelLoadError(
            f"{source}: it pools without the prompt's tokens (include_prompt: false), which "
            "imesde does not do"
        )
    pooling, normalize = settings.get("pooling", "mean"), settings.get("normalize", True)
    if pooling not in ("mean", "cls"):
        raise InvalidValueError(
            f"{source}: pools by {pooling!r}; only mean or CLS pooling is supported"
        )
    tokenizer = read_json(source / "tokenizer.json", dict, limit=MAX_TOKENIZER_BYTES)
    if "model" not in tokenizer:
        raise ModelLoadError(f"{source / 'tokenizer.json'} is not a tokenizer (it has no model)")
    if settings.get("do_lower_case") and not lowercases(tokenizer.get("normalizer")):
        # sentence-transformers lowercases texts before this tokenizer, which keeps the case.
        raise ModelLoadError(
            f"{source}: it lowercases texts before the tokenizer (do_lower_case), which imesde "
            "does not do, and its tokenizer.json does not lowercase them itself"
        )
    if max_length is not None:
        limit = positive(max_length, "max_length")
    else:
        limit = min(settings.get("max_length", 512), cfg.positions)
    if not 1 <= limit <= cfg.positions:
        raise InvalidValueError(f"max_length must be between 1 and {cfg.positions}, got {limit}")
    return cfg, pooling, normalize, limit


def measure(
    source_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    max_length: int | None = None,
    calibration: str | os.PathLike[str] | Iterable[str] | None = None,
) -> Path:
    """Take the fp32 measurements an int8 build of ``source_dir`` starts with (activation
    ranges, the held-out texts' fp32 embeddings) and write them to ``out_file`` (``.npz``),
    for a plan to ship as ``"measured"`` (``make measured`` writes the default model's). A
    build uses them only when its graph, tokenizer, texts and settings are the same."""
    from imesde.build import quantize as _quantize

    source, out = _source(source_dir), Path(out_file)
    cfg, pooling, _, limit = _checkpoint_settings(source, max_length)
    texts = _quantize.calibration_texts(calibration)
    try:
        if out.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        # Written where the file goes, before any work (a probe, as ``build``'s).
        Path(tempfile.mkdtemp(prefix=".imesde-measure-", dir=out.parent)).rmdir()
    except OSError as e:
        raise StorageError(f"cannot write {out}: {e.strerror or e}") from None
    weights = _read_weights(source)
    model = bert_graph(weights, cfg, _name(source))
    tokenizer = source / "tokenizer.json"
    fit = _quantize.Runner(tokenizer, texts[0::2], limit, pooling)
    held_out = _quantize.Runner(tokenizer, texts[1::2], limit, pooling)
    _quantize.save_measured(
        out,
        _quantize.fingerprint(model, tokenizer, texts, limit, pooling),
        _quantize.activation_ranges(model, fit),
        held_out.embed(model),
    )
    return out


def _optimize(path: Path, cfg: BertConfig) -> bool:
    """ONNX Runtime's offline transformer fusions, in place; False when unavailable."""
    import importlib
    import logging

    from imesde._locate import quiet_runtime

    quiet_runtime()
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


def check(
    model: str | os.PathLike[str] | Any,
    texts: Iterable[str],
    reference: npt.NDArray[np.float32],
) -> dict[str, float]:
    """Embed ``texts`` with ``model`` (a model folder or file, or a ``TextEmbedder``) and
    compare with ``reference`` (one row per text): mean and min cosine similarity, and n."""
    from imesde._imesde import TextEmbedder

    texts = list(texts)
    if not texts:
        raise InvalidValueError("check needs at least one text")
    embedder = model if isinstance(model, TextEmbedder) else TextEmbedder(model)
    emb = embedder.embed(texts)
    ref = np.asarray(reference, dtype=np.float32)
    if ref.shape != emb.shape:
        raise InvalidValueError(f"reference has shape {ref.shape}, embeddings {emb.shape}")
    cos = np.sum(emb * ref, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    return {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}
