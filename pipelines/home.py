"""The home directory every command works on (SPEC §2)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "cdrflow-home"
ENV_HOME = "CDRFLOW_HOME"


def resolve_home(option: str | os.PathLike[str] | None = None) -> Path:
    """``--home PATH``, else ``$CDRFLOW_HOME``, else ``./cdrflow-home``."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_HOME)
    return Path(env) if env else Path(DEFAULT_HOME)


def catalog_path(home: Path) -> Path:
    return home / "catalog.sqlite"


def rated_lake(home: Path) -> Path:
    return home / "lake" / "rated"


def invoices_dir(home: Path) -> Path:
    """Rendered invoices and notes, ``<number>.html`` and ``<number>.pdf`` (SPEC §2)."""
    return home / "invoices"
