"""The main job for a newcomer: the catalog, then a day of switch traffic rated.

It imports the bundled sample catalog into the home, does what an operator does on the
customer card (a new customer with a route, an IP auth, a contact and a payment), shows a
refused change, proves that an export re-imports to the same catalog, then simulates a day
of realistic traffic (duplicates and malformed records included), rates it into the lake
and shows what landed. Each run simulates the next day, so a rerun rates new traffic.
"""

from __future__ import annotations

import filecmp
import tempfile
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress

from pipelines.cli.context import catalog_of, home_of, operator_errors
from pipelines.cli.entities import listing_of
from pipelines.cli.output import Format, emit, say
from pipelines.cli.rate import show_summary
from pipelines.home import rated_lake, resolve_home
from pipelines.lakefiles import RATE_RUNS, committed_runs, whole_runs
from schemas.catalog import CUSTOMERS, ROUTES
from schemas.errors import CdrflowError, ValidationError

if TYPE_CHECKING:
    from pipelines.catalog import Catalog

DEMO_CUSTOMER = "demo-voip"


def sample_catalog() -> Path:
    """The bundled sample catalog: a few customers, nested rate cards, packages, DIDs."""
    return Path(str(resources.files("pipelines") / "sample_catalog"))


@operator_errors
def demo(
    ctx: typer.Context,
    cdrs: Annotated[
        int, typer.Option("--cdrs", min=0, help="CDRs of traffic to simulate")
    ] = 500_000,
) -> None:
    """Run the demo in the home: catalog, then traffic rated (other customers are refused)."""
    # The store and the engine are imported by the commands that use them, not by every
    # command's start (``context.catalog_of``).
    from pipelines.catalog import Catalog
    from pipelines.catalog.csvdir import export_directory, import_directory
    from pipelines.catalog.secrets import generate_password

    home = home_of(ctx)
    catalog = catalog_of(ctx)
    sample = sample_catalog()
    known = {r["customer_id"] for r in catalog.list("customers")}
    expected = {
        line.split(",")[0] for line in (sample / "customers.csv").read_text().splitlines()[1:]
    }
    if known - expected - {DEMO_CUSTOMER}:
        raise CdrflowError(
            f"{home} holds customers of its own ({', '.join(sorted(known - expected))}); "
            "run the demo with --home pointing at a new directory"
        )

    say("[bold]1.[/bold] import the sample catalog {} into {}", sample, home)
    counts = import_directory(catalog, sample, force=True)
    emit(
        [{"table": k, "rows": v} for k, v in counts.items()],
        Format.table,
        columns=["table", "rows"],
    )
    emit(
        catalog.list("customers"),
        Format.table,
        entity=CUSTOMERS,
        columns=["customer_id", "name", "status", "currency", "tax_percent", "debit_limit"],
        title="customers",
        key=listing_of(CUSTOMERS).key,
        drop=listing_of(CUSTOMERS).drop,
        hint="cdrflow customers list --wide",
    )

    say(
        "\n[bold]2.[/bold] the customer card: add {} with a route, auth, contact, payment",
        DEMO_CUSTOMER,
    )
    catalog.add(
        "customers",
        {
            "customer_id": DEMO_CUSTOMER,
            "name": "Demo VoIP LLC",
            "status": "active",
            "currency": "USD",
            "tax_percent": "8.25",
            "debit_limit": "250",
        },
    )
    catalog.add(
        "routes",
        {
            "customer_id": DEMO_CUSTOMER,
            "card_id": "retail-usd",
            "tech_prefix": "5050#",
            "dial_string": "1|44",
            "priority": "1",
        },
    )
    catalog.add(
        "auth",
        {
            "customer_id": DEMO_CUSTOMER,
            "kind": "ip",
            "value": "192.0.2.0/29",
            "tech_prefix": "5050#",
            "channels": "50",
            "cps": "5",
        },
    )
    catalog.add(
        "contacts",
        {
            "customer_id": DEMO_CUSTOMER,
            "name": "Dana Demo",
            "email": "dana@demo-voip.example",
            "password": generate_password(),
        },
    )
    catalog.add(
        "payments",
        {
            "payment_id": "PAY-DEMO-1",
            "customer_id": DEMO_CUSTOMER,
            "amount": "200",
            "status": "completed",
            "at": "2026-11-26T09:00:00Z",
        },
    )
    emit(
        catalog.list("routes", customer=DEMO_CUSTOMER),
        Format.table,
        entity=ROUTES,
        title="routes of demo-voip",
        key=listing_of(ROUTES).key,
        drop=listing_of(ROUTES).drop,
        hint="cdrflow routes list --wide",
    )

    say("\n[bold]3.[/bold] a refused change: a customer's currency is fixed once it exists")
    try:
        catalog.edit("customers", DEMO_CUSTOMER, {"currency": "EUR"})
    except ValidationError as exc:
        say("[yellow]refused:[/yellow] {}", exc)

    say("\n[bold]4.[/bold] export, re-import into an empty catalog, export again")
    export = home / "export"
    export_directory(catalog, export)
    with tempfile.TemporaryDirectory() as scratch, Catalog(Path(scratch) / "home") as copy:
        import_directory(copy, export)
        again = Path(scratch) / "again"
        export_directory(copy, again)
        same = _same_tree(export, again)
    say(
        "exported to {}; round trip "
        + ("[green]identical[/green]" if same else "[red]DIFFERS[/red]"),
        export,
    )
    if not same:
        raise CdrflowError("the exported catalog did not re-import to the same catalog")
    if cdrs:
        _traffic(home, catalog, cdrs)
    _next_steps(home, catalog.version(), traffic=bool(cdrs))


def _next_steps(home: Path, version: int, *, traffic: bool) -> None:
    """Where to go from here: the commands an operator runs next, on this home."""
    steps = [
        (f"customers show {DEMO_CUSTOMER}", "the whole customer card"),
        ("customers list", "the customers (--wide: every column)"),
    ]
    if traffic:
        steps += [
            ("rejects --summary", "rejected records by reason and source"),
            ("stats --by customer,hour", "ASR, ACD, minutes and money per hour"),
            ("calls -n 10", "the latest calls"),
            ("balance", "balances and credit available"),
            ("report --out report.html", "charts of the lake in one HTML file"),
        ]
    # A home given by --home is named in each command; the default one or $CDRFLOW_HOME's
    # is found again without it.
    prefix = "cdrflow" if home == resolve_home() else f"cdrflow --home {home}"
    width = max(len(f"{prefix} {command}") for command, _ in steps)
    say("\ncatalog version {}. Next:", version)
    for command, what in steps:
        line = f"{prefix} {command}".ljust(width)
        say("  [bold]{}[/bold]  [dim]{}[/dim]", line, what, soft_wrap=True)


def _traffic(home: Path, catalog: Catalog, cdrs: int) -> None:
    """Step 5: a day of simulated switch traffic, rated into the lake."""
    import duckdb

    from pipelines.rate import rate_files
    from pipelines.simulate import DEFAULT_START, read_catalog, simulate

    day = len(committed_runs(home, RATE_RUNS))
    start = DEFAULT_START + timedelta(days=day)
    work = home / "demo-traffic"
    work.mkdir(exist_ok=True)
    path = work / f"cdrs-{start:%Y-%m-%d}.jsonl"
    say(
        "\n[bold]5.[/bold] simulate {:,} CDRs of {:%Y-%m-%d} into {}, then rate them",
        cdrs,
        start,
        path,
    )
    simulate(read_catalog(catalog), cdrs, path, seed=day, start=start)
    with Progress(transient=True) as bar:
        task = bar.add_task("rating", total=path.stat().st_size)
        summary = rate_files(home, [path], progress=lambda n: bar.advance(task, n))
    show_summary(summary, Format.table)
    files = whole_runs(rated_lake(home), lambda day: day == start.date())
    with duckdb.connect() as con:
        top = con.execute(
            "SELECT customer_id, count(*) AS calls, "
            "round(sum(billed_duration) / 60, 1) AS minutes, "
            "sum(charge) AS charge, any_value(currency) AS currency "
            "FROM read_parquet(?::VARCHAR[]) GROUP BY customer_id ORDER BY charge DESC",
            [files],
        ).fetchall()
    rows = [
        dict(zip(("customer_id", "calls", "minutes", "charge", "currency"), r, strict=True))
        for r in top
    ]
    emit(
        rows,
        Format.table,
        columns=["customer_id", "calls", "minutes", "charge", "currency"],
        title=f"rated on {start:%Y-%m-%d}, by customer (DuckDB over the lake)",
    )
    path.unlink()  # the lake holds what matters; the raw file would only fill the disk


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*.csv"))
    if files != sorted(p.relative_to(b) for p in b.rglob("*.csv")):
        return False
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
