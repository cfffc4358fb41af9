"""Fixtures of the reading and rating tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection in UTC, as ``cdrflow rate`` opens one."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def billed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The billing tests' home (``tests.pipelines.billed``), rated once per session."""
    from tests.pipelines.billed import rated_home  # the rater: only for tests that bill

    return rated_home(tmp_path_factory.mktemp("billed"))


@pytest.fixture
def billed_home(billed_template: Path, tmp_path: Path) -> Path:
    """A copy of ``billed_template`` for one test to change."""
    from tests.pipelines.billed import copy_home

    return copy_home(billed_template, tmp_path)
