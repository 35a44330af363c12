"""Registers the fixtures of ``_fixtures.py`` with pytest. They live there because mypy checks
``tests`` and ``benches`` together and would take two ``conftest.py`` for one module (this
file is excluded from mypy)."""

from _fixtures import pytest_collection_modifyitems, pytest_report_header, smoke, stream_vectors

__all__ = ["pytest_collection_modifyitems", "pytest_report_header", "smoke", "stream_vectors"]
