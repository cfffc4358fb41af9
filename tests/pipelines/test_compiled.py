"""The compiled-tables cache: reused for the same catalog content, never for another."""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalog import Catalog
from pipelines.compiled import cache_folder, cached_tables, load_tables_file, stored_state
from pipelines.rate import load_tables
from rating.tables import Tables


def compiles(calls: list[int]):  # type: ignore[no-untyped-def]
    def compile(catalog: Catalog) -> Tables:
        calls.append(1)
        return load_tables(catalog)

    return compile


def same(a: Tables, b: Tables) -> bool:
    return (
        a.version == b.version
        and a.card_ids == b.card_ids
        and a.row_prefix == b.row_prefix
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
