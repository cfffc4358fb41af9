"""Fixtures of the command-line tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.home import catalog_path
from tests.pipelines.cli.driver import Cli


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalog imported once (hashing its passwords is what takes time)."""
    home = tmp_path_factory.mktemp("sample-home")
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
    assert not Path(f"{catalog_path(home)}-wal").exists()  # all of it is in the file
    return catalog_path(home)


@pytest.fixture
def sample(home: Path, sample_store: Path) -> Iterator[Catalog]:
    """As tests/conftest.py's ``sample`` (the bundled sample in ``home``), but a copy."""
    home.mkdir(parents=True)
    shutil.copyfile(sample_store, catalog_path(home))
    with Catalog(home) as store:
        yield store
