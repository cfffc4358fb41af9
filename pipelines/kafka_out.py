"""A Kafka topic as the switch simulator's output: one CDR per message, paced to a rate.

``KafkaSink`` is a ``pipelines.simulate.LineSink``: it gets the JSON lines a .jsonl file
would hold, a chunk at a time, and produces each line (without its newline) as one message
keyed by the record's customer_id, else its source_ip (SPEC §8), so that one customer's
calls stay in order in one partition. A malformed record goes out as the raw bytes the
simulator made, as a broken switch would send it: the rater must reject it, not the
producer.

The producer is configured for a stream that is billed: ``acks=all`` and idempotence (a
retried batch is never written twice, so a network blip adds no duplicate callids), lz4
compression (CDR JSON shrinks about 4x and lz4 costs little CPU), and batching (``linger.ms``,
``batch.size``) so that throughput comes from full batches rather than many requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipelines.kafka_config import LIBRDKAFKA_LOG
from schemas.errors import CdrflowError

# Defaults an operator's config file may change (e.g. compression.type=zstd).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 512 * 1024,
    "queue.buffering.max.messages": 200_000,
}
# What a billed stream needs whatever the config file says.
PRODUCER_REQUIRED: dict[str, Any] = {"acks": "all", "enable.idempotence": True}
# How often pacing lets a batch go at a given rate: 20 batches a second.
PACING_STEP = 0.05
UNPACED_BATCH = 10_000
CONNECT_TIMEOUT = 15.0


class KafkaSink:
    """Produces JSON lines to ``topic``, at most ``rate`` a second (0: as fast as it can).

    ``progress`` is called with the number of messages handed to the producer so far.
    ``close`` flushes, and returns how many the cluster acknowledged; it raises
    CdrflowError if any message was not delivered.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        rate: float = 0.0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if rate < 0:
            raise CdrflowError(f"the rate must be 0 (no limit) or more, not {rate}")
        self.topic = topic
        self.rate = rate
        self.progress = progress
        self.produced = 0
        self.failed = 0
        self.first_error: KafkaError | None = None
        self._fatal: KafkaError | None = None
        self._began: float | None = None
        self._bootstrap = str(config.get("bootstrap.servers", "?"))
        self._producer = Producer(
            {
                **PRODUCER_DEFAULTS,
                **config,
                **PRODUCER_REQUIRED,
                # Only failures are reported (as to the stream's producer): a Python call
                # for each delivered message cost about 0.6 µs of the producing thread's
                # 2-3 µs a message (300,000 messages of 400 bytes, interleaved runs).
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            }
        )
        self._check_topic()

    def write(self, lines: pa.Array, keys: pa.Array) -> None:
        """Produce one message per line, pausing between batches to keep to the rate."""
        values = pc.utf8_rtrim(lines, characters="\n").to_pylist()
        key_list = keys.to_pylist()
        step = max(1, round(self.rate * PACING_STEP)) if self.rate else UNPACED_BATCH
        if self._began is None:
            self._began = time.monotonic()
        for at in range(0, len(values), step):
            self._pace()
            for value, key in zip(values[at : at + step], key_list[at : at + step], strict=True):
                self._produce(value, key)
            self._producer.poll(0)
            if self.progress is not None:
                self.progress(self.produced)

    def close(self, timeout: float = 300.0) -> int:
        """Wait until every message is acknowledged (or failed); return the delivered count."""
        deadline = time.monotonic() + timeout
        while self._producer.flush(1.0) > 0:
            self._raise_if_fatal()
            if time.monotonic() > deadline:
                raise CdrflowError(
                    f"{len(self._producer):,} messages to {self.topic} on {self._bootstrap} "
                    f"were still unacknowledged after {timeout:.0f} s"
                )
        self._raise_if_fatal()
        if self.failed:
            raise CdrflowError(
                f"{self.failed:,} of {self.produced:,} messages to {self.topic} on "
                f"{self._bootstrap} were not delivered; the first error: {self.first_error}"
            )
        return self.produced - self.failed  # flushed: each one delivered or failed

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            # Failing already: hand over what is queued, briefly, and report the first error.
            self._producer.flush(5.0)

    # -- inside --------------------------------------------------------------------------------

    def _check_topic(self) -> None:
        """Fail at once, with what to do, when the cluster cannot be reached or the topic is
        missing (brokers that do not create topics on first use are the norm)."""
        try:
            # All topics, not this one: asking for one may create it where auto-creation is on.
            metadata = self._producer.list_topics(timeout=CONNECT_TIMEOUT)
        except KafkaException as exc:
            raise CdrflowError(
                f"cannot reach Kafka at {self._bootstrap} within {CONNECT_TIMEOUT:.0f} s "
                f"({exc.args[0]}); check --kafka and the security settings"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise CdrflowError(
                f"topic {self.topic} does not exist on {self._bootstrap}; create it first "
                f"(e.g. kafka-topics.sh --create --topic {self.topic} --partitions 4)"
            )

    def _pace(self) -> None:
        """Sleep until the messages produced so far are due at the rate, serving delivery
        reports meanwhile (a plain sleep would leave them queued)."""
        if not self.rate or self._began is None:
            return
        due = self._began + self.produced / self.rate
        while (left := due - time.monotonic()) > 0:
            self._producer.poll(min(left, 0.1))
        self._raise_if_fatal()

    def _produce(self, value: str, key: str | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key)
                break
            except BufferError:
                # The local queue is full: let the network thread catch up.
                self._producer.poll(0.05)
                self._raise_if_fatal()
        self.produced += 1

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:  # not reported (``delivery.report.only.error``)
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = error

    def _on_error(self, error: KafkaError) -> None:
        # Transient errors (a broker restarting) are retried by librdkafka; fatal ones end it.
        if error.fatal():
            self._fatal = error
        else:  # with librdkafka's own lines: the same failure is said once (kafka_config.Once)
            LIBRDKAFKA_LOG.warning("%s", error.str())

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise CdrflowError(
                f"the Kafka producer to {self._bootstrap} hit a fatal error: {self._fatal}"
            )
