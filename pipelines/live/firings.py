"""The record of a home's alert firings (SPEC §2 ``lake/alerts/``, §9): the lake is the truth.

A firing is one Parquet file of one row (``schemas.alerts.FIRED``) named by its key,
``lake/alerts/date=YYYY-MM-DD/<alert_id>~<crossing>.parquet`` (the UTC date of ``at``),
written to a hidden temporary file, flushed to disk, then linked to its name: it appears
whole or not at all, and recording a firing whose key is already there (under any date)
changes nothing. When its delivery is settled (delivered, or failed after its last try), one
file of one row (``schemas.alerts.DELIVERED``) of the same name lands in
``lake/alert_deliveries/date=…/`` (the firing's date). That a firing reached the ``alerts``
topic is marked by ``lake/alerts/_published/<key>.json`` with the partition and offset it
got: internal bookkeeping that Parquet readers skip (a name starting with ``_``).

So a firing in the lake that has no mark, or no settled delivery, is work left over by a
crash (an outbox): ``Ledger.pending`` lists it and ``pipelines.live.outbox`` finishes it.
Alerts fire rarely (a crossing, not a call), so the ledger lists its files once at start
and keeps the names in memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.home import writing
from pipelines.live.alerts import Alert, Firing, State, iso, text
from schemas.alerts import DELIVERED, FIRED

log = logging.getLogger("cdrflow.live.alerts")
SEPARATOR = "~"


def fired_root(home: Path) -> Path:
    return home / "lake" / "alerts"


def deliveries_root(home: Path) -> Path:
    return home / "lake" / "alert_deliveries"


def published_root(home: Path) -> Path:
    return fired_root(home) / "_published"


@dataclass(frozen=True)
class Settled:
    """How a firing's delivery ended."""

    channel: str  # email | webhook
    status: str  # delivered | failed
    tries: int
    error: str | None
    settled_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "status": self.status,
            "tries": self.tries,
            "error": self.error,
            "settled_at": iso(self.settled_at),
        }


def split_key(key: str) -> tuple[str, int]:
    alert_id, _, crossing = key.rpartition(SEPARATOR)
    return alert_id, int(crossing)


class Ledger:
    """The firings recorded in one home, their publication marks and settled deliveries.

    Thread-safe: the live app writes from worker threads (``asyncio.to_thread``), so that
    the event loop never waits for a disk.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._lock = threading.Lock()
        self._fired: dict[str, Path] = {}
        self._newest: dict[str, int] = {}  # alert_id → its highest recorded crossing
        self._published: dict[str, tuple[int, int]] = {}  # key → (partition, offset)
        self._settled: set[str] = set()
        # Records read or written by this process (they never change once written).
        self._firings: dict[str, Firing] = {}
        self._outcomes: dict[str, Settled] = {}
        self._scan()

    def _scan(self) -> None:
        for path in fired_root(self.home).glob("date=*/*.parquet"):
            self._add(path.stem, path)
        for path in published_root(self.home).glob("*.json"):
            try:
                mark = json.loads(path.read_text())
                self._published[path.stem] = (int(mark["partition"]), int(mark["offset"]))
            except (ValueError, KeyError, TypeError):
                log.warning("%s: not a publication mark; the firing is checked again", path)
        self._settled = {p.stem for p in deliveries_root(self.home).glob("date=*/*.parquet")}

    def _add(self, key: str, path: Path) -> None:
        alert_id, crossing = split_key(key)
        self._fired[key] = path
        if crossing > self._newest.get(alert_id, 0):
            self._newest[alert_id] = crossing

    # -- reading ---------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._fired

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._fired)

    def read(self, key: str) -> Firing:
        with self._lock:
            path = self._fired[key]
            cached = self._firings.get(key)
        if cached is None:
            cached = _firing(pq.read_table(path, schema=FIRED).to_pylist()[0])
            with self._lock:
                self._firings[key] = cached
        return cached

    def outcome(self, firing: Firing) -> Settled | None:
        """How the firing's delivery ended; None while it is not settled."""
        with self._lock:
            if firing.key not in self._settled:
                return None
            cached = self._outcomes.get(firing.key)
        if cached is None:
            path = deliveries_root(self.home) / _day(firing) / f"{firing.key}.parquet"
            row = pq.read_table(path, schema=DELIVERED).to_pylist()[0]
            cached = Settled(
                row["channel"], row["status"], row["tries"], row["error"], row["settled_at"]
            )
            with self._lock:
                self._outcomes[firing.key] = cached
        return cached

    def latest(self, limit: int) -> list[tuple[Firing, Settled | None]]:
        """The newest ``limit`` firings, newest first, each with its delivery's outcome.
        Files are ordered by their date, then by when they were written (reading every
        firing to sort by time would grow with the lake)."""

        def order(path: Path) -> tuple[str, float]:
            try:
                return path.parent.name, path.stat().st_mtime
            except OSError:
                return path.parent.name, 0.0

        with self._lock:
            paths = dict(self._fired)
        newest = sorted(paths, key=lambda k: order(paths[k]), reverse=True)[: max(limit, 0)]
        out = []
        for key in newest:
            firing = self._readable(key)
            if firing is not None:
                try:
                    outcome = self.outcome(firing)
                except (OSError, ValueError, KeyError, pa.ArrowException):
                    outcome = None
                out.append((firing, outcome))
        return sorted(out, key=lambda pair: pair[0].at, reverse=True)

    def recorded(self) -> dict[str, State]:
        """Per alert, the state its newest recorded firing implies: fired (not armed), at
        that crossing, with that firing's definition (``alerts.evaluate``'s ``recorded``)."""
        with self._lock:
            newest = dict(self._newest)
        out = {}
        for alert_id, crossing in newest.items():
            firing = self._readable(f"{alert_id}{SEPARATOR}{crossing}")
            definition = "" if firing is None else firing.definition  # "": armed if seen
            out[alert_id] = State(armed=False, crossings=crossing, definition=definition)
        return out

    def _readable(self, key: str) -> Firing | None:
        """The firing, or None (logged) when its file cannot be read: damage from outside
        (a file is written whole or not at all) must not stop the alerts of the others."""
        try:
            return self.read(key)
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            log.error("alert firing %s: its lake file cannot be read: %s", key, exc)
            return None

    def is_published(self, key: str) -> bool:
        with self._lock:
            return key in self._published

    def is_settled(self, key: str) -> bool:
        with self._lock:
            return key in self._settled

    def positions(self) -> dict[int, int]:
        """Per partition of the ``alerts`` topic, the highest offset a mark names."""
        out: dict[int, int] = {}
        with self._lock:
            for partition, offset in self._published.values():
                out[partition] = max(offset, out.get(partition, -1))
        return out

    def pending(self) -> tuple[list[Firing], list[Firing]]:
        """The recorded firings not marked published, and those whose delivery is not
        settled, oldest first."""
        with self._lock:
            unpublished = [k for k in self._fired if k not in self._published]
            unsettled = [k for k in self._fired if k not in self._settled]
        readable = (self._readable(k) for k in set(unpublished) | set(unsettled))
        order = _by_time(f for f in readable if f is not None)
        return (
            [f for f in order if f.key in unpublished],
            [f for f in order if f.key in unsettled],
        )

    # -- writing ---------------------------------------------------------------------------

    def record(self, firings: Iterable[Firing]) -> list[Firing]:
        """Each firing's file, on disk when this returns; returns the firings that were not
        recorded before (a key already in the lake is left as it is)."""
        new = []
        for firing in firings:
            if firing.key in self:
                continue
            path = fired_root(self.home) / _day(firing)
            table = pa.Table.from_pylist([_row(firing)], schema=FIRED)
            if _write_once(table, path / f"{firing.key}.parquet"):
                new.append(firing)
                with self._lock:
                    self._firings[firing.key] = firing
            with self._lock:
                self._add(firing.key, path / f"{firing.key}.parquet")
        return new

    def mark_published(self, key: str, partition: int, offset: int) -> None:
        root = published_root(self.home)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{key}.{os.getpid()}.tmp"
        with writing(tmp):
            tmp.write_text(json.dumps({"partition": partition, "offset": offset}))
        os.replace(tmp, root / f"{key}.json")
        with self._lock:
            self._published[key] = (partition, offset)

    def settle(self, firing: Firing, settled: Settled) -> None:
        """The firing's delivery outcome, once (a second call for one key is a no-op)."""
        path = deliveries_root(self.home) / _day(firing)
        row = {
            "alert_id": firing.alert_id,
            "crossing": firing.crossing,
            "recipient": firing.recipient,
            "channel": settled.channel,
            "status": settled.status,
            "tries": settled.tries,
            "error": settled.error,
            "fired_at": firing.at,
            "settled_at": settled.settled_at,
        }
        table = pa.Table.from_pylist([row], schema=DELIVERED)
        written = _write_once(table, path / f"{firing.key}.parquet")
        with self._lock:
            self._settled.add(firing.key)
            if written:
                self._outcomes[firing.key] = settled


def _day(firing: Firing) -> str:
    """The hive partition of a firing: the UTC date of its time."""
    return f"date={firing.at.astimezone(UTC).date()}"


def _row(firing: Firing) -> dict[str, Any]:
    return {
        "alert_id": firing.alert_id,
        "crossing": firing.crossing,
        "customer_id": firing.customer_id,
        "name": firing.name,
        "area": firing.area,
        "operator": firing.operator,
        "threshold": text(firing.threshold),
        "value": text(firing.value),
        "fired_at": firing.at.astimezone(UTC),
        "recipient": firing.recipient,
    }


def _firing(row: dict[str, Any]) -> Firing:
    alert = Alert.of(row)
    return Firing(
        alert_id=alert.alert_id,
        crossing=int(row["crossing"]),
        customer_id=alert.customer_id,
        name=alert.name,
        area=alert.area,
        operator=alert.operator,
        threshold=alert.threshold,
        value=Decimal(row["value"]),
        at=row["fired_at"].astimezone(UTC),
        recipient=alert.recipient,
    )


def _by_time(firings: Iterable[Firing]) -> list[Firing]:
    return sorted(firings, key=lambda f: (f.at, f.alert_id, f.crossing))


def _write_once(table: pa.Table, path: Path) -> bool:
    """``table`` as the Parquet file ``path``, whole and on disk, unless ``path`` exists.
    Returns whether this call made it. A hard link never replaces a file, so two writers
    of one key leave the first one's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with writing(tmp):
            pq.write_table(table, tmp, compression="zstd")
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the name, not only the bytes, survives a power cut
    finally:
        os.close(fd)
    return True
