"""Writing the lake so that a crash at any moment changes nothing (SPEC §5.5), and reading
it as whole runs.

A run writes every file into ``lake/_staging/<run>/`` first. Just before its commit point it
appends its entry to the commit log (``pipelines.commitlog``), which marks it publishing.
Its commit point is one atomic rename: the run's manifest into ``lake/_runs/<run>.json``.
Only then are the staged files moved into their partitions, each by an atomic rename, and
the log's head says that no run is publishing. Whoever next takes the home's lake lock
finishes that move for a committed run (roll forward) and deletes the staging of a run that
never committed (roll back). A reader never sees a partial file, and cdrflow's readers list
the lake with ``whole_runs``, which never returns part of a run.

A run may also replace files (a re-rate, ``pipelines.rerate``): its manifest and its log
entry name them (``replaces``), and publishing unlinks them after the new files are in
place. ``whole_runs`` never lists around such a run (it waits, or recovers it); a reader
that listed the old files just before the swap finds one gone and starts its query over
(``read_again_if_swapped``). A plain glob over the lake may, for the milliseconds of a
swap, see both a day's old and new files, or list an old file that is gone when opened.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipelines import commitlog
from pipelines.home import make_home, rated_lake, writing
from schemas.errors import CdrflowError

FINGERPRINT_CHUNK = 16 << 20
# Prefix of a whole-content fingerprint; a run's inputs recorded before it (a hash of a
# file's size and first and last MiB) never equal one, so such a file is rated again and its
# records, already billed, are rejected as duplicates rather than skipped unread.
FINGERPRINT_KIND = "xxh3-128:"
# Looks at a publishing run before a reader lists around it (10 ms apart).
PUBLISH_WAIT_TRIES = 1000
# Times a query starts over when a re-rate swapped away a file it had listed.
SWAP_RETRIES = 5
T = TypeVar("T")
# Columns with about as many values as rows: a dictionary page would only cost time.
UNIQUE_COLUMNS = frozenset(
    {"callid", "dt", "dest_number", "source_cli", "number", "duration", "ring_duration"}
    | {"pdd_ms", "line", "raw", "reject_detail", "rated_at", "rejected_at"}
)
# Columns readers filter on: only they carry min/max statistics (string statistics of the
# other columns cost a quarter of the write time and prune nothing).
FILTERED_COLUMNS = ("dt", "customer_id", "card_id", "provider_id", "dest_code", "sip_code")


def write_parquet(table: pa.Table, path: Path) -> None:
    """A lake file: zstd, dictionaries for repetitive columns, statistics where they prune,
    and money (DECIMAL(18, 6)) stored over INT64, which DuckDB sums about a fifth faster
    than the fixed-length bytes pyarrow writes by default (the same size; readers see the
    same decimal type either way)."""
    names = table.column_names
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=1,
        use_dictionary=[n for n in names if n not in UNIQUE_COLUMNS],
        write_statistics=[n for n in FILTERED_COLUMNS if n in names],
        store_decimal_as_integer=True,
    )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """``_runs/<run>.json`` under the lake ``root``, atomically and on disk when it appears
    (a run's commit point)."""
    runs = root / "_runs"
    runs.mkdir(exist_ok=True)
    tmp = runs / f".{manifest['run']}.json.tmp"
    try:
        with writing(tmp):
            tmp.write_text(json.dumps(manifest, indent=1))
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no trace: the lake is as before
        raise
    os.replace(tmp, runs / f"{manifest['run']}.json")


def lake_root(home: Path) -> Path:
    return rated_lake(home).parent


@contextmanager
def lake_lock(home: Path, on_wait: Any = None, timeout: float | None = None) -> Iterator[None]:
    """One writer of the lake at a time; a second waits (``on_wait`` is told), at most
    ``timeout`` seconds when given, then stops with an error naming the holder. The holder
    writes its pid and command line into the lock file."""
    root = lake_root(home)
    make_home(home)
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            if timeout is None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            else:
                _lock_within(handle, root / ".lock", timeout)
        try:
            os.ftruncate(handle.fileno(), 0)
            handle.write(f"{os.getpid()} {' '.join(sys.argv)}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_within(handle: Any, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = path.read_text().strip() or "another process"
                raise CdrflowError(
                    f"{path.parent}: another writer has held the lake for more than "
                    f"{timeout:g} s (pid and command: {holder}); try again when it is done"
                ) from None
            time.sleep(0.05)


def file_state(path: Path) -> tuple[int, int]:
    """A file's size and modification time (ns): what changes while something writes it."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def fingerprint(path: Path) -> str:
    """A file's identity for 'was this input already rated': XXH3's 128-bit hash of every
    byte (a re-exported file of the same size that differs anywhere is new). XXH3 hashes
    tens of GB/s, so reading the file is the cost: 0.3-0.4 s a GB from the page cache."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(FINGERPRINT_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return FINGERPRINT_KIND + digest.hexdigest()


# A `cdrflow rate` run is named by its start time; a stream batch by "stream-…".
RATE_RUNS = "[0-9]*.json"


def committed_runs(home: Path, pattern: str = "*.json") -> list[dict[str, Any]]:
    """The manifests of committed runs whose file names match ``pattern`` (a stream adds
    one a batch, so readers that need only some name them: ``RATE_RUNS``, or a stream
    partition's prefix)."""
    runs = lake_root(home) / "_runs"
    return [json.loads(p.read_text()) for p in sorted(runs.glob(pattern))] if runs.is_dir() else []


def recover(home: Path) -> list[str]:
    """Finish or undo what crashed runs left (under the lake lock); returns a line per run
    recovered."""
    root = lake_root(home)
    staging = root / "_staging"
    done: list[str] = []
    if not staging.is_dir():
        commitlog.published(root)
        return done
    for run_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
        manifest = root / "_runs" / f"{run_dir.name}.json"
        if manifest.is_file():
            _publish(run_dir, root)
            done.append(f"run {run_dir.name}: committed before a crash; its files are now in place")
        else:
            done.append(f"run {run_dir.name}: did not commit; its staged files were removed")
        shutil.rmtree(run_dir)
    commitlog.published(root)
    return done


def whole_runs(lake: Path, days: Callable[[date], bool] | None = None) -> list[str]:
    """The Parquet files of ``lake`` (``lake/rated`` or ``lake/rejected``) in the partitions
    whose day ``days`` accepts (all without it), every run's files or none of them: a run
    that is moving its files into place is waited for, and one a crash left half moved is
    finished first when no writer holds the lock (else its files are left out). A run that
    replaces files is never listed around: it is waited for while a writer holds the lock,
    and a reader that may not finish it stops with an error."""
    return whole_runs_of([lake], days)[0]


def whole_runs_of(
    lakes: Sequence[Path], days: Callable[[date], bool] | None = None
) -> list[list[str]]:
    """``whole_runs`` of several lakes of one home (``lake/rated`` and ``lake/rejected``),
    listed at one moment of its commit log: a reader of both sees a record that a run moved
    from one to the other (``cdrflow rejects replay``, a re-rate) in one place, never in
    both or neither (if a file it listed is gone when read, it reads again:
    ``read_again_if_swapped``)."""
    root = lakes[0].parent
    tries = 0
    while True:
        before = commitlog.head(root)
        partial: list[str] = []
        if before.publishing is not None:
            tries += 1
            replacing = commitlog.replaces(root, before.seq)
            limit = tries <= PUBLISH_WAIT_TRIES or replacing
            state = _recover_if_idle(root) if limit else "cannot"
            if state == "recovered":
                continue
            if state == "busy" or (state == "cannot" and replacing and _lock_held(root)):
                time.sleep(0.01)
                continue
            if replacing:
                raise CdrflowError(
                    f"{root}: the lake holds a half-published re-rate ({before.publishing}) "
                    "that this user may not finish; run any writing cdrflow command (such as "
                    "cdrflow rate with no new file) as the home's owner"
                )
            staging = root / "_staging"
            partial = [f"part-{p.name}-" for p in staging.iterdir()] if staging.is_dir() else []
        files = [_listing(lake, days, tuple(partial)) for lake in lakes]
        if commitlog.head(root) == before:
            return files


def _lock_held(root: Path) -> bool:
    """Whether a writer holds the lake lock (probed through a read-only handle)."""
    try:
        with (root / ".lock").open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def read_again_if_swapped(read: Callable[[], T]) -> T:
    """``read()`` (a query that lists the lake itself), started over when a re-rate removed
    a file it had listed (DuckDB's IO error naming a missing file, or Python's)."""
    for attempt in range(SWAP_RETRIES + 1):
        try:
            return read()
        except (duckdb.IOException, FileNotFoundError) as exc:
            text = str(exc)
            missing = isinstance(exc, FileNotFoundError) or any(
                words in text for words in ("No such file", "No files found")
            )
            if not missing or attempt == SWAP_RETRIES:
                raise
    raise AssertionError("unreachable")


def _listing(
    lake: Path, days: Callable[[date], bool] | None, partial: tuple[str, ...]
) -> list[str]:
    out = []
    for folder in sorted(lake.glob("date=*")):
        try:
            day = date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        if days is None or days(day):
            out += [
                str(f) for f in sorted(folder.glob("*.parquet")) if not f.name.startswith(partial)
            ]
    return out


def _recover_if_idle(root: Path) -> str:
    """Finish what a crashed run left if no writer holds the lake lock: "recovered", "busy"
    (a writer holds it, and finishes its own run), or "cannot" (this process may not write
    the lake)."""
    try:
        with (root / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "busy"
            try:
                recover(root.parent)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return "cannot"
    return "recovered"


LAKE_KINDS = ("rated", "rejected")


def _publish(run_dir: Path, root: Path) -> None:
    """Move a committed run's lake files into their partitions (nothing else it staged),
    then remove the files it replaces (again harmlessly when recovery repeats it)."""
    staged_files = [f for kind in LAKE_KINDS for f in (run_dir / kind).glob("date=*/*.parquet")]
    for staged in sorted(staged_files):
        target = root / staged.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    manifest = json.loads((root / "_runs" / f"{run_dir.name}.json").read_text())
    for name in manifest.get("replaces", []):
        (root / name).unlink(missing_ok=True)


class Staging:
    """The files of one run, written aside until ``commit``."""

    def __init__(
        self, home: Path, run_id: str, file_rows: int = 1 << 17, author: str | None = None
    ) -> None:
        self.root = lake_root(home)
        self.run_id = run_id
        self.author = author or run_id  # who the commit log says wrote it
        self.seq = 0  # its commit log entry, once committed
        self.dir = self.root / "_staging" / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sequence = 0
        self.files: list[str] = []
        # Lake files (relative to the lake root) that the commit removes (a re-rate's).
        self.replaces: list[str] = []
        self.file_rows = file_rows
        self.committed = False
        # Parquet is written on a thread of its own (Arrow releases the GIL meanwhile).
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdrflow-lake")
        self.writes: list[Future[None]] = []
        self.pending: dict[str, list[tuple[pa.Table, pa.Array]]] = {}

    def add(self, kind: str, table: pa.Table, days: pa.Array) -> None:
        """Stage ``table`` for ``kind``'s partitions by the UTC date in ``days`` (date32);
        rows are gathered into files of about ``file_rows`` rows."""
        if table.num_rows == 0:
            return
        pending = self.pending.setdefault(kind, [])
        pending.append((table, days))
        if sum(t.num_rows for t, _ in pending) >= self.file_rows:
            self.flush(kind)

    def flush(self, kind: str) -> None:
        pending = self.pending.pop(kind, [])
        if pending:
            table = pa.concat_tables([t for t, _ in pending])
            days = pa.concat_arrays([d for _, d in pending])
            self.sequence += 1
            self.writes.append(self.writer.submit(self._write, kind, table, days, self.sequence))
            while len(self.writes) > 2:  # memory stays bounded: at most two files in flight
                self.writes.pop(0).result()

    def wait(self) -> None:
        """Every file written so far is on disk (or its error is raised here)."""
        for write in self.writes:
            write.result()
        self.writes = []

    def _write(self, kind: str, table: pa.Table, days: pa.Array, sequence: int) -> None:
        unique = pc.unique(days).to_pylist()
        for day in unique:
            part = (
                table
                if len(unique) == 1
                else table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            )
            folder = self.dir / kind / f"date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{self.run_id}-{sequence:05d}.parquet"
            tmp = folder / f".{name}.tmp"
            with writing(tmp):
                write_parquet(part, tmp)
            os.replace(tmp, folder / name)
            self.files.append(f"{kind}/date={day.isoformat()}/{name}")

    def commit(self, manifest: dict[str, Any]) -> None:
        """The commit point: the manifest appears atomically; then the files move in."""
        for kind in list(self.pending):
            self.flush(kind)
        self.wait()
        self.writer.shutdown()
        for name in self.files:  # on disk before the commit point, so power loss cannot tear a run
            with (self.dir / name).open("rb") as f:
                os.fsync(f.fileno())
        rated = [name for name in self.files if name.startswith("rated/")]
        self.seq = commitlog.append(self.root, self.run_id, self.author, rated, self.replaces)
        write_manifest(
            self.root,
            {**manifest, "run": self.run_id, "files": self.files, "replaces": self.replaces},
        )
        self.committed = True
        _publish(self.dir, self.root)
        shutil.rmtree(self.dir)
        commitlog.published(self.root)

    def abort(self) -> None:
        """Undo a run that failed before its commit point; after it, only ``recover`` may
        touch the staged files (it finishes publishing them)."""
        self.writer.shutdown(wait=True, cancel_futures=True)
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.seq:  # logged, then failed before its commit point
                with suppress(OSError):  # else the next writer's recovery says so
                    commitlog.published(self.root)
