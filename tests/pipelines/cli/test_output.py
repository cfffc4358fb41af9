"""What listings print: JSON with money as strings, CSV that parses, tables that show data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalog import Catalog
from pipelines.cli.output import Format, say, visible
from schemas.catalog import BY_NAME, ENTITIES
from schemas.fields import Money
from tests.pipelines.cli.driver import Cli, keys

GROUPS = {
    e.name: {"rate_cards": "cards"}.get(e.name, e.name.replace("_", "-"))
    for e in ENTITIES
    if e.name != "rates"
}


def floats_in(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in floats_in(v)]
    if isinstance(value, list):
        return [x for v in value for x in floats_in(v)]
    return []


def test_every_group_is_a_command() -> None:
    assert sorted(GROUPS.values()) == sorted(
        [
            "customers",
            "contacts",
            "auth",
            "routes",
            "cli-rules",
            "payments",
            "packages",
            "customer-packages",
            "dids",
            "alerts",
            "providers",
            "contracts",
            "cards",
            "company",
        ]
    )


@pytest.mark.parametrize("entity", sorted(GROUPS))
def test_json_money_is_a_string_and_csv_says_the_same(
    cli: Cli, sample: Catalog, entity: str
) -> None:
    group = GROUPS[entity]
    result = cli.ok(group, "list", "--format", "json")
    rows = json.loads(result.stdout, parse_float=lambda text: pytest.fail(f"float {text}"))
    assert rows, group
    assert floats_in(rows) == []
    money = [c.name for c in BY_NAME[entity].columns if isinstance(c.kind, Money)]
    for row in rows:
        for name in money:
            value = row[name]
            assert value is None or (isinstance(value, str) and Decimal(value).is_finite())
    as_csv = cli.csv(group, "list")
    assert len(as_csv) == len(rows)
    assert list(as_csv[0]) == list(rows[0])
    for row, line in zip(rows, as_csv, strict=True):
        for name in money:
            assert line[name] == (row[name] or "")


def test_money_keeps_its_exact_decimal_text(cli: Cli, sample: Catalog) -> None:
    cli.ok("payments", "edit", "PAY-2026-0001", "--amount", "0.015")
    shown = cli.json("payments", "show", "PAY-2026-0001")
    assert shown["amount"] == "0.015"
    assert '"amount": "0.015"' in cli.ok("payments", "show", "PAY-2026-0001", "-f", "json").stdout
    rates = cli.json("cards", "rates", "retail-usd", "--prefix", "1212")
    assert [r["rate"] for r in rates] == ["0.0065"]
    assert cli.csv("payments", "show", "PAY-2026-0001")[0]["amount"] == "0.015"
    customers = cli.json("customers", "list", "--status", "pending")
    assert customers[0]["tax_percent"] == "7.5"


def test_show_as_csv_is_one_row_with_a_header(cli: Cli, sample: Catalog) -> None:
    assert cli.csv("providers", "show", "tier1") == [
        {"provider_id": "tier1", "name": "Tier One Carrier Inc", "currency": "USD"}
    ]
    route = cli.csv("routes", "show", "2")
    assert route == [
        {
            "id": "2",
            "customer_id": "acme",
            "card_id": "premium-usd",
            "tech_prefix": "9901#",
            "strip_digits": "0",
            "dial_string": "",
            "priority": "1",
        }
    ]


def test_an_empty_listing_has_the_same_header(cli: Cli, sample: Catalog) -> None:
    for group in ("auth", "routes", "payments"):
        full = cli.ok(group, "list", "--format", "csv").stdout.splitlines()[0]
        empty = cli.ok(group, "list", "--customer", "nobody", "--format", "csv").stdout
        assert empty.splitlines() == [full], group
        assert cli.json(group, "list", "--customer", "nobody") == []
    table = cli.ok("contacts", "list", "--customer", "nobody").stdout
    assert "(none)" in table


def test_tables_show_values_as_they_are(cli: Cli, sample: Catalog) -> None:
    # Values and titles are data, not console markup.
    cli.ok("customers", "edit", "umbrella", "--name", "Umbrella [bold]UK[/bold] [red]")
    shown = cli.ok("customers", "show", "umbrella").stdout
    assert "Umbrella [bold]UK[/bold] [red]" in shown
    card = cli.json("customers", "show", "umbrella")
    assert card["customer"]["name"] == "Umbrella [bold]UK[/bold] [red]"
    result = cli.ok("customers", "search", "[/bold]")
    assert "customers matching '[/bold]' (1)" in result.stdout
    assert keys(cli.json("customers", "search", "[/bold]"), "customer_id") == ["umbrella"]


def test_table_output_lists_the_rows(cli: Cli, sample: Catalog) -> None:
    result = cli.ok("providers", "list")
    assert result.stdout.startswith("providers (3)")
    for text in ("eurotrans", "EuroTransit SA", "mobnet", "tier1", "USD", "EUR"):
        assert text in result.stdout
    assert result.stderr == ""
    shown = cli.ok("providers", "show", "eurotrans").stdout
    assert "provider eurotrans" in shown
    assert "EuroTransit SA" in shown


def test_format_short_option_and_unknown_format(cli: Cli, sample: Catalog) -> None:
    rows = json.loads(cli.ok("alerts", "list", "-f", "json").stdout)
    assert [r["threshold"] for r in rows] == ["35", "100", "450", "4000"]
    result = cli.run("alerts", "list", "--format", "xml")
    assert result.exit_code == 2
    assert "xml" in result.stderr


def test_csv_output_neutralises_what_a_spreadsheet_would_run(cli: Cli, sample: Catalog) -> None:
    formula = '=HYPERLINK("http://evil.example","pay here")'
    cli.ok("customers", "edit", "acme", "--name", formula, "--address", "@SUM(1+1)*cmd")
    [row] = cli.csv("customers", "list", "--status", "active")[:1]
    assert row["customer_id"] == "acme"
    assert row["name"] == "'" + formula
    assert row["address"] == "'@SUM(1+1)*cmd"
    assert cli.csv("customers", "show", "acme")[0]["name"] == "'" + formula
    # JSON and tables carry the data as it is.
    assert cli.json("customers", "show", "acme")["customer"]["name"] == formula
    assert formula in cli.ok("customers", "show", "acme").stdout
    # Signed decimals and +digits numbers are numbers to a spreadsheet: as they are.
    amounts = {r["payment_id"]: r["amount"] for r in cli.csv("payments", "list")}
    assert amounts["PAY-2026-0004"] == "-50"
    assert {r["pattern"] for r in cli.csv("cli-rules", "list")} >= {"+44"}


# An OSC 8 hyperlink, a clear-screen and console markup: data, shown as it is.
HOSTILE = "\x1b]8;;http://evil\x1b\\ \x1b[2J [bold]x[/]"
SHOWN = r"\x1b]8;;http://evil\x1b\ \x1b[2J [bold]x[/]"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", r"\x1b[2J"),
        ("a\x00b\x07c\x08d", r"a\x00b\x07c\x08d"),
        ("tab\there\rback", r"tab\there\rback"),
        ("del\x7f", r"del\x7f"),
        ("\x9b31m csi \x9d osc \x85 nel", r"\x9b31m csi \x9d osc \x85 nel"),
        ("\u202eevil\u202c \u2066x\u2069", r"\u202eevil\u202c \u2066x\u2069"),
        ("two\nlines", "two\nlines"),  # a line break is a line break
        ("café ünïcode 東京 \u00a0", "café ünïcode 東京 \u00a0"),
    ],
)
def test_visible_escapes_every_control_character(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_tables_escape_control_characters_and_json_csv_keep_them(cli: Cli, sample: Catalog) -> None:
    cli.ok("customers", "edit", "umbrella", "--name", HOSTILE)
    assert SHOWN in cli.ok("customers", "show", "umbrella").stdout
    for args, title in [
        (("show", "umbrella"), "customer umbrella"),
        (("list",), "customers (5)"),
        (("search", "\x1b[2J"), r"customers matching '\x1b[2J' (1)"),
    ]:
        out = cli.ok("customers", *args).stdout
        assert out.startswith(title) and "\x1b" not in out, out
    assert cli.json("customers", "show", "umbrella")["customer"]["name"] == HOSTILE
    assert cli.csv("customers", "show", "umbrella")[0]["name"] == HOSTILE
    assert [r["name"] for r in cli.json("customers", "list") if r["name"] == HOSTILE]


def test_lines_for_people_show_values_as_data(cli: Cli, sample: Catalog, tmp_path: Path) -> None:
    out = tmp_path / "[bold]export[/bold]\x1b[2J"
    said = cli.ok("catalog", "export", str(out)).stdout
    assert r"[bold]export[/bold]\x1b[2J" in said.replace("\n", ""), said
    assert "\x1b" not in said
    refused = cli.refused("catalog", "import", str(tmp_path / "no [red]such\x1b[2J"))
    assert r"no [red]such\x1b[2J: not a directory" in refused
    # A value given on the command line and echoed back by an error.
    line = cli.refused("customers", "edit", "acme", "--status", "\x1b[31mclosed")
    assert "\x1b" not in line and r"\x1b[31mclosed" in line


def test_say_takes_the_format_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    # say(message, fmt) was its old form: a format among the values would go to stdout.
    with pytest.raises(TypeError, match="fmt="):
        say("calls up at {}", "12:00", Format.csv)
    say("calls up at {}: [bold]{}[/bold]", "12:00", "[red]x\x1b[2J", fmt=Format.csv)
    out, err = capsys.readouterr()
    assert out == "" and err == "calls up at 12:00: [red]x\\x1b[2J\n"
