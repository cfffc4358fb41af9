"""`cdrflow catalog import/export/info`, `cards import/rates` and `demo`."""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

from pipelines.catalog import Catalog
from tests.pipelines.cli.driver import Cli, keys

SAMPLE_COUNTS = {
    "customers": 5,
    "providers": 3,
    "rate_cards": 7,
    "packages": 4,
    "rates": 71,
    "routes": 6,
    "auth": 6,
    "customer_packages": 4,
    "dids": 3,
    "payments": 5,
    "alerts": 4,
    "contacts": 4,
    "cli_rules": 5,
    "contracts": 4,
    "company": 1,
}


def counts(cli: Cli) -> dict[str, int]:
    return {r["table"]: r["rows"] for r in cli.json("catalog", "info")}


def csv_files(directory: Path) -> list[Path]:
    return sorted(p.relative_to(directory) for p in directory.rglob("*.csv"))


def test_import_then_info(cli: Cli, sample_dir: Path, home: Path) -> None:
    assert counts(cli) == dict.fromkeys(SAMPLE_COUNTS, 0)
    result = cli.ok("catalog", "import", str(sample_dir))
    assert "customers" in result.stdout
    assert counts(cli) == SAMPLE_COUNTS
    info = cli.ok("catalog", "info").stdout
    assert f"catalog {home / 'catalog.sqlite'}, version 1" in " ".join(info.split())
    assert (home / "catalog.sqlite").is_file()
    # A write raises the version.
    cli.ok("customers", "edit", "acme", "--cps", "31")
    assert "version 2" in cli.ok("catalog", "info").stdout


def test_export_re_imports_to_the_same_catalog(cli: Cli, sample: Catalog, tmp_path: Path) -> None:
    cli.ok("payments", "edit", "PAY-2026-0001", "--amount", "0.015")
    first = tmp_path / "first"
    result = cli.ok("catalog", "export", str(first))
    assert f"exported {sum(SAMPLE_COUNTS.values())} rows to" in result.stdout
    assert Path("rates/retail-usd.csv") in csv_files(first)
    assert len(csv_files(first)) == 14 + 7
    with (first / "payments.csv").open(newline="") as f:
        paid = {r["payment_id"]: r["amount"] for r in csv.DictReader(f)}
    assert paid["PAY-2026-0001"] == "0.015"

    copy = Cli(tmp_path / "copy")
    copy.ok("catalog", "import", str(first))
    assert counts(copy) == SAMPLE_COUNTS
    again = tmp_path / "again"
    copy.ok("catalog", "export", str(again))
    assert csv_files(again) == csv_files(first)
    for name in csv_files(first):
        assert filecmp.cmp(first / name, again / name, shallow=False), name
    assert copy.json("customers", "list") == cli.json("customers", "list")


def test_import_reports_every_problem_and_changes_nothing(
    cli: Cli, sample: Catalog, sample_dir: Path, tmp_path: Path
) -> None:
    version = sample.version()
    bad = tmp_path / "bad"
    bad.mkdir()
    kept = (sample_dir / "customers.csv").read_text()
    (bad / "customers.csv").write_text(
        kept + "zed,Zed,active,EURO" + "," * 9 + "\nwhy,Why,sleeping,USD" + "," * 9 + "\n"
    )
    (bad / "providers.csv").write_text("provider_id,name,currency,colour\ntier1,T,USD,red\n")
    lines = cli.refused_lines("catalog", "import", str(bad))
    assert lines == [
        f"{bad / 'customers.csv'}:7: column currency: 'EURO' is not an ISO 4217 currency code "
        "(e.g. USD, EUR)",
        f"{bad / 'customers.csv'}:8: column status: 'sleeping' is not one of active, inactive, "
        "pending, penalty",
        f"{bad / 'providers.csv'}:1: column colour: is not a column of providers.csv; "
        "expected some of currency, name, provider_id",
    ]
    assert sample.version() == version
    assert counts(cli) == SAMPLE_COUNTS


def test_import_that_removes_a_customer_with_history_needs_force(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    directory = tmp_path / "few"
    directory.mkdir()
    # Without hooli (no history) and umbrella (a payment).
    rows = [
        "customer_id,name,status,currency",
        "acme,Acme Telecom Ltd,active,USD",
        "globex,Globex Voice GmbH,active,EUR",
        "initech,Initech Call Centers,active,USD",
    ]
    (directory / "customers.csv").write_text("\n".join(rows) + "\n")
    message = cli.refused("catalog", "import", str(directory))
    assert message == (
        "customer umbrella: has 1 payments; delete it with --force to remove it anyway"
    )
    assert len(cli.json("customers", "list")) == 5
    cli.ok("catalog", "import", str(directory), "--force")
    assert keys(cli.json("customers", "list"), "customer_id") == ["acme", "globex", "initech"]
    # Kept customers keep what they own; removed ones take it along.
    assert len(cli.json("routes", "list", "--customer", "acme")) == 2
    assert cli.json("routes", "list", "--customer", "hooli") == []
    assert cli.json("payments", "list", "--customer", "umbrella") == []
    # Imported columns that are absent take their defaults.
    assert cli.json("customers", "show", "acme")["customer"]["website"] is None


def test_import_of_a_missing_directory_is_refused(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert cli.refused("catalog", "import", str(missing)) == (
        f"{missing}: not a directory of catalog CSV files"
    )


def test_cards_import_replaces_the_rates_of_one_card(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    before = {c: cli.json("cards", "rates", c) for c in ("retail-usd", "wholesale-eur")}
    rates = tmp_path / "premium.csv"
    rates.write_text(
        "prefix,name,rate,connect_fee,mcd,pulse,grace,effective_from,effective_to\n"
        "44,United Kingdom,0.015,0.001,30,6,3,,2026-12-01\n"
        "44,United Kingdom,0.0165,,,,,2026-12-01T00:00:00Z,\n"
        "447,United Kingdom Mobile,0.0330,0,1,1,0,,\n"
        "1,USA/Canada,0.012,0,1,1,0,,\n"
    )
    result = cli.ok("cards", "import", "premium-usd", str(rates))
    assert "card premium-usd now has 4 rate rows" in result.stdout
    rows = cli.json("cards", "rates", "premium-usd")
    assert [(r["prefix"], r["rate"], r["effective_from"]) for r in rows] == [
        ("1", "0.012", None),
        ("44", "0.015", None),
        ("44", "0.0165", "2026-12-01T00:00:00Z"),
        ("447", "0.033", None),
    ]
    assert rows[1] == {
        "prefix": "44",
        "name": "United Kingdom",
        "rate": "0.015",
        "connect_fee": "0.001",
        "mcd": 30,
        "pulse": 6,
        "grace": 3,
        "effective_from": None,
        "effective_to": "2026-12-01T00:00:00Z",
    }
    assert (rows[2]["connect_fee"], rows[2]["mcd"], rows[2]["pulse"]) == ("0", 0, 1)
    # Only that card's rows changed.
    for card, rows_before in before.items():
        assert cli.json("cards", "rates", card) == rows_before

    only_44 = cli.json("cards", "rates", "premium-usd", "--prefix", "44")
    assert keys(only_44, "prefix") == ["44", "44", "447"]
    as_csv = cli.csv("cards", "rates", "premium-usd", "--prefix", "447")
    assert as_csv == [
        {
            "prefix": "447",
            "name": "United Kingdom Mobile",
            "rate": "0.033",
            "connect_fee": "0",
            "mcd": "1",
            "pulse": "1",
            "grace": "0",
            "effective_from": "",
            "effective_to": "",
        }
    ]
    table = cli.ok("cards", "rates", "premium-usd", "--prefix", "1").stdout
    assert "rates of premium-usd (1)" in table
    assert "0.012" in table


def test_cards_import_refuses_a_bad_file_naming_line_and_column(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    before = cli.json("cards", "rates", "premium-usd")
    rates = tmp_path / "bad.csv"
    rates.write_text(
        "prefix,name,rate,effective_from\n"
        "44x,United Kingdom,0.015,\n"
        "45,Denmark,-1,\n"
        "46,Sweden,0.0000001,\n"
        "47,Norway,0.01,2026-01-01\n"
        "47,Norway,0.02,2026-01-01\n"
    )
    lines = cli.refused_lines("cards", "import", "premium-usd", str(rates))
    # docs/operating.md: import reports every problem of every file, the repeated key included.
    assert lines[:3] == [
        f"{rates}:2: column prefix: '44x' is not a prefix of digits only",
        f"{rates}:3: column rate: -1 is negative",
        f"{rates}:4: column rate: 0.0000001 has more than 6 decimal places",
    ]
    assert len(lines) == 4
    assert lines[3].startswith(f"{rates}:6: rate card_id=premium-usd, prefix=47, effective_from=")
    assert "repeats line 5" in lines[3]
    assert cli.json("cards", "rates", "premium-usd") == before


def test_cards_import_refuses_a_repeated_prefix_and_date(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    before = cli.json("cards", "rates", "premium-usd")
    rates = tmp_path / "dup.csv"
    rates.write_text(
        "prefix,name,rate,effective_from\n"
        "47,Norway,0.01,2026-01-01\n"
        "47,Norway,0.02,2026-01-01T00:00:00Z\n"
        "47,Norway,0.03,2026-02-01\n"
    )
    message = cli.refused("cards", "import", "premium-usd", str(rates))
    assert message == (
        f"{rates}:3: rate card_id=premium-usd, prefix=47, "
        "effective_from=2026-01-01T00:00:00Z repeats line 2"
    )
    assert cli.json("cards", "rates", "premium-usd") == before


def test_cards_import_for_an_unknown_card_is_one_line(
    cli: Cli, sample: Catalog, sample_dir: Path
) -> None:
    rates = sample_dir / "rates" / "retail-usd.csv"
    assert (
        cli.refused("cards", "import", "no-card", str(rates)) == "there is no rate card 'no-card'"
    )
    missing = sample_dir / "rates" / "missing.csv"
    assert cli.refused("cards", "import", "retail-usd", str(missing)) == f"{missing}: no such file"


def test_demo_in_a_new_home(cli: Cli, home: Path) -> None:
    result = cli.ok("demo")
    text = " ".join(result.stdout.split())
    assert "round trip identical" in text
    assert "refused: customer demo-voip: column currency: cannot change from USD to EUR" in text
    assert "demo-voip" in keys(cli.json("customers", "list"), "customer_id")
    route = cli.json("routes", "list", "--customer", "demo-voip")
    assert keys(route, "card_id") == ["retail-usd"]
    assert (home / "export" / "customers.csv").is_file()
    # It ends by pointing at the next commands, on this home.
    ending = text[text.index("Next:") :]
    for command in ("customers show demo-voip", "rejects --summary", "stats --by", "report"):
        assert f"cdrflow --home {home} {command}" in ending, ending
    # A second run in the same home is fine: it holds only the demo's customers.
    assert "round trip identical" in " ".join(cli.ok("demo").stdout.split())


def test_demo_refuses_a_home_with_customers_of_its_own(cli: Cli, home: Path) -> None:
    cli.ok(
        "customers",
        "add",
        "--customer-id",
        "mine",
        "--name",
        "Mine",
        "--status",
        "active",
        "--currency",
        "USD",
    )
    message = cli.refused("demo")
    assert message == (
        f"{home} holds customers of its own (mine); "
        "run the demo with --home pointing at a new directory"
    )
    assert keys(cli.json("customers", "list"), "customer_id") == ["mine"]
