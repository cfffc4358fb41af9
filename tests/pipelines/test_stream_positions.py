"""Where a stream partition resumes: read from the manifests' names, never their contents."""

from __future__ import annotations

from pathlib import Path

from pipelines.lakefiles import RATE_RUNS, committed_runs
from pipelines.stream import lake_position, partition_runs, run_name


def manifest(home: Path, run: str) -> None:
    runs = home / "lake" / "_runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{run}.json").write_text(f'{{"run": "{run}", "inputs": {{}}}}')


def test_a_partition_resumes_after_its_last_committed_batch(tmp_path: Path) -> None:
    for run in (
        run_name("cdrs", 1, 100, 249),
        run_name("cdrs", 1, 0, 99),
        run_name("cdrs", 1, 1000, 1999),  # offsets sort numerically: zero-padded names
        run_name("cdrs", 2, 0, 9),
        run_name("cdrsx", 1, 0, 99_999),  # another topic sharing the prefix
        "20261126T101500-0a1b2c3d",  # a cdrflow rate run
    ):
        manifest(tmp_path, run)
    assert [(f, t) for _, f, t in partition_runs(tmp_path, "cdrs", 1)] == [
        (0, 99),
        (100, 249),
        (1000, 1999),
    ]
    assert lake_position(tmp_path, "cdrs", 1) == 2000
    assert lake_position(tmp_path, "cdrs", 2) == 10
    assert lake_position(tmp_path, "cdrs", 3) is None
    assert lake_position(tmp_path, "cdrsx", 1) == 100_000
    assert [r["run"] for r in committed_runs(tmp_path, RATE_RUNS)] == ["20261126T101500-0a1b2c3d"]
