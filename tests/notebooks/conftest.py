"""Fixtures of the notebook tests: the stats tests' small rated lake.

A fixture is seen only below its conftest, so the notebooks borrow it by import (which
builds a second copy of the lake when both folders run in one session).
"""

from tests.stats.conftest import small_lake_home  # noqa: F401
