"""What test modules import (conftest.py is for pytest: with benches/ beside tests/, a module
named ``conftest`` is not one place)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows of ``x`` scaled to unit length."""
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out.astype(np.float32)


def default_model_copy(dest: Path) -> Path:
    """A folder ``dest`` holding the default model as one self-contained model folder:
    ``model.onnx``, ``tokenizer.json`` and a manifest. Where the default is a built model,
    its folder as it is; where it is the packaged file (CPUs without VNNI), that file beside
    the checkpoint's tokenizer, with the manifest a build would write."""
    import shutil

    import imesde
    from imesde._manifest import MANIFEST, write_manifest

    e = imesde.TextEmbedder(threads=1)
    src = Path(e.model_path).parent
    if (src / MANIFEST).is_file():
        shutil.copytree(src, dest)
        return dest
    dest.mkdir(parents=True)
    shutil.copyfile(e.model_path, dest / "model.onnx")
    shutil.copyfile(e.tokenizer_path, dest / "tokenizer.json")
    settings = {"dim": e.dim, "max_length": e.max_length, "pooling": e.pooling}
    write_manifest(dest, {**settings, "normalize": e.normalize})
    return dest


def run_script(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``code`` run by this Python in a process of its own (for what must not touch the test
    process: an exit, a fork, a memory limit); its output captured, its status not checked."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
