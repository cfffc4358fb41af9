"""`cdrflow customers …`: the customer card, its filters, and the rules of deleting one."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.catalog import Catalog
from tests.pipelines.cli.driver import Cli, keys

NEW = (
    "customers",
    "add",
    "--customer-id",
    "newco",
    "--name",
    "New Co Ltd",
    "--status",
    "pending",
    "--currency",
    "GBP",
)


def write_rated_cdrs(home: Path, customers: list[str]) -> Path:
    """A rated-CDR Parquet file in the lake, one row per entry of ``customers``."""
    part = home / "lake" / "rated" / "date=2026-11-01"
    part.mkdir(parents=True)
    path = part / "part.parquet"
    table = pa.table(
        {
            "customer_id": customers,
            "charge": pa.array(["0.01"] * len(customers)),
        }
    )
    pq.write_table(table, path)
    return path


def test_add_shows_the_stored_row_and_show_and_list_reflect_it(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        *NEW,
        "--tax-percent",
        "8.25",
        "--debit-limit",
        "0.015",
        "--portal-access",
        "yes",
        "--website",
        "https://newco.example",
        "--channels",
        "40",
    )
    assert added == {
        "customer_id": "newco",
        "name": "New Co Ltd",
        "status": "pending",
        "currency": "GBP",
        "tax_percent": "8.25",
        "debit_limit": "0.015",
        "minimum_payment": None,
        "portal_access": True,
        "paypal_email": None,
        "website": "https://newco.example",
        "address": None,
        "channels": 40,
        "cps": None,
    }
    assert cli.json("customers", "show", "newco")["customer"] == added
    listed = cli.json("customers", "list")
    assert "newco" in keys(listed, "customer_id")
    assert next(r for r in listed if r["customer_id"] == "newco") == added


def test_add_in_table_format_names_the_customer(cli: Cli) -> None:
    result = cli.ok(*NEW)
    assert "added customer newco" in result.stdout
    assert "New Co Ltd" in result.stdout
    shown = cli.json("customers", "show", "newco")["customer"]
    assert (shown["tax_percent"], shown["debit_limit"], shown["portal_access"]) == ("0", "0", False)


def test_edit_changes_a_field_and_an_empty_value_clears_an_optional_one(
    cli: Cli, sample: Catalog
) -> None:
    result = cli.ok("customers", "edit", "acme", "--tax-percent", "17.5", "--website", "")
    assert "changed customer acme: tax_percent, website" in result.stdout
    shown = cli.json("customers", "show", "acme")["customer"]
    assert shown["tax_percent"] == "17.5"
    assert shown["website"] is None
    assert shown["name"] == "Acme Telecom Ltd"  # untouched
    assert shown["paypal_email"] == "billing@acme-telecom.example"
    edited = cli.json("customers", "edit", "acme", "--minimum-payment", "", "--status", "penalty")
    assert (edited["minimum_payment"], edited["status"]) == (None, "penalty")
    assert cli.json("customers", "show", "acme")["customer"] == edited


def test_edit_cannot_clear_a_required_field(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("customers", "edit", "acme", "--name", "")
    assert message == "customer acme: column name: is required"
    assert cli.json("customers", "show", "acme")["customer"]["name"] == "Acme Telecom Ltd"


def test_list_filters_by_status(cli: Cli, sample: Catalog) -> None:
    assert keys(cli.json("customers", "list"), "customer_id") == [
        "acme",
        "globex",
        "hooli",
        "initech",
        "umbrella",
    ]
    active = cli.json("customers", "list", "--status", "active")
    assert keys(active, "customer_id") == ["acme", "globex", "initech"]
    assert keys(cli.json("customers", "list", "--status", "pending"), "customer_id") == ["umbrella"]
    assert keys(cli.json("customers", "list", "--status", "penalty"), "customer_id") == ["hooli"]
    assert cli.json("customers", "list", "--status", "inactive") == []


def test_list_refuses_a_status_that_does_not_exist(cli: Cli, sample: Catalog) -> None:
    # A typo must not look like "no customers".
    message = cli.refused("customers", "list", "--status", "actve")
    assert "'actve' is not one of active, inactive, pending, penalty" in message


def test_list_as_csv_parses_with_the_csv_module(cli: Cli, sample: Catalog) -> None:
    rows = cli.csv("customers", "list", "--status", "active")
    assert [r["customer_id"] for r in rows] == ["acme", "globex", "initech"]
    acme = rows[0]
    assert acme["address"] == "12 Harbour Road, Bristol BS1 5TT, UK"  # a quoted comma
    assert (acme["tax_percent"], acme["debit_limit"], acme["portal_access"]) == ("20", "500", "yes")
    assert rows[2]["paypal_email"] == ""


def test_search_finds_text_in_any_search_column_in_any_case(cli: Cli, sample: Catalog) -> None:
    assert keys(cli.json("customers", "search", "HAMBURG"), "customer_id") == ["globex"]
    assert keys(cli.json("customers", "search", "example"), "customer_id") == ["acme", "globex"]
    assert keys(cli.json("customers", "search", "Wholesale"), "customer_id") == ["umbrella"]
    assert cli.json("customers", "search", "no such text") == []
    assert "acme" in cli.ok("customers", "search", "acme").stdout


def test_search_takes_percent_and_underscore_literally(cli: Cli, sample: Catalog) -> None:
    # "contain TEXT": SQL LIKE wildcards in the text must not match everything.
    assert cli.json("customers", "search", "%") == []
    assert cli.json("customers", "search", "_") == []


def test_show_of_an_unknown_customer_is_refused(cli: Cli, sample: Catalog) -> None:
    assert cli.refused("customers", "show", "nobody") == "there is no customer 'nobody'"


def test_delete_removes_the_customer_and_what_it_owns(cli: Cli, sample: Catalog) -> None:
    # hooli has a route, a SIP user and a CLI rule, but no payments.
    for group in ("routes", "auth", "cli-rules"):
        assert cli.json(group, "list", "--customer", "hooli"), group
    others = {g: len(cli.json(g, "list")) for g in ("routes", "auth", "cli-rules")}
    result = cli.ok("customers", "delete", "hooli")
    assert "deleted customer hooli" in result.stdout
    assert "hooli" not in keys(cli.json("customers", "list"), "customer_id")
    assert cli.refused("customers", "show", "hooli") == "there is no customer 'hooli'"
    for group in ("routes", "auth", "cli-rules"):
        assert cli.json(group, "list", "--customer", "hooli") == [], group
        assert len(cli.json(group, "list")) == others[group] - 1, group


def test_delete_of_a_new_customer_without_history(cli: Cli, sample: Catalog) -> None:
    cli.ok(*NEW)
    cli.ok("customers", "delete", "newco")
    assert "newco" not in keys(cli.json("customers", "list"), "customer_id")


def test_delete_of_a_customer_with_payments_needs_force(cli: Cli, sample: Catalog) -> None:
    version = sample.version()
    message = cli.refused("customers", "delete", "acme")
    assert message == ("customer acme: has 2 payments; delete it with --force to remove it anyway")
    assert sample.version() == version
    assert cli.json("customers", "show", "acme")["customer"]["customer_id"] == "acme"
    assert len(cli.json("payments", "list", "--customer", "acme")) == 2

    cli.ok("customers", "delete", "acme", "--force")
    assert "acme" not in keys(cli.json("customers", "list"), "customer_id")
    assert cli.json("payments", "list", "--customer", "acme") == []
    assert cli.json("routes", "list", "--customer", "acme") == []
    assert cli.json("contracts", "list", "--customer", "acme") == []
    assert cli.json("dids", "list", "--customer", "acme") == []
    # Other customers' payments stay.
    assert keys(cli.json("payments", "list"), "payment_id") == [
        "PAY-2026-0002",
        "PAY-2026-0003",
        "PAY-2026-0005",
    ]


def test_delete_of_a_customer_with_rated_cdrs_in_the_lake_needs_force(
    cli: Cli, sample: Catalog, home: Path
) -> None:
    lake_file = write_rated_cdrs(home, ["hooli", "hooli", "hooli", "globex"])
    message = cli.refused("customers", "delete", "hooli")
    assert message == (
        "customer hooli: has 3 rated CDRs in the lake; delete it with --force to remove it anyway"
    )
    # (The card's CSV is the customer's own row: it does not read this stand-in lake file.)
    assert cli.csv("customers", "show", "hooli")[0]["customer_id"] == "hooli"
    cli.ok("customers", "delete", "hooli", "--force")
    assert "hooli" not in keys(cli.json("customers", "list"), "customer_id")
    # Its rated CDRs stay in the lake as history.
    assert pq.read_table(lake_file).column("customer_id").to_pylist().count("hooli") == 3


def test_delete_names_both_kinds_of_history(cli: Cli, sample: Catalog, home: Path) -> None:
    write_rated_cdrs(home, ["initech", "initech"])
    message = cli.refused("customers", "delete", "initech")
    assert message == (
        "customer initech: has 2 rated CDRs in the lake and 1 payments; "
        "delete it with --force to remove it anyway"
    )


def test_add_with_an_unknown_currency_is_one_specific_line(cli: Cli, sample: Catalog) -> None:
    version = sample.version()
    message = cli.refused(*NEW[:-1], "EURO")
    assert message == (
        "new customer: column currency: 'EURO' is not an ISO 4217 currency code (e.g. USD, EUR)"
    )
    assert sample.version() == version
    assert "newco" not in keys(cli.json("customers", "list"), "customer_id")


def test_currency_cannot_change_once_the_customer_exists(cli: Cli, sample: Catalog) -> None:
    cli.ok(*NEW)
    message = cli.refused("customers", "edit", "newco", "--currency", "EUR")
    assert message == (
        "customer newco: column currency: cannot change from GBP to EUR once the customer exists"
    )
    assert cli.json("customers", "show", "newco")["customer"]["currency"] == "GBP"
    # Naming the same currency again is no change and is accepted.
    assert cli.json("customers", "edit", "newco", "--currency", "GBP")["currency"] == "GBP"


def test_currency_change_of_a_customer_with_routes_names_every_problem(
    cli: Cli, sample: Catalog
) -> None:
    lines = cli.refused_lines("customers", "edit", "acme", "--currency", "EUR")
    assert (
        "customer acme: column currency: cannot change from USD to EUR once the customer exists"
    ) in lines
    assert any("rate card 'retail-usd' is in USD but customer 'acme' is in EUR" in x for x in lines)
    assert cli.json("customers", "show", "acme")["customer"]["currency"] == "USD"


def test_duplicate_customer_id_is_refused(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "customers",
        "add",
        "--customer-id",
        "acme",
        "--name",
        "Other",
        "--status",
        "active",
        "--currency",
        "USD",
    )
    assert message == "new customer: customer customer_id=acme repeats customer acme"
    assert cli.json("customers", "show", "acme")["customer"]["name"] == "Acme Telecom Ltd"


def test_a_bad_value_of_an_optional_field_is_refused_with_its_column(
    cli: Cli, sample: Catalog
) -> None:
    message = cli.refused("customers", "edit", "acme", "--tax-percent", "120")
    assert message == "customer acme: column tax_percent: 120 is more than 100"
    message = cli.refused("customers", "edit", "acme", "--debit-limit", "0.0000001")
    assert message == "customer acme: column debit_limit: 0.0000001 has more than 6 decimal places"
    message = cli.refused("customers", "edit", "acme", "--portal-access", "maybe")
    assert message == "customer acme: column portal_access: 'maybe' is not yes or no"
