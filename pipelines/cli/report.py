"""``cdrflow report --out report.html``: one self-contained HTML page of charts about the lake
(``stats.report``), for a time range and some customers."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.output import say
from pipelines.home import rated_lake
from schemas.errors import CdrflowError
from stats.report import report_html
from stats.scope import Scope, connect, parse_time


@operator_errors
def report(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", help="the HTML file to write", dir_okay=False)
    ] = Path("report.html"),
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="first moment, ISO 8601, UTC unless an offset is given (default: the first call)",
            show_default=False,
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="end of the range, not included (default: after the last call)",
            show_default=False,
        ),
    ] = None,
    customer: Annotated[
        list[str] | None,
        typer.Option("--customer", help="only this customer (repeat for more)"),
    ] = None,
) -> None:
    """Write an HTML report: ASR, ACD and PDD over time per customer, top destinations, SIP
    code mix, channel and CPS peaks. One file, viewable offline."""
    scope = Scope(
        lake=rated_lake(home_of(ctx)),
        start=parse_time(start, "--from") if start is not None else None,
        end=parse_time(end, "--to") if end is not None else None,
        customers=tuple(customer or ()),
    )
    con = connect()
    try:
        page = report_html(con, scope, datetime.now(UTC))
    finally:
        con.close()
    _write(out, page)
    # Unwrapped: the path is for copying into a browser.
    size = len(page.encode()) / 1024
    say("wrote the report to [bold]{}[/bold] ({:,.0f} KiB)", out, size, soft_wrap=True)


def _write(out: Path, page: str) -> None:
    """Write through a temporary file, so that a browser never opens half a report."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        with contextlib.suppress(OSError):  # there may be no folder to hold it
            partial.unlink(missing_ok=True)
        raise CdrflowError(f"--out {out}: cannot write it: {exc.strerror or exc}") from None
