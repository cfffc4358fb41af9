"""The prefetch hint: it compiles to LLVM's prefetch, changes no result, and the rate lookup
uses it."""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import pyarrow as pa
import pytest

from pipelines import dedupe
from rating import engine, kernels
from rating.prefetch import prefetch
from rating.tables import compile_tables
from schemas.cdr import INPUT, INPUT_NAMES
from tests.rating.test_engine import DAY0, catalog


@nb.njit
def _sum_rows(a: Any) -> Any:
    total = 0
    for i in range(a.shape[0]):
        prefetch(a, (i + 4) % a.shape[0])
        total += a[i, 0]
    return total


@nb.njit
def _sum_items(a: Any) -> Any:
    total = 0
    for i in range(a.size):
        prefetch(a, (i + 16) % a.size)
        total += a[i]
    return total


def _llvm(function: Any) -> str:
    return "\n".join(function.inspect_llvm().values())


def test_a_prefetch_is_a_hint_that_changes_nothing() -> None:
    rows = np.arange(64, dtype=np.int64).reshape(8, 8)
    assert _sum_rows(rows) == sum(range(0, 64, 8))
    assert "@llvm.prefetch" in _llvm(_sum_rows)
    items = np.arange(100, dtype=np.uint32)
    assert _sum_items(items) == sum(range(100))
    assert "@llvm.prefetch" in _llvm(_sum_items)


def test_the_rate_lookup_prefetches_the_slots_it_will_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiled afresh (the cached kernel carries no IR to inspect), with the rows it finds
    unchanged."""
    tables = compile_tables(catalog("0.0137", 30, 6))
    cdrs = [
        {"callid": f"{i}", "dt": DAY0, "dest_number": f"44{n}", "customer_id": "c"}
        for i, n in enumerate(range(10**6, 10**6 + 500, 7))
    ]
    batch = pa.Table.from_pylist([{n: c.get(n) for n in INPUT_NAMES} for c in cdrs], schema=INPUT)
    cached = engine.price(tables, batch).row
    fresh = nb.njit(kernels.longest_prefix.py_func)
    monkeypatch.setattr(kernels, "longest_prefix", fresh)
    assert engine.price(tables, batch).row.tolist() == cached.tolist()
    assert (cached >= 0).any()
    assert "@llvm.prefetch" in _llvm(fresh)


def test_the_billed_callids_table_prefetches_the_slots_it_will_probe() -> None:
    fresh = nb.njit(dedupe._mark.py_func)
    keys1, keys2 = np.zeros(16, np.uint64), np.zeros(16, np.uint32)
    h1, h2 = np.array([5, 21, 5], np.uint64), np.array([1, 2, 1], np.uint32)
    dup = np.zeros(3, np.bool_)
    assert fresh(h1, h2, np.ones(3, np.bool_), keys1, keys2, dup, False) == 2
    assert dup.tolist() == [False, False, True]
    assert "@llvm.prefetch" in _llvm(fresh)
