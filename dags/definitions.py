"""The one Dagster ``Definitions`` of cdrflow (SPEC §7): billing's assets and checks, the
rerate and recalc jobs, their schedules and the rate-card sensor, on the home of
``$CDRFLOW_HOME`` (``cdrflow ui`` starts the webserver and daemon with it)."""

import dagster as dg

from dags.assets import (
    balances,
    callid_in_one_day,
    daily_summaries,
    invoices,
    rated_lake,
)
from dags.jobs import invoices_job, lake_check_job, recalc_job, rerate_job, summaries_job
from dags.resources import RESOURCES
from dags.schedules import SCHEDULES
from dags.sensors import rate_card_sensor

defs = dg.Definitions(
    assets=[rated_lake, daily_summaries, invoices, balances],
    asset_checks=[callid_in_one_day],
    jobs=[summaries_job, invoices_job, lake_check_job, rerate_job, recalc_job],
    schedules=SCHEDULES,
    sensors=[rate_card_sensor],
    resources=RESOURCES,
)
