"""Billing over one home (SPEC §7): balances, building a month's invoices and notes, and
their HTML and PDF files. What ``cdrflow balance`` and ``cdrflow invoices`` run, and what
the Dagster jobs call.

The catalog is read once per call (one snapshot: fees and taxes as they are now, SPEC §7.6),
the lake through ``whole_runs`` (whole runs only) and DuckDB, which sums the calls; the
computing is ``billing``'s.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from billing import render
from billing.balance import Balance, balances, payments, usage
from billing.fees import Fee, Schedule, fees_due, fees_total, schedules
from billing.invoices import Document, build, month_calls
from billing.money import ZERO
from pipelines.catalog.documents import issue, of_month
from pipelines.catalog.store import Catalog
from pipelines.home import invoices_dir, rated_lake
from pipelines.lakefiles import whole_runs
from schemas.errors import CdrflowError

Rows = dict[str, list[dict[str, Any]]]


def parse_month(text: str) -> date:
    """``YYYY-MM`` as the month's first day."""
    if not re.fullmatch(r"\d{4}-\d{2}", text.strip()):
        raise CdrflowError(f"--month: {text!r} is not a month (use YYYY-MM, e.g. 2026-11)")
    try:
        return date.fromisoformat(text.strip() + "-01")
    except ValueError:
        raise CdrflowError(
            f"--month: {text!r} is not a month (use YYYY-MM, e.g. 2026-11)"
        ) from None


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _rows(catalog: Catalog) -> Rows:
    """Every small entity's rows, read in one transaction (rate rows are not needed)."""
    return {name: [r.row for r in recs] for name, recs in catalog.snapshot(cards=[]).items()}


def _customers(rows: Rows, customer: str | None) -> dict[str, dict[str, Any]]:
    everyone = {c["customer_id"]: c for c in rows["customers"]}
    if customer is None:
        return dict(sorted(everyone.items()))
    if customer not in everyone:
        raise CdrflowError(f"there is no customer {customer!r} (see `cdrflow customers list`)")
    return {customer: everyone[customer]}


def _schedules(rows: Rows, customers: Mapping[str, Mapping[str, Any]]) -> list[Schedule]:
    return schedules(customers, rows["packages"], rows["customer_packages"], rows["dids"])


def balances_at(
    home: Path, catalog: Catalog, at: datetime | None, now: datetime, customer: str | None = None
) -> list[Balance]:
    """Each customer's balance at ``at`` (SPEC §7.2); without ``at``, every rated call and
    completed payment and the fees due by ``now``'s date (SPEC §7.6)."""
    rows = _rows(catalog)
    customers = _customers(rows, customer)
    if at is None:
        files = whole_runs(rated_lake(home))
        counts: Callable[[datetime], bool] = lambda _: True  # noqa: E731
        today = now.date()
    else:
        last_day = at.date()
        files = whole_runs(rated_lake(home), lambda day: day <= last_day)
        counts = lambda paid: paid <= at  # noqa: E731
        today = last_day
    with _connect() as con:
        used = usage(con, files, at)
    fees = fees_total(_schedules(rows, customers), today)
    return balances(customers.values(), payments(rows["payments"], counts), used, fees)


def from_scratch(
    home: Path, catalog: Catalog, month: date, customer: str | None = None
) -> list[Document]:
    """``month`` (its first day) of every customer in the catalog (or one) built from
    scratch: the lake's calls, the catalog's fees and payments as they are now."""
    return _scratch(home, _rows(catalog), month, customer)


def _scratch(home: Path, rows: Rows, month: date, customer: str | None) -> list[Document]:
    customers = _customers(rows, customer)
    end = next_month(month)
    start, stop = _midnight(month), _midnight(end)
    files = whole_runs(rated_lake(home), lambda day: month <= day < end)
    with _connect() as con:
        calls = month_calls(con, files, start, stop)
    fees: dict[str, list[Fee]] = {}
    for fee in fees_due(_schedules(rows, customers), month, end - timedelta(days=1)):
        fees.setdefault(fee.customer_id, []).append(fee)
    paid = payments(rows["payments"], lambda at: start <= at < stop)
    return [
        build(c, month, calls.get(ident, ()), fees.get(ident, ()), paid.get(ident, ZERO))
        for ident, c in customers.items()
    ]


def build_month(
    home: Path, catalog: Catalog, month: date, now: datetime, customer: str | None = None
) -> list[Document]:
    """Build ``month`` (its first day) for every customer in the catalog (or one): issue an
    invoice where there is none and the month has lines or payments, a note where what was
    issued differs from the month built from scratch; then write every document of the month
    whose HTML or PDF file is missing. Returns what was issued, in number order."""
    if _midnight(next_month(month)) > now:
        raise CdrflowError(
            f"--month {month:%Y-%m} has not ended (now is {now.isoformat()}): "
            "only a month that has ended can be invoiced"
        )
    rows = _rows(catalog)
    scratch = _scratch(home, rows, month, customer)
    company = rows["company"][0] if rows["company"] else {}
    customers = {c["customer_id"]: c for c in rows["customers"]}

    def parties(ident: str) -> dict[str, Any]:
        return {"company": _printable(company), "customer": _printable(customers[ident])}

    issued = issue(catalog, scratch, now, parties)
    write_files(home, of_month(catalog, month))
    return issued


def _printable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog row as a document keeps it: text only (JSON in the store)."""
    return {k: v if v is None or isinstance(v, str) else str(v) for k, v in row.items()}


def document_files(home: Path, number: str) -> tuple[Path, Path]:
    folder = invoices_dir(home)
    return folder / f"{number}.html", folder / f"{number}.pdf"


def write_files(home: Path, docs: list[Document]) -> list[Path]:
    """The HTML and PDF of each document that lacks either (a build that stopped between
    issuing and writing is completed by the next one); returns the files written."""
    written = []
    for doc in docs:
        assert doc.number is not None
        page_path, pdf_path = document_files(home, doc.number)
        if page_path.exists() and pdf_path.exists():
            continue
        page = render.html(doc)
        _atomic_write(page_path, page.encode("utf-8"))
        _atomic_write(pdf_path, render.pdf(page))
        written += [page_path, pdf_path]
    return written


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
