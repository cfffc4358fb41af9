"""The compact usage messages (SPEC §9.1): what each batch adds up to, per customer and
minute, exactly as the lake's own sums say."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines import commitlog, usage
from pipelines.commitlog import Entry
from pipelines.lakefiles import lake_root
from pipelines.rate import rate_files
from pipelines.rerate import rerate
from schemas.cdr import MONEY, PACKAGE_DRAW, SECONDS, TIME
from tests.pipelines.cli.driver import Cli
from tests.pipelines.test_rate import lake, new_home
from tests.pipelines.workload import START, records, write_jsonl

Sums = dict[tuple[str, str], tuple[Any, ...]]


def minute_sums(messages: list[usage.UsageMessage]) -> Sums:
    """(customer key, minute) → attempts, answered, duration, pdd sum and count, money,
    package seconds: every part of every message added up."""
    out: dict[tuple[str, str], list[Any]] = {}
    for m in messages:
        for x in m.minutes:
            key = (m.key, x.minute.strftime("%Y-%m-%dT%H:%M"))
            add = [x.attempts, x.answered, x.duration, x.pdd_sum, x.pdd_count, x.money]
            add.append(x.package_seconds)
            old = out.get(key, [0, 0, Decimal(0), 0, 0, Decimal(0), 0])
            out[key] = [a + b for a, b in zip(old, add, strict=True)]
    return {k: tuple(v) for k, v in out.items()}


def lake_minute_sums(home: Path) -> Sums:
    """The same sums by DuckDB over the rated lake."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        """
        SELECT coalesce(customer_id, ''), strftime(date_trunc('minute', dt), '%Y-%m-%dT%H:%M'),
               count(*), count(*) FILTER (sip_code = 200),
               coalesce(sum(duration) FILTER (sip_code = 200), 0),
               coalesce(sum(pdd_ms), 0), count(pdd_ms),
               sum(charge + tax), sum(package_seconds)
        FROM read_parquet(?, union_by_name = true, hive_partitioning = false)
        GROUP BY ALL
        """,
        [f"{lake_root(home)}/rated/date=*/*.parquet"],
    ).fetchall()
    return {(r[0], r[1]): (*r[2:4], Decimal(r[4]), *r[5:7], Decimal(r[7]), r[8]) for r in rows}


def draw_sums(messages: list[usage.UsageMessage]) -> Counter[tuple[str, str, date, date]]:
    out: Counter[tuple[str, str, date, date]] = Counter()
    for m in messages:
        for d in m.draws:
            out[(m.key, d.package_id, d.start_date, d.period_start)] += d.seconds
    return out


def lake_draw_sums(home: Path) -> Counter[tuple[str, str, date, date]]:
    rows = duckdb.execute(
        """
        SELECT customer_id, d.package_id, d.start_date, d.period_start, sum(d.seconds)
        FROM (SELECT customer_id, unnest(package_draws) AS d
              FROM read_parquet(?, union_by_name = true, hive_partitioning = false))
        GROUP BY ALL
        """,
        [f"{lake_root(home)}/rated/date=*/*.parquet"],
    ).fetchall()
    return Counter({(r[0], r[1], r[2], r[3]): int(r[4]) for r in rows})


def lake_callids(home: Path) -> Counter[tuple[str, str]]:
    """(customer key, callid) of every rated and rejected row that has a callid."""
    out: Counter[tuple[str, str]] = Counter()
    for kind in ("rated", "rejected"):
        for r in lake(home, kind).select(["customer_id", "callid"]).to_pylist():
            if r["callid"] is not None:
                out[(r["customer_id"] or "", r["callid"])] += 1
    return out


def message_callids(messages: list[usage.UsageMessage]) -> Counter[tuple[str, str]]:
    return Counter((m.key, c) for m in messages for c in m.callids)


def parsed(pairs: list[tuple[bytes, bytes]]) -> list[usage.UsageMessage]:
    out = []
    for key, value in pairs:
        message = usage.parse(value)
        assert key == message.key.encode()
        out.append(message)
    return out


def test_a_batchs_sums_equal_duckdbs_over_the_same_rows(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    path = write_jsonl(tmp_path / "cdrs.jsonl", records(3000, seed=31), broken_every=250)
    rate_files(home, [path])
    rated, rejected = lake(home, "rated"), lake(home, "rejected")
    source = {"kind": "stream", "topic": "cdrs", "partition": 2, "first": 10, "last": 3099}
    pairs = usage.batch_messages("run-1", source, [rated], [rejected])
    messages = parsed(pairs)
    # One message per customer, the batch named, its source as given.
    assert len({m.key for m in messages}) == len(messages)
    assert all(m.batch == "run-1" and m.source == source for m in messages)
    assert all((m.part, m.parts) == (0, 1) for m in messages)
    assert minute_sums(messages) == lake_minute_sums(home)
    draws = draw_sums(messages)
    assert draws == lake_draw_sums(home) and sum(draws.values()) > 0
    # Every callid once, rated or rejected, under its customer; the invalid lines (no
    # customer) under "".
    assert message_callids(messages) == lake_callids(home)
    reasons = Counter(rejected["reject_reason"].to_pylist())
    assert reasons["duplicate"] > 0 and reasons["invalid"] > 0
    [nobody] = [m for m in messages if m.key == ""]
    assert nobody.customer_id is None and nobody.currency is None
    assert nobody.minutes == () and nobody.callids  # unknown customers (the CDR named none)
    # Each customer's currency is its rated calls'.
    currencies = dict(
        zip(rated["customer_id"].to_pylist(), rated["currency"].to_pylist(), strict=True)
    )
    assert {m.key: m.currency for m in messages if m.minutes} == currencies


def test_money_is_exact_however_many_millionths_add_up() -> None:
    n = 100_000
    t0 = datetime(2026, 12, 7, 10, 15, 59, tzinfo=UTC)
    rated = pa.table(
        {
            "callid": [f"c{i}" for i in range(n)],
            "customer_id": ["C1"] * n,
            "currency": ["USD"] * n,
            "dt": pa.array([t0] * (n - 1) + [datetime(2026, 12, 7, 10, 16, tzinfo=UTC)], TIME),
            "sip_code": pa.array([200] * n, pa.int16()),
            "duration": pa.array([Decimal("0.1")] * n, SECONDS),
            "pdd_ms": pa.array([None, 7] * (n // 2), pa.int64()),
            "charge": pa.array([Decimal("0.000001")] * n, MONEY),
            "tax": pa.array([Decimal("0.2")] * n, MONEY),
            "package_seconds": pa.array([0] * n, pa.int32()),
            "package_draws": pa.array([[]] * n, pa.list_(PACKAGE_DRAW)),
        }
    )
    pairs = usage.batch_messages("b", {"kind": "lake", "seq": 7}, [rated], [])
    messages = parsed(pairs)  # 100,000 callids are more than one message holds: parts
    assert len(messages) > 1 and all(len(value) <= usage.MESSAGE_BYTES for _, value in pairs)
    assert len(message_callids(messages)) == n
    sums = minute_sums(messages)
    assert list(sums) == [("C1", "2026-12-07T10:15"), ("C1", "2026-12-07T10:16")]
    first, second = sums.values()
    # attempts, answered, duration, PDD sum and count (every other call has none), money
    # (99,999 × 0.200001), package seconds
    pdd = n // 2 - 1
    assert first == (n - 1, n - 1, Decimal("9999.9"), 7 * pdd, pdd, Decimal("19999.899999"), 0)
    assert second == (1, 1, Decimal("0.1"), 7, 1, Decimal("0.200001"), 0)
    assert sum((m.money for m in messages), Decimal(0)) == Decimal("20000.1")
    # The text on the wire is the exact decimal, no float on the way.
    texts = [x["money"] for _, value in pairs for x in json.loads(value)["minutes"]]
    assert texts == ["19999.899999", "0.200001"]


def test_rejections_free_holds_keyed_by_their_customer_or_none() -> None:
    rejected = pa.table(
        {
            "callid": ["r1", None, "r2", "r3"],
            "customer_id": [None, None, "C9", None],
            "reject_reason": ["invalid", "invalid", "no_route", "invalid"],
        }
    )
    messages = parsed(usage.batch_messages("b", {"kind": "lake", "seq": 1}, [], [rejected]))
    assert [(m.key, m.customer_id, m.callids) for m in messages] == [
        ("", None, ("r1", "r3")),
        ("C9", "C9", ("r2",)),
    ]
    assert all(m.minutes == () and m.draws == () and m.currency is None for m in messages)
    assert usage.batch_messages("b", {"kind": "lake", "seq": 1}, [], []) == []


def test_a_customer_too_large_for_one_message_gets_parts_that_add_up() -> None:
    n = 5000
    rated = pa.table(
        {
            "callid": [f"call-{i:06d}" for i in range(n)],
            "customer_id": ["C1"] * n,
            "currency": ["EUR"] * n,
            "dt": pa.array([1_796_000_000_000_000 + i * 30_000_000 for i in range(n)], TIME),
            "sip_code": pa.array([200, 486] * (n // 2), pa.int16()),
            "duration": pa.array([Decimal("1.5")] * n, SECONDS),
            "charge": pa.array([Decimal("0.01")] * n, MONEY),
            "tax": pa.array([Decimal("0.001")] * n, MONEY),
            "package_draws": pa.array(
                [
                    [
                        {
                            "package_id": "P",
                            "start_date": date(2026, 12, 1),
                            "period_start": date(2026, 12, i % 28 + 1),
                            "seconds": 1,
                        }
                    ]
                    for i in range(n)
                ],
                pa.list_(PACKAGE_DRAW),
            ),
        }
    )
    whole = parsed(usage.batch_messages("b", {"kind": "lake", "seq": 1}, [rated], []))
    pairs = usage.batch_messages("b", {"kind": "lake", "seq": 1}, [rated], [], limit=20_000)
    parts = parsed(pairs)
    assert len(whole) == 1 and len(parts) > 5
    assert all(len(value) <= 20_000 for _, value in pairs)
    assert [(m.part, m.parts) for m in parts] == [(i, len(parts)) for i in range(len(parts))]
    assert minute_sums(parts) == minute_sums(whole)
    assert draw_sums(parts) == draw_sums(whole) and sum(draw_sums(parts).values()) == n
    assert message_callids(parts) == message_callids(whole)
    assert sum((m.money for m in parts), Decimal(0)) == Decimal("55")


def test_parse_refuses_what_is_not_a_usage_message() -> None:
    for bad in (b"not json", b"[]", b'{"batch": "b"}', b'{"batch": "b", "source": {"kind": "x"}}'):
        with pytest.raises(ValueError, match="not a usage message"):
            usage.parse(bad)
    good: dict[str, Any] = {
        "batch": "b",
        "source": {"kind": "lake", "seq": 3},
        "customer_id": "C",
        "currency": "USD",
        "minutes": [
            {
                "minute": "2026-12-07T10:15:00Z",
                "attempts": 1,
                "answered": 1,
                "duration": "1.5",
                "pdd_sum": 10,
                "pdd_count": 1,
                "money": "0.1",
                "package_seconds": 0,
            }
        ],
        "draws": [],
        "callids": ["c"],
    }
    assert usage.parse(json.dumps(good).encode()).minutes[0].money == Decimal("0.1")
    good["minutes"][0]["money"] = "lots"
    with pytest.raises(ValueError, match="not a usage message"):
        usage.parse(json.dumps(good).encode())


def entries(home: Path) -> list[Entry]:
    found = commitlog.since(lake_root(home), 0)
    assert found is not None
    return found


def test_a_cdrflow_rate_run_gives_the_same_messages_from_its_log_entry(tmp_path: Path) -> None:
    home = new_home(tmp_path, "home")
    path = write_jsonl(tmp_path / "cdrs.jsonl", records(2000, seed=32), broken_every=300)
    Cli(home).ok("rate", str(path))
    [entry] = entries(home)
    assert not usage.is_stream_entry(entry) and not usage.replaces_rows(entry)
    messages = parsed(usage.messages_of_entry(home, entry))
    assert all(m.batch == entry.run for m in messages)
    assert all(m.source == {"kind": "lake", "seq": entry.seq} for m in messages)
    assert minute_sums(messages) == lake_minute_sums(home)
    assert draw_sums(messages) == lake_draw_sums(home)
    # The run's rejected files are found through its manifest: their callids are there too.
    assert message_callids(messages) == lake_callids(home)
    assert any(m.key == "" for m in messages)
    # A second run adds its own entry: only its rows.
    more = write_jsonl(
        tmp_path / "more.jsonl", records(300, seed=33, start=START.replace(day=20)), 0
    )
    Cli(home).ok("rate", str(more))
    first, second = entries(home)
    assert first == entry and second.seq == entry.seq + 1
    added = parsed(usage.messages_of_entry(home, second))
    assert added and all(m.source == {"kind": "lake", "seq": second.seq} for m in added)
    assert minute_sums(messages + added) == lake_minute_sums(home)
    assert message_callids(messages + added) == lake_callids(home)


def test_a_rerate_entry_is_not_additive_and_stream_entries_are_told_apart(
    tmp_path: Path,
) -> None:
    home = new_home(tmp_path, "home")
    rate_files(home, [write_jsonl(tmp_path / "cdrs.jsonl", records(500, seed=34))])
    day = START.date()
    rerate(home, day, date.fromordinal(day.toordinal() + 1), ["acme"])
    _, again = entries(home)
    assert usage.replaces_rows(again)
    with pytest.raises(ValueError, match="read the lake again"):
        usage.messages_of_entry(home, again)
    stream = Entry(9, "stream-cdrs-p00001-o" + "0" * 20 + "-" + "0" * 19 + "9", "s", [], [])
    assert usage.is_stream_entry(stream) and usage.is_stream_entry(stream, "cdrs")
    assert not usage.is_stream_entry(stream, "other")


def test_a_batch_of_many_customers_is_summed_per_customer(tmp_path: Path) -> None:
    """Several staged tables of one batch (a stream batch stages in parts) add up as one."""
    home = new_home(tmp_path, "home")
    rate_files(home, [write_jsonl(tmp_path / "cdrs.jsonl", records(1500, seed=35))])
    rated = lake(home, "rated")
    half = rated.num_rows // 2
    pieces = [rated.slice(0, half), rated.slice(half)]
    one = parsed(usage.batch_messages("b", {"kind": "lake", "seq": 1}, [rated], []))
    two = parsed(usage.batch_messages("b", {"kind": "lake", "seq": 1}, pieces, []))
    assert one == two
    per_customer: defaultdict[str, Decimal] = defaultdict(Decimal)
    for r in rated.select(["customer_id", "charge", "tax"]).to_pylist():
        per_customer[r["customer_id"]] += r["charge"] + r["tax"]
    assert {m.key: m.money for m in one} == dict(per_customer)


def test_callids_that_json_escapes_still_fit_their_parts() -> None:
    """A quote or a control character takes two to six bytes in JSON: more than a part's
    estimate counts, so a part found too large is halved until it fits."""
    callids = [f'"{i:05d}\x01\\' * 8 for i in range(2000)]
    rejected = pa.table({"callid": callids, "customer_id": ["C1"] * len(callids)})
    pairs = usage.batch_messages("b", {"kind": "lake", "seq": 1}, [], [rejected], limit=20_000)
    assert len(pairs) > 1 and all(len(value) <= 20_000 for _, value in pairs)
    messages = parsed(pairs)
    assert [c for m in messages for c in m.callids] == callids
    assert [(m.part, m.parts) for m in messages] == [(i, len(pairs)) for i in range(len(pairs))]
