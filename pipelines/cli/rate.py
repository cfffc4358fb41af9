"""``cdrflow rate FILE…``: rate switch CDR files into the lake, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.entities import FormatOption
from pipelines.cli.output import Format, emit, say
from schemas.cdr import REJECT_REASONS

if TYPE_CHECKING:
    from pipelines.rate import Summary


@operator_errors(unwritten="nothing of this run was committed (the lake is as before)")
def rate(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="CDR files: .jsonl, .csv or .parquet")],
    block_mib: Annotated[
        int, typer.Option("--block-mib", min=1, help="read files in blocks of this many MiB")
    ] = 16,
    fmt: FormatOption = Format.table,
) -> None:
    """Rate CDR files into the lake: every record lands rated or rejected, exactly once."""
    # The engine (numba, DuckDB) is imported by this command, not by every command's start.
    from pipelines.cdrfile import check_input
    from pipelines.rate import rate_files

    home = home_of(ctx)
    for path in files:
        check_input(path)
    total = sum(p.stat().st_size for p in files)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=fmt is not Format.table,
    ) as bar:
        task = bar.add_task("rating", total=total)
        summary = rate_files(
            home,
            files,
            progress=lambda n: bar.advance(task, n),
            block_bytes=block_mib << 20,
            on_wait=lambda: say("waiting for another cdrflow rate on this home…"),
        )
    show_summary(summary, fmt)


def show_summary(summary: Summary, fmt: Format) -> None:
    """The run in a table for people, or one record (rated, each reason, …) for machines."""
    per_second = summary.records / summary.seconds if summary.seconds else 0.0
    counts = {"rated": summary.rated, **{r: summary.rejected.get(r, 0) for r in REJECT_REASONS}}
    if fmt is not Format.table:
        emit(
            [
                {
                    "run": summary.run,
                    **counts,
                    "total": summary.records,
                    "blank_lines": summary.blank_lines,
                    "skipped_inputs": len(summary.skipped_inputs),
                    "seconds": round(summary.seconds, 3),
                    "cdrs_per_second": round(per_second),
                }
            ],
            fmt,
        )
        return
    for line in summary.recovered + summary.skipped_inputs:
        say("{}", line)
    rows = [{"outcome": "rated", "records": summary.rated}]
    rows += [{"outcome": f"rejected: {r}", "records": counts[r]} for r in REJECT_REASONS]
    rows.append({"outcome": "total", "records": summary.records})
    emit(rows, fmt, columns=["outcome", "records"], title=f"run {summary.run}")
    say("{:,} records in {:.2f} s ({:,.0f} CDRs/s)", summary.records, summary.seconds, per_second)
