"""Kafka's default partitioner (the Java client's murmur2 of the key) for many keys at once.

aiokafka's ``DefaultPartitioner`` hashes a key in pure Python, a loop over its bytes: some
ten microseconds a callid, paid for every hold the authorization gate writes to its table's
changelog. ``partitions`` gives the same partition for each key (tests/test_partitioner.py
checks it against aiokafka's own), from one compiled kernel over all the keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@nb.njit(cache=True)
def _murmur2(offsets: I64, data: npt.NDArray[np.uint8], out: I64) -> None:  # pragma: no cover
    """out[i] = murmur2 of data[offsets[i]:offsets[i + 1]], as the Java client computes it
    (32-bit arithmetic, kept in int64 and masked)."""
    for i in range(out.size):
        begin = offsets[i]
        length = offsets[i + 1] - begin
        h = (_SEED ^ length) & _MASK
        for j in range(length // 4):
            at = begin + 4 * j
            k = (
                np.int64(data[at])
                | (np.int64(data[at + 1]) << 8)
                | (np.int64(data[at + 2]) << 16)
                | (np.int64(data[at + 3]) << 24)
            )
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = (h * _M) & _MASK
            h ^= k
        tail = begin + (length & ~3)
        extra = length % 4
        if extra >= 3:
            h ^= np.int64(data[tail + 2]) << 16
        if extra >= 2:
            h ^= np.int64(data[tail + 1]) << 8
        if extra >= 1:
            h ^= np.int64(data[tail])
            h = (h * _M) & _MASK
        h ^= h >> 13
        h = (h * _M) & _MASK
        h ^= h >> 15
        out[i] = h


def murmur2(keys: Sequence[bytes]) -> I64:
    """Each key's murmur2 hash (an unsigned 32-bit value)."""
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(key) for key in keys], out=offsets[1:])
    joined = b"".join(keys)
    data = np.frombuffer(joined, np.uint8) if joined else np.zeros(1, np.uint8)
    out = np.empty(len(keys), np.int64)
    _murmur2(offsets, data, out)
    return out


def partitions(keys: Sequence[bytes], all_partitions: Sequence[int]) -> list[int]:
    """The partition aiokafka's ``DefaultPartitioner`` gives each key among
    ``all_partitions`` (in the order the producer lists them)."""
    count = len(all_partitions)
    return [all_partitions[h % count] for h in ((murmur2(keys) & 0x7FFFFFFF).tolist())]


__all__ = ["murmur2", "partitions"]
