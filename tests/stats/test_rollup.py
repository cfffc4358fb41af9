"""The day summaries stats keep beside the lake: made once, merged with a day's new files,
made again when a day's files changed, and not needed on disk at all."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import stats.rollup
from stats.metrics import metrics, parse_by
from stats.scope import Scope, connect
from tests.stats.lakes import call, write_lake
from tests.stats.reference import metrics_sql

BY = parse_by("customer,provider,hour")


def answer(lake: Path) -> list[dict[str, object]]:
    """``stats.metrics`` of the whole lake, checked against SQL over every call."""
    with connect() as con:
        rows = metrics(con, Scope(lake), BY).to_pylist()
        reference = metrics_sql(con, Scope(lake), BY)
    assert reference is not None and rows == reference.to_pylist()
    return rows


def summary(home: Path) -> tuple[dict[str, int], list[str], int]:
    """The day's summary: the files it covers, its calls files, when it was written."""
    folder = home / "lake" / "_rollup" / "date=2026-11-30"
    totals = folder / "totals.arrow"
    with pa.memory_map(str(totals)) as source:
        meta = pa.ipc.open_file(source).schema.metadata
    calls = sorted(p.name for p in folder.glob("calls-*.bin"))
    return json.loads(meta[b"files"]), calls, totals.stat().st_mtime_ns


def add_file(lake: Path, name: str, calls: list[dict[str, object]]) -> None:
    """Another rated file in the calls' day (as a later run or stream batch adds one)."""
    other = write_lake(lake.parent.parent / name, calls)
    [src] = other.glob("date=*/*.parquet")
    src.rename(lake / src.parent.name / f"{name}.parquet")


def test_a_day_is_summarised_once(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0), call(2, 1, customer_id="b")])
    first = answer(lake)
    covered, calls, written = summary(tmp_path)
    assert list(covered) == ["part-0.parquet"] and len(calls) == 1
    assert answer(lake) == first
    assert summary(tmp_path) == (covered, calls, written)  # read, not made again


def test_a_day_that_gains_files_has_them_merged_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats.rollup, "CALLS_KEPT_SECONDS", -1)
    lake = write_lake(
        tmp_path, [call(1, 0, duration=Decimal(30)), call(2, 40, ring_duration=Decimal(5))]
    )
    answer(lake)
    [old_calls] = summary(tmp_path)[1]
    read: list[list[str]] = []
    summarize = stats.rollup.summarize
    monkeypatch.setattr(
        stats.rollup, "summarize", lambda con, paths: read.append(paths) or summarize(con, paths)
    )
    # Overlapping the first file in time, with a key it does not have (provider None).
    add_file(lake, "late", [call(3, 10, duration=Decimal(20)), call(4, 3599, provider_id=None)])
    rows = answer(lake)
    assert [[Path(p).name for p in paths] for paths in read] == [["late.parquet"]]
    assert [(r["provider"], r["attempts"], r["channels"]) for r in rows] == [
        (None, 1, 0),  # up for no time at all
        ("carrier", 3, 2),
    ]
    covered, calls, _ = summary(tmp_path)
    assert sorted(covered) == ["late.parquet", "part-0.parquet"]
    assert len(calls) == 1 and calls != [old_calls]  # the old calls file is gone


def test_a_calls_file_outlives_its_summary_for_readers_that_read_it(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0)])
    answer(lake)
    add_file(lake, "late", [call(2, 1)])
    answer(lake)
    assert len(summary(tmp_path)[1]) == 2  # the first is kept CALLS_KEPT_SECONDS


def test_a_day_whose_files_changed_is_summarised_again(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0), call(2, 1)])
    add_file(lake, "late", [call(3, 2)])
    assert [r["attempts"] for r in answer(lake)] == [3]
    (lake / "date=2026-11-30" / "late.parquet").unlink()
    write_lake(tmp_path, [call(1, 0), call(2, 1, customer_id="b", duration=Decimal(9))])
    assert [(r["customer"], r["attempts"]) for r in answer(lake)] == [("acme", 1), ("b", 1)]
    assert list(summary(tmp_path)[0]) == ["part-0.parquet"]


def test_a_torn_summary_is_made_again(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0), call(2, 1)])
    answer(lake)
    [calls] = summary(tmp_path)[1]
    folder = tmp_path / "lake" / "_rollup" / "date=2026-11-30"
    (folder / calls).write_bytes(b"\0" * 8)  # not the length its totals name
    assert [r["attempts"] for r in answer(lake)] == [2]


def test_a_lake_that_cannot_take_summaries_reads_the_same(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0), call(2, 1)])
    (tmp_path / "lake" / "_rollup").write_text("not a folder")
    assert [r["attempts"] for r in answer(lake)] == [2]
