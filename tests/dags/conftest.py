"""Fixtures of the Dagster tests: the billing tests' rated home (``tests.pipelines.billed``),
rated once per session and copied for each test, and ``$CDRFLOW_HOME`` and ``$CDRFLOW_NOW``
set to it as ``cdrflow ui`` sets them for the jobs it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.billed import NOW, copy_home, rated_home


@pytest.fixture(scope="session")
def billed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rated_home(tmp_path_factory.mktemp("billed"))


@pytest.fixture
def billed_home(billed_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = copy_home(billed_template, tmp_path)
    monkeypatch.setenv("CDRFLOW_HOME", str(home))
    monkeypatch.setenv("CDRFLOW_NOW", NOW.isoformat())
    return home
