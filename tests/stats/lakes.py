"""Crafted rated lakes for the stats tests: a few calls, every value chosen by hand."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.cdr import RATED

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def call(n: int, at: datetime | float = 0.0, **fields: Any) -> dict[str, Any]:
    """A rated call ``n`` at ``at`` (seconds after T0, or a time), answered unless
    ``sip_code`` says otherwise; any rated column may be given."""
    dt = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    row: dict[str, Any] = {
        "callid": f"c{n}",
        "dt": dt,
        "dest_number": "4420",
        "sip_code": 200,
        "duration": Decimal(0),
        "ring_duration": Decimal(0),
        "customer_id": "acme",
        "provider_id": "carrier",
        "card_id": "retail",
        "dest_code": "44",
        "dest_name": "UK",
        "billed_duration": 0,
        "charge": Decimal(0),
        "currency": "USD",
        "provider_charge": Decimal(0),
        "provider_currency": "USD",
        "profit": Decimal(0),
        "package_draws": [],
        "source": "crafted",
        "line": n,
    }
    row.update(fields)
    return row


def write_lake(home: Path, calls: list[dict[str, Any]]) -> Path:
    """The calls as a rated lake under ``home`` (one file per UTC day); its rated folder."""
    lake = home / "lake" / "rated"
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in calls:
        by_day[c["dt"].astimezone(UTC).date().isoformat()].append(c)
    for day, rows in by_day.items():
        folder = lake / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        full = [{name: r.get(name) for name in RATED.names} for r in rows]
        pq.write_table(pa.Table.from_pylist(full, schema=RATED), folder / "part-0.parquet")
    return lake
