"""``pipelines.kafka_topics.ensure_outputs`` on the real broker: the topics beside an input
topic, made with its partitions when absent, their own counts kept when present."""

from __future__ import annotations

import pytest

from pipelines.kafka_broker import Broker
from pipelines.kafka_topics import ensure_outputs
from schemas.errors import CdrflowError
from tests.kafka.reader import unique_name

pytestmark = pytest.mark.integration


def test_outputs_are_made_with_the_input_topics_partitions(kafka_broker: Broker) -> None:
    config = {"bootstrap.servers": kafka_broker.bootstrap}
    topic = unique_name("input")
    kafka_broker.create_topic(topic, partitions=3)
    kafka_broker.create_topic(f"{topic}.usage", partitions=2)  # made before, its own count
    made = ensure_outputs(config, topic, ("rated", "usage"))
    assert made == {"rated": 3, "usage": 2}
    topics = kafka_broker.admin().list_topics(timeout=30).topics
    assert len(topics[f"{topic}.rated"].partitions) == 3
    assert ensure_outputs(config, topic, ("rated", "usage")) == made  # once made, as they are


def test_a_missing_input_topic_is_named_with_the_hint(kafka_broker: Broker) -> None:
    config = {"bootstrap.servers": kafka_broker.bootstrap}
    topic = unique_name("absent")
    with pytest.raises(CdrflowError) as missing:
        ensure_outputs(config, topic, ("usage",), hint="--topic names it")
    assert str(missing.value) == (
        f"Kafka topic {topic!r} does not exist on {kafka_broker.bootstrap} (--topic names it)"
    )
    kafka_broker.create_topic(f"{topic}.usage", partitions=4)
    assert ensure_outputs(config, topic, ("usage",)) == {"usage": 4}  # no input needed
