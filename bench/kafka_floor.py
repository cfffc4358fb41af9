"""The streaming benchmark's floor: Kafka alone, with the least a client can do.

A producer sends the lines of a JSON Lines file, one message each, with the simulator's
producer settings (``pipelines.kafka_out``: lz4, ``linger.ms``, ``batch.size``, acks from
all replicas, idempotence) and keys that cycle over 97 values; a consumer in a group reads
them in polls of up to 100,000 messages, takes each message's bytes and commits after each
poll, as a worker does, and nothing else: no parsing, no rating, no lake, no output topics.
On one machine the broker and both clients share the cores exactly as in the streaming runs,
so the CDRs/s of this pair is the most any worker could reach there.

Each side is a process of its own, started by ``bench.stream``::

    python -m bench.kafka_floor produce BOOTSTRAP TOPIC FILE COUNT
    python -m bench.kafka_floor consume BOOTSTRAP TOPIC COUNT

The producer prints one JSON line when every message is acknowledged: its CPU seconds
(all its threads, librdkafka's included). The consumer prints one when it has read
``COUNT`` messages: their count and bytes, the time (``time.time()``) after its last commit,
and its CPU seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, Producer

from pipelines.kafka_out import PRODUCER_DEFAULTS, PRODUCER_REQUIRED

KEYS = 97
POLL_MESSAGES = 100_000
USAGE = """usage: python -m bench.kafka_floor produce BOOTSTRAP TOPIC FILE COUNT
       python -m bench.kafka_floor consume BOOTSTRAP TOPIC COUNT"""
IDLE_SECONDS = 60.0  # the consumer gives up when no message came for this long


def produce(bootstrap: str, topic: str, path: Path, count: int) -> None:
    """The first ``count`` lines of ``path`` to ``topic``, a message each, all acknowledged."""
    with path.open() as f:
        values = [line.rstrip("\n") for line, _ in zip(f, range(count), strict=False)]
    keys = [str(i % KEYS) for i in range(KEYS)]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **PRODUCER_DEFAULTS,
            **PRODUCER_REQUIRED,
            "delivery.report.only.error": True,
        }
    )
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, key=keys[i % KEYS])
                break
            except BufferError:  # the local queue is full: let the network thread catch up
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300) > 0:
        raise SystemExit(f"{len(producer):,} messages to {topic} were not acknowledged")
    print(json.dumps({"cpu": time.process_time()}), flush=True)


def consume(bootstrap: str, topic: str, count: int) -> dict[str, float]:
    """Read ``count`` messages of ``topic`` in a group, committing after each poll."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    messages = size = 0
    last = time.monotonic()
    try:
        while messages < count:
            polled = consumer.consume(POLL_MESSAGES, 0.5)
            if polled:
                last = time.monotonic()
            elif time.monotonic() - last > IDLE_SECONDS:
                raise SystemExit(
                    f"{topic}: {messages:,} of {count:,} messages, none for {IDLE_SECONDS:.0f} s"
                )
            for message in polled:
                if message.error() is not None:
                    raise SystemExit(f"consuming {topic}: {message.error()}")
            values = [message.value() or b"" for message in polled]
            messages += len(values)
            size += sum(map(len, values))
            if polled:
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return {"messages": messages, "bytes": size, "done": time.time(), "cpu": time.process_time()}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 5 and args[0] == "produce":
        produce(args[1], args[2], Path(args[3]), int(args[4]))
        return 0
    if len(args) == 4 and args[0] == "consume":
        print(json.dumps(consume(args[1], args[2], int(args[3]))), flush=True)
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
