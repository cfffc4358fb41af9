"""CSV records over several lines: a quoted field may hold line breaks (RFC 4180).

The record splitter (``scan.csv_records``) is checked against Python's csv module, which
reads such files by the book; then the readers and ``cdrflow rate`` on files that have them,
in blocks that cut through them, and on unclosed quotes, which must not swallow the
records after them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import cdrfile, scan
from pipelines.rate import rate_files
from tests.pipelines.test_rate import lake, new_home
from tests.pipelines.workload import records


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def reference(text: str) -> list[int]:
    """The physical line (from 0) where each record starts, as Python's csv module reads."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, line = [], 0
    for _ in reader:
        starts.append(line)
        line = reader.line_num
    return starts


FIELD = st.text(alphabet='ab ,"\n', max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4).flatmap(lambda w: st.lists(st.lists(FIELD, min_size=w, max_size=w),
                                                    min_size=1, max_size=12)))  # fmt: skip
def test_records_split_where_pythons_csv_module_splits_them(rows: list[list[str]]) -> None:
    text = csv_text(rows)
    data = np.frombuffer(text.encode(), np.uint8)
    line_ends = np.flatnonzero(data == 10) + 1
    ends, lines, cut = scan.csv_records(data, line_ends, len(rows[0]), True)
    assert lines.tolist() == reference(text)
    assert cut == data.size and ends[-1] == data.size
    # A block that ends after any line holds every record complete by then, and no other.
    for k, at in enumerate(line_ends.tolist()):
        part_ends, part_lines, part_cut = scan.csv_records(
            data[:at], line_ends[: k + 1], len(rows[0]), False
        )
        assert part_ends.tolist() == [e for e in ends.tolist() if e <= at]
        assert part_lines.tolist() == lines[: part_ends.size].tolist()
        assert part_cut == (part_ends[-1] if part_ends.size else 0)


HEADER = ["callid", "dt", "dest_number", "sip_code", "duration", "pdd_ms", "customer_id",
          "source_ip", "provider_card_id", "sip_reason"]  # fmt: skip


def cdr_rows(n: int, seed: int) -> list[list[str]]:
    """Real CDRs of the sample catalog; every third has a reason over several lines, with
    quotes and commas in it."""
    rows = []
    for i, r in enumerate(records(n, seed=seed)):
        reason = f'Busy Here\nQ.850;cause=17,text="user busy"\n{i}' if i % 3 == 0 else "OK"
        rows.append([*("" if r.get(h) is None else str(r[h]) for h in HEADER[:-1]), reason])
    return rows


def read(con: duckdb.DuckDBPyConnection, path: Path, block_bytes: int) -> tuple[pa.Table, list]:
    valid, invalid = [], []
    for block in cdrfile.read_records(path, con, block_bytes):
        valid.append(block.valid)
        if block.invalid.num_rows:
            invalid += block.invalid.select(["line", "invalid"]).to_pylist()
    return pa.concat_tables(valid), invalid


def test_a_reason_over_several_lines_is_one_record_at_its_first_line(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    rows = cdr_rows(60, seed=3)
    path = tmp_path / "cdrs.csv"
    path.write_text(csv_text([HEADER, *rows]))
    starts = [line + 1 for line in reference(path.read_text())][1:]  # lines from 1; no header
    for block_bytes in (1 << 20, 97, 40):  # one block; blocks that cut through the reasons
        valid, invalid = read(con, path, block_bytes)
        assert invalid == []
        assert valid["callid"].to_pylist() == [r[0] for r in rows]
        assert valid["sip_reason"].to_pylist() == [r[-1] for r in rows]
        assert valid["line"].to_pylist() == starts
    # The DuckDB path (every record through validate) reads the same.
    slow = []
    for raw in cdrfile.read_blocks(path, con, 97):
        v, i, _ = cdrfile.validate(con, raw.table)
        assert i.num_rows == 0
        slow += v.select(["callid", "sip_reason", "line"]).to_pylist()
    assert slow == valid.select(["callid", "sip_reason", "line"]).to_pylist()


def test_an_unclosed_quote_does_not_swallow_the_records_after_it(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdrs = cdr_rows(8, seed=5)
    rows = [",".join([*r[:-1], "OK"]) for r in cdrs]
    rows[1] = rows[1][: -len("OK")] + '"never closed'  # line 3: a quote opens, unclosed
    # Line 6's first quote would close line 3's, but lines 3-6 together have a field too many.
    rows[4] = rows[4][: -len("OK")] + '"closed, by the "next" quote'
    rows[5] = rows[5][: -len("OK")] + '"next"'
    path = tmp_path / "cdrs.csv"
    path.write_text(",".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    for most, block_bytes in ((scan.MAX_RECORD_BYTES, 1 << 20), (100, 64), (100, 1 << 20)):
        monkeypatch.setattr(scan, "MAX_RECORD_BYTES", most)
        valid, invalid = read(con, path, block_bytes)
        lines = sorted(valid["line"].to_pylist() + [r["line"] for r in invalid])
        assert lines == list(range(2, len(rows) + 2))  # each line its own record
        after = valid.filter(pa.compute.greater(valid["line"], 3))
        assert after["callid"].to_pylist() == [r[0] for r in cdrs[2:]]
        assert after["sip_reason"].to_pylist()[3] == "next"


def test_cdrflow_rate_rates_records_with_line_breaks_once(tmp_path: Path) -> None:
    rows = cdr_rows(300, seed=7)
    path = tmp_path / "cdrs.csv"
    path.write_text(csv_text([HEADER, *rows]))
    home = new_home(tmp_path, "home")
    summary = rate_files(home, [path], block_bytes=4096)
    rejected = lake(home, "rejected")
    assert summary.rated + rejected.num_rows == len(rows)
    assert "invalid" not in summary.rejected
    rated = lake(home, "rated")
    by_callid: dict[str, str] = {}
    for r in rows:  # the first of a callid is rated, its repeats are duplicates
        by_callid.setdefault(r[0], r[-1])
    reasons = zip(rated["callid"].to_pylist(), rated["sip_reason"].to_pylist(), strict=True)
    assert all(by_callid[callid] == reason for callid, reason in reasons)
    assert any("\n" in s for s in rated["sip_reason"].to_pylist())
