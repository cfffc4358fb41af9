"""Compiled rate tables cached in the home, one file per catalog state.

Compiling a catalog of hundreds of thousands of rate rows takes seconds. A cache file is
named by the catalog's state (new at every committed change, ``Catalog.state``) and by the
code that compiles (the sources of the compiler and its kernels, numpy's and Python's
versions), so a changed catalog or a new cdrflow never meets an old file. Files are written
atomically; only the newest is kept.

A file is a pickle whose arrays are stored beside it, each at a 64-byte boundary (pickle
protocol 5's out-of-band buffers), and it is loaded by mapping the file copy-on-write: the
arrays are views of the mapping, writable (numba compiles its kernels for writable arrays)
and read from disk only where a run touches them, and processes that load the same file
(stream workers of one home) share its pages. Loading takes 0.05-0.08 s (the names'
lists are still unpickled) instead of the 0.12-0.2 s of unpickling and copying 70 MiB of
arrays.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import platform
import sqlite3
import struct
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
_MAGIC = b"CDRFTAB1"
_ALIGN = 64  # a slot row of the rate hash is one cache line, in the file as in memory


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
            return load_tables_file(_cache_file(home, state))
        except (FileNotFoundError, ValueError, EOFError, pickle.UnpicklingError):
            pass
    if catalog is not None:
        return _compiled(home, catalog, compile)
    from pipelines.catalog import Catalog  # here, not at the top: see stored_state

    with Catalog(home) as opened:
        return _compiled(home, opened, compile)


def _cache_file(home: Path, state: str) -> Path:
    return cache_folder(home) / f"tables-{state}-{_code_key()}.tables"


def _aligned(at: int) -> int:
    return -(-at // _ALIGN) * _ALIGN


def save_tables_file(tables: Tables, path: Path) -> None:
    """``tables`` to ``path`` (not atomically: see ``_compiled``): a header, the arrays'
    buffers each at a 64-byte boundary, then the pickle that refers to them."""
    buffers: list[pickle.PickleBuffer] = []
    extra, tables.extra = tables.extra, {}
    try:
        data = pickle.dumps(tables, protocol=5, buffer_callback=buffers.append)
    finally:
        tables.extra = extra
    parts = [*(b.raw() for b in buffers), memoryview(data)]  # the pickle last
    at = _aligned(len(_MAGIC) + 8 + 16 * len(parts))
    spans = []
    for part in parts:
        spans.append((at, part.nbytes))
        at = _aligned(at + part.nbytes)
    with path.open("wb") as f:
        f.write(_MAGIC + struct.pack("<Q", len(buffers)))
        f.write(b"".join(struct.pack("<QQ", *span) for span in spans))
        for (offset, _), part in zip(spans, parts, strict=True):
            f.seek(offset)
            f.write(part)


def load_tables_file(path: Path) -> Tables:
    """Tables saved by ``save_tables_file``, their arrays views of a copy-on-write mapping
    of the file (of a copy in memory where the file system cannot map it). ValueError for
    a file that is not one."""
    with path.open("rb") as f:
        try:
            mapped: mmap.mmap | bytearray = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except ValueError:  # an empty file
            raise ValueError(f"{path}: an empty compiled-tables file") from None
        except OSError:
            mapped = bytearray(f.read())
    view = memoryview(mapped)
    if view[: len(_MAGIC)] != _MAGIC or len(view) < len(_MAGIC) + 8:
        raise ValueError(f"{path}: not a compiled-tables file")
    (count,) = struct.unpack_from("<Q", view, len(_MAGIC))
    if len(_MAGIC) + 8 + 16 * (count + 1) > len(view):
        raise ValueError(f"{path}: a compiled-tables file cut short")
    spans = [struct.unpack_from("<QQ", view, len(_MAGIC) + 8 + 16 * i) for i in range(count + 1)]
    if any(offset + size > len(view) for offset, size in spans):
        raise ValueError(f"{path}: a compiled-tables file cut short")
    parts = [view[offset : offset + size] for offset, size in spans]
    tables: Tables = pickle.loads(parts[-1], buffers=parts[:-1])
    return tables


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
    save_tables_file(tables, tmp)
    os.replace(tmp, path)
    # Older files (".pickle": the format before the mapped one). A process that has one
    # mapped keeps reading it: unlinking does not take its pages away.
    for old in folder.glob("tables-*"):
        if old != path:
            old.unlink(missing_ok=True)
    return tables
