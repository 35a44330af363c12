"""The manifest of a model folder imesde built (``imesde-model.json``): its one name, its one
reader and writer, and the sentence-transformers prompts read from a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imesde.exceptions import ModelLoadError

#: The manifest's file name, beside ``model.onnx`` and ``tokenizer.json``.
MANIFEST = "imesde-model.json"
#: Its format tag.
FORMAT = "imesde-model/1"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None


def read_manifest(model: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a built model (its folder, or any file in it), or None when it has
    none. A manifest that is not valid raises ``ModelLoadError``."""
    p = Path(model)
    path = p / MANIFEST if p.is_dir() else p.parent / MANIFEST
    if not path.is_file():
        return None
    data = _json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not an imesde model manifest")
    return data


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Writes ``manifest`` (with its format tag) into ``folder``."""
    data = {"format": FORMAT, **manifest}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_prompts(folder: Path) -> tuple[dict[str, str], str | None]:
    """The named prompts of a sentence-transformers checkpoint (``config_sentence_transformers
    .json``) and the name of its default one (None unless it names one of them)."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    raw = _json(path)
    if not isinstance(raw, dict):
        return {}, None
    prompts = {str(k): str(v) for k, v in (raw.get("prompts") or {}).items()}
    default = raw.get("default_prompt_name")
    return prompts, default if default in prompts else None
