"""Balances (SPEC §7.2): payments in, calls and fees out, at one instant.

``balance(t) = Σ completed payments with at ≤ t - Σ (charge + tax) of rated CDRs with dt < t
- Σ (fee + its tax) of fees due on or before t's date``; ``available = balance +
debit_limit``. A call's tax is the one recorded when it was rated, a fee's is computed fee by
fee (``billing.fees``): an invoice taxes its subtotal instead, so the two may differ by
rounding cents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb

from billing.money import ZERO

# Rated CDRs of a list of files (the first parameter): whole runs, read without hive columns.
RATED_FILES = "read_parquet(?::VARCHAR[], hive_partitioning = false)"

COLUMNS = (
    "customer_id",
    "currency",
    "payments",
    "usage",
    "fees",
    "balance",
    "debit_limit",
    "available",
)


@dataclass(frozen=True)
class Balance:
    """One customer's balance, in the columns of ``cdrflow balance`` (SPEC §7.5)."""

    customer_id: str
    currency: str
    payments: Decimal
    usage: Decimal
    fees: Decimal
    balance: Decimal
    debit_limit: Decimal
    available: Decimal


def usage(
    con: duckdb.DuckDBPyConnection, files: Sequence[str], before: datetime | None
) -> dict[str, Decimal]:
    """Σ (charge + tax) per customer of the rated CDRs in ``files`` with ``dt < before``
    (every one when ``before`` is None)."""
    if not files:
        return {}
    where = "TRUE" if before is None else "dt < ?"
    params: list[Any] = [list(files)] + ([] if before is None else [before])
    rows = con.execute(
        f"SELECT customer_id, sum(coalesce(charge, 0) + coalesce(tax, 0)) "
        f"FROM {RATED_FILES} WHERE {where} GROUP BY customer_id",
        params,
    ).fetchall()
    return {customer: Decimal(total) for customer, total in rows}


def paid_at(payment: Mapping[str, Any]) -> datetime:
    """When a catalog payment was made (its ``at``, canonical UTC text)."""
    return datetime.fromisoformat(payment["at"].replace("Z", "+00:00")).astimezone(UTC)


def payments(
    rows: Iterable[Mapping[str, Any]], counts: Callable[[datetime], bool]
) -> dict[str, Decimal]:
    """Σ completed payments per customer whose ``at`` ``counts``; pending and cancelled
    ones count for nothing."""
    totals: dict[str, Decimal] = {}
    for p in rows:
        if p["status"] != "completed" or not counts(paid_at(p)):
            continue
        totals[p["customer_id"]] = totals.get(p["customer_id"], ZERO) + p["amount"]
    return totals


def balances(
    customers: Iterable[Mapping[str, Any]],
    paid: Mapping[str, Decimal],
    used: Mapping[str, Decimal],
    fees: Mapping[str, Decimal],
) -> list[Balance]:
    """The balance of each of ``customers`` (catalog rows), in their order."""
    out = []
    for c in customers:
        ident = c["customer_id"]
        p, u, f = paid.get(ident, ZERO), used.get(ident, ZERO), fees.get(ident, ZERO)
        limit = c.get("debit_limit") or ZERO
        balance = p - u - f
        out.append(Balance(ident, c["currency"], p, u, f, balance, limit, balance + limit))
    return out
