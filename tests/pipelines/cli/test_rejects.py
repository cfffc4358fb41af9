"""``cdrflow rejects`` on the command line: listings and counts that match a DuckDB query over
the rejected lake, replays after the catalog is fixed, refusals in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

import pipelines.rerate
from pipelines.catalog import Catalog
from pipelines.rate import rate_files
from tests.pipelines.cli.driver import Cli, narrow, shown
from tests.pipelines.test_rejects import NEWCO_IP, cdrs, write_csv
from tests.pipelines.workload import write_jsonl


def today() -> str:
    return datetime.now(UTC).date().isoformat()


@pytest.fixture
def rated(cli: Cli, sample: Catalog, tmp_path: Path) -> dict[str, Any]:
    """The home with a JSON Lines file and a CSV file rated; the first has lines that are
    no JSON and a dt that is no time (rejected on the day they were rejected: one of
    ``rejected_on``, the UTC days before and after its run, two when midnight passed)."""
    jsonl = write_jsonl(tmp_path / "day1.jsonl", cdrs(1500, seed=1), broken_every=300)
    with jsonl.open("a") as f:
        f.write(json.dumps({"callid": "bad-dt", "dt": "02/11/2026", "dest_number": "44"}) + "\n")
    csv = write_csv(tmp_path / "day2.csv", cdrs(1500, seed=2))
    before = today()
    rate_files(cli.home, [jsonl])
    rejected_on = (before, today())
    rate_files(cli.home, [csv])
    return {"jsonl": jsonl, "csv": csv, "rejected_on": rejected_on}


def lake_rows(home: Path, where: str = "TRUE", params: list[Any] | None = None) -> list[Any]:
    """The rejected lake as any Parquet reader sees it, its rows in the listing's order."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            f"""
            SELECT CAST(date AS VARCHAR), callid, customer_id, reject_reason, reject_detail,
                   source, line, raw
            FROM read_parquet('{home}/lake/rejected/**/*.parquet', hive_partitioning = true)
            WHERE {where} ORDER BY date, source, line
            """,
            params or [],
        ).fetchall()


def listed(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    names = ("date", "callid", "customer_id", "reject_reason", "reject_detail", "source")
    return [(*(r[n] for n in names), r["line"], r["raw"]) for r in rows]


def test_listings_match_a_duckdb_query_over_the_rejected_lake(
    cli: Cli, rated: dict[str, Any]
) -> None:
    jsonl, csv = str(rated["jsonl"]), str(rated["csv"])
    first_day = rated["rejected_on"][0]
    cases: list[tuple[list[str], str, list[Any]]] = [
        ([], "TRUE", []),
        (["--reason", "no_route"], "reject_reason = 'no_route'", []),
        (["-r", "invalid", "-r", "duplicate"], "reject_reason IN ('invalid', 'duplicate')", []),
        (["--customer", "initech"], "customer_id = 'initech'", []),
        (["--from", "2026-11-02", "--to", "2026-11-03"], "date = '2026-11-02'", []),
        # A record whose dt did not parse is on the day it was rejected.
        (["--from", first_day], f"date >= '{first_day}'", []),
        (["--source", "day2.csv"], "source = ?", [csv]),
        (["--source", jsonl, "--reason", "invalid"], "source = ? AND reject_reason = 'invalid'",
         [jsonl]),
        (["--source", "elsewhere/day2.csv"], "FALSE", []),
    ]  # fmt: skip
    for args, where, params in cases:
        expected = lake_rows(cli.home, where, params)
        assert listed(cli.json("rejects", *args)) == expected, args
        assert expected or args[-1] == "elsewhere/day2.csv", args
    [undated] = [r for r in cli.json("rejects", "--from", first_day) if r["callid"] == "bad-dt"]
    assert undated["dt"] is None and undated["date"] in rated["rejected_on"]
    assert undated["reject_detail"].startswith("dt: '02/11/2026' is neither ISO 8601")


def test_the_summary_matches_a_duckdb_query(cli: Cli, rated: dict[str, Any]) -> None:
    for args, where in (([], "TRUE"), (["--customer", "globex"], "customer_id = 'globex'")):
        with duckdb.connect() as con:
            expected = con.execute(
                f"""
                SELECT reject_reason, source, count(*), CAST(min(date) AS VARCHAR),
                       CAST(max(date) AS VARCHAR)
                FROM read_parquet('{cli.home}/lake/rejected/**/*.parquet', hive_partitioning = 1)
                WHERE {where} GROUP BY ALL ORDER BY reject_reason, source
                """
            ).fetchall()
        got = cli.json("rejects", "--summary", *args)
        assert [tuple(r.values()) for r in got] == expected
        assert list(got[0]) == ["reject_reason", "source", "records", "first_day", "last_day"]
    shown = cli.ok("rejects", "--summary").stdout
    total = sum(r["records"] for r in cli.json("rejects", "--summary"))
    assert "unknown_customer" in shown and f"{total:,} records in all" in shown


def test_a_table_shows_the_first_records_and_says_how_to_see_all(
    cli: Cli, rated: dict[str, Any]
) -> None:
    total = len(lake_rows(cli.home))
    assert f"50 of {total:,} shown; --limit 0 shows all" in " ".join(
        cli.ok("rejects").stdout.split()
    )
    assert "shown" not in cli.ok("rejects", "--limit", "0").stdout
    assert len(cli.csv("rejects", "--limit", "7")) == 7
    assert len(cli.csv("rejects")) == total  # machines get them all


def test_in_80_columns_the_reason_detail_source_and_line_stay(
    cli: Cli, rated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow(monkeypatch, 80)
    table = shown(cli.ok("rejects", "--reason", "no_route", "--limit", "5").stdout)
    assert table.headers[-4:] == ["reject_reason", "reject_detail", "source", "line"]
    assert table.hidden and set(table.hidden) <= {"customer_id", "date", "callid"}
    columns = ["date", "callid", "customer_id", "reject_reason", "reject_detail", "source", "line"]
    assert sorted(table.headers + table.hidden, key=columns.index) == columns
    assert table.headers == [c for c in columns if c not in table.hidden]
    wide = shown(cli.ok("rejects", "--reason", "no_route", "--limit", "5", "--wide").stdout)
    assert wide.hidden == [] and "callid" in wide.headers


def test_the_summary_keeps_reason_source_and_count_in_80_columns(
    cli: Cli, rated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow(monkeypatch, 80)
    table = shown(cli.ok("rejects", "--summary").stdout)
    assert table.headers[:3] == ["reject_reason", "source", "records"]
    assert table.hidden and set(table.hidden) <= {"first_day", "last_day"}
    wide = shown(cli.ok("rejects", "--summary", "--wide").stdout)
    assert wide.headers == ["reject_reason", "source", "records", "first_day", "last_day"]
    assert wide.hidden == []


def test_bad_options_are_refused_in_one_line(cli: Cli, rated: dict[str, Any]) -> None:
    assert "--reason 'no_customer' is not a reason; use one of invalid, duplicate" in cli.refused(
        "rejects", "--reason", "no_customer"
    )
    assert "not a day" in cli.refused("rejects", "--from", "2026-11")
    assert "is not after --from" in cli.refused(
        "rejects", "replay", "--from", "2026-11-03", "--to", "2026-11-02"
    )


def test_replay_after_adding_the_customer_on_the_command_line(
    cli: Cli, rated: dict[str, Any]
) -> None:
    unknown = {
        (r["source"], r["line"]) for r in cli.json("rejects", "--reason", "unknown_customer")
    }
    cli.ok("customers", "add", "--customer-id", "newco", "--name", "NewCo", "--status",
           "active", "--currency", "USD")  # fmt: skip
    cli.ok("auth", "add", "--customer-id", "newco", "--kind", "ip", "--value", NEWCO_IP)
    cli.ok("routes", "add", "--customer-id", "newco", "--card-id", "retail-usd")
    shown = " ".join(cli.ok("rejects", "replay", "--reason", "unknown_customer").stdout.split())
    assert "moved to the rated lake (was unknown_customer)" in shown
    assert "still rejected: duplicate" in shown and "moved calls in USD: charge" in shown
    left = {(r["source"], r["line"]) for r in cli.json("rejects", "-r", "unknown_customer")}
    assert left == set()
    with duckdb.connect() as con:
        moved = set(
            con.execute(
                f"SELECT source, line FROM read_parquet('{cli.home}/lake/rated/**/*.parquet') "
                "WHERE customer_id = 'newco'"
            ).fetchall()
        )
    assert moved and moved <= unknown
    again = cli.json("rejects", "replay", "--reason", "duplicate", "--customer", "newco")
    assert again["moved"] == 0 and again["files_replaced"] == 0
    assert again["selection"]["customers"] == ["newco"]
    manifest = cli.home / "lake" / "_runs" / f"{again['run']}.json"
    assert json.loads(manifest.read_text())["still_rejected"] == again["still_rejected"]
    # Filters given before the word `replay` select too.
    [row] = cli.csv("rejects", "--customer", "nobody", "replay")
    assert row["replayed"] == "0" and "customers=nobody" in row["selection"]


def test_a_replay_waiting_for_the_lake_names_its_holder(
    cli: Cli, rated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "import sys; from pathlib import Path; from pipelines.lakefiles import lake_lock\n"
        "with lake_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(cli.home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(pipelines.rerate, "LOCK_WAIT", 0.2)
        result = cli.run("rejects", "replay")
        holder.stdin.close()
        holder.wait(300)
    assert result.exit_code == 1
    assert "waiting (10 s at most) for another writer of the lake" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and f"(pid and command: {holder.pid} -c " in line


def test_the_demo_home_answers_rejects_summary(cli: Cli) -> None:
    cli.ok("demo", "--cdrs", "3000")
    summary = cli.json("rejects", "--summary")
    assert {r["reject_reason"] for r in summary} >= {"invalid", "no_route", "no_rate"}
    assert "records in all" in cli.ok("rejects", "--summary").stdout
