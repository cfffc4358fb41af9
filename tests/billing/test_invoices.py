"""A month built from scratch (SPEC §7.3) and the notes between builds (SPEC §7.6), by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal

from billing.fees import DID, PACKAGE, Fee
from billing.invoices import (
    CALLS,
    CREDIT_NOTE,
    DEBIT_NOTE,
    INVOICE,
    MONEY_FIELDS,
    CallGroup,
    Document,
    Line,
    build,
    minutes,
    next_document,
    note,
)

D = Decimal
NOVEMBER = date(2026, 11, 1)
ACME = {"customer_id": "acme", "currency": "USD", "tax_percent": D(20)}


def fee(kind: str, key: str, amount: str) -> Fee:
    return Fee("acme", kind, key, f"fee {key}", NOVEMBER, D(amount), D(0))


def month(
    calls: Sequence[CallGroup] = (),
    fees: Sequence[Fee] = (),
    payments: str = "0",
    customer: dict[str, object] = ACME,
) -> Document:
    return build(customer, NOVEMBER, calls, fees, D(payments))


def combined(docs: Sequence[Document]) -> tuple[dict[tuple[str, str], tuple], dict[str, D]]:
    """An invoice plus its notes, added up line by line and field by field."""
    lines: dict[tuple[str, str], tuple] = {}
    for doc in docs:
        for line in doc.lines:
            calls, mins, amount = lines.get((line.kind, line.key), (None, None, D(0)))
            lines[(line.kind, line.key)] = (
                None if line.calls is None else (calls or 0) + line.calls,
                None if line.minutes is None else (mins or D(0)) + line.minutes,
                amount + line.amount,
            )
    lines = {k: v for k, v in lines.items() if any(v)}  # a line taken back whole is gone
    money = {name: sum((getattr(d, name) for d in docs), D(0)) for name in MONEY_FIELDS}
    return lines, money


def test_minutes_are_rounded_to_cents_half_up() -> None:
    assert minutes(61) == D("1.02")  # 1.01666…
    assert minutes(125) == D("2.08")  # 2.08333…
    assert minutes(7) == D("0.12")  # 0.11666…
    assert minutes(90) == D("1.50")


def test_a_month_from_scratch_by_hand() -> None:
    doc = month(
        calls=[
            CallGroup("France", 3, 125, D("0.123456")),
            CallGroup("United Kingdom", 2, 61, D("1.000004")),
        ],
        fees=[fee(PACKAGE, "pkg/2026-01-01/2026-11-01", "30"), fee(DID, "100/2026-11", "1.5")],
        payments="100",
    )
    assert doc.kind == INVOICE and doc.currency == "USD" and doc.tax_percent == 20
    assert [(line.kind, line.description, line.calls, line.minutes, line.amount)
            for line in doc.lines] == [
        (CALLS, "France", 3, D("2.08"), D("0.123456")),
        (CALLS, "United Kingdom", 2, D("1.02"), D("1.000004")),
        (PACKAGE, "fee pkg/2026-01-01/2026-11-01", None, None, D(30)),
        (DID, "fee 100/2026-11", None, None, D("1.5")),
    ]  # fmt: skip
    assert doc.usage == D("1.123460")  # exact: the sum of the call lines
    assert doc.fees == D("31.5")
    assert doc.subtotal == D("32.62")  # 32.62346
    assert doc.tax == D("6.52")  # 6.524
    assert doc.total == D("39.14")
    assert doc.payments == D(100)
    assert doc.balance_due == D("-60.86")


def test_subtotal_and_tax_round_half_up() -> None:
    doc = month(calls=[CallGroup("France", 1, 6, D("0.245"))], customer={**ACME, "tax_percent": 10})
    assert doc.subtotal == D("0.25")  # 0.245 → 0.25, not half-even's 0.24
    assert doc.tax == D("0.03")  # 0.025 → 0.03
    assert doc.total == D("0.28")


def test_an_empty_month_is_not_invoiced_but_a_payment_alone_is() -> None:
    assert next_document(month(), []) is None
    paid = next_document(month(payments="25"), [])
    assert paid is not None and paid.kind == INVOICE
    assert (paid.total, paid.payments, paid.balance_due) == (0, 25, -25)


def test_an_unchanged_month_issues_nothing() -> None:
    invoice = month(
        calls=[CallGroup("France", 3, 125, D("0.5"))], fees=[fee(DID, "1/2026-11", "2")]
    )
    assert next_document(replace(invoice), [invoice]) is None


def test_a_note_carries_the_differences_and_restores_the_month() -> None:
    invoice = month(
        calls=[CallGroup("France", 3, 125, D("0.5")), CallGroup("Italy", 1, 60, D("0.2"))],
        fees=[fee(DID, "100/2026-11", "1.5")],
    )
    later = month(
        calls=[CallGroup("France", 5, 185, D("0.75")), CallGroup("Spain", 2, 30, D("0.1"))],
        fees=[fee(DID, "100/2026-11", "1.5"), fee(PACKAGE, "pkg/2026-11-01/2026-11-01", "3")],
        payments="10",
    )
    first = note(later, [invoice])
    assert first is not None and first.kind == DEBIT_NOTE
    assert [(line.kind, line.key, line.calls, line.minutes, line.amount)
            for line in first.lines] == [
        (CALLS, "France", 2, D("1.00"), D("0.25")),  # 2.08 → 3.08 minutes
        (CALLS, "Spain", 2, D("0.50"), D("0.1")),
        (PACKAGE, "pkg/2026-11-01/2026-11-01", None, None, D(3)),
        (CALLS, "Italy", -1, D("-1.00"), D("-0.2")),
    ]  # fmt: skip
    # Fields are differences: subtotal 5.35 - 2.20, tax 1.07 - 0.44, total 6.42 - 2.64,
    # balance due (6.42 - 10) - 2.64.
    assert (first.usage, first.fees, first.subtotal) == (D("0.15"), D(3), D("3.15"))
    assert (first.tax, first.total, first.payments) == (D("0.63"), D("3.78"), D(10))
    assert first.balance_due == D("-6.22")
    assert combined([invoice, first]) == combined([later])
    # Built again with nothing changed: nothing. Then the package goes: a credit note.
    assert next_document(later, [invoice, first]) is None
    smaller = month(
        calls=[CallGroup("France", 5, 185, D("0.75")), CallGroup("Spain", 2, 30, D("0.1"))],
        fees=[fee(DID, "100/2026-11", "1.5")],
        payments="10",
    )
    second = next_document(smaller, [invoice, first])
    assert second is not None and second.kind == CREDIT_NOTE
    assert [(line.key, line.amount) for line in second.lines] == [
        ("pkg/2026-11-01/2026-11-01", D(-3))
    ]
    money = (second.fees, second.subtotal, second.tax, second.total)
    assert money == (-3, -3, D("-0.60"), D("-3.60"))
    assert combined([invoice, first, second]) == combined([smaller])


def test_a_notes_totals_are_differences_not_recomputed() -> None:
    invoice = month(calls=[CallGroup("France", 1, 60, D("10.02"))])  # tax 2.004 → 2.00
    later = month(calls=[CallGroup("France", 2, 120, D("10.03"))])  # tax 2.006 → 2.01
    diff = note(later, [invoice])
    assert diff is not None
    # Recomputed, the tax of a 0.01 subtotal would be 0.00; the difference is 0.01.
    assert (diff.subtotal, diff.tax, diff.total) == (D("0.01"), D("0.01"), D("0.02"))


def test_a_new_tax_rate_shows_in_the_next_note() -> None:
    invoice = month(calls=[CallGroup("France", 1, 60, D("10"))])
    later = month(calls=[CallGroup("France", 1, 60, D("10"))], customer={**ACME, "tax_percent": 7})
    diff = note(later, [invoice])
    assert diff is not None and diff.kind == CREDIT_NOTE and diff.lines == ()
    assert (diff.subtotal, diff.tax, diff.total, diff.tax_percent) == (0, D("-1.30"), D("-1.30"), 7)


def test_a_change_of_calls_without_money_is_still_a_note() -> None:
    invoice = month(calls=[CallGroup("UK Mobile", 1, 60, D(0))])
    later = month(calls=[CallGroup("UK Mobile", 2, 120, D(0))])
    diff = note(later, [invoice])
    assert diff is not None and diff.kind == DEBIT_NOTE and diff.total == 0
    assert diff.lines == (Line(CALLS, "UK Mobile", "UK Mobile", 1, D("1.00"), D(0)),)
