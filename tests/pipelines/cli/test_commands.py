"""The management verbs of every entity group but customers (see test_customers.py).

Each group: add (then show/list reflect it), edit (a changed field; "" clears an optional
one), list with its filters, search, delete, and refusals that name what and where.
"""

from __future__ import annotations

from typing import Any

from pipelines.catalog import Catalog
from tests.pipelines.cli.driver import Cli, keys


def only(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one row of ``rows`` with these values."""
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def assert_surrogate_add(cli: Cli, group: str, added: dict[str, Any]) -> int:
    """``add`` names the new row by the id that ``list`` and ``show`` know it by."""
    ident = added["id"]
    assert isinstance(ident, int), added
    assert cli.json(group, "show", str(ident)) == added
    assert cli.json(group, "show", f"#{ident}") == added
    assert added in cli.json(group, "list")
    return ident


def assert_deleted(cli: Cli, group: str, ident: str, singular: str) -> None:
    result = cli.ok(group, "delete", ident)
    assert f"deleted {singular} {ident}" in result.stdout
    assert cli.refused(group, "show", ident) == f"there is no {singular} {ident!r}"


# -- contacts ----------------------------------------------------------------------------------


def test_contacts(cli: Cli, sample: Catalog) -> None:
    result = cli.ok(
        "contacts",
        "add",
        "--customer-id",
        "globex",
        "--name",
        "Max Muster",
        "--email",
        "max@globex-voice.example",
        "--public-notes",
        "Ops lead",
        "--private-notes",
        "call before 10",
    )
    listed = cli.json("contacts", "list", "--customer", "globex")
    assert keys(listed, "name") == ["Lena Vogt", "Max Muster"]
    max_ = only(listed, name="Max Muster")
    assert max_["public_notes"] == "Ops lead"
    ident = str(max_["id"])
    assert f"added contact {ident}" in result.stdout
    assert cli.json("contacts", "show", ident) == max_

    edited = cli.json("contacts", "edit", ident, "--public-notes", "", "--name", "Max Mustermann")
    assert (edited["public_notes"], edited["name"]) == (None, "Max Mustermann")
    assert edited["private_notes"] == "call before 10"
    assert cli.json("contacts", "show", ident) == edited

    assert keys(cli.json("contacts", "search", "MUSTERMANN"), "id") == [max_["id"]]
    # Search looks at notes too.
    assert keys(cli.json("contacts", "search", "lumbergh"), "email") == ["it@initech.example"]
    assert keys(cli.json("contacts", "list", "--customer", "acme"), "name") == [
        "Jane Porter",
        "Raj Patel",
    ]

    assert_deleted(cli, "contacts", ident, "contact")
    assert keys(cli.json("contacts", "list", "--customer", "globex"), "name") == ["Lena Vogt"]


def test_contacts_add_returns_the_id_it_added(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "contacts",
        "add",
        "--customer-id",
        "initech",
        "--name",
        "Peter Gibbons",
        "--email",
        "peter@initech.example",
    )
    assert_surrogate_add(cli, "contacts", added)


def test_contacts_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "contacts",
        "add",
        "--customer-id",
        "acme",
        "--name",
        "Jane Again",
        "--email",
        "jane.porter@acme-telecom.example",
    )
    assert message.startswith(
        "new contact: contact customer_id=acme, email=jane.porter@acme-telecom.example repeats"
    )
    jane = only(cli.json("contacts", "list"), name="Jane Porter")
    message = cli.refused("contacts", "edit", str(jane["id"]), "--email", "jane at acme")
    assert (
        message == f"contact #{jane['id']}: column email: 'jane at acme' is not an e-mail address"
    )
    message = cli.refused(
        "contacts", "add", "--customer-id", "nobody", "--name", "X", "--email", "x@y.example"
    )
    assert message == "new contact: column customer_id: customer 'nobody' does not exist"
    assert len(cli.json("contacts", "list")) == 4


# -- auth --------------------------------------------------------------------------------------


def test_auth(cli: Cli, sample: Catalog) -> None:
    result = cli.ok(
        "auth",
        "add",
        "--customer-id",
        "globex",
        "--kind",
        "ip",
        "--value",
        "2001:DB8:0:0::/48",
        "--tech-prefix",
        "4949#",
        "--channels",
        "100",
        "--cps",
        "10",
    )
    assert "password" not in result.output  # an IP entry has none
    entry = only(cli.json("auth", "list", "--customer", "globex"), tech_prefix="4949#")
    assert entry["value"] == "2001:db8::/48"  # stored canonically
    ident = str(entry["id"])
    assert f"added auth entry {ident}" in result.stdout
    assert keys(cli.json("auth", "list", "--customer", "globex"), "value") == [
        "198.51.100.0/24",
        "2001:db8::/48",
    ]

    edited = cli.json("auth", "edit", ident, "--channels", "300", "--tech-prefix", "")
    assert (edited["channels"], edited["tech_prefix"], edited["cps"]) == (300, None, 10)
    assert cli.json("auth", "show", ident) == edited

    assert keys(cli.json("auth", "search", "2001:DB8"), "id") == [entry["id"]]
    assert keys(cli.json("auth", "search", "pbx"), "value") == ["initech-pbx1"]

    assert_deleted(cli, "auth", ident, "auth entry")
    assert keys(cli.json("auth", "list", "--customer", "globex"), "value") == ["198.51.100.0/24"]


def test_auth_add_returns_the_id_it_added(cli: Cli, sample: Catalog) -> None:
    added = cli.json("auth", "add", "--customer-id", "acme", "--kind", "ip", "--value", "10.9.8.7")
    assert_surrogate_add(cli, "auth", added)


def test_auth_refuses_a_bad_ip_address(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "auth", "add", "--customer-id", "acme", "--kind", "ip", "--value", "10.0.0.300"
    )
    assert (
        message == "new auth entry: column value: '10.0.0.300' is not an IP address or CIDR network"
    )
    entry = only(cli.json("auth", "list"), value="198.51.100.0/24")
    message = cli.refused("auth", "edit", str(entry["id"]), "--value", "198.51.100.0/33")
    assert message == (
        f"auth entry #{entry['id']}: column value: '198.51.100.0/33' "
        "is not an IP address or CIDR network"
    )
    assert len(cli.json("auth", "list")) == 6


def test_auth_refuses_a_duplicate_kind_value_and_tech_prefix(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "auth",
        "add",
        "--customer-id",
        "umbrella",
        "--kind",
        "ip",
        "--value",
        "203.0.113.0/28",
        "--tech-prefix",
        "9901#",
    )
    assert message.startswith(
        "new auth entry: auth entry kind=ip, value=203.0.113.0/28, tech_prefix=9901# repeats"
    )
    # The same network spelled another way is the same entry.
    cli.ok("auth", "add", "--customer-id", "globex", "--kind", "ip", "--value", "2001:DB8::/48")
    message = cli.refused(
        "auth", "add", "--customer-id", "acme", "--kind", "ip", "--value", "2001:db8:0:0::/48"
    )
    assert message.startswith(
        "new auth entry: auth entry kind=ip, value=2001:db8::/48, tech_prefix= repeats"
    )
    # Another tech prefix makes it another entry.
    cli.ok(
        "auth",
        "add",
        "--customer-id",
        "acme",
        "--kind",
        "ip",
        "--value",
        "2001:db8:0:0::/48",
        "--tech-prefix",
        "12#",
    )
    assert len(cli.json("auth", "list", "--customer", "acme")) == 3


def test_auth_refuses_a_password_for_an_ip_entry(cli: Cli, sample: Catalog) -> None:
    # docs/operating.md: only a kind=user entry has a password; reset-password must not give one.
    entry = only(cli.json("auth", "list"), value="198.51.100.0/24")
    message = cli.refused("auth", "reset-password", str(entry["id"]))
    assert "only a kind=user entry has a password" in message
    assert sample.password_hash("auth", str(entry["id"])) is None


# -- routes ------------------------------------------------------------------------------------


def test_routes(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "routes",
        "add",
        "--customer-id",
        "globex",
        "--card-id",
        "wholesale-eur",
        "--tech-prefix",
        "4444#",
        "--dial-string",
        "49|43",
        "--priority",
        "5",
    )
    ident = assert_surrogate_add(cli, "routes", added)
    assert (added["strip_digits"], added["dial_string"], added["priority"]) == (0, "49|43", 5)
    assert keys(cli.json("routes", "list", "--customer", "globex"), "id") == [3, ident]

    edited = cli.json(
        "routes", "edit", str(ident), "--dial-string", "", "--priority", "7", "--strip-digits", "2"
    )
    assert (edited["dial_string"], edited["priority"], edited["strip_digits"]) == (None, 7, 2)
    assert cli.json("routes", "show", str(ident)) == edited

    assert keys(cli.json("routes", "search", "4444#"), "id") == [ident]
    assert keys(cli.json("routes", "search", "WHOLESALE"), "customer_id") == [
        "globex",
        "hooli",
        "globex",
    ]
    assert_deleted(cli, "routes", str(ident), "route")
    assert keys(cli.json("routes", "list", "--customer", "globex"), "id") == [3]


def test_routes_refuse_a_card_in_another_currency(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("routes", "add", "--customer-id", "acme", "--card-id", "wholesale-eur")
    assert message == (
        "new route: column card_id: rate card 'wholesale-eur' is in EUR "
        "but customer 'acme' is in USD"
    )
    route = only(cli.json("routes", "list", "--customer", "initech"), card_id="retail-usd")
    message = cli.refused("routes", "edit", str(route["id"]), "--card-id", "cost-eurotrans")
    assert message == (
        f"route #{route['id']}: column card_id: rate card 'cost-eurotrans' is in EUR "
        "but customer 'initech' is in USD"
    )
    assert cli.json("routes", "show", str(route["id"]))["card_id"] == "retail-usd"


def test_routes_refuse_unknown_cards_and_bad_dial_strings(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("routes", "add", "--customer-id", "acme", "--card-id", "no-card")
    assert message == "new route: column card_id: rate card 'no-card' does not exist"
    message = cli.refused("routes", "edit", "1", "--dial-string", "^(44")
    assert message.startswith("route #1: column dial_string: '^(44' is not a valid regular")
    message = cli.refused("routes", "edit", "1", "--dial-string", "44|x")
    assert "'44|x' is not |-separated digit prefixes, or a regex starting with ^" in message
    assert cli.refused("routes", "delete", "99") == "there is no route '99'"


# -- cli-rules ---------------------------------------------------------------------------------


def test_cli_rules(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "cli-rules", "add", "--customer-id", "globex", "--pattern", "+49", "--action", "allow"
    )
    ident = assert_surrogate_add(cli, "cli-rules", added)
    regex = cli.json(
        "cli-rules",
        "add",
        "--customer-id",
        "globex",
        "--pattern",
        r"^\+?49[0-9]{6,}$",
        "--action",
        "deny",
    )
    assert regex["pattern"] == r"^\+?49[0-9]{6,}$"
    assert keys(cli.json("cli-rules", "list", "--customer", "globex"), "pattern") == [
        "+49",
        r"^\+?49[0-9]{6,}$",
    ]

    edited = cli.json("cli-rules", "edit", str(ident), "--action", "deny")
    assert (edited["pattern"], edited["action"]) == ("+49", "deny")
    assert cli.json("cli-rules", "show", str(ident)) == edited

    assert keys(cli.json("cli-rules", "search", "49"), "customer_id") == ["globex", "globex"]
    assert keys(cli.json("cli-rules", "search", "900"), "customer_id") == ["hooli"]
    assert_deleted(cli, "cli-rules", str(ident), "CLI rule")
    assert keys(cli.json("cli-rules", "list", "--customer", "globex"), "id") == [regex["id"]]


def test_cli_rules_refuse_a_regex_that_does_not_compile(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "cli-rules", "add", "--customer-id", "acme", "--pattern", "^[0-9](", "--action", "deny"
    )
    assert message.startswith(
        "new CLI rule: column pattern: '^[0-9](' is not a valid regular expression ("
    )
    assert len(cli.json("cli-rules", "list", "--customer", "acme")) == 3


def test_cli_rules_refusal_shows_the_pattern_verbatim(cli: Cli, sample: Catalog) -> None:
    # The message is text, not console markup: "[abc]" must not vanish from it.
    message = cli.refused("cli-rules", "edit", "1", "--pattern", "^[abc](")
    assert message.startswith("CLI rule #1: column pattern: '^[abc](' is not a valid regular")
    assert cli.json("cli-rules", "show", "1")["pattern"] == "+44"


def test_cli_rules_refuse_a_duplicate_and_a_non_pattern(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "cli-rules", "add", "--customer-id", "acme", "--pattern", "+44", "--action", "deny"
    )
    assert message.startswith("new CLI rule: CLI rule customer_id=acme, pattern=+44 repeats")
    message = cli.refused("cli-rules", "edit", "1", "--pattern", "44x")
    assert message == (
        "CLI rule #1: column pattern: '44x' is neither a number prefix nor a regex starting with ^"
    )
    message = cli.refused("cli-rules", "edit", "1", "--action", "maybe")
    assert message == "CLI rule #1: column action: 'maybe' is not one of allow, deny"


# -- payments ----------------------------------------------------------------------------------


def test_payments(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "payments",
        "add",
        "--payment-id",
        "PAY-X-1",
        "--customer-id",
        "globex",
        "--amount",
        "-12.5",
        "--status",
        "pending",
        "--at",
        "2026-11-30T10:00:00+02:00",
        "--description",
        "Refund of a test call",
    )
    assert added == {
        "payment_id": "PAY-X-1",
        "customer_id": "globex",
        "amount": "-12.5",
        "status": "pending",
        "at": "2026-11-30T08:00:00Z",
        "description": "Refund of a test call",
    }
    assert cli.json("payments", "show", "PAY-X-1") == added
    assert keys(cli.json("payments", "list", "--status", "pending"), "payment_id") == [
        "PAY-2026-0003",
        "PAY-X-1",
    ]
    assert keys(cli.json("payments", "list", "--customer", "globex"), "payment_id") == [
        "PAY-2026-0002",
        "PAY-X-1",
    ]
    both = cli.json("payments", "list", "--status", "completed", "--customer", "acme")
    assert keys(both, "payment_id") == ["PAY-2026-0001", "PAY-2026-0004"]
    assert keys(both, "amount") == ["1000", "-50"]
    assert keys(cli.json("payments", "list", "--status", "cancelled"), "payment_id") == [
        "PAY-2026-0005"
    ]

    edited = cli.json(
        "payments",
        "edit",
        "PAY-X-1",
        "--status",
        "completed",
        "--description",
        "",
        "--amount",
        "0.015",
    )
    assert (edited["status"], edited["description"], edited["amount"]) == (
        "completed",
        None,
        "0.015",
    )
    assert cli.json("payments", "show", "PAY-X-1") == edited

    assert keys(cli.json("payments", "search", "REFUND"), "payment_id") == ["PAY-2026-0004"]
    assert keys(cli.json("payments", "search", "umbrella"), "payment_id") == ["PAY-2026-0005"]

    assert_deleted(cli, "payments", "PAY-X-1", "payment")
    assert len(cli.json("payments", "list")) == 5


def test_payments_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("payments", "edit", "PAY-2026-0001", "--amount", "1.0000001")
    assert message == (
        "payment PAY-2026-0001: column amount: 1.0000001 has more than 6 decimal places"
    )
    message = cli.refused("payments", "edit", "PAY-2026-0001", "--at", "yesterday")
    assert message == "payment PAY-2026-0001: column at: 'yesterday' is not an ISO 8601 time"
    message = cli.refused(
        "payments",
        "add",
        "--payment-id",
        "PAY-Y",
        "--customer-id",
        "nobody",
        "--amount",
        "1",
        "--status",
        "completed",
        "--at",
        "2026-11-01",
    )
    assert message == "new payment: column customer_id: customer 'nobody' does not exist"
    message = cli.refused(
        "payments",
        "add",
        "--payment-id",
        "PAY-2026-0001",
        "--customer-id",
        "acme",
        "--amount",
        "1",
        "--status",
        "completed",
        "--at",
        "2026-11-01",
    )
    assert message == (
        "new payment: payment payment_id=PAY-2026-0001 repeats payment PAY-2026-0001"
    )
    assert cli.json("payments", "show", "PAY-2026-0001")["amount"] == "1000"
    message = cli.refused("payments", "list", "--status", "paid")
    assert "'paid' is not one of completed, pending, cancelled" in message


# -- packages ----------------------------------------------------------------------------------


def test_packages(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "packages",
        "add",
        "--package-id",
        "pkg-de",
        "--name",
        "Germany 50 minutes",
        "--seconds",
        "3000",
        "--prefixes",
        "49|4915",
        "--frequency",
        "monthly",
        "--retail",
        "4.99",
        "--cost",
        "2.5",
    )
    assert added == {
        "package_id": "pkg-de",
        "name": "Germany 50 minutes",
        "seconds": 3000,
        "prefixes": "49|4915",
        "frequency": "monthly",
        "retail": "4.99",
        "cost": "2.5",
        "setup_retail": None,
    }
    assert cli.json("packages", "show", "pkg-de") == added
    assert "pkg-de" in keys(cli.json("packages", "list"), "package_id")

    edited = cli.json("packages", "edit", "pkg-de", "--retail", "5.49", "--cost", "")
    assert (edited["retail"], edited["cost"], edited["seconds"]) == ("5.49", None, 3000)
    assert cli.json("packages", "show", "pkg-de") == edited

    assert keys(cli.json("packages", "search", "germany"), "package_id") == ["pkg-de"]
    assert keys(cli.json("packages", "search", "4915"), "package_id") == ["pkg-de"]
    assert keys(cli.json("packages", "search", "minutes"), "package_id") == [
        "pkg-all-weekly",
        "pkg-de",
        "pkg-uk-mob-1000",
        "pkg-us-daily-60",
        "pkg-welcome",
    ]

    assert_deleted(cli, "packages", "pkg-de", "package")
    assert "pkg-de" not in keys(cli.json("packages", "list"), "package_id")


def test_packages_refusals(cli: Cli, sample: Catalog) -> None:
    assigned = only(cli.json("customer-packages", "list"), package_id="pkg-welcome")
    message = cli.refused("packages", "delete", "pkg-welcome")
    assert message == (
        f"package pkg-welcome: is still used by 1 customer_packages "
        f"(customer package #{assigned['id']}); change or delete them first"
    )
    assert cli.json("packages", "show", "pkg-welcome")["package_id"] == "pkg-welcome"
    message = cli.refused("packages", "edit", "pkg-welcome", "--frequency", "yearly")
    assert message == (
        "package pkg-welcome: column frequency: 'yearly' is not one of daily, weekly, monthly, once"
    )
    message = cli.refused("packages", "edit", "pkg-welcome", "--seconds", "0")
    assert message == "package pkg-welcome: column seconds: 0 is outside 1..2147483647"


# -- customer-packages -------------------------------------------------------------------------


def test_customer_packages(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "customer-packages",
        "add",
        "--customer-id",
        "globex",
        "--package-id",
        "pkg-all-weekly",
        "--quantity",
        "3",
        "--auto-decrement",
        "yes",
        "--start-date",
        "2026-12-01",
        "--end-date",
        "2027-01-31",
    )
    ident = assert_surrogate_add(cli, "customer-packages", added)
    assert (added["quantity"], added["auto_decrement"], added["end_date"]) == (
        3,
        True,
        "2027-01-31",
    )
    assert keys(cli.json("customer-packages", "list", "--customer", "globex"), "id") == [ident]
    assert keys(cli.json("customer-packages", "list", "--customer", "acme"), "package_id") == [
        "pkg-uk-mob-1000",
        "pkg-us-daily-60",
    ]

    edited = cli.json("customer-packages", "edit", str(ident), "--quantity", "5", "--end-date", "")
    assert (edited["quantity"], edited["end_date"], edited["start_date"]) == (5, None, "2026-12-01")
    assert cli.json("customer-packages", "show", str(ident)) == edited

    assert keys(cli.json("customer-packages", "search", "pkg-all"), "customer_id") == [
        "initech",
        "globex",
    ]
    assert_deleted(cli, "customer-packages", str(ident), "customer package")
    assert cli.json("customer-packages", "list", "--customer", "globex") == []


def test_customer_packages_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "customer-packages",
        "add",
        "--customer-id",
        "globex",
        "--package-id",
        "pkg-welcome",
        "--start-date",
        "2026-05-01",
        "--end-date",
        "2026-04-30",
    )
    assert message == (
        "new customer package: column end_date: 2026-04-30 must be on or after "
        "start_date 2026-05-01"
    )
    message = cli.refused(
        "customer-packages",
        "add",
        "--customer-id",
        "globex",
        "--package-id",
        "pkg-none",
        "--start-date",
        "2026-05-01",
    )
    assert message == "new customer package: column package_id: package 'pkg-none' does not exist"
    message = cli.refused("customer-packages", "edit", "1", "--start-date", "2026-13-01")
    assert (
        message == "customer package #1: column start_date: '2026-13-01' is not a date (YYYY-MM-DD)"
    )
    assert cli.json("customer-packages", "list", "--customer", "globex") == []


# -- dids --------------------------------------------------------------------------------------


def test_dids(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "dids",
        "add",
        "--number",
        "12125550177",
        "--customer-id",
        "initech",
        "--customer-card-id",
        "did-in-usd",
        "--provider-id",
        "tier1",
        "--provider-card-id",
        "cost-tier1",
        "--monthly-retail",
        "2.5",
        "--monthly-cost",
        "1.25",
        "--start-date",
        "2026-11-10",
    )
    assert added == {
        "number": "12125550177",
        "customer_id": "initech",
        "customer_card_id": "did-in-usd",
        "provider_id": "tier1",
        "provider_card_id": "cost-tier1",
        "monthly_retail": "2.5",
        "monthly_cost": "1.25",
        "start_date": "2026-11-10",
        "end_date": None,
    }
    assert cli.json("dids", "show", "12125550177") == added
    assert keys(cli.json("dids", "list", "--customer", "initech"), "number") == [
        "12125550177",
        "18005550199",
    ]

    edited = cli.json(
        "dids",
        "edit",
        "12125550177",
        "--monthly-retail",
        "3",
        "--provider-id",
        "",
        "--provider-card-id",
        "",
        "--monthly-cost",
        "",
    )
    assert (edited["monthly_retail"], edited["provider_id"], edited["provider_card_id"]) == (
        "3",
        None,
        None,
    )
    assert edited["monthly_cost"] is None
    assert cli.json("dids", "show", "12125550177") == edited

    assert keys(cli.json("dids", "search", "1212555"), "number") == [
        "12125550100",
        "12125550101",
        "12125550177",
    ]
    assert_deleted(cli, "dids", "12125550177", "DID")
    assert keys(cli.json("dids", "list", "--customer", "initech"), "number") == ["18005550199"]


def test_dids_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "dids",
        "add",
        "--number",
        "4930123",
        "--customer-id",
        "globex",
        "--customer-card-id",
        "did-in-usd",
    )
    assert message == (
        "new DID: column customer_card_id: rate card 'did-in-usd' is in USD "
        "but customer 'globex' is in EUR"
    )
    message = cli.refused("dids", "edit", "12125550100", "--provider-id", "eurotrans")
    assert message == (
        "DID 12125550100: column provider_card_id: rate card 'cost-tier1' is in USD "
        "but provider 'eurotrans' is in EUR"
    )
    message = cli.refused("dids", "edit", "12125550100", "--monthly-retail", "-1")
    assert message == "DID 12125550100: column monthly_retail: -1 is negative"
    assert cli.json("dids", "show", "12125550100")["provider_id"] == "tier1"


# -- alerts ------------------------------------------------------------------------------------


def test_alerts(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "alerts",
        "add",
        "--alert-id",
        "globex-low",
        "--customer-id",
        "globex",
        "--name",
        "Balance below -25.50",
        "--area",
        "balance",
        "--operator",
        "<",
        "--threshold",
        "-25.5",
        "--recipient",
        "ops@globex-voice.example",
    )
    assert added == {
        "alert_id": "globex-low",
        "customer_id": "globex",
        "name": "Balance below -25.50",
        "area": "balance",
        "operator": "<",
        "threshold": "-25.5",
        "recipient": "ops@globex-voice.example",
    }
    assert cli.json("alerts", "show", "globex-low") == added
    assert keys(cli.json("alerts", "list", "--customer", "globex"), "alert_id") == [
        "globex-channels",
        "globex-low",
    ]

    edited = cli.json("alerts", "edit", "globex-low", "--threshold", "0.015", "--operator", "<=")
    assert (edited["threshold"], edited["operator"]) == ("0.015", "<=")
    assert cli.json("alerts", "show", "globex-low") == edited

    assert keys(cli.json("alerts", "search", "NOC@"), "alert_id") == [
        "acme-asr",
        "acme-low-balance",
    ]
    assert keys(cli.json("alerts", "search", "pdd"), "alert_id") == ["initech-pdd"]
    assert_deleted(cli, "alerts", "globex-low", "alert")
    assert keys(cli.json("alerts", "list", "--customer", "globex"), "alert_id") == [
        "globex-channels"
    ]


def test_alerts_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "alerts",
        "add",
        "--alert-id",
        "acme-asr",
        "--customer-id",
        "acme",
        "--name",
        "Again",
        "--area",
        "asr",
        "--operator",
        "<",
        "--threshold",
        "20",
        "--recipient",
        "a@b.example",
    )
    assert message == "new alert: alert alert_id=acme-asr repeats alert acme-asr"
    message = cli.refused("alerts", "edit", "acme-asr", "--operator", "=")
    assert message == "alert acme-asr: column operator: '=' is not one of <, <=, >, >="
    message = cli.refused("alerts", "edit", "acme-asr", "--recipient", "noc")
    assert message == (
        "alert acme-asr: column recipient: 'noc' is not an e-mail address or an http(s):// URL"
    )
    message = cli.refused("alerts", "edit", "acme-asr", "--recipient", "https://")
    assert (
        message
        == "alert acme-asr: column recipient: 'https://' is not an http(s):// URL with a host"
    )
    hook = cli.json(
        "alerts", "edit", "acme-asr", "--recipient", "https://noc.acme.example/hook?t=1"
    )
    assert hook["recipient"] == "https://noc.acme.example/hook?t=1"
    assert cli.json("alerts", "show", "acme-asr")["name"] == "ASR under 35%"


# -- providers ---------------------------------------------------------------------------------


def test_providers(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "providers",
        "add",
        "--provider-id",
        "nordic",
        "--name",
        "Nordic Carrier AB",
        "--currency",
        "SEK",
    )
    assert added == {"provider_id": "nordic", "name": "Nordic Carrier AB", "currency": "SEK"}
    assert cli.json("providers", "show", "nordic") == added
    assert keys(cli.json("providers", "list"), "provider_id") == [
        "eurotrans",
        "mobnet",
        "nordic",
        "tier1",
    ]
    edited = cli.json("providers", "edit", "nordic", "--name", "Nordic Carrier Group")
    assert edited == {**added, "name": "Nordic Carrier Group"}
    assert cli.json("providers", "show", "nordic") == edited

    assert keys(cli.json("providers", "search", "CARRIER"), "provider_id") == ["nordic", "tier1"]
    assert_deleted(cli, "providers", "nordic", "provider")
    # An unused provider of the sample goes too.
    cli.ok("providers", "delete", "mobnet")
    assert keys(cli.json("providers", "list"), "provider_id") == ["eurotrans", "tier1"]


def test_providers_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("providers", "delete", "eurotrans")
    assert message == (
        "provider eurotrans: is still used by 1 contracts (contract CTR-GLOBEX-2026); "
        "change or delete them first"
    )
    lines = cli.refused_lines("providers", "delete", "tier1")
    assert any("is still used by 3 dids (DID 12125550100" in x for x in lines), lines
    assert any("is still used by 1 contracts (contract CTR-UMB-DRAFT)" in x for x in lines), lines
    message = cli.refused("providers", "edit", "mobnet", "--currency", "XYZ")
    assert message == (
        "provider mobnet: column currency: 'XYZ' is not an ISO 4217 currency code (e.g. USD, EUR)"
    )
    assert keys(cli.json("providers", "list"), "provider_id") == ["eurotrans", "mobnet", "tier1"]


# -- contracts ---------------------------------------------------------------------------------


def test_contracts(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "contracts",
        "add",
        "--contract-id",
        "CTR-NEW",
        "--customer-id",
        "globex",
        "--provider-id",
        "eurotrans",
        "--name",
        "Globex 2027 renewal",
        "--start-date",
        "2026-12-01",
        "--end-date",
        "2027-11-30",
        "--status",
        "draft",
    )
    assert added == {
        "contract_id": "CTR-NEW",
        "customer_id": "globex",
        "provider_id": "eurotrans",
        "name": "Globex 2027 renewal",
        "start_date": "2026-12-01",
        "end_date": "2027-11-30",
        "status": "draft",
    }
    assert cli.json("contracts", "show", "CTR-NEW") == added
    assert keys(cli.json("contracts", "list", "--status", "draft"), "contract_id") == [
        "CTR-NEW",
        "CTR-UMB-DRAFT",
    ]
    assert keys(cli.json("contracts", "list", "--status", "expired"), "contract_id") == [
        "CTR-INITECH-2025"
    ]
    assert keys(cli.json("contracts", "list", "--customer", "globex"), "contract_id") == [
        "CTR-GLOBEX-2026",
        "CTR-NEW",
    ]
    signed_globex = cli.json("contracts", "list", "--status", "signed", "--customer", "globex")
    assert keys(signed_globex, "contract_id") == ["CTR-GLOBEX-2026"]

    edited = cli.json(
        "contracts",
        "edit",
        "CTR-NEW",
        "--status",
        "signed",
        "--end-date",
        "",
        "--provider-id",
        "",
    )
    assert (edited["status"], edited["end_date"], edited["provider_id"]) == ("signed", None, None)
    assert cli.json("contracts", "show", "CTR-NEW") == edited

    assert keys(cli.json("contracts", "search", "renewal"), "contract_id") == ["CTR-NEW"]
    assert keys(cli.json("contracts", "search", "eurotrans"), "contract_id") == ["CTR-GLOBEX-2026"]
    assert_deleted(cli, "contracts", "CTR-NEW", "contract")
    assert len(cli.json("contracts", "list")) == 4


def test_contracts_refusals(cli: Cli, sample: Catalog) -> None:
    message = cli.refused("contracts", "edit", "CTR-ACME-2026", "--end-date", "2025-12-31")
    assert message == (
        "contract CTR-ACME-2026: column end_date: 2025-12-31 must be on or after "
        "start_date 2026-01-01"
    )
    message = cli.refused("contracts", "edit", "CTR-ACME-2026", "--provider-id", "nobody")
    assert message == "contract CTR-ACME-2026: column provider_id: provider 'nobody' does not exist"
    message = cli.refused("contracts", "edit", "CTR-ACME-2026", "--status", "void")
    assert message == (
        "contract CTR-ACME-2026: column status: 'void' is not one of draft, signed, expired"
    )
    assert cli.json("contracts", "show", "CTR-ACME-2026")["end_date"] == "2027-12-31"


# -- cards -------------------------------------------------------------------------------------


def test_cards(cli: Cli, sample: Catalog) -> None:
    added = cli.json(
        "cards",
        "add",
        "--card-id",
        "retail-gbp",
        "--name",
        "Retail termination GBP",
        "--currency",
        "GBP",
        "--direction",
        "termination",
        "--precision",
        "5",
        "--rounding",
        "up",
    )
    assert added == {
        "card_id": "retail-gbp",
        "name": "Retail termination GBP",
        "currency": "GBP",
        "direction": "termination",
        "precision": 5,
        "rounding": "up",
        "duration_rounding": "up",
    }
    assert cli.json("cards", "show", "retail-gbp") == added
    assert "retail-gbp" in keys(cli.json("cards", "list"), "card_id")

    edited = cli.json("cards", "edit", "retail-gbp", "--name", "Retail GBP", "--precision", "")
    assert (edited["name"], edited["precision"]) == ("Retail GBP", 4)  # "" gives the default
    assert cli.json("cards", "show", "retail-gbp") == edited

    assert keys(cli.json("cards", "search", "BUY RATES"), "card_id") == [
        "cost-eurotrans",
        "cost-mobnet",
        "cost-tier1",
    ]
    assert_deleted(cli, "cards", "retail-gbp", "rate card")

    # An unused card of the sample goes with its rate rows.
    assert cli.json("cards", "rates", "cost-mobnet")
    cli.ok("cards", "delete", "cost-mobnet")
    assert cli.refused("cards", "rates", "cost-mobnet") == "there is no rate card 'cost-mobnet'"
    assert "cost-mobnet" not in keys(cli.json("cards", "list"), "card_id")


def test_cards_delete_of_a_card_in_use_lists_the_routes(cli: Cli, sample: Catalog) -> None:
    users = [r for r in cli.json("routes", "list") if r["card_id"] == "retail-usd"]
    assert len(users) == 3
    message = cli.refused("cards", "delete", "retail-usd")
    named = ", ".join(f"route #{r['id']}" for r in users)
    assert message == (
        f"rate card retail-usd: is still used by 3 routes ({named}); change or delete them first"
    )
    assert cli.json("cards", "show", "retail-usd")["card_id"] == "retail-usd"
    assert cli.json("cards", "rates", "retail-usd")


def test_cards_refusals(cli: Cli, sample: Catalog) -> None:
    route = only(cli.json("routes", "list"), card_id="premium-usd")
    message = cli.refused("cards", "edit", "premium-usd", "--currency", "EUR")
    assert message == (
        f"route #{route['id']}: column card_id: rate card 'premium-usd' is in EUR "
        "but customer 'acme' is in USD"
    )
    message = cli.refused("cards", "edit", "premium-usd", "--precision", "7")
    assert message == "rate card premium-usd: column precision: 7 is outside 0..6"
    message = cli.refused(
        "cards",
        "add",
        "--card-id",
        "premium-usd",
        "--name",
        "X",
        "--currency",
        "USD",
        "--direction",
        "termination",
    )
    assert message == "new rate card: rate card card_id=premium-usd repeats rate card premium-usd"
    assert cli.json("cards", "show", "premium-usd")["currency"] == "USD"
