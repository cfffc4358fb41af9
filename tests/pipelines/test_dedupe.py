"""The billed-callids table: what it holds, and when a stream worker starts it afresh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.dedupe import WINDOW_DAYS, BilledCallids

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
