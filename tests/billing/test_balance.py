"""Balances (SPEC §7.2) from hand-made rated rows, payments and fees."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from billing.balance import Balance, balances, payments, usage
from schemas.cdr import RATED

D = Decimal
T = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    schema = pa.schema([RATED.field(n) for n in ("customer_id", "dt", "charge", "tax")])
    rows = [
        ("acme", datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=UTC), "1.000001", "0.2"),
        ("acme", T, "2", "0.4"),  # at t itself: not before t
        ("globex", datetime(2026, 11, 1, 10, tzinfo=UTC), "0.5", None),  # no tax recorded
    ]
    table = pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "dt": [r[1] for r in rows],
            "charge": [D(r[2]) for r in rows],
            "tax": [None if r[3] is None else D(r[3]) for r in rows],
        },
        schema=schema,
    )
    path = tmp_path / "rated.parquet"
    pq.write_table(table, path)
    return [str(path)]


def test_usage_counts_charge_and_tax_of_calls_before_t(
    con: duckdb.DuckDBPyConnection, files: list[str]
) -> None:
    assert usage(con, files, T) == {"acme": D("1.200001"), "globex": D("0.5")}
    assert usage(con, files, None) == {"acme": D("3.600001"), "globex": D("0.5")}
    assert usage(con, [], T) == {}


def test_only_completed_payments_up_to_t_count() -> None:
    paid = [
        ("100", "completed", "2026-11-02T00:00:00Z"),  # at t itself: counts
        ("-20", "completed", "2026-11-01T08:00:00Z"),  # a refund
        ("500", "pending", "2026-10-01T00:00:00Z"),
        ("70", "cancelled", "2026-10-01T00:00:00Z"),
        ("9", "completed", "2026-11-02T00:00:00.000001Z"),  # after t
    ]
    rows = [
        {"customer_id": "acme", "amount": D(amount), "status": status, "at": at}
        for amount, status, at in paid
    ]
    assert payments(rows, lambda at: at <= T) == {"acme": D(80)}
    assert payments(rows, lambda at: True) == {"acme": D(89)}


def test_balance_and_available() -> None:
    customers = [
        {"customer_id": "acme", "currency": "USD", "debit_limit": D(500)},
        {"customer_id": "initech", "currency": "USD", "debit_limit": None},
    ]
    found = balances(customers, {"acme": D(80)}, {"acme": D("1.200001")}, {"acme": D("36.30")})
    assert found == [
        Balance("acme", "USD", D(80), D("1.200001"), D("36.30"), D("42.499999"), D(500),
                D("542.499999")),
        Balance("initech", "USD", D(0), D(0), D(0), D(0), D(0), D(0)),
    ]  # fmt: skip
