"""Invoices and their notes (SPEC §7.3, §7.6): a customer's month, and what changed since.

``build`` makes a month's document from scratch: one line per ``dest_name`` of the month's
calls with ``billed_duration > 0``, one per fee due, and the money fields of SPEC §7.3.
``next_document`` decides what a build issues given what was issued before: the invoice
when there is none, else one note of the differences between the month built from scratch
and the invoice plus its earlier notes, line by line and field by field (nothing when none
differs). So the invoice plus its notes always equals the month built from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb

from billing.balance import RATED_FILES
from billing.fees import Fee
from billing.money import ZERO, cents, tax_of

INVOICE, CREDIT_NOTE, DEBIT_NOTE = "invoice", "credit_note", "debit_note"
CALLS = "calls"
MONEY_FIELDS = ("usage", "fees", "subtotal", "tax", "total", "payments", "balance_due")


@dataclass(frozen=True)
class Line:
    """One line: calls to one ``dest_name`` (``key``), or one fee (``key`` as in
    ``billing.fees``). A fee line has no calls or minutes (None)."""

    kind: str
    key: str
    description: str
    calls: int | None
    minutes: Decimal | None
    amount: Decimal


@dataclass(frozen=True)
class Document:
    """An invoice or a note of one customer's month (``month`` is its first day)."""

    kind: str
    customer_id: str
    month: date
    currency: str
    tax_percent: Decimal
    usage: Decimal
    fees: Decimal
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    payments: Decimal
    balance_due: Decimal
    lines: tuple[Line, ...]
    number: str | None = None
    refers_to: str | None = None
    issued_at: datetime | None = None
    # The company's and the customer's details as printed (``pipelines.ledger``).
    parties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallGroup:
    """The month's calls of one customer to one ``dest_name``, summed by DuckDB."""

    dest_name: str
    calls: int
    seconds: int
    amount: Decimal


def month_calls(
    con: duckdb.DuckDBPyConnection, files: Sequence[str], start: datetime, end: datetime
) -> dict[str, list[CallGroup]]:
    """Calls with ``billed_duration > 0`` and ``start ≤ dt < end`` in ``files``, per customer
    and ``dest_name`` (Σ charge exact, Σ billed seconds), in ``dest_name`` order."""
    if not files:
        return {}
    rows = con.execute(
        f"""
        SELECT customer_id, coalesce(dest_name, '') AS dest_name, count(*) AS calls,
               sum(billed_duration)::BIGINT AS seconds, coalesce(sum(charge), 0) AS amount
        FROM {RATED_FILES}
        WHERE dt >= ? AND dt < ? AND billed_duration > 0
        GROUP BY ALL
        ORDER BY customer_id, dest_name
        """,
        [list(files), start, end],
    ).fetchall()
    out: dict[str, list[CallGroup]] = {}
    for customer, dest_name, calls, seconds, amount in rows:
        out.setdefault(customer, []).append(CallGroup(dest_name, calls, seconds, Decimal(amount)))
    return out


def minutes(seconds: int) -> Decimal:
    """``round(Σ billed_duration / 60, 2, half_up)``."""
    return cents(Decimal(seconds) / 60)


def build(
    customer: Mapping[str, Any],
    month: date,
    calls: Iterable[CallGroup],
    fees: Iterable[Fee],
    payments: Decimal,
) -> Document:
    """The month of ``customer`` (a catalog row) built from scratch (SPEC §7.3)."""
    lines = [
        Line(CALLS, g.dest_name, g.dest_name, g.calls, minutes(g.seconds), g.amount) for g in calls
    ]
    lines += [Line(f.kind, f.key, f.description, None, None, f.amount) for f in fees]
    usage = sum((line.amount for line in lines if line.kind == CALLS), ZERO)
    fee_total = sum((line.amount for line in lines if line.kind != CALLS), ZERO)
    subtotal = cents(usage + fee_total)
    tax_percent = customer.get("tax_percent") or ZERO
    tax = tax_of(subtotal, tax_percent)
    total = subtotal + tax
    return Document(
        kind=INVOICE,
        customer_id=customer["customer_id"],
        month=month,
        currency=customer["currency"],
        tax_percent=tax_percent,
        usage=usage,
        fees=fee_total,
        subtotal=subtotal,
        tax=tax,
        total=total,
        payments=payments,
        balance_due=total - payments,
        lines=tuple(lines),
    )


def next_document(scratch: Document, issued: Sequence[Document]) -> Document | None:
    """What a build issues for ``scratch``'s month given the documents ``issued`` for it
    (the invoice first, then its notes): the invoice when there is none and the month has
    any line or payment; else the note of the differences, or None when none differs."""
    if not issued:
        return scratch if scratch.lines or scratch.payments else None
    return note(scratch, issued)


def note(scratch: Document, issued: Sequence[Document]) -> Document | None:
    """The note that brings ``issued`` (an invoice and its notes) to ``scratch`` (SPEC §7.6):
    per line (by kind and key) the differences of calls, minutes and amount, and per money
    field its difference (subtotal, tax and total are differences too, not recomputed). Its
    total below 0 makes it a credit note, else a debit note; None when nothing differs."""
    so_far: dict[tuple[str, str], Line] = {}
    for doc in issued:
        for line in doc.lines:
            before = so_far.get((line.kind, line.key))
            so_far[(line.kind, line.key)] = line if before is None else _plus(before, line, 1)
    now = {(line.kind, line.key): line for line in scratch.lines}
    lines = []
    for key in [*now, *(k for k in so_far if k not in now)]:
        target, before = now.get(key), so_far.get(key)
        if before is None:
            assert target is not None
            difference = target
        elif target is None:
            difference = _negated(before)  # gone: what was issued is taken back
        else:
            difference = _plus(target, before, -1)
        if difference.calls or difference.minutes or difference.amount:
            lines.append(difference)
    money = {
        name: getattr(scratch, name) - sum((getattr(d, name) for d in issued), ZERO)
        for name in MONEY_FIELDS
    }
    if not lines and not any(money.values()):
        return None
    kind = CREDIT_NOTE if money["total"] < 0 else DEBIT_NOTE
    return replace(scratch, kind=kind, lines=tuple(lines), **money)


def _negated(line: Line) -> Line:
    return replace(
        line,
        calls=None if line.calls is None else -line.calls,
        minutes=None if line.minutes is None else -line.minutes,
        amount=-line.amount,
    )


def _plus(a: Line, b: Line, sign: int) -> Line:
    """``a + sign × b`` field by field; ``a``'s description (the newer)."""

    def add(x: Any, y: Any) -> Any:
        if x is None and y is None:
            return None
        # A missing side is a zero of the other's type (Decimal stays Decimal).
        return (y * 0 if x is None else x) + sign * (x * 0 if y is None else y)

    return replace(
        a,
        calls=add(a.calls, b.calls),
        minutes=add(a.minutes, b.minutes),
        amount=add(a.amount, b.amount),
    )
