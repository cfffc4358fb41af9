"""The daily summaries (``pipelines.summaries``) against DuckDB over the lake itself."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.summaries import summary_path, write_day
from schemas.summary import SUMMARY
from tests.pipelines.billed import lake_query
from tests.pipelines.cli.driver import Cli

DAY = date(2026, 11, 2)


def test_a_day_is_summarised_per_customer_and_provider_as_the_lake_sums(
    billed_home: Path,
) -> None:
    done = write_day(billed_home, DAY)
    table = pq.read_table(done.path)
    assert done.path == summary_path(billed_home, DAY)
    assert done.path.parent.name == "date=2026-11-02"
    assert table.schema.equals(SUMMARY, check_metadata=False)
    rows = table.to_pylist()
    where = "CAST(dt AS DATE) = DATE '2026-11-02'"
    expected = lake_query(
        billed_home,
        "SELECT customer_id, currency, count(*), count(*) FILTER (sip_code = 200), "
        "sum(billed_duration), sum(charge), sum(profit) "
        f"FROM rated WHERE {where} GROUP BY ALL ORDER BY 1",
    )
    customers = [r for r in rows if r["kind"] == "customer"]
    assert [
        (r["id"], r["currency"], r["attempts"], r["answered"], r["charge"], r["profit"])
        for r in customers
    ] == [(c, cur, n, a, Decimal(ch), Decimal(p)) for c, cur, n, a, _, ch, p in expected]
    for row, (*_, billed, _ch, _p) in zip(customers, expected, strict=True):
        assert row["billed_minutes"] == round(billed / 60, 4)
        assert row["asr"] == round(100 * row["answered"] / row["attempts"], 2)
    providers = lake_query(
        billed_home,
        f"SELECT provider_id, count(*) FROM rated WHERE {where} GROUP BY ALL ORDER BY 1",
    )
    assert [(r["id"], r["attempts"]) for r in rows if r["kind"] == "provider"] == providers
    totals = lake_query(
        billed_home,
        f"SELECT currency, sum(charge), sum(profit) FROM rated WHERE {where} GROUP BY 1",
    )
    assert done.charge == {c: f"{Decimal(v):.6f}" for c, v, _ in totals}
    assert done.profit == {c: f"{Decimal(v):.6f}" for c, _, v in totals}
    assert done.attempts == sum(r[2] for r in expected) > 0
    assert done.customers == len(expected)


def test_a_day_without_calls_gets_an_empty_summary_and_a_rebuild_replaces_it(
    billed_home: Path,
) -> None:
    empty = write_day(billed_home, date(2026, 10, 1))
    assert pq.read_table(empty.path).num_rows == 0
    assert (empty.attempts, empty.charge) == (0, {})
    first = write_day(billed_home, DAY)
    again = write_day(billed_home, DAY)
    assert again == first
    assert [p.name for p in first.path.parent.iterdir()] == ["summary.parquet"]


def test_summaries_build_command_writes_the_day(billed_home: Path) -> None:
    cli = Cli(billed_home)
    [row] = cli.json("summaries", "build", "--day", "2026-11-02")
    assert row["file"] == str(summary_path(billed_home, DAY))
    rows = pq.read_table(row["file"]).to_pylist()
    assert row["attempts"] == sum(r["attempts"] for r in rows if r["kind"] == "customer") > 0
    assert cli.refused_lines("summaries", "build", "--day", "2026-11-31") == [
        "--day: '2026-11-31' is not a day (use YYYY-MM-DD)"
    ]
