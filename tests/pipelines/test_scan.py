"""The numba fast path reads exactly what the DuckDB slow path reads, or hands the line over.

Each test writes a file, reads it both ways (``read_records``: fast path plus fallback;
``read_blocks`` + ``validate``: DuckDB for every line) and requires the same typed records
and the same rejections, line for line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import cdrfile, parquet_fast, scan


def both_ways(
    con: duckdb.DuckDBPyConnection, path: Path
) -> tuple[tuple[pa.Table, list], tuple[pa.Table, list]]:
    fast, fast_bad = [], []
    for block in cdrfile.read_records(path, con, 64 << 20):
        fast.append(block.valid.drop_columns(["row"]))
        if block.invalid.num_rows:
            fast_bad += block.invalid.select(["line", "invalid"]).to_pylist()
    slow, slow_bad = [], []
    for raw in cdrfile.read_blocks(path, con, 1 << 16):
        valid, invalid, _ = cdrfile.validate(con, raw.table)
        slow.append(valid.drop_columns(["raw"]))
        slow_bad += invalid.select(["line", "invalid"]).to_pylist()
    fast_table = pa.concat_tables(fast)
    return (fast_table, sorted(fast_bad, key=str)), (
        pa.concat_tables(slow).cast(fast_table.schema),
        sorted(slow_bad, key=str),
    )


def assert_same_both_ways(con: duckdb.DuckDBPyConnection, path: Path) -> pa.Table:
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist()
    assert fast_bad == slow_bad
    return fast


EDGES = [
    '{"callid":"a","dt":"2026-11-01T10:00:00Z","dest_number":"447","sip_code":200,"duration":7.5}',
    '{ "callid" : "b" , "dt" : "2026-11-01 10:00:00.123456" , "dest_number" : "+1#2*3" , "sip_code" : "486" }',
    '{"callid":"c","dt":1761991200123,"dest_number":"44","sip_code":200,"duration":"12","pdd_ms":0}',
    '{"callid":"d","dt":"2026-11-01T12:00:00+02:00","dest_number":"44","sip_code":200,"ring_duration":0.000001}',
    '{"callid":"e","dt":"2026-11-01T12:00:00-05:30","dest_number":"44","sip_code":200,"duration":.5}',
    '{"callid":"f","dt":"2026-02-29T00:00:00Z","dest_number":"44","sip_code":200}',
    '{"callid":"g","dt":"2028-02-29T23:59:59.9Z","dest_number":"44","sip_code":699,"duration":7.0000001}',
    '{"callid":"h","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"sip_reason":"say \\"hi\\"\\n"}',
    '{"callid":"i","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"sip_reason":"caf\\u00e9"}',
    '{"callid":"j","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"switch":"sw\\\\1"}',
    '{"callid":" k ","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200}',
    '{"callid":"l","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"callid":"l2"}',
    '{"callid":"m","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"extra":{"a":[1,2]}}',
    '{"callid":"n","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"direction":"inbound"}',
    '{"callid":"o","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"direction":"Inbound"}',
    '{"callid":"p","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"customer_id":42}',
    '{"callid":"q","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"source_ip":null}',
    '{"callid":"q2","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"switch":"a\tb"}',
    '{"callid":"q3","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"sw\\itch":"x"}',
    '{"callid":"q4","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"s\\u0077itch":"y"}',
    '{"callid":"r","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"duration":1e2}',
    '{"callid":"s","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":2e2}',
    '{"callid":"t","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"duration":""}',
    '{"callid":"u","dt":"2026-13-01T10:00:00Z","dest_number":"44","sip_code":200}',
    '{"callid":"v","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"pdd_ms":-5}',
    '{"callid":"w","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":true}',
    '{"callid":"x","dt":"2026-11-01T10:00:00Z","dest_number":"","sip_code":200}',
    '{"callid":"y","dt":"2026-11-01","dest_number":"44","sip_code":200}',
    '{"callid":"z","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"release_reason":"Q.850;cause=16;text=\\"NORMAL_CLEARING\\""}',
    '{"callid":"√","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"switch":"zürich"}',
    '\r\t{"callid":"cr","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200}',
    "{}",
    "{",
    '{"callid":"trailing","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200} x',
    "   ",
    "",
]  # fmt: skip


def test_edge_cases_of_json_lines(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "edges.jsonl"
    path.write_text("\n".join(EDGES) + "\n")
    table = assert_same_both_ways(con, path)
    assert 'say "hi"\n' in table["sip_reason"].to_pylist()  # escapes decoded on the fast path


def test_edge_cases_of_csv(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "edges.csv"
    path.write_text(
        "callid,dt,dest_number,sip_code,duration,direction,sip_reason,x\n"
        "a,2026-11-01T10:00:00Z,+4420,200,7.5,,OK,1\n"
        "b,2026-11-01T10:00:00Z,4420,486,,inbound,,\n"
        '"c",2026-11-01T10:00:00Z,"4420",200,1,,"Busy, here",\n'
        "d,2026-11-01T10:00:00Z,4420,200,1\n"
        "e,2026-11-01T10:00:00Z,4420,200,1,,,,,\n"
        "f,yesterday,4420,200,1,,,\n"
        "\n"
        "g,2026-11-01T10:00:00Z,44 20,200,1,,,\r\n"
        "h,2026-11-01T10:00:00Z,4420,200,1,,a\rb,\n"  # a CR outside quotes: invalid
        'i,2026-11-01T10:00:00Z,4420,200,1,,"a\rb",\n'  # inside quotes: text
        "j,2026-11-01T10:00:00Z,4420,200,1,\r,,\n"
        f"k,2026-11-01T10:00:00Z,4420,200,1,,,{'x' * 131_073}\n"  # longer than csv reads
    )
    assert_same_both_ways(con, path)


FIELDS = {
    "callid": st.sampled_from(["c1", "c2", " c3", "", "ç4", "c\"5"]),
    "dt": st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:00:00.5Z", "2026-11-31T00:00:00Z",
                           "2026-11-01T25:00:00Z", "1761991200123", 1761991200123, "2026-11-01T10:00:00+01:00",
                           "2026-11-01T10:00:00", "2026-11-01T10:00:00.1234567Z", "soon",
                           "1999-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z", 0,
                           "2099-12-31T23:59:59.999999Z", "2100-01-01T00:00:00Z"]),
    "dest_number": st.sampled_from(["4477", "+4477", "*12#3", "44a", "", 4477]),
    "sip_code": st.sampled_from([200, "200", 486, 99, 700, "abc", 200.0, None]),
    "duration": st.sampled_from([0, 7, 7.5, "7.25", "7.1234567", -1, "", None, "1e1", 0.0001]),
    "pdd_ms": st.sampled_from([0, 1500, "1500", 1.5, -1, None]),
    "direction": st.sampled_from(["outbound", "inbound", "in", None, ""]),
    "sip_reason": st.text(max_size=6),
}  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.fixed_dictionaries({}, optional=FIELDS), min_size=1, max_size=40))
def test_random_records_read_the_same_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, records: list[dict[str, object]]
) -> None:
    path = tmp_path / "random.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert_same_both_ways(con, path)


def test_the_fast_path_takes_the_plain_records(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Not a speed test: it checks that plain records do not all fall to the slow path."""
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"callid": f"c{i}", "dt": "2026-11-01T10:00:00.123Z",
                                        "dest_number": "447700900123", "sip_code": 200,
                                        "duration": 61.25, "release_reason": 'Q.850;text="OK"'}) + "\n"
                            for i in range(100)))  # fmt: skip
    [block] = list(cdrfile._line_blocks(path, 1 << 20))
    n = len(block)
    starts, ends = (scan.np.zeros((scan.N_FIELDS, n), scan.np.int64) for _ in range(2))
    kinds = scan.np.zeros((scan.N_FIELDS, n), scan.np.int8)
    status = scan.np.empty(n, scan.np.int8)
    scan.scan_json(block.data, block.offsets, scan.NAMES_OFFSETS, scan.NAMES_DATA, scan.KEY_TABLE,
                   starts, ends, kinds, status)  # fmt: skip
    assert (status == scan.OK).all()


def test_a_big_block_is_read_in_two_halves_the_same_way(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    from tests.pipelines.workload import records, write_jsonl

    rows = records(30_000, seed=4)
    for i in range(0, len(rows), 900):  # valid, but the fast path leaves escapes to DuckDB
        rows[i]["sip_reason"] = 'say "hi"'
    path = write_jsonl(tmp_path / "big.jsonl", rows, broken_every=700)
    [block] = list(cdrfile.read_records(path, con, 64 << 20))  # one block: split in two
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist()
    assert fast_bad == slow_bad
    lines = path.read_text().splitlines()
    broken = [n for n, text in enumerate(lines, 1) if text.startswith('{"callid": "broken"')]
    assert set(broken) <= {r["line"] for r in fast_bad}
    assert min(broken) < 15_000 < max(broken)  # from both halves
    escaped = [r["line"] for r in fast.to_pylist() if r["sip_reason"] == 'say "hi"']
    assert len(escaped) == 34 and min(escaped) < 15_000 < max(escaped)
    assert block.valid["row"].to_pylist() == [line - 1 for line in block.valid["line"].to_pylist()]
    assert block.valid["line"].to_pylist() == sorted(block.valid["line"].to_pylist())


def test_quoted_csv_reads_the_same_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text(
        '"callid","dt","dest_number","sip_code","duration","sip_reason","switch"\n'
        '"a","2026-11-01T10:00:00Z","+4420","200","7.5","OK","sw1"\n'
        '"b","2026-11-01T10:00:00Z","4420","486","","Busy Here",""\n'
        '"c","2026-11-01T10:00:00Z","4420","200","1","say ""hi""","x"\n'
        '"d","2026-11-01T10:00:00Z","4420","200","1","a, b",\n'
        '"e","2026-11-01T10:00:00Z","4420","200","1","unterminated,x\n'
        'f,"2026-11-01T10:00:00Z",4420,200,1,x"y,z\n'
        '"g","2026-11-01T10:00:00Z","4420","200","n/a","",""\n'
    )
    table = assert_same_both_ways(con, path)
    assert table["sip_reason"].to_pylist()[:2] == ["OK", "Busy Here"]


# -- Parquet: typed columns taken as they are (pipelines.parquet_fast) or through validate ---

PLAIN_ROW = {"callid": "p1", "dest_number": "447700900123", "sip_code": 200,
             "duration": Decimal("61.250"), "pdd_ms": 1200, "direction": "outbound",
             "source_cli": "+4420711111"}  # fmt: skip
PARQUET_EDGES = [
    {},
    {"callid": " k "},
    {"callid": ""},
    {"callid": None},
    {"dest_number": "+1#2*3"},
    {"dest_number": "44a"},
    {"dest_number": ""},
    {"dest_number": "4" * 64},
    {"dest_number": "4" * 65},
    {"dest_number": " 44"},
    {"sip_code": 99},
    {"sip_code": 700},
    {"sip_code": None},
    {"duration": Decimal("-1")},
    {"duration": None},
    {"duration": Decimal("0.000")},
    {"pdd_ms": -5},
    {"pdd_ms": None},
    {"direction": "inbound"},
    {"direction": "Inbound"},
    {"direction": None},
    {"direction": ""},
    {"source_cli": ""},
    {"source_cli": "a\tb"},
    {"source_cli": "zürich "},
    {"callid": "p1"},  # the same callid again: both rows are read, rating marks the duplicate
]


def _parquet(
    path: Path, rows: list[dict[str, object]], dt: pa.DataType, **types: pa.DataType
) -> Path:
    """``rows`` over ``PLAIN_ROW`` as a Parquet file with these column types (a row with a
    value its type cannot hold, as -5 for unsigned milliseconds, is left out)."""
    schema = pa.schema([
        ("callid", types.get("text", pa.string())),
        ("dt", dt),
        ("dest_number", types.get("text", pa.string())),
        ("source_cli", types.get("text", pa.string())),
        ("duration", types.get("duration", pa.decimal128(10, 3))),
        ("sip_code", types.get("sip_code", pa.int16())),
        ("pdd_ms", types.get("pdd_ms", pa.int64())),
        ("direction", types.get("text", pa.string())),
    ])  # fmt: skip
    when = datetime(2026, 11, 1, 10, 0, 0, 123000, tzinfo=UTC)
    if dt.tz is None:
        when = when.replace(tzinfo=None)
    seconds = schema.field("duration").type
    convert = (
        int if pa.types.is_integer(seconds) else float if pa.types.is_floating(seconds) else None
    )
    unsigned = pa.types.is_unsigned_integer(schema.field("pdd_ms").type)
    full = []
    for row in rows:
        record: dict[str, Any] = {**PLAIN_ROW, "dt": when, **row}
        if convert is not None and record["duration"] is not None:
            record["duration"] = convert(record["duration"])
        if not (unsigned and (record["pdd_ms"] or 0) < 0):
            full.append(record)
    pq.write_table(pa.Table.from_pylist(full, schema), path)
    return path


@pytest.mark.parametrize(
    ("dt", "types"),
    [
        (pa.timestamp("us", tz="UTC"), {}),
        (pa.timestamp("ms"), {"text": pa.large_string(), "sip_code": pa.int64()}),
        (pa.timestamp("s", tz="Europe/Berlin"), {"pdd_ms": pa.uint32(), "duration": pa.int32()}),
        (pa.timestamp("ns", tz="UTC"), {}),  # not converted exactly: the text path throughout
        (pa.timestamp("us", tz="UTC"), {"duration": pa.float64()}),  # the same
    ],
)
def test_edge_cases_of_parquet(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, dt: pa.DataType, types: dict[str, pa.DataType]
) -> None:
    path = _parquet(tmp_path / "edges.parquet", PARQUET_EDGES, dt, **types)
    table = assert_same_both_ways(con, path)
    assert table.num_rows > 10
    second = 0 if dt.unit == "s" else 123000
    assert set(table["dt"].to_pylist()) == {datetime(2026, 11, 1, 10, 0, 0, second, tzinfo=UTC)}


@pytest.mark.parametrize("kind", [pa.decimal128(18, 6), pa.int32(), pa.int64(), pa.float64()])
def test_a_duration_longer_than_any_call_is_invalid_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, kind: pa.DataType
) -> None:
    rows = [{"duration": Decimal(1_000_000_000)}, {"duration": Decimal(1_000_000_001)}]
    path = _parquet(tmp_path / "long.parquet", rows, pa.timestamp("us", tz="UTC"), duration=kind)
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad
    assert fast["duration"].to_pylist() == [Decimal(1_000_000_000)]
    assert [r["invalid"].split(" is ")[1] for r in fast_bad] == [
        "more than 1000000000 seconds, longer than any call"
    ]


@pytest.mark.parametrize(
    "kind", [pa.timestamp("s", tz="UTC"), pa.timestamp("us"), pa.timestamp("ms")]
)
def test_a_dt_out_of_the_years_is_invalid_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, kind: pa.DataType
) -> None:
    naive = kind.tz is None
    moments = [datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC),
               datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC),
               datetime(1970, 1, 1, tzinfo=UTC)]  # fmt: skip
    rows = [{"dt": m.replace(tzinfo=None) if naive else m} for m in moments]
    path = _parquet(tmp_path / "years.parquet", rows, kind)
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad
    assert fast["dt"].to_pylist() == moments[1:3]
    assert sorted(r["line"] for r in fast_bad) == [1, 4, 5]
    assert all(r["invalid"].endswith("is not in the years 2000 to 2099") for r in fast_bad)


def test_the_parquet_fast_path_takes_the_plain_rows(tmp_path: Path) -> None:
    """Not a speed test: plain typed rows do not fall to the text path, and every edge
    above that breaks a rule or needs trimming does."""
    path = _parquet(tmp_path / "edges.parquet", PARQUET_EDGES, pa.timestamp("us", tz="UTC"))
    table = pq.read_table(path)
    assert parquet_fast.plain_types(table.schema)
    taken = [
        edge for edge, plain in zip(PARQUET_EDGES, parquet_fast.plain_rows(table), strict=True)
        if plain
    ]  # fmt: skip
    assert taken == [
        {}, {"dest_number": "+1#2*3"}, {"dest_number": "4" * 64}, {"duration": None},
        {"duration": Decimal("0.000")}, {"pdd_ms": None}, {"direction": "inbound"},
        {"direction": None}, {"source_cli": "a\tb"}, {"callid": "p1"},
    ]  # fmt: skip


def test_a_zoned_parquet_time_is_its_instant(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """A timestamp column in a zone other than UTC: the text path once wrote its local time
    with a Z, an hour off for Europe/Berlin in November."""
    path = _parquet(tmp_path / "berlin.parquet", [{}], pa.timestamp("ms", tz="Europe/Berlin"))
    for raw in cdrfile.read_blocks(path, con):
        valid, _, _ = cdrfile.validate(con, raw.table)
        assert valid["dt"].to_pylist() == [datetime(2026, 11, 1, 10, 0, 0, 123000, tzinfo=UTC)]


PARQUET_FIELDS = {
    "callid": st.sampled_from(["c1", "c2", " c3", "", "ç4", None]),
    "dest_number": st.sampled_from(["4477", "+4477", "*12#3", "44a", "", " 44", None]),
    "source_cli": st.sampled_from(["+44", "", " x", "ü", None]),
    "duration": st.sampled_from([Decimal(0), Decimal("7.5"), Decimal("-0.001"), None]),
    "sip_code": st.sampled_from([200, 486, 99, 700, None]),
    "pdd_ms": st.sampled_from([0, 1500, -1, None]),
    "direction": st.sampled_from(["outbound", "inbound", "in", "", None]),
}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.fixed_dictionaries({}, optional=PARQUET_FIELDS), min_size=1, max_size=30),
    st.sampled_from(
        [pa.timestamp("us", tz="UTC"), pa.timestamp("ms"), pa.timestamp("s", tz="Asia/Kolkata")]
    ),
)
def test_random_parquet_rows_read_the_same_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, rows: list[dict[str, object]], dt: pa.DataType
) -> None:
    assert_same_both_ways(con, _parquet(tmp_path / "random.parquet", rows, dt))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 7), st.integers(0, 20))
def test_line_ends_finds_every_newline_and_any_byte_beyond_ascii(
    data: bytes, shift: int, room: int
) -> None:
    """Eight bytes at a time where the buffer is aligned, one at a time where it is not or
    at its tail: the same answer as reading byte by byte."""
    buffer = scan.np.frombuffer(b"x" * shift + data, scan.np.uint8)[shift:]
    ends = scan.np.zeros(room, scan.np.int64)
    count, high = scan.line_ends(buffer, ends)
    newlines = [i + 1 for i, byte in enumerate(data) if byte == 10]
    assert count == len(newlines)
    assert list(ends[: min(count, room)]) == newlines[:room]
    assert high == any(byte >= 0x80 for byte in data)


def test_a_line_that_is_not_utf8_is_read_with_replacement_characters(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"callid,dt,dest_number,sip_code,sip_reason\n"
        b"a,2026-11-01T10:00:00Z,4420,200,caf\xe9\n"
        b"b,2026-11-01T10:00:00Z,4420,200,ok\n"
    )
    table = assert_same_both_ways(con, path)
    assert table["sip_reason"].to_pylist() == ["caf\ufffd", "ok"]


def _json(**fields: object) -> str:
    record = {"callid": "a", "dt": "2026-11-01T10:00:00Z", "dest_number": "44", "sip_code": 200}
    return json.dumps({**record, **fields})


NOT_A_CODE = "is not a SIP response code (100-699)"
NOT_SECONDS = "is not a number of seconds >= 0"
NO_OFFSET = "has no real UTC offset (they run from -14:00 to +14:00)"
# Values DuckDB's casts would take as something else (200.5 as 201, 1_000 as 1000), values of
# the wrong JSON type, and offsets no clock has: each is invalid, naming the field.
COERCED_JSON = [
    (_json(sip_code=200.5), f"sip_code: '200.5' {NOT_A_CODE}"),
    (_json(sip_code=200.0), f"sip_code: '200.0' {NOT_A_CODE}"),
    (_json(sip_code="2e2"), f"sip_code: '2e2' {NOT_A_CODE}"),
    ('{"callid":"a","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":2e2}',
     f"sip_code: '200.0' {NOT_A_CODE}"),
    (_json(sip_code="+200"), f"sip_code: '+200' {NOT_A_CODE}"),
    (_json(duration="1_000"), f"duration: '1_000' {NOT_SECONDS}"),
    (_json(duration="+5"), f"duration: '+5' {NOT_SECONDS}"),
    (_json(duration="0x10"), f"duration: '0x10' {NOT_SECONDS}"),
    (_json(duration="."), f"duration: '.' {NOT_SECONDS}"),
    (_json(ring_duration="1_0"), f"ring_duration: '1_0' {NOT_SECONDS}"),
    (_json(pdd_ms=1.5), "pdd_ms: '1.5' is not a whole number of milliseconds >= 0"),
    (_json(pdd_ms="1e3"), "pdd_ms: '1e3' is not a whole number of milliseconds >= 0"),
    (_json(callid=True), "callid: true is not a JSON string"),
    (_json(callid=["a"]), 'callid: ["a"] is not a JSON string'),
    (_json(callid=5), "callid: 5 is not a JSON string"),
    (_json(callid={"id": "a"}), 'callid: {"id":"a"} is not a JSON string'),
    (_json(customer_id=True), "customer_id: true is not a JSON string or whole number"),
    (_json(source_cli=4.5), "source_cli: 4.5 is not a JSON string or whole number"),
    (_json(switch=[1]), "switch: [1] is not a JSON string or whole number"),
    (_json(dt="2026-11-01T10:00:00-25:00"), f"dt: '2026-11-01T10:00:00-25:00' {NO_OFFSET}"),
    (_json(dt="2026-11-01T10:00:00+14:30"), f"dt: '2026-11-01T10:00:00+14:30' {NO_OFFSET}"),
    (_json(dt="2026-11-01T10:00:00+01:60"), f"dt: '2026-11-01T10:00:00+01:60' {NO_OFFSET}"),
    (_json(dt="2026-11-01T10:00:00-0099"), f"dt: '2026-11-01T10:00:00-0099' {NO_OFFSET}"),
    (_json(dt="2026-11-01T10:00:00+99"), f"dt: '2026-11-01T10:00:00+99' {NO_OFFSET}"),
    # Not JSON at all, though the scanner's number loop would have read them.
    ('{"callid":"a","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":0200}',
     "not a JSON object"),
    ('{"callid":"a","dt":"2026-11-01T10:00:00Z","dest_number":"44","sip_code":200,"duration":5.}',
     "not a JSON object"),
]  # fmt: skip
# Written as numbers should be, they are read exactly, both ways.
TAKEN_JSON = [
    _json(duration=1e3), _json(duration="1e3"), _json(ring_duration="2.5E-1"),
    _json(dt="2026-11-01T10:00:00+14:00"), _json(dt="2026-11-01T10:00:00-12:00"),
    _json(dt="2026-11-01T10:00:00 America/St_Johns"), _json(customer_id=42),
    _json(dest_number=447700900123), _json(duration="5."), _json(duration=".5"),
]  # fmt: skip


def test_no_value_is_coerced_into_another_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "coerced.jsonl"
    path.write_text("".join(line + "\n" for line, _ in COERCED_JSON)
                    + "".join(line + "\n" for line in TAKEN_JSON))  # fmt: skip
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad
    assert sorted((r["line"], r["invalid"]) for r in fast_bad) == [
        (line, detail) for line, (_, detail) in enumerate(COERCED_JSON, 1)
    ]
    rows = fast.to_pylist()
    assert [r["duration"] for r in rows[:2]] == [Decimal(1000)] * 2
    assert rows[2]["ring_duration"] == Decimal("0.25")
    assert [r["dt"].hour for r in rows[3:6]] == [20, 22, 13]  # 10:00 at +14, -12, -03:30
    assert (rows[6]["customer_id"], rows[7]["dest_number"]) == ("42", "447700900123")
    assert [r["duration"] for r in rows[8:]] == [Decimal(5), Decimal("0.5")]


def test_no_csv_value_is_coerced_into_another_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "coerced.csv"
    path.write_text(
        "callid,dt,dest_number,sip_code,duration,pdd_ms\n"
        "a,2026-11-01T10:00:00Z,44,200.5,1,\n"
        "b,2026-11-01T10:00:00Z,44,200,1_000,\n"
        "c,2026-11-01T10:00:00Z,44,200,1,1_500\n"
        "d,2026-11-01T10:00:00-25:00,44,200,1,\n"
        "e,2026-11-01T10:00:00Z,44,200,1e3,\n"
        "f,2026-11-01T10:00:00Z,44,200,5,0x10\n"
    )
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad
    assert sorted((r["line"], r["invalid"]) for r in fast_bad) == [
        (2, f"sip_code: '200.5' {NOT_A_CODE}"),
        (3, f"duration: '1_000' {NOT_SECONDS}"),
        (4, "pdd_ms: '1_500' is not a whole number of milliseconds >= 0"),
        (5, f"dt: '2026-11-01T10:00:00-25:00' {NO_OFFSET}"),
        (7, "pdd_ms: '0x10' is not a whole number of milliseconds >= 0"),
    ]
    assert fast.select(["callid", "duration"]).to_pylist() == [
        {"callid": "e", "duration": Decimal(1000)}
    ]


def test_no_parquet_value_is_coerced_into_another_both_ways(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Typed columns: a callid that is not text, a text field that is neither text nor a
    whole number, a SIP code with a fraction, a time with no real offset."""
    n = 4
    path = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table({
            "callid": pa.array([True, False, True, False]),
            "dt": ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00-25:00",
                   "2026-11-01T10:00:00+14:00", "2026-11-01T10:00:00Z"],
            "dest_number": ["44"] * n,
            "sip_code": pa.array([200.5, 200.0, 200.0, 486.0]),
            "customer_id": pa.array([None, None, None, 1.5]),
            "source_cli": pa.array([None, None, 4420, None], pa.int64()),
        }),
        path,
    )  # fmt: skip
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast.num_rows == 0
    assert fast_bad == slow_bad
    assert fast_bad == [{"line": k, "invalid": "callid: a Parquet bool value, not text"}
                        for k in range(1, n + 1)]  # fmt: skip
    pq.write_table(pq.read_table(path).set_column(0, "callid", pa.array(["a", "b", "c", "d"])),
                   path)  # fmt: skip
    (fast, fast_bad), (slow, slow_bad) = both_ways(con, path)
    assert fast.to_pylist() == slow.to_pylist() and fast_bad == slow_bad
    assert sorted((r["line"], r["invalid"]) for r in fast_bad) == [
        (1, f"sip_code: '200.5' {NOT_A_CODE}"),
        (2, f"dt: '2026-11-01T10:00:00-25:00' {NO_OFFSET}"),
        (4, "customer_id: a Parquet double value, not text or a whole number"),
    ]
    assert fast.select(["callid", "sip_code", "source_cli"]).to_pylist() == [
        {"callid": "c", "sip_code": 200, "source_cli": "4420"}
    ]
