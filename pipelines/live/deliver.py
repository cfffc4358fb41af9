"""Delivering a firing to its recipient (SPEC §9, §9.1): SMTP for an e-mail address, an HTTP
POST of the firing's JSON for an ``http(s)://`` URL, 5 tries over about a minute.

Settings (``DeliverySettings``) come from ``CDRFLOW_SMTP_*`` and two more environment
variables, and from a TOML file (``cdrflow live worker --config FILE``, else
``<home>/live.toml`` when there is one). The file wins over the environment, as with the
Kafka settings (``pipelines.kafka_config``): it is written for this worker, the environment
is ambient. Secrets are never taken from the command line, and never shown: the settings
print the password as ``***``, errors name a setting but not its value, and a webhook URL is
logged as its scheme and host alone (its path often carries a token).

``Deliverer.deliver`` never raises: every try's error is logged and the outcome
(``firings.Settled``) says delivered, or failed with the last error and the number of tries.
The SMTP conversation is blocking (``smtplib``) and runs in a worker thread, so that the
event loop of the live app never waits for a mail server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import smtplib
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pipelines.clock import now
from pipelines.home import NOT_OWNER
from pipelines.live.alerts import UNITS, Firing, iso, text
from pipelines.live.firings import Settled
from schemas.alerts import DELIVERED_OK, DELIVERY_FAILED
from schemas.errors import CdrflowError

log = logging.getLogger("cdrflow.live.alerts")
MASK = "***"
CONFIG_NAME = "live.toml"
# Seconds between the 5 tries: the last one about a minute after the first.
RETRIES = (5.0, 10.0, 15.0, 30.0)
ERROR_SHOWN = 500  # characters of an error kept in the record


@dataclass(frozen=True)
class DeliverySettings:
    """How firings reach people. ``smtp_host`` None: e-mail alerts fail as not configured."""

    smtp_host: str | None = None
    smtp_port: int | None = None  # None: 465 with ssl, else 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "cdrflow@localhost"
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_timeout: float = 30.0
    # Certificates to trust besides the system's (a relay with a certificate of a private CA).
    smtp_cafile: str | None = None
    webhook_timeout: float = 10.0
    retries: tuple[float, ...] = RETRIES

    @property
    def tries(self) -> int:
        return len(self.retries) + 1

    @property
    def port(self) -> int:
        return self.smtp_port or (465 if self.smtp_ssl else 25)

    def __repr__(self) -> str:
        shown = {
            f.name: (
                MASK if f.name == "smtp_password" and self.smtp_password else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return f"DeliverySettings({shown})"

    __str__ = __repr__


# Each setting: its environment variable, its place in the TOML file, and its kind.
_SETTINGS: dict[str, tuple[str, str, str, str]] = {
    "smtp_host": ("CDRFLOW_SMTP_HOST", "smtp", "host", "text"),
    "smtp_port": ("CDRFLOW_SMTP_PORT", "smtp", "port", "port"),
    "smtp_user": ("CDRFLOW_SMTP_USER", "smtp", "user", "text"),
    "smtp_password": ("CDRFLOW_SMTP_PASSWORD", "smtp", "password", "secret"),
    "smtp_from": ("CDRFLOW_SMTP_FROM", "smtp", "from", "text"),
    "smtp_starttls": ("CDRFLOW_SMTP_STARTTLS", "smtp", "starttls", "bool"),
    "smtp_ssl": ("CDRFLOW_SMTP_SSL", "smtp", "ssl", "bool"),
    "smtp_timeout": ("CDRFLOW_SMTP_TIMEOUT", "smtp", "timeout", "seconds"),
    "smtp_cafile": ("CDRFLOW_SMTP_CAFILE", "smtp", "cafile", "text"),
    "webhook_timeout": ("CDRFLOW_WEBHOOK_TIMEOUT", "webhook", "timeout", "seconds"),
    "retries": ("CDRFLOW_ALERT_RETRIES", "delivery", "retries", "retries"),
}
ENVIRONMENT = tuple(variable for variable, *_ in _SETTINGS.values())


def delivery_settings(
    home: Path | None = None,
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> DeliverySettings:
    """The settings from the environment, then the file (``config_file``, else
    ``<home>/live.toml`` when it exists), the file's values winning. Raises CdrflowError
    naming the variable or the file and key of a bad value, never a secret's value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (variable, _, _, kind) in _SETTINGS.items():
        raw = environ.get(variable, "").strip()
        if raw:
            values[name] = _parse(kind, raw, f"${variable}")
    if config_file is None and home is not None and (Path(home) / CONFIG_NAME).is_file():
        config_file = Path(home) / CONFIG_NAME
    if config_file is not None:
        values.update(_read_file(Path(config_file)))
    settings = DeliverySettings(**values)
    if settings.smtp_ssl and settings.smtp_starttls:
        raise CdrflowError(
            "SMTP: ssl (TLS from the start, port 465) and starttls (TLS after connecting, "
            "port 587) exclude each other; set one"
        )
    if (settings.smtp_user is None) != (settings.smtp_password is None):
        raise CdrflowError("SMTP: a user needs a password and a password a user; set both")
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CdrflowError(f"{path}: cannot read the live config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CdrflowError(f"{path}: the live config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CdrflowError(f"{path}: not TOML: {exc}") from None
    by_place = {(table, key): (name, kind) for name, (_, table, key, kind) in _SETTINGS.items()}
    tables = sorted({table for table, _ in by_place})
    values: dict[str, Any] = {}
    for table, entries in data.items():
        if table not in tables or not isinstance(entries, dict):
            raise CdrflowError(
                f"{path}: [{table}] is not a section of the live config file "
                f"(sections: {', '.join(tables)})"
            )
        for key, raw in entries.items():
            if (table, key) not in by_place:
                known = ", ".join(k for t, k in by_place if t == table)
                raise CdrflowError(f"{path}: [{table}] has no setting {key!r} (settings: {known})")
            name, kind = by_place[table, key]
            values[name] = _parse(kind, raw, f"{path}: [{table}] {key}")
    if "smtp_password" in values and path.stat().st_mode & NOT_OWNER:
        log.warning("%s holds the SMTP password and others may read it: chmod 600 %s", path, path)
    return values


def _parse(kind: str, raw: Any, where: str) -> Any:
    """One setting's value from an environment variable's text or a TOML value."""
    if kind in ("text", "secret"):
        if not isinstance(raw, str) or not raw.strip():
            raise CdrflowError(f"{where}: expected a non-empty string")
        if any(c in raw for c in "\r\n\x00"):
            raise CdrflowError(f"{where}: must be on one line")
        return raw.strip() if kind == "text" else raw
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in ("yes", "true", "1", "on"):
            return True
        if word in ("no", "false", "0", "off"):
            return False
        raise CdrflowError(f"{where}: expected yes or no, got {raw!r}")
    if kind == "port":
        try:
            port = int(raw) if not isinstance(raw, bool | float) else -1
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise CdrflowError(f"{where}: expected a TCP port 1..65535, got {raw!r}")
        return port
    if kind == "seconds":
        return _seconds(raw, where, positive=True)
    assert kind == "retries"
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not items:
        raise CdrflowError(f"{where}: expected the seconds between tries, e.g. 5,10,15,30")
    return tuple(_seconds(item, where, positive=False) for item in items)


def _seconds(raw: Any, where: str, *, positive: bool) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else -1.0
    except ValueError:
        value = -1.0
    if not (value > 0 if positive else value >= 0) or value != value or value > 86_400:
        wanted = "a number of seconds above 0" if positive else "numbers of seconds, 0 or more"
        raise CdrflowError(f"{where}: expected {wanted} (at most a day), got {raw!r}")
    return value


# -- the message -------------------------------------------------------------------------------


def channel_of(recipient: str) -> str:
    return "webhook" if recipient.lower().startswith(("http://", "https://")) else "email"


def shown(recipient: str) -> str:
    """A recipient as a log line shows it: a URL as its scheme and host (a webhook's path or
    query often holds its token), an address as it is."""
    if channel_of(recipient) == "email":
        return recipient
    parts = urlsplit(recipient)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def email(settings: DeliverySettings, firing: Firing) -> EmailMessage:
    """The e-mail of a firing: the summary as its subject; the facts, one a line, and the
    firing's JSON as its body. Its Message-ID is the firing's own, so that a mail system can
    tell a delivery made again (at least once) from a new alert."""
    unit = UNITS[firing.area]
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = firing.recipient
    message["Subject"] = f"cdrflow alert: {firing.summary()}"
    message["Date"] = format_datetime(firing.at)
    domain = settings.smtp_from.rpartition("@")[2] or "cdrflow"
    # The key and the time of the firing name it (an id may hold characters a Message-ID
    # may not: @ and :).
    digest = hashlib.sha256(f"{firing.key} {iso(firing.at)}".encode()).hexdigest()[:32]
    message["Message-ID"] = f"<cdrflow-alert.{digest}@{domain}>"
    lines = [
        f"Alert {firing.alert_id} ({firing.name}) fired for customer {firing.customer_id}.",
        "",
        f"customer:   {firing.customer_id}",
        f"area:       {firing.area}",
        f"value:      {text(firing.value)}{unit}",
        f"condition:  {firing.area} {firing.operator} {text(firing.threshold)}{unit}",
        f"threshold:  {text(firing.threshold)}{unit}",
        f"at:         {iso(firing.at)}",
        f"crossing:   {firing.crossing}",
        "",
        json.dumps(firing.message(), ensure_ascii=False),
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(settings: DeliverySettings, firing: Firing) -> None:
    """One SMTP conversation (blocking): connect, TLS as configured, log in, send."""
    if not settings.smtp_host:
        raise NotConfigured(
            "no SMTP server is configured: set CDRFLOW_SMTP_HOST or [smtp] host in live.toml"
        )
    context = ssl.create_default_context()
    if settings.smtp_cafile:
        context.load_verify_locations(cafile=settings.smtp_cafile)
    client: smtplib.SMTP
    if settings.smtp_ssl:
        client = smtplib.SMTP_SSL(
            settings.smtp_host, settings.port, timeout=settings.smtp_timeout, context=context
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.port, timeout=settings.smtp_timeout)
    with client:
        if settings.smtp_starttls:
            client.starttls(context=context)
        if settings.smtp_user is not None and settings.smtp_password is not None:
            client.login(settings.smtp_user, settings.smtp_password)
        client.send_message(email(settings, firing))


class NotConfigured(Exception):
    """Delivery cannot work until an operator changes a setting: no use trying again."""


class Deliverer:
    """Delivers firings, with retries; one HTTP session for all webhooks."""

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, firing: Firing) -> Settled:
        """Try up to ``settings.tries`` times, waiting ``settings.retries`` between tries;
        never raises (but for cancellation)."""
        channel = channel_of(firing.recipient)
        error = ""
        tries = 0
        for attempt in range(self.settings.tries):
            tries = attempt + 1
            try:
                if channel == "email":
                    await asyncio.to_thread(send_email, self.settings, firing)
                else:
                    await self._post(firing)
            except NotConfigured as exc:
                error, tries = str(exc), 0
                break
            except Exception as exc:  # a delivery failure never reaches the stream
                error = describe(exc)
                log.warning(
                    "alert %s: delivery to %s failed (try %d of %d): %s",
                    firing.key,
                    shown(firing.recipient),
                    tries,
                    self.settings.tries,
                    error,
                )
                if attempt < len(self.settings.retries):
                    await asyncio.sleep(self.settings.retries[attempt])
                continue
            log.info("alert %s: delivered to %s", firing.key, shown(firing.recipient))
            return Settled(channel, DELIVERED_OK, tries, None, now())
        log.error(
            "alert %s: not delivered to %s after %d tries: %s",
            firing.key,
            shown(firing.recipient),
            tries,
            error,
        )
        return Settled(channel, DELIVERY_FAILED, tries, error[:ERROR_SHOWN], now())

    async def _post(self, firing: Firing) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = json.dumps(firing.message(), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cdrflow-alerts",
            # The same on every try: a receiver can drop a delivery it already has.
            "Idempotency-Key": firing.key,
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        async with self._session.post(
            firing.recipient, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if not 200 <= response.status < 300:
                raise WebhookRefused(f"HTTP {response.status} {response.reason or ''}".strip())


class WebhookRefused(Exception):
    """The webhook answered, but not with a 2xx status."""


def describe(exc: BaseException) -> str:
    """An error as one line of its kind and text (a timeout's text is empty)."""
    if isinstance(exc, WebhookRefused):
        return str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
