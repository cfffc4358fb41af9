"""A firing's way out (SPEC §9, §9.1): recorded in the lake once, published to the alerts
topic once (on the real broker), delivered at least once, whatever crash comes between."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.kafka_broker import Broker
from pipelines.live.alerting import latest_json
from pipelines.live.alerts import Firing, State
from pipelines.live.deliver import Deliverer, DeliverySettings
from pipelines.live.firings import Ledger, Settled, deliveries_root, fired_root, published_root
from pipelines.live.outbox import KafkaPublisher, Outbox
from tests.kafka.reader import consume
from tests.live.conftest import Webhook

AT = datetime(2026, 12, 7, 23, 59, 59, 500_000, tzinfo=UTC)
QUICK = (0.05, 0.05, 0.05, 0.05)


def firing(recipient: str, crossing: int = 1, alert_id: str = "acme-low", **extra: Any) -> Firing:
    fields: dict[str, Any] = {
        "alert_id": alert_id,
        "crossing": crossing,
        "customer_id": "acme",
        "name": "Balance below 100",
        "area": "balance",
        "operator": "<",
        "threshold": Decimal("100"),
        "value": Decimal("99.123456"),
        "at": AT + timedelta(seconds=crossing),
        "recipient": recipient,
    }
    return Firing(**{**fields, **extra})


def test_a_firing_is_recorded_once_whatever_its_time(home: Path) -> None:
    ledger = Ledger(home)
    first = firing("noc@acme.example")
    assert ledger.record([first]) == [first]
    assert ledger.record([first]) == []
    # The same key evaluated again after a crash, a day later: still the first record.
    again = firing("noc@acme.example", at=AT + timedelta(days=1), value=Decimal(5))
    assert ledger.record([again]) == []
    assert Ledger(home).record([again]) == []
    files = sorted(p.relative_to(home) for p in fired_root(home).rglob("*") if p.is_file())
    assert files == [Path("lake/alerts/date=2026-12-08/acme-low~1.parquet")]
    assert Ledger(home).read("acme-low~1") == first
    rows = duckdb.sql(
        f"select alert_id, crossing, value, threshold, fired_at, date from read_parquet("
        f"'{fired_root(home)}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert rows == [
        ("acme-low", 1, "99.123456", "100", first.at, datetime(2026, 12, 8).date()),
    ]


def test_the_newest_recorded_firing_is_each_alert_s_floor(home: Path) -> None:
    ledger = Ledger(home)
    ledger.record(
        [firing("a@b.example", 1), firing("a@b.example", 2), firing("a@b.example", 1, "x")]
    )
    recorded = Ledger(home).recorded()
    definition = firing("a@b.example").definition
    assert recorded == {
        "acme-low": State(armed=False, crossings=2, definition=definition),
        "x": State(armed=False, crossings=1, definition=definition),
    }


def run_outbox(home: Path, publisher: Any, settings: DeliverySettings) -> Outbox:
    """A fresh outbox of ``home`` (as at a worker's start), run until it has nothing left."""

    async def main() -> Outbox:
        outbox = Outbox(Ledger(home), publisher, Deliverer(settings))
        task = asyncio.create_task(outbox.run())
        idle = asyncio.create_task(outbox.idle())
        try:
            await asyncio.wait({task, idle}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # what killed it
        finally:
            task.cancel()
            idle.cancel()
            await outbox.close()
        return outbox

    return asyncio.run(main())


def messages(broker: Broker, topic: str, expected: int) -> list[tuple[bytes | None, Any]]:
    return [(m.key, json.loads(m.value)) for m in consume(broker.bootstrap, topic, expected)]


def test_recorded_firings_are_published_and_delivered(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook
) -> None:
    one, two = firing(webhook.url, 1), firing(webhook.url, 2)

    async def main() -> None:
        ledger = Ledger(home)
        outbox = Outbox(
            ledger, KafkaPublisher(kafka_broker.bootstrap, topic), Deliverer(DeliverySettings())
        )
        task = asyncio.create_task(outbox.run())
        outbox.send(ledger.record([one, two]))
        outbox.send([one])  # already on its way: not taken twice
        await outbox.idle()
        task.cancel()
        await outbox.close()

    asyncio.run(main())
    assert messages(kafka_broker, topic, 2) == [
        (b"acme-low", one.message()),
        (b"acme-low", two.message()),
    ]
    assert [p.body for p in webhook.wait(2)] == [one.message(), two.message()]
    settled = duckdb.sql(
        f"select alert_id, crossing, recipient, channel, status, tries, error from "
        f"read_parquet('{deliveries_root(home)}/**/*.parquet') order by crossing"
    ).fetchall()
    assert settled == [
        ("acme-low", 1, webhook.url, "webhook", "delivered", 1, None),
        ("acme-low", 2, webhook.url, "webhook", "delivered", 1, None),
    ]
    assert Ledger(home).pending() == ([], [])
    # A later start has nothing to do: nothing is published or delivered again.
    run_outbox(home, KafkaPublisher(kafka_broker.bootstrap, topic), DeliverySettings())
    assert len(messages(kafka_broker, topic, 2)) == 2
    assert len(webhook.posts) == 2


class Crash(BaseException):
    """The process dying at this point (not an error the outbox would handle)."""


class CrashingPublisher(KafkaPublisher):
    """Dies before Kafka gets the firing (``before``) or after Kafka acknowledged it."""

    def __init__(self, bootstrap: str, topic: str, after_ack: bool) -> None:
        super().__init__(bootstrap, topic)
        self.after_ack = after_ack

    async def publish(self, one: Firing) -> tuple[int, int]:
        if self.after_ack:
            await super().publish(one)
        raise Crash


@pytest.mark.parametrize("after_ack", [False, True], ids=["before-publishing", "after-kafka-ack"])
def test_a_crash_publishes_nothing_twice(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook, after_ack: bool
) -> None:
    one = firing(webhook.url)
    Ledger(home).record([one])
    with pytest.raises(Crash):
        run_outbox(
            home, CrashingPublisher(kafka_broker.bootstrap, topic, after_ack), DeliverySettings()
        )
    assert not published_root(home).exists()
    assert webhook.posts == []
    # The next start finishes it: published once (found in the topic after an ack), delivered.
    run_outbox(home, KafkaPublisher(kafka_broker.bootstrap, topic), DeliverySettings())
    assert messages(kafka_broker, topic, 1) == [(b"acme-low", one.message())]
    assert [p.body for p in webhook.wait(1)] == [one.message()]
    mark = json.loads((published_root(home) / "acme-low~1.json").read_text())
    assert mark["offset"] == 0
    assert Ledger(home).pending() == ([], [])


def test_only_messages_after_the_marks_are_searched(
    home: Path, kafka_broker: Broker, topic: str
) -> None:
    """A firing published and marked, then one published but not marked: the search starts
    after the marked offset and still finds the second."""
    publisher = KafkaPublisher(kafka_broker.bootstrap, topic)
    ledger = Ledger(home)
    one, two = firing("a@b.example", 1), firing("a@b.example", 2)
    ledger.record([one, two])
    partition, offset = asyncio.run(publisher.publish(one))
    ledger.mark_published(one.key, partition, offset)
    second = asyncio.run(publisher.publish(two))
    found = asyncio.run(publisher.published(Ledger(home).positions()))
    assert found == {two.key: second}
    assert asyncio.run(publisher.published({partition: second[1]})) == {}


def test_an_unsettled_delivery_is_finished_at_the_next_start(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook
) -> None:
    """Published, then the worker died while delivering: delivered at the next start."""
    ledger = Ledger(home)
    one = firing(webhook.url)
    ledger.record([one])
    ledger.mark_published(one.key, 0, 0)
    run_outbox(home, KafkaPublisher(kafka_broker.bootstrap, topic), DeliverySettings())
    assert [p.body for p in webhook.wait(1)] == [one.message()]
    # It was marked published: the topic was not asked to take it again.
    assert messages(kafka_broker, topic, 0) == []


def test_a_failed_delivery_is_recorded_and_not_tried_again(
    home: Path, kafka_broker: Broker, topic: str, webhook: Webhook
) -> None:
    webhook.statuses = [500]
    one = firing(webhook.url)
    Ledger(home).record([one])
    publisher = KafkaPublisher(kafka_broker.bootstrap, topic)
    run_outbox(home, publisher, DeliverySettings(retries=QUICK))
    assert len(webhook.wait(5)) == 5
    settled = duckdb.sql(
        "select status, tries, error, fired_at from "
        f"read_parquet('{deliveries_root(home)}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert settled == [("failed", 5, "HTTP 500 Internal Server Error", one.at)]
    run_outbox(home, publisher, DeliverySettings(retries=QUICK))
    assert len(webhook.posts) == 5
    assert len(messages(kafka_broker, topic, 1)) == 1


def test_a_damaged_firing_file_stops_nothing_else(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(home)
    ledger.record([firing("a@b.example", 1), firing("a@b.example", 1, "other")])
    damaged = next(fired_root(home).glob("date=*/acme-low~1.parquet"))
    damaged.write_bytes(b"not parquet")
    again = Ledger(home)
    recorded = again.recorded()
    # Its crossing is still taken; with no definition to compare, the alert counts as edited.
    assert recorded["acme-low"] == State(armed=False, crossings=1, definition="")
    assert recorded["other"].definition == firing("a@b.example").definition
    unpublished, _ = again.pending()
    assert [f.key for f in unpublished] == ["other~1"]
    assert "alert firing acme-low~1: its lake file cannot be read" in caplog.text


def test_the_latest_firings_with_their_deliveries(home: Path) -> None:
    ledger = Ledger(home)
    old = firing("a@b.example", 1)
    hook = firing("https://h.example/x?token=t", 2, at=AT + timedelta(days=1))
    new = firing("a@b.example", 1, "other", at=AT + timedelta(days=2))
    for one in (old, hook, new):
        ledger.record([one])
    done = Settled("webhook", "failed", 5, "HTTP 500 Internal Server Error", AT + timedelta(days=1))
    ledger.settle(hook, done)
    assert ledger.latest(2) == [(new, None), (hook, done)]
    again = Ledger(home)  # the outcome read back from the lake
    assert again.latest(10) == [(new, None), (hook, done), (old, None)]
    assert latest_json(hook, done) == {
        **hook.message(),
        "channel": "webhook",
        "delivery": {
            "status": "failed",
            "tries": 5,
            "error": "HTTP 500 Internal Server Error",
            "settled_at": "2026-12-08T23:59:59.500000Z",
        },
    }
    assert latest_json(new, None)["delivery"] == {"status": "pending"}
    assert "token" not in json.dumps(latest_json(hook, done))
