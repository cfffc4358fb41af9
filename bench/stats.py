"""The stats benchmark: every grouping of SPEC §6 over a month of rated CDRs, against the
floor of reading the lake (``count(*) … GROUP BY customer_id, date``).

Run it from the repository root::

    .venv/bin/python -m bench.stats [--cdrs 20000000] [--days 30] [--home HOME] [--repeat 3]

Without ``--home`` it builds one in a temporary directory (removed at the end): the bundled
sample catalog, ``--cdrs`` simulated CDRs over ``--days`` days from the simulator's start,
rated by ``cdrflow rate`` (Parquet input, so that the lake is what production writes). With
``--home`` it measures that home's lake as it is. The first query is timed alone: it makes
the summaries of every day that has none yet (``stats.rollup``; with ``--home``, remove
``lake/_rollup`` first to time that again). Then each query is timed ``--repeat`` times and
the best kept (the machine may be shared); the ratio to the floor is the result (the target
is within 3×).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.rating import machine
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.home import rated_lake
from pipelines.rate import rate_files
from pipelines.simulate import DEFAULT_START, read_catalog, simulate
from stats.metrics import metrics, parse_by
from stats.scope import Scope, connect

GROUPINGS = (
    "customer,day",
    "customer,hour",
    "provider,day",
    "card,month",
    "code",
    "destination,day",
    "currency",
    "",
)
FLOOR = (
    "SELECT customer_id, date, count(*) FROM read_parquet(?::VARCHAR[], "
    "hive_partitioning = true) GROUP BY customer_id, date"
)


def build_home(home: Path, cdrs: int, days: int, console: Console) -> None:
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
        rows = read_catalog(catalog)
    path = home.parent / "cdrs.parquet"
    started = time.perf_counter()
    simulate(rows, cdrs, path, seed=0, start=DEFAULT_START, days=days)
    console.print(
        f"simulated {cdrs:,} CDRs over {days} days ({time.perf_counter() - started:.0f} s)"
    )
    started = time.perf_counter()
    summary = rate_files(home, [path])
    console.print(f"rated: {summary.rated:,} in the lake ({time.perf_counter() - started:.0f} s)")
    path.unlink()


def best(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cdrs", type=int, default=20_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    console = Console()
    info = machine()
    console.print(
        f"[bold]cdrflow stats benchmark[/bold] on {info['cpu']}, nproc {info['nproc']}, "
        f"load average {info['load']} (DuckDB {info['duckdb']})"
    )
    with tempfile.TemporaryDirectory(prefix="cdrflow-bench-stats-") as tmp:
        home = args.home
        if home is None:
            home = Path(tmp) / "home"
            build_home(home, args.cdrs, args.days, console)
        lake = rated_lake(home)
        scope = Scope(lake)
        files = scope.files()
        with connect() as con:
            [(rows, first, last)] = con.sql(
                "SELECT count(*), min(dt), max(dt) FROM read_parquet(?::VARCHAR[])",
                params=[files],
            ).fetchall()
            # One month: the lake's first 30 days (all of it, at the default size).
            end = min(last + timedelta(microseconds=1), first + timedelta(days=30))
            month = Scope(lake, first, end)
            month_files = month.files()
            console.print(
                f"lake: {rows:,} rated CDRs in {len(files)} files, {first} to {last}; "
                f"the month measured: {len(month_files)} files"
            )
            floor = best(args.repeat, lambda: con.sql(FLOOR, params=[month_files]).fetchall())
            first_query = best(1, lambda: metrics(con, month, parse_by(GROUPINGS[0])))
            console.print(
                f"first query ({GROUPINGS[0]}, making the days' summaries where missing): "
                f"{first_query:.2f} s"
            )
            table = Table(title="stats over one month, best of " + str(args.repeat))
            for column in ("--by", "groups", "seconds", "× floor"):
                table.add_column(column, justify="right")
            table.add_row("floor: count(*) by customer_id, date", "", f"{floor:.2f}", "1.0")
            worst = 0.0
            for by in GROUPINGS:
                keys = parse_by(by)
                groups = metrics(con, month, keys).num_rows
                seconds = best(args.repeat, lambda keys=keys: metrics(con, month, keys))
                worst = max(worst, seconds / floor)
                table.add_row(by or '""', f"{groups:,}", f"{seconds:.2f}", f"{seconds / floor:.1f}")
            console.print(table)
            verdict = "met" if worst <= 3 else "missed"
            console.print(
                f"target: every grouping within 3× the floor — worst {worst:.1f}×, {verdict}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
