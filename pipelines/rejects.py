"""``cdrflow rejects replay``: rejected records rated again with the catalog as it is now
(after an operator added the missing customer, route or rate).

Under the lake lock (waited for at most ``LOCK_WAIT`` seconds), after recovery, the selected
records of the rejected lake (``stats.rejects.Selection``) are read again from what they
kept, in the order of their files and rows:

- ``raw`` holds a JSON object for a record from a JSON Lines file, a Kafka message, a
  Parquet row (its values as JSON) or a re-rate (its input fields as JSON): it is read with
  the JSON reader, as a message is; a CSV record keeps the line(s) of its row and its file's
  header line (``csv_header``): it is read with the CSV reader under that header. (A CSV
  record rejected before ``csv_header`` existed takes the header of its source file when
  that file is still there; otherwise it cannot be read again, and stays as it is, counted
  ``unreplayable``.)
- each is validated and rated as ``cdrflow rate`` rates a record (``pipelines.rate.
  rate_block``): duplicates against the rated lake and earlier records of the replay, calls
  that may draw on packages drawn at the end in (dt, callid) order, after what the lake
  already holds (like a late file: the draws of calls rated before stay);
- a record that rates moves to the rated lake, keeping its ``source`` and ``line``; one that
  fails again stays in its rejected file, in its place, with its new reason and detail (its
  ``raw``, ``rejected_at``, ``source`` and ``line`` kept);
- each rejected file that changed is written again (its other records as they were) and the
  run's commit replaces it (``pipelines.lakefiles``): the new rated files and the new
  rejected files appear, and the old ones go, at one commit point, so that a reader sees
  every selected record before the replay or after it, never in both lakes nor in neither.

A replay killed at any moment leaves the lake as before its commit point, or finished after
it by the next writer or reader; run again, it replays what is still rejected, so the lake
ends as one replay would leave it. Nothing is published to Kafka.

The run is recorded in its manifest, ``_runs/replay-<time>-<hex>.json``: who, when, the
selection, the catalog version, and the counts (moved, by the reason they had; still
rejected, by their reason now; unreplayable) and the money of the moved calls.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import scan
from pipelines.cdrfile import (
    HEADER_BYTES,
    UTF8_BOM,
    Block,
    Lines,
    _csv_header,
    _parallel_block,
    read_messages,
)
from pipelines.dedupe import BilledCallids
from pipelines.lakefiles import Staging, lake_root
from pipelines.rate import HeldCalls, Summary, _stage_rated, package_usage, rate_block
from pipelines.rerate import staged_run
from rating.tables import Tables
from schemas.cdr import REJECT_REASONS, REJECTED
from schemas.errors import CdrflowError
from stats.rejects import Selection, selected_rows

# Records read again and rated at a time: memory stays bounded however many are replayed.
REPLAY_ROWS = 65_536
# The columns a record that fails again takes from its new rejection; the others it keeps.
REDECIDED = ("callid", "dt", "customer_id", "reject_reason", "reject_detail")


def rejected_lake(home: Path) -> Path:
    return lake_root(home) / "rejected"


def replay(
    home: Path,
    selection: Selection,
    *,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Rate the selected rejected records again, each moving to the rated lake exactly once
    or staying rejected with its reason now; returns the run's record. ``on_total`` is told
    how many records are replayed, ``progress`` how many more are done."""
    with staged_run(home, "replay", _Replaying, on_wait) as run:
        files = selection.files(rejected_lake(home))
        chosen = selected_rows(run.con, files, selection)
        run.record["selection"] = {
            "reasons": list(selection.reasons),
            "customers": list(selection.customers),
            "from": selection.start.isoformat() if selection.start else None,
            "to": selection.end.isoformat() if selection.end else None,
            "sources": list(selection.sources),
        }
        run.record["catalog_version"] = run.tables.version
        total = sum(len(rows) for rows in chosen.values())
        if on_total is not None:
            on_total(total)
        stamp = int(run.now.timestamp() * 1_000_000)
        # In the order of the listing: the day, then the file's name (its run's time).
        ordered = [(name, chosen[name]) for name in files if name in chosen]
        staging = cast(_Replaying, run.staging)  # staged_run made it of _Replaying
        run.record.update(
            _replay(run.con, home, run.tables, staging, ordered, total, stamp, progress)
        )
    return run.record


class _Replaying(Staging):
    """The replay's staging. Rating hands it rated calls and rejections whose ``line`` is
    the record's index in the replay: rated calls get their own line back and are staged;
    rejections are kept for the rewrite of their file (``keep``)."""

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, run_id)
        self.lines = np.zeros(0, np.int64)  # each replayed record's line, by index
        self.reasons = np.zeros(0, np.int8)  # and the reason it had (REJECT_REASONS)
        self.rejections: list[pa.Table] = []
        self.moved: list[np.ndarray] = []
        self.money: dict[str, dict[str, Decimal]] = {}

    def add(self, kind: str, table: pa.Table, days: pa.Array) -> None:
        if table.num_rows == 0:
            return
        if kind == "rejected":
            self.rejections.append(table)
            return
        index = table["line"].to_numpy()
        self.moved.append(index)
        at = table.schema.get_field_index("line")
        table = table.set_column(at, "line", pa.array(self.lines[index], pa.int64()))
        sums = table.group_by("currency").aggregate([("charge", "sum"), ("tax", "sum")])
        for row in sums.to_pylist():
            money = self.money.setdefault(row["currency"] or "", {})
            for name in ("charge", "tax"):
                money[name] = money.get(name, Decimal(0)) + (row[f"{name}_sum"] or Decimal(0))
        super().add(kind, table, days)

    def keep(self, table: pa.Table, day: date) -> None:
        """A rejected file written again, whole, in its own partition."""
        if table.num_rows:
            super().add("rejected", table, pa.repeat(pa.scalar(day, pa.date32()), table.num_rows))
            self.flush("rejected")


def _replay(
    con: duckdb.DuckDBPyConnection,
    home: Path,
    tables: Tables,
    staging: _Replaying,
    files: list[tuple[str, list[int]]],
    total: int,
    stamp: int,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    summary = Summary(staging.run_id)
    staging.lines = np.zeros(total, np.int64)
    staging.reasons = np.zeros(total, np.int8)
    billed = BilledCallids(home)
    usage = package_usage(con, home, tables)
    held = HeldCalls(staging.dir / "held")
    headers: dict[str, str | None] = {}  # the header of each CSV source, for older records
    root = lake_root(home)
    base = 0
    unreplayable = 0
    replaced = 0
    for name, numbers in files:
        table = _conform(pq.read_table(name))
        rows = np.array(numbers, np.int64)
        picked = table.take(pa.array(rows))
        n = len(rows)
        staging.lines[base : base + n] = picked["line"].to_numpy()
        codes = {reason: k for k, reason in enumerate(REJECT_REASONS)}
        staging.reasons[base : base + n] = [codes[r] for r in picked["reject_reason"].to_pylist()]
        stuck = np.zeros(n, np.bool_)
        for lo in range(0, n, REPLAY_ROWS):
            part = picked.slice(lo, REPLAY_ROWS)
            for block in _blocks(con, part, base + lo, stuck[lo : lo + REPLAY_ROWS], headers):
                rate_block(con, tables, block, staging, billed, usage, stamp, summary, held)
            if progress is not None:
                progress(part.num_rows)
        failed = pa.concat_tables(staging.rejections) if staging.rejections else None
        staging.rejections = []
        if _rewrite(staging, Path(name), root, table, rows, failed, base, stuck):
            replaced += 1
        unreplayable += int(stuck.sum())
        base += n
    del billed
    for rated in held.finish(tables, usage, stamp):
        _stage_rated(staging, rated, summary)
    moved = np.concatenate(staging.moved) if staging.moved else np.zeros(0, np.int64)
    was = Counter(REJECT_REASONS[k] for k in staging.reasons[moved].tolist())
    return {
        "replayed": total,
        "moved": summary.rated,
        "moved_from": {r: was[r] for r in REJECT_REASONS if was[r]},
        "still_rejected": {r: summary.rejected[r] for r in REJECT_REASONS if summary.rejected[r]},
        "unreplayable": unreplayable,
        "files_replaced": replaced,
        "money": {
            currency: {name: str(value) for name, value in sums.items()}
            for currency, sums in sorted(staging.money.items())
        },
    }


def _conform(table: pa.Table) -> pa.Table:
    """A rejected file's table with every column of ``REJECTED``, in its order (a column an
    older file lacks is null)."""
    n = table.num_rows
    columns = [
        table[f.name] if f.name in table.column_names else pa.nulls(n, f.type) for f in REJECTED
    ]
    return pa.Table.from_arrays(columns, schema=REJECTED)


def _blocks(
    con: duckdb.DuckDBPyConnection,
    part: pa.Table,
    first: int,
    stuck: np.ndarray,
    headers: dict[str, str | None],
) -> Iterator[Block]:
    """The records of ``part`` (replay indices from ``first``) read again as validated
    blocks, a run of records of one kind at a time (so that they are rated in their order);
    each record's ``line`` is its replay index and its ``source`` its own. A record that
    cannot be read again is marked in ``stuck`` and left out."""
    raws = part["raw"].to_pylist()
    sources = part["source"].to_pylist()
    keys: list[str | None] = []  # None: JSON; a CSV header line; "" : cannot be read
    for raw, header, source in zip(raws, part["csv_header"].to_pylist(), sources, strict=True):
        if header is None and source.lower().endswith(".csv") and not _json_object(raw):
            if source not in headers:
                headers[source] = _file_header(Path(source))
            header = headers[source] or ""
        keys.append(header)
    lo = 0
    while lo < len(keys):
        hi = lo + 1
        while hi < len(keys) and keys[hi] == keys[lo]:
            hi += 1
        key = keys[lo]
        if key == "":
            stuck[lo:hi] = True
        else:
            index = np.arange(first + lo, first + hi, dtype=np.int64)
            if key is None:
                values = [raw.encode() for raw in raws[lo:hi]]
                block = read_messages(con, values, np.zeros(hi - lo, np.int64), index, str)[0]
            else:
                block = _csv_block(con, key, raws[lo:hi], index)
            yield _placed(block, part["source"], first)
        lo = hi


def _json_object(raw: str) -> bool:
    if not raw.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _file_header(path: Path) -> str | None:
    """The header line of a CSV file, if it is there and its header is one."""
    try:
        with path.open("rb") as f:
            line = f.readline(HEADER_BYTES).removeprefix(UTF8_BOM)
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        _csv_header(path, text)
    except (OSError, CdrflowError):
        return None
    return text


def _csv_block(
    con: duckdb.DuckDBPyConnection, header_line: str, raws: list[str], index: np.ndarray
) -> Block:
    """CSV records under their header, read as a file's block is: the header first, then
    each record between its offsets (a quoted field may hold line breaks)."""
    header = _csv_header(Path("csv_header"), header_line)
    values = [text.encode() for text in (header_line, *raws)]
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)) + 1, out=offsets[1:])
    data = b"\n".join(values) + b"\n"
    text = pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))
    numbers = np.concatenate([index[:1] - 1, index])
    lines = Lines(np.frombuffer(data, np.uint8), offsets, text, numbers)
    columns = np.array([scan.FIELD.get(name, -1) for name in header], np.int64)
    block = _parallel_block(con, "", "csv", lines, 1, header, columns)
    block.csv_header = header_line
    return block


def _placed(block: Block, sources: pa.ChunkedArray, first: int) -> Block:
    """The block with each record's own source (its ``line`` is its replay index)."""

    def own(table: pa.Table) -> pa.Table:
        if table.num_rows == 0 or "source" not in table.column_names:
            return table
        at = pc.subtract(table["line"], first)
        return table.set_column(table.schema.get_field_index("source"), "source", sources.take(at))

    block.valid = own(block.valid)
    block.invalid = own(block.invalid)
    return block


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Where two columns hold the same value (two nulls are the same)."""
    equal = pc.fill_null(pc.equal(a, b), False)
    both = pc.and_(pc.is_null(a), pc.is_null(b))
    return np.asarray(pc.or_(equal, both).to_numpy(zero_copy_only=False), np.bool_)


def _rewrite(
    staging: _Replaying,
    path: Path,
    root: Path,
    table: pa.Table,
    rows: np.ndarray,
    failed: pa.Table | None,
    base: int,
    stuck: np.ndarray,
) -> bool:
    """Write the rejected file ``path`` again when a record of it moved or fails now for
    another reason: its records in their order, the moved ones gone, those that failed
    again with their new reason. Whether it was written again."""
    n = table.num_rows
    stays = stuck.copy()  # by position among the selected rows
    replacement = None
    changed = False
    if failed is not None and failed.num_rows:
        position = failed["line"].to_numpy() - base
        stays[position] = True
        at = rows[position]
        kept = table.take(pa.array(at))
        columns = [failed[f.name] if f.name in REDECIDED else kept[f.name] for f in REJECTED]
        replacement = pa.Table.from_arrays(columns, schema=REJECTED)
        changed = not all(_same(replacement[c], kept[c]).all() for c in REDECIDED)
    if stays.all() and not changed:
        return False
    keep = np.ones(n, np.bool_)
    keep[rows[~stays]] = False
    take = np.arange(n, dtype=np.int64)
    combined = table
    if replacement is not None:
        take[rows[position]] = n + np.arange(replacement.num_rows, dtype=np.int64)
        combined = pa.concat_tables([table, replacement])
    out = combined.take(pa.array(take[keep]))
    day = date.fromisoformat(path.parent.name.removeprefix("date="))
    staging.keep(out, day)
    staging.replaces.append(str(path.relative_to(root)))
    return True


__all__ = ["REPLAY_ROWS", "rejected_lake", "replay"]
