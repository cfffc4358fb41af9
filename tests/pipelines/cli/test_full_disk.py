"""A full disk: one line naming what could not be written and what it left as it was.

Each test fills a real file system of its own (``small_disk``, a tmpfs mounted for it) and
runs the command as an operator would; a full disk used to end ``rate`` with a 59-line
traceback and ``catalog import`` with SQLAlchemy's.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.cli.demo import sample_catalog
from pipelines.lakefiles import write_manifest
from pipelines.rate import rate_files, spill
from tests.conftest import SmallDisk
from tests.pipelines.cli.driver import Cli, describe
from tests.pipelines.test_rate import content, new_home
from tests.pipelines.workload import records, write_jsonl

FULL = "No space left on device"


def refused(cli: Cli, *args: str) -> str:
    """The one line of a refusal on stderr (a progress bar may leave a blank line on stdout)."""
    result = cli.run(*args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), describe(result)
    assert result.stdout.strip() == "", describe(result)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: "), describe(result)
    return line.removeprefix("error: ")


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content: what "as before" compares."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def cli(small_disk: SmallDisk) -> Cli:
    """A home with the sample catalog on the small disk (with room still)."""
    home = Cli(small_disk.path / "home")
    home.ok("catalog", "import", str(sample_catalog()))
    return home


def test_rate_on_a_full_disk_is_one_line_and_commits_nothing(
    small_disk: SmallDisk, cli: Cli, tmp_path: Path
) -> None:
    home = cli.home
    first = write_jsonl(tmp_path / "first.jsonl", records(500, seed=1))
    second = write_jsonl(tmp_path / "second.jsonl", records(20_000, seed=2), broken_every=900)
    cli.ok("rate", str(first))
    before = tree(home / "lake")
    small_disk.fill(leave=64 << 10)
    said = refused(cli, "rate", str(second))
    assert re.fullmatch(
        rf"could not write {re.escape(str(home))}/lake/_staging/\S+\.parquet\.tmp: {FULL}; "
        r"nothing of this run was committed \(the lake is as before\)",
        said,
    ), said
    assert tree(home / "lake") == before
    # Nothing was committed, so nothing is skipped as already rated once there is room.
    small_disk.free()
    cli.ok("rate", str(second))
    reference = new_home(tmp_path, "reference")
    rate_files(reference, [first])
    rate_files(reference, [second])
    assert content(home, "rated") == content(reference, "rated")
    assert content(home, "rejected") == content(reference, "rejected")


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_simulate_out_to_a_full_disk_is_one_line_and_leaves_no_file(
    small_disk: SmallDisk, tmp_path: Path, sample: object, home: Path, suffix: str
) -> None:
    out = small_disk.path / f"day.{suffix}"
    small_disk.fill(leave=64 << 10)
    said = refused(Cli(home), "simulate", "--count", "100000", "--out", str(out))
    assert said == (
        f"could not write {out}: {FULL}; nothing was written (the partial file was removed)"
    )
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler"]


def big_catalog(folder: Path) -> Path:
    """The sample catalog with 30,000 more rates: an import that needs megabytes."""
    shutil.copytree(sample_catalog(), folder)
    rows = [f"{44_000_000 + i},Destination {i},0.0123,0,1,1,0,," for i in range(30_000)]
    header = "prefix,name,rate,connect_fee,mcd,pulse,grace,effective_from,effective_to"
    (folder / "rates" / "retail-usd.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_catalog_import_on_a_full_disk_is_one_line_and_commits_nothing(
    small_disk: SmallDisk, cli: Cli, tmp_path: Path
) -> None:
    home = cli.home
    info = cli.json("catalog", "info")
    bigger = big_catalog(tmp_path / "bigger")
    small_disk.fill(leave=128 << 10)
    said = refused(cli, "catalog", "import", str(bigger))
    assert said == (
        f"could not write the catalog store {home / 'catalog.sqlite'}: database or disk is "
        "full; nothing was committed (the catalog is as before)"
    )
    assert cli.json("catalog", "info") == info
    small_disk.free()
    cli.ok("catalog", "import", str(bigger))
    assert cli.json("catalog", "info") != info


def test_catalog_import_into_a_new_home_on_a_full_disk_is_one_line(
    small_disk: SmallDisk,
) -> None:
    home = small_disk.path / "home"
    small_disk.fill(leave=0)
    said = refused(Cli(home), "catalog", "import", str(sample_catalog()))
    assert said.startswith("could not write ") and said.endswith(
        "nothing was committed (the catalog is as before)"
    ), said


def test_what_a_full_disk_refused_is_named_and_leaves_no_part(small_disk: SmallDisk) -> None:
    """Neither Python's file objects nor Arrow name the file whose write failed."""
    small_disk.fill(leave=0)
    held = small_disk.path / "held.arrow"
    with pytest.raises(OSError, match=FULL) as refused:
        spill(pa.table({"x": list(range(100_000))}), held)
    assert refused.value.filename == str(held)
    root = small_disk.path / "lake"
    (root / "_runs").mkdir(parents=True)
    with pytest.raises(OSError, match=FULL) as refused:
        write_manifest(root, {"run": "r1", "files": ["x" * 100_000]})
    assert refused.value.filename == str(root / "_runs" / ".r1.json.tmp")
    assert list((root / "_runs").iterdir()) == []  # not a manifest, not a temporary file
