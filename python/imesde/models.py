"""The former name of :mod:`imesde.build`, kept so that code written for it runs unchanged."""

from __future__ import annotations

from imesde import build as _build
from imesde.build import *  # noqa: F403 (the same names, under the former module)

__all__ = _build.__all__
