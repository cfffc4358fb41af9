"""``cdrflow rerate``: rate a range of the lake's own rows again with the catalog as it is now
(SPEC §7.4, §7.6).

Under the lake lock (waited for at most ``LOCK_WAIT`` seconds), after recovery:

- the effective range runs from ``--from`` to the end of the last package period that touches
  [from, to) of the selected customers' packages (daily: the day; weekly: the ISO week's
  Sunday; monthly: the month's last day; once: the end of the validity, or the lake's newest
  day when it has none), at most the lake's newest day and at least the day before ``--to``;
- the selected customers' rated rows in it (every customer's when none is given) are turned
  back into input, each keeping its recorded ``customer_id``, and priced again; package
  usage is seeded with the draws of every other rated row of the lake (rows before
  ``--from``, other customers'), and the calls draw in (dt, callid) order;
- a call that now fails goes to the rejected lake with its reason (its raw text: the row's
  input fields as JSON); nothing is marked a duplicate (the rows are the lake's own);
- each affected day is written again whole (the other customers' rows as they were, the
  re-rated rows new) and the run's commit replaces that day's old files
  (``pipelines.lakefiles``: a reader sees the old day or the new one).

The run is recorded in its manifest, ``_runs/rerate-<time>-<hex>.json``: who, when, the asked
and the effective range, the customers, the counts and the money before and after.
"""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.compiled import cached_tables
from pipelines.home import rated_lake
from pipelines.lakefiles import Staging, lake_lock, lake_root, recover, whole_runs
from pipelines.rate import (
    Summary,
    _days,
    _stage_rated,
    _stage_rating_rejects,
    load_tables,
    package_usage,
)
from rating.engine import finish, price
from rating.tables import Tables
from schemas.cdr import INPUT_NAMES, RATED, SECONDS, VALID
from schemas.errors import CdrflowError

# Seconds a re-rate waits for another writer of the lake before it stops (SPEC §7.6).
LOCK_WAIT = 10.0
# recalc's default --max-duration: calls of an hour or more (SPEC §7.4).
MAX_DURATION = Decimal(3600)
MONEY_COLUMNS = ("charge", "tax", "provider_charge")


@dataclass
class Totals(Summary):
    """A re-rate's counts, and the money of its rows before and after (Σ per column)."""

    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # an adjustment's counts


# A change to the rows to rate again (``recalc``'s durations), and its counts for the record.
Adjust = Callable[[pa.Table], tuple[pa.Table, dict[str, Any]]]


def rerate(
    home: Path,
    start: date,
    end: date,
    customers: Sequence[str] = (),
    *,
    kind: str = "rerate",
    details: dict[str, Any] | None = None,
    adjust: Adjust | None = None,
) -> dict[str, Any]:
    """Rate the rows of [``start``, ``end``) (``customers``' only, when given) again, and
    the rest of every package period that range touches; returns the run's record
    (``kind`` names the run, ``details`` adds to the record). ``adjust`` may change the
    rows (``RATED`` columns) before they are priced, and adds its counts to the record."""
    if end <= start:
        raise CdrflowError(f"--to {end.isoformat()} is not after --from {start.isoformat()}")
    chosen = sorted(set(customers))
    with staged_run(home, kind) as run:
        last = effective_last(home, start, end, chosen, newest_day(rated_lake(home)))
        run.record.update(
            {
                "asked": {"from": start.isoformat(), "to": end.isoformat()},
                "effective": {"from": start.isoformat(), "to": (last + timedelta(1)).isoformat()},
                "customers": chosen,
                "catalog_version": run.tables.version,
                **(details or {}),
            }
        )
        summary = _rerate(
            run.con, home, run.tables, run.staging, start, last, chosen, run.now, adjust
        )
        run.record.update(_counts(summary))
    return run.record


@dataclass
class StagedRun:
    """A run that rewrites the lake (a re-rate, a recalculation, a replay), as ``staged_run``
    gives it: its time, the catalog's tables, a DuckDB connection (UTC), its staging (whose
    ``run_id`` names the run) and the record its commit writes (``kind``, ``who`` and ``at``
    filled in)."""

    now: datetime
    tables: Tables
    con: duckdb.DuckDBPyConnection
    staging: Staging
    record: dict[str, Any]


@contextmanager
def staged_run(
    home: Path,
    kind: str,
    staging: Callable[[Path, str], Staging] = Staging,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[StagedRun]:
    """Under the lake lock (waited for at most ``LOCK_WAIT`` seconds; ``on_wait`` is told
    when it must wait), after recovery: the run, named ``<kind>-<time>-<hex>``. Its staging
    is committed with its record when the block ends, and aborted when it raises (or is
    interrupted); the record then gains ``run`` and ``recovered`` (what recovery did)."""
    now = datetime.now(UTC)
    run_id = f"{kind}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with lake_lock(home, on_wait=on_wait, timeout=LOCK_WAIT):
        recovered = recover(home)
        tables = cached_tables(home, load_tables)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            at = now.isoformat().replace("+00:00", "Z")
            record: dict[str, Any] = {"kind": kind, "who": _who(), "at": at}
            run = StagedRun(now, tables, con, staging(home, run_id), record)
            try:
                yield run
                run.staging.commit(record)
            except BaseException:
                run.staging.abort()
                raise
        finally:
            con.close()
    record.update(run=run_id, recovered=recovered)


def _rerate(
    con: duckdb.DuckDBPyConnection,
    home: Path,
    tables: Tables,
    staging: Staging,
    start: date,
    last: date,
    customers: list[str],
    now: datetime,
    adjust: Adjust | None,
) -> Totals:
    summary = Totals(staging.run_id)
    lake = rated_lake(home)
    root = lake_root(home)
    files = whole_runs(lake, lambda day: start <= day <= last)
    old = read_rated(files)
    selected = _selected(old, customers)
    summary.before = _money(old.filter(selected))
    affected = set(pc.unique(_days(old["dt"]).filter(selected)).to_pylist())
    if not affected:
        summary.after = _money(old.slice(0, 0))
        return summary
    # Package usage: the draws of every row that stays (SPEC §7.6: rows before --from and
    # other customers' rows seed it).
    begin = datetime.combine(start, datetime.min.time(), UTC)
    until = datetime.combine(last + timedelta(1), datetime.min.time(), UTC)
    terms = "dt >= ? AND dt < ?" + (" AND customer_id IN (SELECT unnest(?))" if customers else "")
    params: list[Any] = [begin, until, *([customers] if customers else [])]
    usage = package_usage(
        con, home, tables, [Path(f) for f in whole_runs(lake)], where=(f"NOT ({terms})", params)
    )
    rows = old.filter(selected)
    if adjust is not None:
        rows, summary.extra = adjust(rows)
    index = pa.array(np.arange(rows.num_rows, dtype=np.int64))
    batch = pa.Table.from_arrays(
        [*(rows[name] for name in INPUT_NAMES), rows["source"], rows["line"], index],
        schema=VALID,
    )
    priced = price(tables, batch)
    stamp = int(now.timestamp() * 1_000_000)
    failed = priced.reason != None  # noqa: E711 - elementwise
    if failed.any():
        _stage_rating_rejects(con, staging, tables, priced.select(failed), None, stamp, summary)
    rerated = finish(tables, priced, usage, stamp)
    # What rating does not compute stays as stored (finish writes it null).
    at = RATED.get_field_index("original_duration")
    kept = rows["original_duration"].filter(pa.array(~failed))
    rerated = rerated.set_column(at, RATED.field(at), kept)
    summary.after = _money(rerated)
    days = _days(old["dt"])
    in_affected = pc.is_in(days, pa.array(sorted(affected), pa.date32()))
    unchanged = old.filter(pc.and_(in_affected, pc.invert(selected)))
    _stage_rated(staging, unchanged, Summary(staging.run_id))
    _stage_rated(staging, rerated, summary)
    staging.replaces = [
        str(Path(f).relative_to(root))
        for f in files
        if date.fromisoformat(Path(f).parent.name.removeprefix("date=")) in affected
    ]
    return summary


def read_rated(files: Sequence[str]) -> pa.Table:
    """Rated files as one table of ``schemas.cdr.RATED`` (columns an older file lacks are
    null)."""
    parts = [conform(pq.read_table(f)) for f in files]
    return pa.concat_tables(parts) if parts else RATED.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """A rated file's table with every column of ``RATED``, in its order."""
    n = table.num_rows
    columns = [
        table[f.name] if f.name in table.column_names else pa.nulls(n, f.type) for f in RATED
    ]
    return pa.Table.from_arrays(columns, schema=RATED)


def _selected(table: pa.Table, customers: list[str]) -> pa.Array:
    if not customers:
        return pa.array(np.ones(table.num_rows, np.bool_))
    found = pc.is_in(table["customer_id"], pa.array(customers, pa.string()))
    return pc.fill_null(found, False).combine_chunks()


def _money(table: pa.Table) -> dict[str, str]:
    """Σ of each money column, as exact decimal text."""
    out = {}
    for name in MONEY_COLUMNS:
        total = pc.sum(table[name]).as_py() if table.num_rows else None
        out[name] = str(total if total is not None else Decimal("0.000000"))
    return out


def _counts(summary: Totals) -> dict[str, Any]:
    return {
        "rerated": summary.rated,
        "rejected": dict(summary.rejected),
        "before": summary.before,
        "after": summary.after,
        **summary.extra,
    }


def _who() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def newest_day(lake: Path) -> date | None:
    """The lake's newest partition day (None: nothing rated)."""
    days = []
    for folder in lake.glob("date=*"):
        try:
            if any(folder.glob("*.parquet")):
                days.append(date.fromisoformat(folder.name.removeprefix("date=")))
        except ValueError:
            continue
    return max(days, default=None)


def _day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def period_end(day: date, frequency: str, valid_to: date | None, newest: date) -> date:
    """The last day of the package period (SPEC §5.3) that holds ``day``."""
    if frequency == "daily":
        return day
    if frequency == "weekly":
        return day + timedelta(6 - day.weekday())
    if frequency == "monthly":
        following = (day.replace(day=1) + timedelta(32)).replace(day=1)
        return following - timedelta(1)
    return valid_to or newest  # once: the whole validity


def effective_last(
    home: Path, start: date, end: date, customers: list[str], newest: date | None
) -> date:
    """The last day a re-rate of [start, end) rates again (SPEC §7.6)."""
    from pipelines.catalog import Catalog  # the store: only for commands that need it

    asked_last = end - timedelta(1)
    if newest is None:
        return asked_last
    with Catalog(home) as catalog:
        frequency = {p["package_id"]: p["frequency"] for p in catalog.list("packages")}
        links = catalog.list("customer_packages")
    furthest = asked_last
    for link in links:
        if customers and link["customer_id"] not in customers:
            continue
        valid_from, valid_to = _day(link["start_date"]), _day(link["end_date"])
        low = max(start, valid_from) if valid_from else start
        high = min(asked_last, valid_to) if valid_to else asked_last
        if low > high:
            continue  # the package is not valid in the range
        period = period_end(high, frequency[link["package_id"]], valid_to, newest)
        furthest = max(furthest, min(period, valid_to) if valid_to else period)
    return max(asked_last, min(furthest, newest))


def recalc(
    home: Path,
    day: date,
    new_duration: Decimal,
    customer: str | None = None,
    max_duration: Decimal = MAX_DURATION,
) -> dict[str, Any]:
    """ConnexCS's "Recalculate CDR" (SPEC §7.4, §7.6): the answered calls of the UTC ``day``
    (``customer``'s only, when given) whose stored duration is at least ``max_duration``
    get ``new_duration``, keeping the first original in ``original_duration``; then the
    day is re-rated as ``rerate`` does (other calls change only through package draws)."""
    if not 0 <= new_duration <= max_duration:
        raise CdrflowError(
            f"--new-duration {new_duration} must be between 0 and --max-duration {max_duration}"
        )

    def shorten(rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        long = pc.and_(
            pc.and_(
                pc.equal(rows["sip_code"], 200),
                pc.greater_equal(rows["duration"], pa.scalar(max_duration, SECONDS)),
            ),
            pc.equal(_days(rows["dt"]), pa.scalar(day, pa.date32())),
        )
        long = pc.fill_null(long, False)
        original = pc.if_else(
            long,
            pc.coalesce(rows["original_duration"], rows["duration"]),
            rows["original_duration"],
        )
        duration = pc.if_else(long, pa.scalar(new_duration, SECONDS), rows["duration"])
        rows = rows.set_column(rows.schema.get_field_index("duration"), "duration", duration)
        at = rows.schema.get_field_index("original_duration")
        rows = rows.set_column(at, RATED.field(at), original)
        return rows, {"recalculated": pc.sum(long.cast(pa.int64())).as_py() or 0}

    details = {
        "day": day.isoformat(),
        "max_duration": str(max_duration),
        "new_duration": str(new_duration),
    }
    customers = [customer] if customer else []
    return rerate(
        home, day, day + timedelta(1), customers, kind="recalc", details=details, adjust=shorten
    )


__all__ = [
    "LOCK_WAIT",
    "StagedRun",
    "conform",
    "effective_last",
    "read_rated",
    "recalc",
    "rerate",
    "staged_run",
]
