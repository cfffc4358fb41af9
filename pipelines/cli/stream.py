"""``cdrflow stream``: a rating worker of a consumer group, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.output import say


@operator_errors(
    unwritten="the batch in hand was not committed: the lake is as before, and the worker "
    "given its partition rates it again"
)
def stream(
    ctx: typer.Context,
    bootstrap: Annotated[
        str, typer.Option("--bootstrap", help="Kafka bootstrap servers, host:port[,…]")
    ],
    topic: Annotated[str, typer.Option("--topic", help="the input topic")] = "cdrs",
    group: Annotated[str, typer.Option("--group", help="the consumer group of the raters")] = (
        "cdrflow-raters"
    ),
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="most messages rated as one batch")
    ] = 50_000,
    wait: Annotated[
        float, typer.Option("--wait", min=0.01, help="seconds a poll waits to fill a batch")
    ] = 1.0,
    kafka_config: Annotated[
        Path | None,
        typer.Option("--kafka-config", help="librdkafka key=value properties (TLS, SASL secrets)"),
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="publish rated and rejected CDRs to <topic>.rated/.rejected")
    ] = True,
    metrics_every: Annotated[
        float, typer.Option("--metrics-every", min=0.1, help="seconds between metric lines")
    ] = 10.0,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", help="stop after this many seconds without a message"),
    ] = None,
) -> None:
    """Rate CDRs from Kafka into the lake, exactly once; SIGTERM or SIGINT stops it cleanly
    (the batch in hand is landed and committed first)."""
    # The worker (the engine, the store, confluent-kafka) is imported by this command only.
    from pipelines.stream import StreamSettings, Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("cdrflow.stream").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    settings = StreamSettings(
        bootstrap=bootstrap,
        topic=topic,
        group=group,
        batch=batch,
        wait=wait,
        config_file=kafka_config,
        publish=publish,
        metrics_every=metrics_every,
    )
    totals = Worker(home_of(ctx), settings).run(stop.is_set, idle_exit)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(totals.rejected.items())) or "none"
    skipped = f", {totals.skipped} already in the lake" if totals.skipped else ""
    say(
        "stopped: {} batches, {} rated, rejected: {}{}",
        totals.batches,
        totals.rated,
        rejected,
        skipped,
    )
