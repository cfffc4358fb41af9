"""``cdrflow stats``, ``codes``, ``calls``, ``call`` and ``dialogs`` on a rated lake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from rich.cells import cell_len

from pipelines.cli.stats import STATS_DROP
from stats.metrics import METRICS
from tests.pipelines.cli.driver import Cli, narrow, shown
from tests.stats.lakes import call, write_lake


def lake_sql(home: Path, sql: str) -> list[tuple[object, ...]]:
    glob = str(home / "lake" / "rated" / "date=*" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql.replace("LAKE", f"read_parquet('{glob}')")).fetchall()


def test_stats_columns_and_numbers(small_lake_home: Path) -> None:
    cli = Cli(small_lake_home)
    rows = cli.csv("stats", "--by", "customer,day")
    assert list(rows[0]) == ["customer", "day", *METRICS]
    expected = lake_sql(
        small_lake_home,
        "SELECT customer_id, strftime(dt, '%Y-%m-%d'), count(*), "
        "count(*) FILTER (sip_code = 200), sum(charge) FROM LAKE GROUP BY ALL ORDER BY 1, 2",
    )
    got = [
        (r["customer"], r["day"], int(r["attempts"]), int(r["answered"]), Decimal(r["charge"]))
        for r in rows
    ]
    assert got == [(c, d, a, n, Decimal(m)) for c, d, a, n, m in expected]
    assert all(int(r["channels"]) >= 1 and int(r["cps"]) >= 1 for r in rows)


def test_stats_json_keeps_money_exact_and_filters(small_lake_home: Path) -> None:
    cli = Cli(small_lake_home)
    [first, *_] = cli.json("stats", "--by", "customer")
    customer = first["customer"]
    rows = cli.json("stats", "--by", "day", "--customer", customer, "--from", "2026-01-01")
    assert isinstance(rows[0]["charge"], str)  # money as exact text, never a float
    assert sum(r["attempts"] for r in rows) == first["attempts"]
    assert cli.json("stats", "--from", "2001-01-01", "--to", "2001-01-02") == []


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("stats", "--by", "customer,day"), ["customer", "day", "attempts", "asr", "acd"]),
        (("stats", "--by", "customer,hour"), ["customer", "hour", "attempts", "asr", "acd"]),
        (("codes", "--by", "customer,hour"), ["customer", "hour", "sip_code", "attempts"]),
        (("calls",), ["dt", "customer_id", "dest_number", "charge"]),
        (("dialogs",), ["customer_id", "dt", "dest_number", "up_seconds"]),
    ],
)
def test_the_table_fits_80_columns(
    small_lake_home: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], key: list[str]
) -> None:
    """The key columns whole and one value a line; the rest named in the hint, shown by
    --wide and always in CSV."""
    narrow(monkeypatch, 80)
    cli = Cli(small_lake_home)
    everything = list(cli.csv(*args)[0])
    table = shown(cli.ok(*args).stdout)
    assert set(key) <= set(table.headers) and table.header_lines == 1
    assert table.headers == [c for c in everything if c not in table.hidden] != everything
    assert len(table.rows) == len(cli.json(*args))
    assert all(cell_len(line) <= 80 for line in table.lines if "hidden (" not in line)
    wide = shown(cli.ok(*args, "--wide").stdout)
    assert (wide.headers, wide.hidden, wide.header_lines) == (everything, [], 1)


@pytest.mark.parametrize("width", [70, 80, 100])
def test_the_columns_go_in_one_order_money_last(
    small_lake_home: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    narrow(monkeypatch, width)
    table = shown(Cli(small_lake_home).ok("stats", "--by", "customer,hour").stdout)
    order = [*STATS_DROP, "charge"]
    assert sorted(table.hidden, key=order.index) == order[: len(table.hidden)]
    assert table.hidden and "charge" in table.headers


def test_codes_calls_call_and_dialogs(small_lake_home: Path) -> None:
    cli = Cli(small_lake_home)
    codes = cli.json("codes", "--by", "")
    [(total,)] = lake_sql(small_lake_home, "SELECT count(*) FROM LAKE")
    assert sum(r["attempts"] for r in codes) == total
    latest = cli.json("calls", "--limit", "3")
    assert len(latest) == 3 and latest[0]["dt"] >= latest[1]["dt"] >= latest[2]["dt"]
    [full] = cli.json("call", latest[0]["callid"])
    assert full["callid"] == latest[0]["callid"] and "package_draws" in full
    assert latest[0]["callid"] in cli.ok("call", latest[0]["callid"]).stdout
    up = cli.ok("dialogs").stderr + cli.ok("dialogs").stdout
    assert "calls up at" in up


def test_dialogs_at_a_given_instant(tmp_path: Path) -> None:
    write_lake(tmp_path, [call(1, 0, duration=Decimal(60)), call(2, 100, duration=Decimal(5))])
    rows = Cli(tmp_path).json("dialogs", "--at", "2026-11-30T12:00:30Z")
    assert [r["callid"] for r in rows] == ["c1"]


def test_operator_errors_are_one_line(tmp_path: Path, small_lake_home: Path) -> None:
    assert "no rated CDRs yet" in Cli(tmp_path).refused("stats")
    cli = Cli(small_lake_home)
    assert "unknown group 'week'" in cli.refused("stats", "--by", "week")
    assert "is not a date or time" in cli.refused("stats", "--from", "yesterday")
    backwards = cli.refused("stats", "--from", "2026-02-02", "--to", "2026-02-01")
    assert "is not after --from" in backwards
    assert "no CDR with callid 'nope'" in cli.refused("call", "nope")


def test_switch_text_is_shown_escaped_and_carried_exactly(tmp_path: Path) -> None:
    """A switch's text reaches tables with its control characters escaped; JSON and CSV
    carry it as the switch sent it (CSV neutralises only what a spreadsheet would run)."""
    link, clear = "\x1b]8;;http://evil\x1b\\", "\x1b[2J"
    reason = f"{link}Busy{clear} [bold]Here[/]"
    write_lake(
        tmp_path,
        [
            call(1, 0, sip_code=486, sip_reason=reason, source_cli=clear + "4420"),
            call(2, 10, sip_code=486, sip_reason=reason, source_cli="=cmd|' /C calc'!A0"),
        ],
    )
    cli = Cli(tmp_path)
    shown = r"\x1b]8;;http://evil\x1b\Busy\x1b[2J [bold]Here[/]"
    for args in (("call", "c1"), ("codes", "--by", "", "--wide"), ("calls", "--wide")):
        out = cli.ok(*args).stdout
        assert shown in out and "\x1b" not in out, out
    assert r"\x1b[2J4420" in cli.ok("call", "c1").stdout
    [c1] = cli.json("call", "c1")
    assert (c1["sip_reason"], c1["source_cli"]) == (reason, clear + "4420")
    assert cli.json("codes", "--by", "")[0]["sip_reason"] == reason
    rows = {r["callid"]: r for r in cli.csv("calls")}
    assert rows["c1"]["sip_reason"] == reason
    [c2] = cli.csv("call", "c2")
    assert c2["source_cli"] == "'=cmd|' /C calc'!A0"
