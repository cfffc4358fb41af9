"""``cdrflow rejects replay``: rejected records rated again once the catalog is fixed, each
moving to the rated lake exactly once, atomically, or staying rejected with its reason now."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.rerate
from pipelines import lakefiles
from pipelines.catalog import Catalog
from pipelines.cdrfile import read_messages
from pipelines.compiled import cached_tables
from pipelines.dedupe import BilledCallids
from pipelines.home import catalog_path, rated_lake
from pipelines.lakefiles import Staging, lake_lock, read_again_if_swapped, whole_runs_of
from pipelines.rate import Summary, load_tables, package_usage, rate_block, rate_files
from pipelines.rejects import REDECIDED, rejected_lake, replay
from schemas.cdr import INPUT_NAMES
from schemas.errors import CdrflowError
from stats.rejects import Selection
from tests.pipelines.test_rate import kill_when, new_home
from tests.pipelines.workload import START, records, write_jsonl

PATIENCE = 300  # seconds an event is waited for: only a hung writer fails a test
NEWCO_IP = "192.0.2.200"  # the workload's caller that no customer's auth knows


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalog imported once (hashing its passwords is what takes time)."""
    return catalog_path(new_home(tmp_path_factory.mktemp("store"), "home"))


def home_with(root: Path, name: str, store: Path, fixed: bool = False) -> Path:
    home = root / name
    home.mkdir(parents=True)
    shutil.copyfile(store, catalog_path(home))
    catalog_path(home).chmod(0o600)
    if fixed:
        add_newco(home)
    return home


def add_newco(home: Path) -> None:
    """The customer the workload's unknown caller is: an auth row for its address, a route,
    and a weekly package that its calls use up, so that which call draws on it depends on
    every draw before it."""
    with Catalog(home) as catalog:
        catalog.add(
            "customers",
            {"customer_id": "newco", "name": "NewCo", "status": "active", "currency": "USD",
             "tax_percent": "10"},
        )  # fmt: skip
        catalog.add("auth", {"customer_id": "newco", "kind": "ip", "value": NEWCO_IP})
        catalog.add("routes", {"customer_id": "newco", "card_id": "retail-usd", "priority": "0"})
        catalog.add(
            "packages",
            {"package_id": "pkg-newco", "name": "NewCo 50 minutes a week", "seconds": "3000",
             "frequency": "weekly", "retail": "1"},
        )  # fmt: skip
        catalog.add(
            "customer_packages",
            {"customer_id": "newco", "package_id": "pkg-newco", "start_date": "2026-11-01"},
        )


def cdrs(n: int = 3000, seed: int = 1) -> list[dict[str, Any]]:
    """The workload, some of whose SIP reasons need quoting in CSV (a comma, a line break)."""
    rows = records(n, seed=seed)
    for i, row in enumerate(rows):
        if i % 5 == 0:
            row["sip_reason"] = "Busy, here\nfor now" if i % 2 else "Busy, here"
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(INPUT_NAMES), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        f.write("only,three,fields\n")  # a row of the wrong width: invalid, and replayed so
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    typed = [
        {**r, "dt": datetime.fromisoformat(r["dt"]), "duration": Decimal(str(r["duration"]))}
        for r in rows
    ]
    schema = pa.schema(
        [("callid", pa.string()), ("dt", pa.timestamp("us", tz="UTC")),
         ("dest_number", pa.string()), ("sip_code", pa.int16()),
         ("duration", pa.decimal128(12, 3)), ("pdd_ms", pa.int32()),
         ("sip_reason", pa.string()), ("source_ip", pa.string()), ("sip_user", pa.string()),
         ("customer_id", pa.string()), ("provider_card_id", pa.string()),
         ("direction", pa.string())]
    )  # fmt: skip
    pq.write_table(pa.Table.from_pylist(typed, schema), path)
    return path


WRITERS = {
    "jsonl": lambda path, rows: write_jsonl(path, rows, broken_every=400),
    "csv": write_csv,
    "parquet": write_parquet,
}


def table(home: Path, kind: str) -> list[dict[str, Any]]:
    """Every row of one lake, as any Parquet reader sees it (a plain glob: no run is
    publishing when tests look)."""
    files = sorted(str(p) for p in (home / "lake" / kind).glob("date=*/*.parquet"))
    if not files:
        return []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return list(
            con.sql(
                "SELECT * FROM read_parquet(?::VARCHAR[], union_by_name = true, "
                "hive_partitioning = true)",
                params=[files],
            )
            .to_arrow_table()
            .to_pylist()
        )


def content(home: Path, kind: str) -> list[str]:
    """A lake's rows as text, less when they were written, in a stable order."""
    moments = {"rated_at", "rejected_at"}
    return sorted(
        json.dumps({k: str(v) for k, v in r.items() if k not in moments}, sort_keys=True)
        for r in table(home, kind)
    )


def places(home: Path) -> Counter[tuple[str, int]]:
    """How many times each input record (source, line) is in the lake, rated or rejected."""
    return Counter(
        (r["source"], r["line"]) for kind in ("rated", "rejected") for r in table(home, kind)
    )


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_a_replay_after_adding_the_missing_customer_gives_the_lake_a_right_catalog_gives(
    tmp_path: Path, sample_store: Path, kind: str
) -> None:
    """Rated with the customer missing, then replayed once it is added: the lake equals
    the one rating with the customer there from the start gives, charges, package draws
    and duplicates included, and every input record is in exactly one place."""
    rows = cdrs()
    path = WRITERS[kind](tmp_path / f"cdrs.{kind}", rows)
    clean = home_with(tmp_path, "clean", sample_store, fixed=True)
    rate_files(clean, [path])
    home = home_with(tmp_path, "home", sample_store)
    first = rate_files(home, [path])
    unknown = first.rejected["unknown_customer"]
    assert unknown > 100

    add_newco(home)
    record = replay(home, Selection())

    assert content(home, "rated") == content(clean, "rated")
    assert content(home, "rejected") == content(clean, "rejected")
    newco = [r for r in table(home, "rated") if r["customer_id"] == "newco"]
    assert record["moved"] == len(newco)
    assert record["moved_from"] == {"unknown_customer": len(newco)}
    assert sum(r["package_seconds"] for r in newco) > 0  # the package was drawn on, and used up
    assert any(r["package_seconds"] == 0 and r["billed_duration"] > 0 for r in newco)
    assert record["replayed"] == sum(first.rejected.values())
    assert record["moved"] + sum(record["still_rejected"].values()) == record["replayed"]
    # The repeats of newco's calls are duplicates now; the rest of what failed fails again.
    assert record["still_rejected"]["duplicate"] > first.rejected["duplicate"]
    assert record["unreplayable"] == 0
    seen = places(home)
    assert set(seen.values()) == {1} and sum(seen.values()) == first.records

    # A second replay moves nothing and writes no file.
    before = {p: p.read_bytes() for p in (home / "lake").glob("r*/date=*/*.parquet")}
    again = replay(home, Selection())
    assert again["moved"] == 0 and again["files_replaced"] == 0
    assert again["still_rejected"] == record["still_rejected"]
    assert {p: p.read_bytes() for p in (home / "lake").glob("r*/date=*/*.parquet")} == before


def test_only_the_selected_records_are_replayed(tmp_path: Path, sample_store: Path) -> None:
    path = write_jsonl(tmp_path / "cdrs.jsonl", cdrs(), broken_every=400)
    home = home_with(tmp_path, "home", sample_store)
    rate_files(home, [path])
    add_newco(home)

    def rejected() -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["source"], r["line"]): r for r in table(home, "rejected")}

    before = rejected()
    # Only the no_rate ones: they fail again as they did, and nothing is written again (not
    # even when they were rejected changes); newco's unknown_customer records stay.
    record = replay(home, Selection(reasons=("no_rate",)))
    assert record["moved"] == 0 and record["files_replaced"] == 0
    assert record["still_rejected"] == {"no_rate": record["replayed"]} and record["replayed"] > 0
    assert rejected() == before
    # Then the customer's: they move, or fail again with the reason they have now.
    record = replay(home, Selection(reasons=("unknown_customer",)))
    newco = {(r["source"], r["line"]) for r in table(home, "rated") if r["customer_id"] == "newco"}
    assert record["moved"] == len(newco) > 0
    after = rejected()
    for key, was in before.items():
        if was["reject_reason"] != "unknown_customer":
            assert after[key] == was
        elif key in newco:
            assert key not in after
        else:
            assert after[key]["reject_reason"] in ("duplicate", "no_rate")
            assert after[key]["customer_id"] == "newco"
            assert {k: v for k, v in after[key].items() if k not in REDECIDED} == {
                k: v for k, v in was.items() if k not in REDECIDED
            }


def test_a_record_whose_callid_was_rated_meanwhile_stays_rejected_as_duplicate(
    tmp_path: Path, sample_store: Path
) -> None:
    path = write_jsonl(tmp_path / "cdrs.jsonl", cdrs(600))
    home = home_with(tmp_path, "home", sample_store)
    rate_files(home, [path])
    unknown = [r for r in table(home, "rejected") if r["reject_reason"] == "unknown_customer"]
    # The switch sends one of them again with its customer named: it is billed to acme.
    [first] = [r for r in unknown if json.loads(r["raw"])["dest_number"].startswith("44")][:1]
    resent = json.loads(first["raw"]) | {"customer_id": "acme"}
    assert rate_files(home, [write_jsonl(tmp_path / "resent.jsonl", [resent])]).rated == 1
    add_newco(home)
    record = replay(home, Selection(reasons=("unknown_customer",)))
    [stays] = [r for r in table(home, "rejected") if r["line"] == first["line"]]
    assert stays["reject_reason"] == "duplicate" and stays["customer_id"] == "newco"
    assert stays["reject_detail"].startswith(f"callid {resent['callid']} is already billed")
    assert stays["raw"] == first["raw"] and stays["rejected_at"] == first["rejected_at"]
    billed = [r["customer_id"] for r in table(home, "rated") if r["callid"] == resent["callid"]]
    assert billed == ["acme"]
    newco = [r for r in table(home, "rated") if r["customer_id"] == "newco"]
    assert record["moved"] == len(newco) > 0
    # Every rejected record whose callid is billed is a duplicate.
    rated = {r["callid"] for r in table(home, "rated")}
    assert {r["reject_reason"] for r in table(home, "rejected") if r["callid"] in rated} == {
        "duplicate"
    }


def land_messages(home: Path, messages: list[bytes], topic: str = "cdrs") -> None:
    """Messages of a Kafka partition landed as a stream worker lands a batch (the worker's
    own path: read as messages, rated by ``rate_block`` in arrival order, committed)."""
    with lake_lock(home):
        tables = cached_tables(home, load_tables)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        offsets = np.arange(len(messages), dtype=np.int64)
        partitions = np.zeros(len(messages), np.int64)
        [block] = read_messages(
            con, messages, partitions, offsets, lambda p: f"kafka:{topic}/{p}"
        ).values()
        staging = Staging(home, f"stream-{topic}-p00000-o0")
        usage = package_usage(con, home, tables)
        rate_block(con, tables, block, staging, BilledCallids(home), usage, 0, Summary("s"), None)
        staging.commit({})


def test_records_from_kafka_messages_replay_from_their_raw_message(
    tmp_path: Path, sample_store: Path
) -> None:
    rows = cdrs(300)
    # A message is one record however it is laid out: some with line breaks in them.
    messages = [
        json.dumps(r, indent=1 if i % 3 == 0 else None).encode() for i, r in enumerate(rows)
    ]
    clean = home_with(tmp_path, "clean", sample_store, fixed=True)
    land_messages(clean, messages)
    home = home_with(tmp_path, "home", sample_store)
    land_messages(home, messages)
    assert any("\n" in r["raw"] for r in table(home, "rejected"))
    add_newco(home)
    record = replay(home, Selection(sources=("kafka:cdrs",)))
    assert record["moved"] > 0
    # The stream drew packages in arrival order, the replay in (dt, callid) order: the
    # workload arrives in dt order (its repeats, which come late, are duplicates), so the
    # draws are the same.
    assert content(home, "rated") == content(clean, "rated")
    assert content(home, "rejected") == content(clean, "rejected")


def test_a_rerated_call_that_failed_replays_from_its_fields(
    tmp_path: Path, sample_store: Path
) -> None:
    """A re-rate rejects a call whose route went as a JSON object of its fields (its source
    a CSV file): the replay reads that object, not the file's CSV."""
    from pipelines.rerate import rerate

    path = write_csv(tmp_path / "cdrs.csv", cdrs(600))
    home = home_with(tmp_path, "home", sample_store)
    rate_files(home, [path])
    rated = len(table(home, "rated"))
    with Catalog(home) as catalog:
        [route] = catalog.list("routes", customer="globex")
        catalog.delete("routes", str(route["id"]))
    rerate(home, START.date(), START.date().replace(day=3), ["globex"])
    no_route = [
        r
        for r in table(home, "rejected")
        if r["reject_reason"] == "no_route" and r["customer_id"] == "globex"
    ]
    assert no_route and all(r["raw"].startswith("{") for r in no_route)
    assert all(r["csv_header"] is None for r in no_route)
    with Catalog(home) as catalog:
        catalog.add("routes", {"customer_id": "globex", "card_id": route["card_id"]})
    record = replay(home, Selection(reasons=("no_route",), customers=("globex",)))
    assert record["moved"] == len(no_route) and len(table(home, "rated")) == rated


def drop_csv_header(home: Path) -> None:
    """The rejected lake as a cdrflow before ``csv_header`` wrote it."""
    for path in (home / "lake" / "rejected").glob("date=*/*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["csv_header"]), path)


def test_an_older_csv_reject_takes_its_files_header_or_stays_as_it_is(
    tmp_path: Path, sample_store: Path
) -> None:
    path = write_csv(tmp_path / "cdrs.csv", cdrs(600))
    homes = [home_with(tmp_path, name, sample_store) for name in ("there", "gone")]
    for home in homes:
        rate_files(home, [path])
        drop_csv_header(home)
        add_newco(home)
    there, gone = homes
    moved = replay(there, Selection(reasons=("unknown_customer",)))["moved"]
    assert moved > 0
    before = content(gone, "rejected")
    path.unlink()
    record = replay(gone, Selection(reasons=("unknown_customer",)))
    assert record["moved"] == 0 and record["unreplayable"] == record["replayed"] > 0
    assert record["files_replaced"] == 0 and content(gone, "rejected") == before


def test_a_reader_sees_each_record_in_one_lake_while_a_replay_commits(
    tmp_path: Path, sample_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader of both lakes (as ``cdrflow call`` reads them) sees each record rated or
    rejected, never both and never neither, even mid-swap."""
    path = write_jsonl(tmp_path / "cdrs.jsonl", cdrs(), broken_every=400)
    home = home_with(tmp_path, "home", sample_store)
    total = rate_files(home, [path]).records
    add_newco(home)
    seen: list[Counter[tuple[str, int]]] = []
    first, waiting, stop, mid = (threading.Event() for _ in range(4))

    def read() -> Counter[tuple[str, int]]:
        rated, rejected = whole_runs_of([rated_lake(home), rejected_lake(home)])
        with duckdb.connect() as con:
            found = con.sql(
                "SELECT source, line FROM read_parquet(?::VARCHAR[], union_by_name = true)",
                params=[rated + rejected],
            ).fetchall()
        return Counter(found)

    def reader() -> None:
        while not stop.is_set():
            seen.append(read_again_if_swapped(read))
            first.set()

    thread = threading.Thread(target=reader, daemon=True)
    real_replace, real_sleep = os.replace, time.sleep

    def pause_mid_swap(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        if "/lake/rated/date=" in str(dst) and "part-replay-" in str(dst) and not mid.is_set():
            mid.set()
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
        replay(home, Selection())
        count = len(seen)
        while len(seen) <= count + 1 and thread.is_alive():
            real_sleep(0.01)
    finally:
        stop.set()
        thread.join(PATIENCE)
    monkeypatch.undo()
    assert mid.is_set() and waiting.is_set()
    assert all(set(s.values()) == {1} and sum(s.values()) == total for s in seen)


def test_a_replay_waits_for_the_lake_lock_then_names_its_holder(
    tmp_path: Path, sample_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with(tmp_path, "home", sample_store)
    rate_files(home, [write_jsonl(tmp_path / "cdrs.jsonl", cdrs(300))])
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
            replay(home, Selection())
        holder.stdin.close()
        holder.wait(PATIENCE)
    message = str(caught.value)
    assert f"pid and command: {holder.pid} -c " in message
    assert "\n" not in message and "more than 0.2 s" in message
    assert not list((home / "lake" / "_runs").glob("replay-*"))
    add_newco(home)
    assert replay(home, Selection())["moved"] > 0  # free again: the replay runs


@pytest.mark.slow
def test_a_replay_killed_at_any_moment_then_run_again_gives_the_uninterrupted_lake(
    tmp_path: Path, sample_store: Path
) -> None:
    # Several rate runs: several rejected files, each written again by the replay in turn.
    inputs = [
        write_jsonl(tmp_path / f"cdrs-{k}.jsonl", cdrs(12_000, seed=k), broken_every=999)
        for k in range(5)
    ]
    clean = home_with(tmp_path, "clean", sample_store)
    home = home_with(tmp_path, "home", sample_store)
    for each in (clean, home):
        for path in inputs:
            rate_files(each, [path])
        add_newco(each)
    replay(clean, Selection())
    total = sum(places(home).values())
    exe = str(Path(sys.executable).parent / "cdrflow")
    command = [exe, "--home", str(home), "rejects", "replay", "--format", "json"]
    lake = home / "lake"

    killed = 0
    # Killed at points of the run's progress: as it starts, as it writes the rejected files
    # again one by one (its staging), and at its commit point (its manifest there: its
    # files being moved in and the old ones removed).
    for point in (-1, 0, 1, 2, 3, 100):
        earlier = set(lake.glob("_runs/replay-*.json")) | set(lake.glob("_staging/*"))

        def progress(earlier: set[Path] = earlier) -> int:
            if set(lake.glob("_runs/replay-*.json")) - earlier:
                return 100
            runs = set(lake.glob("_staging/*")) - earlier
            return sum(1 for r in runs for _ in r.rglob("*.parquet")) if runs else -1

        killed += kill_when(command, lambda p=progress, at=point: p() >= at, dict(os.environ))
    assert killed, "no run was killed: the workload is too small for this machine"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert content(home, "rated") == content(clean, "rated")
    assert content(home, "rejected") == content(clean, "rejected")
    seen = places(home)
    assert set(seen.values()) == {1} and sum(seen.values()) == total
    assert not any((lake / "_staging").iterdir())
