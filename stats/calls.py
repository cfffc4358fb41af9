"""Single calls from the lake: SIP code counts, the latest calls, one call in full, and the
calls up at an instant (the ConnexCS Stats codes, Latest Calls and Dialogs views)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.lakefiles import whole_runs, whole_runs_of
from stats.metrics import query_parts
from stats.scope import RATED_FILES, Scope

# Columns of a latest-calls listing, in order.
CALL_COLUMNS = (
    "dt",
    "callid",
    "customer_id",
    "dest_number",
    "dest_name",
    "sip_code",
    "sip_reason",
    "duration",
    "billed_duration",
    "charge",
    "currency",
)
# How far back a call may have started and still be up: switches end calls long before.
LONGEST_CALL = timedelta(days=2)


def codes(con: duckdb.DuckDBPyConnection, scope: Scope, by: Sequence[str]) -> pa.Table:
    """Attempts per final SIP code within each group of ``by``, with the code's share of the
    group's attempts (percent) and the reason the switch gave most often."""
    files = scope.files()
    where, params = scope.where()
    parts = query_parts(by, where)
    if not files:
        columns = [*by, "sip_code", "attempts", "share", "sip_reason"]
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    partition = parts["group"] if by else "NULL"
    sql = f"""
        WITH calls AS (
            SELECT {parts["select_keys"]}sip_code, sip_reason FROM {RATED_FILES} WHERE {where}
        ),
        per_code AS (
            SELECT {parts["key_list"]}sip_code, count(*) AS attempts,
                   mode(sip_reason) AS sip_reason
            FROM calls GROUP BY ALL
        )
        SELECT {parts["shown_keys"]}sip_code, attempts,
               round(100.0 * attempts / sum(attempts) OVER (PARTITION BY {partition}), 2)
                   AS share,
               sip_reason
        FROM per_code
        ORDER BY {"".join(f"{n} NULLS FIRST, " for n in by)}attempts DESC, sip_code
    """
    return con.sql(sql, params=[files, *params]).to_arrow_table()


def latest_calls(con: duckdb.DuckDBPyConnection, scope: Scope, limit: int) -> pa.Table:
    """The newest ``limit`` rated calls of the scope, newest first."""
    files = scope.files()
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in CALL_COLUMNS})
    where, params = scope.where()
    sql = (
        f"SELECT {', '.join(CALL_COLUMNS)} FROM {RATED_FILES} WHERE {where} "
        "ORDER BY dt DESC, callid LIMIT ?"
    )
    return con.sql(sql, params=[files, *params, limit]).to_arrow_table()


def call_count(con: duckdb.DuckDBPyConnection, scope: Scope) -> int:
    """How many rated calls the scope holds."""
    files = scope.files()
    if not files:
        return 0
    where, params = scope.where()
    sql = f"SELECT count(*) FROM {RATED_FILES} WHERE {where}"
    [(count,)] = con.sql(sql, params=[files, *params]).fetchall()
    return int(count)


def find_call(con: duckdb.DuckDBPyConnection, lake: Path, callid: str) -> tuple[str, pa.Table]:
    """Every record of ``callid``: ("rated", rows) if the rated lake has it, else
    ("rejected", rows) from the rejected lake (possibly empty)."""
    # Both lakes listed at one moment: a replay or a re-rate that moves the call between
    # them shows it in one of them, never in neither.
    listed = whole_runs_of([lake.parent / "rated", lake.parent / "rejected"])
    for kind, files in zip(("rated", "rejected"), listed, strict=True):
        if not files:
            continue
        table = con.sql(
            # Every column, of files written before and after a column was added.
            "SELECT * FROM read_parquet(?::VARCHAR[], hive_partitioning = false, "
            "union_by_name = true) WHERE callid = ? ORDER BY dt",
            params=[files, callid],
        ).to_arrow_table()
        if table.num_rows:
            return kind, table
    return "rated", pa.table({})


def newest_instant(con: duckdb.DuckDBPyConnection, lake: Path) -> datetime | None:
    """The latest start of a call in the lake (the default instant of ``dialogs``)."""
    folders = sorted(lake.glob("date=*"))
    if not folders:
        return None
    newest = folders[-1].name
    files = whole_runs(lake, lambda day: f"date={day.isoformat()}" == newest)
    if not files:
        return None
    [(value,)] = con.sql(f"SELECT max(dt) FROM {RATED_FILES}", params=[files]).fetchall()
    return value if isinstance(value, datetime) else None


def dialogs(con: duckdb.DuckDBPyConnection, scope: Scope, at: datetime) -> pa.Table:
    """The calls up at ``at`` (started at or before it, not yet ended: up over
    [dt, dt + ring_duration + duration)), by customer, longest up first."""
    window = Scope(scope.lake, at - LONGEST_CALL, at + timedelta(microseconds=1), scope.customers)
    files = window.files()
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in ("customer_id", "callid")})
    where, params = window.where()
    sql = f"""
        SELECT customer_id, callid, dt, dest_number, dest_name, sip_code,
               round((epoch_us(?::TIMESTAMPTZ) - epoch_us(dt)) / 1e6, 1) AS up_seconds
        FROM {RATED_FILES}
        WHERE {where}
          AND epoch_us(dt)
              + CAST(coalesce(ring_duration, 0) * 1000000 AS BIGINT)
              + CASE WHEN sip_code = 200
                     THEN CAST(coalesce(duration, 0) * 1000000 AS BIGINT) ELSE 0 END
              > epoch_us(?::TIMESTAMPTZ)
        ORDER BY customer_id, dt, callid
    """
    return con.sql(sql, params=[at, files, *params, at]).to_arrow_table()
