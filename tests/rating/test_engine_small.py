"""The engine reads a short column (an authorization batch) through a Python list and a long
one through Arrow; both ways give the same values, and price the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating import authorize, engine
from rating.tables import compile_tables
from schemas.cdr import INPUT, INPUT_NAMES
from tests.rating.test_engine import DAY0, worlds

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

VALUES = st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=engine.SMALL)
INDEX = {"a": 0, "b": 1, "é": 2, "": 9}


@contextmanager
def through_arrow() -> Iterator[None]:
    small = engine.SMALL
    engine.SMALL = -1
    try:
        yield
    finally:
        engine.SMALL = small


def both(read: Callable[[pa.ChunkedArray], Any], values: list[str | None]) -> tuple[Any, Any]:
    # Two chunks, and a slice: what a batch's columns can be.
    column = pa.chunked_array([pa.array(["x", *values[:2]], pa.string())[1:],
                               pa.array(values[2:], pa.string())], pa.string())  # fmt: skip
    with through_arrow():
        arrow = read(column)
    return read(column), arrow


@settings(max_examples=200, deadline=None)
@given(values=VALUES)
def test_strings(values: list[str | None]) -> None:
    (offsets, data), (arrow_offsets, arrow_data) = both(engine._strings, values)
    assert offsets.tolist() == arrow_offsets.tolist()
    assert bytes(data[: offsets[-1]]) == bytes(arrow_data[: arrow_offsets[-1]])
    assert data.size >= 1 and data.flags.writeable == arrow_data.flags.writeable


@settings(max_examples=200, deadline=None)
@given(values=VALUES.map(lambda vs: [v if v is None or len(v) % 2 else "a" for v in vs]))
def test_index_of(values: list[str | None]) -> None:
    small, arrow = both(lambda column: engine._index_of(column, INDEX), values)
    assert small.dtype == arrow.dtype == np.int64 and small.tolist() == arrow.tolist()


@settings(max_examples=200, deadline=None)
@given(values=VALUES)
def test_encoded(values: list[str | None]) -> None:
    (keys, distinct), (arrow_keys, arrow_distinct) = both(engine._encoded, values)
    assert keys.dtype == arrow_keys.dtype == np.int64
    assert (keys.tolist(), distinct) == (arrow_keys.tolist(), arrow_distinct)


# -- the engine's pricing of a short batch, through lists and through Arrow --------------------


def _batch(cdrs: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{n: c.get(n) for n in INPUT_NAMES} for c in cdrs], schema=INPUT)


def _found(found: engine.Found) -> list[list[Any]]:
    return [list(values) for values in found]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_price_of_a_short_batch_is_arrows(world: Any) -> None:
    """DIDs, auth by IP and user, regex dial strings, provider cards, durations: a batch of
    at most ``SMALL`` calls priced through Python lists finds what Arrow's columns find,
    auth entries included."""
    snapshot, cdrs = world
    tables = compile_tables(snapshot)
    batch = _batch(cdrs)
    assert isinstance(engine.Columns.of(batch).dest_number, list)
    entries, arrow_entries = (np.empty(len(cdrs), np.int64) for _ in range(2))
    small = engine.find(tables, engine.Columns.of(batch), entries)
    with through_arrow():
        columns = engine.Columns.of(batch)
        assert isinstance(columns.dest_number, pa.ChunkedArray)
        arrow = engine.find(tables, columns, arrow_entries)
    assert _found(small) == _found(arrow)
    assert entries.tolist() == arrow_entries.tolist()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_authorization_columns_are_an_answered_batchs(world: Any) -> None:
    """What authorization hands the engine for its requests (no Arrow at all) is priced as
    the same calls in a validated batch, answered at that time with no provider card."""
    snapshot, cdrs = world
    tables = compile_tables(snapshot)
    at = (DAY0 - EPOCH) // timedelta(microseconds=1)
    calls = [{**c, "dt": None, "duration": None, "sip_code": None} for c in cdrs]
    as_batch = [{**c, "dt": DAY0, "sip_code": 200, "provider_card_id": None} for c in calls]
    entries, batch_entries = (np.empty(len(cdrs), np.int64) for _ in range(2))
    direct = engine.find(tables, authorize._columns(calls, at), entries)
    with through_arrow():
        batch = engine.find(tables, engine.Columns.of(_batch(as_batch)), batch_entries)
    assert _found(direct) == _found(batch)
    assert entries.tolist() == batch_entries.tolist()
