"""``json_rows`` writes what polars' ``write_ndjson`` writes, byte for byte: the text the
output topics have always carried. Polars is the reference; hypothesis draws the tables
(escapes, non-ASCII, nulls, extreme integers, decimals and times included)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings

from pipelines.json_rows import FIRST_US, LAST_US, json_rows
from schemas.cdr import MONEY, TIME

INT64 = st.integers(-(2**63), 2**63 - 1)
MICROS = st.integers(-(10**18) + 1, 10**18 - 1)


def reference(table: pa.Table) -> list[bytes]:
    out = io.BytesIO()
    pl.DataFrame(table).write_ndjson(out)
    return out.getvalue().split(b"\n")[: table.num_rows]


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 30))

    def column(values: st.SearchStrategy[object]) -> list[object]:
        return draw(st.lists(st.none() | values, min_size=n, max_size=n))

    return pa.table(
        {
            "text": pa.array(column(st.text()), pa.string()),
            "big": pa.array(column(INT64), pa.int64()),
            "code": pa.array(column(st.integers(-(2**15), 2**15 - 1)), pa.int16()),
            "money": pa.array(
                [None if v is None else Decimal(v).scaleb(-6) for v in column(MICROS)], MONEY
            ),
            "at": pa.array(column(st.integers(FIRST_US, LAST_US)), TIME),
            "plain": pa.array(
                column(st.from_regex(r"[a-z0-9 .:+-]{0,12}", fullmatch=True)), pa.string()
            ),
        }
    )


@settings(max_examples=300, deadline=None)
@given(tables())
def test_the_text_is_polars_text(table: pa.Table) -> None:
    assert json_rows(table) == reference(table)


def test_the_hard_values_one_by_one() -> None:
    table = pa.table(
        {
            "s": ['a"b\\c', "x\ny\tz\r\b\f\x01\x1f\x7f", "é中\u2028/", "", None],
            "i": pa.array([2**63 - 1, -(2**63), 0, -1, None], pa.int64()),
            "m": pa.array(
                [Decimal("0"), Decimal("-0.000001"), Decimal("999999999999.999999"), None, 1],
                MONEY,
            ),
            "t": pa.array(
                [
                    datetime(2026, 11, 30, tzinfo=UTC),
                    datetime(2026, 11, 30, 0, 0, 45, 518000, tzinfo=UTC),
                    datetime(1, 1, 1, tzinfo=UTC),
                    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                    datetime(1969, 12, 31, 23, 59, 59, 100, tzinfo=UTC),
                ],
                TIME,
            ),
        }
    )
    rows = json_rows(table)
    assert rows == reference(table)
    assert json.loads(rows[1]) == {
        "s": "x\ny\tz\r\b\f\x01\x1f\x7f",
        "i": -(2**63),
        "m": "-0.000001",
        "t": "2026-11-30T00:00:45.518+00:00",
    }


def test_a_sliced_chunked_table_is_its_own_rows() -> None:
    whole = pa.table({"s": ["a", "bb", "ccc", None], "m": pa.array([1, 2, 3, 4], MONEY)})
    chunked = pa.concat_tables([whole.slice(1, 2), whole.slice(3)])
    assert json_rows(chunked) == [b'{"s":"bb","m":"2.000000"}', b'{"s":"ccc","m":"3.000000"}',
                                  b'{"s":null,"m":"4.000000"}']  # fmt: skip
    assert json_rows(whole.slice(0, 0)) == []
    assert json_rows(whole.select([])) == [b"{}"] * 4


def test_what_it_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError, match=r"column f \(double\)"):
        json_rows(pa.table({"f": [1.5]}))
    with pytest.raises(TypeError, match=r"column u \(uint64\)"):
        json_rows(pa.table({"u": pa.array([2**64 - 1], pa.uint64())}))
    with pytest.raises(ValueError, match="years 1 to 9999"):
        json_rows(pa.table({"t": pa.array([LAST_US + 1], TIME)}))
