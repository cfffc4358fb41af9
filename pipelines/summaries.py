"""The daily summaries (SPEC §7, §6): one UTC day of the rated lake as SPEC §6's metrics per
customer (and currency) and per provider, kept in ``lake/summaries/date=YYYY-MM-DD/
summary.parquet``. What ``cdrflow summaries build`` runs and the Dagster asset
``daily_summaries`` calls.

The metrics are ``stats.metrics``' (the numbers ``cdrflow stats --by customer`` gives for
that day); the file is written beside its final name and renamed onto it, so a reader sees
the old summary or the new one, never part of one. A day without rated calls gets a summary
without rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from pipelines.home import rated_lake
from pipelines.lakefiles import lake_root, write_parquet
from schemas.summary import CUSTOMER, PROVIDER, SUMMARY
from stats.metrics import metrics
from stats.scope import RATED_FILES, Scope, connect


@dataclass
class DaySummary:
    """What ``write_day`` wrote: its rows, the day's calls, and the day's money per currency
    (exact decimal text: ``charge`` and ``profit`` in customers' currencies,
    ``provider_charge`` in providers')."""

    day: date
    path: Path
    customers: int = 0
    providers: int = 0
    attempts: int = 0
    answered: int = 0
    charge: dict[str, str] = field(default_factory=dict)
    provider_charge: dict[str, str] = field(default_factory=dict)
    profit: dict[str, str] = field(default_factory=dict)


def summary_path(home: Path, day: date) -> Path:
    return lake_root(home) / "summaries" / f"date={day.isoformat()}" / "summary.parquet"


def write_day(home: Path, day: date) -> DaySummary:
    """Summarise the UTC ``day`` of the home's rated lake into its summary file (replacing
    the one there); returns what was written."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    scope = Scope(rated_lake(home), start, start + timedelta(days=1))
    files = scope.files()
    with connect() as con:
        customers = metrics(con, scope, ["customer", "currency"])
        providers = metrics(con, scope, ["provider"])
        where, params = scope.where()
        money = (
            con.execute(
                "SELECT currency, provider_currency, sum(charge), sum(profit), "
                f"sum(provider_charge) FROM {RATED_FILES} WHERE {where} GROUP BY ALL",
                [files, *params],
            ).fetchall()
            if files
            else []
        )
    table = pa.concat_tables(
        [_rows(day, CUSTOMER, customers, "customer"), _rows(day, PROVIDER, providers, "provider")]
    )
    path = summary_path(home, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_parquet(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    out = DaySummary(day, path, customers.num_rows, providers.num_rows)
    out.attempts = sum(customers["attempts"].to_pylist())
    out.answered = sum(customers["answered"].to_pylist())
    totals: dict[str, dict[str, Decimal]] = {}
    for currency, provider_currency, charge, profit, provider_charge in money:
        for name, unit, value in (
            ("charge", currency, charge),
            ("profit", currency, profit),
            ("provider_charge", provider_currency, provider_charge),
        ):
            if unit is None:
                continue  # a call no provider carried: no cost, no currency
            into = totals.setdefault(name, {})
            into[unit] = into.get(unit, Decimal(0)) + (value or Decimal(0))
    for name, per in totals.items():
        setattr(out, name, {c: f"{v:.6f}" for c, v in sorted(per.items())})
    return out


def _rows(day: date, kind: str, table: pa.Table, key: str) -> pa.Table:
    """``metrics``' rows as summary rows of ``kind`` (``key``: the group column)."""
    n = table.num_rows
    columns = {
        "date": pa.array([day] * n, pa.date32()),
        "kind": pa.array([kind] * n, pa.string()),
        "id": table[key],
        "currency": table["currency"] if "currency" in table.column_names else pa.nulls(n),
    }
    return pa.table(
        [
            columns[f.name].cast(f.type) if f.name in columns else table[f.name].cast(f.type)
            for f in SUMMARY
        ],
        schema=SUMMARY,
    )
