"""Fees (SPEC §7.1): which fall due when, for how much, with which tax; hand-checked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billing.fees import DID, PACKAGE, PACKAGE_SETUP, Fee, Schedule, fees_due, fees_total, schedules

D = Decimal
Row = dict[str, Any]


def customer(tax: str = "0", ident: str = "c") -> dict[str, Any]:
    return {"customer_id": ident, "currency": "USD", "tax_percent": D(tax)}


def package(frequency: str, retail: str, setup: str | None = None) -> dict[str, Any]:
    return {
        "package_id": f"p-{frequency}",
        "name": f"{frequency} bundle",
        "frequency": frequency,
        "retail": D(retail),
        "setup_retail": None if setup is None else D(setup),
    }


def assigned(frequency: str, start: str, end: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "customer_id": "c",
        "package_id": f"p-{frequency}",
        "quantity": kw.get("quantity", 1),
        "auto_decrement": kw.get("auto_decrement", True),
        "start_date": start,
        "end_date": end,
    }


def did(number: str, retail: str | None, start: str | None, end: str | None = None) -> Row:
    return {
        "number": number,
        "customer_id": "c",
        "monthly_retail": None if retail is None else D(retail),
        "start_date": start,
        "end_date": end,
    }


def due(
    first: str,
    last: str,
    packages: Sequence[Row] = (),
    cps: Sequence[Row] = (),
    dids: Sequence[Row] = (),
    tax: str = "0",
) -> list[Fee]:
    found = schedules({"c": customer(tax)}, packages, cps, dids)
    return fees_due(found, date.fromisoformat(first), date.fromisoformat(last))


def dues(fees: list[Fee]) -> list[tuple[str, str, str]]:
    return [(f.due.isoformat(), f.kind, str(f.amount)) for f in fees]


def test_daily_fees_one_per_valid_day() -> None:
    cps = [assigned("daily", "2026-11-28", "2026-12-02")]
    fees = due("2026-11-01", "2026-11-30", [package("daily", "0.25")], cps)
    assert dues(fees) == [(f"2026-11-{d}", PACKAGE, "0.25") for d in (28, 29, 30)]
    december = due("2026-12-01", "2026-12-31", [package("daily", "0.25")], cps)
    assert [f.due.day for f in december] == [1, 2]
    assert december[0].key == "p-daily/2026-11-28/2026-12-01"
    assert december[0].description == "daily bundle × 1, 2026-12-01"


def test_weekly_fees_per_iso_week_from_monday_starting_mid_week() -> None:
    # 2026-11-04 is a Wednesday of ISO week 45 (Monday 2026-11-02): the first week owes on the
    # Wednesday, every later week on its Monday; the week of Monday 2026-11-30 is November's.
    cps = [assigned("weekly", "2026-11-04", quantity=2)]
    fees = due("2026-11-01", "2026-11-30", [package("weekly", "1.5", setup="5")], cps)
    assert dues(fees) == [
        ("2026-11-04", PACKAGE, "3.0"),
        ("2026-11-09", PACKAGE, "3.0"),
        ("2026-11-16", PACKAGE, "3.0"),
        ("2026-11-23", PACKAGE, "3.0"),
        ("2026-11-30", PACKAGE, "3.0"),
        ("2026-11-04", PACKAGE_SETUP, "10"),
    ]
    assert fees[0].key == "p-weekly/2026-11-04/2026-11-02"  # package, start date, period
    assert fees[0].description == "weekly bundle × 2, week 2026-W45"
    assert fees[-1].key == "p-weekly/2026-11-04"  # package and start date
    assert fees[-1].description == "weekly bundle × 2: setup"
    # December's first fee is the Monday of the next week: the one of 11-30 is not repeated.
    december = due("2026-12-01", "2026-12-31", [package("weekly", "1.5", "5")], cps)
    assert [f.due.isoformat() for f in december] == [
        "2026-12-07", "2026-12-14", "2026-12-21", "2026-12-28",
    ]  # fmt: skip
    assert december[-1].description == "weekly bundle × 2, week 2026-W53"


def test_weekly_package_starting_mid_week_in_the_next_month() -> None:
    # Valid from Wednesday 2026-12-02: its first period began Monday 2026-11-30, but it owes
    # on its first valid day, in December.
    cps = [assigned("weekly", "2026-12-02")]
    assert due("2026-11-01", "2026-11-30", [package("weekly", "1.5")], cps) == []
    december = due("2026-12-01", "2026-12-07", [package("weekly", "1.5")], cps)
    assert [(f.due.isoformat(), f.key) for f in december] == [
        ("2026-12-02", "p-weekly/2026-12-02/2026-11-30"),
        ("2026-12-07", "p-weekly/2026-12-02/2026-12-07"),
    ]


def test_monthly_fees_from_a_mid_month_start_to_an_end() -> None:
    cps = [assigned("monthly", "2026-01-15", "2026-03-01")]
    fees = due("2026-01-01", "2026-12-31", [package("monthly", "15", setup="0")], cps)
    # Due on the start date, then the first of each month while valid (1 March is valid).
    assert dues(fees) == [
        ("2026-01-15", PACKAGE, "15"),
        ("2026-02-01", PACKAGE, "15"),
        ("2026-03-01", PACKAGE, "15"),
    ]
    assert fees[0].description == "monthly bundle × 1, 2026-01"
    ended_before = [assigned("monthly", "2026-01-15", "2026-02-28")]
    assert len(due("2026-01-01", "2026-12-31", [package("monthly", "15")], ended_before)) == 2


def test_once_owes_on_its_start_date_only() -> None:
    cps = [assigned("once", "2026-11-20", "2027-02-01")]
    fees = due("2026-01-01", "2027-12-31", [package("once", "2", setup="1")], cps)
    assert dues(fees) == [("2026-11-20", PACKAGE, "2"), ("2026-11-20", PACKAGE_SETUP, "1")]
    assert fees[0].description == "once bundle × 1, from 2026-11-20"
    assert due("2026-12-01", "2026-12-31", [package("once", "2", "1")], cps) == []


def test_without_auto_decrement_and_at_zero_nothing_is_owed() -> None:
    packages = [package("monthly", "15", setup="3"), package("daily", "0", setup="0")]
    cps = [
        assigned("monthly", "2026-01-01", auto_decrement=False),
        assigned("daily", "2026-01-01"),
    ]
    assert due("2026-01-01", "2026-12-31", packages, cps) == []


def test_did_month_fees_with_start_and_end_mid_month() -> None:
    dids = [
        did("100", "1.5", "2026-11-10", "2026-12-20"),  # November (from the 10th), December
        did("200", "4", "2026-10-31", "2026-11-30"),  # October (its last day), November
        did("300", "4", None),  # no start date: owes nothing
        did("400", "0", "2026-01-01"),  # a fee of 0 is no fee
        did("500", None, "2026-01-01"),
    ]
    fees = due("2026-10-01", "2027-01-31", dids=dids)
    assert [(f.key, f.due.isoformat(), str(f.amount)) for f in fees] == [
        ("100/2026-11", "2026-11-10", "1.5"),
        ("100/2026-12", "2026-12-01", "1.5"),
        ("200/2026-10", "2026-10-31", "4"),
        ("200/2026-11", "2026-11-01", "4"),
    ]
    assert {f.kind for f in fees} == {DID}
    assert fees[0].description == "DID 100, 2026-11"


def test_a_fees_tax_is_rounded_to_cents_half_up() -> None:
    cps = [assigned("daily", "2026-11-01", "2026-11-01")]
    [fee] = due("2026-11-01", "2026-11-01", [package("daily", "0.25")], cps, tax="10")
    assert fee.tax == D("0.03")  # 0.025 → 0.03 (half up; half even would give 0.02)
    [fee] = due("2026-11-01", "2026-11-01", [package("daily", "0.25")], cps, tax="7.5")
    assert fee.tax == D("0.02")  # 0.01875
    [fee] = due("2026-11-01", "2026-11-01", [package("daily", "0.2")], cps, tax="2")
    assert fee.tax == D("0.00")  # 0.004


def test_fees_total_sums_fee_and_tax_due_by_a_day() -> None:
    packages = [package("monthly", "15", setup="5"), package("daily", "0.25")]
    cps = [assigned("monthly", "2026-01-15"), assigned("daily", "2026-11-28", "2026-12-02")]
    dids = [did("100", "1.5", "2026-11-10")]
    found = schedules({"c": customer("20")}, packages, cps, dids)
    # By 2026-12-01: monthly 12 × (15 + 3.00), setup 5 + 1.00, daily 4 × (0.25 + 0.05),
    # DID 2 × (1.5 + 0.30).
    expected = 12 * D("18.00") + D("6.00") + 4 * D("0.30") + 2 * D("1.80")
    assert fees_total(found, date(2026, 12, 1)) == {"c": expected}
    assert fees_total(found, date(2026, 1, 14)) == {}
    listed = fees_due(found, date(2000, 1, 1), date(2026, 12, 1))
    assert sum(f.amount + f.tax for f in listed) == expected


def test_a_customer_not_in_the_catalog_owes_nothing_here() -> None:
    cps = [assigned("daily", "2026-11-01")]
    assert schedules({}, [package("daily", "1")], cps, []) == []


@given(
    frequency=st.sampled_from(["daily", "weekly", "monthly", "once"]),
    start=st.dates(date(2025, 1, 1), date(2027, 12, 31)),
    length=st.one_of(st.none(), st.integers(0, 500)),
    last=st.dates(date(2024, 6, 1), date(2029, 1, 1)),
)
def test_count_due_is_the_number_of_fees_listed(
    frequency: str, start: date, length: int | None, last: date
) -> None:
    end = None if length is None else start + timedelta(days=length)
    schedule = Schedule("c", PACKAGE, frequency, start, end, D(1), D(0), ("p", "s"), "p")
    listed = list(schedule.due_dates(date(2000, 1, 1), last))
    assert schedule.count_due(last) == len(listed)
    dues = [d for _, d in listed]
    # One fee per period, in date order, within the validity, the first on the start date.
    assert dues == sorted(set(dues))
    assert all(start <= d <= (end or d) for d in dues)
    assert not dues or dues[0] == start
