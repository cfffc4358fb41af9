"""Alerts against live values (SPEC §9, §9.1), without the faust app: the states in a dict
as the app's table holds them, the lake, the real broker's alerts topic and a real webhook."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pipelines.kafka_broker import Broker
from pipelines.live.alerting import Alerting
from pipelines.live.deliver import Deliverer, DeliverySettings
from pipelines.live.firings import Ledger
from pipelines.live.outbox import KafkaPublisher
from tests.kafka.reader import consume
from tests.live.conftest import Webhook

T = TypeVar("T")
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def rows(url: str, threshold: str = "100") -> list[dict[str, Any]]:
    return [
        {"alert_id": "acme-low", "customer_id": "acme", "name": "Low balance",
         "area": "balance", "operator": "<", "threshold": Decimal(threshold), "recipient": url},
        {"alert_id": "acme-asr", "customer_id": "acme", "name": "ASR under 35%",
         "area": "asr", "operator": "<", "threshold": Decimal(35), "recipient": url},
    ]  # fmt: skip


def with_alerting(
    home: Path,
    states: dict[str, Any],
    broker: Broker,
    topic: str,
    body: Callable[[Alerting], Awaitable[T]],
) -> T:
    """Run ``body`` with an ``Alerting`` of ``home`` as a worker's start makes it; then let
    its outbox finish and stop it."""

    async def main() -> T:
        alerting = Alerting(
            home,
            states,
            KafkaPublisher(broker.bootstrap, topic),
            Deliverer(DeliverySettings(retries=(0.05,) * 4)),
            lambda: NOW,
        )
        task = asyncio.create_task(alerting.run())
        try:
            result = await body(alerting)
            assert alerting.outbox is not None
            await alerting.outbox.idle()
            return result
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(main())


def balances(url: str, *values: str) -> Callable[[Alerting], Awaitable[list[list[str]]]]:
    """A body that gives acme's balances one after the other; the keys fired at each."""

    async def body(alerting: Alerting) -> list[list[str]]:
        fired = []
        for value in values:
            firings = await alerting.on_values(rows(url), {"acme": {"balance": Decimal(value)}})
            fired.append([f.key for f in firings])
        return fired

    return body


def test_fires_once_re_arms_and_survives_restarts(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook
) -> None:
    states: dict[str, Any] = {}
    fired = with_alerting(
        home, states, kafka_broker, topic, balances(webhook.url, "150", "90", "80")
    )
    assert fired == [[], ["acme-low~1"], []]
    assert states["acme"]["acme-low"]["crossings"] == 1
    before_payment = copy.deepcopy(states)

    # A restart that recovered the table: the same low balance fires nothing.
    assert with_alerting(home, states, kafka_broker, topic, balances(webhook.url, "80")) == [[]]
    # A payment lifts it (re-armed), usage drops it anew (fires again).
    fired = with_alerting(
        home, states, kafka_broker, topic, balances(webhook.url, "130", "95", "60")
    )
    assert fired == [[], ["acme-low~2"], []]
    # A restart whose table lost the last state (a crash after the lake had the firing):
    # the lake's record keeps crossing 2 from firing again.
    assert with_alerting(
        home, before_payment, kafka_broker, topic, balances(webhook.url, "60")
    ) == [[]]
    assert before_payment["acme"]["acme-low"]["crossings"] == 2

    published = [json.loads(m.value) for m in consume(kafka_broker.bootstrap, topic, 2)]
    assert [(m["alert_id"], m["crossing"], m["value"]) for m in published] == [
        ("acme-low", 1, "90"),
        ("acme-low", 2, "95"),
    ]
    posts = webhook.wait(2)
    assert [p.body for p in posts] == published
    assert len(webhook.posts) == 2
    assert Ledger(home).pending() == ([], [])


def test_a_new_or_edited_alert_is_evaluated_without_waiting_for_a_call(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook
) -> None:
    states: dict[str, Any] = {}
    values = {"acme": {"balance": Decimal(40), "asr": Decimal("20.5"), "channels": 0}}

    async def body(alerting: Alerting) -> list[list[str]]:
        out = []
        first = rows(webhook.url)
        assert alerting.unseen(first) == ["acme"]
        out.append([f.key for f in await alerting.on_values(first, values)])
        assert alerting.unseen(first) == []
        # An edit (a new threshold the balance is still under): armed, fires once.
        edited = rows(webhook.url, threshold="50")
        assert alerting.unseen(edited) == ["acme"]
        out.append([f.key for f in await alerting.on_values(edited, values)])
        out.append([f.key for f in await alerting.on_values(edited, values)])
        return out

    fired = with_alerting(home, states, kafka_broker, topic, body)
    assert fired == [["acme-low~1", "acme-asr~1"], ["acme-low~2"], []]
    assert sorted((p.body["alert_id"], p.body["value"]) for p in webhook.wait(3)) == [
        ("acme-asr", "20.5"),
        ("acme-low", "40"),
        ("acme-low", "40"),
    ]
