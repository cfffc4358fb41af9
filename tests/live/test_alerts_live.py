"""Alerts in a real ``cdrflow live worker`` on the real broker (SPEC §9, §9.1): a low-balance
alert fires once when the balance crosses its threshold, re-arms after a payment lifts it and
fires again when usage drops it anew; a worker killed with SIGKILL and restarted publishes
nothing twice; an e-mail arrives at a real SMTP server and a webhook POST at a real HTTP
server, with customer, area, value and threshold; a webhook answering 500 is tried 5 times,
then recorded as failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.kafka_broker import Broker
from pipelines.live.firings import deliveries_root, fired_root
from tests.kafka.reader import consume, unique_name
from tests.kafka.test_stream import produce, settled
from tests.live.conftest import SMTP_PASSWORD, SMTP_USER, Mailbox, Webhook
from tests.live.process import CDRFLOW, PATIENCE, LiveWorker, _default_signals, wait_for
from tests.pipelines.test_rate import new_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CENT = Decimal("0.01")


def cdrflow(home: Path, *args: str) -> str:
    done = subprocess.run(
        [CDRFLOW, "--home", str(home), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def acme_calls(bootstrap: str, topic: str, name: str, calls: int) -> None:
    """``calls`` answered 10-minute calls of acme, an hour ago, sent to the raters' topic."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    values = []
    for i in range(calls):
        cdr = {
            "callid": f"{name}-{i}",
            "dt": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "dest_number": f"3361{i:07d}",  # France mobile: no package covers it
            "sip_code": 200,
            "duration": 600,
            "pdd_ms": 800,
            "source_ip": "203.0.113.10",
        }
        values.append(json.dumps(cdr).encode())
    produce(bootstrap, topic, values, [b"203.0.113.10"] * calls)


class Rater:
    """A ``cdrflow stream`` worker for the whole test (its log in a file, not a pipe that
    a long run would fill), stopped by its process group."""

    def __init__(self, home: Path, bootstrap: str, topic: str) -> None:
        self.log = home.parent / "rater.log"
        command = [CDRFLOW, "--home", str(home), "stream", "--bootstrap", bootstrap]
        command += ["--topic", topic, "--group", unique_name("raters"), "--wait", "0.3"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_default_signals,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(PATIENCE)


def book_balance(home: Path) -> Decimal:
    (row,) = json.loads(cdrflow(home, "balance", "--customer", "acme", "--format", "json"))
    return Decimal(row["balance"])


def live_balance(live: LiveWorker) -> Decimal:
    return Decimal(live.customers()["acme"]["balance"])


def deliveries(home: Path) -> dict[str, tuple[str, int, str | None]]:
    """Settled deliveries: key → (status, tries, error)."""
    if not any(deliveries_root(home).glob("date=*/*.parquet")):
        return {}
    rows = duckdb.sql(
        "SELECT alert_id, crossing, status, tries, error FROM "
        f"read_parquet('{deliveries_root(home)}/*/*.parquet')"
    ).fetchall()
    return {f"{a}~{c}": (s, t, e) for a, c, s, t, e in rows}


def add_alert(home: Path, alert_id: str, threshold: Decimal, recipient: str) -> None:
    cdrflow(
        home, "alerts", "add", "--alert-id", alert_id, "--customer-id", "acme",
        "--name", f"Low balance ({alert_id})", "--area", "balance", "--operator", "<",
        "--threshold", str(threshold), "--recipient", recipient,
    )  # fmt: skip


def test_a_low_balance_alert_fires_once_per_crossing_through_a_kill(
    tmp_path: Path,
    kafka_broker: Broker,
    topic: str,
    smtp_auth_server: Mailbox,
    certificate: tuple[Path, Path],
    webhook: Webhook,
    failing_webhook: Webhook,
) -> None:
    bootstrap = kafka_broker.bootstrap
    home = new_home(tmp_path, "home")
    for sample in ("acme-low-balance", "acme-asr", "globex-channels", "initech-pdd"):
        cdrflow(home, "alerts", "delete", sample)
    # The secret in the home's config file; the rest in the environment.
    config = home / "live.toml"
    config.write_text(f'[smtp]\nuser = "{SMTP_USER}"\npassword = "{SMTP_PASSWORD}"\n')
    config.chmod(0o600)
    env = {
        "CDRFLOW_SMTP_HOST": "127.0.0.1",
        "CDRFLOW_SMTP_PORT": str(smtp_auth_server.port),
        "CDRFLOW_SMTP_STARTTLS": "yes",
        "CDRFLOW_SMTP_CAFILE": str(certificate[0]),
        "CDRFLOW_SMTP_FROM": "alerts@carrier.example",
        "CDRFLOW_ALERT_RETRIES": "0.2,0.2,0.2,0.2",
    }
    alerts_topic = unique_name("alerts")
    app_id = unique_name("live-alerts")

    def start() -> LiveWorker:
        worker = LiveWorker(
            home, bootstrap, topic, app_id, env=env, extra=("--alerts-topic", alerts_topic)
        )
        worker.ready()
        return worker

    rater = Rater(home, bootstrap, topic)
    live = start()
    logs = []
    try:
        wait_for(lambda: live_balance(live) == book_balance(home), "the seeded balance")
        threshold = live_balance(live) - CENT
        add_alert(home, "low-hook", threshold, webhook.url)
        add_alert(home, "low-mail", threshold, "noc@acme-telecom.example")
        add_alert(home, "low-fail", threshold, failing_webhook.url)
        # The webhook's first answer is held back: the worker is killed while delivering it.
        webhook.hold = threading.Event()

        # Usage drops the balance under the threshold: each alert fires (crossing 1).
        acme_calls(bootstrap, topic, "first", 5)
        (post,) = webhook.wait(1)
        assert (post.body["alert_id"], post.body["crossing"]) == ("low-hook", 1)
        value = Decimal(post.body["value"])
        assert value < threshold
        assert post.body["customer_id"] == "acme" and post.body["area"] == "balance"
        assert Decimal(post.body["threshold"]) == threshold
        (mail,) = smtp_auth_server.wait(1)
        body = mail.get_content()
        assert mail["To"] == "noc@acme-telecom.example"
        for line in ("customer:   acme", "area:       balance", f"value:      {value}"):
            assert line in body
        assert f"threshold:  {threshold}" in body
        wait_for(lambda: "low-fail~1" in deliveries(home), "the failing webhook's record")
        assert deliveries(home)["low-fail~1"] == ("failed", 5, "HTTP 500 Internal Server Error")
        assert len(failing_webhook.posts) == 5

        # SIGKILL in the middle of the webhook's delivery, then a restart.
        live.kill()
        logs.append(live.text())
        hold, webhook.hold = webhook.hold, None
        hold.set()
        live = start()
        # The delivery that was cut short is made again (at least once), same key.
        again = webhook.wait(2)[1]
        assert again.headers["Idempotency-Key"] == "low-hook~1"
        assert again.body == post.body

        # More usage while under the threshold: quiet.
        acme_calls(bootstrap, topic, "second", 3)
        wait_for(lambda: settled(home, 8), "the second calls rated and published")
        wait_for(lambda: live_balance(live) == book_balance(home), "the second calls counted")
        # A payment lifts the balance a cent over the threshold: re-armed.
        lift = threshold - book_balance(home) + CENT
        at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        cdrflow(
            home, "payments", "add", "--payment-id", "PAY-LIFT", "--customer-id", "acme",
            "--amount", str(lift), "--status", "completed", "--at", at,
        )  # fmt: skip
        wait_for(lambda: live_balance(live) == threshold + CENT, "the payment counted")
        # Usage drops it anew: each alert fires again (crossing 2).
        acme_calls(bootstrap, topic, "third", 2)
        third = webhook.wait(3)[2]
        assert (third.body["alert_id"], third.body["crossing"]) == ("low-hook", 2)
        assert Decimal(third.body["value"]) < threshold
        assert len(smtp_auth_server.wait(2)) == 2
        wait_for(lambda: len(deliveries(home)) == 6, "every delivery settled")
        # The newest firings, as `cdrflow live top` asks for them.
        status, latest = live.get("/alerts?limit=3")
        assert status == 200
        assert [a["crossing"] for a in latest] == [2, 2, 2]
        assert {a["alert_id"] for a in latest} == {"low-hook", "low-mail", "low-fail"}
        assert {a["alert_id"]: a["delivery"]["status"] for a in latest} == {
            "low-hook": "delivered", "low-mail": "delivered", "low-fail": "failed",
        }  # fmt: skip
        assert live.get("/alerts?limit=many")[0] == 400
        assert len(live.get("/alerts")[1]) == 6
        logs.append(live.stop())
    finally:
        live.kill()
        rater.stop()

    everything = sorted(
        (json.loads(m.value)["alert_id"], json.loads(m.value)["crossing"])
        for m in consume(bootstrap, alerts_topic, 6)
    )
    expected = [(a, c) for a in ("low-fail", "low-hook", "low-mail") for c in (1, 2)]
    assert everything == expected  # published once each, the kill notwithstanding
    fired = sorted(p.stem for p in fired_root(home).glob("date=*/*.parquet"))
    assert fired == [f"{a}~{c}" for a, c in expected]
    assert [p.body["crossing"] for p in webhook.posts] == [1, 1, 2]
    mails = smtp_auth_server.messages
    assert [m["Subject"].count("low-mail") for m in mails] == [1, 1]
    assert len(failing_webhook.posts) == 10
    assert deliveries(home) == {
        "low-hook~1": ("delivered", 1, None),
        "low-hook~2": ("delivered", 1, None),
        "low-mail~1": ("delivered", 1, None),
        "low-mail~2": ("delivered", 1, None),
        "low-fail~1": ("failed", 5, "HTTP 500 Internal Server Error"),
        "low-fail~2": ("failed", 5, "HTTP 500 Internal Server Error"),
    }
    text = "\n".join(logs)
    assert "low-hook~1 fired" in text and "low-hook~2 fired" in text
    assert SMTP_PASSWORD not in text
    assert "t0ken" not in text  # the webhooks' URLs are logged by scheme and host only
    assert "Traceback" not in text


def test_a_bad_delivery_setting_stops_the_worker_with_one_line(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    home = new_home(tmp_path, "home")
    done = subprocess.run(
        [CDRFLOW, "--home", str(home), "live", "worker", "--bootstrap", kafka_broker.bootstrap,
         "--topic", topic, "--config", str(tmp_path / "missing.toml")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    assert "missing.toml: cannot read the live config file" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
