"""Fixtures shared by every test: a fresh home, the bundled sample catalog, and a real Kafka
broker for the tests that need one (tests/kafka, tests/live)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog

if TYPE_CHECKING:
    from pipelines.kafka_broker import Broker


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def catalog(home: Path) -> Iterator[Catalog]:
    with Catalog(home) as store:
        yield store


@pytest.fixture
def sample(catalog: Catalog) -> Catalog:
    """A catalog loaded with the bundled sample."""
    import_directory(catalog, sample_catalog())
    return catalog


@pytest.fixture
def sample_dir() -> Path:
    return sample_catalog()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failed test: nothing may pass by not running."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


class SmallDisk:
    """A file system of its own (a tmpfs), to be filled up: what a full disk does to a
    command is tested on a real one, not on a stand-in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self, leave: int) -> None:
        """Take all the space but ``leave`` bytes (free() gives it back)."""
        free = shutil.disk_usage(self.path).free
        with self.filler.open("ab") as f:
            f.write(bytes(max(0, free - leave)))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs mounted for the test (we are root here and in CI) and unmounted after
    it, whatever happens."""
    path = tmp_path / "disk"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs for a full disk: {done.stderr}"
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Kafka broker for the session (CONVENTIONS 8: on a free port on 127.0.0.1,
    stopped whatever happens). It is stopped by its own PID three ways, so that no JVM
    outlives the run: the fixture's teardown, an ``atexit`` hook (a session ended by an
    error outside the fixtures), and Linux's parent-death signal (a test run that is itself
    killed)."""
    from pipelines.kafka_broker import Broker

    broker = Broker.start(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    atexit.register(broker.stop)
    try:
        yield broker
    finally:
        broker.stop()
        atexit.unregister(broker.stop)


@pytest.fixture
def topic(kafka_broker: Broker, request: pytest.FixtureRequest) -> str:
    """A new topic of 4 partitions named after the test, so tests never see each other's
    messages and a failure names the topic to look at."""
    from tests.kafka.reader import unique_name

    name = unique_name(request.node.name)
    kafka_broker.create_topic(name, partitions=4)
    return name
