"""Kafka client settings: from the environment and a properties file, secrets never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipelines.kafka_config import ClientConfig, client_config, is_secret
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
        "bootstrap.servers": "10.0.0.5:9092,10.0.0.6:9092"
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
