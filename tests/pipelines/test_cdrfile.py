"""Reading CDR files: every record keeps its line and raw text; every bad one says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cdrfile
from pipelines.cdrfile import read_blocks, validate
from schemas.cdr import INPUT, INPUT_NAMES
from schemas.errors import CdrflowError

GOOD = {"callid": "a", "dt": "2026-11-01T10:00:00Z", "dest_number": "447700900123",
        "sip_code": 200, "duration": 7.5, "source_ip": "203.0.113.10"}  # fmt: skip


def _read(
    con: duckdb.DuckDBPyConnection, path: Path, block_bytes: int = 1 << 20
) -> tuple[pa.Table, pa.Table, int]:
    valid, invalid, blank = [], [], 0
    for block in read_blocks(path, con, block_bytes):
        v, i, b = validate(con, block.table)
        valid.append(v)
        invalid.append(i)
        blank += b
    return pa.concat_tables(valid), pa.concat_tables(invalid), blank


BASE = {"dt": "2026-11-01T10:00:00Z", "dest_number": "44", "sip_code": 200}


def line(callid: str | None, drop: str = "", **fields: object) -> str:
    """A JSON line of BASE changed by ``fields``, without the field ``drop``."""
    record = {"callid": callid, **BASE, **fields}
    return json.dumps({k: v for k, v in record.items() if k != drop and v is not None})


BAD_JSON = [
    (line("b", dt="yesterday"), "dt: 'yesterday' is neither ISO 8601 nor epoch milliseconds"),
    (line("c", dest_number="44x"), "dest_number: '44x' may hold only digits, +, * and #"),
    (line("d", sip_code=999), "sip_code: '999' is not a SIP response code (100-699)"),
    (line("e", duration="abc"), "duration: 'abc' is not a number of seconds >= 0"),
    (line("f", duration=-1), "duration: '-1' is not a number of seconds >= 0"),
    (line("g", pdd_ms="slow"), "pdd_ms: 'slow' is not a whole number of milliseconds >= 0"),
    (line(None), "callid: missing"),
    (line("h", drop="dt"), "dt: missing"),
    (line("i", drop="dest_number"), "dest_number: missing"),
    (line("j", drop="sip_code"), "sip_code: missing"),
    (line("k", direction="up"), "direction: 'up' is neither outbound nor inbound"),
    (line("l", sip_code="two"), "sip_code: 'two' is not a SIP response code (100-699)"),
    (line("m", ring_duration=[1]), "ring_duration: '[1]' is not a number of seconds >= 0"),
    (
        line("o", duration="1000000000.000001"),
        "duration: '1000000000.000001' is more than 1000000000 seconds, longer than any call",
    ),
    (
        line("t", ring_duration=1000000000.5),
        "ring_duration: '1000000000.5' is more than 1000000000 seconds, longer than any call",
    ),
    (
        line("q", dt="1999-12-31T23:59:59.999999Z"),
        "dt: '1999-12-31T23:59:59.999999Z' is not in the years 2000 to 2099",
    ),
    (line("r", dt=0), "dt: '0' is not in the years 2000 to 2099"),  # a clock never set
    (
        line("s", dt="2100-01-01T00:00:00Z"),
        "dt: '2100-01-01T00:00:00Z' is not in the years 2000 to 2099",
    ),
    (
        line("p", dt="2026-11-01T10:00:00\u0000Z"),  # a NUL is shown, not dropped
        r"dt: '2026-11-01T10:00:00\u0000Z' is neither ISO 8601 nor epoch milliseconds",
    ),
    ('{"callid": "n", "dt": truncated', "not a JSON object"),
    ("[1, 2, 3]", "not a JSON object"),
    ("plain text", "not a JSON object"),
]


def test_json_lines_every_bad_record_names_its_line_and_field(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    lines = (
        [json.dumps(GOOD), ""]
        + [text for text, _ in BAD_JSON]
        + [json.dumps({**GOOD, "callid": "z"})]
    )
    path = tmp_path / "cdrs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    valid, invalid, blank = _read(con, path)
    assert valid["callid"].to_pylist() == ["a", "z"]
    assert valid["line"].to_pylist() == [1, len(lines)]
    assert blank == 1
    got = {(row["line"], row["invalid"], row["raw"]) for row in invalid.to_pylist()}
    expected = {(i + 3, detail, text + "\n") for i, (text, detail) in enumerate(BAD_JSON)}
    assert got == expected
    assert set(invalid["source"].to_pylist()) == {str(path)}


def test_the_longest_seconds_are_exact_on_the_duckdb_path(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """DuckDB (every line of ``_read``; in a run, the lines the scanner does not find plain,
    as one with a \\u escape) reads JSON numbers through a binary double: 98765432109.876543
    came back as 98765432109.876540. Within the bound a duration has at most 15 significant
    digits, which come back exact."""
    lines = [
        json.dumps({**GOOD, "callid": f"c{i}", "duration": d, "ring_duration": d,
                    "sip_reason": "caf\u00e9"}, ensure_ascii=True)
        for i, d in enumerate([999999999.999999, 123456789.123456, 0.000001, 1000000000])
    ]  # fmt: skip
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines) + "\n")
    valid, invalid, _ = _read(con, path)
    assert invalid.num_rows == 0
    expected = [Decimal(t) for t in ("999999999.999999", "123456789.123456", "0.000001", "1E9")]
    assert valid["duration"].to_pylist() == expected
    assert valid["ring_duration"].to_pylist() == expected
    assert valid["sip_reason"].to_pylist() == ["café"] * 4


def test_values_are_typed_exactly(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.jsonl"
    records = [
        {**GOOD, "duration": 7.123456, "pdd_ms": 1500, "ring_duration": "3.25"},
        {**GOOD, "callid": "b", "dt": 1761991200123, "sip_code": "486", "direction": "inbound"},
        {**GOOD, "callid": "c", "dt": "2026-11-01T12:00:00+02:00", "dest_number": "+4477*#"},
        {**GOOD, "callid": "d", "dt": "2026-11-01 10:00:00.5", "customer_id": 42},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    valid, invalid, _ = _read(con, path)
    assert invalid.num_rows == 0
    assert valid.schema.field("dt").type == INPUT.field("dt").type
    rows = valid.to_pylist()
    assert rows[0]["duration"] == Decimal("7.123456") and rows[0]["ring_duration"] == Decimal(
        "3.25"
    )
    assert rows[1]["dt"] == datetime(2025, 11, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert rows[1]["sip_code"] == 486 and rows[1]["direction"] == "inbound"
    assert rows[2]["dt"] == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert rows[3]["dt"] == datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert rows[3]["customer_id"] == "42" and rows[0]["direction"] == "outbound"


def test_a_duration_past_the_microsecond_is_rounded_half_up_as_it_is_read(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Switches that compute a duration in binary floating point write its noise
    (7.122999906539917 for 7.123): such a duration is read to the microsecond, half up, and
    billed on what the lake stores, not refused (docs/rating.md, "Decisions")."""
    given = [
        "7.122999906539917",
        "6.000000000000001",
        "6.0000005",
        "6.00000049",
        "0.30000000000000004",
    ]
    path = tmp_path / "cdrs.csv"
    path.write_text(
        "callid,dt,dest_number,sip_code,duration\n"
        + "".join(f"c{i},2026-11-01T10:00:00Z,44,200,{d}\n" for i, d in enumerate(given))
    )
    floats = tmp_path / "cdrs.parquet"  # the same values as binary doubles
    pq.write_table(
        pa.table(
            {
                "callid": [f"p{i}" for i in range(len(given))],
                "dt": ["2026-11-01T10:00:00Z"] * len(given),
                "dest_number": ["44"] * len(given),
                "sip_code": [200] * len(given),
                "duration": pa.array([float(d) for d in given], pa.float64()),
            }
        ),
        floats,
    )
    expected = [Decimal(d) for d in ["7.123", "6", "6.000001", "6", "0.3"]]
    for source in (path, floats):
        valid, invalid, _ = _read(con, source)
        assert invalid.num_rows == 0
        assert valid["duration"].to_pylist() == expected


def test_blocks_split_only_between_lines(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.jsonl"
    path.write_text("".join(json.dumps({**GOOD, "callid": f"c{i}"}) + "\n" for i in range(500)))
    valid, invalid, _ = _read(con, path, block_bytes=1000)  # many small blocks
    assert invalid.num_rows == 0
    assert valid["line"].to_pylist() == list(range(1, 501))
    assert valid["callid"].to_pylist() == [f"c{i}" for i in range(500)]


def test_a_last_line_without_newline_is_read(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "cdrs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "callid": "last"}))
    valid, _, _ = _read(con, path)
    assert valid["callid"].to_pylist() == ["a", "last"]


def test_one_connection_reads_file_after_file_each_with_its_own_source(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """The JSON parse and ``validate`` are statements a connection prepares once: each
    later block, of another file or format, is bound again to its own records and source."""
    first, middle, last = tmp_path / "first.jsonl", tmp_path / "middle.csv", tmp_path / "last.jsonl"
    first.write_text(json.dumps(GOOD) + "\nplain text\n")
    middle.write_text("callid,dt,dest_number,sip_code\nm,2026-11-01T10:00:00Z,44,999\n")
    last.write_text("".join(json.dumps({**GOOD, "callid": c}) + "\n" for c in "xyz"))
    results = [_read(con, path) for path in (first, middle, last)]
    assert [r[0]["callid"].to_pylist() for r in results] == [["a"], [], ["x", "y", "z"]]
    assert [r[1]["line"].to_pylist() for r in results] == [[2], [2], []]
    for path, (valid, invalid, _) in zip((first, middle, last), results, strict=True):
        assert set(valid["source"].to_pylist() + invalid["source"].to_pylist()) == {str(path)}
    assert results[1][1]["invalid"].to_pylist() == [
        "sip_code: '999' is not a SIP response code (100-699)"
    ]


def test_csv_keeps_numbers_as_text_and_reports_bad_rows(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "cdrs.csv"
    path.write_text(
        "callid,dt,dest_number,source_cli,sip_code,duration,unknown_extra\n"
        "a,2026-11-01T10:00:00Z,+4420700000,+4420711111,200,7.5,x\n"
        "b,2026-11-01T10:00:00Z,0044207,,486,,\n"
        "c,2026-11-01T10:00:00Z,44,too,many,fields,here,and,more\n"
        "\n"
        "d,2026-11-01T10:00:00Z,44,,700,,\n"
        '"e",2026-11-01T10:00:00Z,"44",,200,"1.5",\n'
    )
    valid, invalid, blank = _read(con, path)
    assert valid["callid"].to_pylist() == ["a", "b", "e"]
    assert valid["dest_number"].to_pylist() == ["+4420700000", "0044207", "44"]
    assert valid["source_cli"].to_pylist()[0] == "+4420711111"
    assert valid["line"].to_pylist() == [2, 3, 7]
    assert blank == 1
    got = {(r["line"], r["invalid"]) for r in invalid.to_pylist()}
    assert got == {(4, "the row does not have the 7 fields of the header"),
                   (6, "sip_code: '700' is not a SIP response code (100-699)")}  # fmt: skip


def test_csv_without_the_required_header_is_refused(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "cdrs.csv"
    path.write_text("call,when\n1,2\n")
    with pytest.raises(
        CdrflowError, match=r"cdrs.csv:1: the CSV header lacks callid, dt, dest_number, sip_code"
    ):
        _read(con, path)


@pytest.mark.parametrize(("separator", "called"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_file_separated_otherwise_is_refused_saying_so(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, separator: str, called: str
) -> None:
    """Spreadsheets in many locales export with semicolons: the header names every field,
    just not between commas."""
    path = tmp_path / "cdrs.csv"
    path.write_text(separator.join(["callid", "dt", "dest_number", "sip_code"]) + "\na;b;c;d\n")
    with pytest.raises(CdrflowError) as refused:
        _read(con, path)
    assert str(refused.value) == (
        f"{path}:1: the CSV header lacks callid, dt, dest_number, sip_code (SPEC §4 fields); "
        f"its fields are separated by {called}, and cdrflow reads commas"
    )


def test_parquet_rows_are_numbered_and_typed(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "cdrs.parquet"
    table = pa.table({
        "callid": ["a", "b"],
        "dt": pa.array([datetime(2026, 11, 1, 10, tzinfo=UTC)] * 2, pa.timestamp("ms", tz="UTC")),
        "dest_number": ["4477", "44"],
        "sip_code": pa.array([200, 999], pa.int32()),
        "duration": [7.5, None],
    })  # fmt: skip
    pq.write_table(table, path)
    valid, invalid, _ = _read(con, path)
    assert valid.to_pylist()[0]["duration"] == Decimal("7.5")
    assert valid["line"].to_pylist() == [1]
    [bad] = invalid.to_pylist()
    assert (bad["line"], bad["invalid"]) == (
        2,
        "sip_code: '999' is not a SIP response code (100-699)",
    )


def test_a_parquet_file_is_read_in_bounded_blocks_that_release_what_was_read(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of at most PARQUET_ROWS rows, numbered on across row groups; and reading
    holds only the block in hand (Arrow's pre-buffering kept every row group read until
    the file's end: 1 GiB at 20M CDRs)."""
    monkeypatch.setattr(cdrfile, "PARQUET_ROWS", 1000)
    path = tmp_path / "cdrs.parquet"
    n = 40_000
    table = pa.table({
        "callid": [f"call-{i:08d}-{'x' * 200}" for i in range(n)],
        "dt": ["2026-11-01T10:00:00Z"] * n,
        "dest_number": ["447700900123"] * n,
        "sip_code": pa.array([200] * n, pa.int32()),
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=2000, compression="none")
    first = pa.total_allocated_bytes()
    sizes, lines, held = [], [], []
    for block in read_blocks(path, con):
        sizes.append(block.table.num_rows)
        lines.append(block.table["line"][0].as_py())
        held.append(pa.total_allocated_bytes() - first)
    assert sum(sizes) == n and max(sizes) == 1000
    assert lines == list(range(1, n, 1000))
    # Every callid is 218 bytes: the whole file is about 9 MB, a block about 0.2 MB.
    assert max(held) < 3_000_000


def test_unknown_file_types_are_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.xml"
    path.write_text("<cdr/>")
    with pytest.raises(
        CdrflowError, match=r"unknown CDR file type '.xml'; use .jsonl, .csv or .parquet"
    ):
        _read(con, path)


def test_all_input_columns_come_out(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.jsonl"
    full = {name: "1" for name in INPUT_NAMES} | GOOD | {"direction": "outbound"}
    path.write_text(json.dumps(full) + "\n")
    valid, _, _ = _read(con, path)
    assert valid.column_names[: len(INPUT_NAMES)] == list(INPUT_NAMES)


def test_every_kafka_message_is_one_record_read_as_sent(con: duckdb.DuckDBPyConnection) -> None:
    """A message of white space alone was taken for a blank line and dropped: no record,
    rated or rejected. A line break inside a message became a space, so that a raw line
    break inside a JSON string (which JSON forbids) was read as a space and rated."""
    good = json.dumps(GOOD).encode()
    values = [
        good,
        b"  ",
        b"\t\r\n",
        b"\x0b",
        b"",
        None,
        good.replace(b'"a"', b'"a\nb"'),  # a raw line break in a string: no JSON
        good.replace(b'"a"', b'"c"').replace(b", ", b",\r\n "),  # between values: white space
        good.replace(b'"a"', b'"d\rx"'),
    ]
    partitions = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0], np.int64)
    offsets = np.array([10, 20, 11, 21, 12, 22, 13, 23, 14], np.int64)
    blocks = cdrfile.read_messages(con, values, partitions, offsets, lambda p: f"kafka:t/{p}")
    places = {}
    for block in blocks.values():
        for row in block.valid.select(["callid", "line", "source"]).to_pylist():
            places[row["line"]] = (row["source"], row["callid"])
        for row in block.invalid.select(["invalid", "line", "source", "raw"]).to_pylist():
            places[row["line"]] = (row["source"], row["invalid"], row["raw"].rstrip("\n"))
    assert places == {
        10: ("kafka:t/0", "a"),
        20: ("kafka:t/1", "not a JSON object", cdrfile.EMPTY_MESSAGE.decode()),
        11: ("kafka:t/0", "not a JSON object", cdrfile.EMPTY_MESSAGE.decode()),
        21: ("kafka:t/1", "not a JSON object", cdrfile.EMPTY_MESSAGE.decode()),
        12: ("kafka:t/0", "not a JSON object", cdrfile.EMPTY_MESSAGE.decode()),
        22: ("kafka:t/1", "not a JSON object", cdrfile.EMPTY_MESSAGE.decode()),
        13: ("kafka:t/0", "not a JSON object", values[6].decode()),
        23: ("kafka:t/1", "c"),
        14: ("kafka:t/0", "not a JSON object", values[8].decode()),
    }
