"""What the live app reads from the lake and the catalog (SPEC §9: "started from the lake and
catalog").

The lake is read under its lock, so that the usage per customer, the package draws, each
stream partition's position and the commit log's head are of one moment: every batch the
positions cover is in the usage, every later one is not. The sums are those of ``cdrflow
balance`` (``billing.balance.usage`` over ``whole_runs``) and of the raters' package usage
(``pipelines.rate.package_draws``), so the two agree to the cent.

The catalog is read as it is (SPEC §7.6): customers, payments and fee schedules for the
balance, and the compiled rate tables with every small entity's rows for authorization.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from billing.balance import payments, usage
from billing.fees import Schedule, fees_total, schedules
from pipelines import commitlog
from pipelines.compiled import cached_tables
from pipelines.home import rated_lake
from pipelines.lakefiles import lake_lock, lake_root, recover, whole_runs
from pipelines.live.state import Seed, draw_key
from pipelines.rate import load_tables, package_draws
from pipelines.stream import lake_position
from rating.tables import Tables

log = logging.getLogger("cdrflow.live")

Rows = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class LakeSeed:
    """The lake at one moment: usage and package draws per customer, and where it is."""

    seed: Seed
    usage: dict[str, Decimal]
    draws: dict[str, dict[str, int]] = field(default_factory=dict)


def read_lake(home: Path, topic: str, partitions: int) -> LakeSeed:
    """Usage (Σ charge + tax) and package draws of every rated call in the lake, with the
    stream positions of ``topic``'s partitions and the commit log's head of the same moment
    (under the lake lock; a crashed writer's run is finished or undone first)."""
    with lake_lock(home):
        for line in recover(home):
            log.info("recovered: %s", line)
        files = whole_runs(rated_lake(home))
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            used = usage(con, files, None)
            drawn = package_draws(con, files)
        finally:
            con.close()
        positions = {}
        for partition in range(partitions):
            position = lake_position(home, topic, partition)
            if position is not None:
                positions[str(partition)] = position - 1
        head = commitlog.head(lake_root(home)).seq
    draws: dict[str, dict[str, int]] = {}
    for customer, package, start, period, seconds in drawn:
        mine = draws.setdefault(customer, {})
        key = draw_key(package, start, period.isoformat())
        mine[key] = mine.get(key, 0) + seconds
    return LakeSeed(Seed(positions, head), used, draws)


@dataclass(frozen=True)
class Books:
    """The catalog as the balance needs it (SPEC §7.2, §7.6), with the rate tables and
    rows of the same version for authorization."""

    state: str | None
    version: int
    rows: Rows
    tables: Tables
    customers: dict[str, dict[str, Any]]
    paid: dict[str, Decimal]
    schedules: list[Schedule]

    def fees(self, today: date) -> dict[str, Decimal]:
        """Σ (fee + its tax) per customer of the fees due on or before ``today``."""
        return fees_total(self.schedules, today)


def read_catalog(home: Path) -> Books:
    """The catalog as it is now: one snapshot of its rows, and its compiled rate tables
    (from the cache when they are there, as the raters load them)."""
    from pipelines.catalog import Catalog  # SQLAlchemy: only when the catalog is read

    with Catalog(home) as catalog:
        state = catalog.state()
        version = catalog.version()
        rows: Rows = {name: [r.row for r in recs] for name, recs in catalog.snapshot([]).items()}
        tables = cached_tables(home, load_tables, catalog)
    customers = {c["customer_id"]: c for c in rows["customers"]}
    return Books(
        state=state,
        version=version,
        rows=rows,
        tables=tables,
        customers=dict(sorted(customers.items())),
        paid=payments(rows["payments"], lambda _: True),
        schedules=_schedules(rows, customers),
    )


def _schedules(rows: Rows, customers: Mapping[str, Mapping[str, Any]]) -> list[Schedule]:
    return schedules(customers, rows["packages"], rows["customer_packages"], rows["dids"])
