"""Schedules (SPEC §7), all in UTC: yesterday's summaries at 00:30, the lake check at 01:00,
the previous month's invoices at 02:00 on the 1st. Each runs from the moment the Dagster
daemon of ``cdrflow ui`` starts."""

import dagster as dg

from dags.jobs import invoices_job, lake_check_job, summaries_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

# A partitioned job's schedule runs for the partition that has just ended: yesterday's
# summaries, last month's invoices.
summaries_schedule = dg.build_schedule_from_partitioned_job(
    summaries_job, name="summaries_schedule", hour_of_day=0, minute_of_hour=30,
    default_status=RUNNING,
)  # fmt: skip
invoices_schedule = dg.build_schedule_from_partitioned_job(
    invoices_job, name="invoices_schedule", day_of_month=1, hour_of_day=2, minute_of_hour=0,
    default_status=RUNNING,
)  # fmt: skip
lake_check_schedule = dg.ScheduleDefinition(
    name="lake_check_schedule",
    job=lake_check_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
)

SCHEDULES = [summaries_schedule, invoices_schedule, lake_check_schedule]
