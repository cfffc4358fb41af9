"""The compiled-tables cache: reused for the same catalog content, never for another."""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.catalog import Catalog
from pipelines.cdrfile import read_records
from pipelines.compiled import (
    BadTablesFile,
    cache_folder,
    cached_tables,
    load_tables_file,
    save_tables_file,
    stored_state,
)
from pipelines.rate import load_tables, rate_files
from rating import kernels
from rating.engine import Usage, finish, price
from rating.tables import Strings, Tables, compile_tables
from tests.pipelines.cli.driver import Cli
from tests.pipelines.workload import records, write_jsonl
from tests.rating.test_engine import worlds


def compiles(calls: list[int]):  # type: ignore[no-untyped-def]
    def compile(catalog: Catalog) -> Tables:
        calls.append(1)
        return load_tables(catalog)

    return compile


def same(a: Tables, b: Tables) -> bool:
    return (
        a.version == b.version
        and a.card_ids == b.card_ids
        and list(a.row_prefix) == list(b.row_prefix)
        and np.array_equal(a.row_rate, b.row_rate)
        and np.array_equal(a.slots, b.slots)
        and np.array_equal(a.bloom, b.bloom)
        and np.array_equal(a.versions, b.versions)
    )


def test_the_same_content_compiles_once(sample: Catalog, home: Path) -> None:
    calls: list[int] = []
    first = cached_tables(home, compiles(calls), sample)
    again = cached_tables(home, compiles(calls), sample)
    assert calls == [1]
    # A slot is one cache line in the loaded copy too, not only in the compiled one.
    assert first.slots.ctypes.data % 64 == 0 and again.slots.ctypes.data % 64 == 0
    assert same(again, first) and same(again, load_tables(sample))
    assert len(list(cache_folder(home).glob("tables-*"))) == 1


def test_a_change_compiles_again_and_the_old_file_goes(sample: Catalog, home: Path) -> None:
    calls: list[int] = []
    before = cached_tables(home, compiles(calls), sample)
    sample.edit("rate_cards", "retail-usd", {"precision": "2"})
    after = cached_tables(home, compiles(calls), sample)
    assert calls == [1, 1]
    card = after.card_index["retail-usd"]
    assert before.card_precision[card] == 4 and after.card_precision[card] == 2
    assert len(list(cache_folder(home).glob("tables-*"))) == 1


def test_a_store_restored_over_another_at_the_same_version_is_compiled(
    sample: Catalog, home: Path
) -> None:
    """Two copies of one store, edited apart, reach the same version number with different
    content; restoring one over the other must not reuse the other's cache file."""
    sample.close()
    backup = home.parent / "backup"
    shutil.copytree(home, backup)
    with Catalog(home) as live, Catalog(backup) as other:
        live.edit("rate_cards", "retail-usd", {"precision": "2"})
        other.edit("rate_cards", "retail-usd", {"precision": "3"})
        assert live.version() == other.version()
        cached_tables(home, load_tables, live)
    (home / "catalog.sqlite").unlink()
    shutil.copy(backup / "catalog.sqlite", home / "catalog.sqlite")
    with Catalog(home) as restored:
        got = cached_tables(home, load_tables, restored)
    assert got.card_precision[got.card_index["retail-usd"]] == 3


def test_the_state_read_without_sqlalchemy_is_the_store_s(sample: Catalog, home: Path) -> None:
    assert stored_state(home) == sample.state() is not None
    sample.edit("rate_cards", "retail-usd", {"precision": "2"})
    assert stored_state(home) == sample.state()
    assert stored_state(home.parent / "no-home-here") is None
    (home.parent / "not-a-store").mkdir()
    (home.parent / "not-a-store" / "catalog.sqlite").write_bytes(b"not sqlite")
    assert stored_state(home.parent / "not-a-store") is None


def test_without_a_catalog_the_store_is_opened_only_to_compile(
    sample: Catalog, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    first = cached_tables(home, compiles(calls))  # a miss: opens the store and compiles
    opened: list[Path] = []
    real = Catalog.__init__

    def counting(self: Catalog, *args: object, **kwargs: object) -> None:
        opened.append(home)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Catalog, "__init__", counting)
    again = cached_tables(home, compiles(calls))
    assert calls == [1] and opened == [] and same(again, first)
    sample.edit("rate_cards", "retail-usd", {"precision": "2"})
    after = cached_tables(home, compiles(calls))
    assert calls == [1, 1] and opened == [home]
    assert after.card_precision[after.card_index["retail-usd"]] == 2


def test_the_loaded_arrays_are_a_private_mapping_of_the_file(sample: Catalog, home: Path) -> None:
    calls: list[int] = []
    compiled = cached_tables(home, compiles(calls), sample)
    [path] = cache_folder(home).glob("tables-*")
    loaded = load_tables_file(path)
    assert same(loaded, compiled)
    # Views of the file's pages, not copies: the mapping is the arrays' memory.
    for array in (loaded.row_rate, loaded.slots, loaded.versions):
        owner = array.base
        while isinstance(owner, np.ndarray):
            owner = owner.base
        assert isinstance(owner, memoryview) and isinstance(owner.obj, mmap.mmap)
    # Writable (numba's kernels are compiled for writable arrays), and a write stays in
    # the process that made it: the file, and so every other run, keeps the compiled values.
    assert loaded.row_rate.flags.writeable and loaded.slots.flags.writeable
    loaded.row_rate[:] = -1
    assert np.array_equal(load_tables_file(path).row_rate, compiled.row_rate)


@pytest.mark.parametrize("damage", ["garbage", "cut short", "empty", "header only"])
def test_a_damaged_cache_file_is_compiled_again(sample: Catalog, home: Path, damage: str) -> None:
    calls: list[int] = []
    first = cached_tables(home, compiles(calls), sample)
    [path] = cache_folder(home).glob("tables-*")
    data = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"x" * 4096,
            "cut short": data[: len(data) // 2],
            "empty": b"",
            "header only": data[:20],
        }[damage]
    )
    again = cached_tables(home, compiles(calls), sample)
    assert calls == [1, 1] and same(again, first)
    assert load_tables_file(path).version == first.version  # written whole again


def test_an_older_format_file_is_removed_when_the_tables_are_compiled(
    sample: Catalog, home: Path
) -> None:
    cache_folder(home).mkdir(parents=True, exist_ok=True)
    old = cache_folder(home) / "tables-0123-4567.pickle"
    old.write_bytes(b"an older cdrflow's pickle")
    cached_tables(home, compiles([]), sample)
    assert not old.exists() and len(list(cache_folder(home).glob("tables-*"))) == 1


def test_a_file_system_that_cannot_map_the_file_is_read_instead(
    sample: Catalog, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = cached_tables(home, compiles([]), sample)
    [path] = cache_folder(home).glob("tables-*")

    def refuse(*_: object, **__: object) -> None:
        raise OSError(19, "No such device")  # what mmap says on a file system without it

    monkeypatch.setattr(mmap, "mmap", refuse)
    loaded = load_tables_file(path)
    assert same(loaded, compiled) and loaded.slots.flags.writeable
    assert loaded.slots.ctypes.data % 64 == 0  # copied to an aligned array if it was not


# -- the file holds data only, checked before anything reaches a kernel ------------------------


class _Opens:
    """Unpickled, it creates ``path``: what a crafted cache file could make a loader run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _pickled_cache(payload: bytes) -> bytes:
    """A file as the pickling cache laid them out: magic, no array buffers, the pickle's span."""
    head = b"CDRFTAB1" + struct.pack("<Q", 0) + struct.pack("<QQ", 64, len(payload))
    return head.ljust(64, b"\0") + payload


@pytest.fixture
def batch(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> pa.Table:
    """Validated CDRs of every kind the sample catalog rates (auth, routes, DIDs, packages)."""
    path = write_jsonl(tmp_path / "cdrs.jsonl", records(400, seed=5))
    return next(read_records(path, con)).valid


def rated(tables: Tables, batch: pa.Table) -> pa.Table:
    return finish(tables, price(tables, batch), Usage(), 0)


def test_rated_output_is_the_same_from_the_file_as_compiled(
    sample: Catalog, home: Path, batch: pa.Table
) -> None:
    compiled = cached_tables(home, load_tables, sample)
    [path] = cache_folder(home).glob("tables-*")
    assert rated(load_tables_file(path, key=path.stem), batch).equals(rated(compiled, batch))


@pytest.mark.parametrize("form", ["as the pickling cache wrote it", "bare"])
def test_a_pickle_in_the_cache_is_never_run(
    sample: Catalog, home: Path, tmp_path: Path, form: str
) -> None:
    """A crafted cache file used to run what it named at the next ``cdrflow rate``."""
    from tests.pipelines.test_rate import content, new_home

    cached_tables(home, load_tables, sample)
    [path] = cache_folder(home).glob("tables-*")
    marker = tmp_path / "the payload ran"
    payload = pickle.dumps(_Opens(marker), protocol=5)
    path.write_bytes(payload if form == "bare" else _pickled_cache(payload))
    cdrs = write_jsonl(tmp_path / "cdrs.jsonl", records(300, seed=2))
    Cli(home).ok("rate", str(cdrs))
    assert not marker.exists()
    reference = new_home(tmp_path, "reference")
    rate_files(reference, [cdrs])
    assert content(home, "rated") == content(reference, "rated")
    assert content(home, "rejected") == content(reference, "rejected")


def _damaged_then_rated(
    home: Path, sample: Catalog, batch: pa.Table, expected: pa.Table, damage: bytes
) -> None:
    """``damage`` as the cache file: refused by the loader; the run compiles the tables
    again and rates as a fresh cache does; the file is whole again afterwards."""
    [path] = cache_folder(home).glob("tables-*")
    path.write_bytes(damage)
    with pytest.raises(BadTablesFile):
        load_tables_file(path, key=path.stem)
    again = cached_tables(home, load_tables, sample)
    assert rated(again, batch).equals(expected)
    load_tables_file(path, key=path.stem)


def test_a_flipped_byte_anywhere_is_refused_and_the_tables_compiled_again(
    sample: Catalog, home: Path, batch: pa.Table
) -> None:
    expected = rated(cached_tables(home, load_tables, sample), batch)
    [path] = cache_folder(home).glob("tables-*")
    good = path.read_bytes()
    # Every byte of the header and the directory's start, then a spread over the directory,
    # the arrays and the padding between them, and the last byte.
    positions = sorted({*range(256), *range(256, len(good), 37), len(good) - 1})
    for at in positions:
        damaged = bytearray(good)
        damaged[at] ^= 0xFF
        path.write_bytes(damaged)
        with pytest.raises(BadTablesFile):
            load_tables_file(path, key=path.stem)
    for at in positions[::16]:
        damaged = bytearray(good)
        damaged[at] ^= 0x01
        _damaged_then_rated(home, sample, batch, expected, bytes(damaged))


@pytest.mark.parametrize("cut", [0, 1, 39, 40, 56, 63, 64, 65, 0.5, -1, "one more"])
def test_a_file_cut_short_or_grown_is_refused_and_compiled_again(
    sample: Catalog, home: Path, batch: pa.Table, cut: float | str
) -> None:
    expected = rated(cached_tables(home, load_tables, sample), batch)
    [path] = cache_folder(home).glob("tables-*")
    good = path.read_bytes()
    if cut == "one more":
        damage = good + b"\0"
    else:
        assert not isinstance(cut, str)
        damage = good[: int(cut * len(good))] if isinstance(cut, float) else good[:cut]
    _damaged_then_rated(home, sample, batch, expected, damage)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_random_damage_never_changes_a_rated_call(
    sample: Catalog, home: Path, batch: pa.Table, data: st.DataObject
) -> None:
    expected = rated(cached_tables(home, load_tables, sample), batch)
    [path] = cache_folder(home).glob("tables-*")
    good = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(good) - 1), label="at")
    match data.draw(st.sampled_from(["flip", "overwrite", "cut"]), label="damage"):
        case "flip":
            good[at] ^= data.draw(st.integers(1, 255), label="bits")
        case "overwrite":
            noise = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
            if good[at : at + len(noise)] == noise:
                return  # not damage
            good[at : at + len(noise)] = noise
        case _:
            del good[at:]
    _damaged_then_rated(home, sample, batch, expected, bytes(good))


def _first_filled_slot(t: Tables) -> int:
    return int(np.flatnonzero(t.slots[:, kernels.SLOT_KEY] != -1)[0])


# Each one breaks one bound a kernel or the engine relies on; the file keeps a good checksum.
BREAKS: dict[str, Callable[[Tables], Any]] = {
    "a route to a card that is not there": lambda t: t.route_card.__setitem__(0, 99),
    "a DID's card below zero": lambda t: t.did_card.__setitem__(0, -1),
    "a slot's rate row past the rows": lambda t: t.slots.__setitem__(
        (_first_filled_slot(t), kernels.SLOT_ROW), 10**12
    ),
    "a slot's versions past the versions": lambda t: t.slots.__setitem__(
        (_first_filled_slot(t), kernels.SLOT_COUNT), 2**62
    ),
    "no empty slot in the rate hash": lambda t: t.slots.__setitem__(
        (t.slots[:, kernels.SLOT_KEY] == -1, kernels.SLOT_KEY), 16
    ),
    "a version's rate row below zero": lambda t: t.versions.__setitem__((0, 2), -1),
    "a customer's routes past the routes": lambda t: t.route_count.__setitem__(0, 10**6),
    "a package's prefixes past the prefixes": lambda t: t.allot_pfx_first.__setitem__(0, 10**9),
    "tech prefix offsets past their bytes": lambda t: t.route_tech_prefix.offsets.__setitem__(
        -1, 10**9
    ),
    "tech prefix offsets falling": lambda t: t.auth_tech_prefix.offsets.__setitem__(
        slice(1, None), -1
    ),
    "a pulse of 0": lambda t: t.row_pulse.__setitem__(0, 0),
    "a precision of 7": lambda t: t.card_precision.__setitem__(0, 7),
    "a prefix length longer than the digits": lambda t: t.len_top.__setitem__((0, 3), 9),
    "a regex column past the width": lambda t: t.route_regex_col.__setitem__(0, 5),
    "an auth entry past the entries": lambda t: t.user_entries.__setitem__("x", [999]),
    "a bloom filter of another size": lambda t: dataclasses.replace(t, bloom_bits=20),
    "a rate hash of fewer bits than slots": lambda t: dataclasses.replace(t, bits=3),
    "a regex width no route has": lambda t: dataclasses.replace(t, regex_width=10**12),
    "one rate row fewer than names": lambda t: dataclasses.replace(t, row_rate=t.row_rate[1:]),
    "a number where a customer id is": lambda t: t.customer_ids.__setitem__(0, 7),
    "a name that is not UTF-8": lambda t: dataclasses.replace(
        t, row_name=[b"\xff\xfe".decode("latin-1")] * len(t.row_name)
    ),
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_a_good_checksum_does_not_pass_tables_out_of_bounds(
    sample: Catalog, home: Path, batch: pa.Table, what: str
) -> None:
    expected = rated(cached_tables(home, load_tables, sample), batch)
    [path] = cache_folder(home).glob("tables-*")
    broken = load_tables(sample)
    broken = BREAKS[what](broken) or broken
    if what == "a name that is not UTF-8":  # save writes text as UTF-8: make the bytes by hand
        broken = _with_raw_names(broken)
    save_tables_file(broken, path, key=path.stem)
    _damaged_then_rated(home, sample, batch, expected, path.read_bytes())


def _with_raw_names(t: Tables) -> Tables:
    from rating.tables import Texts

    n = len(t.row_name)
    offsets = np.arange(n + 1, dtype=np.int64)
    return dataclasses.replace(t, row_name=Texts(Strings(offsets, np.full(n, 0xFF, np.uint8))))


def test_a_file_saved_under_another_key_is_refused(sample: Catalog, home: Path) -> None:
    """A file renamed into another state's place holds another catalog's tables."""
    compiled = cached_tables(home, load_tables, sample)
    [path] = cache_folder(home).glob("tables-*")
    save_tables_file(compiled, path, key="tables-another-state")
    with pytest.raises(BadTablesFile, match="another-state"):
        load_tables_file(path, key=path.stem)


def test_a_damaged_file_is_one_warning(
    sample: Catalog, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached_tables(home, load_tables, sample)
    [path] = cache_folder(home).glob("tables-*")
    path.write_bytes(path.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="cdrflow.cache"):
        cached_tables(home, load_tables, sample)
    [record] = caplog.records
    assert str(path) in record.getMessage() and "compiling the catalog again" in record.message


def test_the_header_and_directory_are_data(sample: Catalog, home: Path) -> None:
    """What a reader of the format sees: magic, format, the xxh3-128 of every other byte,
    and a JSON directory of the arrays with their dtype's size to the byte."""
    cached_tables(home, load_tables, sample)
    [path] = cache_folder(home).glob("tables-*")
    data = path.read_bytes()
    magic, fmt, flags, length, data_at, size = struct.unpack_from("<8sIIQQQ", data)
    assert (magic, fmt, flags, size) == (b"CDRFTBL\0", 2, 0, len(data))
    digest = xxhash.xxh3_128(data[:40])
    digest.update(data[56:])
    assert digest.digest() == data[40:56]
    directory = json.loads(data[64 : 64 + length])
    assert directory["key"] == path.stem and set(directory) == {"key", "values", "arrays"}
    for entry in directory["arrays"]:
        assert (data_at + entry["offset"]) % 64 == 0
    assert path.stat().st_mode & 0o777 == 0o600


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_a_saved_table_loads_as_it_was_compiled(world: Any) -> None:
    import tempfile

    compiled = compile_tables(world[0], version=3)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.tables"
        save_tables_file(compiled, path, key="k")
        loaded = load_tables_file(path, key="k")
    for f in dataclasses.fields(Tables):
        a, b = getattr(compiled, f.name), getattr(loaded, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        elif isinstance(a, Strings):
            assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.data, b.data)
        else:
            assert list(a) == list(b) if f.name.startswith("row_") else a == b, f.name
