"""Questions the catalog asks of the Parquet lake (SPEC §2), answered with DuckDB."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb

from pipelines.home import rated_lake
from pipelines.lakefiles import whole_runs


def customers_with_rated_cdrs(home: Path, customer_ids: Iterable[str]) -> dict[str, int]:
    """How many rated CDRs each of ``customer_ids`` has in the lake (absent: none)."""
    ids = sorted(set(customer_ids))
    files = whole_runs(rated_lake(home)) if ids else []
    if not files:
        return {}
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT customer_id, count(*) FROM read_parquet(?::VARCHAR[]) "
            "WHERE customer_id IN (SELECT unnest(?)) GROUP BY customer_id",
            [files, ids],
        ).fetchall()
    return {customer: count for customer, count in rows}
