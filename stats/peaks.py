"""Channels and CPS per group (SPEC §6), exactly, by a sweep over each group's calls.

SQL can say it (a running sum over start and end events), but a window over two events per
call sorts them all; here DuckDB hands over each call's group hash, start and end, and a
numba kernel counts the calls into their groups, orders each group's starts and ends (a
switch writes in time order, so they are nearly sorted already) and sweeps them.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


@nb.njit(cache=True, nogil=True)
def _group_index(groups, hashes, out):
    """``out[i]``: the index of ``hashes[i]`` in ``groups`` (sorted, distinct)."""
    for i in range(hashes.size):
        out[i] = np.searchsorted(groups, hashes[i])


@nb.njit(cache=True, nogil=True)
def _sorted(values):
    """``values`` in order (as they are when already so: calls arrive in time order)."""
    for k in range(1, values.size):
        if values[k] < values[k - 1]:
            return np.sort(values)
    return values


@nb.njit(cache=True, nogil=True)
def _sweep(index, starts, ends, n_groups, channels, cps):
    counts = np.zeros(n_groups + 1, np.int64)
    for i in range(index.size):
        counts[index[i] + 1] += 1
    first = np.cumsum(counts)
    fill = first[:-1].copy()
    s = np.empty(index.size, np.int64)
    e = np.empty(index.size, np.int64)
    for i in range(index.size):
        g = index[i]
        s[fill[g]] = starts[i]
        e[fill[g]] = ends[i]
        fill[g] += 1
    for g in range(n_groups):
        lo, hi = first[g], first[g + 1]
        gs = _sorted(s[lo:hi])
        ge = _sorted(e[lo:hi])
        # Up over [start, end): at one instant, ends before starts.
        up = best = 0
        j = 0
        for k in range(gs.size):
            while j < ge.size and ge[j] <= gs[k]:
                up -= 1
                j += 1
            up += 1
            best = max(best, up)
        channels[g] = best
        # Attempts whose start falls in one wall-clock second.
        run = most = 0
        for k in range(gs.size):
            if k > 0 and gs[k] // 1_000_000 == gs[k - 1] // 1_000_000:
                run += 1
            else:
                run = 1
            most = max(most, run)
        cps[g] = most


def peaks(groups: U64, hashes: U64, starts: I64, ends: I64) -> tuple[I64, I64]:
    """Channels and CPS of each group of ``groups`` (sorted distinct hashes), given each
    call's group hash, start and end (microseconds)."""
    index = np.empty(hashes.size, np.int64)
    _group_index(groups, hashes, index)
    channels = np.zeros(groups.size, np.int64)
    cps = np.zeros(groups.size, np.int64)
    _sweep(index, starts, ends, groups.size, channels, cps)
    return channels, cps
