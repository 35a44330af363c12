"""Data as pandas and pyarrow users hold it: a real stream read into a DataFrame goes in column
by column, its gaps (None, NA, NaT) leave keys out, its times are the instants the frame holds
whatever the container, a time in the wrong unit is refused, and results come back as rows."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

COLUMNS = ["source", "dist", "urgency", "sub"]


@pytest.fixture(scope="module")
def frame(
    stream: list[dict[str, Any]], embedded: tuple[list[str], npt.NDArray[np.float32]]
) -> tuple[Any, npt.NDArray[np.float32]]:
    """The first 800 stream items as ``pd.DataFrame`` makes them (``sub`` is absent from
    most: NaN), and their embeddings in row order."""
    df = pd.DataFrame(stream[:800])
    texts, vectors = embedded
    row = {t: i for i, t in enumerate(texts)}
    return df, vectors[[row[t] for t in df["text"]]]


def _present(record: dict[str, Any]) -> dict[str, Any] | None:
    kept = {k: v for k, v in record.items() if not pd.isna(v)}
    return kept or None


def test_a_stream_frame_goes_in_as_pandas_gives_it(frame: tuple[Any, Any]) -> None:
    df, x = frame
    assert df["sub"].isna().any()
    assert df["sub"].notna().any()
    engine = imesde.Engine(384, num_shards=4, shard_size=256)
    # convert_dtypes() marks the gaps as NA, which to_dict gives as None: such records go in
    # as they are.
    records = df[COLUMNS].convert_dtypes().to_dict("records")
    assert any(r["sub"] is None for r in records)
    times = pd.to_datetime(df["ts"])  # tz-aware UTC
    ids = engine.ingest_vectors(x, texts=df["text"], timestamps=times, metadata=records)
    assert len(engine) == len(df)
    assert ids.dtype == np.int64
    for i in range(0, len(df), 37):
        item = engine.get(int(ids[i]))
        assert item.text == df["text"].iloc[i]
        assert item.ts == times.iloc[i].timestamp()
        assert item.metadata == _present(records[i])
    with_sub = int(df["sub"].notna().sum())
    assert engine.count(where={"sub": {"$exists": True}}) == with_sub
    assert engine.count(where={"sub": {"$exists": False}}) == len(df) - with_sub
    # A column's distinct values as the operand of $in, and a set of them.
    urgencies = df["urgency"].unique()[:2]
    want = int(df["urgency"].isin(urgencies).sum())
    assert engine.count(where={"urgency": {"$in": urgencies}}) == want
    assert engine.count(where={"urgency": {"$in": set(urgencies)}}) == want
    since = times.iloc[400]
    assert engine.count(since=since) == int((times >= since).sum())
    # A 0-d array holds one time as its scalar does.
    zero_d = np.array(since.to_datetime64())
    assert engine.count(since=zero_d) == engine.count(since=since)  # type: ignore[arg-type]

    hits = engine.search_vector(x[5], 10)
    table = pd.DataFrame([h.to_dict() for h in hits])
    assert list(table.columns) == ["id", "text", "score", "ts", "metadata"]
    assert table["id"].tolist() == [h.id for h in hits]
    assert table["score"].tolist() == pytest.approx([h.score for h in hits])
    assert table["metadata"].tolist() == [h.metadata for h in hits]
    fields = engine.get(int(ids[5])).to_dict()
    assert list(fields) == ["id", "vector", "text", "ts", "metadata"]
    np.testing.assert_allclose(fields["vector"], x[5], atol=1e-6)
    # A standing query's event: its hit's fields and the query (None for a vector).
    sub = engine.subscribe(x[5], threshold=0.99)
    (again,) = engine.ingest_vectors(x[5:6], texts=["again"], metadata={"n": 1})
    event = sub.get(timeout=10)
    assert event is not None
    assert event.to_dict() == {
        "id": int(again),
        "text": "again",
        "score": event.score,
        "query": None,
        "ts": event.ts,
        "metadata": {"n": 1},
    }


def test_a_time_is_one_instant_in_every_container(
    frame: tuple[Any, Any], rng: np.random.Generator
) -> None:
    """A Series of Timestamps was read a value at a time through ``Timestamp.timestamp()``,
    which rounds to microseconds, and its ``.values`` to the nanosecond: the two stored one
    time apart, and ``since=`` an item's own time could leave it out."""
    df, x = frame
    base = pd.to_datetime(df["ts"]).dt.tz_localize(None).astype("datetime64[ns]")
    times = base + pd.to_timedelta(rng.integers(0, 10**6, len(base)), unit="ns")
    n = 200
    containers = {
        "series": times[:n],
        "values": times.values[:n],
        "timestamps": list(times[:n]),
        "aware": times[:n].dt.tz_localize("UTC"),
        "index": pd.DatetimeIndex(times[:n]),
        "aware timestamps": list(times[:n].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")),
        # read_parquet and dtype_backend="pyarrow" give these (a TypeError outside
        # imesde's exceptions, and pyarrow arrays DTypeErrors, before)
        "arrow series": times[:n].dt.tz_localize("UTC").astype("timestamp[ns, tz=UTC][pyarrow]"),
        "arrow": pa.array(times[:n]),
        "arrow chunked": pa.chunked_array([pa.array(times[:50]), pa.array(times[50:n])]),
        "arrow scalars": list(pa.array(times[:n])),
    }
    stored = {}
    for name, column in containers.items():
        engine = imesde.Engine(384, num_shards=2, shard_size=128)
        ids = engine.ingest_vectors(x[:n], timestamps=column)
        stored[name] = [engine.get(int(i)).ts for i in ids]
        for i in range(0, n, 7):
            want = int((times[:n] >= times.iloc[i]).sum())
            assert engine.count(since=times.values[i]) == want, (name, i)
            assert engine.count(since=times.iloc[i]) == want, (name, i)
            assert engine.count(until=times.iloc[i]) == n - want, (name, i)
        want = int((times[:n] >= times.iloc[n // 2]).sum())
        assert engine.count(since=pa.array(times)[n // 2]) == want, name
    assert all(stored[name] == stored["values"] for name in containers), stored
    # Microseconds and whole seconds (pandas 3 holds far dates so): a Timestamp as its
    # Series' values, also one beyond int64 nanoseconds (year 3000).
    for unit in ("us", "s"):
        dates = ["2024-05-01 12:00:00.123456", "3000-01-01 00:00:00.000000"]
        column = pd.Series(pd.to_datetime(dates))
        column = column.dt.as_unit(unit)
        engine = imesde.Engine(384, num_shards=1, shard_size=8)
        a = engine.ingest_vectors(x[:2], timestamps=column)
        b = engine.ingest_vectors(x[:2], timestamps=list(column))
        c = engine.ingest_vectors(x[:2], timestamps=column.values)
        assert [engine.get(int(i)).ts for i in a] == [engine.get(int(i)).ts for i in b]
        assert [engine.get(int(i)).ts for i in a] == [engine.get(int(i)).ts for i in c]
    # A Series or list with a gap: NaT is refused, as numpy's is.
    with pytest.raises(imesde.InvalidValueError, match=r"timestamps\[1\] is NaT"):
        engine.ingest_vectors(x[:2], timestamps=pd.Series([times.iloc[0], pd.NaT]))
    with pytest.raises(imesde.InvalidValueError, match="NaT"):
        engine.ingest_vectors(x[:2], timestamps=[times.iloc[0], pd.NaT])
    with pytest.raises(imesde.InvalidValueError, match=r"timestamps\[1\] is NaT"):
        engine.ingest_vectors(x[:2], timestamps=pa.array([times.iloc[0], None]))
    # A date is no instant (a datetime.date is refused so too), in any container.
    days = pa.array(times[:2].dt.date)
    for column in (days, pd.Series(days, dtype=pd.ArrowDtype(days.type))):
        with pytest.raises(imesde.DTypeError, match="got pyarrow date32"):
            engine.ingest_vectors(x[:2], timestamps=column)
    assert len(engine) == 6


@pytest.mark.parametrize(
    "unit",
    ["ms", "ns", "huge", "negative"],
)
def test_a_time_in_the_wrong_unit_is_refused(frame: tuple[Any, Any], unit: str) -> None:
    df, x = frame
    ns = pd.to_datetime(df["ts"][:4]).dt.as_unit("ns").astype("int64")
    seconds = ns // 10**9
    assert (seconds > 8e8).all()  # 1996
    column = {
        "ms": seconds * 1000,  # Kafka's record times
        "ns": ns,
        "huge": [1e300] * 4,
        "negative": -seconds * 100,  # 5,000 years before 1970 and more: year 0 and before
    }[unit]
    engine = imesde.Engine(384, num_shards=1, shard_size=16)
    engine.ingest_vectors(x[4:6], texts=["a", "b"], timestamps=[1.0, 2.0])
    with pytest.raises(imesde.OutOfRangeError, match=r"years 1 to 9999.*divide"):
        engine.ingest_vectors(x[:4], timestamps=column)
    assert len(engine) == 2
    assert [engine.get(i).text for i in (0, 1)] == ["a", "b"]


def test_the_first_and_last_times_a_datetime_holds_are_kept() -> None:
    """In any time zone: ``datetime.max`` is a common "never"."""
    engine = imesde.Engine(4, num_shards=1, shard_size=16)
    x = np.eye(4, dtype=np.float32)
    first = datetime(1, 1, 1, tzinfo=timezone.utc)
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    ids = engine.ingest_vectors(x[:2], timestamps=[first, last])
    assert [engine.get(int(i)).ts for i in ids] == [first.timestamp(), last.timestamp()]
    assert datetime.fromtimestamp(engine.get(int(ids[0])).ts, timezone.utc) == first
    east, west = timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))
    edges = [datetime.min.replace(tzinfo=east), datetime.max.replace(tzinfo=west)]
    ids = engine.ingest_vectors(x[:2], timestamps=edges)
    assert [engine.get(int(i)).ts for i in ids] == [t.timestamp() for t in edges]
    # Bounds of a window may lie anywhere.
    assert engine.count(since=-1e300, until=1e300) == 4


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati"])
def test_naive_datetime_edges_are_times_in_any_local_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A naive ``datetime.min`` is local time, which east of UTC falls in year 0 (west of
    it, ``datetime.max`` in year 10000): its own ``timestamp()`` fails, and ``since=
    datetime.min`` was an error."""
    tzset = getattr(time, "tzset", None)
    if tzset is None:
        pytest.skip("time.tzset is POSIX only")
    monkeypatch.setenv("TZ", zone)
    tzset()
    try:
        # The zone's offsets a few days in from each edge.
        east = datetime(1, 1, 3).astimezone().utcoffset()
        west = datetime(9999, 12, 29).astimezone().utcoffset()
        assert east is not None
        assert west is not None
        want_min = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp() - east.total_seconds()
        want_max = datetime.max.replace(tzinfo=timezone.utc).timestamp() - west.total_seconds()
        engine = imesde.Engine(4, num_shards=1, shard_size=16)
        ids = engine.ingest_vectors(np.eye(4, dtype=np.float32)[:2])
        assert engine.count(since=datetime.min) == engine.count(until=datetime.max) == 2
        ids = engine.ingest_vectors(
            np.eye(4, dtype=np.float32)[2:], timestamps=[datetime.min, datetime.max]
        )
        got = [engine.get(int(i)).ts for i in ids]
        assert got == pytest.approx([want_min, want_max], rel=0, abs=1e-3)
    finally:
        monkeypatch.undo()
        tzset()


class WindowsTime(datetime):
    """A naive time whose ``timestamp()`` fails as Windows' does (``OSError`` outside
    1970-01-02 to 3000: cpython issues 94414, 103648)."""

    def timestamp(self) -> float:
        inside = datetime(1970, 1, 2) <= self < datetime(3001, 1, 1)
        if self.tzinfo is None and not inside:
            raise OSError(22, "Invalid argument")
        return super().timestamp()


def test_naive_times_that_windows_cannot_convert_are_times_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Windows a naive time before 1970 (a birth date, a historical record) or after 3000
    was an InvalidValueError: its own ``timestamp()`` fails there. It is read with the local
    zone's offset at the same date of the nearest year Windows takes."""
    tzset = getattr(time, "tzset", None)
    if tzset is None:
        pytest.skip("time.tzset is POSIX only")
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    tzset()
    try:
        summer, far = datetime(1969, 7, 20, 20, 17), datetime(3500, 7, 1, 12)
        engine = imesde.Engine(4, num_shards=1, shard_size=16)
        ids = engine.ingest_vectors(
            np.eye(4, dtype=np.float32)[:3],
            timestamps=[WindowsTime.combine(t.date(), t.time()) for t in (summer, far)]
            + [WindowsTime(1, 1, 1)],
        )
        got = [engine.get(int(i)).ts for i in ids]
        # Daylight time in July, as this machine's own conversion gives it.
        assert got[:2] == [summer.timestamp(), far.timestamp()]
        year_one = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
        assert abs(got[2] - year_one) < 86_400
        assert engine.count(since=WindowsTime(1969, 1, 1)) == 2
        # The CLI's ISO times (imesde demo --file) of a naive edge, as the engine reads them
        # (the first day's timestamp() looks at year 0 and fails here).
        from imesde.cli import _ts

        engine.ingest_vectors(np.eye(4, dtype=np.float32)[3:], timestamps=[datetime.min])
        assert _ts("0001-01-01T00:00:00") == engine.recent(1)[0].ts
    finally:
        monkeypatch.undo()
        tzset()


def test_gaps_leave_keys_out_and_nan_says_how_to_mark_one(frame: tuple[Any, Any]) -> None:
    df, x = frame
    engine = imesde.Engine(384, num_shards=1, shard_size=64)
    given = [
        {"source": "a", "sub": None},
        {"source": "b", "sub": pd.NA},
        {"source": "c", "when": pd.NaT, "then": np.datetime64("NaT")},
        {"sub": None},
    ]
    ids = engine.ingest_vectors(x[:4], metadata=given)
    assert [engine.get(int(i)).metadata for i in ids] == [
        {"source": "a"},
        {"source": "b"},
        {"source": "c"},
        None,
    ]
    assert engine.count(where={"sub": {"$exists": True}}) == 0
    # A merge with a gap removes the key, as None does.
    assert engine.update_metadata([int(ids[0])], {"source": pd.NA, "n": 1}) == 1
    assert engine.get(int(ids[0])).metadata == {"n": 1}
    # The records of a frame read as it is: NaN in the gaps.
    records = df[COLUMNS][:4].to_dict("records")
    assert any(isinstance(r["sub"], float) for r in records)
    with pytest.raises(imesde.InvalidValueError, match=r"not a finite number.*None is no value"):
        engine.ingest_vectors(x[:4], metadata=records)
    assert len(engine) == 4
    # A numpy time is no metadata value: a nanosecond one was stored as its count of
    # nanoseconds (an int), a microsecond one refused as a datetime.
    for value in (np.datetime64(1, "ns"), np.datetime64(1, "us"), np.timedelta64(5, "ns")):
        with pytest.raises(imesde.DTypeError, match=r"got (datetime64|timedelta64)"):
            engine.ingest_vectors(x[:1], metadata={"t": value})
        with pytest.raises(imesde.InvalidValueError, match=r"got (datetime64|timedelta64)"):
            engine.count(where={"t": {"$gt": value}})
    assert len(engine) == 4
    cleaned = df[COLUMNS][:4].astype(object).where(df[COLUMNS][:4].notna(), None)
    new = engine.ingest_vectors(x[:4], metadata=cleaned.to_dict("records"))
    assert [engine.get(int(i)).metadata for i in new] == [_present(r) for r in records]


def test_missing_texts_are_no_text_where_an_item_may_have_none(frame: tuple[Any, Any]) -> None:
    df, x = frame
    texts = pd.Series([df["text"].iloc[0], None, df["text"].iloc[2], None])
    assert texts.isna().sum() == 2
    engine = imesde.Engine(384, num_shards=1, shard_size=64)
    for column in (texts, texts.astype(object).where(texts.notna(), pd.NA), pa.array(texts)):
        ids = engine.ingest_vectors(x[:4], texts=column)
        assert [engine.get(int(i)).text for i in ids] == [texts[0], None, texts[2], None]


def test_text_engines_take_series_and_arrow_columns(
    frame: tuple[Any, Any], embedder: imesde.TextEmbedder
) -> None:
    df, _ = frame
    engine = imesde.Engine(embedder, num_shards=1, shard_size=64)
    texts = df["text"][:6]
    chunked = pa.chunked_array([texts[:2].tolist(), texts[2:].tolist()])
    for column in (texts, pa.array(texts), chunked):
        ids = engine.ingest_batch(column)
        assert [engine.get(int(i)).text for i in ids] == texts.tolist()
    hits = engine.search_batch(pa.array(texts[:2]), k=1)
    assert [h[0].text for h in hits] == texts[:2].tolist()
    # A bad time in a later chunk is named by its place in the whole input.
    stamps = [1.7e9] * 6
    stamps[5] = 1.7e12  # milliseconds
    with pytest.raises(imesde.OutOfRangeError, match=r"timestamps\[5\].*divide by 1e3"):
        engine.ingest_batch(texts, timestamps=stamps, batch_size=2)
    # A missing text cannot be embedded: the batch is refused whole.
    before = len(engine)
    with pytest.raises(imesde.DTypeError, match=r"texts\[1\] must be str"):
        engine.ingest_batch(pd.Series([texts.iloc[0], None]))
    assert len(engine) == before


def test_frames_and_arrays_are_refused_with_the_call_that_fixes_them(
    frame: tuple[Any, Any],
) -> None:
    df, x = frame
    engine = imesde.Engine(384, num_shards=1, shard_size=64)
    ids = engine.ingest_vectors(x[:3])
    wide = pd.DataFrame(x[:3].astype(np.float64))
    with pytest.raises(imesde.DTypeError, match=r"np\.ascontiguousarray\(x, dtype=np\.float32\)"):
        engine.ingest_vectors(wide.to_numpy())
    fortran = np.asfortranarray(wide.to_numpy())
    # What the message says to do works on the frame's own (Fortran-ordered) values.
    fixed = engine.ingest_vectors(np.ascontiguousarray(fortran, dtype=np.float32))
    assert len(fixed) == 3
    with pytest.raises(imesde.DTypeError, match=r'to_dict\("records"\)'):
        engine.ingest_vectors(x[:3], metadata=df[COLUMNS][:3])
    _scores, found = engine.search_vectors(x[:2], 3)
    with pytest.raises(imesde.ShapeError, match=r"ravel\(\)"):
        engine.get_batch(found)
    assert [i.id for i in engine.get_batch(found.ravel()) if i is not None] == list(found.ravel())
    # An empty micro-batch adds nothing, as ingest_batch([]) does; its columns are checked.
    empty = engine.ingest_vectors(np.empty((0, 384), np.float32), metadata=[])
    assert empty.dtype == np.int64
    assert len(empty) == 0
    none = np.empty((0, 384), np.float32)
    for timestamps in ([1.0], np.array([1.0]), np.array([np.nan])):
        with pytest.raises((imesde.ShapeError, imesde.InvalidValueError)):
            engine.ingest_vectors(none, timestamps=timestamps)
    with pytest.raises(imesde.ShapeError):
        engine.ingest_vectors(none, texts=["a"])
    # Arrow timestamps are instants as numpy's are: a naive one is UTC, not local time.
    (t,) = engine.ingest_vectors(x[:1], timestamps=pa.array([datetime(2024, 1, 1)]))
    assert engine.get(int(t)).ts == datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    assert engine.delete([int(t)]) == 1
    with pytest.raises(imesde.DimensionMismatchError):
        engine.ingest_vectors(np.empty((0, 8), np.float32))
    assert len(engine) == 6
    assert [i.id for i in engine.get_batch(ids) if i is not None] == list(ids)
