"""Progress of a long one-off job (a model build) on stderr: one line per stage, or a tqdm bar
when tqdm is installed and stderr is a terminal."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from typing import Any


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal: False for none, or one that fails to say (closed by the
    host application), since a diagnostics stream never fails the work it reports on."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):
        return False


class Stages:
    """Call with each stage's description as it starts; ``done`` closes the report."""

    def __init__(self, what: str, expected: int) -> None:
        self.what, self.expected = what, expected
        self.started = self.last = time.perf_counter()
        self.count = 0
        self.silent = False
        self.bar: Any = None
        if stderr_is_terminal():
            # No tqdm, or not one that makes this bar: the stages are lines on stderr.
            with contextlib.suppress(Exception):
                tqdm: Any = importlib.import_module("tqdm").tqdm
                self.bar = tqdm(total=expected, desc=f"imesde: building {what}", leave=True)

    def quiet(self) -> None:
        """Report nothing."""
        self.silent = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, stage: str) -> None:
        self.count += 1
        if self.silent:
            return
        if self.bar is not None:
            if self.count > self.bar.total:
                self.bar.total = self.count
            self.bar.set_postfix_str(stage)
            self.bar.update(1)
            return
        print(
            f"imesde: building {self.what} [{self.count}/{max(self.expected, self.count)}] "
            f"{stage} ({time.perf_counter() - self.started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    def done(self, summary: str) -> None:
        if self.silent:
            return
        took = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.close()
        tail = f": {summary}" if summary else ""
        print(f"imesde: built {self.what} in {took:.1f} s{tail}", file=sys.stderr, flush=True)
