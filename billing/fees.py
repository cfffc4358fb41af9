"""Fees (SPEC §7.1): what packages and DIDs charge their customers, and when it falls due.

Fees come from the catalog as it is when asked (SPEC §7.6): a schedule is built from the
current rows of customers, packages, customer packages and DIDs, and answers which fees fall
due in a range of days (an invoice's month) or how many are due by a day (a balance). Every
fee of a schedule has the same amount and the same tax, so a balance counts fees instead of
listing years of daily ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from billing.money import ZERO, tax_of

# Line kinds of fees on an invoice (SPEC §7.5).
PACKAGE, PACKAGE_SETUP, DID = "package", "package_setup", "did"


@dataclass(frozen=True)
class Fee:
    """One fee due: ``key`` names its invoice line across builds (SPEC §7.6 Notes)."""

    customer_id: str
    kind: str
    key: str
    description: str
    due: date
    amount: Decimal
    tax: Decimal


@dataclass(frozen=True)
class Schedule:
    """A charge of one customer that recurs per period of ``frequency`` (daily, weekly: ISO
    weeks from Monday, monthly, or once) while it is valid, from ``start`` to ``end``
    (included; None is open). Each period owes ``amount`` on its first valid day."""

    customer_id: str
    kind: str
    frequency: str
    start: date
    end: date | None
    amount: Decimal
    tax: Decimal
    # What the key and description are made of: (package_id, start_date) or (number,).
    ident: tuple[str, ...]
    label: str

    def due_dates(self, first: date, last: date) -> Iterator[tuple[date, date]]:
        """(period start, due date) of every fee due from ``first`` to ``last``, included."""
        last = last if self.end is None else min(last, self.end)
        period = period_start(self.frequency, max(first, self.start), self.start)
        due = max(period, self.start)
        while due <= last:
            if due >= first:
                yield period, due
            if self.frequency == "once":
                return
            period = next_period(self.frequency, period)
            due = period

    def count_due(self, last: date) -> int:
        """How many fees are due on or before ``last``: the first on ``start``, then one at
        each period start after it while valid (what ``due_dates`` lists, counted)."""
        if last < self.start:
            return 0
        until = last if self.end is None else min(last, self.end)
        if self.frequency == "once":
            return 1
        if self.frequency == "daily":
            return 1 + (until - self.start).days
        if self.frequency == "weekly":
            return 1 + (_monday(until) - _monday(self.start)).days // 7
        return 1 + _months(until) - _months(self.start)

    def fee(self, period: date, due: date) -> Fee:
        if self.kind == DID:
            (number,) = self.ident
            key = f"{number}/{period:%Y-%m}"
            description = f"DID {number}, {period:%Y-%m}"
        elif self.kind == PACKAGE_SETUP:
            key = "/".join(self.ident)
            description = f"{self.label}: setup"
        else:
            key = "/".join((*self.ident, period.isoformat()))
            description = f"{self.label}, {_period_label(self.frequency, period, self.start)}"
        return Fee(self.customer_id, self.kind, key, description, due, self.amount, self.tax)


def period_start(frequency: str, day: date, start: date) -> date:
    """The first day of the period (SPEC §5.3) that holds ``day``; ``once`` has one period,
    from the package's ``start``."""
    if frequency == "daily":
        return day
    if frequency == "weekly":
        return _monday(day)
    if frequency == "monthly":
        return day.replace(day=1)
    return start


def next_period(frequency: str, period: date) -> date:
    if frequency == "daily":
        return period + timedelta(days=1)
    if frequency == "weekly":
        return period + timedelta(days=7)
    return _first_of_next_month(period)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _months(day: date) -> int:
    return day.year * 12 + day.month


def _first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _period_label(frequency: str, period: date, start: date) -> str:
    if frequency == "daily":
        return period.isoformat()
    if frequency == "weekly":
        year, week, _ = period.isocalendar()
        return f"week {year}-W{week:02d}"
    if frequency == "monthly":
        return f"{period:%Y-%m}"
    return f"from {start.isoformat()}"


def schedules(
    customers: Mapping[str, Mapping[str, Any]],
    packages: Iterable[Mapping[str, Any]],
    customer_packages: Iterable[Mapping[str, Any]],
    dids: Iterable[Mapping[str, Any]],
) -> list[Schedule]:
    """Every fee schedule the catalog rows imply (SPEC §7.1), with each fee's tax at the
    customer's ``tax_percent``; a fee of 0 is no fee. Customers absent from ``customers``
    owe nothing here."""
    by_id = {p["package_id"]: p for p in packages}
    out = []

    def add(
        row: Mapping[str, Any],
        kind: str,
        frequency: str,
        amount: Decimal | None,
        end: date | None,
        ident: tuple[str, ...],
        label: str,
    ) -> None:
        customer = customers.get(row["customer_id"])
        if customer is None or not amount:
            return
        tax = tax_of(amount, customer.get("tax_percent") or ZERO)
        start = date.fromisoformat(row["start_date"])
        out.append(
            Schedule(row["customer_id"], kind, frequency, start, end, amount, tax, ident, label)
        )

    for cp in customer_packages:
        if not cp.get("auto_decrement"):
            continue
        package = by_id[cp["package_id"]]
        quantity = int(cp.get("quantity") or 1)
        end = date.fromisoformat(cp["end_date"]) if cp.get("end_date") else None
        ident = (package["package_id"], cp["start_date"])
        label = f"{package['name']} × {quantity}"
        add(cp, PACKAGE, package["frequency"], package["retail"] * quantity, end, ident, label)
        setup = package.get("setup_retail")
        if setup:
            add(cp, PACKAGE_SETUP, "once", setup * quantity, end, ident, label)
    for did in dids:
        if not did.get("start_date"):
            continue
        end = date.fromisoformat(did["end_date"]) if did.get("end_date") else None
        add(did, DID, "monthly", did.get("monthly_retail"), end, (did["number"],), "")
    return out


def fees_due(schedules: Sequence[Schedule], first: date, last: date) -> list[Fee]:
    """Every fee due from ``first`` to ``last`` (included), by customer, then as an invoice
    lists them: package periods, setups, DID months, each by key (package or number, then
    start and period: in date order)."""
    fees = [s.fee(period, due) for s in schedules for period, due in s.due_dates(first, last)]
    order = {PACKAGE: 0, PACKAGE_SETUP: 1, DID: 2}
    return sorted(fees, key=lambda f: (f.customer_id, order[f.kind], f.key))


def fees_total(schedules: Sequence[Schedule], last: date) -> dict[str, Decimal]:
    """Σ (fee + its tax) of the fees due on or before ``last``, per customer."""
    totals: dict[str, Decimal] = {}
    for s in schedules:
        count = s.count_due(last)
        if count:
            totals[s.customer_id] = totals.get(s.customer_id, ZERO) + count * (s.amount + s.tax)
    return totals
