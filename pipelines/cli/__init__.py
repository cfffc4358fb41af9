"""The ``cdrflow`` command line."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli import billing as billing_module
from pipelines.cli import card as card_module
from pipelines.cli import demo as demo_module
from pipelines.cli import live as live_module
from pipelines.cli import price as price_module
from pipelines.cli import rate as rate_module
from pipelines.cli import rejects as rejects_module
from pipelines.cli import report as report_module
from pipelines.cli import rerate as rerate_module
from pipelines.cli import stats as stats_module
from pipelines.cli import stream as stream_module
from pipelines.cli import summaries as summaries_module
from pipelines.cli import ui as ui_module
from pipelines.cli.context import catalog_of, home_of, operator_errors
from pipelines.cli.entities import LISTINGS, FormatOption, WideOption, register
from pipelines.cli.output import Format, emit, say
from pipelines.home import catalog_path, private_umask
from schemas.catalog import RATES

app = typer.Typer(
    name="cdrflow",
    help="CDR rating and analytics for VoIP carriers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="home directory (default: $CDRFLOW_HOME, else ./cdrflow-home)",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


catalog_app = typer.Typer(
    help="The catalog as a whole: import, export, summary.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("import")
@operator_errors(unwritten="nothing was committed (the catalog is as before)")
def catalog_import(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="directory of catalog CSV files (SPEC §3)")],
    force: Annotated[
        bool, typer.Option("--force", help="remove customers even with billing history")
    ] = False,
) -> None:
    """Import a directory of CSV files; each file present replaces its table, all or nothing."""
    from pipelines.catalog.csvdir import import_directory  # the store: see catalog_of

    counts = import_directory(catalog_of(ctx), directory, force=force)
    emit(
        [{"table": k, "rows": v} for k, v in counts.items()],
        Format.table,
        columns=["table", "rows"],
        title=f"imported {directory}",
    )


@catalog_app.command("export")
@operator_errors
def catalog_export(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="directory to write the CSV files to")],
) -> None:
    """Export the whole catalog as CSV files (passwords are never exported)."""
    from pipelines.catalog.csvdir import export_directory

    counts = export_directory(catalog_of(ctx), directory)
    say("exported {} rows to {}", sum(counts.values()), directory)


@catalog_app.command("info")
@operator_errors
def catalog_info(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """Where the catalog is, its version, and how many rows each table holds."""
    catalog = catalog_of(ctx)
    rows = [{"table": k, "rows": v} for k, v in catalog.counts().items()]
    if fmt is Format.table:
        say("catalog {}, version {}", catalog_path(home_of(ctx)), catalog.version())
    emit(rows, fmt, columns=["table", "rows"])


groups = register(app)
cards = groups["cards"]
groups["customers"].command("show")(card_module.show)


@cards.command("import")
@operator_errors
def cards_import(
    ctx: typer.Context,
    card_id: Annotated[str, typer.Argument(help="the card whose rates the file replaces")],
    file: Annotated[Path, typer.Argument(help="CSV file: prefix,name,rate,connect_fee?,mcd?,…")],
) -> None:
    """Replace the rate rows of one card with a CSV file."""
    catalog = catalog_of(ctx)
    catalog.get("rate_cards", card_id)  # an unknown card is one problem, not one per row
    from pipelines.catalog.csvdir import import_card

    count = import_card(catalog, card_id, file)
    say("card [bold]{}[/bold] now has {} rate rows", card_id, count)


@cards.command("rates")
@operator_errors
def cards_rates(
    ctx: typer.Context,
    card_id: Annotated[str, typer.Argument(help="the card")],
    prefix: Annotated[
        str | None, typer.Option(help="only rows whose prefix starts with this")
    ] = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """List the rate rows of one card."""
    catalog = catalog_of(ctx)
    catalog.get("rate_cards", card_id)
    rows = [
        r
        for r in catalog.list("rates", card=card_id)
        if not prefix or r["prefix"].startswith(prefix)
    ]
    rows.sort(key=lambda r: (r["prefix"], r["effective_from"] or ""))
    columns = [c.name for c in RATES.columns if c.name != "card_id"]
    listing = LISTINGS["rates"]
    title = f"rates of {card_id} ({len(rows)})"
    emit(rows, fmt, entity=RATES, columns=columns, title=title, key=listing.key, wide=wide)


app.command("demo")(demo_module.demo)
app.command("rate")(rate_module.rate)
app.command("price")(price_module.price)
app.command("stats")(stats_module.stats)
app.command("codes")(stats_module.codes)
app.command("calls")(stats_module.calls)
app.command("call")(stats_module.call)
app.command("dialogs")(stats_module.dialogs)
app.command("report")(report_module.report)
app.command("rerate")(rerate_module.rerate)
app.command("recalc")(rerate_module.recalc)
app.add_typer(rejects_module.rejects, name="rejects")
app.command("stream")(stream_module.stream)
app.command("balance")(billing_module.balance)
app.add_typer(billing_module.invoices, name="invoices")
app.add_typer(summaries_module.summaries, name="summaries")
app.command("ui")(ui_module.ui)
app.add_typer(live_module.live, name="live")
from pipelines.cli import simulate as simulate  # noqa: E402 (registers `cdrflow simulate`)


def prose(doc: str) -> str:
    """A docstring as help text: each paragraph on one line. Rich help keeps a single line
    break, so a docstring wrapped at the source's width showed ragged lines."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


# Commands whose help is their docstring: prose, not lines wrapped at the source's width.
_documented = [
    *app.registered_commands,
    *rejects_module.rejects.registered_commands,
    *groups["customers"].registered_commands,
]
for _command in _documented:
    if _command.help is None and _command.callback is not None and _command.callback.__doc__:
        _command.help = prose(_command.callback.__doc__)
_rejects = rejects_module.rejects.registered_callback
if _rejects is not None and _rejects.callback is not None and _rejects.callback.__doc__:
    _rejects.help = prose(_rejects.callback.__doc__)


def main() -> None:
    private_umask()  # the home is its owner's alone (pipelines.home)
    app()
