"""``cdrflow rerate``: the lake's own rows rated again with the catalog as it is now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

import pipelines.rerate
from pipelines import commitlog, lakefiles
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_card
from pipelines.cli.demo import sample_catalog
from pipelines.home import rated_lake
from pipelines.lakefiles import read_again_if_swapped
from pipelines.rate import load_tables, package_usage, rate_files
from pipelines.rerate import read_rated, recalc, rerate
from schemas.errors import CdrflowError
from stats.calls import find_call
from stats.scope import RATED_FILES, Scope
from tests.pipelines.test_rate import kill_when, new_home
from tests.pipelines.workload import START, records, write_jsonl

PATIENCE = 300  # seconds an event is waited for: only a hung writer fails a test
# Days of the workload (from Monday 2026-11-02): three in November after the 5th, one in
# December, so that a re-rate of the 5th reaches the end of November and stops there.
OFFSETS = (0, 3, 8, 18, 29)
FROM, TO = date(2026, 11, 5), date(2026, 11, 6)
UK = "pkg-uk-mob-1000"
UK_MONTH = 4000  # acme's UK mobile package, as small_package leaves it


def workload(folder: Path, per_day: int = 400) -> Path:
    rows = [r for d in OFFSETS for r in records(per_day, 100 + d, START + timedelta(days=d))]
    return write_jsonl(folder / "cdrs.jsonl", rows)


def small_package(home: Path) -> None:
    """Acme's UK mobile package holds 2 × 2000 s a month: the workload uses it up mid-month,
    so that which calls draw on it depends on every earlier draw of the month."""
    with Catalog(home) as catalog:
        catalog.edit("packages", "pkg-uk-mob-1000", {"seconds": "2000"})


def new_uk_mobile_rate(home: Path) -> None:
    """From the 5th, UK mobile costs more and is billed by the minute: charges change, and
    billed seconds, so package draws too."""
    with Catalog(home) as catalog:
        catalog.add(
            "rates",
            {
                "card_id": "retail-usd",
                "prefix": "447",
                "name": "United Kingdom Mobile",
                "rate": "0.0450",
                "mcd": "60",
                "pulse": "60",
                "effective_from": "2026-11-05T00:00:00Z",
                "effective_to": "2026-12-01T00:00:00Z",
            },
        )


def rated_home(root: Path, name: str, path: Path, *changes: Callable[[Path], None]) -> Path:
    home = new_home(root, name)
    small_package(home)
    for change in changes:
        change(home)
    rate_files(home, [path])
    return home


def rows(home: Path, kind: str = "rated") -> list[dict[str, Any]]:
    files = sorted(str(p) for p in (home / "lake" / kind).glob("date=*/*.parquet"))
    if kind == "rated":
        return list(read_rated(files).to_pylist())
    with duckdb.connect() as con:
        table = con.sql(
            "SELECT * FROM read_parquet(?::VARCHAR[], union_by_name = true)", params=[files]
        ).to_arrow_table()
    return list(table.to_pylist())


def keyed(found: list[dict[str, Any]], without: tuple[str, ...] = ()) -> dict[str, str]:
    """Each row's content (as text, less ``without``) by callid."""
    return {r["callid"]: text for r, text in zip(found, keyed_rows(found, without), strict=True)}


def texts(found: list[dict[str, Any]], without: tuple[str, ...] = ()) -> list[str]:
    """The rows' content (as text, less ``without``), in a stable order."""
    return sorted(keyed_rows(found, without))


def keyed_rows(found: list[dict[str, Any]], without: tuple[str, ...]) -> list[str]:
    return [json.dumps({k: str(v) for k, v in r.items() if k not in without}) for r in found]


def in_effective_range(r: dict[str, Any]) -> bool:
    return r["customer_id"] == "acme" and FROM <= r["dt"].date() < date(2026, 12, 1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return workload(tmp_path)


def test_a_rate_change_rerated_equals_a_fresh_rating_and_nothing_else_changes(
    tmp_path: Path, path: Path
) -> None:
    home = rated_home(tmp_path, "home", path)
    fresh = rated_home(tmp_path, "fresh", path, new_uk_mobile_rate)
    before = rows(home)
    untouched_files = {
        p: p.read_bytes()
        for p in rated_lake(home).glob("date=*/*.parquet")
        if p.parent.name in ("date=2026-11-02", "date=2026-12-01")
    }
    new_uk_mobile_rate(home)
    record = rerate(home, FROM, TO, ["acme"])

    after = rows(home)
    assert record["effective"] == {"from": "2026-11-05", "to": "2026-12-01"}
    assert record["asked"] == {"from": "2026-11-05", "to": "2026-11-06"}
    assert (
        record["rerated"]
        == sum(map(in_effective_range, before))
        == len(after) - (len(before) - sum(map(in_effective_range, before)))
    )
    assert record["rejected"] == {}
    # Acme's calls from the 5th are what a rating with the new card gives, draws included.
    mine = [r for r in after if in_effective_range(r)]
    theirs = [r for r in rows(fresh) if in_effective_range(r)]
    assert keyed(mine, ("rated_at",)) == keyed(theirs, ("rated_at",))
    changed = keyed([r for r in before if in_effective_range(r)])
    assert sum(changed[k] != v for k, v in keyed(mine).items()) > 0
    # The package ran out mid-month in both: the re-rate drew on top of the draws before
    # the 5th (SPEC §7.4: replayed from the start of the period), not from zero.
    drawn_before = sum(
        r["package_seconds"]
        for r in before
        if r["customer_id"] == "acme"
        and r["dt"].date() < FROM
        and r["package_id"] == "pkg-uk-mob-1000"
    )
    assert 0 < drawn_before < UK_MONTH
    uk_draws = [
        d["seconds"]
        for r in mine
        for d in r["package_draws"]
        if d["package_id"] == "pkg-uk-mob-1000"
    ]
    assert sum(uk_draws) == UK_MONTH - drawn_before
    # Everything else is as it was, byte for byte, and untouched days keep their files.
    assert keyed([r for r in after if not in_effective_range(r)]) == keyed(
        [r for r in before if not in_effective_range(r)]
    )
    assert {p: p.read_bytes() for p in untouched_files} == untouched_files
    charge_before = sum(r["charge"] for r in before if in_effective_range(r))
    charge_after = sum(r["charge"] for r in mine)
    assert Decimal(record["before"]["charge"]) == charge_before
    assert Decimal(record["after"]["charge"]) == charge_after != charge_before
    manifest = json.loads((home / "lake" / "_runs" / f"{record['run']}.json").read_text())
    assert manifest["who"] and manifest["at"] and manifest["customers"] == ["acme"]
    assert manifest["before"] == record["before"] and manifest["after"] == record["after"]
    assert record["run"].startswith("rerate-")

    # Twice equals once, rated_at aside.
    again = rerate(home, FROM, TO, ["acme"])
    assert keyed(rows(home), ("rated_at",)) == keyed(after, ("rated_at",))
    assert again["after"] == record["after"] and again["before"] == record["after"]


def without_india(home: Path, folder: Path) -> None:
    """Retail USD loses its India rows: those calls now have no rate."""
    card = sample_catalog() / "rates" / "retail-usd.csv"
    lines = card.read_text().splitlines(keepends=True)
    kept = folder / "retail-usd.csv"
    kept.write_text("".join(line for line in lines if not line.startswith("91")))
    with Catalog(home) as catalog:
        import_card(catalog, "retail-usd", kept)


def test_a_call_that_now_fails_moves_to_the_rejected_lake_with_its_reason(
    tmp_path: Path, path: Path
) -> None:
    home = rated_home(tmp_path, "home", path)
    before = rows(home)
    rejected_before = rows(home, "rejected")
    india = {
        r["callid"]
        for r in before
        if in_effective_range(r)
        and r["card_id"] == "retail-usd"
        and r["dest_code"].startswith("91")
    }
    assert india
    without_india(home, tmp_path)
    record = rerate(home, FROM, TO, ["acme"])
    assert record["rejected"] == {"no_rate": len(india)}
    after = rows(home)
    assert not india & {r["callid"] for r in after}
    moved = [r for r in rows(home, "rejected") if r["callid"] in india]
    assert len(moved) == len(india) == len(rows(home, "rejected")) - len(rejected_before)
    by_callid = {r["callid"]: r for r in before}
    for r in moved:
        assert r["reject_reason"] == "no_rate" and r["customer_id"] == "acme"
        assert r["reject_detail"].startswith("card retail-usd has no rate for ")
        assert json.loads(r["raw"])["callid"] == r["callid"]
        assert (r["source"], r["line"]) == (
            by_callid[r["callid"]]["source"],
            by_callid[r["callid"]]["line"],
        )
    # Twice equals once: nothing moves again.
    again = rerate(home, FROM, TO, ["acme"])
    assert again["rejected"] == {}
    assert keyed(rows(home), ("rated_at",)) == keyed(after, ("rated_at",))
    assert len(rows(home, "rejected")) == len(rejected_before) + len(india)


def day_totals(home: Path, day: date) -> tuple[int, Decimal]:
    """What a stats reader of one day sees: its calls and its charge."""
    scope = Scope(
        rated_lake(home),
        datetime.combine(day, datetime.min.time(), UTC),
        datetime.combine(day + timedelta(1), datetime.min.time(), UTC),
    )

    def query() -> tuple[int, Decimal]:
        with duckdb.connect() as con:
            [(n, charge)] = con.execute(
                f"SELECT count(*), sum(charge) FROM {RATED_FILES}", [scope.files()]
            ).fetchall()
        return int(n), charge

    return read_again_if_swapped(query)


def test_a_reader_during_a_rerate_sees_the_old_day_or_the_new_one(
    tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = rated_home(tmp_path, "home", path)
    day = date(2026, 11, 10)
    old = day_totals(home, day)
    new_uk_mobile_rate(home)
    seen: list[tuple[int, Decimal]] = []
    first, waiting, stop = threading.Event(), threading.Event(), threading.Event()
    mid = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(day_totals(home, day))
            first.set()

    thread = threading.Thread(target=reader, daemon=True)
    real_replace, real_sleep = os.replace, time.sleep

    def pause_mid_swap(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        if f"/lake/rated/date={day}/" in str(dst) and not mid.is_set():
            mid.set()
            # A plain glob now sees the day's old files and a new one: a mix.
            names = [p.name for p in (rated_lake(home) / f"date={day}").glob("*.parquet")]
            assert any(n.startswith("part-rerate-") for n in names)
            assert any(not n.startswith("part-rerate-") for n in names)
            assert waiting.wait(PATIENCE)  # the reader is waiting for the swap to end

    def noting_sleep(seconds: float) -> None:
        if threading.current_thread() is thread and mid.is_set():
            waiting.set()
        real_sleep(seconds)

    monkeypatch.setattr(lakefiles.os, "replace", pause_mid_swap)
    monkeypatch.setattr(lakefiles.time, "sleep", noting_sleep)
    thread.start()
    try:
        assert first.wait(PATIENCE)
        rerate(home, FROM, TO, ["acme"])
        count = len(seen)
        while len(seen) <= count + 1 and thread.is_alive():  # it reads the new day too
            real_sleep(0.01)
    finally:
        stop.set()
        thread.join(PATIENCE)
    monkeypatch.undo()
    new = day_totals(home, day)
    assert new != old and mid.is_set() and waiting.is_set()
    assert set(seen) <= {old, new}, set(seen) - {old, new}
    assert seen[0] == old and seen[-1] == new


def test_a_query_that_listed_the_old_files_starts_over_after_the_swap(
    tmp_path: Path, path: Path
) -> None:
    home = rated_home(tmp_path, "home", path)
    scope = Scope(rated_lake(home), datetime(2026, 11, 10, tzinfo=UTC))
    stale = [scope.files()]
    new_uk_mobile_rate(home)
    rerate(home, FROM, TO, ["acme"])
    listed: list[list[str]] = []

    def query() -> int:
        files = stale.pop() if stale else scope.files()
        listed.append(files)
        with duckdb.connect() as con:
            [(n,)] = con.execute(f"SELECT count(*) FROM {RATED_FILES}", [files]).fetchall()
        return int(n)

    assert read_again_if_swapped(query) == sum(
        1 for r in rows(home) if r["dt"] >= datetime(2026, 11, 10, tzinfo=UTC)
    )
    assert len(listed) == 2 and listed[0] != listed[1]


def test_a_rerate_killed_at_any_moment_then_run_again_gives_the_uninterrupted_lake(
    tmp_path: Path,
) -> None:
    big = workload(tmp_path, per_day=6000)
    clean = rated_home(tmp_path, "clean", big)
    home = rated_home(tmp_path, "home", big)
    for each in (clean, home):
        new_uk_mobile_rate(each)
    rerate(clean, FROM, TO, ["acme"])
    exe = str(Path(sys.executable).parent / "cdrflow")
    command = [exe, "--home", str(home), "rerate", "--from", str(FROM), "--to", str(TO)]
    command += ["--customer", "acme", "--format", "json"]
    lake = home / "lake"

    killed = 0
    # Killed at points of the run's progress: as it starts, as it reads and rates (its
    # staging there), as its files are written, and at its commit point (its manifest
    # there: its files being moved in and the old ones removed).
    for point in (-1, 0, 1, 2, 100):
        earlier = set(lake.glob("_runs/rerate-*.json")) | set(lake.glob("_staging/*"))

        def progress(earlier: set[Path] = earlier) -> int:
            if set(lake.glob("_runs/rerate-*.json")) - earlier:
                return 100
            runs = set(lake.glob("_staging/*")) - earlier
            return sum(1 for r in runs for _ in r.rglob("*.parquet")) if runs else -1

        killed += kill_when(command, lambda p=progress, at=point: p() >= at, dict(os.environ))
    assert killed, "no run was killed: the workload is too small for this machine"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert keyed(rows(home), ("rated_at",)) == keyed(rows(clean), ("rated_at",))
    assert texts(rows(home, "rejected"), ("rejected_at",)) == texts(
        rows(clean, "rejected"), ("rejected_at",)
    )
    assert not any((lake / "_staging").iterdir())


def test_a_rerate_waits_for_the_lake_lock_then_names_its_holder(
    tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = rated_home(tmp_path, "home", path)
    script = (
        "import sys; from pathlib import Path; from pipelines.lakefiles import lake_lock\n"
        "with lake_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(pipelines.rerate, "LOCK_WAIT", 0.2)
        with pytest.raises(CdrflowError) as caught:
            rerate(home, FROM, TO)
        holder.stdin.close()
        holder.wait(PATIENCE)
    message = str(caught.value)
    assert f"pid and command: {holder.pid} -c " in message
    assert "\n" not in message and "more than 0.2 s" in message
    # Free again: the re-rate runs.
    assert rerate(home, FROM, TO)["rerated"] > 0


def test_a_stream_worker_reloads_usage_after_a_rerate(tmp_path: Path, path: Path) -> None:
    """A worker keeps package usage between batches and adds the draws other writers
    committed; a re-rate's entry replaces files, so the worker reads the lake again
    rather than adding the new draws on top of the ones they replace."""
    from pipelines.stream import Worker

    home = rated_home(tmp_path, "home", path)
    worker = Worker.__new__(Worker)  # its lake side only: no consumer, no broker
    worker.home, worker.author = home, "stream-test"
    worker.con = duckdb.connect()
    with Catalog(home) as catalog:
        worker.tables = load_tables(catalog)
    worker._load()
    new_uk_mobile_rate(home)
    rerate(home, FROM, TO, ["acme"])
    worker._catch_up()

    def drawn(usage: Any) -> dict[int, int]:
        used = usage.keys != -1
        return dict(zip(usage.keys[used].tolist(), usage.values[used].tolist(), strict=True))

    lake = drawn(package_usage(worker.con, home, worker.tables))
    assert drawn(worker.usage) == lake
    assert worker.cursor == commitlog.head(home / "lake").seq


def long_calls(found: list[dict[str, Any]], day: date, at_least: Decimal) -> set[str]:
    return {
        r["callid"]
        for r in found
        if r["customer_id"] == "acme"
        and r["dt"].date() == day
        and r["sip_code"] == 200
        and r["duration"] >= at_least
    }


def test_recalc_shortens_exactly_the_long_calls_of_the_day_and_keeps_the_first_original(
    tmp_path: Path, path: Path
) -> None:
    day = date(2026, 11, 10)
    home = rated_home(tmp_path, "home", path)
    before = rows(home)
    long = long_calls(before, day, Decimal(300))
    assert long and all(r["original_duration"] is None for r in before)
    record = recalc(home, day, Decimal(60), "acme", Decimal(300))
    assert record["recalculated"] == len(long) and record["run"].startswith("recalc-")
    assert record["effective"] == {"from": "2026-11-10", "to": "2026-12-01"}
    after = rows(home)
    was = {r["callid"]: r for r in before}
    for r in after:
        if r["callid"] in long:
            assert r["duration"] == 60 and r["original_duration"] == was[r["callid"]]["duration"]
        else:
            assert r["duration"] == was[r["callid"]]["duration"] and r["original_duration"] is None
    # Rated as a fresh rating of the shortened calls would be (draws included) ...
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    shortened = [{**x, "duration": 60} if x["callid"] in long else x for x in lines]
    (tmp_path / "in").mkdir()
    fresh = rated_home(tmp_path, "fresh", write_jsonl(tmp_path / "in" / path.name, shortened))
    in_range = [r for r in after if r["customer_id"] == "acme" and r["dt"].date() >= day]
    theirs = [r for r in rows(fresh) if r["customer_id"] == "acme" and r["dt"].date() >= day]
    skip = ("rated_at", "original_duration", "source")
    assert keyed([r for r in in_range if r["dt"].date() < date(2026, 12, 1)], skip) == keyed(
        [r for r in theirs if r["dt"].date() < date(2026, 12, 1)], skip
    )
    # ... and nothing else changed.
    outside = [r for r in after if not (r["customer_id"] == "acme" and r["dt"].date() >= day)]
    kept = {r["callid"] for r in outside}
    assert keyed(outside) == keyed([r for r in before if r["callid"] in kept])
    assert sum(r["charge"] for r in after) != sum(r["charge"] for r in before)

    # A second recalc (the 60 s calls are long by its measure) keeps the first original; a
    # re-rate keeps what recalc stored.
    again = recalc(home, day, Decimal(30), "acme", Decimal(50))
    assert again["recalculated"] == len(long_calls(after, day, Decimal(50)))
    rerate(home, FROM, TO, ["acme"])
    for r in rows(home):
        if r["callid"] in long:
            assert r["duration"] == 30 and r["original_duration"] == was[r["callid"]]["duration"]


def test_recalc_refuses_a_new_duration_beyond_the_maximum(tmp_path: Path, path: Path) -> None:
    home = rated_home(tmp_path, "home", path)
    for new in (Decimal(3601), Decimal(-1)):
        with pytest.raises(CdrflowError, match=r"--new-duration .* must be between 0 and"):
            recalc(home, date(2026, 11, 10), new)


def test_lake_files_written_before_original_duration_still_read(tmp_path: Path, path: Path) -> None:
    """A lake of files without the column, and with: re-rated, and read whole by `call`."""
    home = rated_home(tmp_path, "home", path)
    for file in rated_lake(home).glob("date=2026-11-0*/*.parquet"):
        table = pq.read_table(file)
        pq.write_table(table.drop_columns(["original_duration"]), file)
    before = rows(home)
    day = date(2026, 11, 5)
    record = recalc(home, day, Decimal(1), "acme", Decimal(100))
    assert record["recalculated"] == len(long_calls(before, day, Decimal(100))) > 0
    old_day = next(r["callid"] for r in rows(home) if r["dt"].date() == date(2026, 11, 2))
    new_day = next(iter(long_calls(before, day, Decimal(100))))
    with duckdb.connect() as con:
        for callid, original in ((old_day, None), (new_day, "set")):
            kind, table = find_call(con, rated_lake(home), callid)
            [row] = table.to_pylist()
            assert kind == "rated" and (row["original_duration"] is None) == (original is None)
