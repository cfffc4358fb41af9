"""A real Kafka broker for the session and a fresh topic per test (CONVENTIONS 8: a real
broker on a free port on 127.0.0.1, stopped whatever happens).

The broker is stopped by its own PID three ways, so that no JVM outlives the run: the
fixture's teardown, an ``atexit`` hook (a session ended by an error outside the fixtures),
and Linux's parent-death signal (a test run that is itself killed).
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from pipelines.kafka_broker import Broker
from tests.kafka.reader import unique_name


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker.start(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    atexit.register(broker.stop)
    try:
        yield broker
    finally:
        broker.stop()
        atexit.unregister(broker.stop)


@pytest.fixture
def topic(kafka_broker: Broker, request: pytest.FixtureRequest) -> str:
    """A new topic of 4 partitions named after the test, so tests never see each other's
    messages and a failure names the topic to look at."""
    name = unique_name(request.node.name)
    kafka_broker.create_topic(name, partitions=4)
    return name
