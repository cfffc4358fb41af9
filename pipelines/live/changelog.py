"""Writes to a faust table whose changelog records go to Kafka a batch at a time.

faust sends one changelog message per table write, each through its producer buffer (a
``FutureMessage``, a ``PendingMessage``, a callback, a hop through its buffer's task). A
table written once per call allowed (the gate's holds, thousands a second) fell behind that
way under load: its changelog lagged by tens of seconds, a SIGKILL would have lost those
holds, and the waiting messages, hundreds of thousands, made each full collection of the
worker's memory stall it for a quarter of a second (docs/benchmarks.md).

``Writes`` puts each write in the table's own store at once and sends the records of every
write since its last send together: one batch per partition (aiokafka's ``send_batch``),
the keys and values made by the table's own codecs and placed as the producer's own
partitioner places them (Kafka's default one, computed for a batch of keys at once), so the
changelog holds the records faust would have written and faust recovers the table from it
as before. One send is in flight at a time and the next waits for its
delivery, so the records of one key reach the broker in the order written, and the lag is
one round trip to the broker. What is still waiting when the app stops is sent before the
producer is flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from pipelines.partitioner import partitions

log = logging.getLogger("cdrflow.live")


class Writes:
    """Batched writes to ``table`` (a faust table of ``app``)."""

    def __init__(self, app: Any, table: Any) -> None:
        self.app = app
        self.table = table
        self._pending: list[tuple[Any, Any]] = []  # (key, value; None deletes), in order
        self._running: asyncio.Task[None] | None = None
        app.on_before_shutdown.connect(self._on_shutdown)

    def set(self, key: Any, value: Any) -> None:
        """``table[key] = value``; its changelog record goes with the next batch."""
        self.table.data[key] = value
        self._write(key, value)

    def delete(self, key: Any) -> None:
        """``del table[key]`` when the table has it; a tombstone goes with the next batch."""
        data = self.table.data
        if key in data:
            del data[key]
            self._write(key, None)

    def _write(self, key: Any, value: Any) -> None:
        self._pending.append((key, value))
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._drain())

    async def flush(self) -> None:
        """Wait until every write so far is delivered (or its failure logged)."""
        while self._running is not None and not self._running.done():
            await asyncio.shield(self._running)

    async def _on_shutdown(self, app: Any, **_: Any) -> None:
        await self.flush()

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let the writes of the running batch of requests join
            writes, self._pending = self._pending, []
            try:
                await self._send(writes)
            except Exception as exc:  # the store is right; a restart would miss these
                log.error(
                    "%d changelog records of the %s table were not written: %s: %s",
                    len(writes),
                    self.table.name,
                    type(exc).__name__,
                    exc,
                )

    async def _send(self, writes: list[tuple[Any, Any]]) -> None:
        producer = self.app.producer._ensure_producer()  # aiokafka's, under faust's
        topic = self.table.changelog_topic
        name = topic.get_topic_name()
        await producer.partitions_for(name)  # the partitioner reads the topic's metadata
        records = []
        for key, value in writes:
            raw_key, _ = topic.prepare_key(key, self.table.key_serializer)
            raw_value = None
            if value is not None:
                raw_value, _ = topic.prepare_value(value, self.table.value_serializer)
            records.append((raw_key, raw_value))
        by_partition: defaultdict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for partition, record in zip(_partitions(producer, name, records), records, strict=True):
            by_partition[partition].append(record)
        delivered = []
        for partition, placed in by_partition.items():
            batch = producer.create_batch()
            for raw_key, raw_value in placed:
                if batch.append(key=raw_key, value=raw_value, timestamp=None) is None:
                    delivered.append(await producer.send_batch(batch, name, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=raw_key, value=raw_value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(raw_value or b'')} bytes is too large")
            delivered.append(await producer.send_batch(batch, name, partition=partition))
        await asyncio.gather(*delivered)


def _partitions(producer: Any, name: str, records: list[tuple[Any, Any]]) -> list[int]:
    """The partition the producer's partitioner gives each record: Kafka's default one
    computed for all the keys at once (``pipelines.partitioner``) when it is that one."""
    keys = [key for key, _ in records]
    if isinstance(producer._partitioner, DefaultPartitioner) and all(
        isinstance(key, bytes) for key in keys
    ):
        return partitions(keys, list(producer._metadata.partitions_for_topic(name)))
    return [producer._partition(name, None, None, None, key, value) for key, value in records]


__all__ = ["Writes"]
