"""The catalog store: reference data and ledgers in SQLite (WAL), shared by many processes."""

from pipelines.catalog.store import Catalog

__all__ = ["Catalog"]
