"""Money rules shared by fees, balances and invoices: cents rounded half up, exact text."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal(0)


def cents(value: Decimal) -> Decimal:
    """``value`` rounded to 2 places, half up (away from zero, as SPEC §7 rounds)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def tax_of(amount: Decimal, tax_percent: Decimal) -> Decimal:
    """``round(amount × tax_percent / 100, 2, half_up)``: a fee's tax and an invoice's."""
    return cents(amount * tax_percent / 100)


def text(value: Decimal) -> str:
    """Money as printed and in JSON: exact, at least two places (``12.30``, ``0.0075``)."""
    value = Decimal(value)
    shown = value.quantize(CENT) if value == value.quantize(CENT) else value.normalize()
    return format(shown + 0, "f")
