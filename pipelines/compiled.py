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
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.home import catalog_path
from rating.tables import Tables

if TYPE_CHECKING:
    from pipelines.catalog import Catalog

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


def stored_state(home: Path) -> str | None:
    """``Catalog.state()`` read with sqlite3 alone; None when it is not there to read (no
    store yet, a store never changed or older than the state, a lock). With the tables in
    the cache, a run then needs neither SQLAlchemy nor the store's checks on opening: most
    of the 0.2-0.3 s a short ``cdrflow rate`` saved (1.70 -> 1.47 s for one line)."""
    path = catalog_path(home)
    if not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM catalog_meta WHERE key = 'state'").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def cached_tables(
    home: Path, compile: Callable[[Catalog], Tables], catalog: Catalog | None = None
) -> Tables:
    """The catalog's compiled tables, from the cache when it holds them for this state.
    Without ``catalog``, the state is read with sqlite3 (``stored_state``) and the store is
    opened only to compile."""
    state = catalog.state() if catalog is not None else stored_state(home)
    if state is not None:
        try:
            with _cache_file(home, state).open("rb") as f:
                tables: Tables = pickle.load(f)
            return tables
        except (FileNotFoundError, EOFError, pickle.UnpicklingError):
            pass
    if catalog is not None:
        return _compiled(home, catalog, compile)
    from pipelines.catalog import Catalog  # here, not at the top: see stored_state

    with Catalog(home) as opened:
        return _compiled(home, opened, compile)


def _cache_file(home: Path, state: str) -> Path:
    return cache_folder(home) / f"tables-{state}-{_code_key()}.pickle"


def _compiled(home: Path, catalog: Catalog, compile: Callable[[Catalog], Tables]) -> Tables:
    """Compile the catalog, and keep the result in the cache under its state."""
    state = catalog.state()
    if state is None:  # a store never changed since creation or migration: nothing to key on
        return compile(catalog)
    tables = compile(catalog)
    if catalog.state() != state:  # changed while compiling: which state this is is unknown
        return tables
    folder = cache_folder(home)
    path = _cache_file(home, state)
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
