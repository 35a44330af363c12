"""The manifest of a model folder imesde built (``imesde-model.json``): its one name, its one
reader and writer, and the sentence-transformers prompts read from a checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from imesde.exceptions import ModelLoadError

#: The manifest's file name, beside ``model.onnx`` and ``tokenizer.json``.
MANIFEST = "imesde-model.json"
#: Its format tag.
FORMAT = "imesde-model/1"


#: The most bytes a settings file of a model folder (manifest, configs) may hold: a larger one
#: is not one (a tokenizer's JSON passes its own bound).
MAX_SETTINGS_BYTES = 1 << 20


def read_json(path: Path, kind: type | None = None, limit: int = MAX_SETTINGS_BYTES) -> Any:
    """The JSON value of a model or checkpoint file (of type ``kind`` when given) of at most
    ``limit`` bytes; a file that cannot be read, is larger, or holds something else, is
    ``ModelLoadError`` naming it."""
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise ModelLoadError(f"{path} is larger than {limit:,} bytes: not a settings file")
        value = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None
    if kind is not None and not isinstance(value, kind):
        raise ModelLoadError(f"{path} is not a JSON {'object' if kind is dict else 'list'}")
    return value


# The manifest's settings and their types (a file is not an argument: a wrong type is a damaged
# manifest, ModelLoadError naming it, not the TypeError of a call).
_SETTINGS: dict[str, tuple[type, ...]] = {
    "max_length": (int,),
    "pooling": (str,),
    "normalize": (bool,),
    "optimization": (str,),
    "dim": (int,),
    "default_prompt_name": (str, type(None)),
}


def read_manifest(model: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a built model (its folder, or any file in it), or None when it has
    none. A manifest that is not valid raises ``ModelLoadError``."""
    p = Path(model)
    path = p / MANIFEST if p.is_dir() else p.parent / MANIFEST
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not an imesde model manifest")
    for key, kinds in _SETTINGS.items():
        value = data.get(key)
        if key in data and (
            not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        ):
            names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise ModelLoadError(f"{path}: {key} must be {names}, got {value!r}")
    prompts = _prompts(data["prompts"], path) if "prompts" in data else {}
    default = data.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelLoadError(
            f"{path}: default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}"
        )
    return data


def _prompts(value: Any, path: Path) -> dict[str, str]:
    """Named prompts: a JSON object of str to str (``ModelLoadError`` naming ``path``)."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ModelLoadError(f"{path}: prompts must map names to str, got {value!r:.200}")
    return value


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, as lowercase hex (the manifest's ``sha256`` entries)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Writes ``manifest`` (with its format tag) into ``folder``."""
    data = {"format": FORMAT, **manifest}
    # NaN is not JSON: a manifest that holds one is a bug upstream, not a file to write.
    (folder / MANIFEST).write_text(
        json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )


#: The modules of a sentence-transformers pipeline that imesde runs itself.
_PIPELINE_MODULES = ("Transformer", "Pooling", "Normalize")


def read_sentence_settings(folder: Path) -> dict[str, Any]:
    """How a sentence-transformers folder says its model is used, for what it has a file:
    ``pooling`` (``1_Pooling/config.json``: ``"mean"``, ``"cls"``, or the name of a mode imesde
    does not pool by, such as ``"max"``; ``include_prompt`` when it leaves a prompt's tokens out
    of the pooling), ``normalize`` (a ``Normalize`` module in ``modules.json``),
    ``unsupported_modules`` (other modules there, such as ``Dense``), ``max_length``
    (``sentence_bert_config.json``'s ``max_seq_length``) and ``do_lower_case`` (when it says
    texts are lowercased before the tokenizer)."""
    out: dict[str, Any] = {}
    for path in (folder / "1_Pooling" / "config.json", folder / "pooling_config.json"):
        if path.is_file():
            cfg = read_json(path, dict)
            for key, value in cfg.items():
                # "false" as a string would be true: a pooling imesde does not apply silently.
                if key.startswith("pooling_mode_") and type(value) is not bool:
                    raise ModelLoadError(f"{path}: {key} must be true or false, got {value!r}")
            prefix = "pooling_mode_"
            modes = [k[len(prefix) :] for k, v in cfg.items() if k.startswith(prefix) and v]
            if len(modes) > 1:
                # Concatenated by sentence-transformers (a vector of twice the width): a
                # pooling imesde does not do, not one of the modes alone.
                out["pooling"] = "+".join(modes)
            elif cfg.get("pooling_mode_cls_token"):
                out["pooling"] = "cls"
            elif cfg.get("pooling_mode_mean_tokens", not modes):
                out["pooling"] = "mean"
            else:
                out["pooling"] = "+".join(modes) or "none"
            if cfg.get("include_prompt", True) is False:
                out["include_prompt"] = False
            break
    modules = folder / "modules.json"
    if modules.is_file():
        entries = read_json(modules, list)
        if not all(isinstance(e, dict) for e in entries):
            raise ModelLoadError(f"{modules}: every module must be a JSON object")
        types = [str(e.get("type", "")) for e in entries]
        out["normalize"] = any(t.endswith("Normalize") for t in types)
        # A module between pooling and the vector (Dense, LayerNorm, ...) that an ONNX export
        # of the transformer alone leaves out: imesde cannot add it.
        others = [t for t in types if not t.endswith(_PIPELINE_MODULES)]
        if others:
            out["unsupported_modules"] = others
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        config = read_json(st, dict)
        value = config.get("max_seq_length")
        if type(value) is int and value >= 1:
            out["max_length"] = value
        if config.get("do_lower_case") is True:
            out["do_lower_case"] = True
    return out


def lowercases(normalizer: object) -> bool:
    """Whether a ``tokenizer.json`` normaliser lowercases text (BERT's with ``lowercase``,
    ``Lowercase``, or a sequence holding one of them)."""
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "Sequence":
        return any(lowercases(n) for n in normalizer.get("normalizers") or [])
    return kind == "Lowercase" or (kind == "BertNormalizer" and normalizer.get("lowercase") is True)


def read_prompts(folder: Path) -> tuple[dict[str, str], str | None]:
    """The named prompts of a sentence-transformers checkpoint (``config_sentence_transformers
    .json``) and the name of its default one (None unless it names one of them)."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    raw = read_json(path, dict)
    prompts = _prompts(raw.get("prompts") or {}, path)
    default = raw.get("default_prompt_name")
    return prompts, default if isinstance(default, str) and default in prompts else None
