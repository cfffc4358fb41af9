"""The Parquet fast path: a row whose typed columns already meet SPEC §4 is taken as it is.

A Parquet input is typed: a timestamp column holds instants, an integer column integers.
Writing every value out as text for DuckDB's validation (the way a CSV or JSON line goes when
the scanner does not find it plain) and parsing the text again cost about 5 µs a row. Here a
block whose columns all have types that convert exactly (``plain_types``) is checked column
by column with Arrow's kernels; the rows that pass are converted directly, and only the rest
go through the text path, which words each rejection. Tests hold the two paths equal
(tests/pipelines/test_scan.py).
"""

from __future__ import annotations

from decimal import Decimal

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.cdr import DT_FROM_US, DT_UNTIL_US, INPUT, MAX_DURATION, SECONDS

_INTEGERS = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())
# Whole seconds that fit DECIMAL(18, 6) whatever their value.
_SMALL_INTEGERS = (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
_SECONDS = ("duration", "ring_duration")
_MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1}  # a unit of ``plain_types``, in µs


def _plain_type(name: str, kind: pa.DataType) -> bool:
    if name == "dt":
        return bool(pa.types.is_timestamp(kind) and kind.unit in ("s", "ms", "us"))
    if name in ("sip_code", "pdd_ms"):
        return kind in _INTEGERS
    if name in _SECONDS:
        if pa.types.is_decimal128(kind):
            return bool(kind.scale <= 6 and kind.precision - kind.scale <= 12)
        return kind in _SMALL_INTEGERS
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def plain_types(schema: pa.Schema) -> bool:
    """Whether every column converts to its SPEC §4 type exactly: timestamps of at most
    microsecond precision, integers, decimals of at most six places, text. Anything else (a
    float of seconds, a time as text or as a number) goes the text path."""
    return all(_plain_type(field.name, field.type) for field in schema)


def plain_rows(table: pa.Table) -> np.ndarray:
    """Which rows of a block of ``plain_types`` the fast path takes: every SPEC §4 rule holds
    and no text needs trimming (an empty value or one with a leading or trailing space is
    what the text path turns into null or trims)."""
    ok = np.ones(table.num_rows, np.bool_)

    def need(condition: pa.ChunkedArray | pa.Array) -> None:
        ok[:] &= pc.fill_null(condition, False).to_numpy(zero_copy_only=False)

    names = set(table.column_names)
    for name in ("callid", "dt", "dest_number", "sip_code"):
        if name not in names:
            return np.zeros(table.num_rows, np.bool_)
        need(pc.is_valid(table[name]))
    for field in INPUT:
        if field.name in names and pa.types.is_string(field.type):
            _check_text(table[field.name], field.name == "dest_number", ok)
    sip = table["sip_code"]
    need(pc.and_(pc.greater_equal(sip, 100), pc.less_equal(sip, 699)))
    for name in ("pdd_ms", *_SECONDS):
        if name in names:
            need(pc.or_kleene(pc.is_null(table[name]), pc.greater_equal(table[name], 0)))
    # In the column's own unit: a time past what microseconds hold (a millisecond column
    # reaches the year 292 million) cannot be cast to them, and is out of the years anyway.
    per_unit = _MICROSECONDS[table["dt"].type.unit]
    when = table["dt"].cast(pa.int64())
    need(pc.and_(pc.greater_equal(when, DT_FROM_US // per_unit),
                 pc.less(when, DT_UNTIL_US // per_unit)))  # fmt: skip
    longest = pa.scalar(Decimal(MAX_DURATION), SECONDS)
    for name in _SECONDS:  # longer: the text path words the rejection
        if name in names:
            seconds = pc.cast(table[name], SECONDS)
            need(pc.or_kleene(pc.is_null(seconds), pc.less_equal(seconds, longest)))
    if "direction" in names:
        direction = table["direction"]
        known = pc.is_in(direction, pa.array(["outbound", "inbound"]))
        need(pc.or_kleene(pc.is_null(direction), known))
    return ok


def _check_text(column: pa.ChunkedArray, number: bool, ok: np.ndarray) -> None:
    """Clear ``ok`` where a value is empty or has a space at either end, or (``number``) is
    not 1 to 64 of 0-9 + * #. Nulls pass: the required fields are checked apart."""
    row = 0
    for chunk in column.chunks:
        null = chunk.is_null().to_numpy(zero_copy_only=False)
        _, offsets, data = chunk.buffers()
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        _text_kernel(
            np.frombuffer(offsets, width)[chunk.offset : chunk.offset + len(chunk) + 1],
            np.frombuffer(data, np.uint8) if data is not None else np.zeros(1, np.uint8),
            null,
            number,
            ok[row : row + len(chunk)],
        )
        row += len(chunk)


@nb.njit(cache=True, nogil=True)
def _text_kernel(offsets, data, null, number, ok):
    for i in range(null.size):
        if null[i] or not ok[i]:
            continue
        a, b = offsets[i], offsets[i + 1]
        if b == a or data[a] == 32 or data[b - 1] == 32:
            ok[i] = False
        elif number:
            if b - a > 64:
                ok[i] = False
                continue
            for j in range(a, b):
                c = data[j]
                if not (48 <= c <= 57 or c == 43 or c == 42 or c == 35):  # 0-9 + * #
                    ok[i] = False
                    break


def typed(table: pa.Table, source: str, lines: np.ndarray) -> pa.Table:
    """Rows ``plain_rows`` took, as the text path types them: the SPEC §4 fields (a missing
    direction is outbound), then ``source``, ``line`` and ``row`` (the line less one)."""
    n = table.num_rows
    columns = []
    for field in INPUT:
        if field.name not in table.column_names:
            column: pa.ChunkedArray | pa.Array = pa.nulls(n, field.type)
        else:
            column = table[field.name].cast(field.type)
        if field.name == "direction":
            column = pc.coalesce(column, pa.scalar("outbound"))
        columns.append(column)
    columns += [
        pa.repeat(pa.scalar(source, pa.string()), n),
        pa.array(lines, pa.int64()),
        pa.array(lines - 1, pa.int64()),
    ]
    names = [*(f.name for f in INPUT), "source", "line", "row"]
    return pa.table(columns, names=names)
