"""The test broker itself: it starts, answers, stops by its PID, and comes back after a clean
stop or a crash with its topics and messages (what the rater's crash tests rely on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from pipelines.kafka_broker import PID_FILE, Broker, stop_by_pid_file
from schemas.errors import CdrflowError
from tests.kafka.reader import consume

pytestmark = pytest.mark.integration


def gone(pid: int) -> bool:
    """No such process, or only its zombie (a PID 1 that does not reap keeps those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for the tests that stop, kill and restart it."""
    broker = Broker.start(tmp_path / "broker", die_with_parent=True)
    try:
        yield broker
    finally:
        broker.stop()


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=f'{{"n":{i}}}', key=f"customer-{i % 7}")
    assert producer.flush(30) == 0


def test_stop_ends_the_broker_process(tmp_path: Path) -> None:
    with Broker.start(tmp_path, die_with_parent=True) as broker:
        pid = broker.pid
        assert pid is not None and broker.running and not gone(pid)
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.topics() == set()
        assert broker.started_in is not None and broker.started_in > 0
        assert (tmp_path / "broker.log").stat().st_size > 0
    assert gone(pid) and not broker.running
    broker.stop()  # idempotent, as is kill
    broker.kill()


def test_restart_keeps_topics_and_data(own_broker: Broker) -> None:
    own_broker.create_topic("cdrs", partitions=4)
    produce(own_broker.bootstrap, "cdrs", 500)
    port, first_pid = own_broker.port, own_broker.pid

    own_broker.restart()
    assert own_broker.port == port and own_broker.pid != first_pid
    assert own_broker.topics() == {"cdrs"}
    assert len(consume(own_broker.bootstrap, "cdrs", 500)) == 500

    crashed = own_broker.pid
    assert crashed is not None
    own_broker.kill()
    assert gone(crashed)
    own_broker.restart()
    produce(own_broker.bootstrap, "cdrs", 100)
    received = consume(own_broker.bootstrap, "cdrs", 600)
    assert len(received) == 600
    assert {r.partition for r in received} <= {0, 1, 2, 3}


def test_create_topic_waits_for_leaders(kafka_broker: Broker) -> None:
    kafka_broker.create_topic("leaders-ready", partitions=3)
    metadata = kafka_broker.admin().list_topics("leaders-ready", timeout=120)
    partitions = metadata.topics["leaders-ready"].partitions
    assert len(partitions) == 3 and all(p.leader == 1 for p in partitions.values())
    with pytest.raises(CdrflowError, match="cannot create topic leaders-ready"):
        kafka_broker.create_topic("leaders-ready")


def test_a_broker_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CdrflowError, match="exited with status") as failed:
            Broker.start(tmp_path, port=port, die_with_parent=True)
    assert "broker.log" in str(failed.value)
    assert "Address already in use" in str(failed.value) or "bind" in str(failed.value).lower()


def test_command_line_start_and_stop(tmp_path: Path) -> None:
    """What docs/streaming.md runs: the broker outlives ``start``, ``stop`` ends it by PID."""
    command = [sys.executable, "-m", "pipelines.kafka_broker"]
    try:
        started = subprocess.run(
            [*command, "start", "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()
        assert bootstrap.startswith("127.0.0.1:")
        pid = int((tmp_path / PID_FILE).read_text())
        assert not gone(pid)
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=120)

        stopped = subprocess.run(
            [*command, "stop", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=600
        )
        assert stopped.returncode == 0, stopped.stderr
        assert gone(pid) and not (tmp_path / PID_FILE).exists()
        again = subprocess.run(
            [*command, "stop", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0 and "no broker of ours" in again.stderr
    finally:
        stop_by_pid_file(tmp_path)


def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    """A PID that now belongs to another process (here: this test's) is left alone."""
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")
    assert stop_by_pid_file(tmp_path) is False
    assert not (tmp_path / PID_FILE).exists()
