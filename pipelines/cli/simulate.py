"""``cdrflow simulate``: a file of switch CDRs for the home's catalog (``pipelines.simulate``).

The command registers itself on the ``cdrflow`` app when ``pipelines.cli`` imports it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipelines.cli import app
from pipelines.cli.context import catalog_of, operator_errors
from pipelines.cli.output import Format, console, emit, say
from pipelines.simulate import DEFAULT_START, read_catalog
from pipelines.simulate import simulate as write_cdrs
from schemas.errors import CdrflowError


@app.command("simulate")
@operator_errors
def simulate(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", min=0, help="how many CDRs to write")],
    out: Annotated[
        Path, typer.Option("--out", help="file to write: .jsonl, .csv or .parquet", dir_okay=False)
    ],
    seed: Annotated[int, typer.Option(min=0, help="the same seed gives the same file")] = 0,
    duplicates: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="share of exact repeats of earlier CDRs")
    ] = 0.001,
    malformed: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="share of broken CDRs (the rater rejects)")
    ] = 0.001,
    start: Annotated[
        str | None,
        typer.Option(
            help=f"first moment, ISO 8601, UTC unless an offset is given "
            f"(default {DEFAULT_START:%Y-%m-%dT%H:%M:%SZ})",
            show_default=False,
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="days of traffic from --start")] = 1,
) -> None:
    """Write simulated switch CDRs for the customers, routes and DIDs of the catalog."""
    first = _moment(start) if start is not None else DEFAULT_START
    rows = read_catalog(catalog_of(ctx))
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]simulating[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("cdrs", total=count)
        counts = write_cdrs(
            rows,
            count,
            out,
            seed=seed,
            duplicate_rate=duplicates,
            malformed_rate=malformed,
            start=first,
            days=days,
            progress=lambda done: bar.update(task, completed=done),
        )
    seconds = time.perf_counter() - began
    emit(_summary(counts), Format.table, columns=["", "count", "share"], title=f"{out}")
    rate = f", {count / seconds:,.0f} CDRs/s" if seconds > 0 and count else ""
    say(f"wrote {count:,} CDRs ({counts['bytes']:,} bytes) to {out} in {seconds:.1f} s{rate}")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CdrflowError(
            f"--start: {text!r} is not an ISO 8601 time (e.g. 2026-11-02 or 2026-11-02T08:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _summary(counts: dict[str, int]) -> list[dict[str, str]]:
    """What the file holds, as rows of the summary table."""
    records = counts["records"]
    sound = records - counts["duplicates"] - counts["malformed"]

    def row(label: str, value: int, whole: int | None) -> dict[str, str]:
        share = f"{100 * value / whole:.1f} %" if whole else ""
        return {"": label, "count": f"{value:,}", "share": share}

    rows = [
        row("records", records, None),
        row("duplicates (repeated callid)", counts["duplicates"], records),
        row("malformed", counts["malformed"], records),
    ]
    rows += [
        row(f"  {key.removeprefix('malformed_').replace('_', ' ')}", value, records)
        for key, value in counts.items()
        if key.startswith("malformed_")
    ]
    rows += [
        row("sound records", sound, records),
        row("  answered (ASR)", counts["answered"], sound),
        row("  inbound to DIDs", counts["inbound"], sound),
        row("  to no card's prefix", counts["unknown_destinations"], sound),
        row("  identified by source_ip", counts["by_ip"], sound),
        row("  identified by sip_user", counts["by_user"], sound),
        row("  with customer_id", counts["explicit_customer"], sound),
        row("  with a provider", counts["with_provider"], sound),
        row("routes skipped (regex dial string)", counts["skipped_routes"], None),
    ]
    return rows
