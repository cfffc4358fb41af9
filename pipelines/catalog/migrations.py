"""Versioned schema migrations of the catalog store.

A new store is created from the current table definitions and stamped with the newest
version; an existing store runs, in order and in one transaction, every migration newer than
the version it records. A migration is a function of an open SQLAlchemy connection; append
new ones to ``MIGRATIONS`` with the next number, never edit a published one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from pipelines.catalog.tables import meta, metadata
from schemas.errors import CdrflowError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _name_the_state(conn: sa.Connection) -> None:
    if conn.execute(sa.select(meta.c.key).where(meta.c.key == "state")).first() is None:
        conn.execute(meta.insert().values(key="state", value=uuid.uuid4().hex))


def _billing(conn: sa.Connection) -> None:
    have = {c["name"] for c in sa.inspect(conn).get_columns("dids")}
    for name in ("start_date", "end_date"):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE dids ADD COLUMN {name} VARCHAR")
    metadata.create_all(conn)  # company, documents, document_lines, document_counter


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: the catalog of SPEC §3", lambda conn: metadata.create_all(conn)),
    Migration(2, "a random name of the content (keys the compiled-tables cache)", _name_the_state),
    Migration(3, "billing: DID start and end dates, the company, issued documents", _billing),
)

_versions = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String, nullable=False),
    sa.Column("applied_at", sa.String, nullable=False),
)


def current_version(conn: sa.Connection) -> int:
    """The schema version the store records; 0 for a new, empty store."""
    if not sa.inspect(conn).has_table(_versions.name):
        return 0
    version: int = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(_versions.c.version), 0))
    ).scalar_one()
    return version


def migrate(conn: sa.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the store on ``conn`` (inside a write transaction) to the newest version."""
    head = migrations[-1].version
    current = current_version(conn)
    _versions.create(conn, checkfirst=True)
    if current > head:
        raise CdrflowError(
            f"the catalog has schema version {current}, newer than this cdrflow knows ({head}): "
            "upgrade cdrflow"
        )
    if current == 0:
        metadata.create_all(conn)
        pending: Sequence[Migration] = migrations
        run = False
    else:
        pending = [m for m in migrations if m.version > current]
        run = True
    for m in pending:
        if run:
            m.apply(conn)
        conn.execute(
            _versions.insert().values(
                version=m.version,
                description=m.description,
                applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )
    return head
