"""Alerts in the live app (SPEC §9, §9.1): each customer's alerts evaluated after each batch,
firings recorded, published and delivered.

``install(live)`` plugs ``Alerting`` into the live app: a changelog-backed table
``alert_states`` (customer → each alert's ``alerts.State``: a restarted worker recovers it
from Kafka), an ``after_batch`` hook that evaluates the alerts of the customers whose values
changed, a 1-second timer that evaluates alerts the catalog added or edited (so an alert whose
condition is already true fires without waiting for the customer's next call), and the
``Outbox`` task that publishes to the ``alerts`` topic and delivers, and ``GET /alerts``
(the newest firings and their deliveries, for ``cdrflow live top``). The order of a firing's
steps, and why a crash never fires anything twice, is ``pipelines.live.outbox``'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pipelines.live.alerts import Alert, Firing, State, by_customer, evaluate
from pipelines.live.deliver import Deliverer, DeliverySettings, channel_of, delivery_settings
from pipelines.live.firings import Ledger, Settled
from pipelines.live.outbox import KafkaPublisher, Outbox, Publisher

log = logging.getLogger("cdrflow.live.alerts")
TABLE = "alert_states"
CHECK = 1.0  # seconds between looks for alerts the catalog added or edited
START_WAIT = 60.0  # seconds a batch waits for the lake's firings to be read at the start
LATEST, MOST = 20, 1000  # firings GET /alerts shows unless told, and at most

Values = Mapping[str, Decimal | int | None]


class Alerting:
    """Evaluates alerts against live values and hands the firings to the outbox.

    ``states`` is the live app's table (a plain dict in tests): customer id → {alert id →
    ``State.to_json()``}. States of alerts no longer in the catalog are kept, so that an
    alert id added again goes on counting its crossings.
    """

    def __init__(
        self,
        home: Path,
        states: MutableMapping[str, Any],
        publisher: Publisher,
        deliverer: Deliverer,
        now: Callable[[], datetime],
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.home = Path(home)
        self.states = states
        self.before_write = before_write
        self.publisher = publisher
        self.deliverer = deliverer
        self.now = now
        self.ledger: Ledger | None = None
        self.outbox: Outbox | None = None
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._recorded: dict[str, State] = {}
        self._rows: Sequence[Mapping[str, Any]] | None = None
        self._alerts: dict[str, list[Alert]] = {}

    async def start(self) -> Outbox:
        """Read the lake's firings (once, at start) and make the outbox."""
        self.ledger = await asyncio.to_thread(Ledger, self.home)
        self._recorded = await asyncio.to_thread(self.ledger.recorded)
        self.outbox = Outbox(self.ledger, self.publisher, self.deliverer)
        self.ready.set()
        return self.outbox

    async def run(self) -> None:
        """Start, then publish and deliver until cancelled (the app's stop)."""
        outbox = await self.start()
        try:
            await outbox.run()
        finally:
            await outbox.close()
            close = getattr(self.publisher, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    def alerts(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Alert]]:
        """The catalog's alert rows by customer (parsed again when the rows are new)."""
        if rows is not self._rows:
            self._alerts = by_customer(rows)
            self._rows = rows
        return self._alerts

    async def on_values(
        self, rows: Sequence[Mapping[str, Any]], changed: Mapping[str, Values]
    ) -> list[Firing]:
        """Evaluate the alerts of each customer in ``changed`` (customer → area → value)
        against its values; record, keep the states, and hand the firings to the outbox.
        Returns the firings."""
        await self.ready.wait()
        assert self.ledger is not None and self.outbox is not None
        grouped = self.alerts(rows)
        out: list[Firing] = []
        async with self._lock:
            at = self.now()
            for customer_id, values in changed.items():
                alerts = grouped.get(customer_id)
                if not alerts:
                    continue
                kept = dict(self.states.get(customer_id) or {})
                states = {k: State.from_json(v) for k, v in kept.items()}
                firings, moved = evaluate(alerts, states, values, at, self._recorded)
                if firings:
                    # The lake first: a crash from here on cannot fire these again.
                    await asyncio.to_thread(self.ledger.record, firings)
                    for firing in firings:
                        self._recorded[firing.alert_id] = State(
                            armed=False, crossings=firing.crossing, definition=firing.definition
                        )
                        log.info("alert %s fired: %s", firing.key, firing.summary())
                if moved:
                    kept.update({k: v.to_json() for k, v in moved.items()})
                    if self.before_write is not None:
                        await self.before_write()
                    self.states[customer_id] = kept
                self.outbox.send(firings)
                out.extend(firings)
        return out

    def unseen(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Customers with an alert not yet evaluated as it is now (new, or edited since)."""
        out = []
        for customer_id, alerts in self.alerts(rows).items():
            kept = self.states.get(customer_id) or {}
            for alert in alerts:
                state = kept.get(alert.alert_id)
                if state is None or state.get("definition") != alert.definition:
                    out.append(customer_id)
                    break
        return out


class LiveApp(Protocol):
    """What ``install`` uses of ``pipelines.live.app.Live``."""

    app: Any
    settings: Any
    after_batch: list[Callable[[dict[str, dict[str, Decimal | int]]], Any]]

    def table(self, name: str, default: Callable[[], Any] | None = None) -> Any: ...

    def engine(self) -> tuple[Any, Mapping[str, Sequence[Mapping[str, Any]]]]: ...

    def values(self, customer_id: str) -> dict[str, Decimal | int]: ...

    def now(self) -> datetime: ...

    def ready(self) -> bool: ...


def install(live: LiveApp, settings: DeliverySettings | None = None) -> Alerting:
    """Alerts in ``live``: the states table, the hook, the timer and the outbox task.
    ``settings`` default to ``delivery_settings`` of the live home and its config file."""
    home = Path(live.settings.home)
    if settings is None:
        settings = delivery_settings(home, live.settings.config_file)
    publisher = KafkaPublisher(live.settings.bootstrap, live.settings.alerts_topic)
    states = live.table(TABLE)

    known = asyncio.Event()

    async def writable() -> None:
        if not known.is_set():
            await track_changelogs(live.app)
            known.set()

    alerting = Alerting(home, states, publisher, Deliverer(settings), live.now, writable)

    async def after_batch(changed: dict[str, dict[str, Decimal | int]]) -> None:
        if not alerting.ready.is_set():
            # The outbox task reads the lake's firings at the worker's start: moments.
            try:
                await asyncio.wait_for(alerting.ready.wait(), START_WAIT)
            except TimeoutError:
                log.error(
                    "alerts: not evaluated for %d customers: the lake's firings are not read",
                    len(changed),
                )
                return
        await alerting.on_values(_alert_rows(live), changed)

    live.after_batch.append(after_batch)

    async def catalog_check() -> None:
        if not live.ready() or not alerting.ready.is_set():
            return
        try:
            rows = _alert_rows(live)
            customers = alerting.unseen(rows)
            if customers:
                await alerting.on_values(rows, {c: live.values(c) for c in customers})
        except Exception as exc:  # an exception in a faust timer would stop the app
            log.warning("alerts: new or edited alerts not evaluated now: %s", exc)

    live.app.timer(CHECK, name="alerts_catalog")(catalog_check)

    async def outbox() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await writable()
                await alerting.run()
            except Exception as exc:  # alerts stop; the balances and authorization go on
                log.error("alerts: the outbox stopped (%s: %s)", type(exc).__name__, exc)

    live.app.task(outbox)

    async def latest(web: Any, request: Any) -> Any:
        """``GET /alerts[?limit=N]``: the newest firings (20 unless told, at most
        ``MOST``), newest first, each with its delivery (``pending`` until settled)."""
        raw = request.query.get("limit", str(LATEST))
        if not raw.isdigit() or not 1 <= int(raw) <= MOST:
            return web.json({"error": f"limit must be a whole number 1..{MOST}"}, status=400)
        ledger = alerting.ledger
        if ledger is None:
            return web.json({"error": "the lake's alert firings are being read"}, status=503)
        try:
            pairs = await asyncio.to_thread(ledger.latest, int(raw))
        except Exception as exc:  # the lake's disk: one line, never a stop
            log.warning("GET /alerts: %s", exc)
            return web.json({"error": str(exc)}, status=500)
        return web.json([latest_json(f, s) for f, s in pairs])

    live.app.page("/alerts", name="alerts")(latest)
    return alerting


def latest_json(firing: Firing, settled: Settled | None) -> dict[str, Any]:
    """A firing as ``GET /alerts`` shows it: its message, the kind of its recipient (not
    the recipient: a webhook's URL may hold a token) and its delivery."""
    delivery = {"status": "pending"} if settled is None else settled.to_json()
    delivery.pop("channel", None)
    return {**firing.message(), "channel": channel_of(firing.recipient), "delivery": delivery}


async def track_changelogs(app: Any) -> None:
    """Make the producer's metadata cover every table's changelog topic.

    faust finds a key's changelog partition (``use_partitioner``) synchronously, in the
    producer's cluster metadata. aiokafka fetches metadata for every topic until it is asked
    about one it does not know, and from then on only for the topics asked about. So a
    changelog topic created after the producer's first fetch, once written, narrowed the
    metadata to itself, and the next write to another table failed with a TypeError that
    stopped the app. Tracking all of them at once, at start, keeps every table writable.
    """
    producer = app.producer._ensure_producer()
    names = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    for name in names:
        producer.client.add_topic(name)
    await producer.client.force_metadata_update()
    for name in names:
        await producer.partitions_for(name)


def _alert_rows(live: LiveApp) -> Sequence[Mapping[str, Any]]:
    return live.engine()[1].get("alerts", [])
