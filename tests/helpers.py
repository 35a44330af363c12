"""What test modules import (conftest.py is for pytest: with benches/ beside tests/, a module
named ``conftest`` is not one place)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows of ``x`` scaled to unit length."""
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out.astype(np.float32)
