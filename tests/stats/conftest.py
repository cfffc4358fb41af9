"""Fixtures for the stats tests: one small rated lake, built once per session.

Rating is the slow part; the stats, report and notebook tests only read the lake, so they
share one home rather than each rating its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.rate import rate_files
from pipelines.simulate import DEFAULT_START, read_catalog, simulate

SMALL_LAKE_CDRS = 3000
SMALL_LAKE_DAYS = 2


@pytest.fixture(scope="session")
def small_lake_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the sample catalog and ~3000 simulated CDRs over two days, rated.

    Read-only for its users: the lake is shared by every test of the session.
    """
    root = tmp_path_factory.mktemp("small_lake")
    home = root / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
        rows = read_catalog(catalog)
    cdrs = simulate(
        rows,
        SMALL_LAKE_CDRS,
        root / "cdrs.jsonl",
        seed=7,
        start=DEFAULT_START,
        days=SMALL_LAKE_DAYS,
    )
    assert cdrs["records"] == SMALL_LAKE_CDRS
    rate_files(home, [root / "cdrs.jsonl"])
    return home
