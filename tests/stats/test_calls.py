"""SIP code counts, latest calls, one call, and the calls up at an instant, on crafted lakes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.cdr import REJECTED
from stats.calls import codes, dialogs, find_call, latest_calls, newest_instant
from stats.metrics import parse_by
from stats.scope import Scope, connect
from tests.stats.lakes import T0, call, write_lake


def test_codes_count_each_final_response_with_its_share(tmp_path: Path) -> None:
    calls = [
        call(1, 0, sip_code=200, sip_reason="OK"),
        call(2, 1, sip_code=486, sip_reason="Busy Here"),
        call(3, 2, sip_code=486, sip_reason="Busy"),
        call(4, 3, sip_code=486, sip_reason="Busy"),
        call(5, 4, customer_id="other", sip_code=503),
    ]
    lake = write_lake(tmp_path, calls)
    with connect() as con:
        rows = codes(con, Scope(lake), parse_by("customer")).to_pylist()
        everything = codes(con, Scope(lake), []).to_pylist()
    assert [(r["customer"], r["sip_code"], r["attempts"], r["share"]) for r in rows] == [
        ("acme", 486, 3, 75.0),
        ("acme", 200, 1, 25.0),
        ("other", 503, 1, 100.0),
    ]
    assert rows[0]["sip_reason"] == "Busy"  # the reason given most often
    assert [(r["sip_code"], r["attempts"], r["share"]) for r in everything] == [
        (486, 3, 60.0),
        (200, 1, 20.0),
        (503, 1, 20.0),
    ]


def test_latest_calls_newest_first_for_one_customer(tmp_path: Path) -> None:
    calls = [call(1, 0), call(2, 50), call(3, 100, customer_id="other"), call(4, 75)]
    lake = write_lake(tmp_path, calls)
    with connect() as con:
        rows = latest_calls(con, Scope(lake, customers=("acme",)), 2).to_pylist()
    assert [r["callid"] for r in rows] == ["c4", "c2"]


def test_one_call_in_full_from_the_rated_or_the_rejected_lake(tmp_path: Path) -> None:
    lake = write_lake(tmp_path, [call(1, 0, duration=Decimal("3.5"))])
    rejected = tmp_path / "lake" / "rejected" / "date=2026-11-30"
    rejected.mkdir(parents=True)
    row = {"callid": "bad", "dt": T0, "reject_reason": "no_route", "reject_detail": "x",
           "raw": "{}", "source": "f.jsonl", "line": 3}  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], schema=REJECTED), rejected / "part-0.parquet")
    with connect() as con:
        kind, table = find_call(con, lake, "c1")
        assert kind == "rated" and table["duration"].to_pylist() == [Decimal("3.5")]
        assert len(table.column_names) > 30  # every column
        kind, table = find_call(con, lake, "bad")
        assert kind == "rejected" and table["reject_reason"].to_pylist() == ["no_route"]
        _, table = find_call(con, lake, "nobody")
        assert table.num_rows == 0


def test_dialogs_are_the_calls_up_at_the_instant(tmp_path: Path) -> None:
    calls = [
        call(1, 0, duration=Decimal(100)),  # up [0, 100)
        call(2, 10, sip_code=487, ring_duration=Decimal(20)),  # ringing [10, 30)
        call(3, 20, duration=Decimal(5)),  # over by 25
        call(4, 30, customer_id="other", duration=Decimal(1000)),
        call(5, 50, duration=Decimal(10)),  # starts at the instant: up
        call(6, 51, duration=Decimal(10)),  # not yet
        call(7, T0 - timedelta(days=1), duration=Decimal(86_460)),  # a day-long call, still up
    ]
    lake = write_lake(tmp_path, calls)
    at = T0 + timedelta(seconds=50)
    with connect() as con:
        rows = dialogs(con, Scope(lake), at).to_pylist()
        newest = newest_instant(con, lake)
    assert [(r["customer_id"], r["callid"]) for r in rows] == [
        ("acme", "c7"),
        ("acme", "c1"),
        ("acme", "c5"),
        ("other", "c4"),
    ]
    assert rows[1]["up_seconds"] == 50.0
    assert newest == T0 + timedelta(seconds=51)
