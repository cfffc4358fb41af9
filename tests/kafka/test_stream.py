"""``cdrflow stream`` on a real broker: every CDR in the lake exactly once, whatever happens."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.compiled import cached_tables
from pipelines.kafka_broker import Broker
from pipelines.lakefiles import committed_runs
from pipelines.rate import load_tables, rate_files
from pipelines.rerate import rerate
from pipelines.stream import (
    CATALOG_CHECK,
    PUBLISHED_RAW,
    StreamSettings,
    Worker,
    published_mark,
)
from tests.conftest import SmallDisk
from tests.kafka.reader import consume
from tests.pipelines.test_rate import content, lake, new_home
from tests.pipelines.workload import records, write_jsonl

pytestmark = pytest.mark.integration

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")
# Bounds against a hang, never deadlines: a busy machine makes these tests slower, not wrong.
# Workers are stopped when the lake shows their work done, not after seconds without a
# message (``--idle-exit``), which a slow start or a slow broker can reach first.
PATIENCE = 600


def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    keys: list[bytes] | None = None,
    partition: int | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "acks": "all"})
    for i, value in enumerate(values):
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, key=keys[i] if keys else None, **extra)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(PATIENCE) == 0


def lines(path: Path) -> list[bytes]:
    return [line.rstrip(b"\n") for line in path.read_bytes().splitlines(keepends=True)]


def keyed(values: list[bytes]) -> list[bytes]:
    """SPEC §8: the key is the customer_id, else the source IP (a malformed record: none)."""
    keys = []
    for v in values:
        try:
            cdr = json.loads(v)
        except ValueError:
            keys.append(b"")
            continue
        keys.append(str(cdr.get("customer_id") or cdr.get("source_ip") or "").encode())
    return keys


def worker(
    home: Path, bootstrap: str, topic: str, group: str, *extra: str
) -> subprocess.Popen[bytes]:
    command = [CDRFLOW, "--home", str(home), "stream", "--bootstrap", bootstrap]
    command += ["--topic", topic, "--group", group, "--batch", "400", "--wait", "0.3"]
    command += ["--metrics-every", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], timeout: float = PATIENCE) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # and its pipes read and closed: nothing leaks into later tests
        out, err = process.communicate()
        log = (out + err).decode(errors="replace")
        raise AssertionError(
            f"the worker ran past {timeout} s; its log ends:\n{log[-6000:]}"
        ) from None
    assert process.returncode == 0, err.decode()[-3000:]
    return (out + err).decode()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition()`` holds; a hang fails after minutes, naming ``what``. A file
    gone while it was read (the worker merges its batch manifests) is a "not yet"."""
    give_up = time.monotonic() + PATIENCE
    while True:
        try:
            if condition():
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > give_up:
            raise AssertionError(f"waited {PATIENCE} s for {what}")
        time.sleep(0.1)


def catches_sigterm(process: subprocess.Popen[bytes]) -> bool:
    """The worker has set its SIGTERM handler (Linux's SigCgt mask): a SIGTERM now stops
    it cleanly instead of killing it while it starts."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def settled(home: Path, n: int) -> bool:
    """``n`` messages are in the lake and every landed batch is marked published (or owes
    the topics nothing): a worker has nothing left to do."""
    runs = committed_runs(home)
    return sum(landed(home).values()) >= n and all(
        published_mark(home, r["run"]).exists() for r in runs
    )


def stop(process: subprocess.Popen[bytes], home: Path, n: int) -> str:
    """Once the lake holds the ``n`` messages, SIGTERM the worker; its log."""
    wait_for(lambda: settled(home, n), f"{n} messages landed and published")
    wait_for(lambda: catches_sigterm(process), "the worker to start")
    process.send_signal(signal.SIGTERM)
    return finish(process)


def landed(home: Path) -> Counter[tuple[str, int]]:
    """How often each message (partition source and offset) is in the lake, rated or
    rejected: exactly once is the whole point."""
    seen: Counter[tuple[str, int]] = Counter()
    for kind in ("rated", "rejected"):
        table = lake(home, kind)
        if table.num_rows:
            seen.update(zip(table["source"].to_pylist(), table["line"].to_pylist(), strict=True))
    return seen


def every_message(bootstrap: str, topic: str, n: int) -> Counter[tuple[str, int]]:
    """Each produced message once: offsets 0… of each partition (an idempotent producer
    without transactions leaves no gaps)."""
    counts = partition_counts(bootstrap, topic, n)
    return Counter({(f"kafka:{topic}/{p}", o): 1 for p, c in counts.items() for o in range(c)})


def stream_offsets(home: Path, topic: str) -> dict[int, list[tuple[int, int]]]:
    spans: dict[int, list[tuple[int, int]]] = {}
    for run in committed_runs(home):
        s = run.get("stream")
        if s and s["topic"] == topic:
            spans.setdefault(s["partition"], []).append((s["first"], s["last"]))
    return spans


def contiguous(spans: dict[int, list[tuple[int, int]]], counts: dict[int, int]) -> bool:
    """Every offset of every partition in exactly one committed batch."""
    for p, n in counts.items():
        covered = sorted(spans.get(p, []))
        at = 0
        for first, last in covered:
            if first != at:
                return False
            at = last + 1
        if at != n:
            return False
    return True


def partition_counts(bootstrap: str, topic: str, n: int) -> dict[int, int]:
    return dict(Counter(m.partition for m in consume(bootstrap, topic, n)))


def test_every_produced_cdr_lands_exactly_once_and_is_published(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(3000, seed=11), broken_every=300))
    values += [
        b"not json at all",
        b'{"callid": "w1", "dt": "yesterday", "dest_number": "44", "sip_code": 200}',
        b'{"callid": "u1", "dt": "2026-11-02T10:00:00Z", "dest_number": "4420",'
        b' "sip_code": 200, "customer_id": "nobody"}',
        b"",
    ]
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    log = stop(worker(home, kafka_broker.bootstrap, topic, "g1"), home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values)), log
    reasons = Counter(lake(home, "rejected")["reject_reason"].to_pylist())
    assert reasons["invalid"] >= 3 and reasons["unknown_customer"] >= 1
    bad = lake(home, "rejected").to_pylist()
    assert any(r["raw"] == "not json at all" for r in bad)
    assert all(r["source"].startswith(f"kafka:{topic}/") for r in bad)
    assert any("dt" in r["reject_detail"] for r in bad if r["callid"] == "w1")
    assert any(r["raw"] == "(empty message)" for r in bad)
    # Published too: each rated CDR to <topic>.rated, each rejection to <topic>.rejected.
    rated, rejected = lake(home, "rated").num_rows, lake(home, "rejected").num_rows
    out = consume(kafka_broker.bootstrap, f"{topic}.rated", rated)
    assert sorted(json.loads(m.value)["callid"] for m in out) == sorted(
        lake(home, "rated")["callid"].to_pylist()
    )
    assert len(consume(kafka_broker.bootstrap, f"{topic}.rejected", rejected)) == rejected
    # The files carry topic, partition and offset range; the batches tile every partition.
    names = [p.name for p in (home / "lake" / "rated").glob("date=*/*.parquet")]
    assert names and all(f"stream-{topic}-p" in n and "-o" in n for n in names)
    counts = partition_counts(kafka_broker.bootstrap, topic, len(values))
    assert contiguous(stream_offsets(home, topic), counts)


def test_the_lake_after_streaming_equals_the_lake_after_rating_the_file(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """Arrival order = time order on one partition: same charges, same package draws."""
    rows = sorted(records(2500, seed=12), key=lambda r: (r["dt"], r["callid"]))
    path = write_jsonl(tmp_path / "cdrs.jsonl", rows, broken_every=400)
    values = lines(path)
    produce(kafka_broker.bootstrap, topic, values, partition=0)
    streamed = new_home(tmp_path, "streamed")
    stop(
        worker(streamed, kafka_broker.bootstrap, topic, "g2", "--no-publish"), streamed, len(values)
    )
    batch = new_home(tmp_path, "batch")
    rate_files(batch, [path])
    assert content(streamed, "rated") == content(batch, "rated")
    assert sum(r["package_seconds"] for r in lake(streamed, "rated").to_pylist()) > 0
    assert content(streamed, "rejected") == content(batch, "rejected")


def test_a_worker_killed_mid_stream_restarts_without_loss_or_duplicates(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(6000, seed=13), broken_every=500))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    first = worker(home, kafka_broker.bootstrap, topic, "g3", "--batch", "200")
    wait_for(lambda: bool(stream_offsets(home, topic)), "a first batch landed")
    time.sleep(0.3)  # into the next batches, or not: any moment will do
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=PATIENCE)
    done_before = sum(len(v) for v in stream_offsets(home, topic).values())
    assert done_before >= 1
    stop(worker(home, kafka_broker.bootstrap, topic, "g3"), home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
    counts = partition_counts(kafka_broker.bootstrap, topic, len(values))
    assert contiguous(stream_offsets(home, topic), counts)
    assert not any((home / "lake" / "_staging").glob("*/*"))  # a crashed batch was undone


def test_workers_joining_and_leaving_split_partitions_exactly_once(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(8000, seed=14), broken_every=700))
    home = new_home(tmp_path, "home")
    a = worker(home, kafka_broker.bootstrap, topic, "g4", "--batch", "300")
    b = worker(home, kafka_broker.bootstrap, topic, "g4", "--batch", "300")
    produce(kafka_broker.bootstrap, topic, values[:3000], keyed(values[:3000]))
    wait_for(lambda: sum(landed(home).values()) > 0, "a first batch landed")
    c = worker(home, kafka_broker.bootstrap, topic, "g4", "--batch", "300")
    produce(kafka_broker.bootstrap, topic, values[3000:6000], keyed(values[3000:6000]))
    wait_for(lambda: all(map(catches_sigterm, (a, b, c))), "the workers to start")
    a.send_signal(signal.SIGTERM)  # leaves the group after landing its batch
    log_a = finish(a)
    produce(kafka_broker.bootstrap, topic, values[6000:], keyed(values[6000:]))
    b.send_signal(signal.SIGTERM)
    finish(b)
    log_c = stop(c, home, len(values))
    assert "stopping" in log_a
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values)), log_c
    counts = partition_counts(kafka_broker.bootstrap, topic, len(values))
    assert contiguous(stream_offsets(home, topic), counts)


def test_a_broker_restart_in_the_middle_of_a_stream_is_survived(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(4000, seed=15)))
    home = new_home(tmp_path, "home")
    w = worker(home, kafka_broker.bootstrap, topic, "g5")
    produce(kafka_broker.bootstrap, topic, values[:2000], keyed(values[:2000]))
    wait_for(lambda: bool(stream_offsets(home, topic)), "a first batch landed")
    kafka_broker.restart()
    produce(kafka_broker.bootstrap, topic, values[2000:], keyed(values[2000:]))
    stop(w, home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
    counts = partition_counts(kafka_broker.bootstrap, topic, len(values))
    assert contiguous(stream_offsets(home, topic), counts)


def test_a_rejection_too_large_to_publish_whole_goes_out_shortened_not_a_stop(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """600 kB of quotes is a malformed message Kafka takes; its rejection, the raw text
    escaped (1.2 MB), is not. The lake keeps it whole, the topic gets its start, flagged,
    and the stream goes on."""
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(300, seed=26)))
    huge = b'"' * 600_000
    values = [*values[:100], huge, *values[100:]]
    produce(kafka_broker.bootstrap, topic, values, partition=0)
    home = new_home(tmp_path, "home")
    stop(worker(home, kafka_broker.bootstrap, topic, "g12"), home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
    rejected = lake(home, "rejected")
    [kept] = [r for r in rejected.to_pylist() if r["line"] == 100]
    assert kept["raw"] == huge.decode()
    out = consume(kafka_broker.bootstrap, f"{topic}.rejected", rejected.num_rows)
    [sent] = [json.loads(m.value) for m in out if json.loads(m.value)["line"] == 100]
    assert sent["raw_truncated"] is True
    assert sent["raw"] == huge.decode()[:PUBLISHED_RAW]
    assert sent["reject_reason"] == "invalid"
    others = [json.loads(m.value) for m in out if json.loads(m.value)["line"] != 100]
    assert others and not any("raw_truncated" in r for r in others)


class RefusingCommits:
    """The worker's real consumer, except that its first ``commit`` calls fail as they do
    while a restarted broker's group coordinator is not known yet."""

    def __init__(self, consumer: Consumer, failures: int) -> None:
        self._consumer, self.failures = consumer, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError._WAIT_COORD))
        return self._consumer.commit(*args, **kwargs)


def test_an_offset_commit_kafka_refuses_is_a_warning_not_a_stop(
    tmp_path: Path, kafka_broker: Broker, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Kafka's offsets are a hint: a refused commit (seen after a broker restart, when the
    coordinator is not known yet) neither stops the worker nor loses or repeats a CDR."""
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(1200, seed=25)))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    settings = StreamSettings(kafka_broker.bootstrap, topic, "g11", batch=400, wait=0.3)
    w = Worker(home, settings)
    w.consumer = RefusingCommits(w.consumer, failures=2)  # type: ignore[assignment]
    totals = w.run(lambda: settled(home, len(values)))
    assert totals.records == len(values)
    assert caplog.text.count("offsets not committed to Kafka (") == 2
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))


def test_sigterm_lands_the_batch_in_hand_and_exits_cleanly(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(1500, seed=16)))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = new_home(tmp_path, "home")
    w = worker(home, kafka_broker.bootstrap, topic, "g6")
    wait_for(lambda: sum(landed(home).values()) >= len(values), "every message landed")
    os.kill(w.pid, signal.SIGTERM)
    log = finish(w)
    assert "stopped:" in log
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))


def test_a_batch_landed_but_not_published_is_published_at_the_next_assignment(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """The lake is exactly once; the output topics at least once: a crash between landing
    and publishing (here: the mark removed) publishes the batch again."""
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(800, seed=17)))
    produce(kafka_broker.bootstrap, topic, values, partition=1)
    home = new_home(tmp_path, "home")
    stop(worker(home, kafka_broker.bootstrap, topic, "g7"), home, len(values))
    marks = sorted((home / "lake" / "_runs").glob("*.published"))
    assert len(marks) == len(stream_offsets(home, topic)[1])
    rated = lake(home, "rated")
    marks[0].unlink()
    # Nothing to consume: it publishes at its assignment, then leaves when idle (the one
    # test of --idle-exit, safe here since no message is waited for).
    finish(worker(home, kafka_broker.bootstrap, topic, "g7", "--idle-exit", "3"))
    # Published again, then merged at the assignment with the batches after it: one run,
    # marked published, over the same offsets.
    assert len(marks) > 1
    [(first, last)] = stream_offsets(home, topic)[1]
    assert (first, last) == (0, len(values) - 1)
    [run] = [r["run"] for r in committed_runs(home)]
    assert sorted(p.name for p in (home / "lake" / "_runs").iterdir()) == [
        f"{run}.json", f"{run}.published"
    ]  # fmt: skip
    out = Counter(
        json.loads(m.value)["callid"]
        for m in consume(kafka_broker.bootstrap, f"{topic}.rated", rated.num_rows + 1)
    )
    assert set(out) == set(rated["callid"].to_pylist())
    assert sum(out.values()) > rated.num_rows  # the batch went out twice
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))


def set_topic_config(admin: AdminClient, topic: str, key: str, value: str) -> None:
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(PATIENCE)


@pytest.mark.parametrize("queue", ["default", "full"])
def test_while_kafka_does_not_take_the_output_the_worker_waits_and_a_sigterm_leaves_it_owed(
    tmp_path: Path, kafka_broker: Broker, topic: str, queue: str
) -> None:
    """An output topic gone (librdkafka waits for it, as for brokers that are away) keeps
    the worker waiting, not failing and not marking; SIGTERM then stops it at once with the
    batch still owed, and the next worker (which makes the topic again) publishes it. With
    a producer queue of 10 messages the wait is for room in the queue, not for the flush."""
    rejected_topic = f"{topic}.rejected"
    home = new_home(tmp_path, "home")
    extra: list[str] = []
    if queue == "full":
        settings = tmp_path / "kafka.properties"
        settings.write_text("queue.buffering.max.messages=10\n")
        extra = ["--kafka-config", str(settings)]
    w = worker(home, kafka_broker.bootstrap, topic, "g10", *extra)
    wait_for(lambda: rejected_topic in kafka_broker.topics(), "the worker's output topics")
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.delete_topics([rejected_topic])[rejected_topic].result(PATIENCE)
    wait_for(lambda: rejected_topic not in kafka_broker.topics(), "the topic deleted")
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(800, seed=24)))
    produce(kafka_broker.bootstrap, topic, values, partition=1)
    wait_for(lambda: bool(committed_runs(home)), "a batch landed")
    time.sleep(4)
    assert w.poll() is None  # still there, waiting for Kafka
    runs = [r["run"] for r in committed_runs(home)]
    assert len(runs) == 1 and not published_mark(home, runs[0]).exists()
    stopped = time.monotonic()
    w.send_signal(signal.SIGTERM)
    log = finish(w)
    # At once, not after Kafka's 5-minute message timeout; minutes allowed for a busy machine.
    assert time.monotonic() - stopped < 150
    assert f"stopping with {runs[0]} not known to be published" in log
    assert not published_mark(home, runs[0]).exists()
    stop(worker(home, kafka_broker.bootstrap, topic, "g10"), home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
    assert all(published_mark(home, r["run"]).exists() for r in committed_runs(home))
    rejected = lake(home, "rejected")
    out_rejected = consume(kafka_broker.bootstrap, rejected_topic, rejected.num_rows)
    assert {json.loads(m.value)["callid"] for m in out_rejected} == set(
        rejected["callid"].to_pylist()
    )


def test_output_kafka_refuses_leaves_its_batches_unpublished_and_stops_the_worker_saying_why(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """A delivery failure is not a publish: the batch stays unmarked (the lake still has it
    exactly once), the worker stops with Kafka's reason instead of marking it published, and
    once Kafka takes messages again the next worker publishes it."""
    rejected_topic = f"{topic}.rejected"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    small = NewTopic(rejected_topic, 4, 1, config={"max.message.bytes": "200"})
    admin.create_topics([small])[rejected_topic].result(PATIENCE)
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(800, seed=23)))
    produce(kafka_broker.bootstrap, topic, values, partition=1)
    home = new_home(tmp_path, "home")
    w = worker(home, kafka_broker.bootstrap, topic, "g9")  # stops itself on the refusal
    _, err = w.communicate(timeout=PATIENCE)
    assert w.returncode == 1
    assert "Kafka did not take the output of stream-" in err.decode()
    assert f"{rejected_topic}: Broker: Message size too large" in err.decode()
    assert "Traceback" not in err.decode()
    runs = [r["run"] for r in committed_runs(home)]
    assert runs and not any(published_mark(home, run).exists() for run in runs)
    set_topic_config(admin, rejected_topic, "max.message.bytes", "1048588")
    stop(worker(home, kafka_broker.bootstrap, topic, "g9"), home, len(values))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
    rejected = lake(home, "rejected")
    assert rejected.num_rows
    out_rejected = consume(kafka_broker.bootstrap, rejected_topic, rejected.num_rows)
    assert {json.loads(m.value)["callid"] for m in out_rejected} == set(
        rejected["callid"].to_pylist()
    )
    assert all(published_mark(home, r["run"]).exists() for r in committed_runs(home))


def test_a_catalog_change_reaches_the_batches_after_it(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """An operator's edit is picked up by a running worker (within CATALOG_CHECK seconds)."""
    before = lines(write_jsonl(tmp_path / "a.jsonl", records(1500, seed=18)))
    after = lines(write_jsonl(tmp_path / "b.jsonl", records(1500, seed=19)))
    home = new_home(tmp_path, "home")
    w = worker(home, kafka_broker.bootstrap, topic, "g8")
    produce(kafka_broker.bootstrap, topic, before, keyed(before))
    wait_for(lambda: sum(landed(home).values()) >= len(before), "the first CDRs landed")
    with Catalog(home) as catalog:
        catalog.edit("rate_cards", "retail-usd", {"precision": "2"})
    # The worker looks at the catalog with a batch that comes CATALOG_CHECK s after its last
    # look (before the edit): a longer pause is what the product promises, not a deadline.
    time.sleep(CATALOG_CHECK + 1)
    produce(kafka_broker.bootstrap, topic, after, keyed(after))
    stop(w, home, len(before) + len(after))
    rated = [r for r in lake(home, "rated").to_pylist() if r["card_id"] == "retail-usd"]
    first = [r["charge"] for r in rated if r["callid"].startswith("18-")]
    second = [r["charge"] for r in rated if r["callid"].startswith("19-")]
    assert first and second
    assert any(c != c.quantize(Decimal("0.01")) for c in first)  # 4 places before the edit
    assert all(c == c.quantize(Decimal("0.01")) for c in second)  # 2 places after it


def test_a_long_running_worker_reads_its_billed_callids_again_when_the_days_move_on(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """The billed-callids table of a worker up for weeks does not grow with its uptime:
    once the CDRs' days move three windows past the table's first, it is read again from
    the lake for their window (once: resends of old days, late CDRs, do not start it
    again), and resends are still duplicates, of the new days and of the old."""
    home = new_home(tmp_path, "home")
    early = records(300, seed=21)
    late = records(300, seed=22, start=datetime(2026, 12, 31, tzinfo=UTC))
    w = worker(home, kafka_broker.bootstrap, topic, "g9")
    sent = 0

    def send(rows: list[dict[str, Any]]) -> None:
        nonlocal sent
        values = [json.dumps(r).encode() for r in rows]
        produce(kafka_broker.bootstrap, topic, values, keyed(values))
        sent += len(values)
        wait_for(lambda: sum(landed(home).values()) >= sent, f"{sent} messages landed")

    send(early)
    send(late)
    rated = set(lake(home, "rated")["callid"].to_pylist())
    repeated = set(lake(home, "rejected")["callid"].to_pylist())  # the workload's own resends
    again = [r for r in early + late if r["callid"] in rated - repeated][::40]
    assert {r["callid"][:3] for r in again} == {"21-", "22-"}
    send(again)
    log = stop(w, home, sent)
    assert log.count("is read again from the lake") == 1
    rejected = lake(home, "rejected").to_pylist()
    duplicates = Counter(r["callid"] for r in rejected if r["reject_reason"] == "duplicate")
    assert {r["callid"]: duplicates[r["callid"]] for r in again} == {r["callid"]: 1 for r in again}
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, sent)


def wait_landed(home: Path, topic: str, n: int, timeout: float = 300) -> None:
    """Until ``n`` messages of ``topic`` are in the lake (a generous limit: only a hung
    worker reaches it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sum(
            c for (source, _), c in landed(home).items() if source.startswith(f"kafka:{topic}/")
        )
        if got >= n:
            return
        assert time.monotonic() < deadline, f"{got} of {n} messages landed"
        time.sleep(0.2)


def billed_once(home: Path) -> None:
    rated = Counter(lake(home, "rated")["callid"].to_pylist())
    assert rated and max(rated.values()) == 1, rated.most_common(3)


def test_a_worker_sees_the_callids_a_rate_run_billed_meanwhile(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """A worker streams; ``cdrflow rate`` rates a file on the same home; the same CDRs then
    arrive on Kafka: each is a duplicate, not billed twice."""
    home = new_home(tmp_path, "home")
    early = [json.dumps(r).encode() for r in records(600, seed=81)]
    rows = records(1000, seed=82)  # the same days: the worker has read their callids
    w = worker(home, kafka_broker.bootstrap, topic, "g13")
    try:
        produce(kafka_broker.bootstrap, topic, early, keyed(early))
        wait_landed(home, topic, len(early))
        summary = rate_files(home, [write_jsonl(tmp_path / "day.jsonl", rows)])
        assert summary.rated > 500
        again = [json.dumps(r).encode() for r in rows]
        produce(kafka_broker.bootstrap, topic, again, keyed(again))
        wait_landed(home, topic, len(early) + len(again))
    finally:
        w.send_signal(signal.SIGTERM)
        finish(w, 120)
    billed_once(home)
    rejected = lake(home, "rejected").to_pylist()
    resent = Counter(
        r["reject_reason"]
        for r in rejected
        if r["source"].startswith(f"kafka:{topic}/") and r["callid"].startswith("82-")
    )
    assert resent["duplicate"] >= summary.rated


def test_two_workers_on_one_home_bill_a_call_both_receive_once(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """Two workers of one home, each on its own topic, get the same CDRs (a switch that
    sends to both): whichever lands a call first bills it; the other finds it billed, and
    package seconds are drawn once."""
    other = f"{topic}-b"
    kafka_broker.create_topic(other, partitions=4)
    home = new_home(tmp_path, "home")
    values = [json.dumps(r).encode() for r in records(2000, seed=83)]
    a = worker(home, kafka_broker.bootstrap, topic, "g14a", "--no-publish")
    b = worker(home, kafka_broker.bootstrap, other, "g14b", "--no-publish")
    try:
        for start in range(0, len(values), 500):  # interleaved, as two switches send
            chunk = values[start : start + 500]
            produce(kafka_broker.bootstrap, topic, chunk, keyed(chunk))
            produce(kafka_broker.bootstrap, other, chunk, keyed(chunk))
        wait_landed(home, topic, len(values))
        wait_landed(home, other, len(values))
    finally:
        for w in (a, b):
            w.send_signal(signal.SIGTERM)
        for w in (a, b):
            finish(w, 120)
    billed_once(home)
    alone = new_home(tmp_path, "alone")
    rate_files(alone, [write_jsonl(tmp_path / "all.jsonl", records(2000, seed=83))])
    assert lake(home, "rated").num_rows == lake(alone, "rated").num_rows
    assert sum(r["package_seconds"] for r in lake(home, "rated").to_pylist()) == sum(
        r["package_seconds"] for r in lake(alone, "rated").to_pylist()
    )


class CountingPolls:
    """The worker's real consumer, counting the polls that bring nothing."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer, self.empty = consumer, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        messages = self._consumer.consume(*args, **kwargs)
        self.empty += not messages
        return messages


def test_the_time_a_batch_takes_to_rate_does_not_count_as_idle(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """``--idle-exit S`` means S seconds without a message: a batch that takes longer than S
    to rate (a busy machine) does not make the worker leave at the next empty poll."""
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(200, seed=84)))
    produce(kafka_broker.bootstrap, topic, values, partition=0)
    home = new_home(tmp_path, "home")
    settings = StreamSettings(kafka_broker.bootstrap, topic, "g15", batch=1000, wait=0.2)
    w = Worker(home, settings)
    polls = CountingPolls(w.consumer)
    w.consumer = polls  # type: ignore[assignment]
    rate = w._rate
    rated_at: list[int] = []

    def slow_rate(polled: Any) -> None:
        rate(polled)
        rated_at.append(polls.empty)
        time.sleep(6)  # longer than idle_exit: as if the machine were busy

    w._rate = slow_rate  # type: ignore[method-assign]
    totals = w.run(lambda: False, idle_exit=5)
    assert totals.records == len(values)
    assert polls.empty - rated_at[-1] >= 2  # it went on polling after the slow batch


def test_a_full_disk_stops_the_worker_with_one_line_and_the_batch_uncommitted(
    tmp_path: Path, kafka_broker: Broker, topic: str, small_disk: SmallDisk
) -> None:
    """The batch in hand is not committed (its staging goes, Kafka's offsets stay), the
    worker says so in one line, and a worker with room rates every message once. (Batches
    of other partitions of the same poll that fitted are committed, each whole.)"""
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", records(4000, seed=31)))
    produce(kafka_broker.bootstrap, topic, values, keyed(values))
    home = small_disk.path / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
        cached_tables(home, load_tables, catalog)
    # Room for what reading the catalog needs (SQLite's 32 KiB -shm), not for a batch.
    small_disk.fill(leave=48 << 10)
    w = worker(home, kafka_broker.bootstrap, topic, "g13", "--batch", "5000", "--idle-exit", "3")
    _, err = w.communicate(timeout=120)
    said = err.decode()
    assert w.returncode == 1, said[-3000:]
    [line] = [line for line in said.splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        # A staged file, or when the batch's files fitted, its commit log entry, the log's
        # head or its manifest (the commit point).
        rf"error: could not write {re.escape(str(home))}/lake/"
        r"(_staging/\S+|_log/\.\d+\.json|\._head\.json|_runs/\.stream-\S+\.json)\.tmp: "
        "No space left on device; the batch in hand was not committed: the lake is as before, "
        "and the worker given its partition rates it again",
        line,
    ), line
    assert "Traceback" not in said
    # The lake holds whole committed batches (those of other partitions that fitted) and
    # nothing of the one that did not: no staging, no manifest's temporary file.
    whole = Counter(
        {
            (f"kafka:{topic}/{partition}", offset): 1
            for partition, spans in stream_offsets(home, topic).items()
            for first, last in spans
            for offset in range(first, last + 1)
        }
    )
    assert landed(home) == whole
    assert not any((home / "lake" / "_staging").iterdir())
    assert not list((home / "lake" / "_runs").glob(".*"))
    assert not list((home / "lake").glob("**/.*.tmp"))
    small_disk.free()
    finish(worker(home, kafka_broker.bootstrap, topic, "g13", "--idle-exit", "4"))
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))


def test_a_batch_a_re_rate_replaced_before_it_was_published_does_not_stop_the_worker(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    """A batch landed but not known to be published, whose rated file a re-rate has since
    replaced: at the next assignment the worker publishes what is left of it and goes on."""
    rows = records(600, seed=85)
    values = lines(write_jsonl(tmp_path / "cdrs.jsonl", rows))
    produce(kafka_broker.bootstrap, topic, values, partition=2)
    home = new_home(tmp_path, "home")
    stop(worker(home, kafka_broker.bootstrap, topic, "g16"), home, len(values))
    for mark in (home / "lake" / "_runs").glob("*.published"):
        mark.unlink()
    days = sorted({r["dt"][:10] for r in rows})
    rerate(home, date.fromisoformat(days[0]), date.fromisoformat(days[-1]) + timedelta(days=1))
    after = content(home, "rated")
    log = finish(worker(home, kafka_broker.bootstrap, topic, "g16", "--idle-exit", "3"))
    assert "replaced by a re-rate since it landed" in log
    assert content(home, "rated") == after
    assert landed(home) == every_message(kafka_broker.bootstrap, topic, len(values))
