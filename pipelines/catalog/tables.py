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
