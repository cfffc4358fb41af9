"""SQL tables of the catalog, derived from the entity specs in ``schemas.catalog``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.schema import SchemaItem

from schemas.catalog import ENTITIES, Entity

PASSWORD_HASH = "password_hash"

_SQL_TYPES = {"text": sa.String, "int": sa.Integer, "micro": sa.BigInteger, "bool": sa.Boolean}

metadata = sa.MetaData()

meta = sa.Table(
    "catalog_meta",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
)


def stored_name(column_name: str, secret: bool) -> str:
    return PASSWORD_HASH if secret else column_name


def _table(entity: Entity) -> sa.Table:
    columns: list[SchemaItem] = []
    if entity.surrogate:
        columns.append(sa.Column("id", sa.Integer, primary_key=True, autoincrement=True))
    for c in entity.columns:
        args: list[SchemaItem] = []
        if c.ref is not None:
            target = next(e for e in ENTITIES if e.name == c.ref.entity)
            ondelete = "CASCADE" if c.ref.cascade else "RESTRICT"
            args.append(sa.ForeignKey(f"{target.name}.{target.key[0]}", ondelete=ondelete))
        columns.append(
            sa.Column(
                stored_name(c.name, c.secret),
                _SQL_TYPES[c.kind.storage],
                *args,
                primary_key=c.name in entity.key,
                nullable=not (c.required or c.name in entity.key),
                index=c.ref is not None,
            )
        )
    for unique in entity.unique:
        columns.append(sa.Index(f"ix_{entity.name}_{'_'.join(unique)}", *unique))
    return sa.Table(entity.name, metadata, *columns)


TABLES: dict[str, sa.Table] = {e.name: _table(e) for e in ENTITIES}


# -- issued billing documents (SPEC §7.3): invoices, credit and debit notes ------------------
# Money in integer millionths, as the catalog's; rows are only ever inserted.

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("number", sa.String, primary_key=True),
    sa.Column("sequence", sa.Integer, nullable=False, unique=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("refers_to", sa.String, sa.ForeignKey("documents.number")),
    sa.Column("customer_id", sa.String, nullable=False),
    sa.Column("month", sa.String, nullable=False),
    sa.Column("currency", sa.String, nullable=False),
    sa.Column("tax_percent", sa.BigInteger, nullable=False),
    *(
        sa.Column(name, sa.BigInteger, nullable=False)
        for name in ("usage", "fees", "subtotal", "tax", "total", "payments", "balance_due")
    ),
    sa.Column("issued_at", sa.String, nullable=False),
    # The company's and the customer's details as printed when it was issued (JSON).
    sa.Column("parties", sa.String, nullable=False),
    sa.Index("ix_documents_customer_month", "customer_id", "month"),
)

document_lines = sa.Table(
    "document_lines",
    metadata,
    sa.Column("number", sa.String, sa.ForeignKey("documents.number"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("key", sa.String, nullable=False),
    sa.Column("description", sa.String, nullable=False),
    sa.Column("calls", sa.Integer),
    sa.Column("minutes", sa.BigInteger),
    sa.Column("amount", sa.BigInteger, nullable=False),
)

# The one counter of document numbers (INV, CN and DN alike): the last one issued.
document_counter = sa.Table(
    "document_counter",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)
