"""The end-to-end benchmark's baseline: the same files through DuckDB alone, no rating.

``cdrflow rate`` reads a file, rates it and writes a lake of wider rows. This module times
the two halves of that I/O done by DuckDB on all cores, with nothing else: reading the
input file, typed as ``schemas.cdr.INPUT`` (phone numbers stay text, money and durations
``DECIMAL(18,6)``), and writing it to one Parquet file; and rewriting the rated lake a run
made (its 38 columns) to one Parquet file. Both write zstd level 1, as the lake does.

Records DuckDB cannot type are skipped (``ignore_errors``) rather than rejected with a
reason, so the copy does less than ``cdrflow rate`` on those: a floor, not a formulation of
the same work. The benchmark reports cdrflow's CDRs/s as a ratio of these, measured in the
same run on the same files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.cdr import INPUT


def duckdb_type(arrow: pa.DataType) -> str:
    """The DuckDB type of an input column's Arrow type."""
    if pa.types.is_string(arrow):
        return "VARCHAR"
    if pa.types.is_timestamp(arrow):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(arrow):
        return f"DECIMAL({arrow.precision}, {arrow.scale})"
    if arrow == pa.int16():
        return "SMALLINT"
    if arrow == pa.int64():
        return "BIGINT"
    raise ValueError(f"no DuckDB type for {arrow}")


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def input_source(path: Path) -> str:
    """A DuckDB table expression reading a CDR file (by its extension) with the input's
    types, skipping records it cannot type."""
    types = ", ".join(f"{_quoted(f.name)}: {_quoted(duckdb_type(f.type))}" for f in INPUT)
    name = _quoted(str(path))
    if path.suffix == ".parquet":
        names = ", ".join(f'CAST("{f.name}" AS {duckdb_type(f.type)}) AS "{f.name}"' for f in INPUT)
        return f"(SELECT {names} FROM read_parquet({name}))"
    if path.suffix == ".csv":
        return f"read_csv({name}, header = true, columns = {{{types}}}, ignore_errors = true)"
    if path.suffix == ".jsonl":
        return (
            f"read_json({name}, format = 'newline_delimited', columns = {{{types}}}, "
            "ignore_errors = true)"
        )
    raise ValueError(f"{path}: not a .jsonl, .csv or .parquet file")


def lake_source(rated: Path) -> str:
    """A DuckDB table expression reading every file of a rated lake."""
    files = _quoted(str(rated / "date=*" / "*.parquet"))
    return f"read_parquet({files}, hive_partitioning = false)"


def copy_seconds(source: str, out: Path, threads: int | None = None) -> tuple[int, float]:
    """Rows copied from ``source`` to the Parquet file ``out`` and the seconds it took, in a
    fresh DuckDB connection on ``threads`` threads (all this process may use by default)."""
    threads = threads or len(os.sched_getaffinity(0))
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {threads}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        started = time.perf_counter()
        [(rows,)] = con.execute(
            f"COPY (SELECT * FROM {source}) TO {_quoted(str(out))} "
            "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
        ).fetchall()
        seconds = time.perf_counter() - started
    finally:
        con.close()
    out.unlink(missing_ok=True)
    return int(rows), seconds
