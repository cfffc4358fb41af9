"""Channels and CPS per group (SPEC §6), exactly, by one sweep over every call in time order.

Each lake file's summary (``stats.rollup``) holds its calls' starts in start order and their
ends in end order: runs, one a file. The sweep merges the runs of starts and the runs of
ends (a small heap of runs, and a run is read on while it stays below the next run's head,
so files that do not overlap in time cost no heap work) and counts, for each group, the calls
up and the attempts in the current second. At one instant, ends go before starts: a call is
up over [start, end).

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
_NONE = np.iinfo(np.int64).max
_NO_START = np.iinfo(np.int64).min
# Below this many calls a second thread costs more than it saves.
_CALLS_PER_PART = 1 << 20


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
    """A heap of the runs of ``values`` (``runs``: offsets) over the values in [lo, hi);
    returns its size. ``pos``/``stop``: each run's next and end index."""
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
def sweep(group, start, end, end_group, runs, up_runs, lo, hi, up, best, cps, second, streak):
    """Sweep the calls' events in [lo, hi) µs. ``group``: each call's group (start order;
    -1: not counted; ``-2 - g``: a call of group g that is never up, which counts for CPS
    only); ``start``: the runs of starts (``runs``: offsets); ``end``, ``end_group``: the
    runs of ends of the calls that are up (``up_runs``), and their calls' groups.
    Fills ``up`` (calls up at ``hi``, relative to ``lo``), ``best`` (the most up, relative;
    ``_NO_START`` when no call of the group starts here), ``cps`` (the most starts in one
    second: ``lo`` and ``hi`` are whole seconds), using ``second``/``streak`` as scratch
    (per group)."""
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
    ne = _heap(end, up_runs, lo, hi, e_pos, e_stop, e_heads, e_order)
    while ns > 0 or ne > 0:
        # Merge the top run of starts with the top run of ends while each stays at or
        # below its heap's next head; then the heaps take their runs' new heads.
        rs = s_order[0] if ns > 0 else -1
        re = e_order[0] if ne > 0 else -1
        s_limit = _limit(s_heads, s_order, ns)
        e_limit = _limit(e_heads, e_order, ne)
        # The last end and the last start this merge may take before another run's head.
        end_cap = min(e_limit, s_limit)
        start_cap = min(s_limit, e_limit - 1)
        i, s_stop_r = (s_pos[rs], s_stop[rs]) if rs >= 0 else (0, 0)
        j, e_stop_r = (e_pos[re], e_stop[re]) if re >= 0 else (0, 0)
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
                elif g < -1:
                    g = -2 - g
                if g >= 0:
                    sec = sv // 1_000_000
                    if second[g] == sec:
                        streak[g] += 1
                    else:
                        second[g] = sec
                        streak[g] = 1
                    if streak[g] > cps[g]:
                        cps[g] = streak[g]
                i += 1
        if rs >= 0:
            ns = _advance(start, s_pos, s_stop, s_heads, s_order, ns, rs, i)
        if re >= 0:
            ne = _advance(end, e_pos, e_stop, e_heads, e_order, ne, re, j)


def peaks(
    group: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    end_group: np.ndarray,
    runs: I64,
    up_runs: I64,
    n_groups: int,
) -> tuple[I64, I64]:
    """Channels and CPS of each of ``n_groups`` groups, given each call's group and the runs
    of starts and ends (see ``sweep``), split over the cores."""
    parts = max(1, min(os.cpu_count() or 1, start.size // _CALLS_PER_PART))
    cuts = _cuts(start, parts)
    results = []

    def part(lo: int, hi: int) -> tuple[I64, I64, I64]:
        up = np.zeros(n_groups, np.int64)
        best = np.full(n_groups, _NO_START, np.int64)
        cps = np.zeros(n_groups, np.int64)
        second = np.full(n_groups, -1, np.int64)
        streak = np.zeros(n_groups, np.int64)
        sweep(group, start, end, end_group, runs, up_runs, lo, hi, up, best, cps, second, streak)
        return up, best, cps

    with ThreadPoolExecutor(max_workers=parts) as pool:
        results = list(pool.map(part, cuts[:-1], cuts[1:]))
    channels = np.zeros(n_groups, np.int64)
    cps = np.zeros(n_groups, np.int64)
    before = np.zeros(n_groups, np.int64)
    for up, best, part_cps in results:
        # Relative to what the earlier parts left up (a part may end more calls than it
        # starts); a group with no start in the part has no peak there.
        channels = np.maximum(channels, np.where(best > _NO_START, best + before, 0))
        cps = np.maximum(cps, part_cps)
        before += up
    return channels, cps


def _cuts(start: I64, parts: int) -> list[int]:
    """Whole-second instants splitting the starts into ``parts`` of about equal size, from
    before the first event to after the last."""
    inner = []
    if parts > 1:
        sample = np.sort(start[:: max(1, start.size // 4096)])
        for p in range(1, parts):
            t = int(sample[p * sample.size // parts]) // 1_000_000 * 1_000_000
            inner.append(t)
    return [_NO_START, *sorted(set(inner)), _NONE]


@nb.njit(cache=True, nogil=True)
def groups_of(key, start, lut, lo, hi, base, unit, edges, out):
    """Each call's group for ``sweep``: ``lut[key] × buckets + bucket`` of its start (a key
    stored as ``~key``: a call never up, given as ``-2 - group``), where the bucket is
    ``(start - base) // unit``, or by ``edges`` (starts, and the last end) when ``unit`` is
    0; -1 for a call outside [lo, hi) or of a left-out key (``lut`` -1)."""
    n_buckets = edges.size - 1
    for i in range(key.size):
        t = start[i]
        k = key[i]
        g = lut[k if k >= 0 else ~k]
        if g < 0 or t < lo or t >= hi:
            out[i] = -1
            continue
        if unit > 0:
            b = (t - base) // unit
        else:
            b = 0
            while b + 1 < n_buckets and edges[b + 1] <= t:
                b += 1
        g = g * n_buckets + b
        out[i] = g if k >= 0 else -2 - g
