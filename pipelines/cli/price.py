"""``cdrflow price NUMBER``: the ConnexCS "Simulate" of one call, step by step.

The steps come from ``rating.explain`` (the engine's own numbers, with the why of each
choice); this module only reads what it needs (the catalog, the package usage the lake
holds) and prints. It writes nothing: the package draw shown is what the call would get
if it were rated now, and showing it twice shows the same draw.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.cli.context import catalog_of, home_of, operator_errors, option_time
from pipelines.cli.entities import FormatOption
from pipelines.cli.output import Format, emit, fail, say
from schemas.errors import CdrflowError

if TYPE_CHECKING:
    from pipelines.catalog import Catalog
    from rating.explain import Explanation
    from rating.tables import Tables

# Reading the rows and the compiled tables of one catalog version: an edit in between is
# retried this many times before giving up.
READ_ATTEMPTS = 5


class Direction(StrEnum):
    outbound = "outbound"
    inbound = "inbound"


@operator_errors
def price(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="the number as dialled, tech prefix included")],
    customer: Annotated[
        str | None, typer.Option("--customer", help="customer_id of the CDR (else auth)")
    ] = None,
    cli: Annotated[str | None, typer.Option("--cli", help="calling number (source_cli)")] = None,
    source_ip: Annotated[str | None, typer.Option("--source-ip", help="for IP auth")] = None,
    sip_user: Annotated[str | None, typer.Option("--sip-user", help="for user auth")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="start of the call, ISO 8601, UTC unless an offset is given (default: now)",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        str, typer.Option("--duration", help="talk time in seconds, a decimal")
    ] = "60",
    sip_code: Annotated[int, typer.Option("--sip-code", help="final SIP response")] = 200,
    direction: Annotated[
        Direction, typer.Option("--direction", help="outbound, or inbound (to a DID)")
    ] = Direction.outbound,
    provider_card: Annotated[
        str | None, typer.Option("--provider-card", help="provider_card_id: price the carrier leg")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Simulate a call: who pays, which route and why, the number rated, the CLI rule, the
    rate row, billing, package draw, charge, tax and provider cost, or which step fails
    (exit status 1). Nothing is written."""
    # The engine is imported by the commands that use it, not by every command's start.
    import duckdb

    from pipelines.rate import package_usage
    from rating.explain import explain

    home, catalog = home_of(ctx), catalog_of(ctx)
    moment = option_time(at, "--at") if at is not None else datetime.now(UTC).replace(microsecond=0)
    cdr = {
        "callid": "cdrflow-price",
        "dt": moment,
        "dest_number": number,
        "source_cli": cli,
        "duration": _seconds(duration),
        "sip_code": sip_code,
        "customer_id": customer,
        "source_ip": source_ip,
        "sip_user": sip_user,
        "provider_card_id": provider_card,
        "direction": direction.value,
    }
    rows, tables = snapshot_and_tables(home, catalog)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        usage = package_usage(con, home, tables)
    now = datetime.now(UTC)
    explanation = explain(rows, tables, cdr, usage, rated_at=int(now.timestamp() * 1_000_000))
    title = (
        f"price of {number} at {moment:%Y-%m-%dT%H:%M:%SZ}, {duration} s, "
        f"sip_code {sip_code}, {direction.value}"
    )
    show(explanation, fmt, title)
    failed = explanation.failed
    if failed is not None:
        # The detail's last line says why in one line; the lines above it are in the output.
        fail(f"step {failed.name} failed ({failed.result}): {failed.detail.splitlines()[-1]}")
        raise typer.Exit(1)


def snapshot_and_tables(
    home: Path, catalog: Catalog
) -> tuple[dict[str, list[dict[str, Any]]], Tables]:
    """The rows an explanation reads and the compiled tables, both of one catalog version:
    an explanation of rows of one version next to tables of another would contradict the
    engine."""
    from pipelines.compiled import cached_tables
    from pipelines.rate import load_tables
    from rating.explain import ENTITIES

    for _ in range(READ_ATTEMPTS):
        before = catalog.version()
        tables = cached_tables(home, load_tables, catalog)
        rows = {name: catalog.list(name) for name in ENTITIES}
        if tables.version == before == catalog.version():
            return rows, tables
    raise CdrflowError("the catalog kept changing while it was read; try again")


def _seconds(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise CdrflowError(f"--duration: {text!r} is not a number of seconds") from None


def _text(value: Any) -> str:
    """A value as printed: decimals as written (0.0150 keeps its places), none as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _jsonable(value: Any) -> Any:
    # Money as strings, so that no JSON reader turns it into a binary float.
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def show(explanation: Explanation, fmt: Format, title: str) -> None:
    """The steps and the result: tables for people, one document (JSON) or one table of
    step and result rows (CSV) for machines."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(_document(explanation), indent=2, default=_jsonable) + "\n")
    elif fmt is Format.csv:
        emit(_csv_rows(explanation), fmt, columns=["kind", "name", "verdict", "value", "detail"])
    else:
        _tables(explanation, title)


def _document(explanation: Explanation) -> dict[str, Any]:
    failed = explanation.failed
    return {
        "ok": failed is None,
        "failed_step": None if failed is None else failed.name,
        "reject_reason": explanation.reject_reason,
        "steps": [
            {
                "step": s.name,
                "verdict": s.verdict,
                "result": s.result,
                "detail": s.detail,
                "values": s.values,
            }
            for s in explanation.steps
        ],
        "result": explanation.result,
    }


def _csv_rows(explanation: Explanation) -> list[dict[str, str]]:
    rows = [
        {
            "kind": "step",
            "name": s.name,
            "verdict": s.verdict,
            "value": s.result,
            "detail": s.detail,
        }
        for s in explanation.steps
    ]
    rows += [
        {"kind": "result", "name": k, "verdict": "", "value": _text(v), "detail": ""}
        for k, v in explanation.result.items()
    ]
    return rows


def _tables(explanation: Explanation, title: str) -> None:
    steps = [
        {
            "step": s.name,
            "result": s.result if s.ok else f"FAILED: {s.result}",
            "detail": s.detail,
        }
        for s in explanation.steps
    ]
    emit(steps, Format.table, columns=["step", "result", "detail"], title=title)
    if explanation.reject_reason is None:
        emit(_summary(explanation.result), Format.table, columns=["", "value"], title="result")
        say("a simulation: nothing was written (package usage is read from the lake)")


def _summary(result: Mapping[str, Any]) -> list[dict[str, str]]:
    currency = result["currency"]
    provider = result["provider_currency"] or ""
    rows = [
        ("customer", f"{result['customer_id']} ({result['customer_status']})"),
        ("card", result["card_id"]),
        ("number rated", result["number"]),
        ("destination", f"{result['dest_code']} {result['dest_name']}"),
        ("rate", f"{_text(result['rate'])}/min, connect fee {_text(result['connect_fee'])}"),
        ("billed", f"{result['billed_duration']} s"),
        ("from packages", f"{result['package_seconds']} s {result['package_id'] or ''}".strip()),
        ("charge", f"{_text(result['charge'])} {currency}"),
        ("tax", f"{_text(result['tax'])} {currency}"),
        ("provider charge", f"{_text(result['provider_charge'])} {provider}".strip() or "none"),
        (
            "profit",
            f"{_text(result['profit'])} {currency}" if result["profit"] is not None else "none",
        ),
    ]
    return [{"": k, "value": v} for k, v in rows]
