"""The end-to-end baseline reads what ``cdrflow rate`` reads: the same records, the same types.

If DuckDB read phone numbers as numbers, a duration as a double or skipped good records,
the copy would do other (cheaper) work than the run it is compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from bench.catalog import build_bench_catalog
from bench.io_floor import copy_seconds, duckdb_type, input_source, lake_source
from bench.rating import read_valid
from pipelines.catalog import Catalog
from pipelines.home import rated_lake
from pipelines.rate import rate_files
from pipelines.simulate import read_catalog, simulate
from schemas.cdr import INPUT, RATED

CDRS = 3_000


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("floor")
    home = work / "home"
    build_bench_catalog(home, prefixes=300, cards=2, seed=5)
    with Catalog(home) as catalog:
        rows = read_catalog(catalog)
    paths = {}
    for kind in ("jsonl", "csv", "parquet"):
        paths[kind] = work / f"cdrs.{kind}"
        simulate(rows, CDRS, paths[kind], seed=5, duplicate_rate=0, malformed_rate=0)
    return {"home": home, "paths": paths, "work": work}


def _read(source: str) -> pa.Table:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"SELECT * FROM {source}").to_arrow_table()
    finally:
        con.close()


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_the_copy_reads_each_record_as_cdrflow_does(files: dict[str, Any], kind: str) -> None:
    path = files["paths"][kind]
    valid, invalid = read_valid(path)
    assert invalid == 0 and valid.num_rows == CDRS
    copied = _read(input_source(path))
    assert copied.column_names == INPUT.names
    for name in ("callid", "dest_number", "source_cli", "duration", "sip_code", "dt"):
        assert copied[name].type == INPUT.field(name).type, name
        assert copied[name].to_pylist() == valid[name].to_pylist(), name


def test_the_copy_writes_every_record_and_cleans_up(files: dict[str, Any]) -> None:
    out = files["work"] / "copy.parquet"
    for path in files["paths"].values():
        rows, seconds = copy_seconds(input_source(path), out, threads=1)
        assert rows == CDRS and seconds > 0
        assert not out.exists()


def test_a_record_duckdb_cannot_type_is_skipped(files: dict[str, Any], tmp_path: Path) -> None:
    lines = files["paths"]["csv"].read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = '"1m20s"'  # duration
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    rows, _ = copy_seconds(input_source(bad), tmp_path / "copy.parquet")
    assert rows == CDRS - 1


def test_the_rewrite_reads_the_whole_rated_lake(files: dict[str, Any]) -> None:
    summary = rate_files(files["home"], [files["paths"]["parquet"]])
    assert summary.rated > 0
    lake = _read(lake_source(rated_lake(files["home"])))
    assert lake.num_rows == summary.rated
    assert lake.column_names == RATED.names


def test_every_input_type_has_a_duckdb_type() -> None:
    assert [duckdb_type(f.type) for f in INPUT][:6] == [
        "VARCHAR",
        "TIMESTAMPTZ",
        "VARCHAR",
        "VARCHAR",
        "DECIMAL(18, 6)",
        "SMALLINT",
    ]
    with pytest.raises(ValueError, match="no DuckDB type"):
        duckdb_type(pa.float64())
