"""Compiled rate tables cached in the home, one file per catalog state.

Compiling a catalog of hundreds of thousands of rate rows takes seconds. A cache file is
named by the catalog's state (new at every committed change, ``Catalog.state``) and by the
code that compiles (the sources of the compiler and its kernels, numpy's and Python's
versions), so a changed catalog or a new cdrflow never meets an old file. Files are written
atomically; only the newest is kept.

A file holds data, never code (it used to be a pickle, which runs what it names): a fixed
header (magic, format, the lengths of the directory and of the file, and an xxh3-128
checksum of every other byte of the file), a JSON directory (the key the file was saved
under, the tables' numbers and names as JSON, and each array's name, dtype, shape, offset
and length), then each array's bytes at a 64-byte boundary. Loading checks the header and
the checksum, then the directory (every field of ``Tables`` there and nothing else, each
array of its field's dtype, in order, apart and inside the file), then every bound the
kernels rely on (``rating.tables.check``): a file that fails any of it is compiled again,
and nothing of it reaches a kernel. The arrays are views of a copy-on-write mapping of the
file: writable (numba compiles its kernels for writable arrays) and shared between the
processes that load one file (the stream workers of a home).

The checksum is xxh3 rather than a cryptographic hash because it guards against damage (a
torn write, a flipped bit), not against a forger, who could recompute any unkeyed hash:
the checks after it are what keep a crafted file from the kernels. Over the 90 MiB of a
285,000-row catalog's tables xxh3 takes 4 ms where blake2b took 100.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import math
import mmap
import os
import platform
import sqlite3
import struct
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import xxhash

from pipelines.home import catalog_path
from rating.tables import Strings, Tables, Texts, check

if TYPE_CHECKING:
    from pipelines.catalog import Catalog

# The code whose output is cached: a change to any of them makes every cache file stale.
_SOURCES = ("rating/tables.py", "rating/kernels.py", "pipelines/rate.py", "pipelines/compiled.py")
_ROOT = Path(__file__).resolve().parent.parent
_MAGIC = b"CDRFTBL\x00"
_FORMAT = 2  # 1 was the pickle
# Magic, format, flags (0), directory length, data offset, file length; the checksum of every
# byte of the file but its own follows at _DIGEST_AT.
_HEADER = struct.Struct("<8sIIQQQ")
_DIGEST_AT = _HEADER.size
_DIGEST_END = _DIGEST_AT + 16
_DIRECTORY_AT = 64
_ALIGN = 64  # a slot row of the rate hash is one cache line, in the file as in memory
log = logging.getLogger("cdrflow.cache")


class BadTablesFile(ValueError):
    """A cache file that is not whole, not of this format, or not safe to hand the kernels."""


def _kind(field: dataclasses.Field[Any]) -> str:
    """How a field of ``Tables`` is kept in a file."""
    if field.name in ("customer_index", "card_index", "extra"):
        return "derived"  # rebuilt from the ids on loading; extra is the engine's memo
    if field.name in ("ip_networks", "user_entries", "auth_order"):
        return field.name
    kinds = {"I64": "array", "npt.NDArray[np.uint64]": "array", "Strings": "strings"}
    kinds |= {"Sequence[str]": "names"}  # a Strings in the file, Texts when loaded
    kinds |= {"int": "int", "list[str]": "texts", "list[str | None]": "optional texts"}
    if field.type not in kinds:  # a new kind of field needs a form here and a check below
        raise TypeError(f"Tables.{field.name} ({field.type}) has no form in a cache file")
    return kinds[str(field.type)]


_KINDS = {f.name: _kind(f) for f in dataclasses.fields(Tables)}
# Every array of a file, and its dtype.
_ARRAYS: dict[str, np.dtype[Any]] = {}
for _name, _k in _KINDS.items():
    if _k == "array":
        _ARRAYS[_name] = np.dtype("<u8" if _name == "bloom" else "<i8")
    elif _k in ("strings", "names"):
        _ARRAYS[f"{_name}.offsets"], _ARRAYS[f"{_name}.data"] = np.dtype("<i8"), np.dtype("u1")
_VALUES = frozenset(
    n for n, k in _KINDS.items() if k not in ("array", "strings", "names", "derived")
)


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
    opened only to compile. A cache file that fails a check is compiled again, with a
    one-line warning."""
    state = catalog.state() if catalog is not None else stored_state(home)
    if state is not None:
        path = _cache_file(home, state)
        try:
            return load_tables_file(path, key=path.stem)
        except FileNotFoundError:
            pass
        except (OSError, BadTablesFile) as exc:
            log.warning("%s: compiling the catalog again (%s)", path, exc)
    if catalog is not None:
        return _compiled(home, catalog, compile)
    from pipelines.catalog import Catalog  # here, not at the top: see stored_state

    with Catalog(home) as opened:
        return _compiled(home, opened, compile)


def _cache_file(home: Path, state: str) -> Path:
    return cache_folder(home) / f"tables-{state}-{_code_key()}.tables"


def _aligned(at: int) -> int:
    return -(-at // _ALIGN) * _ALIGN


def save_tables_file(tables: Tables, path: Path, key: str = "") -> None:
    """``tables`` to ``path`` (not atomically: see ``_compiled``), saved under ``key`` (a
    loader that names another refuses the file), readable by its owner alone."""
    values: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, kind in _KINDS.items():
        value = getattr(tables, name)
        if kind == "array":
            arrays[name] = value
        elif kind in ("strings", "names"):
            if kind == "names":
                value = value.strings if isinstance(value, Texts) else Strings.of(value)
            arrays[f"{name}.offsets"], arrays[f"{name}.data"] = value.offsets, value.data
        elif kind == "ip_networks":
            values[name] = [[str(n), e] for group in value.values() for n, e in group.items()]
        elif kind == "user_entries":
            values[name] = [[user, entries] for user, entries in value.items()]
        elif kind == "auth_order":
            values[name] = [list(value[e]) for e in range(len(value))]
        elif kind != "derived":
            values[name] = value
    entries: list[dict[str, Any]] = []
    at = 0
    for name, array in arrays.items():
        arrays[name] = array = np.ascontiguousarray(array, _ARRAYS[name])
        shape, length = list(array.shape), array.nbytes
        entries.append({"name": name, "shape": shape, "offset": at, "length": length})
        at = _aligned(at + length)
    directory = json.dumps(
        {"key": key, "values": values, "arrays": entries}, ensure_ascii=False, separators=(",", ":")
    ).encode()
    data_at = _aligned(_DIRECTORY_AT + len(directory))
    size = data_at + at
    header = _HEADER.pack(_MAGIC, _FORMAT, 0, len(directory), data_at, size)
    digest = xxhash.xxh3_128(header)
    parts: list[tuple[int, Any]] = [(_DIRECTORY_AT, directory)]
    for entry, array in zip(entries, arrays.values(), strict=True):
        parts.append((data_at + entry["offset"], array.reshape(-1).view(np.uint8)))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.seek(_DIGEST_END)
        for offset, part in [*parts, (size, b"")]:  # each part after zeros up to its offset
            gap = bytes(offset - f.tell())
            for chunk in (gap, part):
                digest.update(chunk)
                f.write(chunk)
        f.seek(0)
        f.write(header + digest.digest())


def load_tables_file(path: Path, key: str | None = None) -> Tables:
    """Tables saved by ``save_tables_file``, their arrays views of a copy-on-write mapping
    of the file (of an aligned copy in memory where the file system cannot map it).
    BadTablesFile for a file that is not whole, was saved under another ``key`` than the
    one given, or holds tables that break a bound of ``rating.tables.check``."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _DIRECTORY_AT:
            raise BadTablesFile(f"{size} bytes, shorter than a header")
        try:
            mapped: mmap.mmap | np.ndarray = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError:  # a file system that cannot map files: an aligned copy instead
            raw = np.empty(size + _ALIGN, np.uint8)
            mapped = raw[-raw.ctypes.data % _ALIGN :][:size]
            if f.readinto(mapped.data) != size:
                raise BadTablesFile("the file changed while it was read") from None
    view = mapped.data if isinstance(mapped, np.ndarray) else memoryview(mapped)
    magic, fmt, flags, directory_length, data_at, length = _HEADER.unpack_from(view)
    if magic != _MAGIC or fmt != _FORMAT or flags != 0:
        raise BadTablesFile("not a compiled-tables file of this cdrflow's format")
    if length != size or not _DIRECTORY_AT + directory_length <= data_at <= size:
        raise BadTablesFile(f"{size} bytes where its header says {length}")
    digest = xxhash.xxh3_128(view[:_DIGEST_AT])
    digest.update(view[_DIGEST_END:])
    if digest.digest() != view[_DIGEST_AT:_DIGEST_END]:
        raise BadTablesFile("its checksum does not match its content")
    try:
        directory = json.loads(bytes(view[_DIRECTORY_AT : _DIRECTORY_AT + directory_length]))
        tables = _tables(directory, mapped, data_at, key)
        check(tables)
        for name, kind in _KINDS.items():  # texts Arrow is given as they are: UTF-8 each
            if kind == "names":
                strings = getattr(tables, name).strings
                n, offsets, data = strings.offsets.size - 1, strings.offsets, strings.data
                pa.LargeStringArray.from_buffers(
                    n, pa.py_buffer(offsets), pa.py_buffer(data)
                ).validate(full=True)
    except BadTablesFile:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BadTablesFile(f"not tables as cdrflow compiles them: {exc}") from None
    return tables


def _tables(
    directory: Any, mapped: mmap.mmap | np.ndarray, data_at: int, key: str | None
) -> Tables:
    """The ``Tables`` a directory describes, with its arrays as views of ``mapped``. Names,
    types, dtypes and extents are checked here, the bounds between fields by ``check``."""
    if not isinstance(directory, dict) or set(directory) != {"key", "values", "arrays"}:
        raise BadTablesFile("its directory is not one cdrflow writes")
    if key is not None and directory["key"] != key:
        raise BadTablesFile(f"saved as {directory['key']!r}, not {key!r}")
    values, entries = directory["values"], directory["arrays"]
    if set(values) != _VALUES or [e["name"] for e in entries] != list(_ARRAYS):
        raise BadTablesFile("its directory does not name the fields of these tables")
    arrays: dict[str, np.ndarray] = {}
    end = data_at
    for entry in entries:
        name, shape, offset, length = (
            entry["name"],
            entry["shape"],
            entry["offset"],
            entry["length"],
        )
        dtype = _ARRAYS[name]
        numbers = [offset, length, *shape]
        if not 1 <= len(shape) <= 2 or any(type(n) is not int or n < 0 for n in numbers):
            raise BadTablesFile(f"array {name}: a bad offset, length or shape")
        at = data_at + offset
        # In order, apart, aligned, inside the file, and exactly its shape's bytes.
        count = math.prod(shape)
        if at < end or at % _ALIGN or at + length > len(mapped) or length != count * dtype.itemsize:
            raise BadTablesFile(f"array {name} does not fit where the directory puts it")
        end = at + length
        arrays[name] = np.frombuffer(mapped, dtype, count, at).reshape(shape)
    fields: dict[str, Any] = {}
    for name, kind in _KINDS.items():
        if kind == "array":
            fields[name] = arrays[name]
        elif kind in ("strings", "names"):
            fields[name] = Strings(arrays[f"{name}.offsets"], arrays[f"{name}.data"])
            if kind == "names":
                fields[name] = Texts(fields[name])
        elif kind != "derived":
            fields[name] = _value(name, kind, values[name])
    fields["customer_index"] = {c: i for i, c in enumerate(fields["customer_ids"])}
    fields["card_index"] = {c: i for i, c in enumerate(fields["card_ids"])}
    return Tables(**fields)


def _value(name: str, kind: str, value: Any) -> Any:
    """A JSON value of the directory as the field holds it, after checking its types."""

    def entries(item: Any) -> bool:  # [text, [auth entry, …]]
        return (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], list)
            and all(type(e) is int for e in item[1])
        )

    if kind == "int" and type(value) is int:
        return value
    if isinstance(value, list):
        if kind == "texts":
            "".join(value)  # a TypeError (a refusal) unless every item is text: 3 ms a 300k
            return value
        if kind == "optional texts" and all(v is None or isinstance(v, str) for v in value):
            return value
        if kind == "user_entries" and all(entries(v) for v in value):
            return dict(value)
        if kind == "ip_networks" and all(entries(v) for v in value):
            networks: dict[int, dict[Any, list[int]]] = {}
            for text, found in value:
                network = ipaddress.ip_network(text)
                networks.setdefault(network.prefixlen, {})[network] = found
            return networks
        if kind == "auth_order" and all(
            isinstance(v, list) and len(v) == 3 and all(type(n) is int for n in v) for v in value
        ):
            return {e: tuple(v) for e, v in enumerate(value)}
    raise BadTablesFile(f"{name} is not {kind} as the tables hold it")


def _compiled(home: Path, catalog: Catalog, compile: Callable[[Catalog], Tables]) -> Tables:
    """Compile the catalog, and keep the result in the cache under its state (when the
    cache can be written: a full disk costs the next run a compile, not this one)."""
    state = catalog.state()
    if state is None:  # a store never changed since creation or migration: nothing to key on
        return compile(catalog)
    tables = compile(catalog)
    if catalog.state() != state:  # changed while compiling: which state this is is unknown
        return tables
    folder = cache_folder(home)
    path = _cache_file(home, state)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_tables_file(tables, tmp, key=path.stem)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("%s: the compiled tables were not kept (%s)", path, exc.strerror or exc)
        return tables
    # Older files (".pickle" and the mapped pickle: the formats before this one). A process
    # that has one mapped keeps reading it: unlinking does not take its pages away.
    for old in folder.glob("tables-*"):
        if old != path:
            old.unlink(missing_ok=True)
    return tables
