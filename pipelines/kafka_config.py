"""How cdrflow's Kafka clients reach a cluster: bootstrap, security settings and secrets.

Every producer and consumer takes its librdkafka settings from ``client_config``, so that
a cluster with TLS and SASL is configured once for all of them. Secrets come from the
environment (``CDRFLOW_KAFKA_*``, as a container's secrets are mounted) or from a file of
``key=value`` librdkafka properties named with ``--kafka-config``; never from the command
line, where ``ps`` and the shell's history would show them, and never into a log: the
mapping ``client_config`` returns prints its secrets as ``***``.

Precedence, lowest first: the environment, then the file, then the bootstrap argument. A
file is named for one run, so it is more specific than the ambient environment; the
bootstrap is what the command was told to reach.

librdkafka's own log lines (``%3|…|FAIL|…`` on stderr by default, one per retry: a worker
that cannot reach its broker printed two every 50 ms beside its one clean message) go to the
``cdrflow.kafka.librdkafka`` logger instead (the ``logger`` setting every client gets here),
and each distinct line is logged once (``Once``): again only after ``Once.EVERY`` seconds,
with how many times it came meanwhile. A stream's log shows it with its own lines; the other
commands show warnings and errors on stderr.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from schemas.errors import CdrflowError

# The environment variables an operator sets, and the librdkafka property each one fills.
ENVIRONMENT = {
    "CDRFLOW_KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "CDRFLOW_KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "CDRFLOW_KAFKA_SASL_USERNAME": "sasl.username",
    "CDRFLOW_KAFKA_SASL_PASSWORD": "sasl.password",
    "CDRFLOW_KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MASK = "***"
# Properties whose values are secrets: private keys and every password or client secret.
_SECRET_WORDS = ("password", "secret")
_SECRET_KEYS = frozenset({"ssl.key.pem", "sasl.oauthbearer.config", "ssl_key"})


def is_secret(key: str) -> bool:
    """Whether a property holds a secret, so that it is masked wherever it is shown."""
    key = key.lower()
    return key in _SECRET_KEYS or any(word in key for word in _SECRET_WORDS)


class Once(logging.Filter):
    """Each distinct librdkafka line once, then again at most every ``EVERY`` seconds, saying
    how many times it came meanwhile. Lines are told apart by their text without the client's
    name, thread and timings (a producer and a consumer failing to connect to one broker say
    one thing), and shown as ``kafka: <text>``."""

    EVERY = 300.0
    # librdkafka's "[thrd:…]: " and "(after 0ms in state CONNECT, 3 identical error(s)
    # suppressed)": they differ between repeats of one line.
    _NOISE = re.compile(
        r"^\[thrd:[^\]]*\]: "
        r"|\s*\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)"
    )

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}  # text → [when last shown, repeats since]

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs ("%s [%s] %s", facility, client name, text).
        args = record.args if isinstance(record.args, tuple) else ()
        text = self._NOISE.sub("", str(args[-1] if args else record.msg)).strip()
        now = self.clock()
        with self.lock:
            seen = self.seen.get(text)
            if seen is not None and now - seen[0] < self.every:
                seen[1] += 1
                return False
            if len(self.seen) > 1000:  # the lines of a long life: keep the recent ones
                self.seen = {t: s for t, s in self.seen.items() if now - s[0] < self.every}
            self.seen[text] = [now, 0]
        if seen is not None and seen[1]:
            text += f" ({seen[1]:.0f} more times in the {now - seen[0]:.0f} s before)"
        record.msg, record.args = "kafka: %s", (text,)
        return True


LIBRDKAFKA_LOG = logging.getLogger("cdrflow.kafka.librdkafka")
LIBRDKAFKA_LOG.addFilter(Once())


class ClientConfig(dict[str, Any]):
    """librdkafka properties that never print a secret.

    A plain dict, so confluent-kafka's clients take it as it is; only its text is masked, as
    a config often ends up in an error message, a log line or a test's assertion output.
    """

    def __repr__(self) -> str:
        shown = {k: MASK if is_secret(k) else v for k, v in self.items()}
        return f"ClientConfig({shown!r})"

    __str__ = __repr__


def client_config(
    bootstrap: str,
    config_file: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """The librdkafka settings to reach ``bootstrap``: the environment's, then the file's.

    ``environ`` defaults to ``os.environ`` (tests pass their own). Raises CdrflowError, naming
    the setting but never its value, when the file cannot be read or a setting is
    inconsistent (SASL credentials over a protocol that would not send them).
    """
    if not bootstrap.strip():
        raise CdrflowError("no Kafka bootstrap servers given (e.g. --kafka 127.0.0.1:9092)")
    environ = os.environ if environ is None else environ
    config = ClientConfig()
    for variable, key in ENVIRONMENT.items():
        value = environ.get(variable, "").strip()
        if value:
            config[key] = value
    if config_file is not None:
        config.update(read_properties(Path(config_file)))
    config["bootstrap.servers"] = bootstrap.strip()
    _check(config, config_file)
    config["logger"] = LIBRDKAFKA_LOG
    return config


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a Java-style properties file: blank lines and lines starting
    with ``#`` or ``!`` are comments. Errors name the line, never its text (it may be a
    password)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CdrflowError(f"{path}: cannot read the Kafka config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CdrflowError(f"{path}: the Kafka config file is not UTF-8 text") from None
    properties: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not key:
            raise CdrflowError(
                f"{path}, line {number}: expected key=value (a librdkafka property such as "
                "security.protocol=SASL_SSL)"
            )
        properties[key] = value.strip()
    return properties


def _check(config: Mapping[str, Any], source: Path | str | None) -> None:
    """Refuse settings that would fail late or silently: an unknown protocol, half a pair
    of SASL credentials, or credentials over a protocol that does not use SASL."""
    where = f"the environment or {source}" if source is not None else "the environment"
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise CdrflowError(
            f"security.protocol (from {where}) must be one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    has_user = bool(config.get("sasl.username"))
    has_password = bool(config.get("sasl.password"))
    if has_user != has_password:
        missing = "sasl.password" if has_user else "sasl.username"
        raise CdrflowError(
            f"{missing} is missing: SASL needs a username and a password (set "
            "CDRFLOW_KAFKA_SASL_USERNAME and CDRFLOW_KAFKA_SASL_PASSWORD, or both in the file)"
        )
    if has_user and not protocol.startswith("SASL_"):
        raise CdrflowError(
            f"SASL credentials are set but security.protocol is {protocol}, which would not "
            "send them; set CDRFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
        )
