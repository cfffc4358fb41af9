"""``cdrflow live``: the real-time app (SPEC §9): ``worker`` runs it, ``top`` watches it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.live_top import top

live = typer.Typer(
    help="Real time (SPEC §9): live balances, alerts and call authorization.",
    no_args_is_help=True,
)
live.command("top")(top)


@live.command("worker")
@operator_errors
def worker(
    ctx: typer.Context,
    bootstrap: Annotated[
        str, typer.Option("--bootstrap", help="Kafka bootstrap servers, host:port[,…]")
    ],
    web_port: Annotated[
        int, typer.Option("--web-port", min=1, max=65535, help="the HTTP port of the views")
    ] = 6066,
    host: Annotated[str, typer.Option("--host", help="the address the views listen on")] = (
        "127.0.0.1"
    ),
    topic: Annotated[
        str, typer.Option("--topic", help="the raters' input topic (reads <topic>.usage)")
    ] = "cdrs",
    max_seconds_cap: Annotated[
        int,
        typer.Option(
            "--max-seconds-cap", min=1, help="the most max_seconds an authorization gives"
        ),
    ] = 10_800,
    app_id: Annotated[
        str,
        typer.Option(
            "--app-id", help="the app's name in Kafka (its consumer group and table topics)"
        ),
    ] = "cdrflow-live",
    alerts_topic: Annotated[
        str, typer.Option("--alerts-topic", help="the topic alert firings are published to")
    ] = "alerts",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="alert delivery settings (SMTP, webhooks; default <home>/live.toml if there; "
            "it wins over the CDRFLOW_SMTP_* variables): secrets go there or in the "
            "variables, never on the command line",
        ),
    ] = None,
) -> None:
    """Run the live app: balances, available credit, ASR/ACD/PDD, channels and CPS per
    customer in changelog-backed tables, kept from the raters' <topic>.usage and the lake;
    alerts; POST /authorize, GET /customers and GET /customers/ID on --host:--web-port. One
    worker per cluster. SIGTERM or SIGINT stops it cleanly."""
    import logging

    import faust

    from pipelines.live.app import LiveSettings, build

    settings = LiveSettings(
        home=home_of(ctx),
        bootstrap=bootstrap,
        topic=topic,
        host=host,
        web_port=web_port,
        max_seconds_cap=max_seconds_cap,
        app_id=app_id,
        alerts_topic=alerts_topic,
        config_file=config,
    )
    app = build(settings)
    worker = faust.Worker(app.app, loglevel="INFO", quiet=True, redirect_stdouts=False)
    logging.getLogger("cdrflow").setLevel(logging.INFO)
    worker.execute_from_commandline()
