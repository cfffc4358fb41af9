"""What cdrflow's readers see of the lake: whole runs only, whatever a writer is doing."""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines import commitlog, lakefiles
from pipelines.home import rated_lake
from pipelines.lakefiles import whole_runs
from pipelines.rate import rate_files
from stats.scope import Scope
from tests.pipelines.test_rate import new_home
from tests.pipelines.workload import START, records, write_jsonl

# Events a test waits on: generous, so that only a hung writer fails it.
PATIENCE = 300


def attempts(home: Path) -> int:
    """What ``cdrflow stats`` counts as attempts: the rated CDRs of the files it reads."""
    files = Scope(rated_lake(home)).files()
    if not files:
        return 0
    with duckdb.connect() as con:
        [(n,)] = con.execute("SELECT count(*) FROM read_parquet(?::VARCHAR[])", [files]).fetchall()
    return int(n)


def crash_mid_publish(home: Path, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate ``path`` into ``home`` and die after its commit point, one file moved."""
    real = os.replace

    def die_after_first_move(src: str | Path, dst: str | Path) -> None:
        real(src, dst)
        if "_staging" in str(src) and "/lake/rated/" in str(dst):
            raise KeyboardInterrupt

    monkeypatch.setattr(lakefiles.os, "replace", die_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        rate_files(home, [path], block_bytes=64 << 10)
    monkeypatch.undo()


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    # Three days each, so that a run has several rated files to move.
    def days(seed: int) -> list[dict[str, object]]:
        return [r for d in range(3) for r in records(1000, seed + d, START + timedelta(days=d))]

    return (
        write_jsonl(tmp_path / "first.jsonl", days(51)),
        write_jsonl(tmp_path / "second.jsonl", days(54)),
    )


def test_a_run_cut_after_its_commit_point_is_finished_by_the_next_reader(
    tmp_path: Path, two_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_files
    clean = new_home(tmp_path, "clean")
    rate_files(clean, [first])
    rate_files(clean, [second])
    home = new_home(tmp_path, "home")
    rate_files(home, [first])
    crash_mid_publish(home, second, monkeypatch)
    staged = list((home / "lake" / "_staging").glob("*/rated/date=*/*.parquet"))
    assert staged, "the crash left some of the run's files unmoved"
    # No writer holds the lock: the reader puts the committed run in place, then reads it.
    assert attempts(home) == attempts(clean)
    assert not list((home / "lake" / "_staging").glob("*/rated/date=*/*.parquet"))
    assert commitlog.head(home / "lake").publishing is None


def test_a_reader_leaves_out_a_half_moved_run_while_a_writer_holds_the_lock(
    tmp_path: Path, two_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_files
    home = new_home(tmp_path, "home")
    rate_files(home, [first])
    before = attempts(home)
    files = sorted(str(p) for p in rated_lake(home).glob("date=*/*.parquet"))
    crash_mid_publish(home, second, monkeypatch)
    monkeypatch.setattr(lakefiles, "PUBLISH_WAIT_TRIES", 3)
    with (home / "lake" / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer is busy: nobody may finish the run now
        globbed = list(rated_lake(home).glob("date=*/*.parquet"))
        assert len(globbed) > len(files)  # a plain glob sees part of the second run
        assert whole_runs(rated_lake(home)) == files
        assert attempts(home) == before
    assert attempts(home) > before  # the lock is free again: the run is finished and read


def test_a_reader_during_a_publish_sees_the_lake_before_or_after_it(
    tmp_path: Path, two_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that lists the lake while a run moves its files in (a plain glob would see
    part of the run) sees the lake before the run, and after it once it is done."""
    first, second = two_files
    home = new_home(tmp_path, "home")
    rate_files(home, [first])
    before = attempts(home)
    mid, looked = threading.Event(), threading.Event()
    real = os.replace
    moves = 0

    def pause_after_first_move(src: str | Path, dst: str | Path) -> None:
        nonlocal moves
        real(src, dst)
        if "_staging" in str(src) and "/lake/rated/" in str(dst):
            moves += 1
            if moves == 1:
                mid.set()
                assert looked.wait(PATIENCE)

    monkeypatch.setattr(lakefiles.os, "replace", pause_after_first_move)
    monkeypatch.setattr(lakefiles, "PUBLISH_WAIT_TRIES", 3)
    writer = threading.Thread(target=rate_files, args=(home, [second]), daemon=True)
    writer.start()
    try:
        assert mid.wait(PATIENCE)
        globbed = [str(p) for p in rated_lake(home).glob("date=*/*.parquet")]
        with duckdb.connect() as con:
            [(partial,)] = con.execute(
                "SELECT count(*) FROM read_parquet(?::VARCHAR[])", [globbed]
            ).fetchall()
        assert partial > before  # what a plain glob sees now: part of the run
        assert attempts(home) == before
    finally:
        looked.set()
        writer.join(PATIENCE)
    monkeypatch.undo()
    assert moves > 1
    after = attempts(home)
    assert after > partial
    assert sorted(whole_runs(rated_lake(home))) == sorted(
        str(p) for p in rated_lake(home).glob("date=*/*.parquet")
    )


def test_the_commit_log_names_each_run_s_rated_files_and_forgets_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = new_home(tmp_path, "home")
    root = home / "lake"
    monkeypatch.setattr(commitlog, "KEEP", 2)
    runs = []
    for i in range(3):
        path = write_jsonl(tmp_path / f"{i}.jsonl", records(300, seed=60 + i))
        runs.append(rate_files(home, [path]).run)
    assert commitlog.head(root) == commitlog.Head(3, None)
    assert commitlog.since(root, 0) is None  # the first entry is gone: read the lake again
    entries = commitlog.since(root, 1)
    assert entries is not None
    assert [(e.seq, e.run, e.author) for e in entries] == [
        (2, runs[1], runs[1]),
        (3, runs[2], runs[2]),
    ]
    for entry in entries:
        assert entry.rated and all((root / name).is_file() for name in entry.rated)
        assert all(f"part-{entry.run}-" in name for name in entry.rated)
    assert commitlog.since(root, 3) == []
    assert commitlog.since(root, 4) is None  # a log behind its reader: a lake made anew


def test_a_run_that_fails_at_its_commit_point_leaves_the_head_at_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = new_home(tmp_path, "home")
    path = write_jsonl(tmp_path / "cdrs.jsonl", records(300, seed=70))

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lakefiles, "write_manifest", full_disk)
    with pytest.raises(OSError):
        rate_files(home, [path])
    monkeypatch.undo()
    assert commitlog.head(home / "lake") == commitlog.Head(1, None)
    assert whole_runs(rated_lake(home)) == []
    # The entry's files never appeared: a writer catching up finds nothing to add.
    entries = commitlog.since(home / "lake", 0)
    assert entries and not any((home / "lake" / n).exists() for n in entries[0].rated)
