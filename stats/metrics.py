"""The traffic and money of SPEC §6, grouped and bucketed, from the lake's summaries.

A group is any combination of the ``KEYS`` (customer, provider, card, code, destination,
currency) and at most one ``BUCKETS`` entry (hour, day, month: UTC, by ``dt``). The columns
are the group keys, then ``METRICS`` in that order.

The numbers come from each day's summary (``stats.rollup``): its rows per key and hour are
added up by DuckDB, and channels and CPS are counted from its calls (``stats.peaks``). An
hour that the range cuts through, where a summary row holds calls on both sides of the cut,
is summed from the rated files themselves; so every answer is the one the calls give.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from schemas.errors import CdrflowError
from stats.peaks import HOUR_US, channels, day_groups
from stats.rollup import CALL_ROWS, KEY_COLUMNS, SUMS, Rollup, by_day, summaries
from stats.scope import RATED_FILES, Scope

# Group key → its column in the rated lake.
KEYS = {
    "customer": "customer_id",
    "provider": "provider_id",
    "card": "card_id",
    "code": "dest_code",
    "destination": "dest_name",
    "currency": "currency",
}
# Time bucket → its unit; a bucket is shown as text that sorts in time order.
BUCKETS = {"hour": "hour", "day": "day", "month": "month"}
_BUCKET_TEXT = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}
METRICS = (
    "attempts",
    "answered",
    "asr",
    "acd",
    "pdd",
    "ner",
    "minutes",
    "billed_minutes",
    "charge",
    "provider_charge",
    "profit",
    "channels",
    "cps",
)


def parse_by(text: str) -> list[str]:
    """``customer,day`` → the group keys in order; an unknown or repeated key is an error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [*KEYS, *BUCKETS]
    for n in names:
        if n not in known:
            raise CdrflowError(f"--by: unknown group {n!r}; use any of {', '.join(known)}")
    if len(set(names)) != len(names):
        raise CdrflowError(f"--by: {text!r} names a group twice")
    if sum(n in BUCKETS for n in names) > 1:
        raise CdrflowError("--by: at most one of hour, day, month")
    return names


def query_parts(by: Sequence[str], where: str) -> dict[str, str]:
    names = list(by)
    return {
        "select_keys": "".join(
            f"{KEYS[n]} AS {n}, " if n in KEYS else f"date_trunc('{BUCKETS[n]}', dt) AS {n}, "
            for n in names
        ),
        "key_list": "".join(f"{n}, " for n in names),
        "shown_keys": "".join(
            f"{n}, " if n in KEYS else f"strftime({n}, '{_BUCKET_TEXT[n]}') AS {n}, " for n in names
        ),
        "group": ", ".join(names) if names else "()",
        "order": ", ".join(f"{n} NULLS FIRST" for n in names) or "1",
        "where": where,
    }


_UNIT_US = {"hour": HOUR_US, "day": 24 * HOUR_US}

# The metrics of groups of summed rows (``SUMS``; ``grp``: the group, of keys and bucket).
_METRICS = """
    WITH s AS (
        SELECT grp, bucket, {any_keys}
            sum(attempts)::BIGINT AS attempts,
            sum(answered)::BIGINT AS answered,
            sum(talk)::DECIMAL(38, 6) AS talk,
            sum(pdd_sum)::BIGINT AS pdd_sum,
            sum(pdd_n)::BIGINT AS pdd_n,
            sum(ner_hits)::BIGINT AS ner_hits,
            sum(ner_base)::BIGINT AS ner_base,
            sum(billed)::BIGINT AS billed,
            -- Money adds up only within one currency: a group that mixes them gets null.
            CASE WHEN min(currency) = max(currency)
                 THEN sum(charge) END::DECIMAL(18, 6) AS charge,
            CASE WHEN min(provider_currency) = max(provider_currency)
                 THEN sum(provider_charge) END::DECIMAL(18, 6) AS provider_charge,
            CASE WHEN min(currency) = max(currency)
                 THEN sum(profit) END::DECIMAL(18, 6) AS profit
        FROM sums GROUP BY grp, bucket
    )
    SELECT {names}attempts, answered,
        round(100.0 * answered / attempts, 2) AS asr,
        round(talk / nullif(answered, 0), 2)::DOUBLE AS acd,
        round(pdd_sum::DOUBLE / nullif(pdd_n, 0), 1) AS pdd,
        round(100.0 * ner_hits / nullif(ner_base, 0), 2) AS ner,
        round(coalesce(talk, 0) / 60, 4)::DOUBLE AS minutes,
        round(coalesce(billed, 0) / 60, 4) AS billed_minutes,
        charge, provider_charge, profit, grp, bucket
    FROM s ORDER BY {order}
"""


def metrics(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    by: Sequence[str],
    progress: Callable[[int, int], object] | None = None,
) -> pa.Table:
    """The SPEC §6 metrics of the scope's rated CDRs per group of ``by`` (one row per group
    that has calls; no group at all: one row over the whole scope, if it has calls).
    ``progress(done, days)`` is told as each day's summary is read or made."""
    files = scope.files()
    if not files:
        return _empty(by)
    names = list(by)
    bucket = next((n for n in names if n in BUCKETS), None)
    days = by_day(files)
    rollups = summaries(con, scope.lake, days, progress)
    groups = _KeyGroups([KEYS[n] for n in names if n in KEYS], scope.customers)
    luts = [groups.lut(r) for r in rollups]
    # Each summary row's group of keys.
    kgs = [lut[r.totals["key"].to_numpy()] for r, lut in zip(rollups, luts, strict=True)]
    lo, hi = _micros(scope.start, _MIN), _micros(scope.end, _MAX)
    sums = _sums(con, scope, list(days.values()), rollups, kgs, groups, lo, hi)
    if sums.num_rows == 0:
        return _empty(by)
    hours = [r.totals["hour"].to_numpy() for r in rollups]
    base, unit, edges = _buckets(
        bucket,
        min(int(h.min()) for h in hours if h.size),
        max(int(h.max()) for h in hours if h.size),
    )
    ids = _GroupIds(rollups, luts, kgs, hours, base, unit, edges)
    bucket_of = _bucket_of(sums["hour"].to_numpy(), base, unit, edges)
    sums = sums.append_column("bucket", pa.array(bucket_of))
    sums = sums.append_column("grp", pa.array(ids.of(sums["kg"].to_numpy(), bucket_of)))
    channels, cps = _peaks(rollups, ids, lo, hi)
    con.register("sums", sums)
    try:
        table = con.sql(
            _METRICS.format(
                any_keys="".join(f"any_value({KEYS[n]}) AS {n}, " for n in names if n in KEYS),
                names="".join(f"{n}, " if n in KEYS else f"bucket AS {n}, " for n in names),
                order=", ".join(f"{n} NULLS FIRST" if n in KEYS else "bucket" for n in names)
                or "1",
            )
        ).to_arrow_table()
    finally:
        con.unregister("sums")
    at = table["grp"].to_numpy()
    if bucket is not None:
        labels = pa.array([_label(bucket, int(t)) for t in edges[:-1]], pa.string())
        table = table.set_column(
            names.index(bucket), bucket, labels.take(table["bucket"].combine_chunks())
        )
    table = table.drop_columns(["grp", "bucket"])
    table = table.append_column("channels", pa.array(channels[at], pa.int64()))
    return table.append_column("cps", pa.array(cps[at], pa.int64()))


class _GroupIds:
    """The groups (a group of keys and a bucket) the scope's days hold, numbered densely,
    and for each day the group of each of its keys in each of its hours (``tables``, -1:
    a key left out; hours from ``first_hours``). ``kgs``: each day's rows' groups of keys."""

    def __init__(
        self,
        rollups: list[Rollup],
        luts: list[np.ndarray],
        kgs: list[np.ndarray],
        hours: list[np.ndarray],
        base: int,
        unit: int,
        edges: np.ndarray,
    ) -> None:
        self.buckets = edges.size - 1
        rows = []
        for kg32, hour in zip(kgs, hours, strict=True):
            kg = kg32.astype(np.int64)
            rows.append((kg, kg * self.buckets + _bucket_of(hour, base, unit, edges)))
        self.known = np.unique(np.concatenate([c[kg >= 0] for kg, c in rows]))
        self.count = max(1, self.known.size)
        self.tables: list[np.ndarray] = []
        self.first_hours: list[int] = []
        for rollup, (kg, combined), lut, hour in zip(rollups, rows, luts, hours, strict=True):
            first = int(hour.min()) // HOUR_US if hour.size else 0
            width = int(hour.max()) // HOUR_US - first + 1 if hour.size else 0
            table = np.full((lut.size, width), -1, np.int32)
            mine = kg >= 0
            key = rollup.totals["key"].to_numpy()[mine]
            table[key, hour[mine] // HOUR_US - first] = np.searchsorted(self.known, combined[mine])
            self.tables.append(table)
            self.first_hours.append(first)

    def of(self, kg: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """The number of each group (of keys ``kg``, in bucket ``bucket``)."""
        combined = kg.astype(np.int64) * self.buckets + bucket
        return np.asarray(np.searchsorted(self.known, combined), np.int32)


_MIN, _MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _micros(moment: datetime | None, default: int) -> int:
    if moment is None:
        return int(default)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class _KeyGroups:
    """Each distinct value of the grouped key columns, numbered as met; a day's keys are
    mapped to them (-1: a customer the scope leaves out)."""

    def __init__(self, columns: list[str], customers: Sequence[str]) -> None:
        self.at = [KEY_COLUMNS.index(c) for c in columns]
        self.customers = set(customers)
        self.number: dict[tuple[object, ...], int] = {}

    def of(self, values: Sequence[object]) -> int:
        if self.customers and values[0] not in self.customers:
            return -1
        return self.number.setdefault(tuple(values[i] for i in self.at), len(self.number))

    def lut(self, rollup: Rollup) -> np.ndarray:
        """Key index of ``rollup`` → group of keys (its keys are numbered 0, 1, … in its
        totals)."""
        return np.array([self.of(values) for values in rollup.key_values()], np.int32)


def _sums(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    days: list[list[str]],
    rollups: list[Rollup],
    kgs: list[np.ndarray],
    groups: _KeyGroups,
    lo: int,
    hi: int,
) -> pa.Table:
    """The summed rows of the scope with their group (``kg``): the summaries' rows inside the
    range, and the hours it cuts through summed from the rated files."""
    tables = []
    cut: list[tuple[int, list[str]]] = []  # an hour (µs) whose rows straddle, its day's files
    for paths, rollup, kg in zip(days, rollups, kgs, strict=True):
        totals = rollup.totals
        first = totals["first_us"].to_numpy()
        last = totals["last_us"].to_numpy()
        hour = totals["hour"].to_numpy()
        inside = (first >= lo) & (last < hi)
        straddle = ~inside & (last >= lo) & (first < hi)
        cut += [(h, paths) for h in np.unique(hour[straddle]).tolist()]
        keep = inside & (kg >= 0) & ~np.isin(hour, hour[straddle])
        if keep.any():
            rows = totals.filter(pa.array(keep)).drop_columns(["key"])
            tables.append(rows.append_column("kg", pa.array(kg[keep], pa.int32())))
    for h, paths in cut:
        rows = _hour_sums(con, scope, paths, max(lo, h), min(hi, h + HOUR_US))
        of = [groups.of(v) for v in zip(*(rows[c].to_pylist() for c in KEY_COLUMNS), strict=True)]
        tables.append(rows.append_column("kg", pa.array(of, pa.int32())))
    if not tables:
        return pa.table({"hour": pa.array([], pa.int64())})
    return pa.concat_tables(tables, promote_options="permissive")


def _hour_sums(
    con: duckdb.DuckDBPyConnection, scope: Scope, paths: list[str], lo: int, hi: int
) -> pa.Table:
    """``SUMS`` of the calls of ``paths`` in [lo, hi) µs, of the scope's customers."""
    customers = "customer_id IN (SELECT unnest(?))" if scope.customers else "TRUE"
    return con.sql(
        f"WITH calls AS ({CALL_ROWS} FROM {RATED_FILES} "
        f"WHERE epoch_us(dt) >= ? AND epoch_us(dt) < ? AND {customers}) " + SUMS.format(key=""),
        params=[paths, lo, hi, *([list(scope.customers)] if scope.customers else [])],
    ).to_arrow_table()


def _buckets(bucket: str | None, first: int, last: int) -> tuple[int, int, np.ndarray]:
    """The buckets from the hour ``first`` to the hour ``last`` (µs): their first instant,
    their length (0: months, by ``edges``) and every bucket's start and the last's end."""
    if bucket is None:
        return first, 0, np.array([_MIN, _MAX], np.int64)
    if bucket in _UNIT_US:
        unit = _UNIT_US[bucket]
        base = first - first % unit
        count = (last - base) // unit + 1
        return base, unit, base + unit * np.arange(count + 1, dtype=np.int64)
    moment = _moment(first).replace(day=1, hour=0)
    edges: list[int] = []
    while not edges or edges[-1] <= last:
        edges.append(_micros(moment, 0))
        moment = (moment + timedelta(days=32)).replace(day=1)
    return edges[0], 0, np.array(edges, np.int64)


def _bucket_of(hours: np.ndarray, base: int, unit: int, edges: np.ndarray) -> np.ndarray:
    if unit:
        return ((hours - base) // unit).astype(np.int32)
    return (np.searchsorted(edges, hours, side="right") - 1).astype(np.int32)


def _moment(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _label(bucket: str, micros: int) -> str:
    return _moment(micros).strftime(_BUCKET_TEXT[bucket])


def _peaks(
    rollups: list[Rollup], ids: _GroupIds, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Channels and CPS per group (numbered by ``ids``): each day's calls counted for CPS,
    given their groups and their events copied into one array, on every core; then the
    walk along the events."""
    count = ids.count
    runs = _offsets([r.arrays["event"].size for r in rollups])
    group_runs = _offsets([r.arrays["event"].size // 2 for r in rollups])
    event = np.empty(int(runs[-1]), np.int64)
    call = np.empty(int(runs[-1]), np.int32)
    group = np.empty(int(group_runs[-1]), np.int32)
    local = threading.local()
    scratch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lock = threading.Lock()

    def day(d: int) -> None:
        if not hasattr(local, "cps"):
            local.cps = (
                np.zeros(count, np.int64),
                np.full(count, -1, np.int64),
                np.zeros(count, np.int64),
            )
            with lock:
                scratch.append(local.cps)
        calls = rollups[d].arrays
        a, b = int(group_runs[d]), int(group_runs[d + 1])
        table, first = ids.tables[d], ids.first_hours[d]
        day_groups(calls["key"], calls["start"], table, first, lo, hi, group[a:b], *local.cps)
        event[runs[d] : runs[d + 1]] = calls["event"]
        call[runs[d] : runs[d + 1]] = calls["call"]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(day, range(len(rollups))))
    cps = np.max([c for c, _, _ in scratch], axis=0)
    return channels(event, call, runs, group, group_runs, count), cps


def _offsets(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _empty(by: Sequence[str]) -> pa.Table:
    columns = {n: pa.array([], pa.string()) for n in by}
    columns.update({m: pa.array([], pa.int64()) for m in METRICS})
    return pa.table(columns)
