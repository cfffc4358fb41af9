"""``<topic>.usage`` on a real broker: the stream worker's compact messages (SPEC §9.1) add
up to the rated lake, and name every callid once per batch, crash or not."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines import usage
from pipelines.kafka_broker import Broker
from pipelines.lakefiles import lake_root
from tests.kafka.reader import consume
from tests.kafka.test_stream import (
    PATIENCE,
    keyed,
    lines,
    produce,
    stop,
    stream_offsets,
    wait_for,
    worker,
)
from tests.pipelines.test_rate import lake, new_home
from tests.pipelines.workload import records, write_jsonl

pytestmark = pytest.mark.integration

RUN_OF_FILE = re.compile(r"part-(.+)-\d{5}\.parquet")


def lake_pairs(home: Path) -> set[tuple[str, str]]:
    """(run, customer key) of every row of the lake that has a callid (a line that is not
    JSON has none, so it frees no hold): one usage message each is owed."""
    pairs = set()
    for kind in ("rated", "rejected"):
        for path in (lake_root(home) / kind).glob("date=*/*.parquet"):
            found = RUN_OF_FILE.fullmatch(path.name)
            assert found
            for customer in duckdb.execute(
                "SELECT DISTINCT coalesce(customer_id, '') FROM read_parquet(?) "
                "WHERE callid IS NOT NULL",
                [str(path)],
            ).fetchall():
                pairs.add((found[1], customer[0]))
    return pairs


def lake_money(home: Path) -> dict[str, Decimal]:
    rows = duckdb.execute(
        "SELECT customer_id, sum(charge + tax) FROM read_parquet(?) GROUP BY ALL",
        [f"{lake_root(home)}/rated/date=*/*.parquet"],
    ).fetchall()
    return {r[0]: Decimal(r[1]) for r in rows}


def lake_callids(home: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    for kind in ("rated", "rejected"):
        out.update(c for c in lake(home, kind)["callid"].to_pylist() if c is not None)
    return out


def read_usage(
    bootstrap: str, topic: str, home: Path
) -> tuple[list[usage.UsageMessage], int, dict[str, set[int]]]:
    """The usage topic, counted once per (batch, customer, part) as the live app does: the
    messages, how many copies were left out, and each key's partitions."""
    pairs = lake_pairs(home)
    received = consume(bootstrap, f"{topic}.usage", len(pairs))
    seen: dict[tuple[str, str, int], usage.UsageMessage] = {}
    partitions: dict[str, set[int]] = defaultdict(set)
    copies = 0
    for r in received:
        m = usage.parse(r.value)
        assert r.key == m.key.encode()
        partitions[m.key].add(r.partition)
        ident = (m.batch, m.key, m.part)
        if ident in seen:
            assert seen[ident] == m  # a batch published again says the same
            copies += 1
        seen[ident] = m
    assert {(m.batch, m.key) for m in seen.values()} == pairs
    return list(seen.values()), copies, partitions


def check(home: Path, messages: list[usage.UsageMessage], topic: str) -> None:
    money: defaultdict[str, Decimal] = defaultdict(Decimal)
    for m in messages:
        if m.minutes:
            money[m.key] += m.money
    assert dict(money) == lake_money(home)
    assert Counter(c for m in messages for c in m.callids) == lake_callids(home)
    for m in messages:
        s = m.source
        assert s["kind"] == "stream" and s["topic"] == topic
        assert m.batch.startswith(f"stream-{topic}-p{s['partition']:05d}-o{s['first']:020d}-")


def test_usage_messages_add_up_to_the_rated_lake_with_every_callid_once(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(3000, seed=41), broken_every=300))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    stop(worker(home, kafka_broker.bootstrap, topic, "gu1"), home, len(values))
    messages, copies, partitions = read_usage(kafka_broker.bootstrap, topic, home)
    assert copies == 0  # nothing crashed: each batch published once
    check(home, messages, topic)
    # Every valid input's callid is there: rated or rejected, under its customer.
    inputs = set()
    for v in values:
        try:
            inputs.add(json.loads(v)["callid"])
        except ValueError:
            continue
    assert set(c for m in messages for c in m.callids) == inputs
    # One customer's messages stay on one partition, of as many as the input topic has.
    assert all(len(p) == 1 for p in partitions.values())
    assert max(p for ps in partitions.values() for p in ps) <= 3
    meta = kafka_broker.admin().list_topics(timeout=30)
    assert len(meta.topics[f"{topic}.usage"].partitions) == 4


def test_a_worker_killed_mid_stream_publishes_usage_that_dedupes_to_the_lake(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(5000, seed=42), broken_every=500))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    first = worker(home, kafka_broker.bootstrap, topic, "gu2", "--batch", "200")
    wait_for(lambda: bool(stream_offsets(home, topic)), "a first batch landed")
    time.sleep(0.3)  # into the next batches, or not: any moment will do
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=PATIENCE)
    stop(worker(home, kafka_broker.bootstrap, topic, "gu2"), home, len(values))
    messages, _, _ = read_usage(kafka_broker.bootstrap, topic, home)
    check(home, messages, topic)
