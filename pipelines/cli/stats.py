"""``cdrflow stats``, ``codes``, ``calls``, ``call`` and ``dialogs``: the lake for analysts and
operators (SPEC §6), as tables for people or CSV/JSON for programs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.progress import Progress

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.entities import FormatOption, WideOption
from pipelines.cli.output import Format, emit, say
from pipelines.home import rated_lake
from pipelines.lakefiles import read_again_if_swapped
from schemas.errors import CdrflowError
from schemas.fields import Money
from stats.calls import codes as codes_of
from stats.calls import dialogs as dialogs_at
from stats.calls import find_call, latest_calls, newest_instant
from stats.metrics import BUCKETS, KEYS, metrics, parse_by
from stats.scope import Scope, connect, parse_time

From = Annotated[
    str | None,
    typer.Option("--from", help="from this UTC date or time on (ISO 8601), included"),
]
To = Annotated[
    str | None, typer.Option("--to", help="up to this UTC date or time (ISO 8601), excluded")
]
Customers = Annotated[
    list[str] | None, typer.Option("--customer", "-c", help="only this customer (repeatable)")
]
By = Annotated[
    str,
    typer.Option(
        "--by",
        help=f"group by any of {', '.join(KEYS)} and one of {', '.join(BUCKETS)}, comma-separated",
    ),
]


def _plain(value: Any) -> Any:
    """A lake value as printed: money exact (text), times ISO 8601 UTC."""
    if isinstance(value, Decimal):
        return Money(signed=True).render(value)
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat(timespec="microseconds")
        return text.replace("+00:00", "Z").replace(".000000Z", "Z")
    return value


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


# What stats keeps in a narrow terminal besides its groups, and the order the rest go in:
# minutes, then money, last.
STATS_KEY = ("attempts", "asr", "acd")
STATS_DROP = (
    "cps", "channels", "pdd", "ner", "provider_charge", "profit", "billed_minutes", "answered",
    "minutes",
)  # fmt: skip


def show(
    table: pa.Table,
    fmt: Format,
    title: str | None = None,
    *,
    key: Sequence[str],
    drop: Sequence[str] = (),
    wide: bool = False,
) -> None:
    """A result table: numbers right-aligned; in a narrow terminal the ``key`` columns and
    as many others as fit (``emit``), ``wide`` all of them."""
    numbers = [
        f.name
        for f in table.schema
        if pa.types.is_integer(f.type)
        or pa.types.is_floating(f.type)
        or pa.types.is_decimal(f.type)
    ]
    emit(
        rows_of(table),
        fmt,
        columns=table.column_names,
        title=title,
        key=key,
        drop=drop,
        wide=wide,
        right=numbers,
    )


def _scope(
    ctx: typer.Context, start: str | None, end: str | None, customers: Sequence[str]
) -> Scope:
    lake = rated_lake(home_of(ctx))
    if not any(lake.glob("date=*/*.parquet")):
        raise CdrflowError(f"{lake}: no rated CDRs yet (rate some with `cdrflow rate`)")
    return Scope(
        lake,
        parse_time(start, "--from") if start else None,
        parse_time(end, "--to") if end else None,
        tuple(customers),
    )


def _title(what: str, scope: Scope) -> str:
    parts = [what]
    if scope.start or scope.end:
        start = scope.start.isoformat() if scope.start else "the start"
        end = scope.end.isoformat() if scope.end else "the end"
        parts.append(f"from {start} to {end}")
    if scope.customers:
        parts.append("for " + ", ".join(scope.customers))
    return " ".join(parts)


@operator_errors
def stats(
    ctx: typer.Context,
    by: By = "customer,day",
    start: From = None,
    end: To = None,
    customer: Customers = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Attempts, ASR, ACD, PDD, NER, minutes, money, channels and CPS per group (SPEC §6)."""
    keys = parse_by(by)
    scope = _scope(ctx, start, end, customer or [])
    # The first query of a day summarises it (seconds a day at millions of CDRs; then kept).
    with connect() as con, Progress(transient=True, disable=fmt is not Format.table) as bar:
        task = bar.add_task("reading the days' summaries", total=None)
        table = read_again_if_swapped(
            lambda: metrics(
                con,
                scope,
                keys,
                progress=lambda done, days: bar.update(task, completed=done, total=days),
            )
        )
    show(table, fmt, _title("stats", scope), key=[*keys, *STATS_KEY], drop=STATS_DROP, wide=wide)


@operator_errors
def codes(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", help="group by these (as stats --by); empty: all calls")
    ] = "customer",
    start: From = None,
    end: To = None,
    customer: Customers = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Attempts per final SIP code, with each code's share of its group."""
    keys = parse_by(by)
    scope = _scope(ctx, start, end, customer or [])
    with connect() as con:
        table = read_again_if_swapped(lambda: codes_of(con, scope, keys))
    show(table, fmt, _title("SIP codes", scope), key=[*keys, "sip_code", "attempts"], wide=wide)


@operator_errors
def calls(
    ctx: typer.Context,
    customer: Customers = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="how many")] = 20,
    start: From = None,
    end: To = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """The latest rated calls, newest first."""
    scope = _scope(ctx, start, end, customer or [])
    with connect() as con:
        table = read_again_if_swapped(lambda: latest_calls(con, scope, limit))
    # When, who, where to and what it cost; the callid (for `cdrflow call`) with --wide.
    key = ["dt", "customer_id", "dest_number", "charge"]
    drop = ["sip_reason", "dest_name", "billed_duration", "duration", "currency", "callid"]
    show(table, fmt, _title("latest calls", scope), key=key, drop=drop, wide=wide)


@operator_errors
def call(
    ctx: typer.Context,
    callid: Annotated[str, typer.Argument(help="the call's callid")],
    fmt: FormatOption = Format.table,
) -> None:
    """One CDR in full: every column of the rated record (or of the rejected ones)."""
    lake = rated_lake(home_of(ctx))
    with connect() as con:
        kind, table = read_again_if_swapped(lambda: find_call(con, lake, callid))
    if table.num_rows == 0:
        raise CdrflowError(f"no CDR with callid {callid!r} in the lake")
    rows = rows_of(table)
    if fmt is not Format.table:
        emit(rows, fmt, columns=table.column_names)
        return
    for n, row in enumerate(rows, 1):
        fields = [{"field": k, "value": "" if v is None else str(v)} for k, v in row.items()]
        emit(fields, fmt, columns=["field", "value"], title=f"{kind} CDR {n} of {len(rows)}")


@operator_errors
def dialogs(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option("--at", help="the instant (ISO 8601, UTC); default the newest in the lake"),
    ] = None,
    customer: Customers = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """The calls up at one instant, per customer (the Dialogs view over landed CDRs)."""
    scope = _scope(ctx, None, None, customer or [])
    with connect() as con:
        instant = parse_time(at, "--at") if at else newest_instant(con, scope.lake)
        if instant is None:
            raise CdrflowError("the lake holds no calls")
        table = read_again_if_swapped(lambda: dialogs_at(con, scope, instant))
    per_customer = Counter(table["customer_id"].to_pylist())
    counts = ", ".join(f"{c} {n}" for c, n in per_customer.items()) or "none"
    say("calls up at {}: {} ({})", _plain(instant), table.num_rows, counts, fmt=fmt)
    key = ["customer_id", "dt", "dest_number", "up_seconds"]
    show(table, fmt, key=key, drop=["dest_name", "callid"], wide=wide)
