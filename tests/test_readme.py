"""The Python examples of the README (and of the docs' front page, its copy) run as written,
in order: what they leave to the reader (a big file's lines, vectors, queries) is made from
the shared stream, the standing query's endless loop ends once its subscription is closed,
and the Ray block needs a cluster (tests/test_distributed.py runs the same calls). A renamed
argument or method fails here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _examples(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_readme_examples_run(
    page: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stream: list[dict[str, str]],
    embedder: imesde.TextEmbedder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # engine.save("engine.imesde") writes here
    texts = [item["text"] for item in stream[:1000]]
    x = embedder.embed(texts)
    scope: dict[str, Any] = {
        "texts": texts,
        "lines_of_a_big_file": iter(texts),
        "t0": 0.0,
        "x": x,
        "queries": x[:5],
        "new_vector": x[7],
        "q": x[0],
    }
    examples = _examples(ROOT / page)
    ran = 0

    def _run(code: str, scope: dict[str, Any]) -> None:
        exec(compile(code, page, "exec"), scope)  # the page's own examples

    for code in examples:
        if "import ray" in code:
            continue
        if "BM25(method=" in code:
            scope["ids"] = np.arange(len(texts))  # the ids of `texts`, not the search's above
        if "for event in alerts:" in code:
            subscribe, loop = code.split("for event in alerts:", 1)
            _run(subscribe, scope)
            scope["engine"].ingest("kernel panic: not syncing", metadata={"host": "db1"})
            scope["alerts"].close()  # its events read, the loop ends
            _run("for event in alerts:" + loop, scope)
        else:
            _run(code, scope)
        ran += 1
    assert ran == len(examples) - 1 >= 7
    out = capsys.readouterr().out
    assert "kernel: out of memory" in out  # the first example's hit
    assert "kernel panic: not syncing" in out  # the standing query's event
    engine = scope["engine"]
    engine.ingest("nfs client: fix a use-after-free")
    assert engine.recent(1)[0].metadata["semantic_id"]  # attached by the last example
    assert len(scope["same"]) == len(scope["vec"])  # the snapshot loaded back whole
