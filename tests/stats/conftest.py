"""Fixtures for the stats tests: one small rated lake, built once per session.

Rating is the slow part; the stats, report and notebook tests only read the lake, so they
share one home rather than each rating its own. (Tests outside ``tests/stats`` can build
their own with ``tests.stats.simulated.small_lake``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stats.simulated import small_lake


@pytest.fixture(scope="session")
def small_lake_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the sample catalog and ~3000 simulated CDRs over two days, rated.

    Read-only for its users: the lake is shared by every test of the session.
    """
    return small_lake(tmp_path_factory.mktemp("small_lake"))
