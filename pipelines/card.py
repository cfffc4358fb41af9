"""The customer card (``cdrflow customers show``): everything about one customer in one place.

The catalog rows that belong to the customer (read in one transaction), the seconds left
in each of its packages this period (the lake's draws, as the engine counts them), the
firings of its alerts when the home has any, its traffic today and this month and its
latest calls (the numbers of ``cdrflow stats`` and ``cdrflow calls``), its balance (that of
``cdrflow balance``) and its latest invoices and notes. "Today" and "this month" are the
UTC day and month of ``pipelines.clock.now`` ($CDRFLOW_NOW when set).

This module gathers; ``pipelines.cli.card`` shows. The lake is read through
``pipelines.lakefiles.whole_runs`` (whole runs only), as every reader of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from billing.balance import Balance
from billing.fees import next_period, period_start
from pipelines.home import rated_lake
from pipelines.lakefiles import read_again_if_swapped, whole_runs
from schemas.catalog import BY_NAME
from schemas.errors import CdrflowError
from stats.calls import call_count, latest_calls
from stats.metrics import metrics
from stats.scope import Scope, connect

if TYPE_CHECKING:
    from billing.invoices import Document
    from pipelines.catalog import Catalog
    from rating.tables import Tables
    from schemas.integrity import Rec

# How many of the latest payments, calls, alert firings and invoices a card shows.
LATEST = 5
# The catalog sections of a card, in the order it shows them, after the customer's own row.
CATALOG_SECTIONS = (
    "contacts", "auth", "routes", "cli_rules", "customer_packages", "dids", "payments",
    "alerts", "contracts",
)  # fmt: skip
# A catalog that changes between reading its rows and compiling its tables is read again.
READ_ATTEMPTS = 3


@dataclass(frozen=True)
class Traffic:
    """A period's traffic (SPEC §6 metrics of ``cdrflow stats``): one row, or none."""

    start: datetime
    end: datetime
    metrics: pa.Table


@dataclass(frozen=True)
class Firings:
    """The customer's alert firings in ``<home>/lake/alerts/`` (newest first, at most the
    card's ``latest``), how many there are, or why they could not be read (``problem``,
    and no ``rows``)."""

    folder: Path
    rows: pa.Table | None
    total: int
    problem: str | None = None


@dataclass(frozen=True)
class Card:
    customer_id: str
    at: datetime
    latest: int
    # Entity name → the customer's rows as commands show them (no password, ``id`` first
    # for rows without a key); a row with a password says whether one is set.
    rows: dict[str, list[dict[str, Any]]]
    packages: list[dict[str, Any]]
    firings: Firings | None
    today: Traffic
    month: Traffic
    calls: pa.Table
    calls_total: int
    balance: Balance
    invoices: list[Document]
    invoices_total: int


def customer_card(
    home: Path, catalog: Catalog, customer_id: str, now: datetime, latest: int = LATEST
) -> Card:
    """Everything about ``customer_id`` at ``now`` (an unknown customer is a CdrflowError
    naming it)."""
    from pipelines.catalog.documents import listing
    from pipelines.ledger import balances_at

    recs, tables = _rows_and_tables(home, catalog, customer_id)
    rows = {name: [_public(name, r) for r in found] for name, found in recs.items()}
    rows["payments"].sort(key=lambda r: (r["at"], r["payment_id"]), reverse=True)
    today = now.astimezone(UTC).date()
    lake = rated_lake(home)
    with connect() as con:
        packages = package_periods(con, home, recs, tables, customer_id, today)
        day = _midnight(today)
        month = _midnight(today.replace(day=1))
        next_month = _midnight(next_period("monthly", today.replace(day=1)))
        traffic = {
            name: Traffic(start, end, _traffic(con, Scope(lake, start, end, (customer_id,))))
            for name, start, end in (
                ("today", day, day + timedelta(days=1)),
                ("month", month, next_month),
            )
        }
        everything = Scope(lake, customers=(customer_id,))
        calls = read_again_if_swapped(lambda: latest_calls(con, everything, latest))
        calls_total = read_again_if_swapped(lambda: call_count(con, everything))
        firings = alert_firings(con, home, customer_id, latest)
    [balance] = balances_at(home, catalog, None, now, customer_id)
    documents = listing(catalog, customer_id)
    return Card(
        customer_id=customer_id,
        at=now,
        latest=latest,
        rows=rows,
        packages=packages,
        firings=firings,
        today=traffic["today"],
        month=traffic["month"],
        calls=calls,
        calls_total=calls_total,
        balance=balance,
        invoices=documents[::-1][:latest],
        invoices_total=len(documents),
    )


def _rows_and_tables(
    home: Path, catalog: Catalog, customer_id: str
) -> tuple[dict[str, list[Rec]], Tables | None]:
    """The customer's rows and, when it has packages, the compiled tables (whose allotments
    the lake's draws are counted by), both of one catalog version."""
    from pipelines.compiled import cached_tables
    from pipelines.rate import load_tables

    for _ in range(READ_ATTEMPTS):
        before = catalog.version()
        recs = catalog.owned_by(customer_id)
        if not recs["customer_packages"]:
            return recs, None
        tables = cached_tables(home, load_tables, catalog)
        if tables.version == before == catalog.version():
            return recs, tables
    raise CdrflowError("the catalog kept changing while it was read; try again")


def _public(entity_name: str, rec: Rec) -> dict[str, Any]:
    """A row as ``Catalog.list`` gives it; with a password column, ``password_set``."""
    entity = BY_NAME[entity_name]
    row = {c.name: rec.row.get(c.name) for c in entity.columns if not c.secret}
    if any(c.secret for c in entity.columns):
        # Whether a password is set, never the password or its hash.
        row["password_set"] = bool(rec.extra.get("password_hash"))
    return {"id": rec.id, **row} if entity.surrogate else row


def package_periods(
    con: duckdb.DuckDBPyConnection,
    home: Path,
    recs: dict[str, list[Rec]],
    tables: Tables | None,
    customer_id: str,
    today: date,
) -> list[dict[str, Any]]:
    """Each customer package (in the order packages are drawn: package_id, start date) with
    its period that holds ``today`` (SPEC §5.3, ``billing.fees.period_start``), the seconds
    it gives a period, those drawn in this one (the lake's draws: ``package_usage``) and
    those left. A package not valid today has no period and nothing left."""
    if tables is None:
        return []
    from pipelines.rate import package_usage

    files = [Path(f) for f in whole_runs(rated_lake(home))]
    usage = read_again_if_swapped(
        lambda: package_usage(con, home, tables, files, where=("customer_id = ?", [customer_id]))
    )
    allotment = {
        (tables.customer_ids[c], p, s): a
        for a, (c, p, s) in enumerate(
            zip(tables.allot_customer, tables.allot_package, tables.allot_start_date, strict=True)
        )
    }
    packages = {r.row["package_id"]: r.row for r in recs["packages"]}
    out = []
    mine = sorted(
        (r.row for r in recs["customer_packages"]), key=lambda r: (r["package_id"], r["start_date"])
    )
    for cp in mine:
        package = packages[cp["package_id"]]
        frequency = package["frequency"]
        start = date.fromisoformat(cp["start_date"])
        end = date.fromisoformat(cp["end_date"]) if cp["end_date"] else None
        seconds = int(package["seconds"]) * int(cp["quantity"] or 1)
        entry: dict[str, Any] = {
            "package_id": cp["package_id"],
            "name": package["name"],
            "frequency": frequency,
            "prefixes": package["prefixes"],
            "quantity": cp["quantity"],
            "auto_decrement": cp["auto_decrement"],
            "retail": package["retail"],
            "start_date": cp["start_date"],
            "end_date": cp["end_date"],
            "seconds": seconds,
            # current (valid today), future (starts after today) or ended.
            "state": "future" if today < start else "ended",
            "period_start": None,
            "period_end": None,
            "used": None,
            "left": None,
        }
        if start <= today and (end is None or today <= end):
            period = period_start(frequency, today, start)
            last = end if frequency == "once" else next_period(frequency, period) - timedelta(1)
            if end is not None and last is not None:
                last = min(last, end)
            a = allotment.get((customer_id, cp["package_id"], cp["start_date"]))
            used = 0 if a is None else usage.used(a, period)
            entry.update(
                state="current",
                period_start=max(period, start).isoformat(),
                period_end=None if last is None else last.isoformat(),
                used=used,
                left=max(0, seconds - used),
            )
        out.append(entry)
    return out


def _traffic(con: duckdb.DuckDBPyConnection, scope: Scope) -> pa.Table:
    return read_again_if_swapped(lambda: metrics(con, scope, []))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# The settled delivery of no firing: the shape of ``schemas.alerts.DELIVERED``'s columns read.
_NO_DELIVERIES = (
    "(SELECT NULL::VARCHAR AS alert_id, NULL::BIGINT AS crossing, NULL::VARCHAR AS status, "
    "NULL::BIGINT AS tries, NULL::VARCHAR AS error WHERE false)"
)
_DELIVERIES = "read_parquet(?::VARCHAR[], hive_partitioning = false)"


def alert_firings(
    con: duckdb.DuckDBPyConnection, home: Path, customer_id: str, latest: int
) -> Firings | None:
    """The customer's latest alert firings, newest first, from ``lake/alerts/``
    (``pipelines.live.firings``: a file a firing, ``schemas.alerts.FIRED``), each with how
    its delivery was settled (``lake/alert_deliveries/``: delivered or failed, and the
    tries) or ``pending`` while the live app still tries. None when the home has no
    ``lake/alerts/`` (no live app ever ran on it). Files that do not read as firings make a
    ``problem``, not a failed card."""
    from pipelines.live.firings import deliveries_root, fired_root

    folder = fired_root(home)
    if not folder.is_dir():
        return None
    fired = _parquet_files(folder)
    if not fired:
        return Firings(folder, pa.table({}), 0)
    delivered = _parquet_files(deliveries_root(home))
    sql = f"""
        SELECT f.alert_id, f.crossing, f.name, f.area, f.operator, f.threshold, f.value,
               f.fired_at AS at, f.recipient, coalesce(d.status, 'pending') AS delivery,
               d.tries, d.error, count(*) OVER () AS firings_total
        FROM read_parquet(?::VARCHAR[], hive_partitioning = false) AS f
        LEFT JOIN {_DELIVERIES if delivered else _NO_DELIVERIES} AS d
            ON d.alert_id = f.alert_id AND d.crossing = f.crossing
        WHERE f.customer_id = ?
        ORDER BY f.fired_at DESC, f.alert_id, f.crossing DESC
        LIMIT ?
    """
    params = [fired, *([delivered] if delivered else []), customer_id, latest]
    try:
        rows = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        return Firings(folder, None, 0, f"could not read the alert firings in {folder}: {reason}")
    total = rows["firings_total"][0].as_py() if rows.num_rows else 0
    return Firings(folder, rows.drop_columns(["firings_total"]), total)


def _parquet_files(root: Path) -> list[str]:
    """The files of ``root``'s day partitions (not a writer's hidden temporary files)."""
    return [str(p) for p in sorted(root.glob("date=*/*.parquet")) if not p.name.startswith(".")]
