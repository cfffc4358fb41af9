"""A customer's live record moved by usage messages: each batch counted once (SPEC §9.1)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from pipelines.live.state import (
    Seed,
    count,
    customer_state,
    draws_until,
    new_record,
    newest_minute,
    window,
    window_floor,
)
from pipelines.usage import UsageMessage, parse


def message(data: dict[str, Any]) -> UsageMessage:
    return parse(json.dumps(data).encode())


def stream(partition: int, first: int, last: int, **extra: Any) -> UsageMessage:
    return message({
        "batch": f"b{partition}-{first}",
        "source": {"kind": "stream", "topic": "cdrs", "partition": partition, "first": first,
                   "last": last},
        "customer_id": "C1",
        "currency": "USD",
        "minutes": extra.get("minutes", []),
        "draws": extra.get("draws", []),
        "callids": [],
        "part": extra.get("part", 0),
        "parts": extra.get("parts", 1),
    })  # fmt: skip


def minute(at: str, money: str, attempts: int = 2, answered: int = 1) -> dict[str, Any]:
    return {"minute": at, "attempts": attempts, "answered": answered, "duration": "30.5",
            "pdd_sum": 300, "pdd_count": 2, "money": money, "package_seconds": 0}  # fmt: skip


def test_a_stream_batch_counts_once_past_the_seed_position() -> None:
    record = new_record(Seed({"0": 99}, 5), Decimal("10.5"))
    old = stream(0, 50, 99, minutes=[minute("2026-12-07T10:00:00Z", "1.25")])
    assert not count(record, old, None)  # the lake had it at the seed
    new = stream(0, 100, 199, minutes=[minute("2026-12-07T10:00:00Z", "1.25")])
    assert count(record, new, None)
    assert not count(record, new, None)  # again (a replay after a restart): not again
    assert Decimal(record["usage"]) == Decimal("11.75")
    other = stream(1, 0, 9, minutes=[minute("2026-12-07T10:01:00Z", "0.000001")])
    assert count(record, other, None)  # a partition never seen starts at offset 0
    assert Decimal(record["usage"]) == Decimal("11.750001")


def test_each_part_of_a_batch_counts_once() -> None:
    record = new_record(Seed({}, 0))
    parts = [
        stream(2, 0, 9, part=i, parts=2, minutes=[minute("2026-12-07T10:00:00Z", "1")])
        for i in range(2)
    ]
    assert count(record, parts[0], None) and not count(record, parts[0], None)
    assert count(record, parts[1], None) and not count(record, parts[1], None)
    assert not count(record, parts[0], None)
    assert record["usage"] == "2"


def test_a_lake_entry_counts_once_past_the_cursor() -> None:
    record = new_record(Seed({}, 5))

    def entry(seq: int) -> UsageMessage:
        return message({"batch": "r", "source": {"kind": "lake", "seq": seq}, "customer_id": "C1",
                        "currency": "USD", "minutes": [minute("2026-12-07T10:00:00Z", "2")],
                        "draws": [], "callids": []})  # fmt: skip

    assert not count(record, entry(5), None)
    assert count(record, entry(6), None) and not count(record, entry(6), None)
    assert record["usage"] == "2"


def test_the_window_is_the_15_minutes_up_to_the_newest() -> None:
    record = new_record(Seed({}, 0))
    messages = [
        stream(0, 0, 9, minutes=[minute("2026-12-07T10:00:00Z", "1")]),
        stream(0, 10, 19, minutes=[minute("2026-12-07T10:14:59Z", "1", attempts=4, answered=3)]),
    ]
    newest = newest_minute(messages, None)
    assert newest == "2026-12-07T10:14:00Z"
    floor = window_floor(newest)
    assert floor == "2026-12-07T10:00:00Z"
    for m in messages:
        count(record, m, floor)
    w = window(record, floor)
    assert (w.attempts, w.answered) == (6, 4)
    assert w.asr == Decimal("66.67") and w.acd == Decimal("15.25") and w.pdd == Decimal("150.00")
    later = window_floor("2026-12-07T10:15:00Z")  # the 10:00 minute falls out
    assert window(record, later).attempts == 4
    assert window(None, later).asr is None


def test_balance_and_draws() -> None:
    record = new_record(Seed({}, 0), Decimal("30"), {"P|2026-12-01|2026-12-01": 60})
    draw = {"package_id": "P", "start_date": "2026-12-01", "period_start": "2026-12-01",
            "seconds": 30}  # fmt: skip
    count(record, stream(0, 0, 0, draws=[draw]), None)
    assert draws_until(record, date(2026, 12, 7)) == [("P", "2026-12-01", date(2026, 12, 1), 90)]
    assert draws_until(record, date(2026, 11, 30)) == []
    row = {"customer_id": "C1", "name": "C", "status": "active", "currency": "USD",
           "debit_limit": Decimal("100")}  # fmt: skip
    state = customer_state(row, record, Decimal("50"), Decimal("1.20"), None)
    assert state.balance == Decimal("18.80") and state.available == Decimal("118.80")
