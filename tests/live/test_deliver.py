"""Delivering firings (SPEC §9, §9.1): by SMTP to a real aiosmtpd server and by HTTP POST
to a real HTTP server on 127.0.0.1; 5 tries, then recorded as failed; settings from the
environment and a TOML file; the SMTP password never shown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipelines.kafka_broker import free_port
from pipelines.live.alerts import Firing
from pipelines.live.deliver import (
    RETRIES,
    Deliverer,
    DeliverySettings,
    delivery_settings,
    email,
    shown,
)
from pipelines.live.firings import Settled
from schemas.errors import CdrflowError
from tests.live.conftest import SMTP_PASSWORD, SMTP_USER, Mailbox, Webhook

AT = datetime(2026, 12, 7, 10, 15, 30, tzinfo=UTC)
QUICK = (0.05, 0.05, 0.05, 0.05)  # the retry schedule of a test: 5 tries, quickly


def firing(recipient: str, crossing: int = 1) -> Firing:
    return Firing(
        alert_id="acme-low-balance",
        crossing=crossing,
        customer_id="acme",
        name="Balance below 100",
        area="balance",
        operator="<",
        threshold=Decimal("100"),
        value=Decimal("42.125"),
        at=AT,
        recipient=recipient,
    )


def deliver(settings: DeliverySettings, one: Firing) -> Settled:
    async def main() -> Settled:
        deliverer = Deliverer(settings)
        try:
            return await deliverer.deliver(one)
        finally:
            await deliverer.close()

    return asyncio.run(main())


# -- e-mail ------------------------------------------------------------------------------------


def test_an_email_alert_arrives_with_customer_area_value_and_threshold(
    smtp_server: Mailbox,
) -> None:
    settings = DeliverySettings(
        smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_from="billing@carrier.example"
    )
    settled = deliver(settings, firing("noc@acme-telecom.example"))
    assert (settled.channel, settled.status, settled.tries, settled.error) == (
        "email",
        "delivered",
        1,
        None,
    )
    (message,) = smtp_server.wait(1)
    assert smtp_server.envelopes == [("billing@carrier.example", ["noc@acme-telecom.example"])]
    assert message["To"] == "noc@acme-telecom.example"
    assert message["Subject"] == (
        "cdrflow alert: Balance below 100: customer acme balance 42.125 < 100"
    )
    body = message.get_content()
    assert "customer:   acme" in body
    assert "area:       balance" in body
    assert "value:      42.125" in body
    assert "threshold:  100" in body
    assert '"alert_id": "acme-low-balance", "crossing": 1' in body
    # Delivered again (at least once), it is the same message to a mail system.
    assert message["Message-ID"] == email(settings, firing("x@y.example"))["Message-ID"]
    assert message["Message-ID"] != email(settings, firing("x@y.example", 2))["Message-ID"]


def test_an_asr_alert_shows_its_unit(smtp_server: Mailbox) -> None:
    settings = DeliverySettings(smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    asr = Firing(
        "acme-asr", 3, "acme", "ASR under 35%", "asr", "<", Decimal(35), Decimal("28.5"), AT,
        "noc@acme-telecom.example",
    )  # fmt: skip
    assert deliver(settings, asr).status == "delivered"
    (message,) = smtp_server.wait(1)
    assert "value:      28.5%" in message.get_content()
    assert "threshold:  35%" in message.get_content()


def test_starttls_login_and_the_password_is_never_shown(
    smtp_auth_server: Mailbox, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = DeliverySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp_auth_server.port,
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_starttls=True,
        smtp_cafile=str(certificate[0]),
        retries=QUICK,
    )
    assert deliver(good, firing("noc@acme-telecom.example")).status == "delivered"
    assert smtp_auth_server.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert len(smtp_auth_server.wait(1)) == 1

    wrong = replace(good, smtp_password=SMTP_PASSWORD + "-wrong")
    settled = deliver(wrong, firing("noc@acme-telecom.example"))
    assert (settled.status, settled.tries) == ("failed", 5)
    assert settled.error is not None and "535" in settled.error
    # Each of the 5 tries logs in with PLAIN, then LOGIN (smtplib tries what the server offers).
    assert smtp_auth_server.logins[1:] == [(SMTP_USER, SMTP_PASSWORD + "-wrong")] * 10
    assert len(smtp_auth_server.messages) == 1
    shown_anywhere = "\n".join(
        [caplog.text, repr(good), str(wrong), repr(wrong), str(settled.to_json())]
    )
    assert "not delivered to noc@acme-telecom.example after 5 tries" in caplog.text
    assert SMTP_PASSWORD not in shown_anywhere
    assert "smtp_password': '***'" in repr(wrong)


def test_a_certificate_that_is_not_trusted_is_refused(
    smtp_auth_server: Mailbox,
) -> None:
    settings = DeliverySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtp_auth_server.port,
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_starttls=True,
        retries=QUICK,
    )
    settled = deliver(settings, firing("noc@acme-telecom.example"))
    assert (settled.status, settled.tries) == ("failed", 5)
    assert settled.error is not None and "CERTIFICATE_VERIFY_FAILED" in settled.error
    assert smtp_auth_server.logins == []


def test_smtp_over_tls_from_the_start(
    smtps_server: Mailbox, certificate: tuple[Path, Path]
) -> None:
    settings = DeliverySettings(
        smtp_host="127.0.0.1",
        smtp_port=smtps_server.port,
        smtp_ssl=True,
        smtp_cafile=str(certificate[0]),
    )
    assert deliver(settings, firing("noc@acme-telecom.example")).status == "delivered"
    (message,) = smtps_server.wait(1)
    assert message["To"] == "noc@acme-telecom.example"


def test_an_smtp_server_that_is_not_there(caplog: pytest.LogCaptureFixture) -> None:
    settings = DeliverySettings(smtp_host="127.0.0.1", smtp_port=free_port(), retries=QUICK)
    settled = deliver(settings, firing("noc@acme-telecom.example"))
    assert (settled.status, settled.tries) == ("failed", 5)
    assert settled.error is not None and "ConnectionRefusedError" in settled.error
    assert caplog.text.count("delivery to noc@acme-telecom.example failed (try") == 5


def test_no_smtp_server_configured_fails_at_once() -> None:
    settled = deliver(DeliverySettings(retries=QUICK), firing("noc@acme-telecom.example"))
    assert (settled.status, settled.tries) == ("failed", 0)
    assert settled.error == (
        "no SMTP server is configured: set CDRFLOW_SMTP_HOST or [smtp] host in live.toml"
    )


# -- webhooks ----------------------------------------------------------------------------------


def test_a_webhook_gets_the_firing_as_json(webhook: Webhook) -> None:
    one = firing(webhook.url)
    settled = deliver(DeliverySettings(), one)
    assert (settled.channel, settled.status, settled.tries) == ("webhook", "delivered", 1)
    (post,) = webhook.wait(1)
    assert post.path == "/hooks/noc?token=t0ken"
    assert post.body == one.message()
    assert post.body["customer_id"] == "acme"
    assert (post.body["area"], post.body["value"], post.body["threshold"]) == (
        "balance",
        "42.125",
        "100",
    )
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Idempotency-Key"] == "acme-low-balance~1"


def test_a_webhook_answering_500_is_tried_5_times_then_recorded_failed(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.statuses = [500]
    settled = deliver(DeliverySettings(retries=(0.2, 0.2, 0.2, 0.2)), firing(webhook.url))
    assert (settled.status, settled.tries, settled.error) == (
        "failed",
        5,
        "HTTP 500 Internal Server Error",
    )
    posts = webhook.wait(5)
    assert len(posts) == 5
    assert all(p.body == posts[0].body for p in posts)
    # The schedule is kept: the tries are spread over at least the waits between them.
    assert posts[-1].at - posts[0].at >= 0.8
    # The URL's token is not logged: only its scheme and host.
    assert "t0ken" not in caplog.text
    assert f"delivery to {shown(webhook.url)} failed (try 5 of 5)" in caplog.text


def test_a_webhook_that_recovers_is_delivered(webhook: Webhook) -> None:
    webhook.statuses = [500, 503, 204]
    settled = deliver(DeliverySettings(retries=QUICK), firing(webhook.url))
    assert (settled.status, settled.tries, settled.error) == ("delivered", 3, None)
    assert len(webhook.wait(3)) == 3


def test_a_redirect_is_not_followed(webhook: Webhook) -> None:
    webhook.statuses = [301]
    settled = deliver(DeliverySettings(retries=QUICK), firing(webhook.url))
    assert (settled.status, settled.error) == ("failed", "HTTP 301 Moved Permanently")


def test_a_webhook_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    settled = deliver(DeliverySettings(retries=QUICK), firing(url))
    assert (settled.status, settled.tries) == ("failed", 5)
    assert settled.error is not None and "Cannot connect" in settled.error


def test_the_default_schedule_is_5_tries_over_about_a_minute() -> None:
    assert DeliverySettings().tries == 5
    assert 50 <= sum(RETRIES) <= 70


# -- settings ----------------------------------------------------------------------------------

FULL_ENV = {
    "CDRFLOW_SMTP_HOST": "mail.carrier.example",
    "CDRFLOW_SMTP_PORT": "587",
    "CDRFLOW_SMTP_USER": "alerts",
    "CDRFLOW_SMTP_PASSWORD": "env-secret",
    "CDRFLOW_SMTP_FROM": "noc@carrier.example",
    "CDRFLOW_SMTP_STARTTLS": "yes",
    "CDRFLOW_SMTP_TIMEOUT": "20",
    "CDRFLOW_WEBHOOK_TIMEOUT": "2.5",
    "CDRFLOW_ALERT_RETRIES": "1, 2,3,4",
}


def test_settings_from_the_environment(tmp_path: Path) -> None:
    settings = delivery_settings(tmp_path, environ=FULL_ENV)
    assert settings == DeliverySettings(
        smtp_host="mail.carrier.example",
        smtp_port=587,
        smtp_user="alerts",
        smtp_password="env-secret",
        smtp_from="noc@carrier.example",
        smtp_starttls=True,
        smtp_timeout=20.0,
        webhook_timeout=2.5,
        retries=(1.0, 2.0, 3.0, 4.0),
    )
    assert "env-secret" not in repr(settings) + str(settings)
    assert delivery_settings(tmp_path, environ={}) == DeliverySettings()
    assert DeliverySettings(smtp_ssl=True).port == 465
    assert DeliverySettings().port == 25


def test_the_config_file_wins_over_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "live.toml").write_text(
        '[smtp]\nhost = "relay.internal"\nport = 2525\npassword = "file-secret"\n'
        "starttls = false\n\n[webhook]\ntimeout = 4\n\n[delivery]\nretries = [1, 1, 1, 1]\n"
    )
    (home / "live.toml").chmod(0o644)
    with caplog.at_level(logging.WARNING):
        settings = delivery_settings(home, environ=FULL_ENV)
    assert f"{home / 'live.toml'} holds the SMTP password and others may read it" in caplog.text
    assert "file-secret" not in caplog.text
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_password) == (
        "relay.internal",
        2525,
        "file-secret",
    )
    assert (settings.smtp_user, settings.smtp_starttls) == ("alerts", False)
    assert (settings.webhook_timeout, settings.retries) == (4.0, (1.0, 1.0, 1.0, 1.0))
    # A file named on the command line is read instead of the home's.
    other = tmp_path / "other.toml"
    other.write_text('[smtp]\nhost = "other.internal"\n')
    assert delivery_settings(home, other, environ={}).smtp_host == "other.internal"


@pytest.mark.parametrize(
    ("environ", "toml", "message"),
    [
        ({"CDRFLOW_SMTP_PORT": "smtp"}, None, "$CDRFLOW_SMTP_PORT: expected a TCP port"),
        ({"CDRFLOW_SMTP_PORT": "70000"}, None, "$CDRFLOW_SMTP_PORT: expected a TCP port"),
        ({"CDRFLOW_SMTP_STARTTLS": "maybe"}, None, "$CDRFLOW_SMTP_STARTTLS: expected yes or no"),
        ({"CDRFLOW_ALERT_RETRIES": "5,x"}, None, "$CDRFLOW_ALERT_RETRIES: expected numbers"),
        ({"CDRFLOW_WEBHOOK_TIMEOUT": "0"}, None, "$CDRFLOW_WEBHOOK_TIMEOUT: expected a number"),
        ({"CDRFLOW_SMTP_SSL": "yes", "CDRFLOW_SMTP_STARTTLS": "yes"}, None, "exclude each other"),
        ({"CDRFLOW_SMTP_PASSWORD": "hunter2-secret"}, None, "a user needs a password"),
        ({}, "[smtp]\nhost = 'a'\npasword = 'hunter2-secret'\n", "[smtp] has no setting 'pasword'"),
        ({}, "[mail]\nhost = 'a'\n", "[mail] is not a section"),
        ({}, "[smtp]\nport = '25x'\n", "[smtp] port: expected a TCP port"),
        ({}, "[smtp]\npassword = 12345678\n", "[smtp] password: expected a non-empty string"),
        ({}, "[smtp\nhost = 'a'\n", "not TOML"),
    ],
)
def test_bad_settings_are_one_clear_line(
    tmp_path: Path, environ: dict[str, str], toml: str | None, message: str
) -> None:
    config = None
    if toml is not None:
        config = tmp_path / "live.toml"
        config.write_text(toml)
    with pytest.raises(CdrflowError) as error:
        delivery_settings(tmp_path, config, environ=environ)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert "hunter2" not in str(error.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CdrflowError, match=r"nowhere\.toml: cannot read the live config file"):
        delivery_settings(tmp_path, tmp_path / "nowhere.toml", environ={})
