"""A summary of each day of the rated lake, which stats read instead of its files (SPEC §6).

A month's stats over the rated files themselves read some 20 million rows of twelve
columns; over these summaries they read a few hundred thousand rows and, for channels and
CPS, a few integers a call, already in time order. The summary of the partition
``lake/rated/date=D/`` is kept in ``lake/_rollup/date=D/``:

- ``totals.arrow``: a row per key (``KEY_COLUMNS``) and UTC hour with the sums every metric
  is computed from (``SUMS``), and the first and last ``dt`` of the row's calls, so that a
  range that cuts through an hour can tell whether it takes the row whole. Its metadata
  names the rated files (and their sizes) the summary covers, and its calls file;
- ``calls-<id>.bin``: each call's key (an index into the day's keys) and start in start
  order (``STARTS``), and the starts and ends of the calls that are ever up as one sequence
  of events in time order (``EVENTS``): channels are a walk along the days' events, and CPS
  a walk along their starts, not a sort of every call.

A summary is made the first time stats read its day (``summaries``) and kept, as a cache: a
day that gained files since has them summarised and merged in; a day whose files changed
otherwise is summarised again. ``totals.arrow`` is written last, by an atomic rename, so a
reader sees a whole summary or the one before it. Nothing else writes these files; a lake
without them (or one stats may not write into) reads the same, only slower.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

# The columns a stats group can be made of, in the order a key's values are kept.
KEY_COLUMNS = (
    "customer_id",
    "provider_id",
    "card_id",
    "dest_code",
    "dest_name",
    "currency",
    "provider_currency",
)
# Final responses that count towards NER besides answered calls (SPEC §6): the network
# delivered the call and the user declined it.
NER_CODES = (480, 486, 600, 603)
_KEYS = ", ".join(KEY_COLUMNS)

# Each CDR's key columns, start and end (µs): a call is up over [dt, dt + ring + talk).
CALL_ROWS = f"""
    SELECT {_KEYS}, dt, sip_code, duration, billed_duration, pdd_ms, charge,
           provider_charge, profit,
           epoch_us(dt) AS t0,
           epoch_us(dt)
             + CAST(coalesce(ring_duration, 0) * 1000000 AS BIGINT)
             + CASE WHEN sip_code = 200
                    THEN CAST(coalesce(duration, 0) * 1000000 AS BIGINT) ELSE 0 END AS t1
"""
# The sums of a set of calls (``calls``) per key and UTC hour (its first µs), in the types
# the metrics take.
SUMS = f"""
    SELECT {{key}}{_KEYS}, t0 // 3600000000 * 3600000000 AS hour,
        min(t0) AS first_us, max(t0) AS last_us,
        count(*) AS attempts,
        count(*) FILTER (sip_code = 200) AS answered,
        sum(duration) FILTER (sip_code = 200)::DECIMAL(38, 6) AS talk,
        sum(pdd_ms)::BIGINT AS pdd_sum,
        count(pdd_ms) AS pdd_n,
        count(*) FILTER (sip_code = 200 OR sip_code IN ({", ".join(map(str, NER_CODES))}))
            AS ner_hits,
        count(*) FILTER (NOT sip_code BETWEEN 300 AND 399) AS ner_base,
        sum(billed_duration)::BIGINT AS billed,
        sum(charge)::DECIMAL(38, 6) AS charge,
        sum(provider_charge)::DECIMAL(38, 6) AS provider_charge,
        sum(profit)::DECIMAL(38, 6) AS profit
    FROM calls GROUP BY ALL
"""
ROLLUP_FOLDER = "_rollup"
# A calls file: each call's key and start (start order; a call up over no time at all,
# unanswered without ring, counts for CPS but is never up: its key is kept as ~key), then
# the events of the calls that are up, in order: ``event`` is the time (µs) × 2, + 1 for a
# start (so at one instant ends come first), and ``call`` the call's index among those calls
# in start order (~index for its end).
STARTS = (("key", np.int32), ("start", np.int64))
EVENTS = (("event", np.int64), ("call", np.int32))
# The calls file's layout, named in its summary: one of another layout is made again.
LAYOUT = b"3"
# How long a calls file outlives the summary that named it: long enough for any reader that
# read those totals to have read their calls.
CALLS_KEPT_SECONDS = 600


def _bytes(calls: int, events: int) -> int:
    return sum(calls * np.dtype(t).itemsize for _, t in STARTS) + sum(
        events * np.dtype(t).itemsize for _, t in EVENTS
    )


@dataclass(frozen=True)
class Rollup:
    """The summary of one day: ``totals`` (``SUMS`` with a ``key`` column) and its calls
    (``arrays``, as ``STARTS`` and ``EVENTS`` name them: in memory, or mapped from its calls
    file, read-only)."""

    totals: pa.Table
    arrays: dict[str, np.ndarray]

    def key_values(self) -> list[tuple[object, ...]]:
        """The key columns' values of each key index."""
        index, first = np.unique(self.totals["key"].to_numpy(), return_index=True)
        rows = self.totals.select(list(KEY_COLUMNS)).take(pa.array(first))
        values = list(zip(*(rows[c].to_pylist() for c in KEY_COLUMNS), strict=True))
        assert index.tolist() == list(range(len(values)))
        return values


def summarize(con: duckdb.DuckDBPyConnection, paths: list[str]) -> Rollup:
    """The summary of the rated files ``paths``, read with DuckDB: their keys numbered in
    order, the sums per key and hour, and the calls' starts and ends."""
    source = "FROM read_parquet(?::VARCHAR[], hive_partitioning = false)"
    keys = con.sql(f"SELECT DISTINCT {_KEYS} {source} ORDER BY ALL", params=[paths])
    numbered = keys.to_arrow_table()
    numbered = numbered.append_column("key", pa.array(np.arange(numbered.num_rows, dtype=np.int32)))
    on = " AND ".join(f"c.{k} IS NOT DISTINCT FROM n.{k}" for k in KEY_COLUMNS)
    con.register("numbered", numbered)
    try:
        totals = con.sql(
            f"WITH calls AS ({CALL_ROWS} {source}), c AS ({SUMS.format(key='')}) "
            f"SELECT n.key, c.* FROM c JOIN numbered n ON {on} ORDER BY n.key, c.hour",
            params=[paths],
        ).to_arrow_table()
        calls = con.sql(
            f"SELECT n.key, c.t0, c.t1 FROM ({CALL_ROWS} {source}) c JOIN numbered n ON {on}",
            params=[paths],
        ).fetchnumpy()
    finally:
        con.unregister("numbered")
    return _ordered(
        totals,
        np.asarray(calls["key"], np.int32),
        np.asarray(calls["t0"], np.int64),
        np.asarray(calls["t1"], np.int64),
    )


def _ordered(totals: pa.Table, key: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> Rollup:
    """A summary from each call's key, start and end (in any order)."""
    order = np.argsort(t0, kind="stable")
    key, t0, t1 = key[order], t0[order], t1[order]
    up = t1 > t0
    index = np.arange(int(up.sum()), dtype=np.int32)
    event = np.concatenate([(t0[up] << 1) | 1, t1[up] << 1])
    call = np.concatenate([index, ~index])
    by_time = np.argsort(event, kind="stable")
    key = np.where(up, key, ~key).astype(np.int32)
    arrays = {"key": key, "start": t0, "event": event[by_time], "call": call[by_time]}
    return Rollup(totals, arrays)


def merge(old: Rollup, new: Rollup) -> Rollup:
    """One summary of the calls of both (``new``'s keys numbered after ``old``'s)."""
    number = {k: i for i, k in enumerate(old.key_values())}
    remap = np.array([number.setdefault(k, len(number)) for k in new.key_values()], np.int32)
    totals = pa.concat_tables(
        [
            old.totals,
            new.totals.set_column(
                0, "key", pa.array(remap[new.totals["key"].to_numpy()], pa.int32())
            ),
        ]
    )
    key = np.concatenate([_key(old.arrays["key"]), remap[_key(new.arrays["key"])]])
    t0 = np.concatenate([old.arrays["start"], new.arrays["start"]])
    t1 = np.concatenate([_ends_in_start_order(old.arrays), _ends_in_start_order(new.arrays)])
    return _ordered(totals, key, t0, t1)


def _key(stored: np.ndarray) -> np.ndarray:
    return np.where(stored < 0, ~stored, stored)


def _ends_in_start_order(calls: dict[str, np.ndarray]) -> np.ndarray:
    t1 = calls["start"].copy()  # a call never up ends as it starts
    ends = calls["call"] < 0
    t1[np.flatnonzero(calls["key"] >= 0)[~calls["call"][ends]]] = calls["event"][ends] >> 1
    return t1


def _files(paths: list[str]) -> dict[str, int]:
    return {Path(p).name: Path(p).stat().st_size for p in paths}


def load(con: duckdb.DuckDBPyConnection, lake: Path, day: str, paths: list[str]) -> Rollup:
    """The summary of the rated files ``paths``, all of the partition ``day``
    (``date=…``) of ``lake``: the kept one if it covers just these files as they are; the
    kept one with the files added since merged in; else made now. Kept if the lake lets."""
    folder = lake.parent / ROLLUP_FOLDER / day
    files = _files(paths)
    kept = _read(folder)
    if kept is not None:
        covered = json.loads((kept.totals.schema.metadata or {})[b"files"])
        if covered == files:
            return kept
        if all(files.get(name) == size for name, size in covered.items()):
            added = [p for p in paths if Path(p).name not in covered]
            rollup = merge(kept, summarize(con, added))
            _write(folder, rollup, files)
            return rollup
    rollup = summarize(con, paths)
    _write(folder, rollup, files)
    return rollup


def _read(folder: Path) -> Rollup | None:
    """The kept summary in ``folder``, its calls mapped (not read: a query reads only the
    pages it needs, and no copy is made)."""
    try:
        with pa.memory_map(str(folder / "totals.arrow")) as source:
            totals = pa.ipc.open_file(source).read_all()
        meta = totals.schema.metadata or {}
        path = folder / meta[b"calls"].decode()
        if meta.get(b"layout") != LAYOUT:
            return None  # kept by an older cdrflow: make it again
        counts = {"starts": int(meta[b"starts"]), "events": int(meta[b"events"])}
        if path.stat().st_size != _bytes(counts["starts"], counts["events"]):
            return None
        mapped = np.memmap(path, np.uint8, mode="r") if counts["starts"] else np.zeros(0, np.uint8)
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        return None  # none yet, or not whole: make it again
    arrays, offset = {}, 0
    for count, layout in ((counts["starts"], STARTS), (counts["events"], EVENTS)):
        for name, dtype in layout:
            arrays[name] = np.frombuffer(mapped, dtype, count, offset)
            offset += count * np.dtype(dtype).itemsize
    return Rollup(totals, arrays)


def _write(folder: Path, rollup: Rollup, files: dict[str, int]) -> None:
    """Keep ``rollup`` in ``folder``: a new calls file, then ``totals.arrow`` naming it (the
    commit point), then calls files older than ``CALLS_KEPT_SECONDS`` go. A lake stats may
    not write is left as is."""
    token = f"{os.getpid()}-{threading.get_ident()}"
    calls = f"calls-{secrets.token_hex(8)}.bin"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{calls}.{token}.tmp"
        with tmp.open("wb") as f:
            for name, dtype in STARTS + EVENTS:
                f.write(np.ascontiguousarray(rollup.arrays[name], dtype).data)
        os.replace(tmp, folder / calls)
        meta = {
            "files": json.dumps(files, sort_keys=True),
            "calls": calls,
            "layout": LAYOUT.decode(),
            "starts": str(rollup.arrays["start"].size),
            "events": str(rollup.arrays["event"].size),
        }
        table = rollup.totals.replace_schema_metadata(meta)
        tmp = folder / f".totals.arrow.{token}.tmp"
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, folder / "totals.arrow")
        for old in folder.glob("calls-*.bin"):
            # A reader may have just read the totals that name an older calls file.
            if old.name != calls and time.time() - old.stat().st_mtime > CALLS_KEPT_SECONDS:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # the summary serves this query only


def by_day(paths: list[str]) -> dict[str, list[str]]:
    """Rated files by their partition (``date=…``), in order."""
    days: dict[str, list[str]] = {}
    for p in sorted(paths):
        days.setdefault(Path(p).parent.name, []).append(p)
    return days


def summaries(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    days: dict[str, list[str]],
    progress: Callable[[int, int], object] | None = None,
) -> list[Rollup]:
    """The summary of each day of ``days`` (``by_day``: every rated file of each day), in
    its order; days to summarise are made on every core at once. ``progress(done, days)``
    is told as each is ready."""
    workers = max(1, min(os.cpu_count() or 1, len(days)))
    local = threading.local()

    done = [0]
    lock = threading.Lock()

    def one(day: str) -> Rollup:
        if workers > 1 and not hasattr(local, "con"):
            local.con = con.cursor()
        rollup = load(local.con if workers > 1 else con, lake, day, days[day])
        if progress is not None:
            with lock:
                done[0] += 1
                progress(done[0], len(days))
        return rollup

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, days))
