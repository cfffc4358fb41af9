"""Reading a topic back in tests: every message from the start, with its key and partition."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer


def unique_name(hint: str) -> str:
    """A topic or group name: the hint in Kafka's alphabet, then random hex."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '-', hint)[:80]}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Received:
    key: bytes | None
    value: bytes
    partition: int


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 300.0) -> list[Received]:
    """Every message of ``topic`` from the start: reads until ``expected`` have come, then one
    second more, so that a producer that sent too many is caught too. ``timeout`` only
    bounds a hang (fewer messages than expected): minutes, for a busy machine."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("test-reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[Received] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        enough_at: float | None = None
        while time.monotonic() < deadline:
            if enough_at is None and len(received) >= expected:
                enough_at = time.monotonic()
            if enough_at is not None and time.monotonic() > enough_at + 1.0:
                break
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None:
                    raise AssertionError(f"consuming {topic}: {message.error()}")
                value, partition = message.value(), message.partition()
                assert value is not None and partition is not None
                received.append(Received(message.key(), value, partition))
    finally:
        consumer.close()
    return received
