"""Every reader on hostile input (hypothesis): JSON Lines, CSV and Parquet files through
``rate_files`` (what ``cdrflow rate`` runs), and Kafka message values through
``read_messages`` (what a stream worker runs on each poll, no broker needed).

Records mix valid CDRs with the classes that broke readers: values a cast would read as
something else (200.5, ``1_000``, a ``-25:00`` offset), values of the wrong type, huge
numbers, carriage returns, NUL, bytes that are not UTF-8, odd quoting, blank lines, a byte
order mark. Whatever they hold, nothing stops with a traceback, and every record ends in
exactly one place: the rated lake, or the rejected lake with a reason (checked with DuckDB
over the lake, line by line). JSON Lines and CSV are also read both ways (scanner and
DuckDB) to the same result.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import cdrfile
from pipelines.compiled import cached_tables
from pipelines.rate import load_tables, rate_files
from tests.pipelines.test_rate import new_home
from tests.pipelines.test_scan import both_ways

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DAY = "2026-11-02T10:00:00Z"

# -- values, as a switch or a broken one writes them --------------------------------------

HOSTILE_TEXT = ["", " ", " x ", "a\x00b", "é", "\ufeffa", "a\rb", "a\tb", "a,b", 'a"b', "x" * 300,
                "\ud800"]  # fmt: skip
JSON_VALUES: dict[str, list[Any]] = {
    "callid": [True, False, ["a"], {"id": 1}, 5, 1.5, *HOSTILE_TEXT],
    "dt": [DAY, "2026-11-02 10:00:00.123456", "2026-11-02T12:00:00+02:00", 1762077600123,
           "1762077600123", "2026-11-02T10:00:00-25:00", "2026-11-02T10:00:00+01:60",
           "2026-11-02T10:00:00+14:30", "1970-01-01T00:00:00Z", 0, -1, 10**20, 1e20, "yesterday",
           "2026-02-30T00:00:00Z", True, {"t": 1}, "2026-11-02T10:00:00 Europe/Berlin", ""],
    "dest_number": ["447700900123", "12125550100", "+4420", "44a", "", 447700900123, 1e30,
                    "4" * 70, ["44"], True],
    "sip_code": [200, 486, "200", 200.5, 200.0, "2e2", 2e2, 10**30, -200, True, "", "1_000", 99,
                 700, " 200 ", "+200", "0200", [200]],
    "duration": [0, 61.5, "7.25", "1_000", "1e3", 1e3, 1e-05, -1, 1e300, 10**40, "NaN", "inf",
                 "0x10", True, [], "5.", ".5", ".", "1000000000.000001", "7.122999906539917"],
    "pdd_ms": [1200, 1.5, "1_0", -5, 10**30, "abc", "0x10", "1e3", 0],
    "ring_duration": [3, "2.5", "1_0", -0.5, "1e-3"],
    "customer_id": ["acme", "globex", "umbrella", 42, True, 4.5, {"x": 1}, "nobody"],
    "source_ip": ["203.0.113.10", "198.51.100.7", 7],
    "sip_user": ["initech-pbx1", ""],
    "direction": ["outbound", "inbound", "IN", 5, None],
    "provider_card_id": ["cost-tier1", 1.5],
}  # fmt: skip
VALID = {"dt": DAY, "dest_number": "447700900123", "sip_code": 200, "duration": 61,
         "source_ip": "203.0.113.10"}  # fmt: skip


@st.composite
def json_records(draw: st.DrawFn) -> dict[str, Any]:
    """A CDR (its callid set when it is written): valid, or with hostile values, or
    without some fields."""
    record: dict[str, Any] = dict(VALID)
    for name in draw(st.sets(st.sampled_from(sorted(JSON_VALUES)), max_size=3)):
        record[name] = draw(st.sampled_from(JSON_VALUES[name]))
    for name in draw(st.sets(st.sampled_from(sorted(record)), max_size=1)):
        del record[name]
    if draw(st.booleans()):
        record["sip_reason"] = draw(st.text(max_size=8))
    return record


def _callid(record: dict[str, Any], k: int) -> dict[str, Any]:
    """The record with a callid of its own, unless it has a hostile one (or none)."""
    if "callid" in record:
        return record
    return {"callid": f"r{k}", **record}


GARBAGE = st.binary(min_size=1, max_size=40).map(lambda b: b"x" + b.replace(b"\n", b""))
BLANK = st.sampled_from([b"", b" ", b"\t", b"\r", b" \t\r"])


def _insert(at: int, what: bytes) -> Callable[[bytes], bytes]:
    return lambda line: line[: at % (len(line) + 1)] + what + line[at % (len(line) + 1) :]


LINE_EDITS = st.one_of(
    st.just(lambda line: line),
    st.builds(_insert, st.integers(0, 200), st.sampled_from([b"\r", b"\x00", b"\xff", b"\xc3"])),
    st.builds(lambda at: lambda line: line[: max(1, at % len(line))], st.integers(0, 200)),
    st.just(lambda line: line[:-1] + b', "callid": "twice"}'),
    st.just(lambda line: b"\xef\xbb\xbf" + line),
)


@st.composite
def json_lines(draw: st.DrawFn) -> list[tuple[bytes, bool]]:
    """Lines of a JSON Lines file (no newline in any), each with whether it is a record
    (a blank line is none)."""
    lines: list[tuple[bytes, bool]] = []
    for k in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["record", "record", "record", "garbage", "blank"]))
        if kind == "blank":
            lines.append((draw(BLANK), False))
        elif kind == "garbage":
            lines.append((draw(GARBAGE), True))
        else:
            text = json.dumps(_callid(draw(json_records()), k), ensure_ascii=draw(st.booleans()))
            lines.append((draw(LINE_EDITS)(text.encode("utf-8", "surrogatepass")), True))
    return lines


# -- the lake, checked with DuckDB ---------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the sample catalog and its compiled tables, copied for each example."""
    home = new_home(tmp_path_factory.mktemp("fuzz-readers"), "home")
    cached_tables(home, load_tables)
    return home


_EXAMPLES = itertools.count()


def _example(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / f"example-{next(_EXAMPLES)}"
    shutil.copytree(template, folder / "home")
    return folder / "home", folder


def assert_each_record_in_one_place(home: Path, path: Path, lines: list[int]) -> list[str]:
    """``cdrflow rate`` of ``path``: the lake holds each of its records (by the line where
    it starts) exactly once, rated or rejected with a reason and its raw text, and nothing
    else. Returns the rejected ones' raw texts."""
    summary = rate_files(home, [path])
    assert summary.records == len(lines)
    lake = home / "lake"
    with duckdb.connect() as con:
        places: dict[str, list[tuple[Any, ...]]] = {"rated": [], "rejected": []}
        for kind, why in (
            ("rated", "NULL, NULL, NULL"),
            ("rejected", "reject_reason, reject_detail, raw"),
        ):
            if any((lake / kind).glob("date=*/*.parquet")):
                places[kind] = con.sql(
                    f"SELECT source, line, {why} "
                    f"FROM read_parquet('{lake / kind}/date=*/*.parquet')"
                ).fetchall()
    rows = places["rated"] + places["rejected"]
    assert {source for source, *_ in rows} <= {str(path)}
    assert sorted(line for _, line, *_ in rows) == sorted(lines)
    assert all(reason and detail and raw for *_, reason, detail, raw in places["rejected"])
    assert len(places["rated"]) == summary.rated
    return [raw for *_, raw in places["rejected"]]


@FUZZ
@given(json_lines())
def test_json_lines_every_record_in_one_place(
    template: Path, tmp_path: Path, con: duckdb.DuckDBPyConnection, lines: list[tuple[bytes, bool]]
) -> None:
    home, folder = _example(template, tmp_path)
    path = folder / "cdrs.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line, _ in lines))
    starts = [k for k, (_, record) in enumerate(lines, 1) if record]
    assert_each_record_in_one_place(home, path, starts)
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad


# -- CSV ------------------------------------------------------------------------------------

CSV_HEADER = ["callid", "dt", "dest_number", "sip_code", "duration", "pdd_ms", "customer_id",
              "source_ip", "direction", "sip_reason", "x"]  # fmt: skip
CSV_VALID = {"dt": DAY, "dest_number": "447700900123", "sip_code": "200", "duration": "61",
             "source_ip": "203.0.113.10"}  # fmt: skip
CSV_VALUES = {
    "dt": [DAY, "1762077600123", "2026-11-02T10:00:00-25:00", "2026-11-02T10:00:00+01:60",
           "yesterday", "1970-01-01T00:00:00Z", "99999999999999999999"],
    "sip_code": ["200", "486", "200.5", "1_000", "2e2", "9" * 40, "-200", "true", " 200 "],
    "duration": ["0", "61.5", "1_000", "1e3", "-1", "9" * 40, "NaN", "0x10", "5.", "."],
    "pdd_ms": ["1200", "1.5", "1_0", "-5", "9" * 30],
    "customer_id": ["acme", "globex", "42", "nobody"],
    "direction": ["outbound", "inbound", "IN"],
    "dest_number": ["447700900123", "44a", "4" * 70],
}  # fmt: skip
CSV_TEXT = st.text(alphabet="ab 1+é", max_size=6)


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# How one field is written: as it is, quoted, or broken in one of the ways that broke readers.
FIELD_EDITS: dict[str, Callable[[str], str]] = {
    "plain": lambda v: v,
    "quoted": _quoted,
    "bare CR": lambda v: v[:1] + "\r" + v[1:],
    "CR in quotes": lambda v: _quoted(v[:1] + "\r" + v[1:]),
    "NUL": lambda v: v + "\x00",
    "literal quote": lambda v: "x" + v + '"y',
    "text after quotes": lambda v: _quoted(v) + "z",
    "not UTF-8": lambda v: v + "\udcff",  # written as the byte 0xff
}


@st.composite
def csv_record(draw: st.DrawFn, k: int) -> tuple[str, int]:
    """A CSV record and the number of lines it spans."""
    values = {name: draw(CSV_TEXT) for name in CSV_HEADER} | CSV_VALID | {"callid": f"r{k}"}
    for name in draw(st.sets(st.sampled_from(sorted(CSV_VALUES)), max_size=3)):
        values[name] = draw(st.sampled_from(CSV_VALUES[name]))
    fields = [values[name] for name in CSV_HEADER]
    if draw(st.integers(0, 5)) == 0:  # a line break inside quotes: one record over two lines
        at = draw(st.integers(0, len(fields) - 1))
        fields[at] = _quoted(fields[at] + "\n" + draw(CSV_TEXT))
        return ",".join(fields), 2
    for at in draw(st.sets(st.integers(0, len(fields) - 1), max_size=3)):
        fields[at] = FIELD_EDITS[draw(st.sampled_from(sorted(FIELD_EDITS)))](fields[at])
    width = draw(st.sampled_from([0, 0, 0, -1, 1]))
    fields = fields[:-1] if width < 0 else fields + ["extra"] * width
    return ",".join(fields), 1


@st.composite
def csv_lines(draw: st.DrawFn) -> tuple[list[str], list[int]]:
    """The records and blank lines of a CSV file (after its header), and the line where
    each record starts."""
    parts: list[str] = []
    starts: list[int] = []
    line = 2
    for k in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 6)) == 0:
            parts.append(draw(BLANK).decode())
            line += 1
            continue
        record, spans = draw(csv_record(k))
        parts.append(record)
        starts.append(line)
        line += spans
    if draw(st.integers(0, 4)) == 0:  # a quote never closed: the last record, as text
        parts.append('"unclosed,' + ",".join(["1"] * (len(CSV_HEADER) - 1)))
        starts.append(line)
    return parts, starts


@FUZZ
@given(csv_lines(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_csv_every_record_in_one_place(
    template: Path,
    tmp_path: Path,
    con: duckdb.DuckDBPyConnection,
    lines: tuple[list[str], list[int]],
    newline: str,
    bom: bool,
) -> None:
    parts, starts = lines
    home, folder = _example(template, tmp_path)
    path = folder / "cdrs.csv"
    text = ",".join(CSV_HEADER) + "\n" + "".join(part + newline for part in parts)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogateescape"))
    assert_each_record_in_one_place(home, path, starts)
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad


# -- Parquet ----------------------------------------------------------------------------------

US_2026 = int(datetime(2026, 11, 2, 10, tzinfo=UTC).timestamp() * 1_000_000)


def _times(unit: str) -> list[int]:
    """Instants in ``unit``: in the years, 1970, just before it, the year 4200, and the
    most the unit holds once written (Parquet keeps seconds as milliseconds; nanoseconds
    reach 2262)."""
    per_us = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
    most = 2**62 // 1000 if unit == "s" else 2**62
    return [min(int(t // per_us), most) for t in (US_2026, 0, US_2026 * 40)] + [-1, most, -most]


# Column types a file may give a field, with values each type holds (None: a null).
COLUMNS: dict[str, list[tuple[pa.DataType, list[Any]]]] = {
    "callid": [(pa.string(), ["", " c ", "a\x00b", "é"]), (pa.int64(), [1, -5]),
               (pa.bool_(), [True]), (pa.binary(), [b"\xff\xfe", b"ok"]),
               (pa.large_string(), ["big"]), (pa.float64(), [1.5])],
    "dest_number": [(pa.string(), ["447700900123", "44a", ""]), (pa.int64(), [447700900123]),
                    (pa.float64(), [4.4e11]),
                    (pa.struct([("digits", pa.string())]), [{"digits": "44"}])],
    "sip_code": [(pa.int16(), [200, 486, 99, -1]), (pa.uint64(), [200, 2**64 - 1]),
                 (pa.float64(), [200.5, 200.0, float("nan"), float("inf")]),
                 (pa.string(), ["200", "2e2", "1_000"]), (pa.bool_(), [True]),
                 (pa.decimal128(5, 1), [Decimal("200.0")])],
    "duration": [(pa.decimal128(18, 6), [Decimal("61.5"), Decimal("-1")]),
                 (pa.decimal128(38, 10), [Decimal("1e20"), Decimal("0.0000000001")]),
                 (pa.float64(), [61.5, 1e300, 1e-300, float("nan"), float("-inf")]),
                 (pa.int64(), [2**62, 61]), (pa.string(), ["1_000", "1e3"]),
                 (pa.list_(pa.int64()), [[61]])],
    "pdd_ms": [(pa.int64(), [1200, -5]), (pa.float64(), [1.5]), (pa.string(), ["1_0"])],
    "customer_id": [(pa.string(), ["acme", "nobody"]), (pa.int64(), [42]),
                    (pa.float64(), [4.5]), (pa.bool_(), [False]),
                    (pa.dictionary(pa.int32(), pa.string()), ["acme", "globex"])],
    "direction": [(pa.string(), ["outbound", "inbound", "IN"]), (pa.int8(), [1])],
}  # fmt: skip
PARQUET_VALID: dict[str, tuple[pa.DataType, Any]] = {
    "dest_number": (pa.string(), "447700900123"),
    "sip_code": (pa.int16(), 200),
    "duration": (pa.decimal128(18, 6), Decimal("61")),
    "source_ip": (pa.string(), "203.0.113.10"),
}


@st.composite
def parquet_tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(1, 30))
    columns: dict[str, pa.Array] = {}
    hostile = draw(st.sets(st.sampled_from(sorted(COLUMNS)), max_size=4))
    for name in ["callid", *PARQUET_VALID, *COLUMNS]:
        if name in columns:
            continue
        if name in hostile:
            kind, choices = draw(st.sampled_from(COLUMNS[name]))
            valid_kind, good = PARQUET_VALID.get(name, (None, None))
            pool = [*choices, None, *([good] if kind == valid_kind else [])]
            values = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
            columns[name] = pa.array(values, kind)
        elif name == "callid":
            columns[name] = pa.array([f"p{k}" for k in range(n)])
        elif name in PARQUET_VALID:
            kind, value = PARQUET_VALID[name]
            columns[name] = pa.array([value] * n, kind)
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    zone = draw(st.sampled_from([None, "UTC", "Europe/Berlin"]))
    kind = draw(st.sampled_from(["time", "time", "text", "epoch"]))
    if kind == "time":
        when = pa.array(draw(st.lists(st.sampled_from(_times(unit)), min_size=n, max_size=n)))
        columns["dt"] = when.cast(pa.timestamp(unit, tz=zone))
    elif kind == "text":
        columns["dt"] = pa.array(draw(st.lists(st.sampled_from(CSV_VALUES["dt"]), min_size=n,
                                               max_size=n)))  # fmt: skip
    else:
        columns["dt"] = pa.array([US_2026 // 1000] * n, pa.int64())
    for name in draw(st.sets(st.sampled_from(sorted(columns)), max_size=1)):
        del columns[name]
    return pa.table(columns)


@FUZZ
@given(parquet_tables())
def test_parquet_every_row_in_one_place(template: Path, tmp_path: Path, table: pa.Table) -> None:
    home, folder = _example(template, tmp_path)
    path = folder / "cdrs.parquet"
    pq.write_table(table, path)
    raws = assert_each_record_in_one_place(home, path, list(range(1, table.num_rows + 1)))
    # A Parquet row has no text: its raw is a JSON object of the values the file holds.
    assert all(isinstance(json.loads(raw), dict) for raw in raws)


# -- Kafka messages ---------------------------------------------------------------------------

MESSAGES = st.one_of(
    json_records().map(lambda r: json.dumps(_callid(r, 0)).encode()),
    json_records().map(lambda r: json.dumps(_callid(r, 0), indent=1).encode()),  # line breaks
    st.builds(lambda r, edit: edit(json.dumps(_callid(r, 0)).encode()), json_records(), LINE_EDITS),
    st.sampled_from([None, b"", b" ", b"\n", b"\r\n", b"\x0b", b"\t \t"]),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.tuples(MESSAGES, st.integers(0, 2)), min_size=1, max_size=30))
def test_kafka_messages_every_message_in_one_place(
    con: duckdb.DuckDBPyConnection, messages: list[tuple[bytes | None, int]]
) -> None:
    """A message is one record, whatever it holds: valid, or invalid with a reason, at its
    partition and offset. (``read_messages`` is what a stream worker makes of a poll's
    message values; the broker is not needed to test it.)"""
    values = [value for value, _ in messages]
    partitions = np.array([p for _, p in messages], np.int64)
    offsets = np.zeros(len(messages), np.int64)
    for p in set(partitions.tolist()):
        mine = partitions == p
        offsets[mine] = 100 * p + np.arange(int(mine.sum()))
    blocks = cdrfile.read_messages(con, values, partitions, offsets, lambda p: f"kafka:cdrs/{p}")
    assert sorted(blocks) == sorted(set(partitions.tolist()))
    for p, block in blocks.items():
        assert block.blank == 0
        tables = [t for t in (block.valid, block.invalid) if t.num_rows]
        assert {s for t in tables for s in t["source"].to_pylist()} == {f"kafka:cdrs/{p}"}
        seen = [line for t in tables for line in t["line"].to_pylist()]
        assert sorted(seen) == offsets[partitions == p].tolist()
        if block.invalid.num_rows:
            assert all(block.invalid["invalid"].to_pylist()) and all(
                block.invalid["raw"].to_pylist()
            )
