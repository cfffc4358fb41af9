"""A firing's way out: recorded in the lake, then published once, then delivered at least once.

The order, and why a crash at any point fires nothing twice (SPEC §9, §9.1):

1. ``alerts.evaluate`` finds a firing (alert id + crossing number, the firing's key).
2. It is recorded in the lake (``firings.Ledger.record``): on disk before anything else
   happens. A key already in the lake is not recorded again, and the lake's newest firing of
   each alert is the floor of its state (``evaluate``'s ``recorded``): a crash before the
   live app kept the alert's new state cannot make the same crossing fire again.
3. The alert's state is kept (the live app's changelog-backed table).
4. It is published to the ``alerts`` topic, and the partition and offset Kafka gave it are
   marked in the lake (``lake/alerts/_published/<key>.json``).
5. It is delivered (``deliver.Deliverer``), and the outcome is recorded
   (``lake/alert_deliveries/``).

At start, ``Outbox.recover`` finishes what a crash left: firings without a mark are looked
for in the ``alerts`` topic after the newest marked offsets (a crash between Kafka's ack and
the mark) and marked when found, published otherwise; firings without a recorded outcome are
delivered (again: at least once; the e-mail's Message-ID and the webhook's
``Idempotency-Key`` header are the firing's own, so a receiver can tell). Publishing and
delivering run beside the stream, never in its way: the stream only waits for the lake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipelines.kafka_config import client_config
from pipelines.live.alerts import Firing
from pipelines.live.deliver import Deliverer
from pipelines.live.firings import SEPARATOR, Ledger

log = logging.getLogger("cdrflow.live.alerts")
TOPIC = "alerts"
# Seconds between tries to publish while Kafka does not take a firing (it grows to the last).
PUBLISH_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
KAFKA_WAIT = 60.0  # seconds a call to the broker may take before it is tried again


class Publisher(Protocol):
    async def publish(self, firing: Firing) -> tuple[int, int]:
        """Send the firing's message; (partition, offset) once Kafka has it."""

    async def published(self, since: dict[int, int]) -> dict[str, tuple[int, int]]:
        """Keys of the firings in the topic after ``since`` (partition → offset)."""


class KafkaPublisher:
    """The ``alerts`` topic (created with one partition if absent): JSON values (the firing's
    message), keyed by alert id, ``acks=all`` and idempotence (a retried send is not written
    twice)."""

    def __init__(self, bootstrap: str, topic: str = TOPIC, config_file: Any = None) -> None:
        self.topic = topic
        self.config = client_config(bootstrap, config_file)
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Producer:
        with self._lock:
            if self._producer is None:
                admin = AdminClient(dict(self.config))
                topics = admin.list_topics(timeout=KAFKA_WAIT).topics
                if self.topic not in topics:
                    future = admin.create_topics([NewTopic(self.topic, 1)])[self.topic]
                    try:
                        future.result(KAFKA_WAIT)
                    except KafkaException as exc:  # another worker made it first
                        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise
                self._producer = Producer(
                    {**self.config, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
                )
            return self._producer

    async def publish(self, firing: Firing) -> tuple[int, int]:
        return await asyncio.to_thread(self._publish, firing)

    def _publish(self, firing: Firing) -> tuple[int, int]:
        producer = self._ensure()
        got: list[tuple[KafkaError | None, Message]] = []
        value = json.dumps(firing.message(), ensure_ascii=False).encode()
        producer.produce(
            self.topic,
            value,
            firing.alert_id.encode(),
            on_delivery=lambda error, message: got.append((error, message)),
        )
        deadline = time.monotonic() + KAFKA_WAIT
        while not got and time.monotonic() < deadline:
            producer.flush(1.0)
        if not got:
            raise TimeoutError(f"Kafka did not take the firing within {KAFKA_WAIT:.0f} s")
        error, message = got[0]
        if error is not None:
            raise KafkaException(error)
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        return partition, offset

    async def published(self, since: dict[int, int]) -> dict[str, tuple[int, int]]:
        return await asyncio.to_thread(self._published, since)

    def _published(self, since: dict[int, int]) -> dict[str, tuple[int, int]]:
        self._ensure()
        consumer = Consumer(
            {
                **self.config,
                "group.id": "cdrflow-live-alerts-check",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        found: dict[str, tuple[int, int]] = {}
        try:
            partitions = consumer.list_topics(self.topic, timeout=KAFKA_WAIT).topics[self.topic]
            wanted = []
            for p in partitions.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=KAFKA_WAIT
                )
                start = since.get(p, -1) + 1
                if max(start, low) < high:
                    wanted.append(
                        TopicPartition(self.topic, p, start if start > 0 else OFFSET_BEGINNING)
                    )
            consumer.assign(wanted)
            ends = {tp.partition for tp in wanted}
            while ends:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.discard(message.partition() or 0)
                        continue
                    raise KafkaException(error)
                try:
                    data = json.loads(message.value() or b"")
                    key = f"{data['alert_id']}{SEPARATOR}{int(data['crossing'])}"
                except (ValueError, KeyError, TypeError):
                    continue  # not a firing of cdrflow's
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                found[key] = (partition, offset)
        finally:
            consumer.close()
        return found

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(10.0)
                self._producer = None


class Outbox:
    """Publishes and delivers recorded firings, beside the stream (steps 4 and 5 above)."""

    def __init__(self, ledger: Ledger, publisher: Publisher, deliverer: Deliverer) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self.deliverer = deliverer
        self._queue: asyncio.Queue[Firing] = asyncio.Queue()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()  # keys queued, being published or delivered
        self.ready = asyncio.Event()  # set once recover() has run

    def send(self, firings: Iterable[Firing]) -> None:
        """Recorded firings to publish and deliver, in order (one already on its way is
        not taken twice)."""
        for firing in firings:
            if firing.key not in self._inflight:
                self._inflight.add(firing.key)
                self._queue.put_nowait(firing)

    async def recover(self) -> None:
        """What a crash left: unpublished firings (published unless the topic has them) and
        unsettled deliveries, oldest first."""
        unpublished, unsettled = await asyncio.to_thread(self.ledger.pending)
        if unpublished:
            since = self.ledger.positions()
            found = await _patiently(
                "look for firings in the alerts topic", self.publisher.published, since
            )
            for firing in unpublished:
                if firing.key in found:
                    await asyncio.to_thread(
                        self.ledger.mark_published, firing.key, *found[firing.key]
                    )
            log.info(
                "%d firings recorded before a stop were not marked published: %d found in the "
                "topic, %d to publish",
                len(unpublished),
                sum(f.key in found for f in unpublished),
                sum(f.key not in found for f in unpublished),
            )
        if unsettled:
            log.info("%d firings recorded before a stop are delivered now", len(unsettled))
        pending = {f.key: f for f in [*unpublished, *unsettled]}
        self.send(sorted(pending.values(), key=lambda f: (f.at, f.alert_id, f.crossing)))
        self.ready.set()

    async def run(self) -> None:
        """Recover, then publish and deliver what ``send`` gives, until cancelled."""
        await self.recover()
        while True:
            firing = await self._queue.get()
            try:
                await self._publish(firing)
            except Exception:  # the disk under the lake: finished at the next start
                log.exception("alert %s: cannot mark it published", firing.key)
                self._inflight.discard(firing.key)
            finally:
                self._queue.task_done()

    async def _publish(self, firing: Firing) -> None:
        if not self.ledger.is_published(firing.key):
            position = await _patiently(
                f"publish alert {firing.key}", self.publisher.publish, firing
            )
            await asyncio.to_thread(self.ledger.mark_published, firing.key, *position)
        if self.ledger.is_settled(firing.key):
            self._inflight.discard(firing.key)
            return
        task = asyncio.create_task(self._deliver(firing))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, firing: Firing) -> None:
        try:
            settled = await self.deliverer.deliver(firing)
            await asyncio.to_thread(self.ledger.settle, firing, settled)
        except OSError as exc:  # the lake's disk: delivered again at the next start
            log.error("alert %s: cannot record its delivery: %s", firing.key, exc)
        finally:
            self._inflight.discard(firing.key)

    async def idle(self) -> None:
        """Wait until everything sent so far is published and its delivery settled."""
        await self.ready.wait()
        await self._queue.join()
        while self._deliveries:
            await asyncio.wait(set(self._deliveries))

    async def close(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        for task in list(self._deliveries):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deliverer.close()


async def _patiently(what: str, call: Any, *args: Any) -> Any:
    """``call(*args)`` until it succeeds (Kafka away), waiting longer between tries."""
    attempt = 0
    while True:
        try:
            return await call(*args)
        except (KafkaException, TimeoutError, OSError) as exc:
            wait = PUBLISH_BACKOFF[min(attempt, len(PUBLISH_BACKOFF) - 1)]
            log.warning("cannot %s (%s); trying again in %.0f s", what, exc, wait)
            attempt += 1
            await asyncio.sleep(wait)
