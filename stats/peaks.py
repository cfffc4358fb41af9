"""Channels and CPS per group (SPEC §6), exactly, from the days' calls in time order.

Each day's summary (``stats.rollup``) holds its calls' starts in start order and the ends
of those that are ever up in end order. ``day_groups`` counts CPS, a day at a time (a
second never spans two days), on every core, and keeps the starts of the calls that are
ever up with their groups: with the ends, one run of each a day, all in one array by
offsets (a numba typed list of the days would take 0.7 s to build in a fresh process).
``channels`` then sweeps the runs of starts and ends merged in time (a small heap of runs,
and a run is read on while it stays below the next run's head, so days that do not overlap
cost no heap work), counting each group's calls up; at one instant, ends go before starts,
a call being up over [start, end).

Split in time, the sweep runs on every core: a later part counts ups relative to its own
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
def day_groups(key, start, table, first_hour, lo, hi, up_start, up_group, cps, second, streak):
    """A day's calls: each call that is ever up (its key not stored as ``~key``) copied to
    ``up_start`` with its group in ``up_group``, for the sweep; and every call counted for
    CPS into ``cps`` (per group, with ``second``/``streak`` as scratch). The group is
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
            up_start[n] = t
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
def sweep(start, group, end, end_group, runs, lo, hi, up, best):
    """Sweep the events in [lo, hi) µs of calls that are ever up: the runs (``runs``:
    offsets, one a day, the same for both) of ``start`` (with each call's group, -1: not
    counted) and of ``end`` (with their calls' groups). Fills ``up`` (calls up at ``hi``,
    relative to ``lo``) and ``best`` (the most up, relative; ``_NO_START`` when no call of
    the group starts here)."""
    k = runs.size - 1
    s_pos = np.empty(k, np.int64)
    s_stop = np.empty(k, np.int64)
    s_heads = np.empty(k, np.int64)
    s_order = np.empty(k, np.int64)
    e_pos = np.empty(k, np.int64)
    e_stop = np.empty(k, np.int64)
    e_heads = np.empty(k, np.int64)
    e_order = np.empty(k, np.int64)
    ns = _heap(start, runs, lo, hi, s_pos, s_stop, s_heads, s_order)
    ne = _heap(end, runs, lo, hi, e_pos, e_stop, e_heads, e_order)
    while ns > 0 or ne > 0:
        # Merge the top run of starts with the top run of ends while each stays at or
        # below its heap's next head; then the heaps take their runs' new heads.
        s_limit = _limit(s_heads, s_order, ns)
        e_limit = _limit(e_heads, e_order, ne)
        # The last end and the last start this merge may take before another run's head.
        end_cap = min(e_limit, s_limit)
        start_cap = min(s_limit, e_limit - 1)
        rs, re = s_order[0], e_order[0]
        i, s_stop_r = (s_pos[rs], s_stop[rs]) if ns > 0 else (0, 0)
        j, e_stop_r = (e_pos[re], e_stop[re]) if ne > 0 else (0, 0)
        while True:
            sv = start[i] if i < s_stop_r else _NONE
            ev = end[j] if j < e_stop_r else _NONE
            if ev <= sv:  # at one instant, ends first
                if ev > end_cap or j >= e_stop_r:
                    break
                g = end_group[j]
                if g >= 0:
                    up[g] -= 1
                j += 1
            else:
                if sv > start_cap:
                    break
                g = group[i]
                if g >= 0:
                    u = up[g] + 1
                    up[g] = u
                    if u > best[g]:
                        best[g] = u
                i += 1
        if ns > 0:
            ns = _advance(start, s_pos, s_stop, s_heads, s_order, ns, rs, i)
        if ne > 0:
            ne = _advance(end, e_pos, e_stop, e_heads, e_order, ne, re, j)


def channels(
    start: np.ndarray,
    group: np.ndarray,
    end: np.ndarray,
    end_group: np.ndarray,
    runs: I64,
    n_groups: int,
) -> I64:
    """Channels of each of ``n_groups`` groups, given runs of starts with each call's group
    (-1: not counted) and runs of ends with theirs (see ``sweep``), split over the cores."""
    parts = max(1, min(os.cpu_count() or 1, start.size // _CALLS_PER_PART))
    cuts = _cuts(start, parts)

    def part(lo: int, hi: int) -> tuple[I64, I64]:
        up = np.zeros(n_groups, np.int64)
        best = np.full(n_groups, _NO_START, np.int64)
        sweep(start, group, end, end_group, runs, lo, hi, up, best)
        return up, best

    with ThreadPoolExecutor(max_workers=parts) as pool:
        results = list(pool.map(part, cuts[:-1], cuts[1:]))
    peak = np.zeros(n_groups, np.int64)
    before = np.zeros(n_groups, np.int64)
    for up, best in results:
        # Relative to what the earlier parts left up (a part may end more calls than it
        # starts); a group with no start in the part has no peak there.
        peak = np.maximum(peak, np.where(best > _NO_START, best + before, 0))
        before += up
    return peak


def _cuts(start: np.ndarray, parts: int) -> list[int]:
    """Whole-second instants splitting the starts into ``parts`` of about equal size, from
    before the first event to after the last."""
    inner = []
    if parts > 1:
        sample = np.sort(start[:: max(1, start.size // 4096)])
        for p in range(1, parts):
            t = int(sample[p * sample.size // parts]) // 1_000_000 * 1_000_000
            inner.append(t)
    return [_NO_START, *sorted(set(inner)), _NONE]
