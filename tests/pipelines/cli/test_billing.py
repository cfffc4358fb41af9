"""``cdrflow balance`` and ``cdrflow invoices build|list|show`` (SPEC §7.5)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from pipelines.catalog import Catalog
from pipelines.ledger import balances_at
from tests.pipelines.billed import NOW
from tests.pipelines.cli.driver import Cli, describe, keys, narrow, shown

BALANCE = ["customer_id", "currency", "payments", "usage", "fees", "balance", "debit_limit",
           "available"]  # fmt: skip
DOCUMENT = ["number", "kind", "refers_to", "customer_id", "month", "currency", "usage", "fees",
            "subtotal", "tax", "total", "payments", "balance_due", "issued_at"]  # fmt: skip
LINE = ["kind", "description", "calls", "minutes", "amount"]
MONEY = ["usage", "fees", "subtotal", "tax", "total", "payments", "balance_due"]


@pytest.fixture
def home(billed_home: Path) -> Path:
    return billed_home


@pytest.fixture(autouse=True)
def now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDRFLOW_NOW", NOW.isoformat())


def strict_json(cli: Cli, *args: str) -> Any:
    """The command's JSON, failing on any number with a fraction (money must be text)."""
    result = cli.ok(*args, "--format", "json")
    return json.loads(result.stdout, parse_float=lambda t: pytest.fail(f"a float: {t}"))


def money(value: Any) -> Decimal:
    assert isinstance(value, str), value
    return Decimal(value)


def test_balance_columns_and_exact_money(cli: Cli, home: Path) -> None:
    rows = strict_json(cli, "balance", "--at", "2026-11-03")
    assert keys(rows, "customer_id") == ["acme", "globex", "hooli", "initech", "umbrella"]
    assert all(list(r) == BALANCE for r in rows)
    acme = rows[0]
    assert (acme["currency"], acme["payments"], acme["fees"]) == ("USD", "950.00", "462.60")
    assert money(acme["available"]) == money(acme["balance"]) + money(acme["debit_limit"])
    with Catalog(home) as catalog:
        [expected] = balances_at(home, catalog, None, NOW, "acme")
    [now] = strict_json(cli, "balance", "--customer", "acme")
    assert money(now["usage"]) == expected.usage and money(now["fees"]) == expected.fees
    as_csv = cli.csv("balance", "--at", "2026-11-03")
    assert [list(r) for r in as_csv[:1]] == [BALANCE]
    assert as_csv == [{k: v for k, v in r.items()} for r in rows]


def test_balance_at_a_date_alone_is_midnight_utc(cli: Cli, home: Path) -> None:
    day = strict_json(cli, "balance", "--at", "2026-11-02")
    assert day == strict_json(cli, "balance", "--at", "2026-11-02T00:00:00Z")
    assert day == strict_json(cli, "balance", "--at", "2026-11-02T01:00:00+01:00")
    # The workload's calls start at midnight of 2 November, the refund of 50 is at 08:00.
    assert {r["usage"] for r in day} == {"0.00"} and day[0]["payments"] == "1000.00"
    later = strict_json(cli, "balance", "--at", "2026-11-02T03:00:00Z")
    assert money(later[0]["usage"]) > 0 and later[0]["fees"] == day[0]["fees"]


def test_balance_refusals_are_one_line(cli: Cli, home: Path, monkeypatch: Any) -> None:
    assert "there is no customer 'nobody'" in cli.refused("balance", "--customer", "nobody")
    assert "--at: 'yesterday' is not an ISO 8601 time" in cli.refused(
        "balance", "--at", "yesterday"
    )
    monkeypatch.setenv("CDRFLOW_NOW", "soon")
    assert cli.refused("balance").startswith("$CDRFLOW_NOW: 'soon' is not an ISO 8601 time")


def test_build_list_and_show(cli: Cli, home: Path) -> None:
    issued = strict_json(cli, "invoices", "build", "--month", "2026-11")
    assert keys(issued, "number") == [f"INV-2027-{n:06d}" for n in range(1, 6)]
    assert all(list(r) == DOCUMENT for r in issued)
    acme = issued[0]
    assert (acme["kind"], acme["refers_to"], acme["month"]) == ("invoice", None, "2026-11")
    assert (acme["fees"], acme["payments"], acme["issued_at"]) == (
        "40.50", "-50.00", "2027-01-15T09:30:00Z",
    )  # fmt: skip
    for name in MONEY:
        money(acme[name])
    assert (home / "invoices" / "INV-2027-000001.pdf").is_file()

    again = cli.ok("invoices", "build", "--month", "2026-11", "--format", "json")
    assert json.loads(again.stdout) == []
    assert "nothing to issue for 2026-11" in again.stderr

    assert strict_json(cli, "invoices", "list") == issued
    assert keys(strict_json(cli, "invoices", "list", "--customer", "globex"), "number") == [
        "INV-2027-000002"
    ]
    assert strict_json(cli, "invoices", "list", "--month", "2026-12") == []
    assert cli.csv("invoices", "list")[0] == {
        k: "" if v is None else v for k, v in issued[0].items()
    }

    shown = strict_json(cli, "invoices", "show", "INV-2027-000001")
    assert {k: v for k, v in shown.items() if k != "lines"} == acme
    assert all(list(line) == LINE for line in shown["lines"])
    calls = [line for line in shown["lines"] if line["kind"] == "calls"]
    fees = [line for line in shown["lines"] if line["kind"] != "calls"]
    assert {line["kind"] for line in fees} == {"package", "did"}
    assert all(line["calls"] is None and line["minutes"] is None for line in fees)
    assert all(isinstance(line["calls"], int) for line in calls)
    assert sum(money(line["amount"]) for line in calls) == money(acme["usage"])
    assert sum(money(line["amount"]) for line in fees) == money(acme["fees"])
    assert cli.csv("invoices", "show", "INV-2027-000001") == [
        {k: "" if v is None else str(v) for k, v in line.items()} for line in shown["lines"]
    ]
    table = cli.ok("invoices", "show", "INV-2027-000001").stdout
    assert "INV-2027-000001" in table and "France Mobile" in table


def test_a_changed_did_fee_is_a_debit_note(cli: Cli, home: Path) -> None:
    cli.ok("invoices", "build", "--month", "2026-11")
    cli.ok("dids", "edit", "12125550101", "--monthly-retail", "3")
    [note] = strict_json(cli, "invoices", "build", "--month", "2026-11", "--customer", "acme")
    assert (note["number"], note["kind"], note["refers_to"]) == (
        "DN-2027-000006", "debit_note", "INV-2027-000001",
    )  # fmt: skip
    assert [note[name] for name in MONEY] == [
        "0.00", "1.50", "1.50", "0.30", "1.80", "0.00", "1.80",
    ]  # fmt: skip
    [line] = strict_json(cli, "invoices", "show", "DN-2027-000006")["lines"]
    assert line == {
        "kind": "did",
        "description": "DID 12125550101, 2026-11",
        "calls": None,
        "minutes": None,
        "amount": "1.50",
    }


def test_invoices_refusals_are_one_line(cli: Cli, home: Path) -> None:
    message = cli.refused("invoices", "build", "--month", "2027-01")
    assert message.startswith("--month 2027-01 has not ended (now is 2027-01-15T09:30:00+00:00)")
    assert "is not a month (use YYYY-MM" in cli.refused("invoices", "build", "--month", "2026-13")
    assert "is not a month" in cli.refused("invoices", "list", "--month", "november")
    assert "there is no invoice or note 'INV-1'" in cli.refused("invoices", "show", "INV-1")
    result = cli.run("invoices", "build")
    assert result.exit_code == 2, describe(result)  # --month is required (typer's usage error)


def test_balances_and_documents_fit_80_columns(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The balance and the available credit of each customer, the number, customer, month
    and total of each document, whole; the rest named, shown by --wide."""
    narrow(monkeypatch, 80)
    cli.ok("invoices", "build", "--month", "2026-11")
    for args, key, everything in (
        (("balance",), ["customer_id", "currency", "balance", "available"], BALANCE),
        (("invoices", "list"), ["number", "kind", "customer_id", "month", "total"], DOCUMENT),
    ):
        table = shown(cli.ok(*args).stdout)
        assert set(key) <= set(table.headers) and table.header_lines == 1, table.lines
        assert table.hidden and table.headers == [c for c in everything if c not in table.hidden]
        assert len(table.rows) == len(cli.json(*args))
        assert all(cell_len(line) <= 80 for line in table.lines if "hidden (" not in line)
        wide = shown(cli.ok(*args, "--wide").stdout)
        assert (wide.headers, wide.hidden) == (everything, [])
