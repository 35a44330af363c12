"""The Python examples of the README (and of the docs' front page, its copy) run as written,
in order: what they leave to the reader (a big file's lines, vectors, queries) is made from
the shared stream, the standing query's endless loop ends once its subscription is closed,
and the Ray block needs a cluster (tests/test_distributed.py runs the same calls). The guide
pages' examples, reference lines with ``...`` for what the reader brings, are checked against
the API instead: every name, method and keyword they use. A renamed argument or method fails
here."""

from __future__ import annotations

import ast
import inspect
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


# What a name stands for on each guide page (its examples are reference lines with `...`
# for what the reader brings, so they are checked against the API, not run).
_GUIDE_NAMES: dict[str, dict[str, Any]] = {
    "filters.md": {"engine": imesde.Engine},
    "lexical.md": {"index": imesde.BM25, "engine": imesde.Engine, "vec": imesde.Engine},
    "models.md": {"embedder": imesde.TextEmbedder},
    "semantic-ids.md": {"model": imesde.RQKMeans, "engine": imesde.Engine},
    "streams.md": {"engine": imesde.Engine, "sub": imesde.Subscription},
    "text.md": {"model": imesde.TextEmbedder, "engine": imesde.Engine},
    "vectors.md": {"engine": imesde.Engine},
    "distributed.md": {},  # `dist` and `engine` are added when Ray is installed
}


def _resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    """What ``node`` (a name or a dotted name: ``engine.search``, ``imesde.build.check``)
    stands for on a page; None for anything else (a call's result, a local variable)."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if owner is None:
            return None
        if not hasattr(owner, node.attr):
            raise AttributeError(f"{ast.unparse(node)}: {owner!r} has no {node.attr!r}")
        return getattr(owner, node.attr)
    return None


@pytest.mark.parametrize("page", sorted(_GUIDE_NAMES))
def test_the_guide_examples_name_what_exists(page: str) -> None:
    """Every method, function, keyword argument and attribute a guide page's Python
    examples use exists with that name and takes those arguments: a renamed one fails here."""
    import imesde.build
    import imesde.semantic_ids

    names: dict[str, Any] = {
        "imesde": imesde,
        **{n: getattr(imesde, n) for n in imesde.__all__},
        **_GUIDE_NAMES[page],
    }
    if page == "distributed.md":
        dist = pytest.importorskip("imesde.distributed")
        names.update(dist=dist, engine=dist.ShardedEngine)
    checked = 0
    for code in _examples(ROOT / "docs" / "guide" / page):
        tree = ast.parse(code.replace("...", "None"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                _resolve(node, names)  # raises for a name that is not there
            if not isinstance(node, ast.Call):
                continue
            target = _resolve(node.func, names)
            if target is None or not callable(target):
                continue
            if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords
            ):
                continue
            try:
                sig = inspect.signature(target)
            except (TypeError, ValueError):  # a class whose signature is its __new__'s
                sig = inspect.signature(target.__new__)
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])
            args = [None] * len(node.args)
            owner = (
                _resolve(node.func.value, names) if isinstance(node.func, ast.Attribute) else None
            )
            if inspect.isclass(owner) and (
                inspect.isfunction(target) or inspect.ismethoddescriptor(target)
            ):
                args = [None, *args]  # a method looked up on its class: self
            try:
                sig.bind(*args, **{k.arg: None for k in node.keywords if k.arg})
            except TypeError as e:
                raise AssertionError(f"{page}: {ast.unparse(node)[:80]}: {e}") from None
            checked += 1
    assert checked >= 2
