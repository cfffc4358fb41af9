"""The asset jobs the schedules run, and the ``rerate`` and ``recalc`` jobs (SPEC §7.4):
ops with typed config that call ``pipelines.rerate``, as ``cdrflow rerate`` and ``cdrflow
recalc`` do. Each run's record (the range, counts, money before and after) is the op's
output metadata and an observation of the rated lake."""

from decimal import Decimal
from typing import Any

import dagster as dg
from pydantic import Field

from dags.assets import callid_in_one_day, daily_summaries, invoices, rated_lake
from dags.resources import RESOURCES, CdrflowHome
from pipelines.cli.rerate import flat, option_day
from pipelines.rerate import MAX_DURATION, recalc, rerate

summaries_job = dg.define_asset_job(
    "summaries_job", selection=dg.AssetSelection.assets(daily_summaries)
)
invoices_job = dg.define_asset_job(
    "invoices_job",
    selection=dg.AssetSelection.assets(invoices),
)
lake_check_job = dg.define_asset_job(
    "lake_check_job", selection=dg.AssetSelection.checks(callid_in_one_day)
)


class RerateConfig(dg.Config):
    """``cdrflow rerate --from --to [--customer]...``."""

    from_day: str = Field(description="first UTC day, YYYY-MM-DD")
    to_day: str = Field(description="the UTC day after the last (exclusive), YYYY-MM-DD")
    customers: list[str] = Field(default=[], description="only these customers (all: empty)")


class RecalcConfig(dg.Config):
    """``cdrflow recalc --day [--customer] [--max-duration] --new-duration``."""

    day: str = Field(description="the UTC day, YYYY-MM-DD")
    new_duration: float = Field(description="seconds the long calls get (0 … max_duration)")
    customer: str | None = Field(default=None, description="only this customer")
    max_duration: float = Field(
        default=float(MAX_DURATION), description="answered calls this long or longer change"
    )


def _seconds(value: float) -> Decimal:
    # The shortest text of the float is what the operator typed (59.5, not 59.499…); a
    # whole number reads as one (3600, not 3600.0), as on the command line.
    exact = Decimal(repr(value))
    return exact.to_integral_value() if exact == exact.to_integral_value() else exact


def _report(context: dg.OpExecutionContext, record: dict[str, Any]) -> dg.Output[dict[str, Any]]:
    row = {k: v if isinstance(v, int) else str(v) for k, v in flat(record).items()}
    context.log_event(
        dg.AssetObservation(asset_key=rated_lake.key, metadata={"run": record["run"], **row})
    )
    return dg.Output(record, metadata=row)


@dg.op(description="Rate a range of UTC days again with the catalog as it is now.")
def rerate_op(
    context: dg.OpExecutionContext, config: RerateConfig, home: CdrflowHome
) -> dg.Output[dict[str, Any]]:
    record = rerate(
        home.home(),
        option_day(config.from_day, "from_day"),
        option_day(config.to_day, "to_day"),
        config.customers,
    )
    return _report(context, record)


@dg.op(description="Shorten a UTC day's overlong answered calls, then re-rate them.")
def recalc_op(
    context: dg.OpExecutionContext, config: RecalcConfig, home: CdrflowHome
) -> dg.Output[dict[str, Any]]:
    record = recalc(
        home.home(),
        option_day(config.day, "day"),
        _seconds(config.new_duration),
        config.customer,
        _seconds(config.max_duration),
    )
    return _report(context, record)


# The home is bound here, not only in the Definitions: a sensor's job that needs resources
# from the Definitions is copied by Dagster with a beta parameter, which warns.
@dg.job(
    description="`cdrflow rerate`: re-rate a range of UTC days (SPEC §7.4).",
    resource_defs=RESOURCES,
)
def rerate_job() -> None:
    rerate_op()


@dg.job(
    description="`cdrflow recalc`: recalculate a UTC day's overlong calls (SPEC §7.4).",
    resource_defs=RESOURCES,
)
def recalc_job() -> None:
    recalc_op()
