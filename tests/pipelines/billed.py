"""A home for the billing tests: the sample catalog and rated CDRs in November and December
2026 (the workload's traffic), made once per module and copied for each test."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.rate import rate_files
from tests.pipelines.workload import records, write_jsonl

NOVEMBER, DECEMBER = date(2026, 11, 1), date(2026, 12, 1)
# Both months have ended; documents issued now are numbered in 2027.
NOW = datetime(2027, 1, 15, 9, 30, tzinfo=UTC)


def rated_home(root: Path) -> Path:
    home = root / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
    november = write_jsonl(root / "november.jsonl", records(3000, seed=1))
    december = records(400, seed=3, start=datetime(2026, 12, 5, tzinfo=UTC))
    rate_files(home, [november, write_jsonl(root / "december.jsonl", december)])
    return home


def copy_home(template: Path, root: Path) -> Path:
    return Path(shutil.copytree(template, root / "home"))


def lake_query(home: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """``sql`` over the whole rated lake as any Parquet reader sees it (``rated`` in FROM)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        glob = f"{home}/lake/rated/**/*.parquet"
        con.execute(f"CREATE VIEW rated AS SELECT * FROM read_parquet('{glob}')")
        return con.execute(sql, params or []).fetchall()


def month_calls(home: Path, month: date, where: str = "TRUE") -> dict[str, Any]:
    """Per customer and dest_name: calls, billed seconds and Σ charge of the month's calls
    with billed_duration > 0, straight from the lake."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    rows = lake_query(
        home,
        "SELECT customer_id, dest_name, count(*), sum(billed_duration), sum(charge) FROM rated "
        f"WHERE dt >= ? AND dt < ? + INTERVAL 1 MONTH AND billed_duration > 0 AND {where} "
        "GROUP BY ALL",
        [start, start],
    )
    out: dict[str, Any] = {}
    for customer, dest, calls, seconds, amount in rows:
        out.setdefault(customer, {})[dest] = (calls, int(seconds), Decimal(amount))
    return out
