"""Issued invoices and notes in the catalog store: numbered, immutable, gap-free.

A build computes each customer's month outside any transaction (the lake is read by
DuckDB), then issues in one write transaction (``BEGIN IMMEDIATE``): for each customer in
ascending ``customer_id`` it reads what was issued for the month, decides what to issue
(``billing.invoices.next_document``) and draws its number from the one counter of the home.
Two builds at once queue on the write lock, so the second sees the first's documents and
issues only what still differs; a failed build rolls its numbers back with its documents, so
numbers never have gaps or repeats. Rows are only ever inserted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from billing.invoices import (
    CREDIT_NOTE,
    DEBIT_NOTE,
    INVOICE,
    MONEY_FIELDS,
    Document,
    Line,
    next_document,
)
from pipelines.catalog.store import Catalog
from pipelines.catalog.tables import document_counter, document_lines, documents
from schemas.errors import CdrflowError
from schemas.fields import from_micro, to_micro

PREFIXES = {INVOICE: "INV", CREDIT_NOTE: "CN", DEBIT_NOTE: "DN"}
COUNTER = "documents"


def issue(
    catalog: Catalog,
    scratch: Sequence[Document],
    issued_at: datetime,
    parties: Callable[[str], Mapping[str, Any]],
) -> list[Document]:
    """Issue what each month of ``scratch`` (built from scratch) needs, in ascending
    ``customer_id``, in one transaction; returns the documents issued, numbered."""
    out = []
    with catalog.transaction(write=True) as conn:
        for target in sorted(scratch, key=lambda d: (d.customer_id, d.month)):
            earlier = _month(conn, target.customer_id, target.month)
            doc = next_document(target, earlier)
            if doc is None:
                continue
            doc = replace(
                doc,
                number=_next_number(conn, doc.kind, issued_at),
                refers_to=earlier[0].number if earlier else None,
                issued_at=issued_at,
                parties=parties(doc.customer_id),
            )
            _insert(conn, doc)
            out.append(doc)
    return out


def listing(
    catalog: Catalog, customer: str | None = None, month: date | None = None
) -> list[Document]:
    """Issued documents in number order (without their lines)."""
    query = sa.select(documents).order_by(documents.c.sequence)
    if customer is not None:
        query = query.where(documents.c.customer_id == customer)
    if month is not None:
        query = query.where(documents.c.month == f"{month:%Y-%m}")
    with catalog.transaction() as conn:
        return [_document(row, ()) for row in conn.execute(query).mappings()]


def get(catalog: Catalog, number: str) -> Document:
    """One issued document with its lines."""
    with catalog.transaction() as conn:
        row = conn.execute(sa.select(documents).where(documents.c.number == number)).mappings()
        found = row.first()
        if found is None:
            raise CdrflowError(
                f"there is no invoice or note {number!r} (see `cdrflow invoices list`)"
            )
        return _document(found, _lines(conn, [number])[number])


def of_month(catalog: Catalog, month: date) -> list[Document]:
    """Every document issued for ``month``, with lines, in number order."""
    with catalog.transaction() as conn:
        rows = conn.execute(
            sa.select(documents)
            .where(documents.c.month == f"{month:%Y-%m}")
            .order_by(documents.c.sequence)
        ).mappings()
        found = list(rows)
        lines = _lines(conn, [r["number"] for r in found])
        return [_document(r, lines[r["number"]]) for r in found]


def _month(conn: sa.Connection, customer: str, month: date) -> list[Document]:
    rows = list(
        conn.execute(
            sa.select(documents)
            .where(documents.c.customer_id == customer, documents.c.month == f"{month:%Y-%m}")
            .order_by(documents.c.sequence)
        ).mappings()
    )
    lines = _lines(conn, [r["number"] for r in rows])
    return [_document(r, lines[r["number"]]) for r in rows]


def _lines(conn: sa.Connection, numbers: Sequence[str]) -> dict[str, tuple[Line, ...]]:
    out: dict[str, list[Line]] = {n: [] for n in numbers}
    if numbers:
        query = (
            sa.select(document_lines)
            .where(document_lines.c.number.in_(list(numbers)))
            .order_by(document_lines.c.number, document_lines.c.position)
        )
        for r in conn.execute(query).mappings():
            out[r["number"]].append(
                Line(
                    kind=r["kind"],
                    key=r["key"],
                    description=r["description"],
                    calls=r["calls"],
                    minutes=None if r["minutes"] is None else from_micro(r["minutes"]),
                    amount=from_micro(r["amount"]),
                )
            )
    return {n: tuple(lines) for n, lines in out.items()}


def _document(row: sa.RowMapping, lines: Sequence[Line]) -> Document:
    return Document(
        kind=row["kind"],
        customer_id=row["customer_id"],
        month=date.fromisoformat(row["month"] + "-01"),
        currency=row["currency"],
        tax_percent=from_micro(row["tax_percent"]),
        lines=tuple(lines),
        number=row["number"],
        refers_to=row["refers_to"],
        issued_at=datetime.fromisoformat(row["issued_at"]),
        parties=json.loads(row["parties"]),
        **{name: from_micro(row[name]) for name in MONEY_FIELDS},
    )


def _next_number(conn: sa.Connection, kind: str, issued_at: datetime) -> str:
    """The next number of the home's one counter (never reset), spelt for ``kind``."""
    last = conn.execute(
        sa.select(document_counter.c.last).where(document_counter.c.name == COUNTER)
    ).scalar()
    if last is None:
        value = 1
        conn.execute(document_counter.insert().values(name=COUNTER, last=value))
    else:
        value = int(last) + 1
        conn.execute(
            document_counter.update().where(document_counter.c.name == COUNTER).values(last=value)
        )
    return f"{PREFIXES[kind]}-{issued_at.year:04d}-{value:06d}"


def sequence_of(number: str) -> int:
    """The counter value a document number carries (``INV-2026-000042`` → 42)."""
    return int(number.rsplit("-", 1)[1])


def _insert(conn: sa.Connection, doc: Document) -> None:
    assert doc.number is not None and doc.issued_at is not None
    conn.execute(
        documents.insert().values(
            number=doc.number,
            sequence=sequence_of(doc.number),
            kind=doc.kind,
            refers_to=doc.refers_to,
            customer_id=doc.customer_id,
            month=f"{doc.month:%Y-%m}",
            currency=doc.currency,
            tax_percent=to_micro(doc.tax_percent),
            issued_at=doc.issued_at.isoformat(),
            parties=json.dumps(doc.parties, sort_keys=True),
            **{name: to_micro(getattr(doc, name)) for name in MONEY_FIELDS},
        )
    )
    if doc.lines:
        conn.execute(
            document_lines.insert(),
            [
                {
                    "number": doc.number,
                    "position": position,
                    "kind": line.kind,
                    "key": line.key,
                    "description": line.description,
                    "calls": line.calls,
                    "minutes": None if line.minutes is None else to_micro(line.minutes),
                    "amount": to_micro(line.amount),
                }
                for position, line in enumerate(doc.lines, 1)
            ],
        )
