"""``cdrflow simulate --kafka``: the switch simulator as a producer, against a real broker.

What reaches the topic is checked against the file the same arguments write: the same
records, one per message, keyed by customer_id else source_ip, each key's records in their
order in one partition, malformed ones as their raw text.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka.admin import NewTopic

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.kafka_broker import Broker
from pipelines.kafka_out import KafkaSink
from schemas.errors import CdrflowError
from tests.kafka.reader import consume
from tests.pipelines.cli.driver import Cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A home with the bundled sample catalog, imported once for the module."""
    home = tmp_path_factory.mktemp("kafka-home")
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
    return Cli(home)


def expected_key(line: str) -> str | None:
    """SPEC §8: customer_id, else source_ip; None for a line that is not JSON."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return str(record.get("customer_id") or record["source_ip"])


def test_simulate_sends_exactly_count(
    cli: Cli, kafka_broker: Broker, topic: str, tmp_path: Path
) -> None:
    shape = ["--count", "3000", "--seed", "4", "--malformed", "0.03", "--duplicates", "0.01"]
    sent = cli.ok("simulate", *shape, "--kafka", kafka_broker.bootstrap, "--topic", topic)
    said = " ".join(sent.stdout.split())
    assert "sent 3,000 CDRs" in said and f"to topic {topic} on {kafka_broker.bootstrap}" in said
    cli.ok("simulate", *shape, "--out", str(tmp_path / "same.jsonl"))
    lines = (tmp_path / "same.jsonl").read_text(encoding="utf-8").splitlines()

    received = consume(kafka_broker.bootstrap, topic, 3000)
    values = [r.value.decode() for r in received]
    assert len(received) == 3000
    assert collections.Counter(values) == collections.Counter(lines)

    broken = 0
    for message, value in zip(received, values, strict=True):
        assert message.key is not None
        key = expected_key(value)
        if key is None:
            broken += 1  # a truncated record, sent as the raw text the switch wrote
        else:
            assert message.key.decode() == key
    assert broken > 0
    assert broken == sum(1 for line in lines if expected_key(line) is None)

    # One key, one partition, in the order the switch wrote them; all partitions used.
    partitions: dict[bytes, set[int]] = collections.defaultdict(set)
    streams: dict[bytes, list[str]] = collections.defaultdict(list)
    for message, value in zip(received, values, strict=True):
        assert message.key is not None
        partitions[message.key].add(message.partition)
        streams[message.key].append(value)
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1
    written: dict[bytes, list[str]] = collections.defaultdict(list)
    key_of = {v: m.key for m, v in zip(received, values, strict=True)}
    for line in lines:
        line_key = key_of[line]
        assert line_key is not None
        written[line_key].append(line)
    assert streams == written


def test_rate_is_roughly_honoured(
    cli: Cli, kafka_broker: Broker, topic: str, tmp_path: Path
) -> None:
    """2,000 CDRs at 1,000/s cannot take less than about 2 s (the last batch is due at 1.95 s);
    the config file is applied on the way (zstd instead of lz4)."""
    settings = tmp_path / "kafka.properties"
    settings.write_text("# a comment\ncompression.type = zstd\nclient.id=simulator-test\n")
    began = time.monotonic()
    result = cli.ok(
        "simulate",
        *("--count", "2000", "--rate", "1000", "--kafka-config", str(settings)),
        *("--kafka", kafka_broker.bootstrap, "--topic", topic),
    )
    assert time.monotonic() - began >= 1.5
    assert "sent 2,000 CDRs" in " ".join(result.stdout.split())
    assert len(consume(kafka_broker.bootstrap, topic, 2000)) == 2000


def test_unlimited_rate_is_fast(cli: Cli, kafka_broker: Broker, topic: str) -> None:
    began = time.monotonic()
    cli.ok("simulate", "--count", "20000", "--kafka", kafka_broker.bootstrap, "--topic", topic)
    # Paced at anything under 70 a second, 20,000 would take more than 5 minutes; a busy
    # machine sends them unpaced in well under that.
    assert time.monotonic() - began < 300
    assert len(consume(kafka_broker.bootstrap, topic, 20_000)) == 20_000


def test_a_missing_topic_is_refused(cli: Cli, kafka_broker: Broker) -> None:
    message = cli.refused(
        "simulate", "--count", "10", "--kafka", kafka_broker.bootstrap, "--topic", "no-such"
    )
    assert "topic no-such does not exist" in message
    assert "no-such" not in kafka_broker.topics()  # asking did not create it


def test_kafka_or_file_not_both(cli: Cli, kafka_broker: Broker, tmp_path: Path) -> None:
    both = ["--out", str(tmp_path / "x.jsonl"), "--kafka", kafka_broker.bootstrap]
    assert "either --out FILE or --kafka" in cli.refused("simulate", "--count", "1", *both)
    assert "either --out FILE or --kafka" in cli.refused("simulate", "--count", "1")
    paced_file = ["--out", str(tmp_path / "x.jsonl"), "--rate", "10"]
    assert "go with --kafka" in cli.refused("simulate", "--count", "1", *paced_file)


def test_messages_the_broker_refuses_are_reported(kafka_broker: Broker, topic: str) -> None:
    """Delivery reports come only for failures: the refused ones are still counted."""
    small = f"{topic}-small"
    futures = kafka_broker.admin().create_topics(
        [NewTopic(small, num_partitions=1, replication_factor=1,
                  config={"max.message.bytes": "2000"})]
    )  # fmt: skip
    futures[small].result(30)
    config = {"bootstrap.servers": kafka_broker.bootstrap, "compression.type": "none"}
    lines = pa.array(["x" * 10 + "\n", "y" * 5000 + "\n", "z" * 10 + "\n", "w" * 6000 + "\n"])
    keys = pa.array(["a", "b", "c", "d"])
    sink = KafkaSink(config, topic)
    sink.write(lines, keys)
    assert sink.close() == 4
    sink = KafkaSink(config, small)
    sink.write(lines, keys)  # one batch, too large as a whole: all four are refused
    with pytest.raises(CdrflowError, match=r"4 of 4 messages to .* were not delivered.*too large"):
        sink.close()
