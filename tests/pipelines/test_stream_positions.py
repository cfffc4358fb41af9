"""Where a stream partition resumes: read from the manifests' names, never their contents;
and how a partition's batch manifests are merged so that ``_runs/`` does not grow a file a
batch for ever."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines import stream
from pipelines.kafka_topics import ensure_outputs
from pipelines.lakefiles import RATE_RUNS, committed_runs
from pipelines.stream import (
    compact_runs,
    lake_position,
    partition_runs,
    published_mark,
    run_name,
)
from schemas.errors import CdrflowError


def manifest(home: Path, run: str) -> None:
    runs = home / "lake" / "_runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{run}.json").write_text(f'{{"run": "{run}", "inputs": {{}}}}')


def test_a_partition_resumes_after_its_last_committed_batch(tmp_path: Path) -> None:
    for run in (
        run_name("cdrs", 1, 100, 249),
        run_name("cdrs", 1, 0, 99),
        run_name("cdrs", 1, 1000, 1999),  # offsets sort numerically: zero-padded names
        run_name("cdrs", 2, 0, 9),
        run_name("cdrsx", 1, 0, 99_999),  # another topic sharing the prefix
        "20261126T101500-0a1b2c3d",  # a cdrflow rate run
    ):
        manifest(tmp_path, run)
    assert [(f, t) for _, f, t in partition_runs(tmp_path, "cdrs", 1)] == [
        (0, 99),
        (100, 249),
        (1000, 1999),
    ]
    assert lake_position(tmp_path, "cdrs", 1) == 2000
    assert lake_position(tmp_path, "cdrs", 2) == 10
    assert lake_position(tmp_path, "cdrs", 3) is None
    assert lake_position(tmp_path, "cdrsx", 1) == 100_000
    assert [r["run"] for r in committed_runs(tmp_path, RATE_RUNS)] == ["20261126T101500-0a1b2c3d"]


def batch(home: Path, partition: int, first: int, last: int, published: bool = True) -> str:
    """A landed batch's manifest as a worker writes it (and its mark when published)."""
    run = run_name("cdrs", partition, first, last)
    runs = home / "lake" / "_runs"
    runs.mkdir(parents=True, exist_ok=True)
    stream = {"topic": "cdrs", "partition": partition, "first": first, "last": last}
    (runs / f"{run}.json").write_text(json.dumps({
        "run": run, "stream": stream, "catalog_version": 3, "rated": last - first,
        "rejected": {"duplicate": 1}, "files": [f"rated/date=2026-11-30/part-{run}-00001.parquet"],
    }))  # fmt: skip
    if published:
        published_mark(home, run).touch()
    return run


def spans(home: Path) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for run in committed_runs(home):
        s = run["stream"]
        out.setdefault(s["partition"], []).append((s["first"], s["last"]))
    return {p: sorted(v) for p, v in out.items()}


def test_published_batches_are_merged_into_one_manifest_a_stretch(tmp_path: Path) -> None:
    runs = [batch(tmp_path, 1, f, f + 99) for f in range(0, 500, 100)]
    unpublished = batch(tmp_path, 1, 500, 599, published=False)
    later = [batch(tmp_path, 1, 600, 699), batch(tmp_path, 1, 700, 799)]
    other = batch(tmp_path, 2, 0, 9)
    (tmp_path / "lake" / "_staging" / later[1]).mkdir(parents=True)  # still being published
    assert compact_runs(tmp_path, "cdrs", 1) == 5
    # Every offset still in exactly one manifest, and the partition resumes where it did.
    assert spans(tmp_path) == {1: [(0, 499), (500, 599), (600, 699), (700, 799)], 2: [(0, 9)]}
    assert lake_position(tmp_path, "cdrs", 1) == 800
    [merged] = [r for r in committed_runs(tmp_path) if r["run"] == run_name("cdrs", 1, 0, 499)]
    assert merged["files"] == []  # published: never read again, and it would grow for ever
    assert (merged["rated"], merged["rejected"], merged["batches"]) == (495, {"duplicate": 5}, 5)
    assert published_mark(tmp_path, merged["run"]).exists()
    names = {p.name for p in (tmp_path / "lake" / "_runs").iterdir()}
    assert not any(run in name for run in runs for name in names)  # manifests and marks gone
    assert f"{unpublished}.json" in names and f"{other}.published" in names
    assert compact_runs(tmp_path, "cdrs", 1) == 0  # nothing more to merge


def test_merging_again_takes_in_what_was_merged(tmp_path: Path) -> None:
    for f in range(0, 300, 100):
        batch(tmp_path, 1, f, f + 99)
    compact_runs(tmp_path, "cdrs", 1)
    for f in range(300, 500, 100):
        batch(tmp_path, 1, f, f + 99)
    assert compact_runs(tmp_path, "cdrs", 1) == 3
    [merged] = committed_runs(tmp_path)
    assert (merged["stream"]["first"], merged["stream"]["last"], merged["batches"]) == (0, 499, 5)


@pytest.mark.parametrize("step", ["mark", "manifest", "one part removed", "part manifests removed"])
def test_an_interrupted_merge_is_finished_by_the_next(tmp_path: Path, step: str) -> None:
    """The merge's steps in order: mark the merged run, write its manifest, remove each part
    (manifest, then mark). Cut after any step, the lake says the same and the next merge
    leaves the finished state."""
    parts = [batch(tmp_path, 1, f, f + 99) for f in range(0, 300, 100)]
    merged = run_name("cdrs", 1, 0, 299)
    runs = tmp_path / "lake" / "_runs"
    published_mark(tmp_path, merged).touch()
    if step != "mark":
        stream = {"topic": "cdrs", "partition": 1, "first": 0, "last": 299}
        manifest = {"run": merged, "stream": stream, "rated": 297, "batches": 3, "files": []}
        (runs / f"{merged}.json").write_text(json.dumps(manifest))
    if step == "one part removed":
        (runs / f"{parts[0]}.json").unlink()
    if step == "part manifests removed":
        for part in parts:
            (runs / f"{part}.json").unlink()
    assert lake_position(tmp_path, "cdrs", 1) == 300
    compact_runs(tmp_path, "cdrs", 1)
    assert spans(tmp_path) == {1: [(0, 299)]}
    assert sorted(p.name for p in runs.iterdir()) == [f"{merged}.json", f"{merged}.published"]


def test_a_worker_that_cannot_reach_kafka_says_so_without_a_traceback() -> None:
    """Nothing listens on port 1: the worker's first call to the cluster fails, named."""
    with pytest.raises(CdrflowError) as refused:
        ensure_outputs({"bootstrap.servers": "127.0.0.1:1"}, "cdrs", ("rated",), timeout=1.0)
    assert str(refused.value).startswith("cannot reach Kafka at 127.0.0.1:1 within 1 s (")


class FakeMessage:
    """A consumed message's accessors, for ``Worker._wanted`` alone (the real consumer's
    are exercised by tests/kafka)."""

    def __init__(self, partition: int, offset: int, error: object = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def error(self) -> object:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return f"{self._partition}/{self._offset}".encode()


class FakeError:
    def code(self) -> int:
        return -1

    def __str__(self) -> str:
        return "broker went away"


def test_a_poll_keeps_records_at_or_past_the_lake_position_and_drops_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = SimpleNamespace(next={0: 5, 7: 0}, totals=stream.StreamTotals())
    messages = [
        *(FakeMessage(0, o) for o in range(3, 8)),  # 3 and 4 are in the lake already
        FakeMessage(2, 0, FakeError()),
        *(FakeMessage(2, o) for o in range(2)),  # no position: every offset is new
        FakeMessage(7, 0),
    ]
    polled = stream.Worker._wanted(worker, messages)
    assert polled.values == [b"0/5", b"0/6", b"0/7", b"2/0", b"2/1", b"7/0"]
    assert polled.partitions.tolist() == [0, 0, 0, 2, 2, 7]
    assert polled.offsets.tolist() == [5, 6, 7, 0, 1, 0]
    assert worker.totals.skipped == 2
    assert "consumer: broker went away" in caplog.text
    empty = stream.Worker._wanted(worker, [])
    assert empty.values == [] and empty.partitions.size == 0


class RefusingProducer:
    """Takes what fits in ``limit`` bytes; a larger message is refused as librdkafka
    refuses one above ``message.max.bytes``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.sent = limit, []

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        if len(value) > self.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append((topic, json.loads(value), key))


def test_a_message_too_large_goes_out_shortened_if_a_rejection_else_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rejection = {"callid": "r", "reject_reason": "invalid", "raw": "x" * 100_000}
    producer = RefusingProducer(limit=80_000)
    # A worker with no consumer or home: the queue never fills here, so nothing waits.
    worker = stream.Worker.__new__(stream.Worker)

    def too_large(producer: RefusingProducer, topic: str, value: bytes, key: bytes) -> bool:
        return worker._too_large(producer, topic, value, key)  # type: ignore[arg-type]

    assert too_large(producer, "cdrs.rejected", json.dumps(rejection).encode(), b"r")
    [(_, sent, _)] = producer.sent
    assert sent == {**rejection, "raw": "x" * stream.PUBLISHED_RAW, "raw_truncated": True}
    # No raw text to cut (a rated CDR), or still too large once cut: logged, not a stop.
    assert too_large(producer, "cdrs.rated", json.dumps({"callid": "y" * 90_000}).encode(), b"y")
    tiny = RefusingProducer(limit=100)
    assert too_large(tiny, "cdrs.rejected", json.dumps(rejection).encode(), b"r")
    assert len(producer.sent) == 1 and tiny.sent == []
    assert caplog.text.count("is larger than Kafka takes; it is in the lake only") == 2


class FullFirst(RefusingProducer):
    """Its local queue is full at the first try of every message (Kafka away a moment)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.tries = 0

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.tries += 1
        if self.tries % 2:
            raise BufferError("Local: Queue full")
        super().produce(topic, value, key)

    def poll(self, timeout: float) -> int:
        return 0


def test_a_message_too_large_found_after_waiting_for_room_is_shortened_too() -> None:
    """The size is only judged once the queue has room: that later refusal takes the same
    way as a first one (it used to escape the wait and stop the worker)."""
    worker = stream.Worker.__new__(stream.Worker)
    worker.settings = SimpleNamespace(topic="cdrs")  # type: ignore[assignment]
    worker._stopping = lambda: False
    rejection = pa.table({"callid": ["r"], "reject_reason": ["invalid"], "raw": ["x" * 100_000]})
    producer = FullFirst(limit=80_000)
    landed = stream.Landed("run", {"kind": "stream"}, {"rejected": [rejection]})
    assert worker._send(producer, [landed])  # type: ignore[arg-type]
    [(topic, sent, key), (usage_topic, usage, usage_key)] = producer.sent
    assert (topic, key) == ("cdrs.rejected", b"r")
    assert sent == {"callid": "r", "reject_reason": "invalid",
                    "raw": "x" * stream.PUBLISHED_RAW, "raw_truncated": True}  # fmt: skip
    # Its usage message too: no customer, so keyed "", with the callid that frees a hold.
    assert (usage_topic, usage_key, usage["callids"]) == ("cdrs.usage", b"", ["r"])
