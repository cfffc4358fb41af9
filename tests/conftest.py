"""Fixtures shared by every test: a fresh home, and the bundled sample catalog."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog


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
