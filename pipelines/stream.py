"""``cdrflow stream``: switch CDRs from Kafka, rated into the lake exactly once (SPEC §5.5, §8).

The lake is the truth, as in Kafka Connect's HDFS and S3 sinks. The messages of one
partition that one poll brings are one batch; the batch is rated with the engine of the
batch path and committed to the lake like a ``cdrflow rate`` run (staging, then a manifest
as the commit point, under the lake lock), its run named after the topic, the partition and
the offset range, so that every lake file of it carries them too. Only when all the
poll's batches are in the lake are they published to ``<topic>.rated``,
``<topic>.rejected`` and ``<topic>.usage`` (SPEC §9.1, ``pipelines.usage``; one flush)
and their offsets committed to Kafka. When a
worker is given partitions (at start, and at every rebalance), it finishes or undoes what a
crashed batch left, reads each partition's position from the manifests, and seeks there:
Kafka's committed offsets are a hint, the lake decides. Package usage and the billed callids
are read from the lake at the same moment, and packages are drawn in arrival order. Before
each batch, under the lake lock, a worker adds what the home's other writers (other workers,
``cdrflow rate`` runs) committed since its last batch, from the commit log
(``pipelines.commitlog``): a callid is billed once whoever saw it first.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipelines import commitlog, usage
from pipelines.catalog import Catalog
from pipelines.cdrfile import Block, read_messages
from pipelines.compiled import cached_tables
from pipelines.dedupe import BilledCallids
from pipelines.json_rows import json_rows
from pipelines.kafka_config import client_config
from pipelines.kafka_topics import ensure_outputs, output_topic
from pipelines.lakefiles import Staging, lake_lock, lake_root, recover, write_manifest
from pipelines.rate import Summary, load_tables, package_usage, rate_block
from rating.engine import Usage, utc_days
from rating.tables import Tables
from schemas.errors import CdrflowError

log = logging.getLogger("cdrflow.stream")
# Seconds between looks at the catalog's state (an edit reaches the next batch after it).
CATALOG_CHECK = 5.0
# Seconds between the worker's log lines while Kafka does not take a batch's output.
PUBLISH_WAIT = 30.0
# Characters of a rejection's raw text published when all of it does not fit one message.
PUBLISHED_RAW = 65_536
# Seconds between compactions of the assigned partitions' manifests (also at assignment).
COMPACT_EVERY = 600.0


@dataclass
class StreamSettings:
    bootstrap: str
    topic: str = "cdrs"
    group: str = "cdrflow-raters"
    batch: int = 50_000  # most messages rated as one batch
    wait: float = 1.0  # seconds a poll waits to fill a batch
    config_file: Path | None = None
    publish: bool = True
    metrics_every: float = 10.0


@dataclass
class Polled:
    """The records of one poll: each message's value, partition and offset."""

    values: list[bytes | None]
    partitions: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]


@dataclass
class StreamTotals:
    """What a worker did, for the operator and for tests."""

    batches: int = 0
    rated: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # messages below the lake's position (already rated): not rated again

    @property
    def records(self) -> int:
        return self.rated + sum(self.rejected.values())


def run_name(topic: str, partition: int, first: int, last: int) -> str:
    """The run (and file name part) of one partition's batch: topic, partition, offsets.
    Zero-padded, so that a partition's runs sort in offset order by name."""
    return f"{_partition_prefix(topic, partition)}{first:020d}-{last:020d}"


def _partition_prefix(topic: str, partition: int) -> str:
    return f"stream-{topic}-p{partition:05d}-o"


_OFFSETS = re.compile(r"(\d{20})-(\d{20})")


def published_mark(home: Path, run: str) -> Path:
    """The file that says a landed batch reached the output topics."""
    return lake_root(home) / "_runs" / f"{run}.published"


def partition_runs(home: Path, topic: str, partition: int) -> list[tuple[str, int, int]]:
    """The committed batches of one partition, (run, first, last) in offset order, from the
    manifests' names alone (a stream writes one a batch: reading them all would grow)."""
    prefix = _partition_prefix(topic, partition)
    out = []
    for path in sorted((lake_root(home) / "_runs").glob(f"{glob.escape(prefix)}*.json")):
        run = path.name.removesuffix(".json")
        found = _OFFSETS.fullmatch(run[len(prefix) :])
        if found:
            out.append((run, int(found[1]), int(found[2])))
    return out


def compact_runs(home: Path, topic: str, partition: int) -> int:
    """Merge each stretch of a partition's consecutive batches that are landed and published
    (marked, no staging left) into one manifest over their offsets and counts, so that
    ``_runs/`` keeps a few files a partition instead of two a batch. Call it under the lake
    lock. An interruption at any point is harmless: the merged manifest is marked published
    before it appears and the batches it replaces are removed after it, and a batch that
    another run's offsets cover (left by an interrupted merge) is removed at the next call.
    Returns the number of batch manifests removed."""
    root = lake_root(home)
    runs_dir = root / "_runs"
    prefix = _partition_prefix(topic, partition)
    for mark in runs_dir.glob(f"{glob.escape(prefix)}*.published"):
        if not mark.with_suffix(".json").exists():  # its run was merged away
            mark.unlink()
    removed = 0
    live: list[tuple[str, int, int]] = []
    for run in sorted(partition_runs(home, topic, partition), key=lambda r: (r[1], -r[2])):
        if live and run[2] <= live[-1][2]:  # inside a merged run: a merge was interrupted
            _remove_run(home, run[0])
            removed += 1
        else:
            live.append(run)

    def done(run: str) -> bool:
        return published_mark(home, run).exists() and not (root / "_staging" / run).exists()

    stretch: list[tuple[str, int, int]] = []
    for entry in [*live, None]:  # None: the end, which closes the last stretch
        if entry is not None and done(entry[0]):
            stretch.append(entry)
            continue
        if len(stretch) > 1:
            parts = [json.loads((runs_dir / f"{name}.json").read_text()) for name, _, _ in stretch]
            name = run_name(topic, partition, stretch[0][1], stretch[-1][2])
            rejected: Counter[str] = Counter()
            for part in parts:
                rejected.update(part.get("rejected", {}))
            merged = {
                "run": name,
                "stream": {**parts[0]["stream"], "last": stretch[-1][2]},
                "catalog_version": parts[-1].get("catalog_version"),
                "rated": sum(part.get("rated", 0) for part in parts),
                "rejected": dict(rejected),
                "batches": sum(part.get("batches", 1) for part in parts),
                # Not the batches' files: a published run's files are never read through its
                # manifest again (the lake's file names carry topic, partition and offsets),
                # and a list of them would grow with the stream's history.
                "files": [],
            }
            published_mark(home, name).touch()
            write_manifest(root, merged)
            for old, _, _ in stretch:
                _remove_run(home, old)
            removed += len(stretch)
        stretch = []
    return removed


def _remove_run(home: Path, run: str) -> None:
    (lake_root(home) / "_runs" / f"{run}.json").unlink()
    published_mark(home, run).unlink(missing_ok=True)


def lake_position(home: Path, topic: str, partition: int) -> int | None:
    """The next offset of a partition to rate, by the lake (None: none rated yet)."""
    runs = partition_runs(home, topic, partition)
    return runs[-1][2] + 1 if runs else None


class _Collecting(Staging):
    """A staging that also keeps what it was given, for publishing after the commit."""

    def __init__(self, home: Path, run_id: str, author: str) -> None:
        super().__init__(home, run_id, author=author)
        self.tables: dict[str, list[pa.Table]] = defaultdict(list)

    def add(self, kind: str, table: pa.Table, days: pa.Array) -> None:
        if table.num_rows:
            self.tables[kind].append(table)
        super().add(kind, table, days)


@dataclass
class Landed:
    """A batch committed to the lake, to publish: its run's name, its source (the topic,
    partition and offsets) and what it staged, by kind."""

    name: str
    source: dict[str, Any]
    tables: dict[str, list[pa.Table]]


class Worker:
    """One rater of a consumer group."""

    def __init__(self, home: Path, settings: StreamSettings) -> None:
        self.home = home
        self.settings = settings
        config = client_config(settings.bootstrap, settings.config_file)
        self.consumer = Consumer(
            {
                **config,
                "group.id": settings.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                # Rating and landing a batch may take a while on a busy machine.
                "max.poll.interval.ms": 600_000,
                # A worker that died (SIGKILL, a lost host) gives its partitions up after
                # 10 s, not the default 45 s.
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self.producer = None
        self._failed: Counter[str] = Counter()  # undelivered messages of a publish, by error
        self._stopping: Callable[[], bool] = lambda: False
        if settings.publish:
            ensure_outputs(config, settings.topic, ("rated", "rejected", "usage"))
            self.producer = Producer(
                {
                    **config,
                    "linger.ms": 50,
                    "compression.type": "lz4",
                    "acks": "all",
                    # Retries after a broker's hiccup keep each partition's order (and add no
                    # copies): a customer's usage messages are read in batch order.
                    "enable.idempotence": True,
                    # CRC32 of the key, as by default, but an empty key (a usage message of
                    # no customer) to one partition too, not a random one.
                    "partitioner": "consistent",
                    "on_delivery": self._delivered,
                    "delivery.report.only.error": True,
                }
            )
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.tables: Tables | None = None
        self.state: str | None = None
        self.billed = BilledCallids(home)
        self.usage = Usage()
        # This worker in the commit log, the last entry it has taken in, and the catalog
        # version its usage is keyed by (a new version numbers allotments anew).
        self.author = f"stream-{uuid.uuid4().hex}"
        self.cursor = 0
        self.usage_version: int | None = None
        self.next: dict[int, int] = {}  # partition → next offset to rate (from the lake)
        self.totals = StreamTotals()
        self._latency: list[float] = []
        self._done_since = 0
        self._last_report = time.monotonic()
        self._checked = 0.0
        self._compacted = time.monotonic()

    # -- partitions ---------------------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Recover the lake, then start each partition where the lake says."""
        self._catalog()
        with lake_lock(self.home):
            for line in recover(self.home):
                log.info("recovered: %s", line)
            positions = {
                tp.partition: lake_position(self.home, self.settings.topic, tp.partition)
                for tp in partitions
            }
            self._load()
        self._publish_unpublished({tp.partition for tp in partitions})
        self._compact({tp.partition for tp in partitions})
        for tp in partitions:
            position = positions[tp.partition]
            if position is not None:
                tp.offset = position
                self.next[tp.partition] = position
        log.info(
            "assigned partitions %s at %s",
            [tp.partition for tp in partitions],
            {tp.partition: tp.offset for tp in partitions},
        )
        consumer.assign(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Each batch is committed before the next poll: nothing is in flight here.
        for tp in partitions:
            self.next.pop(tp.partition, None)
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    def _load(self) -> None:
        """Usage and billed callids, from the lake as it is (under the lake lock)."""
        assert self.tables is not None
        self.usage = package_usage(self.con, self.home, self.tables)
        self.usage_version = self.tables.version
        self.billed = BilledCallids(self.home)
        self.cursor = commitlog.head(lake_root(self.home)).seq

    def _catch_up(self) -> None:
        """Add to usage and billed callids what the other writers of the home committed
        since this worker last looked (under the lake lock, before a batch is rated); read
        them from the lake again when the log no longer goes back that far, the catalog's
        version changed, or a run replaced files (a re-rate: draws and callids it removed
        are not to be subtracted one by one). A crashed writer's committed run is put in
        place first."""
        for line in recover(self.home):
            log.info("recovered: %s", line)
        assert self.tables is not None
        root = lake_root(self.home)
        entries = commitlog.since(root, self.cursor)
        if (
            entries is None
            or self.usage_version != self.tables.version
            or any(entry.replaces for entry in entries)
        ):
            self._load()
            return
        # A file that is not there belongs to a run that failed before its commit point.
        files = [
            path
            for entry in entries
            if entry.author != self.author
            for name in entry.rated
            if (path := root / name).is_file()
        ]
        if files:
            self.billed.add_files(files)
            self.usage = package_usage(self.con, self.home, self.tables, files, self.usage)
        if entries:
            self.cursor = entries[-1].seq

    def _catalog(self) -> None:
        """The compiled catalog, again if an operator changed it since (checked every few
        seconds: the next batch is rated with the catalog as it is then)."""
        with Catalog(self.home) as catalog:
            state = catalog.state()
            if self.tables is None or state is None or state != self.state:
                self.tables = cached_tables(self.home, load_tables, catalog)
                if self.state is not None and state != self.state:
                    log.info("the catalog changed: now rating with version %d", catalog.version())
                self.state = state
        self._checked = time.monotonic()

    # -- the loop -----------------------------------------------------------------------

    def run(self, stopping: Callable[[], bool], idle_exit: float | None = None) -> StreamTotals:
        """Consume until ``stopping()`` (checked between batches) or, with ``idle_exit``,
        until no message came for that many seconds while holding partitions (waiting to be
        given some does not count); then leave the group cleanly."""
        self.consumer.subscribe(
            [self.settings.topic], on_assign=self._assigned, on_revoke=self._revoked
        )
        self._stopping = stopping
        idle_since = time.monotonic()
        try:
            while not stopping():
                messages = self.consumer.consume(self.settings.batch, self.settings.wait)
                polled = time.monotonic()
                good = self._wanted(messages)
                if good.values and polled - self._checked >= CATALOG_CHECK:
                    self._catalog()
                if good.values:
                    self._rate(good)
                    self._latency.append(time.monotonic() - polled)
                    # Idle means no message came: the time spent rating one does not count.
                    idle_since = time.monotonic()
                elif not self.consumer.assignment():
                    idle_since = polled
                elif idle_exit is not None and polled - idle_since >= idle_exit:
                    log.info("no message for %.0f s: leaving the group", idle_exit)
                    break
                if polled - self._compacted >= COMPACT_EVERY:
                    self._compact({tp.partition for tp in self.consumer.assignment()})
                self._report()
        finally:
            closing = time.monotonic()
            self.consumer.close()
            log.info("left the group in %.1f s", time.monotonic() - closing)
            if self.producer is not None:
                # Whatever is still queued belongs to a batch not marked published, which
                # the next assignment publishes again: no reason to wait for Kafka here.
                self.producer.purge()
                self.producer.flush(1)
            self.con.close()
        return self.totals

    def _wanted(self, messages: list[Message]) -> Polled:
        """The messages that are records (not errors) at or past the lake's position of
        their partition (below it: rated before, not again). A poll brings tens of
        thousands: one list comprehension per accessor and numpy for the positions cost a
        third of a loop over the messages."""
        if any([m.error() is not None for m in messages]):
            for m in messages:
                error = m.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
            messages = [m for m in messages if m.error() is None]
        partitions = np.array([m.partition() for m in messages], np.int64)
        offsets = np.array([m.offset() for m in messages], np.int64)
        values = [m.value() for m in messages]
        if partitions.size:
            floor = np.full(int(partitions.max()) + 1, -1, np.int64)
            for partition, position in self.next.items():
                if partition < floor.size:
                    floor[partition] = position
            keep = offsets >= floor[partitions]
            if not keep.all():
                self.totals.skipped += int(keep.size - np.count_nonzero(keep))
                values = [values[i] for i in np.flatnonzero(keep).tolist()]
                partitions, offsets = partitions[keep], offsets[keep]
        return Polled(values, partitions, offsets)

    def _rate(self, polled: Polled) -> None:
        """One poll's messages, read as one block; then each partition's batch rated and
        landed; then all published, and their offsets committed."""
        topic = self.settings.topic
        partitions, offsets = polled.partitions, polled.offsets
        blocks = read_messages(
            self.con, polled.values, partitions, offsets, lambda p: f"kafka:{topic}/{p}"
        )
        landed = []
        for partition, block in sorted(blocks.items()):
            mine = offsets[partitions == partition]
            landed.append(self._land(partition, int(mine.min()), int(mine.max()), block))
        self._publish(landed)
        try:
            self.consumer.commit(
                offsets=[TopicPartition(topic, p, self.next[p]) for p in sorted(blocks)],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Kafka's offsets are a hint (the lake holds the positions, read at every
            # assignment): a commit refused while the cluster recovers (a coordinator not
            # yet known after a broker restart) is made good by the next batch's.
            log.warning("offsets not committed to Kafka (%s); the lake holds them", exc)
        self._done_since += len(polled.values)

    def _land(self, partition: int, first: int, last: int, block: Block) -> Landed:
        """Rate one partition's batch and commit it to the lake: what to publish of it."""
        topic = self.settings.topic
        assert self.tables is not None
        name = run_name(topic, partition, first, last)
        summary = Summary(name)
        now = int(datetime.now(UTC).timestamp() * 1_000_000)
        if self.billed.outgrown(utc_days(block.valid["dt"])):
            log.info(
                "billed callids: the CDRs' days have moved three windows past the table's "
                "first, so it is read again from the lake for their window (%d callids "
                "dropped)",
                self.billed.count,
            )
            self.billed = BilledCallids(self.home)
        with lake_lock(self.home):
            self._catch_up()
            staging = _Collecting(self.home, name, self.author)
            try:
                rate_block(
                    self.con,
                    self.tables,
                    block,
                    staging,
                    self.billed,
                    self.usage,
                    now,
                    summary,
                    None,
                )
                staging.commit(
                    {
                        "stream": {
                            "topic": topic,
                            "partition": partition,
                            "first": first,
                            "last": last,
                        },
                        "catalog_version": self.tables.version,
                        "rated": summary.rated,
                        "rejected": dict(summary.rejected),
                    }
                )
            except BaseException:
                staging.abort()
                raise
            self.cursor = staging.seq
        self.next[partition] = last + 1
        self.totals.batches += 1
        self.totals.rated += summary.rated
        for reason, n in summary.rejected.items():
            self.totals.rejected[reason] = self.totals.rejected.get(reason, 0) + n
        source = {"kind": "stream", "topic": topic, "partition": partition}
        return Landed(name, {**source, "first": first, "last": last}, staging.tables)

    def _publish(self, batches: list[Landed]) -> None:
        """Rated and rejected CDRs of landed batches as JSON objects to the output topics,
        keyed by callid, and each batch's usage messages (``pipelines.usage``) to
        ``<topic>.usage``, keyed by customer; once Kafka has them all, each batch is marked
        published. A crash in between publishes them again at the next assignment: the
        topics get every CDR and every usage message at least once (a usage reader counts a
        batch once by its source). Without publishing (``--no-publish``) the
        mark says the topics are owed nothing.

        While Kafka is away the worker waits for it (logging every ``PUBLISH_WAIT`` seconds),
        as librdkafka retries until a message's ``message.timeout.ms`` (5 minutes unless the
        config file says otherwise). A message Kafka refused or that timed out leaves its
        batches unmarked and stops the worker with the reason: the lake has them, and the
        next assignment publishes them again. So does a stop asked for while waiting."""
        producer = self.producer
        if producer is not None:
            names = ", ".join(batch.name for batch in batches)
            self._failed.clear()
            if not (self._send(producer, batches) and self._flushed(producer, names)):
                log.warning(
                    "stopping with %s not known to be published: published again at the "
                    "next assignment",
                    names,
                )
                return
            if self._failed:
                errors = "; ".join(f"{n} × {e}" for e, n in self._failed.most_common())
                raise CdrflowError(
                    f"Kafka did not take the output of {names} ({errors}); the batches are in "
                    "the lake and are published again at the next assignment"
                )
        for batch in batches:
            published_mark(self.home, batch.name).touch()

    def _send(self, producer: Producer, batches: list[Landed]) -> bool:
        """Hand every message of the batches to the producer; False if a stop was asked for
        while its queue was full (Kafka away: it drains when Kafka is back)."""
        for batch in batches:
            for kind, parts in batch.tables.items():
                target = output_topic(self.settings.topic, kind)
                for table in parts:
                    if not self._send_all(producer, target, *_json_rows(table)):
                        return False
            messages = usage.batch_messages(
                batch.name,
                batch.source,
                batch.tables.get("rated", []),
                batch.tables.get("rejected", []),
            )
            keys = [key for key, _ in messages]
            values = [value for _, value in messages]
            usage_topic = output_topic(self.settings.topic, "usage")
            if not self._send_all(producer, usage_topic, keys, values):
                return False
        return True

    def _send_all(
        self, producer: Producer, target: str, keys: list[bytes], values: list[bytes]
    ) -> bool:
        for key, value in zip(keys, values, strict=True):
            try:
                sent = self._produce(producer, target, value, key)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                sent = self._too_large(producer, target, value, key)
            if not sent:
                return False
        producer.poll(0)
        return True

    def _produce(self, producer: Producer, topic: str, value: bytes, key: bytes) -> bool:
        """Hand one message to the producer, waiting for room when its local queue is full
        (Kafka away: it drains when Kafka is back); False if a stop was asked for first. A
        message larger than Kafka takes raises, from the first try or a later one."""
        try:
            producer.produce(topic, value, key)
            return True
        except BufferError:
            return self._when_room(producer, topic, value, key)

    def _too_large(self, producer: Producer, topic: str, value: bytes, key: bytes) -> bool:
        """A message larger than Kafka takes. A rejection is sent with the start of its raw
        text (``shortened``; the lake keeps all of it); anything still too large is logged
        and left to the lake: a message Kafka can never take must not stop the stream.
        False if a stop was asked for while waiting for room in the queue."""
        record = json.loads(value)
        if "raw" in record:
            try:
                return self._produce(producer, topic, shortened(record), key)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
        log.error(
            "%s: a %d-byte message (callid %r) is larger than Kafka takes; it is in the lake only",
            topic,
            len(value),
            key[:80].decode("utf-8", "replace"),
        )
        return True

    def _when_room(self, producer: Producer, topic: str, value: bytes, key: bytes) -> bool:
        """Produce once the local queue has room; False if a stop was asked for first."""
        while not self._stopping():
            producer.poll(1.0)
            try:
                producer.produce(topic, value, key)
                return True
            except BufferError:
                continue
        return False

    def _flushed(self, producer: Producer, names: str) -> bool:
        """Wait until Kafka took or refused every message (logging while it is away); False
        if a stop was asked for first."""
        started = logged = time.monotonic()
        while producer.flush(1.0):
            if self._stopping():
                return False
            if time.monotonic() - logged >= PUBLISH_WAIT:
                logged = time.monotonic()
                log.warning(
                    "Kafka has not taken the output of %s after %.0f s: waiting",
                    names,
                    logged - started,
                )
        return True

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's report of a message it could not deliver (only failures come)."""
        if error is not None:
            self._failed[f"{message.topic()}: {error.str()}"] += 1

    def _compact(self, partitions: set[int]) -> None:
        """Merge these partitions' landed and published batch manifests (``compact_runs``)."""
        with lake_lock(self.home):
            removed = sum(compact_runs(self.home, self.settings.topic, p) for p in partitions)
        self._compacted = time.monotonic()
        if removed:
            log.info("merged %d batch manifests of partitions %s", removed, sorted(partitions))

    def _publish_unpublished(self, partitions: set[int]) -> None:
        """Landed batches of these partitions whose publishing a crash cut short."""
        if self.producer is None:
            return
        runs = lake_root(self.home) / "_runs"
        for partition in sorted(partitions):
            for name, _, _ in partition_runs(self.home, self.settings.topic, partition):
                if published_mark(self.home, name).exists():
                    continue
                run = json.loads((runs / f"{name}.json").read_text())
                tables: dict[str, list[pa.Table]] = defaultdict(list)
                replaced = 0
                for file in run["files"]:
                    kind = file.split("/", 1)[0]
                    path = lake_root(self.home) / file
                    if not path.is_file():  # a re-rate replaced it since: its rows changed
                        replaced += 1
                        continue
                    tables[kind].append(pq.read_table(path))
                log.info("publishing %s again (landed, not known to be published)", name)
                if replaced:
                    log.warning(
                        "%s: %d of its files were replaced by a re-rate since it landed; "
                        "their CDRs are not published again",
                        name,
                        replaced,
                    )
                source = {"kind": "stream", **run["stream"]}
                self._publish([Landed(name, source, tables)])

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < self.settings.metrics_every:
            return
        rate = self._done_since / (now - self._last_report)
        lag = 0
        for tp in self.consumer.assignment():
            low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            # A partition with nothing in the lake yet starts at its first offset.
            lag += max(0, high - self.next.get(tp.partition, low))
        latency = max(self._latency) if self._latency else 0.0
        log.info(
            "%.0f CDRs/s, lag %d, partitions %s, slowest batch %.2f s, %d rated, %d rejected",
            rate,
            lag,
            sorted(tp.partition for tp in self.consumer.assignment()) or "none",
            latency,
            self.totals.rated,
            sum(self.totals.rejected.values()),
        )
        self._last_report, self._done_since, self._latency = now, 0, []


# What a rated CDR on ``<topic>.rated`` carries: who, what, when and the money (the lake has
# every column; a live-balance or alerting reader needs these). A rejection carries all of
# its columns (the raw text and the reason are the point).
PUBLISHED_RATED = (
    "callid",
    "dt",
    "customer_id",
    "provider_id",
    "card_id",
    "dest_number",
    "number",
    "dest_code",
    "dest_name",
    "sip_code",
    "duration",
    "pdd_ms",
    "billed_duration",
    "package_seconds",
    "charge",
    "tax",
    "currency",
    "provider_charge",
    "provider_currency",
    "profit",
    "source",
    "line",
)


def _json_rows(table: pa.Table) -> tuple[list[bytes], list[bytes]]:
    """The callid and the JSON object of each row (money as exact decimal text, times
    ISO 8601): the keys and values of its messages."""
    if "reject_reason" not in table.column_names:
        table = table.select(list(PUBLISHED_RATED))
    keys = pc.fill_null(table["callid"], "").cast(pa.binary()).to_pylist()
    return keys, json_rows(table)


def shortened(record: dict[str, Any], keep: int = PUBLISHED_RAW) -> bytes:
    """A rejection's JSON with its ``raw`` cut to its first ``keep`` characters and
    ``raw_truncated`` set."""
    record = {**record, "raw": (record.get("raw") or "")[:keep], "raw_truncated": True}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
