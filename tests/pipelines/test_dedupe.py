"""The billed-callids table: what it holds, and when a stream worker starts it afresh."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.dedupe import MARK_BLOCK, WINDOW_DAYS, BilledCallids, hashes

DAY = 20_000  # 2024-10-04, in days since 1970


def test_callids_rated_earlier_in_the_run_are_duplicates_and_rejected_ones_are_not(
    tmp_path: Path,
) -> None:
    billed = BilledCallids(tmp_path)
    callids = pa.array(["a", "b", "a", "c", "b", "c"])
    ok = np.array([True, False, True, True, True, True])
    # "b" was refused the first time (not billed), so its resend is rated; "a" and "c" repeat.
    assert billed.mark(callids, ok).tolist() == [False, False, True, False, False, True]
    assert billed.mark(pa.array(["b", "d"]), np.array([True, True])).tolist() == [True, False]


def test_the_table_is_outgrown_once_the_newest_day_moves_three_windows_past_its_first(
    tmp_path: Path,
) -> None:
    billed = BilledCallids(tmp_path)
    assert not billed.outgrown(np.array([DAY + 100]))  # nothing loaded yet
    billed.load_lake(np.array([DAY - 1, DAY]))  # the window around them: DAY - 8 … DAY + 7
    assert min(billed.loaded_days) == DAY - 1 - WINDOW_DAYS
    assert not billed.outgrown(np.array([], np.int64))
    assert not billed.outgrown(np.array([DAY + 3 * WINDOW_DAYS]))
    assert billed.outgrown(np.array([DAY + 3 * WINDOW_DAYS + 1]))
    # Late CDRs load their own window, and do not make the table start again.
    billed.load_lake(np.array([DAY - 60]))
    assert min(billed.loaded_days) == DAY - 60 - WINDOW_DAYS
    assert not billed.outgrown(np.array([DAY - 60, DAY + 5]))


def test_a_callid_hashes_the_same_whatever_its_neighbours(tmp_path: Path) -> None:
    """A callid's hashes read its bytes eight at a time: whatever lies around it in the
    buffer (the next callid, a slice's offset) must not change them."""
    rng = np.random.default_rng(3)
    alone = {}
    for length in range(41):
        callid = "".join(rng.choice(list("0123456789abcdef-é"), length))
        h1, h2 = hashes(pa.array([callid]))
        alone[callid] = (int(h1[0]), int(h2[0]))
    for shift in range(9):
        noise = ["x" * int(rng.integers(0, 20)) for _ in range(len(alone))]
        mixed = [v for pair in zip(noise, alone, strict=True) for v in pair]
        array = pa.array(["y" * shift, *mixed]).slice(1)
        h1, h2 = hashes(array)
        got = {c: (int(a), int(b)) for c, a, b in zip(array.to_pylist(), h1, h2, strict=True)}
        assert {c: got[c] for c in alone} == alone


def test_callids_that_differ_in_one_byte_or_in_length_hash_apart() -> None:
    base = "0f8e7d6c-5b4a-4392-8170-a1b2c3d4e5f6"
    variants = {base[:n] for n in range(len(base) + 1)} | {base + "\0", base + "\0\0"}
    for i in range(len(base)):
        for c in "0x-Z":
            variants.add(base[:i] + c + base[i + 1 :])
    h1, h2 = hashes(pa.array(sorted(variants)))
    assert len(set(zip(h1.tolist(), h2.tolist(), strict=True))) == len(variants)
    assert len(set(h1.tolist())) == len(variants)  # the 64-bit hash alone, too


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(["", "a", "ab", "abcdefgh", "abcdefghi", "é" * 5]),
                           st.integers(0, 3), st.booleans()), max_size=40),
        min_size=1, max_size=3,
    )
)  # fmt: skip
def test_mark_finds_exactly_the_repeats_of_billed_callids(
    batches: list[list[tuple[str, int, bool]]],
) -> None:
    """Against a set: a callid is a duplicate when an earlier rated (``ok``) one of the same
    run had it, across the calls of ``mark``."""
    billed = BilledCallids(Path("never-read"))  # mark does not read the lake
    seen: set[str] = set()
    for batch in batches:
        callids = [f"{text}{number}" for text, number, _ in batch]
        ok = np.array([flag for _, _, flag in batch], np.bool_)
        expected = []
        for callid, flag in zip(callids, ok, strict=True):
            expected.append(callid in seen)
            if flag and callid not in seen:
                seen.add(callid)
        assert billed.mark(pa.array(callids, pa.string()), ok).tolist() == expected


def test_mark_over_many_blocks_and_a_growing_table(tmp_path: Path) -> None:
    """Past one probe block and through the table's growth: each repeat found, in order."""
    n = 5 * MARK_BLOCK + 7
    callids = [f"call-{i % (n // 2)}" for i in range(n)]  # every callid twice, far apart
    dup = BilledCallids(tmp_path).mark(pa.array(callids), np.ones(n, np.bool_))
    assert dup.tolist() == [i >= n // 2 for i in range(n)]


def test_a_doubling_lets_the_old_table_go_before_it_makes_the_new(tmp_path: Path) -> None:
    """Memory bound: while the table doubles it holds the used keys and the new tables, not
    the old ones as well (numpy's memory is traced; a slot is 12 bytes, 8 + 4)."""
    tracemalloc.start()  # before the table is made: its old tables are traced too
    try:
        table = BilledCallids(tmp_path)
        s = table.keys1.size
        first = 3 * s // 4  # as full as the table gets before it must grow
        table.mark(pa.array([f"a-{i}" for i in range(first)]), np.ones(first, np.bool_))
        assert table.keys1.size == s
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        table._room(s)  # 3/4 s + s keys need 4 s slots
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert table.keys1.size == 4 * s
    # Beyond the old tables (12 s, in ``before``): the used keys (9 s) and the new tables
    # (48 s) once the old are gone, less the old (-12 s), and the reinsertion's flags
    # (0.75 s): 45.75 s. Keeping the old keys2 (4 s) while making the new, as before,
    # reached 49 s.
    assert 45 * s <= peak < 47.5 * s
