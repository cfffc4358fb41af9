"""``cdrflow summaries build``: a UTC day of the lake summarised per customer and provider
into ``lake/summaries/`` (what the Dagster asset ``daily_summaries`` does each night)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.entities import FormatOption
from pipelines.cli.output import Format, emit
from pipelines.cli.rerate import option_day

summaries = typer.Typer(
    help="Daily summaries of the lake: SPEC §6 metrics per customer and provider.",
    no_args_is_help=True,
)


@summaries.command("build")
@operator_errors
def build(
    ctx: typer.Context,
    day: Annotated[str, typer.Option("--day", help="the UTC day (YYYY-MM-DD)")],
    fmt: FormatOption = Format.table,
) -> None:
    """Summarise a UTC day of the rated lake (attempts, answered, ASR, ACD, PDD, NER,
    minutes, billed minutes, charge, provider charge, profit per customer and per provider)
    into lake/summaries/date=DAY/summary.parquet, replacing the one there."""
    from pipelines.summaries import write_day

    done = write_day(home_of(ctx), option_day(day, "--day"))
    row: dict[str, Any] = {
        "day": done.day.isoformat(),
        "file": str(done.path),
        "customers": done.customers,
        "providers": done.providers,
        "attempts": done.attempts,
        "answered": done.answered,
    }
    for name in ("charge", "provider_charge", "profit"):
        for currency, value in getattr(done, name).items():
            row[f"{name}_{currency}"] = value
    if fmt is not Format.table:
        emit([row], fmt)
        return
    emit(
        [{"field": k, "value": str(v)} for k, v in row.items()],
        fmt,
        columns=["field", "value"],
        title=f"summary of {row['day']}",
    )
