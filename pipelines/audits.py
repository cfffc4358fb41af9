"""Checks of the books against the lake (SPEC §7.3, §5.5), each one DuckDB query over the
rated lake's whole runs: what the Dagster asset checks run.

- ``invoice_usage``: a month's issued documents (each invoice with its notes) carry, per
  customer, the usage Σ charge of the lake's calls of that month with billed seconds;
- ``callids_in_two_days``: no callid is in two date partitions of the rated lake (a callid
  is billed once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from billing.money import ZERO
from pipelines.catalog.documents import of_month
from pipelines.catalog.store import Catalog
from pipelines.home import rated_lake
from pipelines.lakefiles import read_again_if_swapped, whole_runs
from pipelines.ledger import next_month
from stats.scope import RATED_FILES, connect


@dataclass(frozen=True)
class UsageGap:
    """A customer whose issued usage for the month differs from the lake's Σ charge."""

    customer_id: str
    issued: Decimal
    lake: Decimal


def invoice_usage(home: Path, catalog: Catalog, month: date) -> tuple[int, list[UsageGap]]:
    """The customers of ``month`` (its first day) in the catalog, and those whose issued
    usage (invoice plus notes) is not the Σ charge of their calls of the month in the
    lake (calls with billed seconds: the calls lines of SPEC §7.3)."""
    end = next_month(month)
    start, stop = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (month, end))
    known = {r["customer_id"] for r in catalog.list("customers")}

    def lake() -> dict[str, Decimal]:
        files = whole_runs(rated_lake(home), lambda day: month <= day < end)
        if not files:
            return {}
        with connect() as con:
            rows = con.execute(
                f"SELECT customer_id, sum(charge) FROM {RATED_FILES} "
                "WHERE dt >= ? AND dt < ? AND billed_duration > 0 GROUP BY customer_id",
                [files, start, stop],
            ).fetchall()
        return {c: Decimal(v) for c, v in rows}

    sums = read_again_if_swapped(lake)
    issued: dict[str, Decimal] = {}
    for doc in of_month(catalog, month):
        issued[doc.customer_id] = issued.get(doc.customer_id, ZERO) + doc.usage
    customers = sorted(known & (set(sums) | set(issued)))
    gaps = [
        UsageGap(c, issued.get(c, ZERO), sums.get(c, ZERO))
        for c in customers
        if issued.get(c, ZERO) != sums.get(c, ZERO)
    ]
    return len(customers), gaps


def callids_in_two_days(home: Path, limit: int = 20) -> tuple[int, list[tuple[str, list[str]]]]:
    """How many callids of the rated lake are in more than one date partition, and up to
    ``limit`` of them with their partitions."""

    def query() -> tuple[int, list[tuple[str, list[str]]]]:
        files = whole_runs(rated_lake(home))
        if not files:
            return 0, []
        with connect() as con:
            con.execute(
                "CREATE TEMP TABLE twice AS SELECT callid, list(DISTINCT date ORDER BY date) "
                "AS days FROM read_parquet(?::VARCHAR[], hive_partitioning = true) "
                "GROUP BY callid HAVING count(DISTINCT date) > 1",
                [files],
            )
            count = con.execute("SELECT count(*) FROM twice").fetchone()
            some = con.execute(
                "SELECT callid, days FROM twice ORDER BY callid LIMIT ?", [limit]
            ).fetchall()
        return (count[0] if count else 0), [(c, [str(d) for d in days]) for c, days in some]

    return read_again_if_swapped(query)
