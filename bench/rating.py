"""The rating benchmark: one workload rated three ways, the kernels alone, and ``cdrflow rate``.

Run it from the repository root::

    .venv/bin/python -m bench.rating [--cdrs 2000000] [--prefixes 60000] [--python-cdrs N]
                                     [--skip-e2e | --e2e-only] [--seed 0] [--repeat 2]

What it does, in one temporary directory (removed at the end; nothing is written to the
repository):

1. Builds the benchmark catalog (``bench.catalog.build_bench_catalog``: 4 customer cards of
   ``--prefixes`` nested prefixes, 3 provider cards, auth, routes, DIDs, packages) and adds
   to it, through the ordinary catalog API (``enrich_catalog``), what makes every rule
   count: several package allotments per customer (two of one package with different start
   dates), a duration rounding of each kind, and on one card a second, overlapping version of
   every prefix of up to 4 digits from ``OVERLAP_FROM``. It simulates ``--cdrs`` CDRs over
   two days that straddle that change, the bench catalog's own price change and a month's
   end (so versions, daily/weekly/monthly/once periods and end dates all matter) to Parquet,
   reads and validates them into memory.
2. Rates them three ways and times each without file I/O: the engine, the DuckDB SQL
   formulation (on all cores, and on one) and the plain Python loop (``bench.formulations``:
   both start from the engine's resolved calls and return six numbers a call; see that module
   for the scope). The engine is timed twice: on its whole path (compiled once; then
   ``price``, duplicate marking and ``finish`` building the 40-column rated table over the
   whole set, as ``cdrflow rate`` does) and on the baselines' own scope (``rate_calls``: the
   same resolved calls in, the same six numbers out, by the engine's wrappers and kernels).
   The ratios the targets speak of compare equal work, so they use the second; the first is
   printed beside them. All must agree on every call (billed_duration, package_seconds,
   charge, tax, provider_charge, profit); mismatches are printed and the exit status is 1.
   The engine and the SQL are timed ``--repeat`` times and the best kept (the machine may be
   shared).
3. Times the kernels alone (longest prefix, billing, charge and tax on prebuilt arrays) on
   one thread and on two (the kernels release the GIL; each thread takes half the arrays).
4. Runs the real ``cdrflow --home H rate FILE --format json`` on JSON Lines, CSV and Parquet
   files of the same workload, each in a fresh copy of the home, and reports CDRs/s by wall
   time (process start to exit) and the process's peak RSS. ``--e2e-only`` runs only this
   step (steps 1-3 hold the workload in memory): the way to measure the peak RSS target at
   the 20 million CDRs it is set for.

Targets are reported, not asserted; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from bench.catalog import build_bench_catalog
from bench.formulations import (
    CALLS,
    COMPARED,
    RESULT,
    PythonCatalog,
    load_catalog,
    rate_python,
    rate_sql,
)
from bench.io_floor import copy_seconds, input_source, lake_source
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_card
from pipelines.cdrfile import read_blocks, validate
from pipelines.compiled import cached_tables
from pipelines.dedupe import BilledCallids
from pipelines.home import rated_lake
from pipelines.rate import SNAPSHOT_ENTITIES, load_tables
from pipelines.simulate import read_catalog, simulate
from rating import kernels
from rating.engine import (
    DAY_US,
    Priced,
    _index_of,
    _lookup,
    _micro,
    _strings,
    _times,
    charges,
    draw,
    finish,
    leg,
    price,
    usage_from,
)
from rating.tables import Tables, compile_tables

START = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday; the bench catalog changes prices 12-01
DAYS = 2
OVERLAP_CARD = "sell-usd-1"
OVERLAP_FROM = "2026-11-30T12:00:00Z"
# (customer, package, start date, end date, quantity) added to the bench catalog's four.
EXTRA_ALLOTMENTS = (
    ("northwind", "pkg-welcome", "2026-11-01", "2026-11-30", 1),
    ("fabrikam", "pkg-us-daily", "2026-11-30", None, 2),
    ("fabrikam", "pkg-welcome", "2026-11-15", "2026-12-15", 1),
    ("tailspin", "pkg-eu-weekly", "2026-12-01", None, 1),
    ("tailspin", "pkg-uk-mobile", "2026-11-01", None, 1),
)
DURATION_ROUNDING = {
    "sell-eur-1": "down",
    "sell-usd-2": "half_up",
    "sell-eur-2": "half_down",
    "cost-carrier-b": "half_up",
}
TARGETS = {
    "kernel": 10_000_000,
    "vs_sql": 5.0,
    "vs_python": 100.0,
    "e2e_columnar": 1_000_000,
    "e2e_jsonl": 500_000,
    "rss_bytes": 2 << 30,
}
RSS_CDRS = 20_000_000  # the input size the peak RSS target is for


def enrich_catalog(home: Path) -> None:
    """Make the bench catalog exercise every rating rule (see the module docstring)."""
    with Catalog(home) as catalog:
        for customer, package, start, end, quantity in EXTRA_ALLOTMENTS:
            catalog.add(
                "customer_packages",
                {
                    "customer_id": customer,
                    "package_id": package,
                    "start_date": start,
                    "end_date": end,
                    "quantity": str(quantity),
                },
            )
        for card, mode in DURATION_ROUNDING.items():
            catalog.edit("rate_cards", card, {"duration_rounding": mode})
        rows = catalog.list("rates", card=OVERLAP_CARD)
        extra = [
            {
                **r,
                "rate": (r["rate"] * Decimal("0.93")).quantize(Decimal("0.000001")),
                "effective_from": OVERLAP_FROM,
                "effective_to": None,
            }
            for r in rows
            if len(r["prefix"]) <= 4 and r["effective_from"] is None
        ]
        with tempfile.TemporaryDirectory(prefix="cdrflow-bench-card-") as tmp:
            path = Path(tmp) / f"{OVERLAP_CARD}.csv"
            columns = [
                "prefix",
                "name",
                "rate",
                "connect_fee",
                "mcd",
                "pulse",
                "grace",
                "effective_from",
                "effective_to",
            ]
            with path.open("w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
                writer.writeheader()
                for r in [*rows, *extra]:
                    writer.writerow({k: "" if r[k] is None else r[k] for k in columns})
            import_card(catalog, OVERLAP_CARD, path)


def snapshot(home: Path) -> dict[str, list[dict[str, Any]]]:
    """The catalog rows rating reads (what ``pipelines.rate.load_tables`` compiles)."""
    with Catalog(home) as catalog:
        return {name: catalog.list(name) for name in SNAPSHOT_ENTITIES}


def read_valid(path: Path) -> tuple[pa.Table, int]:
    """A CDR file read and validated in memory: (valid records, number of invalid ones)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    valid, invalid = [], 0
    try:
        for block in read_blocks(path, con):
            good, bad, _ = validate(con, block.table)
            valid.append(good.drop_columns(["raw"]))
            invalid += bad.num_rows
    finally:
        con.close()
    return pa.concat_tables(valid).combine_chunks(), invalid


# -- the engine, and what the baselines are given --------------------------------------------


@dataclass
class EngineRun:
    priced: Priced
    rated: pa.Table
    seconds: dict[str, float] = field(default_factory=dict)


def rate_engine(tables: Tables, batch: pa.Table, home: Path) -> EngineRun:
    """Price, mark duplicates and finish the whole batch, as ``cdrflow rate`` does."""
    t0 = time.perf_counter()
    priced = price(tables, batch)
    t1 = time.perf_counter()
    billed = BilledCallids(home)
    ok = priced.reason == None  # noqa: E711 - elementwise
    priced.reason[billed.mark(batch["callid"], ok)] = "duplicate"
    t2 = time.perf_counter()
    rated = finish(tables, priced, usage_from(tables, []), 0)
    t3 = time.perf_counter()
    return EngineRun(priced, rated, {"price": t1 - t0, "duplicates": t2 - t1, "finish": t3 - t2})


def rate_calls(tables: Tables, calls: pa.Table) -> pa.Table:
    """The engine on the baselines' scope: from the resolved calls they are given
    (``formulations.CALLS``) to their ``RESULT``, by the same wrappers and kernels
    ``price`` and ``finish`` run (card and customer by name, the longest prefix, billing of
    both legs, packages drawn in (dt, callid) order from an empty lake, charge, tax, provider
    charge, profit); a call without a rate row is left out, as the baselines leave it."""
    n = calls.num_rows
    customer = _index_of(calls["customer_id"], tables.customer_index)
    card = _index_of(calls["card_id"], tables.card_index)
    provider_card = np.maximum(_index_of(calls["provider_card_id"], tables.card_index), -1)
    offsets, data = _strings(calls["number"])
    start = np.zeros(n, np.int64)
    times = _times(calls["dt"])
    answered = calls["answered"].to_numpy(zero_copy_only=False)
    duration = _micro(calls["duration"])
    row, billed = leg(tables, offsets, data, start, card, times, answered, duration)
    provider_row, provider_billed = leg(
        tables, offsets, data, start, provider_card, times, answered, duration
    )
    days = np.floor_divide(times, DAY_US)
    draws = draw(
        tables,
        customer,
        days,
        calls["number"],
        start,
        billed,
        calls.select(["dt", "callid"]),
        usage_from(tables, []),
    )
    priced = Priced(
        calls,
        np.full(n, None, dtype=object),
        customer,
        card,
        start,
        row,
        billed,
        provider_card,
        provider_row,
        provider_billed,
        days,
    )
    money = charges(tables, priced, draws.seconds)
    rated = row >= 0
    return pa.table(
        {
            "callid": calls["callid"].filter(pa.array(rated)),
            "billed_duration": billed[rated],
            "package_seconds": draws.seconds[rated],
            "charge": money.charge[rated],
            "tax": money.tax[rated],
            "provider_charge": pa.array(
                money.provider_charge[rated], pa.int64(), mask=~money.known[rated]
            ),
            "profit": pa.array(money.profit[rated], pa.int64(), mask=~money.same[rated]),
        },
        schema=RESULT,
    )


def calls_of(tables: Tables, priced: Priced) -> tuple[pa.Table, np.ndarray]:
    """The baselines' input (``formulations.CALLS``): every priced CDR with a customer and a
    card that is not a duplicate (rated, or ``no_rate``); and their rows in ``priced``."""
    reason = priced.reason
    keep = np.flatnonzero((priced.card >= 0) & ((reason == None) | (reason == "no_rate")))  # noqa: E711
    batch = priced.batch.take(pa.array(keep))
    dest = batch["dest_number"].combine_chunks()
    start = priced.start[keep]
    number = dest
    for s in np.unique(start):
        if s:
            number = pc.if_else(pa.array(start == s), pc.utf8_slice_codeunits(dest, int(s)), number)
    provider = priced.provider_card[keep]
    card_ids = pa.array([*tables.card_ids, None], pa.string())
    calls = pa.table(
        {
            "callid": batch["callid"],
            "dt": batch["dt"],
            "customer_id": pa.array(tables.customer_ids).take(pa.array(priced.customer[keep])),
            "card_id": pa.array(tables.card_ids).take(pa.array(priced.card[keep])),
            "number": number,
            "provider_card_id": card_ids.take(
                pa.array(np.where(provider >= 0, provider, len(tables.card_ids)))
            ),
            "duration": batch["duration"],
            "answered": pc.fill_null(pc.equal(batch["sip_code"], 200), False),
        },
        schema=CALLS,
    )
    return calls, keep


def result_of(rated: pa.Table) -> pa.Table:
    """The engine's rated CDRs as ``formulations.RESULT`` (money in int64 millionths)."""

    def money(name: str) -> pa.Array:
        column = rated[name]
        values = _micro(column)
        return pa.array(values, pa.int64(), mask=pc.is_null(column).to_numpy(zero_copy_only=False))

    return pa.table(
        {
            "callid": rated["callid"],
            "billed_duration": rated["billed_duration"].cast(pa.int64()),
            "package_seconds": rated["package_seconds"].cast(pa.int64()),
            **{name: money(name) for name in ("charge", "tax", "provider_charge", "profit")},
        },
        schema=RESULT,
    )


def mismatches(expected: pa.Table, got: pa.Table, name: str, limit: int = 10) -> list[str]:
    """Where ``got`` differs from ``expected`` (both ``RESULT``), call by call."""
    problems = []
    a = expected.sort_by("callid")
    b = got.sort_by("callid")
    ids_a, ids_b = (
        a["callid"].to_numpy(zero_copy_only=False),
        b["callid"].to_numpy(zero_copy_only=False),
    )
    if len(ids_a) != len(ids_b) or not np.array_equal(ids_a, ids_b):
        only_a = sorted(set(ids_a) - set(ids_b))
        only_b = sorted(set(ids_b) - set(ids_a))
        problems.append(
            f"{name}: {len(ids_b)} rated calls, the engine {len(ids_a)}; only the engine: "
            f"{len(only_a)} {only_a[:5]}; only {name}: {len(only_b)} {only_b[:5]}"
        )
        common = pa.array(sorted(set(ids_a) & set(ids_b)), pa.string())
        a = a.filter(pc.is_in(a["callid"], value_set=common))
        b = b.filter(pc.is_in(b["callid"], value_set=common))
        ids_a = a["callid"].to_numpy(zero_copy_only=False)
    bad = np.zeros(a.num_rows, bool)
    for column in COMPARED:
        x = pc.fill_null(a[column], -(2**63)).to_numpy(zero_copy_only=False)
        y = pc.fill_null(b[column], -(2**63)).to_numpy(zero_copy_only=False)
        bad |= x != y
    for i in np.flatnonzero(bad)[:limit]:
        want = {c: a[c][int(i)].as_py() for c in COMPARED}
        have = {c: b[c][int(i)].as_py() for c in COMPARED}
        diff = {c: (want[c], have[c]) for c in COMPARED if want[c] != have[c]}
        problems.append(f"{name}: callid {ids_a[i]}: (engine, {name}) {diff}")
    if bad.sum() > limit:
        problems.append(f"{name}: … {int(bad.sum()) - limit} more mismatching calls")
    return problems


# -- the kernels alone ------------------------------------------------------------------------


def kernel_arrays(tables: Tables, priced: Priced) -> dict[str, Any]:
    """Prebuilt inputs of longest_prefix, bill, charge and tax: every priced CDR with a card."""
    keep = np.flatnonzero(priced.card >= 0)
    batch = priced.batch.take(pa.array(keep))
    offsets, data = _strings(batch["dest_number"])
    card = priced.card[keep]
    return {
        "n": keep.size,
        "offsets": offsets,
        "data": data,
        "start": priced.start[keep],
        "card": card,
        "times": batch["dt"].cast(pa.int64()).to_numpy().astype(np.int64),
        "answered": pc.fill_null(pc.equal(batch["sip_code"], 200), False).to_numpy(
            zero_copy_only=False
        ),
        "duration": _micro(batch["duration"]),
        "dround": tables.card_duration_rounding[card],
        "precision": tables.card_precision[card],
        "rounding": tables.card_rounding[card],
        "tax": tables.customer_tax[priced.customer[keep]],
        "package": np.zeros(keep.size, np.int64),
        "expected_row": priced.row[keep],
    }


def _steps(
    tables: Tables, a: dict[str, Any], lo: int, hi: int, out: dict[str, Any]
) -> list[tuple[str, Callable[[], None]]]:
    """The four kernels over rows ``lo:hi`` (offsets are absolute: data is shared), in
    order, each a call of its own: each reads what the one before wrote."""
    row, billed = out["row"][lo:hi], out["billed"][lo:hi]
    charge, tax = out["charge"][lo:hi], out["tax"][lo:hi]
    flags = out["flags"][lo:hi]
    precision = a["precision"][lo:hi]

    def lookup() -> None:
        offsets, start, card = a["offsets"][lo : hi + 1], a["start"][lo:hi], a["card"][lo:hi]
        _lookup(tables, offsets, a["data"], start, card, a["times"][lo:hi], row)

    def bill() -> None:
        mcd, pulse, grace = tables.row_mcd, tables.row_pulse, tables.row_grace
        answered, duration = a["answered"][lo:hi], a["duration"][lo:hi]
        kernels.bill(answered, duration, row, a["dround"][lo:hi], mcd, pulse, grace, billed)

    def charge_() -> None:
        rate, fee, package = tables.row_rate, tables.row_connect_fee, a["package"][lo:hi]
        rounding = a["rounding"][lo:hi]
        kernels.charge(billed, package, row, rate, fee, precision, rounding, charge, flags)

    def tax_() -> None:
        kernels.tax(charge, a["tax"][lo:hi], precision, tax, flags)

    return [("longest_prefix", lookup), ("bill", bill), ("charge", charge_), ("tax", tax_)]


def _kernels(tables: Tables, a: dict[str, Any], lo: int, hi: int, out: dict[str, Any]) -> None:
    """The four kernels over rows ``lo:hi``, one after the other."""
    for _, step in _steps(tables, a, lo, hi, out):
        step()


def _outputs(n: int) -> dict[str, Any]:
    return {
        "row": np.empty(n, np.int64),
        "billed": np.empty(n, np.int64),
        "charge": np.empty(n, np.int64),
        "tax": np.empty(n, np.int64),
        "flags": np.zeros(n, np.bool_),
    }


def time_kernels(tables: Tables, a: dict[str, Any], threads: int, repeat: int = 3) -> float:
    """Best seconds of ``repeat`` runs of the four kernels over all rows on ``threads``."""
    n = a["n"]
    out = _outputs(n)
    _kernels(tables, a, 0, min(n, 1000), out)  # compiled already; touch the code paths
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    best = float("inf")
    for _ in range(repeat):
        workers = [
            threading.Thread(target=_kernels, args=(tables, a, int(lo), int(hi), out))
            for lo, hi in itertools.pairwise(bounds)
        ]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    if not np.array_equal(out["row"], a["expected_row"]):
        raise RuntimeError("the kernels alone found other rate rows than price")
    return best


def time_each_kernel(tables: Tables, a: dict[str, Any], repeat: int = 3) -> dict[str, float]:
    """Best seconds of each of the four kernels over all rows on one thread: where the
    kernels' time goes (the 10M CDRs/s target allows 100 ns a CDR for all four)."""
    n = a["n"]
    out = _outputs(n)
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, step in _steps(tables, a, 0, n, out):
            t0 = time.perf_counter()
            step()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    if not np.array_equal(out["row"], a["expected_row"]):
        raise RuntimeError("longest_prefix alone found other rate rows than price")
    return best


# -- cdrflow rate, end to end -----------------------------------------------------------------


# Runs a command and reports its wall time and the peak RSS of its process tree. It is a
# process of its own, started small, because a child's peak RSS counts the memory of the
# process it was started from (Linux records the old address space's peak at exec), and
# the benchmark holds gigabytes by then.
_MEASURE = """
import json, resource, subprocess, sys, time
with open(sys.argv[2], "wb") as out, open(sys.argv[3], "wb") as err:
    t0 = time.perf_counter()
    code = subprocess.call(sys.argv[4:], stdout=out, stderr=err)
    wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(sys.argv[1], "w") as report:
    json.dump({"code": code, "wall": wall, "rss": peak}, report)
"""


def run_cdrflow(home: Path, path: Path, work: Path) -> dict[str, Any]:
    """``cdrflow --home H rate FILE --format json`` in a fresh copy of ``home``: wall time,
    peak RSS of the process, and its summary; then the baselines of the same run
    (``bench.io_floor``): DuckDB copying the input file to Parquet, and rewriting the rated
    lake the run made."""
    fresh = work / f"home-{path.suffix.lstrip('.')}"
    shutil.copytree(home, fresh)
    cdrflow = Path(sys.executable).parent / "cdrflow"
    command = [str(cdrflow), "--home", str(fresh), "rate", str(path), "--format", "json"]
    report, out, err = work / "measure.json", work / "cdrflow.out", work / "cdrflow.err"
    try:
        subprocess.run(
            [sys.executable, "-c", _MEASURE, str(report), str(out), str(err), *command],
            check=True,
        )
        measured = json.loads(report.read_text())
        if measured["code"] != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {err.read_text()}")
        [summary] = json.loads(out.read_text())
        _, copy = copy_seconds(input_source(path), work / "copy.parquet")
        _, rewrite = copy_seconds(lake_source(rated_lake(fresh)), work / "copy.parquet")
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return {
        "wall": measured["wall"],
        "rss": measured["rss"],
        "summary": summary,
        "bytes": path.stat().st_size,
        "copy": copy,
        "rewrite": rewrite,
    }


# -- reporting --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpu": model,
        "nproc": str(len(os.sched_getaffinity(0))),
        "load": load,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_bytes(value: float) -> str:
    return f"{value / (1 << 20):,.0f} MiB"


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def timed(label: str, console: Console, fn: Callable[[], Any]) -> tuple[Any, float]:
    console.print(f"[dim]{label}…[/dim]")
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def best_of(repeat: int, label: str, console: Console, fn: Callable[[], Any]) -> tuple[Any, float]:
    """The result and the best time of ``repeat`` runs (the machine may be shared)."""
    best, value = float("inf"), None
    for _ in range(max(repeat, 1)):
        value, seconds = timed(label, console, fn)
        best = min(best, seconds)
    return value, best


def end_to_end(
    args: argparse.Namespace,
    console: Console,
    home: Path,
    sim_rows: Any,
    work: Path,
    parquet: Path | None,
) -> dict[str, dict[str, Any]]:
    """``cdrflow rate`` on JSON Lines, CSV and Parquet files of the workload (``parquet``:
    already simulated), each file removed once rated; prints their table and returns the
    measurements by input kind."""
    e2e: dict[str, dict[str, Any]] = {}
    # As on every run after the first on an unchanged catalog: the compiled tables are in
    # the home's cache (each run copies the home with it).
    cached_tables(home, load_tables)
    for kind in ("jsonl", "csv", "parquet"):
        path = work / f"cdrs.{kind}"
        if not (kind == "parquet" and parquet is not None):
            timed(
                f"simulating {args.cdrs:,} CDRs as {kind}",
                console,
                lambda path=path: simulate(
                    sim_rows, args.cdrs, path, seed=args.seed, start=START, days=DAYS
                ),
            )
        e2e[kind], _ = timed(
            f"cdrflow rate on {kind}", console, lambda path=path: run_cdrflow(home, path, work)
        )
        path.unlink()
    etable = Table(title="cdrflow rate, end to end (a fresh home each, a subprocess)")
    for column in (
        "input",
        "file",
        "records",
        "rated",
        "wall",
        "CDRs/s (wall)",
        "CDRs/s (run)",
        "peak RSS",
        "DuckDB: file → Parquet",
        "DuckDB: lake → Parquet",
    ):
        etable.add_column(column, justify="right")
    for kind, r in e2e.items():
        summary = r["summary"]
        etable.add_row(
            kind,
            fmt_bytes(r["bytes"]),
            f"{summary['total']:,}",
            f"{summary['rated']:,}",
            f"{r['wall']:.2f} s",
            fmt_rate(rate(summary["total"], r["wall"])),
            fmt_rate(summary["cdrs_per_second"]),
            fmt_bytes(r["rss"]),
            fmt_rate(rate(summary["total"], r["copy"])),
            fmt_rate(rate(summary["rated"], r["rewrite"])),
        )
    console.print(etable)
    console.print(
        "The last two columns are the baselines (bench.io_floor), DuckDB on all cores with no "
        "rating: the input file copied to one Parquet file (records it cannot type skipped), "
        "and the rated lake of the run rewritten to one (rated rows a second). The targets "
        "table gives cdrflow's wall time as a ratio of each."
    )
    with Catalog(home) as catalog:
        _, load_seconds = timed("timing load_tables alone", console, lambda: load_tables(catalog))
    _, cached_seconds = timed(
        "timing cached_tables alone", console, lambda: cached_tables(home, load_tables)
    )
    console.print(
        f"Compiling the catalog takes {load_seconds:.1f} s (pipelines.rate.load_tables); the "
        f"runs above load it from the home's cache in {cached_seconds:.2f} s (the first run on "
        "a changed catalog pays the compile)."
    )
    return e2e


def e2e_targets(args: argparse.Namespace, e2e: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """The end-to-end rows of the targets table: (target, measured, verdict)."""
    rows = []
    for kind, r in e2e.items():
        wanted = TARGETS["e2e_jsonl"] if kind == "jsonl" else TARGETS["e2e_columnar"]
        value = rate(r["summary"]["total"], r["wall"])
        rows.append(
            (
                f"cdrflow rate on {kind} ≥ {wanted:,} CDRs/s (wall)",
                f"{fmt_rate(value)} ({r['copy'] / r['wall']:.2f}× DuckDB's copy of the file, "
                f"{r['rewrite'] / r['wall']:.2f}× its rewrite of the lake)",
                verdict(value >= wanted),
            )
        )
    if e2e:
        peak = max(r["rss"] for r in e2e.values())
        rows.append(
            (
                f"peak RSS < 2 GiB for 20M CDRs (measured at {args.cdrs:,})",
                fmt_bytes(peak),
                verdict(peak < TARGETS["rss_bytes"])
                if args.cdrs >= RSS_CDRS
                else "[yellow]run --e2e-only --cdrs 20000000[/yellow]",
            )
        )
    return rows


def print_targets(console: Console, rows: Sequence[tuple[str, ...]]) -> None:
    ttable = Table(title="Targets")
    for column in ("target", "measured", ""):
        ttable.add_column(column)
    for row in rows:
        ttable.add_row(*row)
    console.print(ttable)


def _e2e_only(args: argparse.Namespace, console: Console, home: Path, work: Path) -> int:
    """Only ``cdrflow rate`` end to end (no workload held in memory): what measures the
    peak RSS at 20 million CDRs."""
    with Catalog(home) as catalog:
        sim_rows = read_catalog(catalog)
    e2e = end_to_end(args, console, home, sim_rows, work, None)
    print_targets(console, e2e_targets(args, e2e))
    rated = {r["summary"]["rated"] for r in e2e.values()}
    if len(rated) > 1:
        console.print(f"[red]the three inputs rated different counts: {sorted(rated)}[/red]")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rating", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cdrs", type=int, default=2_000_000, help="CDRs in the workload")
    parser.add_argument("--prefixes", type=int, default=60_000, help="prefixes per card")
    parser.add_argument("--cards", type=int, default=4, help="customer termination cards")
    parser.add_argument(
        "--python-cdrs", type=int, default=None, help="rate only this many calls in Python"
    )
    parser.add_argument("--skip-e2e", action="store_true", help="skip `cdrflow rate` runs")
    parser.add_argument(
        "--e2e-only",
        action="store_true",
        help="only the `cdrflow rate` runs (nothing held in memory: for --cdrs 20000000)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=2, help="time the engine and SQL this often, keep the best"
    )
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 110))
    work = Path(tempfile.mkdtemp(prefix="cdrflow-bench-"))
    try:
        return _run(args, console, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, console: Console, work: Path) -> int:
    info = machine()
    console.print(
        f"[bold]cdrflow rating benchmark[/bold] on {info['cpu']}, nproc {info['nproc']}, "
        f"load average {info['load']} (Python {info['python']}, DuckDB {info['duckdb']}, "
        f"numpy {info['numpy']}, pyarrow {info['pyarrow']})"
    )
    home = work / "home"
    _, seconds = timed(
        f"building the catalog ({args.prefixes:,} prefixes, {args.cards} cards)",
        console,
        lambda: (
            build_bench_catalog(home, prefixes=args.prefixes, cards=args.cards, seed=args.seed),
            enrich_catalog(home),
        ),
    )
    if args.e2e_only:
        return _e2e_only(args, console, home, work)
    rows = snapshot(home)
    with Catalog(home) as catalog:
        sim_rows = read_catalog(catalog)
    parquet = work / "cdrs.parquet"
    _, sim_seconds = timed(
        f"simulating {args.cdrs:,} CDRs",
        console,
        lambda: simulate(sim_rows, args.cdrs, parquet, seed=args.seed, start=START, days=DAYS),
    )
    (batch, invalid), read_seconds = timed(
        "reading and validating", console, lambda: read_valid(parquet)
    )
    console.print(
        f"catalog: {len(rows['rates']):,} rate rows on {len(rows['rate_cards'])} cards, "
        f"{len(rows['customers'])} customers, {len(rows['customer_packages'])} allotments "
        f"({seconds:.1f} s); workload: {args.cdrs:,} CDRs from {START:%Y-%m-%d} over {DAYS} days "
        f"({sim_seconds:.1f} s), {batch.num_rows:,} valid, {invalid:,} invalid "
        f"(read + validate {read_seconds:.1f} s)"
    )

    # 1. The engine.
    tables, compile_seconds = timed("compiling the tables", console, lambda: compile_tables(rows))
    rate_engine(tables, batch.slice(0, 2000), work)  # loads the compiled kernels (numba cache)
    engine, engine_seconds = best_of(
        args.repeat, "engine", console, lambda: rate_engine(tables, batch, work)
    )
    reasons = {
        r: int(np.count_nonzero(engine.priced.reason == r))
        for r in ("duplicate", "unknown_customer", "no_route", "no_rate")
    }
    expected = result_of(engine.rated)
    calls, call_rows = calls_of(tables, engine.priced)
    package_calls = int(pc.sum(pc.greater(engine.rated["package_seconds"], 0)).as_py() or 0)
    console.print(
        f"engine: {engine.rated.num_rows:,} rated, rejected {reasons}; "
        f"{package_calls:,} calls drew on packages "
        f"({int(pc.sum(engine.rated['package_seconds']).as_py() or 0):,} s); "
        f"the baselines get {calls.num_rows:,} resolved calls"
    )
    rate_calls(tables, calls.slice(0, 2000))  # the same warm start as the full path's
    scoped, scoped_seconds = best_of(
        args.repeat, "engine on the baselines' scope", console, lambda: rate_calls(tables, calls)
    )

    # 2. DuckDB SQL.
    con = duckdb.connect()
    sql_threads = int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    _, sql_load = timed("loading the catalog into DuckDB", console, lambda: load_catalog(con, rows))
    sql, sql_seconds = best_of(
        args.repeat, "DuckDB SQL", console, lambda: rate_sql(con, rows, calls, loaded=True)
    )
    # The same on one thread, for a comparison core for core with the engine.
    con.execute("SET threads = 1")
    sql_one, sql_one_seconds = timed(
        "DuckDB SQL on one thread", console, lambda: rate_sql(con, rows, calls, loaded=True)
    )
    con.close()

    # 3. The Python loop.
    subset = calls
    if args.python_cdrs is not None and args.python_cdrs < calls.num_rows:
        subset = calls.slice(0, args.python_cdrs)
    index, python_load = timed(
        "indexing the catalog in Python", console, lambda: PythonCatalog.of(rows)
    )
    python_out, python_seconds = timed(
        f"Python loop over {subset.num_rows:,} calls",
        console,
        lambda: rate_python(rows, subset, index),
    )
    python = pa.Table.from_pylist(python_out, schema=RESULT)
    if subset.num_rows < calls.num_rows:
        # Packages depend on every earlier call: compare with the engine on the same calls.
        first = np.zeros(len(engine.priced), np.bool_)
        first[call_rows[: subset.num_rows]] = True
        part = engine.priced.select(first)
        python_expected = result_of(finish(tables, part, usage_from(tables, []), 0))
    else:
        python_expected = expected

    problems = (
        mismatches(expected, scoped, "the engine on the baselines' scope")
        + mismatches(expected, sql, "SQL")
        + mismatches(expected, sql_one, "SQL on one thread")
        + mismatches(python_expected, python, "Python")
    )

    n_engine = batch.num_rows
    engine_rate = rate(n_engine, engine_seconds)
    scoped_rate = rate(calls.num_rows, scoped_seconds)
    sql_rate = rate(calls.num_rows, sql_seconds)
    sql_one_rate = rate(calls.num_rows, sql_one_seconds)
    python_rate = rate(subset.num_rows, python_seconds)
    table = Table(title="Rating the same workload three ways (no file I/O)")
    for column in (
        "formulation",
        "CDRs",
        "prepare",
        "rating",
        "CDRs/s",
        "engine ×",
        "whole ×",
    ):
        table.add_column(column, justify="left" if column == "formulation" else "right")
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in engine.seconds.items())
    table.add_row(
        "engine, whole path",
        f"{n_engine:,}",
        f"{compile_seconds:.2f} s",
        f"{engine_seconds:.2f} s",
        fmt_rate(engine_rate),
        "",
        "",
    )
    table.add_row(
        "engine, same scope",
        f"{calls.num_rows:,}",
        "",
        f"{scoped_seconds:.2f} s",
        fmt_rate(scoped_rate),
        "",
        "",
    )
    limited = subset.num_rows < calls.num_rows
    table.caption = (
        "The engine on one thread. Whole path: price, duplicates and finish building the "
        f"rated table ({steps}). Same scope: the baselines' resolved calls in, their six "
        "numbers out. engine ×: the same-scope engine's speed over the row's; whole ×: the "
        "whole path's."
        + (" The Python loop's calls are limited by --python-cdrs." if limited else "")
    )
    for label, prepare, seconds, n, value in (
        (f"DuckDB, {sql_threads} threads", sql_load, sql_seconds, calls.num_rows, sql_rate),
        ("DuckDB, 1 thread", None, sql_one_seconds, calls.num_rows, sql_one_rate),
        ("Python loop", python_load, python_seconds, subset.num_rows, python_rate),
    ):
        table.add_row(
            label,
            f"{n:,}",
            "" if prepare is None else f"{prepare:.2f} s",
            f"{seconds:.2f} s",
            fmt_rate(value),
            f"{scoped_rate / value:.1f}×",
            f"{engine_rate / value:.1f}×",
        )
    console.print(table)
    agree = (
        "[green]all three agree[/green] on every call "
        f"({expected.num_rows:,} rated by the engine (both ways) and SQL, "
        f"{python.num_rows:,} by Python" + (" on its subset" if limited else "") + ")"
        if not problems
        else f"[red]{len(problems)} disagreements[/red]"
    )
    console.print(agree)
    for line in problems:
        console.print(f"[red]{line}[/red]", markup=False, highlight=False)

    # 4. The kernels alone.
    arrays = kernel_arrays(tables, engine.priced)
    one = time_kernels(tables, arrays, 1)
    two = time_kernels(tables, arrays, 2)
    ktable = Table(title="Kernels alone: longest_prefix + bill + charge + tax on prebuilt arrays")
    for column in ("threads", "CDRs", "seconds", "CDRs/s", "CDRs/s per core"):
        ktable.add_column(column, justify="right")
    kernel_rate = rate(arrays["n"], one)
    ktable.add_row(
        "1", f"{arrays['n']:,}", f"{one:.3f}", fmt_rate(kernel_rate), fmt_rate(kernel_rate)
    )
    ktable.add_row(
        "2",
        f"{arrays['n']:,}",
        f"{two:.3f}",
        fmt_rate(rate(arrays["n"], two)),
        fmt_rate(rate(arrays["n"], two) / 2),
    )
    console.print(ktable)
    each = time_each_kernel(tables, arrays)
    console.print(
        "one thread, by kernel (ns a CDR): "
        + ", ".join(f"{name} {seconds / arrays['n'] * 1e9:.1f}" for name, seconds in each.items())
        + f"; together {sum(each.values()) / arrays['n'] * 1e9:.1f} (10M CDRs/s allows 100)"
    )

    # 5. cdrflow rate, end to end.
    e2e: dict[str, dict[str, Any]] = {}
    if not args.skip_e2e:
        e2e = end_to_end(args, console, home, sim_rows, work, parquet)
        for kind, r in e2e.items():
            if r["summary"]["rated"] != engine.rated.num_rows:
                problems.append(
                    f"cdrflow rate on {kind} rated {r['summary']['rated']:,} CDRs, "
                    f"the engine in memory {engine.rated.num_rows:,}"
                )
                console.print(f"[red]{problems[-1]}[/red]")

    # Targets (reported, not asserted).
    targets: list[tuple[str, ...]] = [
        (
            "kernel ≥ 10M CDRs/s on one core",
            fmt_rate(kernel_rate),
            verdict(kernel_rate >= TARGETS["kernel"]),
        )
    ]
    for label, value, target in (
        (f"engine ≥ 5× DuckDB SQL ({sql_threads} threads)", sql_rate, "vs_sql"),
        ("engine ≥ 5× DuckDB SQL (1 thread, core for core)", sql_one_rate, "vs_sql"),
        ("engine ≥ 100× the Python loop", python_rate, "vs_python"),
    ):
        measured = f"{scoped_rate / value:.1f}× ({engine_rate / value:.1f}×)"
        if target == "vs_python":
            # An upper bound in the same run: the same scope prices two legs a call.
            measured += f"; the four kernels alone, one leg: {kernel_rate / value:.0f}×"
        targets.append(
            (
                f"{label}: same scope (whole path)",
                measured,
                verdict(scoped_rate / value >= TARGETS[target]),
            )
        )
    print_targets(console, targets + e2e_targets(args, e2e))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    console.print(
        f"This benchmark's own process peaked at {fmt_bytes(own)} RSS; "
        f"load average at the end {machine()['load']}."
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
