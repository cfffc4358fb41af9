"""Questions over the rejected lake (``lake/rejected``): which records were refused, and why.

A selection (``Selection``) is the same for listing, counting and replaying: reasons,
customers, a range of partition days and sources. A rejected record's partition day is the
UTC day of its ``dt``, or, for a record whose ``dt`` did not parse (or is out of the years a
``dt`` may hold), the UTC day it was rejected; ``--from``/``--to`` select partition days, so
such a record is found by the day it was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.lakefiles import whole_runs
from schemas.cdr import REJECT_REASONS
from schemas.errors import CdrflowError

# The FROM clause over a list of rejected files (bound as the first parameter): each row
# with its partition day (``date``) and its row number in its file; ``csv_header`` is null
# in files written before it existed.
REJECTED_FILES = (
    "read_parquet(?::VARCHAR[], hive_partitioning = true, union_by_name = true, "
    "filename = true, file_row_number = true)"
)
# What a listing shows, in order (``raw`` and ``rejected_at`` for machines only).
LIST_COLUMNS = (
    "date",
    "dt",
    "callid",
    "customer_id",
    "reject_reason",
    "reject_detail",
    "source",
    "line",
    "rejected_at",
    "raw",
)
SUMMARY_COLUMNS = ("reject_reason", "source", "records", "first_day", "last_day")


@dataclass(frozen=True)
class Selection:
    """Rejected records of any of ``reasons``, ``customers`` and ``sources`` (each: all when
    empty), in the partition days [``start``, ``end``) (open ends when None)."""

    reasons: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [r for r in self.reasons if r not in REJECT_REASONS]
        if unknown:
            raise CdrflowError(
                f"--reason {unknown[0]!r} is not a reason; use one of {', '.join(REJECT_REASONS)}"
            )
        if self.start and self.end and self.end <= self.start:
            raise CdrflowError(
                f"--to {self.end.isoformat()} is not after --from {self.start.isoformat()}"
            )

    def files(self, lake: Path) -> list[str]:
        """The rejected files of the selected days, whole runs only."""
        first, end = self.start or date.min, self.end
        return whole_runs(lake, lambda day: first <= day and (end is None or day < end))

    def where(self, con: duckdb.DuckDBPyConnection, files: list[str]) -> tuple[str, list[Any]]:
        """The filter on the rows of ``files``, with its parameters."""
        terms: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.reasons:
            terms.append("reject_reason IN (SELECT unnest(?))")
            params.append(list(self.reasons))
        if self.customers:
            terms.append("customer_id IN (SELECT unnest(?))")
            params.append(list(self.customers))
        if self.sources:
            [(present,)] = con.execute(
                f"SELECT list(DISTINCT source) FROM {REJECTED_FILES}", [files]
            ).fetchall()
            terms.append("source IN (SELECT unnest(?))")
            params.append(matching_sources(present or [], self.sources))
        return " AND ".join(terms), params


def matching_sources(present: Sequence[str], asked: Sequence[str]) -> list[str]:
    """The sources among ``present`` that one of ``asked`` names: the source as stored; a
    file by its name alone or by another path to it (``cdrs/day1.csv`` and
    ``./cdrs/day1.csv``, relative or absolute); a Kafka topic by ``kafka:TOPIC`` (all its
    partitions, ``kafka:TOPIC/N``)."""
    out = []
    for source in present:
        for given in asked:
            if source == given or (source.startswith("kafka:") and source.startswith(given + "/")):
                out.append(source)
                break
            if source.startswith("kafka:") or given.startswith("kafka:"):
                continue
            if PurePath(given).name == given and PurePath(source).name == given:
                out.append(source)
                break
            if Path(source).absolute().resolve() == Path(given).absolute().resolve():
                out.append(source)
                break
    return out


def rejected(
    con: duckdb.DuckDBPyConnection, files: list[str], selection: Selection, limit: int | None
) -> tuple[pa.Table, int]:
    """The selected records (``LIST_COLUMNS``; ``date`` as text) in the order of their day,
    source and line, at most ``limit`` of them (all when None), and how many there are in
    all."""
    if not files:
        empty = pa.table({name: pa.array([], pa.string()) for name in LIST_COLUMNS})
        return empty, 0
    where, params = selection.where(con, files)
    shown = ["CAST(date AS VARCHAR) AS date", *LIST_COLUMNS[1:]]
    sql = f"""
        SELECT {", ".join(shown)}, count(*) OVER () AS total
        FROM {REJECTED_FILES} WHERE {where}
        ORDER BY date, source, line, file_row_number LIMIT ?
    """
    table = con.sql(sql, params=[files, *params, limit]).to_arrow_table()
    total = table["total"][0].as_py() if table.num_rows else 0
    return table.drop_columns(["total"]), int(total)


def count(con: duckdb.DuckDBPyConnection, files: list[str], selection: Selection) -> int:
    """How many records the selection holds."""
    if not files:
        return 0
    where, params = selection.where(con, files)
    [(n,)] = con.execute(
        f"SELECT count(*) FROM {REJECTED_FILES} WHERE {where}", [files, *params]
    ).fetchall()
    return int(n)


def summary(con: duckdb.DuckDBPyConnection, files: list[str], selection: Selection) -> pa.Table:
    """The selected records counted by reason and source, with their first and last
    partition day (as text)."""
    if not files:
        return pa.table({name: pa.array([], pa.string()) for name in SUMMARY_COLUMNS})
    where, params = selection.where(con, files)
    sql = f"""
        SELECT reject_reason, source, count(*) AS records,
               CAST(min(date) AS VARCHAR) AS first_day, CAST(max(date) AS VARCHAR) AS last_day
        FROM {REJECTED_FILES} WHERE {where}
        GROUP BY ALL ORDER BY reject_reason, source
    """
    return con.sql(sql, params=[files, *params]).to_arrow_table()


def selected_rows(
    con: duckdb.DuckDBPyConnection, files: list[str], selection: Selection
) -> dict[str, list[int]]:
    """The row numbers (in file order) of the selected records of each file that has any."""
    if not files:
        return {}
    where, params = selection.where(con, files)
    rows = con.execute(
        f"SELECT filename, list(file_row_number ORDER BY file_row_number) "
        f"FROM {REJECTED_FILES} WHERE {where} GROUP BY filename",
        [files, *params],
    ).fetchall()
    return {name: [int(n) for n in numbers] for name, numbers in rows}
