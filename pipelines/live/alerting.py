"""Alerts in the live app (SPEC §9, §9.1): each customer's alerts evaluated after each batch,
firings recorded, published and delivered.

``install(live)`` plugs ``Alerting`` into the live app: a changelog-backed table
``alert_states`` (customer → each alert's ``alerts.State``: a restarted worker recovers it
from Kafka), an ``after_batch`` hook that evaluates the alerts of the customers whose values
changed, a 1-second timer that evaluates alerts the catalog added or edited (so an alert whose
condition is already true fires without waiting for the customer's next call), and the
``Outbox`` task that publishes to the ``alerts`` topic and delivers. The order of a firing's
steps, and why a crash never fires anything twice, is ``pipelines.live.outbox``'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pipelines.live.alerts import Alert, Firing, State, by_customer, evaluate
from pipelines.live.deliver import Deliverer, DeliverySettings, delivery_settings
from pipelines.live.firings import Ledger
from pipelines.live.outbox import TOPIC, KafkaPublisher, Outbox, Publisher

log = logging.getLogger("cdrflow.live.alerts")
TABLE = "alert_states"
CHECK = 1.0  # seconds between looks for alerts the catalog added or edited

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
    ) -> None:
        self.home = Path(home)
        self.states = states
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
        settings = delivery_settings(home, getattr(live.settings, "config_file", None))
    publisher = KafkaPublisher(
        live.settings.bootstrap,
        getattr(live.settings, "alerts_topic", TOPIC),
        getattr(live.settings, "kafka_config", None),
    )
    alerting = Alerting(home, live.table(TABLE), publisher, Deliverer(settings), live.now)

    async def after_batch(changed: dict[str, dict[str, Decimal | int]]) -> None:
        await alerting.on_values(_alert_rows(live), changed)

    live.after_batch.append(after_batch)

    async def catalog_check() -> None:
        if not live.ready() or not alerting.ready.is_set():
            return
        try:
            rows = _alert_rows(live)
        except Exception as exc:  # a catalog being replaced: the next tick
            log.debug("alerts: the catalog is not readable now: %s", exc)
            return
        customers = alerting.unseen(rows)
        if customers:
            await alerting.on_values(rows, {c: live.values(c) for c in customers})

    live.app.timer(CHECK, name="alerts_catalog")(catalog_check)

    async def outbox() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await alerting.run()

    live.app.task(outbox)
    return alerting


def _alert_rows(live: LiveApp) -> Sequence[Mapping[str, Any]]:
    return live.engine()[1].get("alerts", [])
