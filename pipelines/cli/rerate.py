"""``cdrflow rerate`` and ``cdrflow recalc``: rate the lake's rows again with the catalog as it
is now (recalc: after shortening a day's overlong calls)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
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


def option_seconds(text: str, option: str) -> Decimal:
    """A number of seconds given to ``option``."""
    from schemas.errors import CdrflowError

    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise CdrflowError(f"{option}: {text!r} is not a number of seconds (e.g. 3600 or 59.5)")
    return value


@operator_errors
def recalc(
    ctx: typer.Context,
    day: Annotated[str, typer.Option("--day", help="the UTC day (YYYY-MM-DD)")],
    new_duration: Annotated[
        str, typer.Option("--new-duration", help="seconds the long calls get (0 … max)")
    ],
    customer: Annotated[str | None, typer.Option("--customer", help="only this customer")] = None,
    max_duration: Annotated[
        str, typer.Option("--max-duration", help="answered calls this long or longer change")
    ] = "3600",
    fmt: FormatOption = Format.table,
) -> None:
    """Give the answered calls of a UTC day that lasted at least --max-duration seconds the
    duration --new-duration (the first original kept in original_duration), then re-rate
    them as rerate does."""
    from pipelines.rerate import recalc as recalc_day

    record = recalc_day(
        home_of(ctx),
        option_day(day, "--day"),
        option_seconds(new_duration, "--new-duration"),
        customer,
        option_seconds(max_duration, "--max-duration"),
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
    details = ("day", "max_duration", "new_duration", "recalculated")
    row.update({k: v for k, v in record.items() if k in details})
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
