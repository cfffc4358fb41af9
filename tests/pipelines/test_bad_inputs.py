"""Inputs ``cdrflow rate`` cannot read as given: a clear error naming the file (and the
rows), never a traceback, and nothing of the run in the lake; or, for a value of a type with
no text, the record rejected as ``invalid`` naming its field."""

from __future__ import annotations

import gzip
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.catalog import Catalog
from pipelines.rate import rate_files
from schemas.errors import CdrflowError
from tests.pipelines.cli.driver import Cli
from tests.pipelines.test_rate import lake, new_home
from tests.pipelines.workload import records, write_jsonl

GOOD = {
    "callid": ["a", "b"],
    "dt": ["2026-11-01T10:00:00Z", "2026-11-01T10:01:00Z"],
    "dest_number": ["442071234567", "442071234568"],
    "sip_code": [200, 486],
    "duration": ["61", "0"],
    "customer_id": ["acme", "acme"],
}


def landed_nothing(home: Path) -> bool:
    return not (home / "lake" / "rated").exists() or not any((home / "lake").rglob("*.parquet"))


def test_a_file_that_is_not_parquet_stops_the_run_before_any_file_is_rated(
    tmp_path: Path,
) -> None:
    home = new_home(tmp_path, "home")
    good = write_jsonl(tmp_path / "good.jsonl", records(50, seed=3))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(os.urandom(3000))
    line = Cli(home).refused("rate", str(good), str(bad))
    assert line.startswith(f"{bad}: not a readable Parquet file (")
    assert landed_nothing(home)
    assert rate_files(home, [good]).records == 50 + 1  # the run did not count it as rated


def test_a_damaged_page_names_the_rows_and_lands_nothing_of_the_run(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    n = 300_000
    table = pa.table({name: values * (n // 2) for name, values in GOOD.items()})
    table = table.set_column(0, "callid", pa.array([f"c{i}" for i in range(n)]))
    path = tmp_path / "cdrs.parquet"
    pq.write_table(table, path, row_group_size=100_000)
    page = pq.ParquetFile(path).metadata.row_group(2).column(2).data_page_offset
    with path.open("r+b") as f:  # the third row group's dest_number page header
        f.seek(page)
        f.write(b"\xff" * 64)
    with pytest.raises(CdrflowError) as refused:
        rate_files(home, [path])
    assert str(refused.value).startswith(f"{path}: rows from ")
    assert "cannot be read" in str(refused.value) and "\n" not in str(refused.value)
    assert landed_nothing(home)


def test_a_directory_or_a_missing_file_is_named_as_such(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    cli = Cli(home)
    assert cli.refused("rate", str(tmp_path)) == f"{tmp_path}: a directory, not a CDR file"
    missing = tmp_path / "none.jsonl"
    assert cli.refused("rate", str(missing)) == f"{missing}: no such file"


def test_a_value_with_no_text_is_an_invalid_record_naming_its_field(tmp_path: Path) -> None:
    """A struct or list where SPEC §4 has text, a number or a time: each row with such a
    value is rejected as invalid, its raw JSON holding the value; the others are rated."""
    home = new_home(tmp_path, "home")
    table = pa.table(
        {
            **GOOD,
            "dest_number": pa.array([{"digits": "442071234567"}, None]),
            "duration": pa.array([[61], [0]]),
        }
    )
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    summary = rate_files(home, [path])
    assert summary.records == 2
    [first, second] = sorted(lake(home, "rejected").to_pylist(), key=lambda r: r["line"])
    assert first["reject_reason"] == second["reject_reason"] == "invalid"
    assert first["reject_detail"] == (
        "dest_number: a Parquet struct<digits: string> value, not text, a number or a time"
    )
    assert json.loads(first["raw"])["dest_number"] == {"digits": "442071234567"}
    # The second row's dest_number is null (missing); its duration is the list.
    assert second["reject_detail"] == (
        "duration: a Parquet list<element: int64> value, not text, a number or a time"
    )


def test_bytes_that_are_not_utf8_are_read_with_replacement_characters(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    table = pa.table({**GOOD, "callid": pa.array([b"\xffa", b"b"], pa.binary())})
    path = tmp_path / "bytes.parquet"
    pq.write_table(table, path)
    rate_files(home, [path])
    assert sorted(lake(home, "rated")["callid"].to_pylist()) == ["b", "\ufffda"]


def test_a_home_without_a_catalog_rejects_every_record_as_unknown_customer(
    tmp_path: Path,
) -> None:
    home = tmp_path / "empty"
    with Catalog(home):
        pass
    cdrs = write_jsonl(tmp_path / "cdrs.jsonl", records(40, seed=4))
    summary = rate_files(home, [cdrs])
    assert summary.rated == 0
    assert summary.rejected["unknown_customer"] + summary.rejected["duplicate"] == 41
    assert summary.rejected["unknown_customer"] > 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_order_mark_at_the_start_of_a_text_file_is_not_part_of_line_1(
    tmp_path: Path, suffix: str
) -> None:
    """Spreadsheet exports start with one; the header (or the first record) is read as if
    it were not there, and lines keep their numbers."""
    home = new_home(tmp_path, "home")
    plain = tmp_path / f"plain{suffix}"
    if suffix == ".csv":
        plain.write_text(
            ",".join(GOOD) + "\n"
            + "\n".join(",".join(str(v[i]) for v in GOOD.values()) for i in range(2)) + "\n"
        )  # fmt: skip
    else:
        plain.write_text(
            "".join(json.dumps({k: v[i] for k, v in GOOD.items()}) + "\n" for i in range(2))
        )
    marked = tmp_path / f"marked{suffix}"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    summary = rate_files(home, [marked])
    assert (summary.rated, summary.records) == (2, 2)
    lines = sorted(lake(home, "rated")["line"].to_pylist())
    assert lines == ([2, 3] if suffix == ".csv" else [1, 2])


def test_a_csv_header_naming_a_field_twice_is_refused(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    path = tmp_path / "twice.csv"
    path.write_text(
        "callid,dt,dest_number,sip_code,callid\nx,2026-11-01T10:00:00Z,442071234567,200,y\n"
    )
    assert Cli(home).refused("rate", str(path)) == (
        f"{path}:1: the CSV header names callid more than once"
    )
    assert landed_nothing(home)


def test_an_empty_csv_file_has_no_records_and_is_no_error(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    path = tmp_path / "quiet.csv"
    path.write_bytes(b"")
    assert rate_files(home, [path]).records == 0


def test_a_json_object_giving_a_field_twice_is_invalid_naming_it(tmp_path: Path) -> None:
    """JSON readers disagree on which of two values of one key counts; a bill must not
    guess. Other keys repeated (not SPEC fields) do not matter."""
    home = new_home(tmp_path, "home")
    base = {k: v[0] for k, v in GOOD.items()}
    body = json.dumps(base)[1:-1]
    path = tmp_path / "twice.jsonl"
    path.write_text(
        "{" + body + ', "callid": "other", "duration": "5"}\n'
        + "{" + body.replace('"a"', '"b"') + ', "note": 1, "note": 2}\n'
    )  # fmt: skip
    summary = rate_files(home, [path])
    assert (summary.rated, summary.rejected["invalid"]) == (1, 1)
    [rejected] = lake(home, "rejected").to_pylist()
    assert rejected["line"] == 1
    assert rejected["reject_detail"] == "callid, duration: given more than once in the object"


def test_a_duration_longer_than_any_call_is_invalid_not_a_traceback(tmp_path: Path) -> None:
    """922,337,203,685 s once passed the checks and stopped the run when its billed seconds
    did not fit the lake's INT32 column. The longest a CDR may carry (about 31 years) is
    rated; one microsecond more is invalid, from every kind of file."""
    home = new_home(tmp_path, "home")
    longest = {k: v[0] for k, v in GOOD.items()} | {"duration": "1000000000"}
    longer = longest | {"callid": "b", "duration": "1000000000.000001"}
    huge = longest | {"callid": "c", "duration": "922337203685.4775807"}
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (longest, longer, huge)))
    summary = rate_files(home, [path])
    assert (summary.rated, summary.rejected["invalid"]) == (1, 2)
    [rated] = lake(home, "rated").to_pylist()
    assert 1_000_000_000 <= rated["billed_duration"] < 2**31  # its pulse rounds it up
    details = sorted(r["reject_detail"] for r in lake(home, "rejected").to_pylist())
    assert details[0].startswith("duration: '1000000000.000001' is more than 1000000000 seconds")
    assert details[1].startswith("duration: '922337203685.4775")


def test_a_dt_out_of_the_years_is_filed_under_the_day_it_was_rejected(tmp_path: Path) -> None:
    """A switch whose clock was never set sends epoch 0; billed, the call would land in a
    1970 partition no invoice reads. It is invalid, and as a dt that is no valid dt, its
    rejection goes under the day it was made (with its text in ``raw``)."""
    home = new_home(tmp_path, "home")
    base = {k: v[0] for k, v in GOOD.items()}
    path = tmp_path / "clock.jsonl"
    path.write_text(json.dumps(base | {"dt": 0}) + "\n" + json.dumps(base | {"callid": "b"}) + "\n")
    summary = rate_files(home, [path])
    assert (summary.rated, summary.rejected["invalid"]) == (1, 1)
    [rejected] = lake(home, "rejected").to_pylist()
    assert rejected["reject_detail"] == "dt: '0' is not in the years 2000 to 2099"
    assert rejected["dt"] is None and '"dt": 0' in rejected["raw"]
    [folder] = (home / "lake" / "rejected").glob("date=*")
    assert folder.name == f"date={rejected['rejected_at'].date().isoformat()}"


def _csv_line(callid: str, **fields: str) -> bytes:
    row = {k: str(v[0]) for k, v in GOOD.items()} | {"callid": callid} | fields
    return ",".join(row.values()).encode()


CSV_HEADER = ",".join(GOOD).encode() + b"\n"


def test_a_carriage_return_in_a_csv_record_is_invalid_naming_its_field(tmp_path: Path) -> None:
    """A CR that ends no line (a stray one in a value, lines of an old Mac file pasted into
    another, gzip bytes) stopped the run with ``_csv.Error``. Outside quotes it makes its
    record invalid, naming the field; inside quotes it is text; CRLF ends a line."""
    home = new_home(tmp_path, "home")
    path = tmp_path / "cr.csv"
    path.write_bytes(
        CSV_HEADER
        + _csv_line("a", customer_id="ac\rme") + b"\n"  # a stray CR
        + _csv_line("b") + b"\r" + _csv_line("c") + b"\r\n"  # two lines ended by CR alone
        + _csv_line("d", customer_id='"acme"').replace(b'"acme"', b'"ac\rme"') + b"\n"
        + _csv_line("e") + b"\r\n"
        + b"\r\n"  # a blank line
        + _csv_line("f") + b"\n"
    )  # fmt: skip
    summary = rate_files(home, [path])
    assert (summary.records, summary.blank_lines) == (5, 1)
    rejected = sorted(lake(home, "rejected").to_pylist(), key=lambda r: r["line"])
    assert [(r["line"], r["reject_reason"], r["reject_detail"]) for r in rejected] == [
        (2, "invalid", "customer_id: a carriage return (CR) outside quotes; CSV lines end "
                       "with LF or CRLF, and a CR inside a value needs quotes"),
        (3, "invalid", "customer_id: a carriage return (CR) outside quotes; CSV lines end "
                       "with LF or CRLF, and a CR inside a value needs quotes"),
        (4, "unknown_customer", "no customer matches customer_id ac\rme, source_ip -, sip_user -"),
    ]  # fmt: skip
    assert rejected[0]["raw"] == _csv_line("a", customer_id="ac\rme").decode()
    assert sorted(lake(home, "rated")["line"].to_pylist()) == [5, 7]


def test_a_csv_file_whose_lines_end_with_cr_alone_is_refused_naming_it(tmp_path: Path) -> None:
    """Its header line is the whole file: no header to read the records by."""
    home = new_home(tmp_path, "home")
    path = tmp_path / "mac.csv"
    path.write_bytes(CSV_HEADER.rstrip(b"\n") + b"\r" + _csv_line("a") + b"\r")
    assert Cli(home).refused("rate", str(path)) == (
        f"{path}:1: the CSV header holds a carriage return (CR) that ends no line; cdrflow "
        "reads lines that end with LF or CRLF (convert a file whose lines end with CR alone, "
        r"e.g. with tr '\r' '\n')"
    )
    assert landed_nothing(home)


def test_gzip_bytes_named_csv_are_refused_or_rejected_never_a_traceback(tmp_path: Path) -> None:
    """A compressed file named .csv is refused, saying so; compressed bytes after a plain
    header (a file concatenated from two) are records rejected with reasons."""
    home = new_home(tmp_path, "home")
    packed = gzip.compress(random.Random(7).randbytes(4000), mtime=0)
    whole = tmp_path / "packed.csv"
    whole.write_bytes(packed)
    assert Cli(home).refused("rate", str(whole)) == (
        f"{whole}: gzip-compressed data, not CSV text; decompress it (gunzip) and rate the result"
    )
    assert b"\r" in packed and b"\n" in packed  # the bytes that stopped the run
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(CSV_HEADER + _csv_line("a") + b"\n" + packed + b"\n" + _csv_line("b") + b"\n")
    summary = rate_files(home, [mixed])
    rejected = lake(home, "rejected")
    assert summary.rated == 2 and rejected.num_rows == summary.records - 2 > 0
    assert set(rejected["reject_reason"].to_pylist()) == {"invalid"}
    assert all(rejected["reject_detail"].to_pylist()) and all(rejected["raw"].to_pylist())


def test_a_rejected_parquet_row_keeps_the_values_the_file_holds(tmp_path: Path) -> None:
    """Its ``raw`` (a Parquet row has no text) showed what validation made of it: "dt":null
    for a time out of the years or with no real offset, a null SIP code for 200.5."""
    home = new_home(tmp_path, "home")
    when = [datetime(2026, 11, 1, 10, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]
    typed = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table({**GOOD, "dt": pa.array(when, pa.timestamp("ms", tz="UTC")),
                  "sip_code": pa.array([200.5, 486.0]), "duration": pa.array([61.5, 0.0])}),
        typed,
    )  # fmt: skip
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({**GOOD, "callid": ["c", "d"],
                             "dt": ["2026-11-01T10:00:00-25:00", "2026-11-01T10:00:00Z"]}),
                   text)  # fmt: skip
    summary = rate_files(home, [typed, text])
    assert (summary.records, summary.rejected["invalid"], summary.rated) == (4, 3, 1)
    rejected = lake(home, "rejected")
    raws = {r["reject_detail"].split(":")[0] + str(r["line"]): json.loads(r["raw"])
            for r in rejected.to_pylist()}  # fmt: skip
    assert raws == {
        "sip_code1": {"callid": "a", "dt": "2026-11-01T10:00:00.000Z",
                      "dest_number": "442071234567", "sip_code": 200.5, "duration": 61.5,
                      "customer_id": "acme"},
        "dt2": {"callid": "b", "dt": "1970-01-01T00:00:00.000Z", "dest_number": "442071234568",
                "sip_code": 486.0, "duration": 0.0, "customer_id": "acme"},
        "dt1": {"callid": "c", "dt": "2026-11-01T10:00:00-25:00",
                "dest_number": "442071234567", "sip_code": 200, "duration": "61",
                "customer_id": "acme"},
    }  # fmt: skip


def test_a_parquet_time_past_what_microseconds_hold_is_invalid_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A millisecond column reaches the year 146 million; cast to microseconds to check its
    years, such a value stopped the run with ArrowInvalid."""
    home = new_home(tmp_path, "home")
    millis = [1_761_991_200_000, 2**62, -(2**62)]
    path = tmp_path / "far.parquet"
    table = pa.table({  # typed as the Parquet fast path takes them
        "callid": ["a", "b", "c"],
        "dt": pa.array(millis, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "dest_number": GOOD["dest_number"][:1] * 3,
        "sip_code": pa.array([200] * 3, pa.int16()),
        "customer_id": GOOD["customer_id"][:1] * 3,
    })  # fmt: skip
    pq.write_table(table, path)
    summary = rate_files(home, [path])
    assert (summary.rated, summary.rejected["invalid"]) == (1, 2)
    rejected = sorted(lake(home, "rejected").to_pylist(), key=lambda r: r["line"])
    assert [(r["reject_detail"], json.loads(r["raw"])["dt"]) for r in rejected] == [
        (f"dt: {2**62} ms from 1970 is not in the years 2000 to 2099", str(2**62)),
        (f"dt: {-(2**62)} ms from 1970 is not in the years 2000 to 2099", str(-(2**62))),
    ]
