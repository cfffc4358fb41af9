"""``cdrflow rejects``: the rejected records, why and where from; ``cdrflow rejects replay``
rates them again once the catalog is fixed."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.entities import FormatOption, WideOption
from pipelines.cli.output import Format, emit, say
from pipelines.cli.rerate import option_day
from schemas.cdr import REJECT_REASONS

# Records a table shows unless --limit says otherwise (CSV and JSON carry them all).
TABLE_LIMIT = 50
TABLE_COLUMNS = (
    "date",
    "callid",
    "customer_id",
    "reject_reason",
    "reject_detail",
    "source",
    "line",
)
# What a narrow terminal keeps (the "reason, detail, source and line"), and what it
# leaves out first.
TABLE_KEY = ("reject_reason", "reject_detail", "source", "line")
TABLE_DROP = ("customer_id", "date", "callid")

Reasons = Annotated[
    list[str] | None,
    typer.Option(
        "--reason", "-r", help=f"only this reason (repeatable): {', '.join(REJECT_REASONS)}"
    ),
]
Customers = Annotated[
    list[str] | None,
    typer.Option("--customer", "-c", help="only records of this customer (repeatable)"),
]
From = Annotated[
    str | None,
    typer.Option(
        "--from", help="from this day on (YYYY-MM-DD): the UTC day of dt, else of the rejection"
    ),
]
To = Annotated[str | None, typer.Option("--to", help="up to this day (YYYY-MM-DD), excluded")]
Sources = Annotated[
    list[str] | None,
    typer.Option(
        "--source",
        "-s",
        help="only records of this file (its path or name) or kafka:TOPIC (repeatable)",
    ),
]

rejects = typer.Typer(invoke_without_command=True)


def _selection(
    reasons: list[str] | None,
    customers: list[str] | None,
    start: str | None,
    end: str | None,
    sources: list[str] | None,
) -> Any:
    from stats.rejects import Selection

    return Selection(
        reasons=tuple(reasons or ()),
        customers=tuple(customers or ()),
        start=option_day(start, "--from") if start else None,
        end=option_day(end, "--to") if end else None,
        sources=tuple(sources or ()),
    )


@rejects.callback()
@operator_errors
def listing(
    ctx: typer.Context,
    reasons: Reasons = None,
    customers: Customers = None,
    start: From = None,
    end: To = None,
    sources: Sources = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="count them by reason and source instead")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=0,
            help=f"show at most this many (0: all; default {TABLE_LIMIT} in a table, all in "
            "CSV and JSON)",
            show_default=False,
        ),
    ] = None,
    wide: WideOption = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Rejected records with their reason, detail, source and line (in the order of their day,
    source and line); --summary counts them by reason and source; `replay` rates them again.

    A record's day is the UTC day of its dt, or, when its dt did not parse, the UTC day it
    was rejected (its partition of lake/rejected); --from and --to select days, --to
    excluded."""
    if ctx.invoked_subcommand is not None:
        ctx.obj["rejects"] = (reasons, customers, start, end, sources)
        return
    from pipelines.cli.stats import rows_of
    from pipelines.lakefiles import read_again_if_swapped
    from pipelines.rejects import rejected_lake
    from stats import rejects as queries
    from stats.scope import connect

    selection = _selection(reasons, customers, start, end, sources)
    lake = rejected_lake(home_of(ctx))
    with connect() as con:
        if summary:
            table = read_again_if_swapped(
                lambda: queries.summary(con, selection.files(lake), selection)
            )
            rows = rows_of(table)
            # The days go first in a narrow terminal: the source stays whole.
            emit(rows, fmt, columns=list(queries.SUMMARY_COLUMNS), right=("records",),
                 key=("reject_reason", "source", "records"), wide=wide,
                 title="rejected records by reason and source")  # fmt: skip
            if fmt is Format.table and rows:
                say("{:,} records in all", sum(r["records"] for r in rows))
            return
        shown = limit if limit is not None else TABLE_LIMIT if fmt is Format.table else 0
        table, total = read_again_if_swapped(
            lambda: queries.rejected(con, selection.files(lake), selection, shown or None)
        )
    rows = rows_of(table)
    if fmt is not Format.table:
        emit(rows, fmt, columns=list(queries.LIST_COLUMNS))
        return
    emit(
        rows,
        fmt,
        columns=list(TABLE_COLUMNS),
        key=TABLE_KEY,
        drop=TABLE_DROP,
        wide=wide,
        right=("line",),
        title="rejected records",
    )
    if len(rows) < total:
        say(
            "{:,} of {:,} shown; --limit 0 shows all, --summary counts them, --format csv|json "
            "adds raw and rejected_at",
            len(rows),
            total,
        )


@rejects.command("replay")
@operator_errors(unwritten="nothing of this replay was committed (the lake is as before)")
def replay(
    ctx: typer.Context,
    reasons: Reasons = None,
    customers: Customers = None,
    start: From = None,
    end: To = None,
    sources: Sources = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Rate the selected rejected records again with the catalog as it is now (after adding
    the missing customer, route or rate): each that rates moves to the rated lake, at one
    atomic commit; each that fails again stays rejected with its reason now."""
    from pipelines.rejects import replay as replay_records

    # Filters given before the word `replay` count too.
    given = ctx.obj.get("rejects") or (None, None, None, None, None)
    selection = _selection(
        reasons or given[0],
        customers or given[1],
        start or given[2],
        end or given[3],
        sources or given[4],
    )
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=fmt is not Format.table,
    ) as bar:
        task = bar.add_task("replaying", total=None)
        record = replay_records(
            home_of(ctx),
            selection,
            progress=lambda n: bar.advance(task, n),
            on_total=lambda n: bar.update(task, total=n),
            on_wait=lambda: say("waiting (10 s at most) for another writer of the lake…", fmt=fmt),
        )
    show_replay(record, fmt)


def show_replay(record: dict[str, Any], fmt: Format) -> None:
    """What a replay did: outcomes for people, the record for machines."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt is Format.csv:
        emit([_flat({k: v for k, v in record.items() if k != "recovered"})], fmt)
        return
    for line in record["recovered"]:
        say("{}", line)
    rows: list[dict[str, Any]] = []
    for reason, n in record["moved_from"].items():
        rows.append({"outcome": f"moved to the rated lake (was {reason})", "records": n})
    for reason, n in record["still_rejected"].items():
        rows.append({"outcome": f"still rejected: {reason}", "records": n})
    if record["unreplayable"]:
        unread = record["unreplayable"]
        rows.append({"outcome": "kept as they were (CSV header unknown)", "records": unread})
    rows.append({"outcome": "replayed", "records": record["replayed"]})
    emit(rows, fmt, columns=["outcome", "records"], right=("records",),
         title=f"replay {record['run']} (catalog version {record['catalog_version']})")  # fmt: skip
    for currency, money in record["money"].items():
        say("moved calls in {}: charge {}, tax {}", currency, money["charge"], money["tax"])
    say(
        "{:,} moved, {:,} still rejected; {:,} rejected file(s) written again",
        record["moved"],
        sum(record["still_rejected"].values()) + record["unreplayable"],
        record["files_replaced"],
    )


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """The record as one CSV row: nested values as key=value lists."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out[key] = " ".join(
                f"{k}={_flat_value(v)}" for k, v in value.items() if v not in (None, [], {})
            )
        else:
            out[key] = value
    return out


def _flat_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)
