"""The real data of ``../shared/data`` as the benchmarks read it."""

from __future__ import annotations

import gzip
import json
from itertools import islice
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def stream_texts(limit: int | None = None) -> list[str]:
    """The changelog stream's texts in time order (the first ``limit`` of them)."""
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, limit)]


def debtags_query_texts() -> list[str]:
    """Each debtags query's short and long form, in file order."""
    queries = []
    for line in (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        queries += [q["query"], q["query_long"]]
    return queries
