"""Reading ``model.safetensors`` without the ``safetensors`` package: a JSON header, then the
tensors' bytes."""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from imesde.exceptions import ModelLoadError, ModelNotFoundError

__all__ = ["read_safetensors"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.safetensors`` file as a numpy array (F32, F16, BF16, I64, I32).

    The header is checked as the format defines it: each tensor's bytes lie inside the file,
    match its shape and dtype, and overlap no other tensor's; anything else is
    ``ModelLoadError``."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"weights not found: {p}")
    with open(p, "rb") as f:
        header = _header(p, f)
        body = memoryview(f.read())
    out: dict[str, npt.NDArray[Any]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end, dtype, shape = _entry(p, name, info, len(body))
        spans.append((start, end, name))
        raw = body[start:end]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr: npt.NDArray[Any] = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
        try:
            out[name] = arr.reshape(shape)
        except ValueError as e:  # a shape with no values but dimensions past numpy's limits
            raise ModelLoadError(f"{p}: tensor {name!r} has a bad shape {shape!r} ({e})") from None
    spans.sort()
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise ModelLoadError(f"{p}: tensors {a} and {b} overlap")
    return out


def header_values(path: str | os.PathLike[str]) -> int:
    """How many values the tensors of a ``.safetensors`` file hold, by its header alone (a
    file too short or a header that is not one counts 0: :func:`read_safetensors` says why)."""
    try:
        with open(path, "rb") as f:
            header = _header(Path(path), f)
    except (OSError, ModelLoadError):
        return 0
    return sum(
        math.prod(info["shape"])
        for name, info in header.items()
        if name != "__metadata__"
        and isinstance(info, dict)
        and isinstance(info.get("shape"), list)
        and all(_count(d) for d in info["shape"])
    )


def _header(p: Path, f: BinaryIO) -> dict[str, Any]:
    """The JSON header of the safetensors file ``p`` open as ``f`` (left at the tensors'
    bytes); ``ModelLoadError`` when it is not one."""
    head = f.read(8)
    if len(head) < 8:
        raise ModelLoadError(f"{p} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", head)
    if n > os.fstat(f.fileno()).st_size - 8:
        raise ModelLoadError(f"{p} is not a safetensors file (bad header length)")
    try:
        header = json.loads(f.read(n))
    except (ValueError, RecursionError) as e:
        raise ModelLoadError(f"{p} is not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{p} is not a safetensors file (its header is not an object)")
    return header


def _entry(p: Path, name: str, info: object, size: int) -> tuple[int, int, str, list[int]]:
    """A header entry's offsets, dtype and shape, checked against the body's ``size``."""

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{p}: tensor {name!r} {why}")

    if not isinstance(info, dict):
        raise bad("has no header entry (dtype, shape, data_offsets)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype != "BF16" and dtype not in _DTYPES:
        raise bad(f"has unsupported dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_count(d) for d in shape)):
        raise bad(f"has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))):
        raise bad(f"has bad data_offsets {offsets!r}")
    start, end = offsets
    itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
    if not start <= end <= size:
        raise bad(f"lies outside the file (bytes {start}..{end} of {size})")
    if end - start != math.prod(shape) * itemsize:
        raise bad(f"has {end - start} bytes for shape {shape} of {dtype}")
    return start, end, dtype, shape


def _count(x: object) -> bool:
    return type(x) is int and x >= 0


#: The encoders ``build`` writes: BERT, and the RoBERTa family (RoBERTa, XLM-RoBERTa and
#: CamemBERT: positions counted from the padding index, no token types).
