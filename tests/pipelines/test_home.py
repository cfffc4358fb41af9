"""A home is its owner's alone: 0600 files and 0700 directories, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.cli.demo import sample_catalog
from pipelines.home import catalog_path
from pipelines.lakefiles import lake_lock
from tests.pipelines.workload import records, write_jsonl

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")


def modes(home: Path) -> dict[str, str]:
    """Every path under the home (the home too) with its permission bits."""
    found = {".": oct(stat.S_IMODE(home.stat().st_mode))}
    for path in home.rglob("*"):
        found[str(path.relative_to(home))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def run(umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``cdrflow ARGS`` started with ``umask``, as an operator's shell would start it."""
    command = " ".join(f"'{a}'" for a in (CDRFLOW, *args))
    done = subprocess.run(
        ["sh", "-c", f"umask {umask:03o} && exec {command}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask 000", "umask 022"])
def test_every_file_and_directory_a_command_makes_is_the_owner_s_alone(
    tmp_path: Path, umask: int
) -> None:
    home = tmp_path / "home"
    cdrs = write_jsonl(tmp_path / "cdrs.jsonl", records(2000, seed=4), broken_every=400)
    run(umask, "--home", str(home), "catalog", "import", str(sample_catalog()))
    run(umask, "--home", str(home), "rate", str(cdrs))
    run(umask, "--home", str(home), "stats", "--by", "customer")
    found = modes(home)
    # What the commands made: the catalog (and SQLite's WAL), the cache, the lake.
    assert {"catalog.sqlite", "cache", "lake/.lock", "lake/_runs", "lake/rated"} <= set(found)
    assert any(p.startswith("lake/rated/date=") and p.endswith(".parquet") for p in found)
    assert any(p.startswith("lake/_rollup/") for p in found)
    wrong = {
        path: mode
        for path, mode in found.items()
        if mode != ("0o700" if (home / path).is_dir() else "0o600")
    }
    assert wrong == {}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """This process under umask 022, as a program that uses cdrflow's modules may be."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_a_home_made_by_the_modules_under_a_loose_umask_is_closed(
    tmp_path: Path, loose_umask: None
) -> None:
    with Catalog(tmp_path / "by-the-store") as catalog:
        catalog.add("providers", {"provider_id": "p", "name": "P", "currency": "USD"})
        path = catalog_path(catalog.home)
        assert Path(f"{path}-wal").exists()
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert stat.S_IMODE((tmp_path / "by-the-store").stat().st_mode) == 0o700
    with lake_lock(tmp_path / "by-the-lake"):
        pass
    assert stat.S_IMODE((tmp_path / "by-the-lake").stat().st_mode) == 0o700


def test_a_catalog_open_to_others_is_closed_when_opened_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    with Catalog(home) as catalog:
        catalog.add("providers", {"provider_id": "p", "name": "P", "currency": "USD"})
        path = catalog_path(home)
        for file in (path, Path(f"{path}-wal")):
            file.chmod(0o644)  # as an older cdrflow, or a copy, left them
        with caplog.at_level(logging.WARNING, logger="cdrflow.home"), Catalog(home) as again:
            assert again.get("providers", "p")["name"] == "P"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and f"{path} was open to others (0644)" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cdrflow.home"), Catalog(home):
        pass
    assert caplog.records == []  # said once: it is closed now
