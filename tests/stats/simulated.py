"""A small rated lake for tests that read one: the sample catalog and ~3000 simulated CDRs
over two days (2026-11-02 and 2026-11-03, by default), rated."""

from __future__ import annotations

from pathlib import Path

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.rate import rate_files
from pipelines.simulate import DEFAULT_START, read_catalog, simulate

SMALL_LAKE_CDRS = 3000
SMALL_LAKE_DAYS = 2


def small_lake(root: Path, days: int = SMALL_LAKE_DAYS, count: int = SMALL_LAKE_CDRS) -> Path:
    """Build the home ``root/home`` (catalog and lake) and return it; a few seconds."""
    home = root / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
        rows = read_catalog(catalog)
    cdrs = root / "cdrs.jsonl"
    counts = simulate(rows, count, cdrs, seed=7, start=DEFAULT_START, days=days)
    assert counts["records"] == count
    rate_files(home, [cdrs])
    return home
