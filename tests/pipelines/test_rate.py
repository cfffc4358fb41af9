"""``cdrflow rate``: every record in exactly one place, exactly once, whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.rate
from pipelines import lakefiles
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.rate import SNAPSHOT_ENTITIES, load_tables, rate_files
from pipelines.rerate import read_rated
from schemas.cdr import MONEY, REJECTED
from schemas.errors import CdrflowError
from tests.pipelines.workload import records, write_jsonl

# What differs between two runs that did the same work: when, and which file a row came from.
RUN_COLUMNS = {"rated_at", "rejected_at", "source", "line"}


def new_home(root: Path, name: str) -> Path:
    home = root / name
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
    return home


def lake(home: Path, kind: str) -> pa.Table:
    files = sorted((home / "lake" / kind).glob("date=*/*.parquet"))
    if not files:
        return pa.table({})
    if kind == "rated":  # files of any age: a column they lack is null
        return read_rated([str(f) for f in files])
    return pa.concat_tables(pq.read_table(f, schema=REJECTED) for f in files)


def content(home: Path, kind: str) -> list[tuple[object, ...]]:
    """A lake's rows without the run's own marks, in a stable order."""
    table = lake(home, kind)
    if table.num_rows == 0:
        return []
    columns = [c for c in table.column_names if c not in RUN_COLUMNS]
    rows = [tuple(str(r[c]) for c in columns) for r in table.select(columns).to_pylist()]
    return sorted(rows)


@pytest.fixture
def workload(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "cdrs.jsonl", records(3000, seed=1), broken_every=500)


def test_every_record_lands_in_exactly_one_place(tmp_path: Path, workload: Path) -> None:
    home = new_home(tmp_path, "home")
    summary = rate_files(home, [workload])
    lines = workload.read_text().count("\n")
    assert summary.records == lines
    rated, rejected = lake(home, "rated"), lake(home, "rejected")
    assert rated.num_rows == summary.rated and rejected.num_rows == sum(summary.rejected.values())
    places = (
        rated.select(["source", "line"]).to_pylist()
        + rejected.select(["source", "line"]).to_pylist()
    )
    assert sorted(p["line"] for p in places) == list(range(1, lines + 1))
    assert set(rejected["reject_reason"].to_pylist()) == {
        "invalid",
        "duplicate",
        "unknown_customer",
        "no_route",
        "no_rate",
    }
    broken = rejected.filter(pa.compute.equal(rejected["reject_reason"], "invalid")).to_pylist()
    assert {r["raw"] for r in broken} == {'{"callid": "broken", "dt": '}
    assert all(r["reject_detail"] == "not a JSON object" for r in broken)
    # Each callid is billed once.
    callids = rated["callid"].to_pylist()
    assert len(callids) == len(set(callids))


def test_the_lake_is_hive_partitioned_parquet_with_exact_money(
    tmp_path: Path, workload: Path
) -> None:
    home = new_home(tmp_path, "home")
    rate_files(home, [workload])
    files = list((home / "lake" / "rated").glob("date=*/*.parquet"))
    assert {f.parent.name for f in files} == {"date=2026-11-02"}
    schema = pq.read_schema(files[0])
    stored = pq.ParquetFile(files[0]).schema
    physical = {stored.column(i).path: stored.column(i).physical_type for i in range(len(stored))}
    for name in ("charge", "tax", "rate", "connect_fee", "provider_charge", "profit"):
        assert schema.field(name).type == MONEY
        assert physical[name] == "INT64"  # not fixed-length bytes: DuckDB sums it faster
    with duckdb.connect() as con:
        [(days, charged)] = con.sql(
            f"SELECT count(DISTINCT date), sum(charge) FROM read_parquet("
            f"'{home}/lake/rated/**/*.parquet', hive_partitioning = true)"
        ).fetchall()
    assert days == 1 and charged > 0


def test_a_rerun_of_the_same_file_rates_nothing_new(tmp_path: Path, workload: Path) -> None:
    home = new_home(tmp_path, "home")
    first = rate_files(home, [workload])
    before = content(home, "rated"), content(home, "rejected")
    again = rate_files(home, [workload])
    assert again.records == 0 and again.skipped_inputs == [
        f"{workload}: already rated by run {first.run}"
    ]
    assert (content(home, "rated"), content(home, "rejected")) == before


def test_repeats_across_runs_are_duplicates(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    rows = records(400, seed=3)
    rate_files(home, [write_jsonl(tmp_path / "a.jsonl", rows[:300])])
    second = rate_files(home, [write_jsonl(tmp_path / "b.jsonl", rows[250:])])
    rejected = lake(home, "rejected").to_pylist()
    resent = {
        r["callid"]
        for r in rejected
        if r["reject_reason"] == "duplicate" and r["source"].endswith("b.jsonl")
    }
    billed_first = {
        r["callid"] for r in lake(home, "rated").to_pylist() if r["source"].endswith("a.jsonl")
    }
    overlap = {r["callid"] for r in rows[250:300]}
    assert overlap & billed_first <= resent
    assert second.rejected["duplicate"] >= len(overlap & billed_first)


def test_two_runs_over_split_input_give_the_result_of_one(tmp_path: Path) -> None:
    rows = records(2000, seed=5)
    whole = new_home(tmp_path, "whole")
    rate_files(whole, [write_jsonl(tmp_path / "all.jsonl", rows)])
    split = new_home(tmp_path, "split")
    rate_files(split, [write_jsonl(tmp_path / "first.jsonl", rows[:1100])])
    rate_files(split, [write_jsonl(tmp_path / "second.jsonl", rows[1100:])])
    assert content(split, "rated") == content(whole, "rated")
    assert content(split, "rejected") == content(whole, "rejected")
    # Packages were drawn across the split as in one run.
    drawn = sum(r["package_seconds"] for r in lake(split, "rated").to_pylist())
    assert drawn > 0


def test_held_package_calls_spilled_to_disk_rate_as_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = records(2000, seed=6)
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    memory = new_home(tmp_path, "memory")
    rate_files(memory, [path], block_bytes=64 << 10)
    spills: list[Path] = []
    spill = pipelines.rate.spill
    monkeypatch.setattr("pipelines.rate.spill", lambda t, p: (spills.append(p), spill(t, p)))
    spilled = new_home(tmp_path, "spilled")
    rate_files(spilled, [path], block_bytes=64 << 10, held_bytes=60_000)
    # Some blocks' held calls in memory (the first parts), the later ones on disk.
    assert len(spills) >= 2 and spills[0].name != "held-00000.arrow"
    assert content(spilled, "rated") == content(memory, "rated")
    assert sum(r["package_seconds"] for r in lake(spilled, "rated").to_pylist()) > 0


def test_a_crash_after_the_commit_point_is_rolled_forward(
    tmp_path: Path, workload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = new_home(tmp_path, "clean")
    rate_files(clean, [workload])
    home = new_home(tmp_path, "home")
    moved = []
    real = os.replace

    def crash_after_first_publish(src: str | Path, dst: str | Path) -> None:
        real(src, dst)
        published = "lake/rated/" in str(dst) or "lake/rejected/" in str(dst)
        if "_staging" in str(src) and published:
            moved.append(dst)
            raise KeyboardInterrupt  # the process dies mid-publish

    monkeypatch.setattr(lakefiles.os, "replace", crash_after_first_publish)
    with pytest.raises(KeyboardInterrupt):
        rate_files(home, [workload])
    monkeypatch.undo()
    assert moved, "the crash happened while files were being published"
    again = rate_files(home, [workload])  # recovers, then finds the input already rated
    assert any("committed before a crash" in line for line in again.recovered)
    assert again.records == 0
    assert content(home, "rated") == content(clean, "rated")
    assert content(home, "rejected") == content(clean, "rejected")


def test_a_crash_before_the_commit_point_leaves_no_trace(
    tmp_path: Path, workload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = new_home(tmp_path, "home")

    def die(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lakefiles.Staging, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        rate_files(home, [workload])
    monkeypatch.undo()
    assert not list((home / "lake").glob("r*/date=*/*.parquet"))
    clean = new_home(tmp_path, "clean")
    rate_files(clean, [workload])
    rate_files(home, [workload])
    assert content(home, "rated") == content(clean, "rated")


@pytest.mark.slow
def kill_when(command: list[str], reached: Callable[[], bool], env: dict[str, str]) -> bool:
    """Run ``command`` and SIGKILL it once ``reached()`` (polled); whether it was killed
    (False: it ended first)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    while process.poll() is None and not reached():
        time.sleep(0.002)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


def test_sigkill_at_any_moment_then_a_rerun_gives_the_uninterrupted_lake(tmp_path: Path) -> None:
    rows = records(60_000, seed=9)
    path = write_jsonl(tmp_path / "big.jsonl", rows, broken_every=1000)
    clean = new_home(tmp_path, "clean")
    rate_files(clean, [path])
    home = new_home(tmp_path, "home")
    exe = str(Path(sys.executable).parent / "cdrflow")
    command = [exe, "--home", str(home), "rate", str(path), "--format", "json"]
    env = {**os.environ, "CDRFLOW_BLOCK_BYTES": str(1 << 20)}  # many blocks: kills land mid-run
    staging = home / "lake" / "_staging"

    def staged(earlier: set[Path]) -> int:  # -1 until a new run starts, then its files
        runs = set(staging.glob("*")) - earlier if staging.is_dir() else set()
        return len([f for run in runs for f in run.rglob("*") if f.is_file()]) if runs else -1

    killed = 0
    # Killed at points of progress, not after delays, so on a machine of any speed: as the
    # run starts, then as its first files are written (spilled held calls, lake parts).
    for files in (0, 1, 2, 3, 4):
        earlier = set(staging.glob("*")) if staging.is_dir() else set()
        killed += kill_when(command, lambda e=earlier, n=files: staged(e) >= n, env)
    assert killed, "no run was killed: the workload is too small for this machine"
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert content(home, "rated") == content(clean, "rated")
    assert content(home, "rejected") == content(clean, "rejected")
    assert not any((home / "lake" / "_staging").iterdir())
    shutil.rmtree(tmp_path / "clean")


def test_the_fast_catalog_read_compiles_the_same_tables(tmp_path: Path) -> None:
    """``load_tables`` reads rate rows column-wise; the result equals compiling the rows
    as ``Catalog.list`` gives them (the engine's tests use that form)."""
    from rating.tables import compile_tables

    home = new_home(tmp_path, "home")
    with Catalog(home) as catalog:
        catalog.add(
            "rates",
            {
                "card_id": "retail-usd",
                "prefix": "4420",
                "name": "London",
                "rate": "0.0099",
                "effective_from": "2026-12-01T00:00:00.5Z",
            },
        )
        fast = load_tables(catalog)
        slow = compile_tables({name: catalog.list(name) for name in SNAPSHOT_ENTITIES})
    for name, value in vars(slow).items():
        other = getattr(fast, name)
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, other), name
        elif name not in (
            "version",
            "auth_tech_prefix",
            "route_tech_prefix",
            "dial_prefixes",
            "allot_prefixes",
        ):
            assert value == other, name


def test_the_same_file_twice_in_one_run_is_rated_once(tmp_path: Path, workload: Path) -> None:
    home = new_home(tmp_path, "home")
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(workload.read_bytes())
    summary = rate_files(home, [workload, copy])
    assert summary.skipped_inputs == [f"{copy}: the same content as {workload}, rated once"]
    assert summary.records == workload.read_text().count("\n")


def test_a_typed_parquet_input_lands_like_json_lines_and_its_rejects_keep_their_fields(
    tmp_path: Path, workload: Path
) -> None:
    """The Parquet fast path takes typed rows as they are: the lake is the JSON Lines
    run's, and a rejected row (which has no raw text) keeps its fields as a JSON object."""
    bad = {
        "callid": "bad",
        "dt": "2026-11-02T10:00:00Z",
        "dest_number": "447",
        "sip_code": 999,
        "duration": 0,
    }
    rows = [*records(3000, seed=1), bad]
    typed = pa.Table.from_pylist(
        [{**r, "dt": datetime.fromisoformat(r["dt"]), "duration": Decimal(str(r["duration"]))}
         for r in rows],
        pa.schema([("callid", pa.string()), ("dt", pa.timestamp("us", tz="UTC")),
                   ("dest_number", pa.string()), ("sip_code", pa.int16()),
                   ("duration", pa.decimal128(12, 3)), ("pdd_ms", pa.int32()),
                   ("source_ip", pa.string()), ("sip_user", pa.string()),
                   ("customer_id", pa.string()), ("provider_card_id", pa.string()),
                   ("direction", pa.string())]),
    )  # fmt: skip
    path = tmp_path / "cdrs.parquet"
    pq.write_table(typed, path)
    jsonl = write_jsonl(tmp_path / "same.jsonl", rows)
    parquet_home, json_home = new_home(tmp_path, "parquet"), new_home(tmp_path, "json")
    rate_files(parquet_home, [path])
    rate_files(json_home, [jsonl])
    assert content(parquet_home, "rated") == content(json_home, "rated")
    rejected = lake(parquet_home, "rejected").to_pylist()
    assert {r["reject_reason"] for r in rejected} == {
        "invalid", "duplicate", "unknown_customer", "no_route", "no_rate"
    }  # fmt: skip
    by_line = {i + 1: row for i, row in enumerate(rows)}
    for r in rejected:
        given = json.loads(r["raw"])
        assert given["callid"] == by_line[r["line"]]["callid"] == r["callid"]
        assert given["dest_number"] == by_line[r["line"]]["dest_number"]


def test_a_file_that_grows_while_rated_is_refused_and_nothing_is_committed(
    tmp_path: Path, workload: Path
) -> None:
    home = new_home(tmp_path, "home")
    lines = workload.read_text().splitlines(keepends=True)
    growing = tmp_path / "growing.jsonl"
    growing.write_text("".join(lines[:2000]) + lines[2000][:40])  # the switch is mid-line

    def switch_writes(_: int) -> None:  # after the first block: the switch goes on, once
        if growing.stat().st_size < len("".join(lines[:2001])):
            with growing.open("a") as f:
                f.write(lines[2000][40:] + "".join(lines[2001:2100]))

    with pytest.raises(CdrflowError, match=r"growing.jsonl: changed while it was being rated"):
        rate_files(home, [growing], progress=switch_writes, block_bytes=64 << 10)
    assert content(home, "rated") == content(home, "rejected") == []
    assert not list((home / "lake" / "_runs").glob("*.json"))
    # Once the file is closed, it rates as a whole: its cut line was never rejected.
    summary = rate_files(home, [growing])
    broken = sum(line.startswith('{"callid": "broken"') for line in lines[:2100])
    assert summary.records == 2100 and summary.rejected["invalid"] == broken > 0


def test_a_file_rewritten_in_place_with_the_same_size_is_refused(
    tmp_path: Path, workload: Path
) -> None:
    home = new_home(tmp_path, "home")
    text = workload.read_text()

    def rewritten(_: int) -> None:
        os.utime(workload, ns=(0, 1))  # the same bytes would do; the time says it changed

    with pytest.raises(CdrflowError, match=rf"{len(text):,} bytes, then {len(text):,}"):
        rate_files(home, [workload], progress=rewritten, block_bytes=64 << 10)
    assert content(home, "rated") == []


def test_a_run_mixing_json_lines_csv_and_parquet_rates_as_one_file_would(tmp_path: Path) -> None:
    """docs/operating.md's own example: one run over a JSON Lines, a CSV and a Parquet file (their
    package calls are held and drawn together at the end) rates what one file would."""
    rows = sorted(records(3000, seed=41), key=lambda r: (r["dt"], r["callid"]))
    columns = ["callid", "dt", "dest_number", "sip_code", "duration", "pdd_ms", "source_ip"]
    columns += ["sip_user", "customer_id", "provider_card_id", "direction"]
    whole = write_jsonl(tmp_path / "all.jsonl", rows)
    part = write_jsonl(tmp_path / "cdrs.jsonl", rows[:1000])
    csv_path, parquet_path = tmp_path / "more.csv", tmp_path / "day.parquet"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        second = write_jsonl(tmp_path / "second.jsonl", rows[1000:2000])
        con.execute(
            f"COPY (SELECT {', '.join(columns)} FROM read_json('{second}', "
            "format = 'newline_delimited', columns = {callid: 'VARCHAR', dt: 'VARCHAR', "
            "dest_number: 'VARCHAR', sip_code: 'VARCHAR', duration: 'VARCHAR', "
            "pdd_ms: 'VARCHAR', source_ip: 'VARCHAR', sip_user: 'VARCHAR', "
            "customer_id: 'VARCHAR', provider_card_id: 'VARCHAR', direction: 'VARCHAR'})) "
            f"TO '{csv_path}' (HEADER)"
        )
    typed = pa.Table.from_pylist(
        [{**r, "dt": datetime.fromisoformat(r["dt"]), "duration": Decimal(str(r["duration"]))}
         for r in rows[2000:]],
        pa.schema([("callid", pa.string()), ("dt", pa.timestamp("us", tz="UTC")),
                   ("dest_number", pa.string()), ("sip_code", pa.int16()),
                   ("duration", pa.decimal128(12, 3)), ("pdd_ms", pa.int32()),
                   ("source_ip", pa.string()), ("sip_user", pa.string()),
                   ("customer_id", pa.string()), ("provider_card_id", pa.string()),
                   ("direction", pa.string())]),
    )  # fmt: skip
    pq.write_table(typed, parquet_path)
    mixed, one = new_home(tmp_path, "mixed"), new_home(tmp_path, "one")
    summary = rate_files(mixed, [part, csv_path, parquet_path])
    assert summary.records == len(rows)
    rate_files(one, [whole])
    assert sum(r["package_seconds"] for r in lake(mixed, "rated").to_pylist()) > 0
    assert content(mixed, "rated") == content(one, "rated")

    def reasons(home: Path) -> list[tuple[str, str, str]]:  # the raw text is each file's own
        table = lake(home, "rejected").select(["callid", "reject_reason", "reject_detail"])
        return sorted(tuple(r.values()) for r in table.to_pylist())

    assert reasons(mixed) == reasons(one)


def test_a_file_of_the_same_size_that_differs_only_in_its_middle_is_rated(
    tmp_path: Path,
) -> None:
    """An input is known by every byte, not its size and first and last MiB: a re-export of
    the same size with corrected callids in the middle is rated (the unchanged records are
    duplicates), while the same content under another name is still skipped."""
    rows = records(25_000, seed=42)
    first = write_jsonl(tmp_path / "export.jsonl", rows)
    middle = range(12_000, 13_000)
    text = first.read_bytes()  # the changes lie past the first MiB and before the last
    start, end = (
        text.index(rows[middle[0]]["callid"].encode()),
        text.index(rows[middle[-1]]["callid"].encode()),
    )
    assert 1 << 20 < start < end < len(text) - (1 << 20)
    fixed = [
        {**r, "callid": r["callid"].replace("-", "x", 1)} if i in middle else r
        for i, r in enumerate(rows)
    ]
    second = write_jsonl(tmp_path / "export-fixed.jsonl", fixed)
    assert second.stat().st_size == first.stat().st_size
    home = new_home(tmp_path, "home")
    rate_files(home, [first])
    again = rate_files(home, [second])
    assert again.skipped_inputs == []
    assert again.records == len(fixed)
    landed = lake(home, "rated").to_pylist() + lake(home, "rejected").to_pylist()
    from_second = [r for r in landed if r["source"] == str(second)]
    assert len(from_second) == len(fixed)
    once = Counter(r["callid"] for r in fixed)  # the workload resends some calls itself
    corrected = {fixed[i]["callid"] for i in middle if once[fixed[i]["callid"]] == 1}
    assert len(corrected) > 900
    assert not any(
        r.get("reject_reason") == "duplicate" for r in from_second if r["callid"] in corrected
    )
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(second, copy)
    assert rate_files(home, [copy]).skipped_inputs == [f"{copy}: already rated by run {again.run}"]
