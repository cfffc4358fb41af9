"""The live app (SPEC §9, §9.1): one faust-streaming worker that keeps each customer's balance,
available credit and ASR/ACD/PDD, in changelog-backed tables a restarted worker recovers.

It consumes ``<topic>.usage`` (one message per customer per batch the raters committed,
``pipelines.usage``) in batches of at most a second, counting each batch once
(``pipelines.live.state``), and follows the lake's commit log for the runs the stream does not
carry (``cdrflow rate``; a re-rate or recalc reads the lake's usage again). The first start
seeds the tables from the lake (``pipelines.live.seed``). Payments and fees come from the
catalog as it is, read again when it changes and when the UTC date does.

After each batch and each second, the customers whose values changed are handed to the
``after_batch`` hooks (alerts); ``on_callids`` hooks hear every counted message's callids
(channel holds); ``values_extra`` hooks add values of their own (channels, CPS). Other
modules register there from their ``install(live)``, which ``build`` calls.

One worker per cluster (per ``app_id``): the seed, the lake follower and the 1-second ticks
are the whole app's, and the tables' keys (customers) are not partitioned as the usage topic
is, so a second worker of the same app would split them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from billing.money import ZERO, text
from pipelines import clock, commitlog
from pipelines.compiled import stored_state
from pipelines.kafka_config import client_config
from pipelines.kafka_topics import ensure_outputs, output_topic
from pipelines.lakefiles import lake_root
from pipelines.live import alerting, gate
from pipelines.live.seed import Books, LakeSeed, Rows, read_catalog, read_lake
from pipelines.live.state import (
    CustomerState,
    Record,
    Seed,
    copied,
    count,
    customer_state,
    draws_until,
    new_record,
    newest_minute,
    window_floor,
)
from pipelines.usage import UsageMessage, is_stream_entry, messages_of_entry, parse
from rating.engine import Usage, usage_from
from rating.tables import Tables
from schemas.errors import CdrflowError

log = logging.getLogger("cdrflow.live")

# Most usage messages counted as one batch; a batch waits at most TAKE_WITHIN seconds.
TAKE_MAX = 10_000
TAKE_WITHIN = 1.0
RETRY = 5.0  # seconds before a batch that could not be counted is tried again
METRICS_EVERY = 10.0  # seconds between the metrics lines
TICK = 1.0  # seconds between the lake follower's looks, the catalog's, and the hooks' calls
# Allocations between two young collections (CPython's default: 700).
GC_YOUNG = 50_000
# Keys of the progress table.
SEED, CURSOR, NEWEST = "seed", "lake_cursor", "newest_minute"

Values = dict[str, Decimal | int]
AfterBatch = Callable[[dict[str, Values]], Awaitable[None]]


@dataclass(frozen=True)
class LiveSettings:
    home: Path
    bootstrap: str
    topic: str = "cdrs"
    host: str = "127.0.0.1"
    web_port: int = 6066
    max_seconds_cap: int = 10_800
    app_id: str = "cdrflow-live"
    config_file: Path | None = None  # SMTP and webhook settings (pipelines.live.deliver)
    alerts_topic: str = "alerts"  # where alert firings are published (SPEC §8)


def topic_partitions(settings: LiveSettings) -> int:
    """The usage topic's partition count (the tables' must equal it); the topic is created
    like the input topic when no rater has made it yet."""
    config = client_config(settings.bootstrap, None)
    hint = "the raters' input topic; --topic names it"
    return ensure_outputs(config, settings.topic, ("usage",), hint=hint)["usage"]


def parse_message(value: bytes | None) -> UsageMessage | None:
    """One usage message, or None (logged, one line) when it is not one."""
    try:
        return parse(value or b"")
    except ValueError as exc:
        shown = (value or b"")[:120].decode("utf-8", "replace")
        log.warning("skipped a message of the usage topic (%s): %r", exc, shown)
        return None


class Live:
    """The live app: its faust app, tables, agent, timer and views, and the hooks other
    modules register into (see the module's docstring)."""

    def __init__(self, app: faust.App, settings: LiveSettings, partitions: int) -> None:
        self.app = app
        self.settings = settings
        self.partitions = partitions
        self.on_callids: list[Callable[[list[str]], None]] = []
        self.after_batch: list[AfterBatch] = []
        self.values_extra: list[Callable[[str], dict[str, Any]]] = []
        self.customers = self.table("customers")
        self.progress = self.table("progress")
        self.books: Books | None = None
        self._today: date | None = None
        self._fees: dict[str, Decimal] = {}
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._sent: dict[str, Values] = {}  # the values last handed to after_batch
        self._usage_cache: dict[str, Usage] = {}
        self.totals: Counter[str] = Counter()  # what was counted since the last metrics line
        self._reported = 0.0  # the first metrics line covers the time since recovery
        self._frozen = False  # gc.freeze() done, once the tables are recovered
        self.topic = app.topic(
            output_topic(settings.topic, "usage"), key_serializer="raw", value_serializer="raw"
        )
        app.agent(self.topic, name="usage")(self._consume)
        app.timer(TICK, name="tick")(self._tick)
        self._views()

    # -- what other modules use ---------------------------------------------------------

    def table(self, name: str, default: Callable[[], Any] | None = None) -> Any:
        """A changelog-backed table of this app (JSON values), partitioned as the usage
        topic and writable from timers and views as well as from the agent."""
        app: Any = self.app
        table = KeyedTable(
            app,
            name=name,
            default=default,
            beacon=app.tables.beacon,
            partitions=self.partitions,
            use_partitioner=True,
        )
        return app.tables.add(table)

    def engine(self) -> tuple[Tables, Rows]:
        """The compiled rate tables and the catalog's rows, of its current version."""
        books = self._books()
        return books.tables, books.rows

    def now(self) -> datetime:
        return clock.now()

    def customer(self, customer_id: str) -> CustomerState | None:
        """A catalog customer's live state; None for one the catalog does not have."""
        books = self._books()
        row = books.customers.get(customer_id)
        if row is None:
            return None
        record = self.customers.get(customer_id)
        return customer_state(
            row,
            record,
            books.paid.get(customer_id, ZERO),
            self._fees_of(books).get(customer_id, ZERO),
            window_floor(self.progress.get(NEWEST)),
        )

    def package_seconds_left(self, customer_id: str, at: datetime) -> Usage:
        """The package seconds a customer has drawn (the lake's draws at the seed, then the
        stream's and the lake follower's), keyed as the engine's ``Usage`` is for the
        current rate tables: what ``rating.engine.draw`` takes to give what is left."""
        cached = self._usage_cache.get(customer_id)
        if cached is None:
            tables = self._books().tables
            draws = draws_until(self.customers.get(customer_id), at.date())
            cached = usage_from(tables, [(customer_id, *d) for d in draws])
            self._usage_cache[customer_id] = cached
        return cached

    def values(self, customer_id: str) -> Values:
        """The areas alerts watch (SPEC §9.1): balance, asr (%), acd (s), pdd (ms),
        channels, cps; an area with no call in the window to give it is left out."""
        state = self.customer(customer_id)
        if state is None:
            return {}
        out: Values = {"balance": state.balance, "channels": 0, "cps": 0}
        for area in ("asr", "acd", "pdd"):
            value = getattr(state, area)
            if value is not None:
                out[area] = value
        for extra in self.values_extra:
            for key, value in extra(customer_id).items():
                if key in ("channels", "cps"):
                    out[key] = value
        return out

    def customer_json(self, customer_id: str) -> dict[str, Any] | None:
        """``GET /customers/{id}``: the state, money as strings, and the extra values."""
        state = self.customer(customer_id)
        if state is None:
            return None
        out: dict[str, Any] = {
            "customer_id": state.customer_id,
            "name": state.name,
            "status": state.status,
            "currency": state.currency,
        }
        for name in ("payments", "usage", "fees", "balance", "debit_limit", "available"):
            out[name] = text(getattr(state, name))
        out["channels"] = 0
        out["cps"] = 0
        for area in ("asr", "acd", "pdd"):
            value = getattr(state, area)
            out[area] = None if value is None else str(value)
        out["attempts"] = state.attempts
        out["answered"] = state.answered
        for extra in self.values_extra:
            for key, value in extra(customer_id).items():
                out[key] = str(value) if isinstance(value, Decimal) else value
        return out

    # -- the catalog ----------------------------------------------------------------------

    def _books(self) -> Books:
        if self.books is None:
            self.books = read_catalog(self.settings.home)
        return self.books

    def _fees_of(self, books: Books) -> dict[str, Decimal]:
        today = self.now().date()
        if today != self._today:
            self._fees = books.fees(today)
            self._today = today
        return self._fees

    async def _catalog(self) -> None:
        """The catalog again if it changed (checked every tick: a payment added through the
        CLI reaches the balances within about a second)."""
        state = stored_state(self.settings.home)
        if self.books is not None and state is not None and state == self.books.state:
            return
        if self.books is not None and state is None and time.monotonic() - self._checked < 5:
            return
        self._checked = time.monotonic()
        books = await asyncio.to_thread(read_catalog, self.settings.home)
        if self.books is not None and books.state != self.books.state:
            log.info("the catalog changed: now at version %d", books.version)
        self.books = books
        self._today = None  # the fees again, from the new schedules
        self._usage_cache.clear()

    # -- counting -------------------------------------------------------------------------

    def _seed(self) -> Seed | None:
        data = self.progress.get(SEED)
        return None if data is None else Seed.of(data)

    async def _ensure_seeded(self) -> None:
        if self._seed() is None:
            await self._reseed("first start: the tables are empty")

    async def _reseed(self, why: str) -> None:
        """Every customer's usage and draws from the lake, and the positions they cover."""
        started = time.monotonic()
        lake: LakeSeed = await asyncio.to_thread(
            read_lake, self.settings.home, self.settings.topic, self.partitions
        )
        keys = set(lake.usage) | set(lake.draws) | set(self.customers.keys())
        newest = self.progress.get(NEWEST)
        floor = window_floor(newest)
        for customer_id in sorted(keys):
            old = self.customers.get(customer_id)
            record = new_record(
                lake.seed, lake.usage.get(customer_id, ZERO), lake.draws.get(customer_id)
            )
            if old is not None:
                record["minutes"] = {
                    k: v for k, v in old["minutes"].items() if floor is None or k >= floor
                }
            self.customers[customer_id] = record
        self.progress[SEED] = lake.seed.json()
        self.progress[CURSOR] = lake.seed.head
        self._usage_cache.clear()
        log.info(
            "%s: seeded %d customers from the lake (commit log at %d, stream positions %s) "
            "in %.1f s",
            why,
            len(keys),
            lake.seed.head,
            lake.seed.positions or "none",
            time.monotonic() - started,
        )

    def _count(self, messages: list[UsageMessage]) -> set[str]:
        """Count each message whose batch is new for its customer; the customers changed."""
        seed = self._seed()
        assert seed is not None
        newest = newest_minute(messages, self.progress.get(NEWEST))
        if newest is not None and newest != self.progress.get(NEWEST):
            self.progress[NEWEST] = newest
        floor = window_floor(newest)
        records: dict[str, Record] = {}
        changed: set[str] = set()
        for message in messages:
            customer_id = message.customer_id
            if customer_id:
                record = records.get(customer_id)
                if record is None:
                    stored = self.customers.get(customer_id)
                    record = new_record(seed) if stored is None else copied(stored)
                    records[customer_id] = record
                counted = count(record, message, floor)
                if counted:
                    changed.add(customer_id)
                    self.totals["counted"] += 1
                else:
                    self.totals["skipped"] += 1
            callids = list(message.callids)
            if callids:
                for hook in self.on_callids:
                    try:
                        hook(callids)
                    except Exception as exc:  # a hook's bug must not stop the counting
                        log.warning("on_callids hook %r failed: %s", hook, exc)
        for customer_id in changed:
            self.customers[customer_id] = records[customer_id]
            self._usage_cache.pop(customer_id, None)
        return changed

    async def _consume(self, stream: Any) -> None:
        async for values in stream.take(TAKE_MAX, within=TAKE_WITHIN):
            messages = [m for v in values if (m := parse_message(v)) is not None]
            tries = 0
            while True:  # a batch is counted, or the worker stops: it is never skipped
                try:
                    async with self._lock:
                        await self._prepare()
                        self._count(messages)
                    break
                except Exception as exc:  # the lake or the catalog unreadable for a while
                    tries += 1
                    log.warning(
                        "a batch of %d usage messages not counted yet (try %d): %s; "
                        "trying again in %.0f s",
                        len(messages),
                        tries,
                        one_line(exc),
                        RETRY,
                    )
                    await asyncio.sleep(RETRY)
            async with self._lock:
                await self._report()

    async def _prepare(self) -> None:
        await self._catalog()
        await self._ensure_seeded()
        await self._follow()

    async def _follow(self) -> None:
        """Count the lake's runs committed since the cursor that the stream does not carry
        (``cdrflow rate``); read the lake again at a run that rewrote rows (a re-rate or a
        recalc) or when the commit log no longer reaches back to the cursor."""
        cursor = self.progress.get(CURSOR)
        if cursor is None:
            return
        pending = await asyncio.to_thread(
            lake_runs, self.settings.home, self.settings.topic, int(cursor)
        )
        if pending is None:
            await self._reseed("the commit log does not reach back to the live cursor")
            return
        for entry, messages in pending:
            if messages is None:
                await self._reseed(f"commit {entry.seq} ({entry.run}) rewrote lake rows")
                return
            if messages:
                self._count(messages)
            self.progress[CURSOR] = entry.seq
            if messages:
                self.totals["lake runs"] += 1

    async def _tick(self) -> None:
        if not self.ready():
            return
        if not self._frozen:
            # What the start made (modules, compiled kernels, the catalog, the recovered
            # tables) lives as long as the worker: out of the collector's sight, a full
            # collection no longer stalls the views for a few hundred ms.
            gc.freeze()
            # Fewer, larger young collections and a full one only after many of them: each
            # request makes objects by the dozen, thousands a second, and each full collection
            # scans everything tracked while the views wait (CPython's default, 700/10/10,
            # made one every few seconds). The holds, the routing cache's answers and the
            # holds' table values are untracked tuples and flat dicts (pipelines.live.gate,
            # rating.authorize), so the oldest generation stays small.
            gc.set_threshold(GC_YOUNG, 20, 100)
            self._frozen = True
        self._metrics()
        async with self._lock:
            try:
                await self._prepare()
                await self._report()
            except Exception as exc:  # one line, and the next tick tries again
                log.warning("live tick: %s", one_line(exc))

    def _metrics(self) -> None:
        """A line every ``METRICS_EVERY`` seconds in which something was counted."""
        now = time.monotonic()
        if not self._reported:
            self._reported = now
        if now - self._reported < METRICS_EVERY:
            return
        if self.totals:
            log.info(
                "in %.0f s: %d usage messages counted, %d already counted (skipped), "
                "%d lake runs followed",
                now - self._reported,
                self.totals["counted"],
                self.totals["skipped"],
                self.totals["lake runs"],
            )
        self.totals.clear()
        self._reported = now

    def ready(self) -> bool:
        """Whether the tables are recovered and no rebalance is under way: timers and
        views run from the worker's start, and should do nothing before."""
        app: Any = self.app
        return bool(
            app.tables.recovery.completed.is_set() and not app.in_recovery and not app.rebalancing
        )

    async def _report(self) -> None:
        """The values that changed since they were last handed to the hooks, handed now."""
        if self.books is None:
            return
        changed: dict[str, Values] = {}
        for customer_id in self.books.customers:
            values = self.values(customer_id)
            if values != self._sent.get(customer_id):
                changed[customer_id] = values
        if not changed:
            return
        self._sent.update(changed)
        for hook in self.after_batch:
            try:
                await hook(changed)
            except Exception as exc:  # an alert's trouble is logged, never a stop
                log.warning("after_batch hook %r failed: %s", hook, exc)

    # -- the web views --------------------------------------------------------------------

    def _views(self) -> None:
        live = self

        @self.app.page("/customers", name="customers")
        async def customers(web: View, request: Request) -> Response:
            del request
            if not live.ready():
                return web.json({"error": "the live tables are being recovered"}, status=503)
            try:
                books = live._books()
                rows = [live.customer_json(c) for c in books.customers]
            except Exception as exc:
                log.warning("GET /customers: %s", one_line(exc))
                return web.json({"error": f"not available now: {one_line(exc)}"}, status=503)
            return web.json([r for r in rows if r is not None])

        @self.app.page("/customers/{customer_id}", name="customer")
        async def customer(web: View, request: Request, customer_id: str) -> Response:
            del request
            if not live.ready():
                return web.json({"error": "the live tables are being recovered"}, status=503)
            try:
                found = live.customer_json(customer_id)
            except Exception as exc:
                log.warning("GET /customers/%s: %s", customer_id, one_line(exc))
                return web.json({"error": f"not available now: {one_line(exc)}"}, status=503)
            if found is None:
                return web.json({"error": f"there is no customer {customer_id!r}"}, status=404)
            return web.json(found)


def lake_runs(
    home: Path, topic: str, cursor: int
) -> list[tuple[commitlog.Entry, list[UsageMessage] | None]] | None:
    """The commit log's entries after ``cursor`` whose runs are in place, each with its
    usage messages: none for a batch of ``topic``'s stream (its messages come through
    Kafka), None for a run that rewrote lake rows (the entries stop there). None when the
    log no longer reaches back to ``cursor``. Read without the lake lock: the newest entry
    is left for later while its run is publishing, and a run that removes files the
    entries name is itself such an entry."""
    root = lake_root(home)
    head = commitlog.head(root)
    last = head.seq if head.publishing is None else head.seq - 1
    if last == cursor:
        return []
    entries = commitlog.since(root, cursor)
    if entries is None:
        return None
    out: list[tuple[commitlog.Entry, list[UsageMessage] | None]] = []
    for entry in entries:
        if entry.seq > last:
            break
        if entry.replaces:
            out.append((entry, None))
            break
        if is_stream_entry(entry, topic):
            out.append((entry, []))
            continue
        messages = [m for _, v in messages_of_entry(home, entry) if (m := parse_message(v))]
        out.append((entry, messages))
    return out


class KeyedTable(faust.Table[Any, Any]):
    """A table whose changelog partition is its key's hash, known without the stream's
    current event (the agent counts batches taken from the stream; the timer and the views
    write too) and without the producer's metadata of the changelog topic (which faust's
    ``use_partitioner`` needs, and a first write at start may not have yet). One worker
    holds every partition, so any fixed function of the key will do."""

    def partition_for_key(self, key: Any) -> int | None:
        return zlib.crc32(json.dumps(key).encode()) % (self.partitions or 1)


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def broker_url(bootstrap: str) -> str:
    """``host:port[,…]`` as faust's broker setting."""
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def can_listen(host: str, port: int) -> None:
    """Stop with one line, before the worker starts, when the views cannot listen on
    ``host:port`` (faust would stop with a traceback)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CdrflowError(f"--host {host!r}: not an address to listen on ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise CdrflowError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another live worker may "
                "be running there; --web-port and --host choose another"
            ) from None


def build(settings: LiveSettings) -> Live:
    """The live app for ``settings``: its faust app, tables, agent, timer and views, with
    every module that plugs into it installed."""
    can_listen(settings.host, settings.web_port)
    partitions = topic_partitions(settings)
    datadir = settings.home / "live" / f"{settings.app_id}-data"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.bootstrap),
        store="memory://",
        web_host=settings.host,
        web_bind=settings.host,
        web_port=settings.web_port,
        datadir=str(datadir),
        topic_partitions=partitions,
        autodiscover=False,
        key_serializer="json",  # the tables' keys and values
        # A worker killed (SIGKILL, a lost host) leaves the group after 10 s, not faust's
        # 60 s: its successor recovers the tables that much sooner.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        value_serializer="json",
    )
    live = Live(app, settings, partitions)
    # The modules that plug in, each from its own install().
    gate.install(live)
    alerting.install(live)
    return live
