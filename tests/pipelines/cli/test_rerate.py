"""``cdrflow rerate`` on the command line: the run's record, and refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.catalog import Catalog
from pipelines.rate import rate_files
from tests.pipelines.cli.driver import Cli
from tests.pipelines.test_rerate import new_uk_mobile_rate, small_package, workload


def test_rerate_prints_and_records_the_run(cli: Cli, sample: Catalog, tmp_path: Path) -> None:
    small_package(cli.home)
    rate_files(cli.home, [workload(tmp_path)])
    new_uk_mobile_rate(cli.home)
    [row] = cli.json("rerate", "--from", "2026-11-05", "--to", "2026-11-06", "--customer", "acme")
    assert (row["from"], row["to"]) == ("2026-11-05", "2026-11-06")
    assert (row["effective_from"], row["effective_to"]) == ("2026-11-05", "2026-12-01")
    assert row["customers"] == "acme" and row["rerated"] > 0 and row["now_rejected"] == 0
    assert row["charge_after"] != row["charge_before"]
    manifest = json.loads((cli.home / "lake" / "_runs" / f"{row['run']}.json").read_text())
    assert manifest["after"]["charge"] == row["charge_after"]
    shown = cli.ok("rerate", "--from", "2026-11-05", "--to", "2026-11-06").stdout
    assert "effective_to" in shown and "(all)" in shown


def test_rerate_refuses_a_bad_range_in_one_line(cli: Cli, sample: Catalog) -> None:
    assert "is not after --from" in cli.refused(
        "rerate", "--from", "2026-11-05", "--to", "2026-11-05"
    )
    assert "not a day" in cli.refused("rerate", "--from", "2026-11-5x", "--to", "2026-11-06")


def test_recalc_prints_its_record_and_refuses_bad_durations(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    rate_files(cli.home, [workload(tmp_path)])
    args = ["recalc", "--day", "2026-11-10", "--customer", "acme", "--max-duration", "300"]
    [row] = cli.json(*args, "--new-duration", "60")
    assert row["recalculated"] > 0 and row["day"] == "2026-11-10"
    assert (row["max_duration"], row["new_duration"]) == ("300", "60")
    assert "must be between 0 and --max-duration 300" in cli.refused(*args, "--new-duration", "301")
    assert "is not a number of seconds" in cli.refused(*args, "--new-duration", "an hour")
