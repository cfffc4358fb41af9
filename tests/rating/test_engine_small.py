"""The engine reads a short column (an authorization batch) through a Python list and a long
one through Arrow; both ways give the same values."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rating import engine

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
