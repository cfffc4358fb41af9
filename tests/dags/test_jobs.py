"""The rerate and recalc jobs run ``pipelines.rerate`` with their typed config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dags.definitions import defs
from pipelines.lakefiles import committed_runs
from tests.pipelines.billed import lake_query


def run(job: str, op: str, config: dict[str, Any]) -> Any:
    return defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, raise_on_error=False
    )


def test_the_rerate_job_re_rates_the_range_and_records_it(billed_home: Path) -> None:
    result = run("rerate_job", "rerate_op", {"from_day": "2026-11-02", "to_day": "2026-11-03",
                                              "customers": ["globex"]})  # fmt: skip
    assert result.success
    record = result.output_for_node("rerate_op")
    [(calls,)] = lake_query(
        billed_home, "SELECT count(*) FROM rated WHERE customer_id = 'globex' AND "
        "CAST(dt AS DATE) = DATE '2026-11-02'",
    )  # fmt: skip
    assert (record["kind"], record["customers"], record["rerated"]) == ("rerate", ["globex"], calls)
    assert record["asked"] == {"from": "2026-11-02", "to": "2026-11-03"}
    assert [r["run"] for r in committed_runs(billed_home, "rerate-*.json")] == [record["run"]]
    [observed] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    shown = observed.asset_observation_data.asset_observation.metadata
    assert shown["rerated"].value == calls
    assert shown["charge_after"].value == record["after"]["charge"]


def test_the_recalc_job_shortens_long_calls(billed_home: Path) -> None:
    [(long,)] = lake_query(
        billed_home, "SELECT count(*) FROM rated WHERE sip_code = 200 AND duration >= 300 "
        "AND CAST(dt AS DATE) = DATE '2026-11-02'",
    )  # fmt: skip
    assert long > 0
    result = run("recalc_job", "recalc_op",
                 {"day": "2026-11-02", "max_duration": 300, "new_duration": 59.5})  # fmt: skip
    assert result.success
    record = result.output_for_node("recalc_op")
    assert record["recalculated"] == long
    assert (record["max_duration"], record["new_duration"]) == ("300", "59.5")
    assert lake_query(
        billed_home, "SELECT count(*) FROM rated WHERE sip_code = 200 AND duration >= 300 "
        "AND CAST(dt AS DATE) = DATE '2026-11-02'",
    ) == [(0,)]  # fmt: skip


@pytest.mark.parametrize(
    ("job", "op", "config", "message"),
    [
        ("rerate_job", "rerate_op", {"from_day": "2026-11-03", "to_day": "2026-11-02"},
         "--to 2026-11-02 is not after --from 2026-11-03"),
        ("rerate_job", "rerate_op", {"from_day": "2026-11-31", "to_day": "2026-12-02"},
         "from_day: '2026-11-31' is not a day (use YYYY-MM-DD)"),
        ("recalc_job", "recalc_op", {"day": "2026-11-02", "new_duration": 4000},
         "--new-duration 4000 must be between 0 and --max-duration 3600"),
    ],
)  # fmt: skip
def test_a_bad_config_fails_the_run_with_the_reason(
    billed_home: Path, job: str, op: str, config: dict[str, Any], message: str
) -> None:
    result = run(job, op, config)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in str(failure.step_failure_data.error)
