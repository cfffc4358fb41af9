"""The streaming benchmark's floor moves every line through the broker, once, and says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from bench.kafka_floor import main
from bench.stream import run_floor
from pipelines.kafka_broker import Broker

LINES = 3_000


def _lines(tmp_path: Path) -> Path:
    path = tmp_path / "cdrs.jsonl"
    path.write_text("".join(json.dumps({"callid": f"c{i}", "n": i}) + "\n" for i in range(LINES)))
    return path


def _values(broker: Broker, topic: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "check"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        values = []
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high == 0:
                continue
            consumer.assign([TopicPartition(topic, p, 0)])
            got = 0
            while got < high:
                for m in consumer.consume(10_000, 5.0):
                    assert m.error() is None
                    values.append(m.value())
                    got += 1
        return values
    finally:
        consumer.close()


def test_the_floor_sends_and_reads_every_line_once(
    kafka_broker: Broker, topic: str, tmp_path: Path
) -> None:
    path = _lines(tmp_path)
    r = run_floor(kafka_broker, topic, path, LINES - 1)  # all but the last line
    assert r["rate"] > 0 and r["seconds"] > 0
    assert r["simulator_cpu"] > 0 and r["worker_cpu"] > 0
    sent = sorted(_values(kafka_broker, topic))
    assert sent == sorted(line.encode() for line in path.read_text().splitlines()[:-1])


def test_the_consumer_gives_up_saying_how_many_came(
    kafka_broker: Broker, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bench.kafka_floor.IDLE_SECONDS", 2.0)
    with pytest.raises(SystemExit, match=f"{topic}: 0 of 10 messages, none for 2 s"):
        main(["consume", kafka_broker.bootstrap, topic, "10"])


def test_a_wrong_command_prints_the_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.kafka_floor", "produce"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "python -m bench.kafka_floor consume" in done.stderr
