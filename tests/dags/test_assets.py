"""The assets and checks materialized on a rated home, against DuckDB over its lake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from dags.assets import balances, daily_summaries, invoices
from dags.definitions import defs
from dags.resources import CdrflowHome
from pipelines.catalog import Catalog
from pipelines.catalog.documents import listing
from pipelines.lakefiles import write_parquet
from pipelines.summaries import summary_path
from tests.pipelines.billed import NOVEMBER, lake_query


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [key]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def resources(home: Path) -> dict[str, CdrflowHome]:
    return {"home": CdrflowHome(path=str(home))}


def test_daily_summaries_of_a_day_are_the_lake_s_metrics(billed_home: Path) -> None:
    result = dg.materialize(
        [daily_summaries], partition_key="2026-11-02", resources=resources(billed_home)
    )
    assert result.success
    rows = pq.read_table(summary_path(billed_home, NOVEMBER.replace(day=2))).to_pylist()
    where = "CAST(dt AS DATE) = DATE '2026-11-02'"
    per_customer = lake_query(
        billed_home,
        f"SELECT customer_id, count(*), sum(charge) FROM rated WHERE {where} GROUP BY 1 ORDER BY 1",
    )
    assert [
        (r["id"], r["attempts"], r["charge"]) for r in rows if r["kind"] == "customer"
    ] == per_customer
    shown = metadata(result, "daily_summaries")
    assert shown["attempts"] == sum(n for _, n, _ in per_customer)
    assert shown["customer_rows"] == len(per_customer)
    totals = lake_query(
        billed_home, f"SELECT currency, sum(charge) FROM rated WHERE {where} GROUP BY 1 ORDER BY 1"
    )
    assert shown["charge"] == ", ".join(f"{c} {Decimal(v):.6f}" for c, v in totals)


def test_invoices_of_an_ended_month_are_issued_and_match_the_lake(billed_home: Path) -> None:
    result = dg.materialize(
        [invoices], partition_key="2026-11-01", resources=resources(billed_home)
    )
    assert result.success
    with Catalog(billed_home) as catalog:
        issued = listing(catalog, month=NOVEMBER)
    assert len(issued) >= 4 and {d.kind for d in issued} == {"invoice"}
    shown = metadata(result, "invoices")
    assert shown["issued"] == shown["documents"] == len(issued)
    assert shown["issued_numbers"] == " ".join(d.number or "" for d in issued)
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "usage_matches_lake"
    assert check.metadata["customers"].value == len(issued)
    for doc in issued:
        assert (billed_home / "invoices" / f"{doc.number}.pdf").is_file()
    again = dg.materialize([invoices], partition_key="2026-11-01", resources=resources(billed_home))
    assert metadata(again, "invoices")["issued"] == 0
    assert again.get_asset_check_evaluations()[0].passed


def test_balances_of_every_customer(billed_home: Path) -> None:
    result = dg.materialize([balances], resources=resources(billed_home))
    shown = metadata(result, "balances")
    with Catalog(billed_home) as catalog:
        customers = catalog.list("customers")
    assert shown["customers"] == len(customers)
    for customer in customers:
        assert f"| {customer['customer_id']} |" in shown["balances"]


def lake_check(home: Path) -> dg.AssetCheckEvaluation:
    result = defs.resolve_job_def("lake_check_job").execute_in_process()
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "callid_in_one_day"
    return check


def test_the_lake_check_fails_when_a_callid_is_in_two_days(billed_home: Path) -> None:
    assert lake_check(billed_home).passed
    lake = billed_home / "lake" / "rated"
    [november] = sorted((lake / "date=2026-11-02").glob("*.parquet"))[:1]
    row = pq.read_table(november).slice(0, 1)
    callid = row["callid"][0].as_py()
    write_parquet(row, lake / "date=2026-12-05" / "by-hand.parquet")
    check = lake_check(billed_home)
    assert not check.passed
    assert check.metadata["callids_in_two_days"].value == 1
    assert check.metadata["examples"].value == f"{callid}: 2026-11-02, 2026-12-05"
