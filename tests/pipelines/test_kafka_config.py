"""Kafka client settings: from the environment and a properties file, secrets never shown."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipelines.kafka_config import LIBRDKAFKA_LOG, ClientConfig, Once, client_config, is_secret
from schemas.errors import CdrflowError
from tests.pipelines.cli.driver import Cli

SECRET = "pa55-w0rd-that-must-not-leak"
SASL_ENV = {
    "CDRFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "CDRFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "CDRFLOW_KAFKA_SASL_USERNAME": "rater",
    "CDRFLOW_KAFKA_SASL_PASSWORD": SECRET,
    "CDRFLOW_KAFKA_SSL_CA_LOCATION": "/etc/ssl/kafka-ca.pem",
}


def test_plain_bootstrap_alone() -> None:
    assert client_config(" 10.0.0.5:9092,10.0.0.6:9092 ", environ={}) == {
        "bootstrap.servers": "10.0.0.5:9092,10.0.0.6:9092",
        "logger": LIBRDKAFKA_LOG,
    }


def test_the_environment_fills_security_settings() -> None:
    config = client_config("kafka:9093", environ={**SASL_ENV, "CDRFLOW_OTHER": "x"})
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "rater",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/ssl/kafka-ca.pem",
        "bootstrap.servers": "kafka:9093",
        "logger": LIBRDKAFKA_LOG,
    }


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    assert client_config("kafka:9093")["sasl.password"] == SECRET


def test_a_file_overrides_the_environment_and_the_argument_wins(tmp_path: Path) -> None:
    path = tmp_path / "kafka.properties"
    path.write_text(
        "# cluster eu-1\n"
        "! also a comment\n"
        "\n"
        "  sasl.username = billing  \n"
        f"sasl.password={SECRET}\n"
        "sasl.oauthbearer.config=scope=a=b\n"
        "bootstrap.servers=elsewhere:9092\n"
        "compression.type=zstd\n",
        encoding="utf-8",
    )
    config = client_config("kafka:9093", path, environ=SASL_ENV)
    assert config["sasl.username"] == "billing"
    assert config["sasl.password"] == SECRET
    assert config["sasl.oauthbearer.config"] == "scope=a=b"  # split at the first '=' only
    assert config["security.protocol"] == "SASL_SSL"  # from the environment
    assert config["compression.type"] == "zstd"
    assert config["bootstrap.servers"] == "kafka:9093"


def test_secrets_never_appear_in_text(caplog: pytest.LogCaptureFixture) -> None:
    config = client_config("kafka:9093", environ=SASL_ENV)
    for text in (repr(config), str(config), f"{config}", f"{config!r}", str([config])):
        assert SECRET not in text
        assert "'sasl.password': '***'" in text and "'sasl.username': 'rater'" in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("cdrflow.kafka").info("connecting with %s", config)
        logging.getLogger("cdrflow.kafka").info("connecting with %r", config)
    assert SECRET not in caplog.text and "***" in caplog.text
    # The client itself still gets the real value.
    assert isinstance(config, dict) and dict(config)["sasl.password"] == SECRET


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.key.pem", True),
        ("sasl.username", False),
        ("ssl.ca.location", False),
        ("ssl.certificate.pem", False),
    ],
)
def test_which_keys_are_secret(key: str, secret: bool) -> None:
    assert is_secret(key) is secret
    shown = repr(ClientConfig({key: "value-123"}))
    assert ("value-123" in shown) is not secret


def test_a_bad_line_is_named_but_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "kafka.properties"
    path.write_text(f"security.protocol=SASL_SSL\nsasl.password {SECRET}\n", encoding="utf-8")
    with pytest.raises(CdrflowError, match=r"line 2: expected key=value") as refused:
        client_config("kafka:9093", path, environ={})
    assert SECRET not in str(refused.value)


def test_unreadable_files_are_operator_errors(tmp_path: Path) -> None:
    with pytest.raises(CdrflowError, match="cannot read the Kafka config file"):
        client_config("kafka:9093", tmp_path / "missing.properties", environ={})
    binary = tmp_path / "binary.properties"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CdrflowError, match="not UTF-8"):
        client_config("kafka:9093", binary, environ={})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CDRFLOW_KAFKA_SASL_USERNAME": "rater"}, "sasl.password is missing"),
        ({"CDRFLOW_KAFKA_SASL_PASSWORD": SECRET}, "sasl.username is missing"),
        (
            {"CDRFLOW_KAFKA_SASL_USERNAME": "rater", "CDRFLOW_KAFKA_SASL_PASSWORD": SECRET},
            "security.protocol is PLAINTEXT, which would not send them",
        ),
        ({"CDRFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
    ],
)
def test_inconsistent_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(CdrflowError, match=message) as refused:
        client_config("kafka:9093", environ=environ)
    assert SECRET not in str(refused.value)


def test_no_bootstrap_is_refused() -> None:
    with pytest.raises(CdrflowError, match="no Kafka bootstrap servers"):
        client_config("  ", environ={})


def test_the_command_never_prints_a_secret(home: Path, tmp_path: Path) -> None:
    """A refused config file: the operator learns what is wrong, the terminal no secret. The
    settings are checked before anything connects, so no broker is needed."""
    cli = Cli(home)
    path = tmp_path / "kafka.properties"
    path.write_text(f"sasl.username=rater\nsasl.password={SECRET}\n", encoding="utf-8")
    result = cli.run(
        "simulate", "--count", "5", "--kafka", "127.0.0.1:9", "--kafka-config", str(path)
    )
    assert result.exit_code == 1
    assert "SASL credentials are set but security.protocol is PLAINTEXT" in result.stderr
    assert SECRET not in result.output
    assert "password" not in cli.ok("simulate", "--help").stdout.replace("sasl.password", "")


# -- librdkafka's own lines: through cdrflow's logging, once each --------------------------------

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def librdkafka_record(text: str, client: str = "rdkafka#producer-1") -> logging.LogRecord:
    """A record as confluent-kafka hands its logger one."""
    return logging.LogRecord(
        "cdrflow.kafka.librdkafka", logging.ERROR, "", 0, "%s [%s] %s", ("FAIL", client, text), None
    )


def test_each_line_is_said_once_then_again_after_a_while_with_its_count() -> None:
    now = [0.0]
    once = Once(every=300, clock=lambda: now[0])
    fail = "[thrd:k:9092/bootstrap]: k:9092/bootstrap: Connect to ipv4#10.0.0.5:9092 failed: "
    first = librdkafka_record(fail + "Connection refused (after 0ms in state CONNECT)")
    assert once.filter(first) and first.getMessage() == (
        "kafka: k:9092/bootstrap: Connect to ipv4#10.0.0.5:9092 failed: Connection refused"
    )
    # The same failure from another client, later, with librdkafka's own count: held back.
    for text in (
        "Connection refused (after 1ms in state CONNECT)",
        "Connection refused (after 0ms in state CONNECT, 4 identical error(s) suppressed)",
    ):
        now[0] += 10
        assert not once.filter(librdkafka_record(fail + text, "rdkafka#consumer-2"))
    other = librdkafka_record(fail + "Connection timed out (after 1000ms in state CONNECT)")
    assert once.filter(other)  # another line is said at once
    now[0] = 400
    again = librdkafka_record(fail + "Connection refused (after 0ms in state CONNECT)")
    assert once.filter(again)
    assert again.getMessage().endswith("Connection refused (2 more times in the 400 s before)")


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_that_cannot_connect_says_so_once_through_logging() -> None:
    """The real client against a closed port: librdkafka fails to connect every few tens of
    milliseconds; its lines reach cdrflow's logger, and one of them is said."""
    kept = Kept()
    LIBRDKAFKA_LOG.addHandler(kept)
    try:
        producer = Producer(dict(client_config(f"127.0.0.1:{closed_port()}", environ={})))
        deadline = time.monotonic() + 60
        while not kept.records and time.monotonic() < deadline:
            producer.poll(0.2)
        for _ in range(10):  # many more attempts fail meanwhile
            producer.poll(0.2)
    finally:
        LIBRDKAFKA_LOG.removeHandler(kept)
    said = [r.getMessage() for r in kept.records]
    assert len(said) == 1 and "Connection refused" in said[0], said
    assert said[0].startswith("kafka: 127.0.0.1:") and "[thrd:" not in said[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "stream"])
def test_a_command_against_a_closed_port_says_it_in_one_line_and_no_librdkafka_line(
    sample: object, home: Path, command: str
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    args = {
        "simulate": ["simulate", "--count", "10", "--kafka", bootstrap],
        "stream": ["stream", "--bootstrap", bootstrap, "--idle-exit", "1"],
    }[command]
    done = subprocess.run(
        [CDRFLOW, "--home", str(home), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "%3|" not in done.stderr and "FAIL" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: cannot reach Kafka at {bootstrap} within "), line
