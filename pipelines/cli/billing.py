"""``cdrflow balance`` and ``cdrflow invoices build|list|show`` (SPEC §7.5)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from pipelines.cli.context import catalog_of, home_of, operator_errors, option_time
from pipelines.cli.entities import FormatOption, WideOption
from pipelines.cli.output import Format, emit, say

if TYPE_CHECKING:
    from billing.balance import Balance
    from billing.invoices import Document

BALANCE_COLUMNS = [
    "customer_id", "currency", "payments", "usage", "fees", "balance", "debit_limit", "available",
]  # fmt: skip
DOCUMENT_COLUMNS = [
    "number", "kind", "refers_to", "customer_id", "month", "currency", "usage", "fees",
    "subtotal", "tax", "total", "payments", "balance_due", "issued_at",
]  # fmt: skip
# What a narrow terminal keeps of a balance and of a document, and the order the rest go in.
BALANCE_KEY = ("customer_id", "currency", "balance", "available")
BALANCE_DROP = ("fees", "payments", "usage", "debit_limit")
DOCUMENT_KEY = ("number", "kind", "customer_id", "month", "currency", "total")
DOCUMENT_DROP = (
    "issued_at", "refers_to", "usage", "fees", "subtotal", "tax", "payments", "balance_due",
)  # fmt: skip
LINE_COLUMNS = ["kind", "description", "calls", "minutes", "amount"]
MONEY = ("usage", "fees", "subtotal", "tax", "total", "payments", "balance_due")

Customer = Annotated[str | None, typer.Option("--customer", "-c", help="only this customer")]
Month = Annotated[str | None, typer.Option("--month", help="only this month (YYYY-MM)")]

invoices = typer.Typer(
    help="Invoices, credit notes and debit notes of calendar months (SPEC §7.3).",
    no_args_is_help=True,
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@operator_errors
def balance(
    ctx: typer.Context,
    customer: Customer = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="at this instant (ISO 8601; a date alone is 00:00Z); default now"
        ),
    ] = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Each customer's balance and credit available (SPEC §7.2).

    balance = completed payments - (charge + tax) of rated calls - (fee + tax) of fees due;
    available = balance + debit limit. At --at: payments up to it, calls before it, fees due
    on or before its date. Without --at: every rated call and completed payment, and the fees
    due by today (UTC)."""
    from pipelines.clock import now
    from pipelines.ledger import balances_at

    moment = option_time(at, "--at") if at else None
    found = balances_at(home_of(ctx), catalog_of(ctx), moment, now(), customer)
    rows = [balance_row(b) for b in found]
    title = f"balances at {_iso(moment)}" if moment else "balances now"
    emit(
        rows,
        fmt,
        columns=BALANCE_COLUMNS,
        title=title,
        key=BALANCE_KEY,
        drop=BALANCE_DROP,
        wide=wide,
        right=BALANCE_COLUMNS[2:],
    )


def balance_row(b: Balance) -> dict[str, Any]:
    """A balance as ``cdrflow balance`` prints it (money as exact text)."""
    from billing.money import text

    return {
        "customer_id": b.customer_id,
        "currency": b.currency,
        **{name: text(getattr(b, name)) for name in BALANCE_COLUMNS[2:]},
    }


def document_row(doc: Document) -> dict[str, Any]:
    """An invoice or note as ``cdrflow invoices list`` prints it."""
    from billing.money import text

    assert doc.issued_at is not None
    return {
        "number": doc.number,
        "kind": doc.kind,
        "refers_to": doc.refers_to,
        "customer_id": doc.customer_id,
        "month": f"{doc.month:%Y-%m}",
        "currency": doc.currency,
        **{name: text(getattr(doc, name)) for name in MONEY},
        "issued_at": _iso(doc.issued_at),
    }


def _show_documents(docs: list[Document], fmt: Format, title: str, wide: bool) -> None:
    rows = [document_row(d) for d in docs]
    emit(
        rows,
        fmt,
        columns=DOCUMENT_COLUMNS,
        title=title,
        key=DOCUMENT_KEY,
        drop=DOCUMENT_DROP,
        wide=wide,
        right=MONEY,
    )


@invoices.command("build")
@operator_errors
def invoices_build(
    ctx: typer.Context,
    month: Annotated[str, typer.Option("--month", help="the month to invoice (YYYY-MM)")],
    customer: Customer = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Invoice a month that has ended: an invoice per customer with calls, fees or payments
    in it, and for a month already invoiced whose calls, fees or payments changed since, one
    credit or debit note of the differences. Documents are written as HTML and PDF to
    <home>/invoices/."""
    from pipelines.clock import now
    from pipelines.home import invoices_dir
    from pipelines.ledger import build_month, parse_month

    first = parse_month(month)
    home = home_of(ctx)
    issued = build_month(home, catalog_of(ctx), first, now(), customer)
    if not issued:
        say(f"nothing to issue for {month}: every document of the month is up to date", fmt=fmt)
        if fmt is Format.table:
            return
    else:
        folder = escape(str(invoices_dir(home)))  # a path is text, never markup
        say(f"issued {len(issued)} document(s) for {month}, written to {folder}", fmt=fmt)
    _show_documents(issued, fmt, f"issued for {month}", wide)


@invoices.command("list")
@operator_errors
def invoices_list(
    ctx: typer.Context,
    customer: Customer = None,
    month: Month = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Issued invoices and notes, in number order."""
    from pipelines.catalog.documents import listing
    from pipelines.ledger import parse_month

    first = parse_month(month) if month else None
    found = listing(catalog_of(ctx), customer, first)
    _show_documents(found, fmt, "invoices and notes", wide)


@invoices.command("show")
@operator_errors
def invoices_show(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="the document's number, e.g. INV-2026-000001")],
    fmt: FormatOption = Format.table,
) -> None:
    """One invoice or note and its lines (CSV: the lines)."""
    from billing.money import text
    from pipelines.catalog.documents import get

    doc = get(catalog_of(ctx), number)
    lines = [
        {
            "kind": line.kind,
            "description": line.description,
            "calls": line.calls,
            "minutes": None if line.minutes is None else text(line.minutes),
            "amount": text(line.amount),
        }
        for line in doc.lines
    ]
    row = document_row(doc)
    if fmt is Format.json:
        sys.stdout.write(json.dumps({**row, "lines": lines}, indent=2, ensure_ascii=False) + "\n")
    elif fmt is Format.csv:
        emit(lines, fmt, columns=LINE_COLUMNS)
    else:
        fields = [{"field": k, "value": "" if v is None else str(v)} for k, v in row.items()]
        emit(fields, fmt, columns=["field", "value"], title=f"{doc.kind} {number}")
        emit(lines, fmt, columns=LINE_COLUMNS, title="lines", right=("calls", "minutes", "amount"))
