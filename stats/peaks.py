"""Channels and CPS per group (SPEC §6), exactly, from the days' calls in time order.

Each day's summary (``stats.rollup``) holds its calls' starts in start order, and the starts
and ends of the calls that are ever up as one sequence of events in time order (ends first
at one instant: a call is up over [start, end)). ``day_groups`` counts CPS, a day at a time
(a second never spans two days), on every core, and gives each call that is ever up its
group. ``channels`` then walks the days' events, all in one array by offsets (a numba
typed list of the days would take 0.7 s to build in a fresh process), counting each group's
calls up: a day is a run, and the runs are merged by a small heap only where they overlap
in time (a day's calls that end after midnight), so the walk is mostly a plain loop
without a branch to mispredict.

Split in time, the walk runs on every core: a later part counts ups relative to its own
start, and adding what the earlier parts left up turns its peaks into absolute ones.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
HOUR_US = 3_600_000_000
_NONE = np.iinfo(np.int64).max
_NO_START = np.iinfo(np.int64).min
# Below this many calls a second thread costs more than it saves.
_CALLS_PER_PART = 1 << 20


@nb.njit(cache=True, nogil=True)
def day_groups(key, start, table, first_hour, lo, hi, up_group, cps, second, streak):
    """A day's calls: the group of each call that is ever up (its key not kept as ``~key``)
    into ``up_group``, in start order, for the walk; and every call counted for CPS into
    ``cps`` (per group, with ``second``/``streak`` as scratch). The group is
    ``table[key, hour - first_hour]`` (-1: a key left out); a call outside [lo, hi) µs has
    none."""
    hours = table.shape[1]
    n = 0
    for i in range(key.size):
        k = key[i]
        up = k >= 0
        if not up:
            k = ~k
        t = start[i]
        h = t // HOUR_US - first_hour
        g = -1
        if lo <= t < hi and 0 <= h < hours:
            g = table[k, h]
        if g >= 0:
            # Without branches: whether the group's last start fell in this second is a coin
            # toss a branch would mispredict (a third of this loop's time).
            sec = t // 1_000_000
            streak_g = streak[g] * (second[g] == sec) + 1
            streak[g] = streak_g
            second[g] = sec
            cps[g] = max(cps[g], streak_g)
        if up:
            up_group[n] = g
            n += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _sift(heads, order, n, i):
    """Restore the heap property of ``order[:n]`` (run ids by ``heads``) down from ``i``."""
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        child = left
        if left + 1 < n and heads[order[left + 1]] < heads[order[left]]:
            child = left + 1
        if heads[order[child]] >= heads[order[i]]:
            return
        order[i], order[child] = order[child], order[i]
        i = child


@nb.njit(cache=True, nogil=True)
def _heap(values, runs, lo, hi, pos, stop, heads, order):
    """A heap of the runs of ``values`` (``runs``: offsets; each run sorted) over their
    values in [lo, hi); returns its size. ``pos``/``stop``: each run's next and end index."""
    n = 0
    for r in range(runs.size - 1):
        a, b = runs[r], runs[r + 1]
        pos[r] = a + np.searchsorted(values[a:b], lo)
        stop[r] = a + np.searchsorted(values[a:b], hi)
        if pos[r] < stop[r]:
            heads[r] = values[pos[r]]
            order[n] = r
            n += 1
    for i in range(n // 2 - 1, -1, -1):
        _sift(heads, order, n, i)
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _limit(heads, order, n):
    """The smallest head after the heap's top (``_NONE`` when there is none)."""
    best = _NONE
    if n > 1:
        best = heads[order[1]]
    if n > 2 and heads[order[2]] < best:
        best = heads[order[2]]
    return best


@nb.njit(cache=True, nogil=True, inline="always")
def _advance(values, pos, stop, heads, order, n, r, i):
    """Run ``r``, the top of the heap ``order[:n]``, read on to ``i``: it takes its new head
    (or leaves the heap when done) and sinks to its place; returns the heap's size."""
    pos[r] = i
    if i < stop[r]:
        heads[r] = values[i]
    else:
        n -= 1
        order[0] = order[n]
    _sift(heads, order, n, 0)
    return n


@nb.njit(cache=True, nogil=True)
def sweep(event, call, runs, group, group_runs, lo, hi, up, best):
    """Walk the events (``event``, ``call``: see ``stats.rollup.EVENTS``; ``runs``: each
    day's offsets) with ``event`` in [lo, hi); a call's group is ``group[group_runs[day] +
    index]`` (-1: not counted). Fills ``up`` (calls up after the last event, relative to
    ``lo``) and ``best`` (the most up after any event, relative; ``_NO_START`` for a group
    without events here)."""
    k = runs.size - 1
    pos = np.empty(k, np.int64)
    stop = np.empty(k, np.int64)
    heads = np.empty(k, np.int64)
    order = np.empty(k, np.int64)
    n = _heap(event, runs, lo, hi, pos, stop, heads, order)
    while n > 0:
        # The top day's events, while they stay at or below the other days' next event.
        r = order[0]
        limit = _limit(heads, order, n)
        i, last, base = pos[r], stop[r], group_runs[r]
        while i < last and event[i] <= limit:
            c = call[i]
            end = c >> 31  # -1 for an end (~index), 0 for a start
            g = group[base + (c ^ end)]
            if g >= 0:
                # After an end, up is below what it was at the last start: max() is safe.
                u = up[g] + (1 | end)
                up[g] = u
                best[g] = max(best[g], u)
            i += 1
        n = _advance(event, pos, stop, heads, order, n, r, i)


def channels(
    event: np.ndarray,
    call: np.ndarray,
    runs: I64,
    group: np.ndarray,
    group_runs: I64,
    n_groups: int,
) -> I64:
    """Channels of each of ``n_groups`` groups, given the days' events and each call's group
    (see ``sweep``), split over the cores."""
    parts = max(1, min(os.cpu_count() or 1, event.size // (2 * _CALLS_PER_PART)))
    cuts = _cuts(event, parts)

    def part(lo: int, hi: int) -> tuple[I64, I64]:
        up = np.zeros(n_groups, np.int64)
        best = np.full(n_groups, _NO_START, np.int64)
        sweep(event, call, runs, group, group_runs, lo, hi, up, best)
        return up, best

    with ThreadPoolExecutor(max_workers=parts) as pool:
        results = list(pool.map(part, cuts[:-1], cuts[1:]))
    peak = np.zeros(n_groups, np.int64)
    before = np.zeros(n_groups, np.int64)
    for up, best in results:
        # Relative to what the earlier parts left up (a part may end more calls than it
        # starts); a group without events in the part has no peak there.
        peak = np.maximum(peak, np.where(best > _NO_START, best + before, 0))
        before += up
    return peak


def _cuts(event: np.ndarray, parts: int) -> list[int]:
    """Events of whole-second instants (time × 2: an end, the first event of its instant)
    splitting the events into ``parts`` of about equal size, from before the first event to
    after the last."""
    inner = []
    if parts > 1:
        sample = np.sort(event[:: max(1, event.size // 4096)])
        for p in range(1, parts):
            second = int(sample[p * sample.size // parts]) >> 1
            inner.append(second // 1_000_000 * 1_000_000 * 2)
    return [_NO_START, *sorted(set(inner)), _NONE]
