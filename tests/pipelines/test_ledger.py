"""Billing over a home (SPEC §7.2, §7.3): balances, invoices and notes from a rated lake."""

from __future__ import annotations

import io
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pypdf
import pytest

from billing.invoices import CALLS, CREDIT_NOTE, DEBIT_NOTE, INVOICE, MONEY_FIELDS, Document
from billing.money import cents, tax_of, text
from pipelines.catalog import Catalog
from pipelines.catalog.documents import get, listing, sequence_of
from pipelines.home import invoices_dir
from pipelines.ledger import balances_at, build_month, document_files, from_scratch
from pipelines.rate import rate_files
from pipelines.rerate import rerate
from schemas.errors import CdrflowError
from tests.pipelines.billed import (
    DECEMBER,
    NOVEMBER,
    NOW,
    lake_query,
    month_calls,
)
from tests.pipelines.workload import records, write_jsonl

D = Decimal
CUSTOMERS = ["acme", "globex", "hooli", "initech", "umbrella"]
HANG = 600  # seconds: a bound against a hang, not a deadline


@pytest.fixture
def home(billed_home: Path) -> Path:
    return billed_home


@pytest.fixture
def catalog(home: Path) -> Iterator[Catalog]:
    with Catalog(home) as store:
        yield store


def summed(docs: Sequence[Document]) -> tuple[dict[tuple[str, str], Any], dict[str, Decimal]]:
    """Documents added up per line (kind, key) and per money field; lines that add up to
    nothing are left out."""
    lines: dict[tuple[str, str], list[Any]] = {}
    for doc in docs:
        for line in doc.lines:
            acc = lines.setdefault((line.kind, line.key), [0, D(0), D(0)])
            acc[0] += line.calls or 0
            acc[1] += line.minutes or 0
            acc[2] += line.amount
    kept = {k: tuple(v) for k, v in lines.items() if any(v)}
    return kept, {name: sum((getattr(d, name) for d in docs), D(0)) for name in MONEY_FIELDS}


def assert_month_restored(home: Path, catalog: Catalog, month: date) -> None:
    """Each customer's invoice plus its notes equals the month built from scratch now."""
    issued = [d for d in listing(catalog, month=month)]
    for scratch in from_scratch(home, catalog, month):
        mine = [get(catalog, d.number) for d in issued if d.customer_id == scratch.customer_id]
        assert mine, scratch.customer_id
        assert summed(mine) == summed([scratch]), scratch.customer_id


def test_invoices_are_their_lines_and_the_lake(home: Path, catalog: Catalog) -> None:
    issued = build_month(home, catalog, NOVEMBER, NOW)
    # One invoice per customer, issued in ascending customer_id, numbered from 1 in 2027.
    assert [d.customer_id for d in issued] == CUSTOMERS
    assert [d.number for d in issued] == [f"INV-2027-{n:06d}" for n in range(1, 6)]
    assert {d.kind for d in issued} == {INVOICE}
    lake = month_calls(home, NOVEMBER)
    customers = {c["customer_id"]: c for c in catalog.list("customers")}
    for doc in issued:
        stored = get(catalog, doc.number or "")
        assert stored == doc
        calls = {line.key: line for line in doc.lines if line.kind == CALLS}
        expected = lake.get(doc.customer_id, {})
        assert set(calls) == set(expected)
        for dest, (count, seconds, amount) in expected.items():
            line = calls[dest]
            assert (line.calls, line.amount) == (count, amount)
            assert line.minutes == cents(D(seconds) / 60)
        assert doc.usage == sum((line.amount for line in calls.values()), D(0))
        assert doc.usage == sum((a for _, _, a in expected.values()), D(0))
        fee_lines = [line for line in doc.lines if line.kind != CALLS]
        assert doc.fees == sum((line.amount for line in fee_lines), D(0))
        assert doc.subtotal == cents(doc.usage + doc.fees)
        tax_percent = customers[doc.customer_id]["tax_percent"]
        assert doc.tax_percent == tax_percent
        assert doc.tax == tax_of(doc.subtotal, tax_percent)
        assert doc.total == doc.subtotal + doc.tax
        assert doc.balance_due == doc.total - doc.payments
    acme = issued[0]
    # Hand-checked: UK mobile 2 × 15 monthly, USA daily 0.25 × 30 days, two DIDs at 1.50
    # (12125550101 from 10 November); a refund of 50 on 2 November.
    fee_lines = [(line.kind, line.amount) for line in acme.lines if line.kind != CALLS]
    assert fee_lines == [("package", D(30))] + [("package", D("0.25"))] * 30 + [
        ("did", D("1.5")),
        ("did", D("1.5")),
    ]
    assert (acme.fees, acme.payments, acme.currency) == (D("40.50"), D(-50), "USD")
    # initech's DID has no start date and its package no auto_decrement: calls only.
    initech = issued[3]
    assert initech.fees == 0 and all(line.kind == CALLS for line in initech.lines)


def test_rebuilding_an_unchanged_month_issues_nothing(home: Path, catalog: Catalog) -> None:
    first = build_month(home, catalog, NOVEMBER, NOW)
    assert build_month(home, catalog, NOVEMBER, NOW) == []
    assert build_month(home, catalog, NOVEMBER, datetime(2027, 6, 1, tzinfo=UTC)) == []
    assert [d.number for d in listing(catalog)] == [d.number for d in first]
    assert [get(catalog, d.number or "") for d in first] == first
    assert all(p.exists() for d in first for p in document_files(home, d.number or ""))


def test_late_calls_issue_a_note_of_their_amount(
    home: Path, catalog: Catalog, tmp_path: Path
) -> None:
    build_month(home, catalog, NOVEMBER, NOW)
    late = write_jsonl(
        tmp_path / "late.jsonl", records(300, seed=7, start=datetime(2026, 11, 20, tzinfo=UTC))
    )
    rate_files(home, [late])
    notes = build_month(home, catalog, NOVEMBER, NOW)
    added = month_calls(home, NOVEMBER, f"source = '{late}'")
    assert sorted(d.customer_id for d in notes) == sorted(added)
    for doc in notes:
        assert doc.kind == DEBIT_NOTE
        invoice = next(d for d in listing(catalog, doc.customer_id, NOVEMBER) if d.kind == INVOICE)
        assert doc.refers_to == invoice.number
        assert doc.number and doc.number.startswith("DN-2027-")
        # The note's usage is exactly what the late calls charge; no fee changed.
        assert doc.usage == sum((a for _, _, a in added[doc.customer_id].values()), D(0))
        assert doc.fees == 0 and doc.payments == 0
        assert {line.kind for line in doc.lines} == {CALLS}
        for line in doc.lines:
            assert line.key in added[doc.customer_id]
    numbers = [sequence_of(d.number or "") for d in listing(catalog)]
    assert numbers == list(range(1, len(numbers) + 1))
    assert_month_restored(home, catalog, NOVEMBER)
    assert build_month(home, catalog, NOVEMBER, NOW) == []


def test_a_did_fee_changed_after_the_invoice(home: Path, catalog: Catalog) -> None:
    build_month(home, catalog, NOVEMBER, NOW)
    catalog.edit("dids", "12125550100", {"monthly_retail": "2.5"})
    [debit] = build_month(home, catalog, NOVEMBER, NOW)
    assert (debit.kind, debit.customer_id, debit.refers_to) == (
        DEBIT_NOTE,
        "acme",
        "INV-2027-000001",
    )
    assert debit.number == "DN-2027-000006"
    assert [(line.kind, line.key, line.amount) for line in debit.lines] == [
        ("did", "12125550100/2026-11", D(1))
    ]
    # acme's tax is 20 %: the note adds 1.00 and its tax 0.20.
    money = [getattr(debit, name) for name in MONEY_FIELDS]
    assert money == [0, 1, D("1.00"), D("0.20"), D("1.20"), 0, D("1.20")]
    catalog.edit("dids", "12125550100", {"monthly_retail": "0.5"})
    [credit] = build_month(home, catalog, NOVEMBER, NOW)
    assert (credit.kind, credit.number) == (CREDIT_NOTE, "CN-2027-000007")
    money = [getattr(credit, name) for name in MONEY_FIELDS]
    assert money == [0, -2, D("-2.00"), D("-0.40"), D("-2.40"), 0, D("-2.40")]
    assert_month_restored(home, catalog, NOVEMBER)


def test_a_payment_recorded_after_the_invoice(home: Path, catalog: Catalog) -> None:
    build_month(home, catalog, NOVEMBER, NOW)
    catalog.add(
        "payments",
        {"payment_id": "late", "customer_id": "globex", "amount": "25",
         "status": "completed", "at": "2026-11-30T23:59:59Z"},
    )  # fmt: skip
    catalog.add(
        "payments",
        {"payment_id": "dec", "customer_id": "globex", "amount": "99",
         "status": "completed", "at": "2026-12-01T00:00:00Z"},
    )  # fmt: skip
    [doc] = build_month(home, catalog, NOVEMBER, NOW)
    # Nothing billed changed: a note of total 0 is a debit note, that pays 25 more.
    assert (doc.kind, doc.customer_id, doc.lines) == (DEBIT_NOTE, "globex", ())
    assert (doc.total, doc.payments, doc.balance_due) == (0, 25, -25)


def test_only_a_month_that_has_ended_is_built(home: Path, catalog: Catalog) -> None:
    for now in (datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)):
        with pytest.raises(CdrflowError, match=r"^--month 2026-11 has not ended"):
            build_month(home, catalog, NOVEMBER, now)
    assert build_month(home, catalog, NOVEMBER, datetime(2026, 12, 1, tzinfo=UTC))
    assert listing(catalog)[0].number == "INV-2026-000001"  # the year it was issued


def test_a_customer_no_longer_in_the_catalog_is_not_invoiced(home: Path, catalog: Catalog) -> None:
    catalog.delete("customers", "hooli", force=True)  # its rated CDRs stay in the lake
    issued = build_month(home, catalog, NOVEMBER, NOW)
    assert [d.customer_id for d in issued] == ["acme", "globex", "initech", "umbrella"]
    with pytest.raises(CdrflowError, match="there is no customer 'hooli'"):
        build_month(home, catalog, NOVEMBER, NOW, customer="hooli")


def test_one_customer_is_built_alone(home: Path, catalog: Catalog) -> None:
    [doc] = build_month(home, catalog, DECEMBER, NOW, customer="umbrella")
    assert (doc.customer_id, doc.number) == ("umbrella", "INV-2027-000001")
    assert [d.customer_id for d in build_month(home, catalog, DECEMBER, NOW)] == [
        "acme", "globex", "hooli", "initech",
    ]  # fmt: skip


def test_the_pdf_reads_back_as_the_invoice(home: Path, catalog: Catalog) -> None:
    acme = build_month(home, catalog, NOVEMBER, NOW)[0]
    page, pdf = document_files(home, "INV-2027-000001")
    assert page.parent == invoices_dir(home)
    reader = pypdf.PdfReader(io.BytesIO(pdf.read_bytes()))
    words = " ".join(" ".join(p.extract_text().split()) for p in reader.pages)
    for expected in (
        "Invoice",
        "INV-2027-000001",
        "Northwind Carrier Services Ltd",  # company.csv
        "GB123456789",
        "Acme Telecom Ltd",
        "12 Harbour Road, Bristol BS1 5TT, UK",
        "November 2026 (2026-11-01 to 2026-11-30)",
        "DID 12125550100, 2026-11",
        "UK mobile 1000 minutes monthly × 2, 2026-11",
        f"Subtotal {text(acme.subtotal)}",
        f"Tax (20 %) {text(acme.tax)}",
        f"Total {text(acme.total)} USD",
        "Payments -50.00",
        f"Balance due {text(acme.balance_due)} USD",
        "Payment due within 30 days.",
    ):
        assert expected in words, expected
    html = page.read_text()
    assert "<td>France Mobile</td>" in html


def test_a_missing_file_is_written_by_the_next_build(home: Path, catalog: Catalog) -> None:
    build_month(home, catalog, NOVEMBER, NOW)
    _, pdf = document_files(home, "INV-2027-000003")
    pdf.unlink()
    assert build_month(home, catalog, NOVEMBER, NOW) == []
    assert pdf.read_bytes().startswith(b"%PDF")


def test_balance_at_an_instant(home: Path, catalog: Catalog) -> None:
    at = datetime(2026, 11, 3, tzinfo=UTC)
    found = {b.customer_id: b for b in balances_at(home, catalog, at, NOW)}
    assert list(found) == CUSTOMERS
    used = dict(
        lake_query(
            home,
            "SELECT customer_id, sum(charge + coalesce(tax, 0)) FROM rated WHERE dt < ? "
            "GROUP BY ALL",
            [at],
        )
    )
    acme = found["acme"]
    # Payments: 1000 (1 October) and the refund of 50 (2 November).
    assert acme.payments == D(950)
    assert acme.usage == used["acme"] and acme.usage > 0
    # Fees due by 3 November, each with its 20 % tax: UK mobile 11 months × (30 + 6), USA
    # daily from 1 June 156 days × (0.25 + 0.05), DID 12125550100 from 15 January 11 months
    # × (1.50 + 0.30); DID 12125550101 starts on 10 November.
    assert acme.fees == 11 * D(36) + 156 * D("0.30") + 11 * D("1.80") == D("462.60")
    assert acme.balance == acme.payments - acme.usage - acme.fees
    assert (acme.debit_limit, acme.available) == (D(500), acme.balance + 500)
    # Pending and cancelled payments count for nothing; initech's DID has no start date.
    assert (found["initech"].payments, found["initech"].fees) == (0, 0)
    assert (found["umbrella"].payments, found["umbrella"].fees) == (0, 0)
    assert found["globex"].balance == D(2500) - used["globex"]


def test_balance_now_counts_every_call_and_the_fees_due_today(home: Path, catalog: Catalog) -> None:
    [acme] = balances_at(home, catalog, None, datetime(2026, 11, 3, 12, tzinfo=UTC), "acme")
    [(every,)] = lake_query(
        home, "SELECT sum(charge + coalesce(tax, 0)) FROM rated WHERE customer_id = 'acme'"
    )
    assert acme.usage == every  # December's calls too: every rated call
    assert acme.fees == D("462.60")  # fees due by 3 November, as at 00:00 that day
    with pytest.raises(CdrflowError, match="there is no customer 'nobody'"):
        balances_at(home, catalog, None, NOW, "nobody")


def _build(home: str, months: list[date], start: Barrier, out: Any) -> None:
    try:
        with Catalog(Path(home)) as catalog:
            start.wait(HANG)
            issued = [build_month(Path(home), catalog, m, NOW) for m in months]
        out.put(("ok", [[(d.number, d.customer_id) for d in docs] for docs in issued]))
    except Exception as exc:  # reported to the test, which fails on it
        out.put(("error", repr(exc)))


@pytest.mark.slow
def test_two_builds_at_once_number_without_gaps_or_repeats(home: Path) -> None:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    out = ctx.Queue()
    orders = ([NOVEMBER, DECEMBER], [DECEMBER, NOVEMBER])
    procs = [ctx.Process(target=_build, args=(str(home), list(o), start, out)) for o in orders]
    for p in procs:
        p.start()
    results = [out.get(timeout=HANG) for _ in procs]
    for p in procs:
        p.join(HANG)
        assert p.exitcode == 0
    assert [r for status, r in results if status == "error"] == []
    for _, builds in results:
        for docs in builds:  # one build issues in ascending customer_id
            assert [c for _, c in docs] == sorted(c for _, c in docs)
            assert [n for n, _ in docs] == sorted(n for n, _ in docs)
    with Catalog(home) as catalog:
        docs = listing(catalog)
    assert [sequence_of(d.number or "") for d in docs] == list(range(1, len(docs) + 1))
    # Each month is invoiced once, by whichever build got there first; nothing else.
    assert {d.kind for d in docs} == {INVOICE}
    per_month = sorted((d.month, d.customer_id) for d in docs)
    assert per_month == sorted(
        [(NOVEMBER, c) for c in CUSTOMERS] + [(DECEMBER, c) for c in CUSTOMERS]
    )
    issued = [n for _, builds in results for docs in builds for n, _ in docs]
    assert sorted(issued) == sorted(d.number for d in docs)


def test_a_rerate_after_a_rate_change_issues_a_note_of_the_change(
    home: Path, catalog: Catalog
) -> None:
    """An invoiced month re-rated after a rate was corrected keeps its invoice; the next
    build issues a note per customer whose usage is exactly what the re-rate changed."""
    build_month(home, catalog, NOVEMBER, NOW)

    def charges() -> dict[str, Decimal]:
        rows = lake_query(
            home,
            "SELECT customer_id, sum(charge) FROM rated WHERE dt >= ? AND dt < ? "
            "AND billed_duration > 0 GROUP BY ALL",
            [datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)],
        )
        return {customer: D(total) for customer, total in rows}

    before = charges()
    catalog.add(
        "rates",
        {
            "card_id": "retail-usd",
            "prefix": "447",
            "name": "United Kingdom Mobile",
            "rate": "0.0450",
            "effective_from": "2026-11-01T00:00:00Z",
        },
    )
    issued = listing(catalog)
    rerate(home, date(2026, 11, 1), date(2026, 12, 1))
    assert listing(catalog) == issued  # the re-rate leaves every issued document alone
    after = charges()
    changed = {c: after.get(c, D(0)) - before.get(c, D(0)) for c in set(before) | set(after)}
    changed = {c: d for c, d in changed.items() if d}
    assert changed  # the new rate costs more than the one it replaces for some calls
    notes = build_month(home, catalog, NOVEMBER, NOW)
    # A customer whose calls kept their charge (a package's) but not their billed minutes
    # gets a note of those minutes that adds up to nothing.
    assert {d.customer_id: d.usage for d in notes if d.usage} == changed
    for doc in notes:
        assert doc.kind == (CREDIT_NOTE if doc.total < 0 else DEBIT_NOTE)
        assert doc.fees == 0 and {line.kind for line in doc.lines} == {CALLS}
    assert_month_restored(home, catalog, NOVEMBER)
    rerate(home, date(2026, 11, 1), date(2026, 12, 1))  # again: nothing more to bill
    assert build_month(home, catalog, NOVEMBER, NOW) == []
