"""Rounding modes, as the small integers the kernels take, and exact rounding in Python.

``round_ratio`` is the one definition of how a non-negative rational is rounded; the
kernels implement the same integer arithmetic, and fall back to it for values too large
for int64 (a charge beyond any call's: the kernels flag such rows).
"""

from __future__ import annotations

from enum import IntEnum


class Rounding(IntEnum):
    UP = 0  # away from zero
    DOWN = 1  # toward zero
    HALF_UP = 2
    HALF_DOWN = 3


BY_WORD = {
    "up": Rounding.UP,
    "down": Rounding.DOWN,
    "half_up": Rounding.HALF_UP,
    "half_down": Rounding.HALF_DOWN,
}


def round_ratio(num: int, den: int, mode: int) -> int:
    """``num / den`` (both ≥ 0, den > 0) rounded to a whole number by ``mode``."""
    q, r = divmod(num, den)
    if mode == Rounding.UP:
        return q + (r > 0)
    if mode == Rounding.DOWN:
        return q
    if mode == Rounding.HALF_UP:
        return q + (2 * r >= den)
    return q + (2 * r > den)
