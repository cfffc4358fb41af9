"""The one ``Definitions`` loads, every job resolves, and the schedules run when SPEC §7 says."""

from __future__ import annotations

import dagster as dg

from dags.definitions import defs

JOBS = {"summaries_job", "invoices_job", "lake_check_job", "rerate_job", "recalc_job"}


def test_every_job_resolves() -> None:
    names = {job.name for job in defs.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert names == JOBS
    for name in JOBS:
        assert defs.resolve_job_def(name).name == name


def test_the_asset_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"rated_lake", "daily_summaries", "invoices", "balances"}
    for key in ("daily_summaries", "invoices", "balances"):
        assert graph.get(dg.AssetKey(key)).parent_keys == {dg.AssetKey("rated_lake")}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {("invoices", "usage_matches_lake"), ("rated_lake", "callid_in_one_day")}


def test_schedules_run_in_utc_at_the_spec_times() -> None:
    schedules = {s.name: defs.resolve_schedule_def(s.name) for s in defs.schedules or () if s.name}
    assert {n: (s.cron_schedule, s.execution_timezone) for n, s in schedules.items()} == {
        "summaries_schedule": ("30 0 * * *", "UTC"),
        "invoices_schedule": ("0 2 1 * *", "UTC"),
        "lake_check_schedule": ("0 1 * * *", "UTC"),
    }
    assert schedules["summaries_schedule"].job_name == "summaries_job"
    assert schedules["invoices_schedule"].job_name == "invoices_job"


def test_the_rate_card_sensor_starts_the_rerate_job() -> None:
    sensor = defs.resolve_sensor_def("rate_card_sensor")
    assert sensor.job_name == "rerate_job"
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
