"""Reading ``model.safetensors`` without the ``safetensors`` package: a JSON header, then the
tensors' bytes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imesde.exceptions import ModelLoadError, ModelNotFoundError

__all__ = ["read_safetensors"]

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
