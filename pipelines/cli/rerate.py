"""``cdrflow rerate``: rate a range of the lake's rows again with the catalog as it is now."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.entities import FormatOption
from pipelines.cli.output import Format, emit, say


def option_day(text: str, option: str) -> date:
    """A UTC day given to ``option`` as YYYY-MM-DD."""
    from schemas.errors import CdrflowError

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CdrflowError(f"{option}: {text!r} is not a day (use YYYY-MM-DD)") from None


@operator_errors
def rerate(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="first UTC day (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="the UTC day after the last (exclusive)")],
    customers: Annotated[
        list[str] | None, typer.Option("--customer", help="only this customer (repeatable)")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rate the lake's rows of a range of UTC days again with the catalog as it is now, and
    the rest of every package period the range touches; each day changes atomically."""
    from pipelines.rerate import rerate as rerate_range

    record = rerate_range(
        home_of(ctx), option_day(start, "--from"), option_day(end, "--to"), customers or []
    )
    show_record(record, fmt)


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record as one row: names and values (money as exact decimal text)."""
    row: dict[str, Any] = {
        "run": record["run"],
        "who": record["who"],
        "at": record["at"],
        "from": record["asked"]["from"],
        "to": record["asked"]["to"],
        "effective_from": record["effective"]["from"],
        "effective_to": record["effective"]["to"],
        "customers": " ".join(record["customers"]) or "(all)",
    }
    row.update({k: v for k, v in record.items() if k in ("day", "max_duration", "new_duration")})
    row["rerated"] = record["rerated"]
    row["now_rejected"] = sum(record["rejected"].values())
    for when in ("before", "after"):
        for name, value in record[when].items():
            row[f"{name}_{when}"] = value
    return row


def show_record(record: dict[str, Any], fmt: Format) -> None:
    """The record as field/value lines for people, one row for machines."""
    row = flat(record)
    if fmt is not Format.table:
        emit([row], fmt)
        return
    for line in record["recovered"]:
        say("{}", line)
    emit(
        [{"field": k, "value": str(v)} for k, v in row.items()],
        fmt,
        columns=["field", "value"],
        title=f"{record['kind']} {record['run']}",
    )
