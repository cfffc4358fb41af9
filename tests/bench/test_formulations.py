"""The benchmark's baselines are right: DuckDB SQL and the Python loop agree with the engine.

A small bench workload (3,000 prefixes, 20,000 CDRs over the price changes and the month's
end that ``bench.rating`` uses) is rated by the engine, ``rate_sql`` and ``rate_python``;
every rated call must come out the same in all three. The workload is first checked to
exercise what makes the rules hard (several allotments, partial draws, overlapping versions,
every duration rounding, provider legs in another currency), so that agreement means
something.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bench.catalog import PRICE_CHANGE, build_bench_catalog
from bench.formulations import RESULT, PythonCatalog, rate_python, rate_sql
from bench.rating import (
    DAYS,
    OVERLAP_FROM,
    START,
    _outputs,
    _steps,
    calls_of,
    enrich_catalog,
    kernel_arrays,
    main,
    mismatches,
    rate_calls,
    rate_engine,
    read_valid,
    result_of,
    snapshot,
    time_each_kernel,
)
from pipelines.catalog import Catalog
from pipelines.simulate import read_catalog, simulate
from rating.engine import finish, usage_from
from rating.tables import compile_tables

CDRS = 20_000


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("bench")
    home = work / "home"
    build_bench_catalog(home, prefixes=3000, cards=4, seed=3)
    enrich_catalog(home)
    rows = snapshot(home)
    with Catalog(home) as catalog:
        simulated = read_catalog(catalog)
    path = work / "cdrs.parquet"
    simulate(simulated, CDRS, path, seed=3, start=START, days=DAYS)
    batch, _ = read_valid(path)
    tables = compile_tables(rows)
    engine = rate_engine(tables, batch, home)
    calls, call_rows = calls_of(tables, engine.priced)
    return {
        "rows": rows,
        "tables": tables,
        "engine": engine,
        "expected": result_of(engine.rated),
        "calls": calls,
        "call_rows": call_rows,
    }


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_the_workload_exercises_the_hard_rules(workload: dict[str, Any]) -> None:
    rows, rated = workload["rows"], workload["engine"].rated.to_pylist()
    billed = [r for r in rated if r["billed_duration"] > 0]
    # Packages: several draws on one call, partial draws, the second allotment of a customer.
    draws = [r["package_draws"] for r in rated if r["package_draws"]]
    assert any(len(d) >= 2 for d in draws)
    assert any(0 < r["package_seconds"] < r["billed_duration"] for r in rated)
    allotted: dict[str, list[tuple[str, str]]] = {}
    for cp in sorted(rows["customer_packages"], key=lambda r: (r["package_id"], r["start_date"])):
        allotted.setdefault(cp["customer_id"], []).append((cp["package_id"], cp["start_date"]))
    ranks = {
        allotted[r["customer_id"]].index((d["package_id"], d["start_date"].isoformat()))
        for r in rated
        for d in r["package_draws"]
    }
    assert {0, 1} <= ranks
    # Versions: the overlapping ones from noon on the first day, the price change on the next.
    versions = {
        (r["card_id"], r["prefix"], r["rate"]): r["effective_from"]
        for r in rows["rates"]
        if r["effective_from"] is not None
    }
    used = {
        versions.get((r["card_id"], r["dest_code"], r["rate"]))
        for r in rated
        if r["dt"] >= _moment(OVERLAP_FROM)
    }
    assert {OVERLAP_FROM, PRICE_CHANGE} <= used
    # Every duration rounding, on calls that were billed; money rounding modes too.
    cards = {c["card_id"]: c for c in rows["rate_cards"]}
    assert {cards[r["card_id"]]["duration_rounding"] for r in billed} == {
        "up",
        "down",
        "half_up",
        "half_down",
    }
    assert len({cards[r["card_id"]]["rounding"] for r in billed}) >= 2
    # Provider legs: priced, absent, and in another currency (profit null).
    assert any(r["provider_charge"] is not None and r["profit"] is not None for r in billed)
    assert any(r["provider_charge"] is None for r in rated)
    assert any(r["provider_charge"] is not None and r["profit"] is None for r in billed)
    assert any(r["tax"] > 0 for r in billed) and any(r["connect_fee"] > 0 for r in billed)
    # The baselines also see calls without a rate row, which they must leave out.
    assert workload["calls"].num_rows > len(rated)


def test_the_engine_on_the_baselines_scope_agrees_with_its_whole_path(
    workload: dict[str, Any],
) -> None:
    """``rate_calls`` is what the ratios are taken of: the same calls, the same answers."""
    got = rate_calls(workload["tables"], workload["calls"])
    assert got.schema == RESULT
    assert got.num_rows == workload["expected"].num_rows
    assert mismatches(workload["expected"], got, "the engine on the baselines' scope") == []


def test_sql_agrees_with_the_engine(workload: dict[str, Any]) -> None:
    con = duckdb.connect()
    try:
        got = rate_sql(con, workload["rows"], workload["calls"])
    finally:
        con.close()
    assert got.schema == RESULT
    assert mismatches(workload["expected"], got, "SQL") == []


def test_python_agrees_with_the_engine(workload: dict[str, Any]) -> None:
    got = pa.Table.from_pylist(rate_python(workload["rows"], workload["calls"]), schema=RESULT)
    assert mismatches(workload["expected"], got, "Python") == []


def test_python_on_the_first_calls_agrees_with_the_engine_on_them(
    workload: dict[str, Any],
) -> None:
    """What ``--python-cdrs`` compares: packages depend on every earlier call, so the engine
    rates the same first calls again."""
    n = 5000
    priced = workload["engine"].priced
    first = np.zeros(len(priced), np.bool_)
    first[workload["call_rows"][:n]] = True
    part = priced.select(first)
    tables = workload["tables"]
    expected = result_of(finish(tables, part, usage_from(tables, []), 0))
    index = PythonCatalog.of(workload["rows"])
    got = pa.Table.from_pylist(
        rate_python(workload["rows"], workload["calls"].slice(0, n), index), schema=RESULT
    )
    assert mismatches(expected, got, "Python") == []


def test_a_wrong_answer_is_reported(workload: dict[str, Any]) -> None:
    expected = workload["expected"]
    charge = pc.add(expected["charge"], pa.array(np.arange(expected.num_rows) == 7, pa.int64()))
    wrong = expected.set_column(expected.schema.get_field_index("charge"), "charge", charge)
    [problem] = mismatches(expected, wrong.slice(1), "SQL")[:1]
    assert "only the engine: 1" in problem
    problems = mismatches(expected, wrong, "SQL")
    assert len(problems) == 1 and "'charge'" in problems[0]


def test_each_kernel_is_timed_alone_on_what_price_found(workload: dict[str, Any]) -> None:
    tables, priced = workload["tables"], workload["engine"].priced
    arrays = kernel_arrays(tables, priced)
    out = _outputs(arrays["n"])
    for _, step in _steps(tables, arrays, 0, arrays["n"], out):
        step()
    billed = priced.billed[priced.card >= 0]
    assert np.array_equal(out["billed"], billed) and np.count_nonzero(billed) > len(billed) // 4
    each = time_each_kernel(tables, arrays, repeat=1)
    assert list(each) == ["longest_prefix", "bill", "charge", "tax"]
    assert all(seconds > 0 for seconds in each.values())
    arrays["expected_row"] = arrays["expected_row"][::-1].copy()
    with pytest.raises(RuntimeError, match="other rate rows than price"):
        time_each_kernel(tables, arrays, repeat=1)


@pytest.mark.benchmark
def test_the_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cdrs", "20000", "--prefixes", "3000", "--python-cdrs", "5000"]) == 0
    out = capsys.readouterr().out
    assert "all three agree" in out and "limited by --python-cdrs" in out
    assert "cdrflow rate, end to end" in out and "Targets" in out
