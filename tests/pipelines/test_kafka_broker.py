"""The broker launcher's pieces that need no broker: fetching jars, ports, the log's why."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from pipelines.kafka_broker import (
    COMPLETE,
    START_MARK,
    Broker,
    _cluster_id,
    _ports_of,
    _why,
    ensure_jars,
    free_port,
)
from schemas.errors import CdrflowError


def test_jars_fetched_for_this_pom_are_not_fetched_again(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("not a pom: Maven would fail on it")
    lib = tmp_path / "target" / "lib"
    lib.mkdir(parents=True)
    (lib / COMPLETE).write_text(hashlib.sha256(pom.read_bytes()).hexdigest() + "\n")
    assert ensure_jars(tmp_path) == lib


def test_a_failed_fetch_names_the_command(tmp_path: Path) -> None:
    """A changed pom fetches again; when Maven fails, the operator gets its command and why."""
    (tmp_path / "pom.xml").write_text("<project>broken")
    lib = tmp_path / "target" / "lib"
    lib.mkdir(parents=True)
    (lib / COMPLETE).write_text("the digest of an older pom\n")
    with pytest.raises(CdrflowError, match=r"`mvn -q -B .*copy-dependencies.*` in ") as failed:
        ensure_jars(tmp_path)
    assert str(tmp_path) in str(failed.value)
    assert not (lib / COMPLETE).exists()


def test_no_pom_is_an_operator_error(tmp_path: Path) -> None:
    with pytest.raises(CdrflowError, match=r"pom\.xml is missing"):
        ensure_jars(tmp_path)


def test_written_properties_give_back_their_ports(tmp_path: Path) -> None:
    broker = Broker(tmp_path, 19092, 19093)
    broker._write_properties()
    text = (tmp_path / "server.properties").read_text()
    assert "auto.create.topics.enable=false" in text and "num.partitions=4" in text
    assert "controller.quorum.bootstrap.servers=127.0.0.1:19093" in text
    assert _ports_of(tmp_path / "server.properties") == (19092, 19093)
    assert _ports_of(tmp_path / "missing.properties") is None


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_free_ports_are_free() -> None:
    assert 1024 <= free_port() <= 65535


def test_the_why_of_a_failed_start_is_its_errors_then_its_end() -> None:
    run = [
        "[main] INFO a config line",
        "[main] ERROR kafka.network.DataPlaneAcceptor - Unable to start acceptor",
        "org.apache.kafka.common.KafkaException: Socket server failed to bind",
        "Caused by: java.net.BindException: Address already in use",
        "[main] ERROR kafka.network.DataPlaneAcceptor - Unable to start acceptor",
        *(f"[shutdown] INFO closing {i}" for i in range(50)),
    ]
    why = _why("\n".join(run)).splitlines()
    assert why[:3] == [run[1], run[3], "..."]  # each error once
    assert why[-1] == "[shutdown] INFO closing 49" and len(why) == 13
    assert _why("just\nthe end") == "just\nthe end"
    assert START_MARK.startswith("===")
