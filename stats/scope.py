"""What a question over the lake covers: the rated files, a time range, some customers.

Every query of ``stats`` reads ``lake/rated`` through ``Scope.files``: hive partitions by
UTC date, pruned by the range before any file is opened, then filtered exactly on ``dt``;
whole runs only (``pipelines.lakefiles.whole_runs``), never part of one being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from pipelines.lakefiles import whole_runs
from schemas.errors import CdrflowError


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for the lake: buckets and dates are UTC (SPEC §6)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 date or time (UTC when no offset is given)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CdrflowError(
            f"{what}: {text!r} is not a date or time (use 2026-11-30 or 2026-11-30T14:00:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Scope:
    """Rated CDRs whose ``dt`` lies in [start, end), of ``customers`` (all when empty)."""

    lake: Path
    start: datetime | None = None
    end: datetime | None = None
    customers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start and self.end and self.end <= self.start:
            raise CdrflowError(
                f"--to {self.end.isoformat()} is not after --from {self.start.isoformat()}"
            )

    def files(self) -> list[str]:
        """The partition files the range can touch (an empty list: nothing to read)."""
        first = self.start.date() if self.start else date.min
        # A call at 23:59 of the day before `end` is in the partition of that day.
        last = (self.end - timedelta(microseconds=1)).date() if self.end else date.max
        return whole_runs(self.lake, lambda day: first <= day <= last)

    def where(self) -> tuple[str, list[Any]]:
        """The exact filter on the rows of ``files``, with its parameters."""
        terms: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.start:
            terms.append("dt >= ?")
            params.append(self.start)
        if self.end:
            terms.append("dt < ?")
            params.append(self.end)
        if self.customers:
            terms.append("customer_id IN (SELECT unnest(?))")
            params.append(list(self.customers))
        return " AND ".join(terms), params


# The FROM clause of a query over ``Scope.files`` (the list bound as the first parameter).
RATED_FILES = "read_parquet(?::VARCHAR[], hive_partitioning = false)"
