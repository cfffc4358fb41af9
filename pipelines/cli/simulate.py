"""``cdrflow simulate``: switch CDRs for the home's catalog (``pipelines.simulate``), as a
file or as a Kafka stream (``pipelines.kafka_out``).

The command registers itself on the ``cdrflow`` app when ``pipelines.cli`` imports it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipelines.cli import app
from pipelines.cli.context import catalog_of, operator_errors, option_time
from pipelines.cli.output import Format, console, emit, say
from pipelines.home import writing
from pipelines.kafka_config import ClientConfig, client_config
from pipelines.simulate import DEFAULT_START, read_catalog
from pipelines.simulate import simulate as write_cdrs
from schemas.cdr import FIRST_YEAR, LAST_YEAR
from schemas.errors import CdrflowError

# Records generated at a time for a stream: enough for full batches, little held in memory.
KAFKA_CHUNK = 50_000


@app.command("simulate")
@operator_errors(unwritten="nothing was written (the partial file was removed)")
def simulate(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", min=0, help="how many CDRs to write")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="file to write: .jsonl, .csv or .parquet", dir_okay=False),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            metavar="BOOTSTRAP",
            help="send to Kafka (host:port,…) instead of a file, one JSON CDR per message; "
            "TLS/SASL settings come from CDRFLOW_KAFKA_* or --kafka-config",
        ),
    ] = None,
    topic: Annotated[str, typer.Option(help="the topic --kafka sends to")] = "cdrs",
    rate: Annotated[
        float, typer.Option(min=0.0, help="CDRs per second sent to --kafka (0: no limit)")
    ] = 0.0,
    kafka_config: Annotated[
        Path | None,
        typer.Option(
            "--kafka-config",
            dir_okay=False,
            help="file of key=value librdkafka properties (e.g. sasl.password), read, never shown",
        ),
    ] = None,
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
    """Write simulated switch CDRs for the customers, routes and DIDs of the catalog, to a
    file or to a Kafka topic."""
    if (out is None) == (kafka is None):
        raise CdrflowError("give either --out FILE or --kafka BOOTSTRAP (with --topic)")
    if kafka is None and (rate or kafka_config is not None):
        raise CdrflowError("--rate and --kafka-config go with --kafka; a file is written at once")
    first = option_time(start, "--start") if start is not None else DEFAULT_START
    try:
        last = first + timedelta(days=days, microseconds=-1)
    except OverflowError:
        last = datetime.max.replace(tzinfo=UTC)
    if first.year < FIRST_YEAR or last.year > LAST_YEAR:
        raise CdrflowError(
            f"--start and --days: {first:%Y-%m-%d} to {last:%Y-%m-%d} is not within the years "
            f"{FIRST_YEAR} to {LAST_YEAR}, where cdrflow rates a dt"
        )
    # Settings first: a wrong one fails before the catalog is read.
    config = client_config(kafka, kafka_config) if kafka is not None else None
    rows = read_catalog(catalog_of(ctx))
    if config is not None:
        options: dict[str, Any] = {"seed": seed, "start": first, "days": days}
        options.update(duplicate_rate=duplicates, malformed_rate=malformed)
        _to_kafka(rows, count, config, topic, rate, options)
        return
    assert out is not None
    began = time.perf_counter()
    with writing(out), _bar("simulating", count) as (bar, task):
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
    speed = f", {count / seconds:,.0f} CDRs/s" if seconds > 0 and count else ""
    say(
        "wrote {:,} CDRs ({:,} bytes) to {} in {:.1f} s{}",
        count,
        counts["bytes"],
        out,
        seconds,
        speed,
    )


def _to_kafka(
    rows: dict[str, Any],
    count: int,
    config: ClientConfig,
    topic: str,
    rate: float,
    options: dict[str, Any],
) -> None:
    """Stream the CDRs to ``topic``, a bar showing what was handed to the producer, then say
    how many the cluster acknowledged (the settings themselves are never printed)."""
    from pipelines.kafka_out import KafkaSink  # confluent-kafka: only when sending

    bootstrap = config["bootstrap.servers"]
    began = time.perf_counter()
    # Connected (and the topic found) before the bar appears: a refusal prints no bar.
    with KafkaSink(config, topic, rate) as sink, _bar("sending", count) as (bar, task):
        sink.progress = lambda done: bar.update(task, completed=done)
        counts = write_cdrs(rows, count, sink, chunk=KAFKA_CHUNK, **options)
        delivered = sink.close()
    seconds = time.perf_counter() - began
    emit(_summary(counts), Format.table, columns=["", "count", "share"], title=f"topic {topic}")
    speed = f", {delivered / seconds:,.0f} CDRs/s" if seconds > 0 and delivered else ""
    say(
        "sent {:,} CDRs ({:,} bytes of JSON) to topic {} on {} in {:.1f} s{}",
        delivered,
        counts["bytes"],
        topic,
        bootstrap,
        seconds,
        speed,
    )


@contextmanager
def _bar(verb: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
    with Progress(
        TextColumn(f"[bold]{verb}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        yield bar, bar.add_task("cdrs", total=total)


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
