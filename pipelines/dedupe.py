"""The set of callids already billed: the lake's (within the window) and this run's.

A callid is kept as two independent hashes of its bytes, 64 and 32 bits (96 bits: a false
match among the 20 million callids of a large run has a chance of about 3e-15, among a
billion about 6e-12), in an open-addressing table of numpy arrays that numba probes: 12
bytes a slot, so 20 million callids fit in 384 MiB. The hashes read a callid eight bytes at
a time (xxHash64's round and avalanche, two seeds); the table is probed a block of callids
at a time, each slot's lines prefetched first, as the rate lookup does. The table holds the
lake's callids for the days around the CDRs being rated (SPEC §5.5: at least 7 days of
``dt``) and every callid this run has rated.
"""

from __future__ import annotations

from pathlib import Path

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.home import rated_lake
from rating.engine import _strings
from rating.prefetch import prefetch

WINDOW_DAYS = 7
# xxHash64's primes; the second hash starts from another seed.
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SEED1 = np.uint64(0)
_SEED2 = np.uint64(0x243F6A8885A308D3)
# Callids probed per block: their slots are prefetched, then probed in input order.
MARK_BLOCK = 1024


@nb.njit(cache=True, inline="always")
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = (acc << np.uint64(31)) | (acc >> np.uint64(33))
    return acc * _P1


@nb.njit(cache=True, inline="always")
def _avalanche(h):
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(cache=True, nogil=True)
def _hash(offsets, first, words, h1, h2):
    """Both hashes of each callid ``offsets[i]:offsets[i + 1]``, whose bytes are at those
    offsets less ``first`` in ``words`` (little-endian, with a word of zeros past the end)."""
    for i in range(h1.size):
        begin, end = offsets[i] - first, offsets[i + 1] - first
        length = np.uint64(end - begin)
        a = _SEED1 + length * _P5
        b = _SEED2 + length * _P5
        for k in range(begin, end, 8):
            # The eight bytes from k, from the two words they straddle (the second shifted
            # in two steps, so that k on a word boundary shifts it out whole).
            q = k >> 3
            shift = np.uint64((k & 7) * 8)
            lane = (words[q] >> shift) | ((words[q + 1] << np.uint64(1)) << (np.uint64(63) - shift))
            if end - k < 8:  # the last bytes: the rest of the word is another callid's
                lane &= (np.uint64(1) << np.uint64((end - k) * 8)) - np.uint64(1)
            a = _round(a, lane)
            b = _round(b, lane)
        a = _avalanche(a)
        b = _avalanche(b)
        h1[i] = a if a != 0 else np.uint64(1)  # 0 marks an empty slot
        h2[i] = np.uint32(b >> np.uint64(32))


@nb.njit(cache=True, nogil=True)
def _mark(h1, h2, ok, keys1, keys2, dup, insert_only):
    """Walk in input order: a callid already in the table is a duplicate; a rated (``ok``)
    one that is not goes in, so that later repeats are duplicates too."""
    mask = keys1.size - 1
    added = 0
    for lo in range(0, h1.size, MARK_BLOCK):
        hi = min(lo + MARK_BLOCK, h1.size)
        for i in range(lo, hi):  # the misses of a block overlap; the walk finds them cached
            s = np.int64(h1[i] & np.uint64(mask))
            prefetch(keys1, s)
            prefetch(keys2, s)
        for i in range(lo, hi):
            s = np.int64(h1[i] & np.uint64(mask))
            found = False
            while keys1[s] != 0:
                if keys1[s] == h1[i] and keys2[s] == h2[i]:
                    found = True
                    break
                s = (s + 1) & mask
            if found:
                if not insert_only:
                    dup[i] = True
                continue
            if ok[i]:
                keys1[s] = h1[i]
                keys2[s] = h2[i]
                added += 1
    return added


class BilledCallids:
    """Callids already billed, for duplicate detection across the lake and one run."""

    def __init__(self, home: Path) -> None:
        self.lake = rated_lake(home)
        self.keys1 = np.zeros(1 << 16, np.uint64)
        self.keys2 = np.zeros(1 << 16, np.uint32)
        self.count = 0
        self.loaded_days: set[int] = set()
        self.first_newest: int | None = None  # the newest day of the first CDRs it saw

    def _room(self, more: int) -> None:
        # Linear probing stays short up to three quarters full.
        if 4 * (self.count + more) <= 3 * self.keys1.size:
            return
        size = self.keys1.size
        while 4 * (self.count + more) > 3 * size:
            size *= 2
        used = self.keys1 != 0
        old1, old2 = self.keys1[used], self.keys2[used]
        # The old tables go before the new ones are made, so a doubling holds the used keys
        # and the new tables, not the old ones too (at 20M callids 560 MiB, not 624; a 20M
        # Parquet run's peak RSS went from 1,946-1,963 to 1,916-1,926 MiB).
        del used, self.keys1, self.keys2
        self.keys1 = np.zeros(size, np.uint64)
        self.keys2 = np.zeros(size, np.uint32)
        self.count = 0
        self._insert(old1, old2)

    def _insert(self, h1: np.ndarray, h2: np.ndarray) -> None:
        self._room(h1.size)
        dup = np.zeros(h1.size, np.bool_)
        self.count += _mark(h1, h2, np.ones(h1.size, np.bool_), self.keys1, self.keys2, dup, True)

    def load_lake(self, days: np.ndarray) -> None:
        """Bring in the lake's callids of every day within the window of ``days``."""
        if days.size == 0:
            return
        if self.first_newest is None:
            self.first_newest = int(days.max())
        wanted = set(range(int(days.min()) - WINDOW_DAYS, int(days.max()) + WINDOW_DAYS + 1))
        for day in sorted(wanted - self.loaded_days):
            self.loaded_days.add(day)
            folder = self.lake / f"date={np.datetime64(day, 'D')}"
            for path in sorted(folder.glob("*.parquet")):
                callids = pq.read_table(path, columns=["callid"])["callid"]
                self._insert(*hashes(callids))

    def add_files(self, paths: list[Path]) -> None:
        """Bring in the callids of rated lake files another writer committed since this table
        read their days (the files of days it has not read yet it reads with them)."""
        for path in paths:
            day = np.datetime64(path.parent.name.removeprefix("date="), "D").astype(np.int64)
            if int(day) in self.loaded_days:
                self._insert(*hashes(pq.read_table(path, columns=["callid"])["callid"]))

    def outgrown(self, days: np.ndarray) -> bool:
        """Whether the newest of ``days`` (UTC days since 1970) is more than three windows
        past the newest day of the first CDRs this table saw. Then a stream worker, whose
        rated callids are all in the lake, starts a fresh table that loads only the window
        it needs: the table holds a few windows of traffic, not the worker's uptime, and is
        read again at most once every three windows of traffic. A late CDR (an old day) does
        not count: its window is loaded into the table as it is."""
        if self.first_newest is None or days.size == 0:
            return False
        return int(days.max()) - self.first_newest > 3 * WINDOW_DAYS

    def mark(self, callids: pa.ChunkedArray | pa.Array, ok: np.ndarray) -> np.ndarray:
        """Duplicates among ``callids`` (input order); rated ones (``ok``, not duplicate) are
        remembered as billed."""
        h1, h2 = hashes(callids)
        self._room(h1.size)
        dup = np.zeros(h1.size, np.bool_)
        self.count += _mark(h1, h2, ok.astype(np.bool_), self.keys1, self.keys2, dup, False)
        return dup


def hashes(callids: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Both hashes of each callid (a null as the empty string)."""
    offsets, data = _strings(pc.cast(callids, pa.string()))
    first, size = int(offsets[0]), int(offsets[-1] - offsets[0])
    words = np.zeros(size // 8 + 2, np.uint64)
    words.view(np.uint8)[:size] = data[first : first + size]
    h1 = np.empty(len(offsets) - 1, np.uint64)
    h2 = np.empty(len(offsets) - 1, np.uint32)
    _hash(offsets, first, words, h1, h2)
    return h1, h2
