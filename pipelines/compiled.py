"""Compiled rate tables cached in the home, one file per catalog state.

Compiling a catalog of hundreds of thousands of rate rows takes seconds; loading the
compiled arrays takes a tenth of that. A cache file is named by the catalog's state (new at
every committed change, ``Catalog.state``) and by the code that compiles (the sources of the
compiler and its kernels, numpy's and Python's versions), so a changed catalog or a new
cdrflow never meets an old file. Files are written atomically; only the newest is kept.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.catalog import Catalog
from rating.tables import Tables

# The code whose output is cached: a change to any of them makes every cache file stale.
_SOURCES = ("rating/tables.py", "rating/kernels.py", "pipelines/rate.py", "pipelines/compiled.py")
_ROOT = Path(__file__).resolve().parent.parent


def cache_folder(home: Path) -> Path:
    return home / "cache"


def _code_key() -> str:
    digest = hashlib.blake2b(digest_size=8)
    for name in _SOURCES:
        digest.update((_ROOT / name).read_bytes())
    digest.update(f"{np.__version__} {platform.python_version()}".encode())
    return digest.hexdigest()


def cached_tables(home: Path, catalog: Catalog, compile: Callable[[Catalog], Tables]) -> Tables:
    """The catalog's compiled tables, from the cache when it holds them for this state."""
    state = catalog.state()
    if state is None:  # a store never changed since creation or migration: nothing to key on
        return compile(catalog)
    folder = cache_folder(home)
    path = folder / f"tables-{state}-{_code_key()}.pickle"
    try:
        with path.open("rb") as f:
            tables: Tables = pickle.load(f)
        return tables
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        pass
    tables = compile(catalog)
    if catalog.state() != state:  # changed while compiling: which state this is is unknown
        return tables
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    extra, tables.extra = tables.extra, {}
    try:
        with tmp.open("wb") as f:
            pickle.dump(tables, f, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        tables.extra = extra
    os.replace(tmp, path)
    for old in folder.glob("tables-*.pickle"):
        if old != path:
            old.unlink(missing_ok=True)
    return tables
