"""`cdrflow customers show ID`: the customer card, checked against the catalog, the rated lake
(DuckDB over its files) and the other commands that show the same numbers."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalog import Catalog
from pipelines.cli.demo import sample_catalog
from pipelines.cli.output import jsonable
from pipelines.ledger import build_month
from pipelines.live.alerts import Firing
from pipelines.live.firings import Ledger, Settled, deliveries_root, fired_root
from pipelines.rate import rate_files
from schemas.catalog import BY_NAME
from tests.pipelines.billed import NOVEMBER, lake_query
from tests.pipelines.cli.driver import Cli, describe
from tests.pipelines.workload import records, write_jsonl

# "Now" of every card here: the workload's December traffic is on the 5th; more is rated
# on the 1st below, so that today and this month differ.
NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
TODAY = (datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))
MONTH = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
with (sample_catalog() / "customers.csv").open() as _f:
    CUSTOMERS = [r["customer_id"] for r in csv.DictReader(_f)]
# Catalog section of the card → the sample file its rows come from.
SECTIONS = {
    "contacts": "contacts",
    "auth": "auth",
    "routes": "routes",
    "cli_rules": "cli_rules",
    "dids": "dids",
    "payments": "payments",
    "alerts": "alerts",
    "contracts": "contracts",
}
# The column of each section's rows that the table shows whole (on one line).
SHOWN_KEY = {
    "contacts": "email",
    "auth": "value",
    "routes": "card_id",
    "cli_rules": "pattern",
    "dids": "number",
    "payments": "payment_id",
    "alerts": "alert_id",
    "contracts": "contract_id",
}


@pytest.fixture(scope="module")
def card_home(billed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The billing tests' home (the sample catalog; traffic on 2 November and 5 December),
    with traffic on 1 December too and November invoiced."""
    root = tmp_path_factory.mktemp("card")
    home = Path(shutil.copytree(billed_template, root / "home"))
    extra = records(300, seed=7, start=datetime(2026, 12, 1, 9, tzinfo=UTC))
    rate_files(home, [write_jsonl(root / "december-1.jsonl", extra)])
    with Catalog(home) as catalog:
        assert build_month(home, catalog, NOVEMBER, NOW), "November has documents to issue"
    return home


@pytest.fixture(autouse=True)
def now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDRFLOW_NOW", NOW.isoformat())
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def cli(card_home: Path) -> Cli:
    return Cli(card_home)


@pytest.fixture
def catalog(card_home: Path) -> Iterator[Catalog]:
    with Catalog(card_home) as store:
        yield store


def card(cli: Cli, customer: str, *more: str) -> dict[str, Any]:
    """The card as JSON."""
    result = cli.ok("customers", "show", customer, *more, "--format", "json")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def sample_rows(name: str, customer: str) -> list[dict[str, str]]:
    with (sample_catalog() / f"{name}.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["customer_id"] == customer]


def without_password_flag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "password_set"} for r in rows]


@pytest.mark.parametrize("customer", CUSTOMERS)
def test_the_card_lists_every_catalog_row_of_the_customer(
    cli: Cli, catalog: Catalog, customer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = card(cli, customer, "--latest", "100")
    assert doc["customer"] == jsonable(catalog.get("customers", customer), BY_NAME["customers"])
    for section, name in SECTIONS.items():
        stored = [jsonable(r, BY_NAME[name]) for r in catalog.list(name, customer=customer)]
        if section == "payments":  # newest first
            stored.sort(key=lambda r: (r["at"], r["payment_id"]), reverse=True)
        assert without_password_flag(doc[section]) == stored, section
        # Every row of the sample's file, none of another customer's.
        assert doc["counts"][section] == len(sample_rows(name, customer)), section
        assert {r["customer_id"] for r in doc[section]} <= {customer}
    sample_packages = sample_rows("customer_packages", customer)
    assert [(p["package_id"], p["start_date"]) for p in doc["packages"]] == sorted(
        (r["package_id"], r["start_date"]) for r in sample_packages
    )
    # The table lists each of those rows (wide enough that nothing folds).
    monkeypatch.setenv("COLUMNS", "200")
    shown = cli.ok("customers", "show", customer, "--latest", "100").stdout
    for section, column in SHOWN_KEY.items():
        for row in doc[section]:
            assert str(row[column]) in shown, (section, row[column])
        if not doc[section]:
            title = {"routes": "ingress routes", "cli_rules": "CLI rules", "dids": "DIDs"}
            assert f"{title.get(section, section)}: none" in shown
    for p in doc["packages"]:
        assert p["package_id"] in shown


def test_the_sample_gives_every_section_rows(cli: Cli) -> None:
    """The check above covers something: across the sample, every section has rows."""
    docs = [card(cli, c) for c in CUSTOMERS]
    for section in [*SECTIONS, "packages", "calls", "invoices"]:
        assert any(d[section] for d in docs), section
    assert any(d["counts"]["payments"] > 1 for d in docs)


def test_the_json_has_each_section_with_its_counts(cli: Cli) -> None:
    result = cli.ok("customers", "show", "acme", "--format", "json")
    doc = json.loads(result.stdout, parse_float=lambda t: Decimal(t))
    assert list(doc) == [
        "customer", "as_of", "contacts", "auth", "routes", "cli_rules", "packages", "dids",
        "payments", "alerts", "alert_firings", "contracts", "traffic", "calls", "balance",
        "invoices", "counts", "problems",
    ]  # fmt: skip
    assert doc["as_of"] == "2026-12-05T20:00:00Z"
    for section, count in doc["counts"].items():
        if section in ("payments", "calls", "invoices", "alert_firings"):
            continue
        assert len(doc[section]) == count, section
    assert doc["alert_firings"] is None and doc["counts"]["alert_firings"] is None
    # Money is text everywhere.
    assert isinstance(doc["customer"]["debit_limit"], str)
    assert all(isinstance(p["amount"], str) for p in doc["payments"])
    assert all(isinstance(v, str) for k, v in doc["balance"].items())
    assert isinstance(doc["traffic"]["today"]["charge"], str)
    assert all(isinstance(c["charge"], str) for c in doc["calls"])


def test_latest_lists_are_cut_and_counted(cli: Cli) -> None:
    doc = card(cli, "acme", "--latest", "1")
    [paid] = doc["payments"]
    assert doc["counts"]["payments"] == 2 and paid["payment_id"] == "PAY-2026-0004"
    assert len(doc["calls"]) == 1 and doc["counts"]["calls"] > 100
    assert len(doc["invoices"]) == 1
    shown = cli.ok("customers", "show", "acme", "--latest", "1").stdout
    assert "payments (latest 1 of 2)" in shown
    assert f"calls (latest 1 of {doc['counts']['calls']})" in shown


def test_seconds_left_in_packages_are_the_lakes_draws(cli: Cli, card_home: Path) -> None:
    def drawn(customer: str, package: str, start: str, period: date) -> int:
        [(seconds,)] = lake_query(
            card_home,
            "SELECT coalesce(sum(d.seconds), 0) FROM (SELECT unnest(package_draws) AS d "
            "FROM rated WHERE customer_id = ?) WHERE d.package_id = ? "
            "AND d.start_date = ?::DATE AND d.period_start = ?",
            [customer, package, start, period],
        )
        return int(seconds)

    # The periods that hold Saturday 5 December 2026, by SPEC §5.3.
    expected = {
        ("acme", "pkg-uk-mob-1000"): (date(2026, 12, 1), date(2026, 12, 31), 60000 * 2),
        ("acme", "pkg-us-daily-60"): (date(2026, 12, 5), date(2026, 12, 5), 3600),
        ("initech", "pkg-all-weekly"): (date(2026, 11, 30), date(2026, 12, 6), 6000),
    }
    seen = 0
    for customer in ("acme", "initech", "umbrella"):
        for p in card(cli, customer)["packages"]:
            key = (customer, p["package_id"])
            if key not in expected:
                assert key == ("umbrella", "pkg-welcome")  # valid in November only
                assert (p["state"], p["period_start"], p["left"]) == ("ended", None, None)
                continue
            first, last, seconds = expected[key]
            used = drawn(customer, p["package_id"], p["start_date"], first)
            assert (p["state"], p["period_start"], p["period_end"]) == (
                "current",
                first.isoformat(),
                last.isoformat(),
            )
            assert (p["seconds"], p["used"], p["left"]) == (seconds, used, seconds - used)
            seen += used > 0
    assert seen >= 2, "the traffic draws on packages this period"


def lake_traffic(home: Path, customer: str, span: tuple[datetime, datetime]) -> dict[str, Any]:
    [(attempts, answered, talk, charge)] = lake_query(
        home,
        "SELECT count(*), count(*) FILTER (sip_code = 200), "
        "sum(CASE WHEN sip_code = 200 THEN duration ELSE 0 END), sum(charge) "
        "FROM rated WHERE customer_id = ? AND dt >= ? AND dt < ?",
        [customer, *span],
    )
    if not attempts:
        return {"attempts": 0, "answered": 0, "asr": None, "acd": None, "minutes": 0.0}

    def rounded(value: Decimal, places: int) -> float:  # SPEC §6 numbers, as DuckDB rounds
        return float(value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP))

    return {
        "attempts": attempts,
        "answered": answered,
        "asr": rounded(Decimal(100 * answered) / attempts, 2),
        "acd": rounded(Decimal(talk) / answered, 2) if answered else None,
        "minutes": rounded(Decimal(talk) / 60, 4),
        "charge": Decimal(charge),
    }


@pytest.mark.parametrize("customer", CUSTOMERS)
def test_traffic_today_and_this_month_are_the_lakes(
    cli: Cli, card_home: Path, customer: str
) -> None:
    doc = card(cli, customer)
    for name, span in (("today", TODAY), ("month", MONTH)):
        shown = dict(doc["traffic"][name])
        assert (shown.pop("from"), shown.pop("to")) == tuple(
            t.isoformat().replace("+00:00", "Z") for t in span
        )
        assert shown.pop("currency") == doc["customer"]["currency"]
        expected = lake_traffic(card_home, customer, span)
        charge = Decimal(shown.pop("charge"))
        assert charge == expected.pop("charge", Decimal(0)), name
        assert shown == expected, name


def test_today_and_the_month_differ_and_agree_with_stats(cli: Cli) -> None:
    doc = card(cli, "acme")
    today, month = doc["traffic"]["today"], doc["traffic"]["month"]
    assert 0 < today["attempts"] < month["attempts"]
    [stats] = cli.json(
        "stats", "--by", "customer", "-c", "acme", "--from", "2026-12-01", "--to", "2027-01-01"
    )
    assert {k: stats[k] for k in ("attempts", "answered", "asr", "acd", "minutes", "charge")} == {
        k: month[k] for k in ("attempts", "answered", "asr", "acd", "minutes", "charge")
    }


@pytest.mark.parametrize("customer", CUSTOMERS)
def test_calls_balance_and_invoices_are_those_of_their_commands(
    cli: Cli, card_home: Path, customer: str
) -> None:
    doc = card(cli, customer, "--latest", "3")
    [(count,)] = lake_query(
        card_home, "SELECT count(*) FROM rated WHERE customer_id = ?", [customer]
    )
    assert doc["counts"]["calls"] == count
    if count:
        assert doc["calls"] == cli.json("calls", "-c", customer, "-n", "3")
    else:
        assert doc["calls"] == []
    [balance] = cli.json("balance", "--customer", customer)
    assert {"customer_id": customer, **doc["balance"]} == balance
    documents = cli.json("invoices", "list", "--customer", customer)
    assert doc["invoices"] == documents[::-1][:3]
    assert doc["counts"]["invoices"] == len(documents)


def test_a_customer_without_traffic_says_so_briefly(cli: Cli, card_home: Path) -> None:
    cli.ok(
        "customers", "add", "--customer-id", "quiet", "--name", "Quiet Ltd", "--status",
        "active", "--currency", "USD",
    )  # fmt: skip
    try:
        doc = card(cli, "quiet")
        assert doc["traffic"]["today"] == {
            "from": "2026-12-05T00:00:00Z", "to": "2026-12-06T00:00:00Z", "attempts": 0,
            "answered": 0, "asr": None, "acd": None, "minutes": 0.0, "charge": "0",
            "currency": "USD",
        }  # fmt: skip
        assert doc["balance"]["balance"] == "0.00"
        shown = cli.ok("customers", "show", "quiet").stdout
        empty = ["contacts", "auth", "ingress routes", "CLI rules", "packages", "DIDs"]
        empty += ["payments", "alerts", "contracts", "calls", "invoices and notes"]
        for title in empty:
            assert f"\n{title}: none\n" in shown, title
        assert "alert firings: none (no live app keeps this home's alerts)" in shown
        assert "─" not in shown.split("traffic (UTC)")[0], "no empty tables"
    finally:
        cli.ok("customers", "delete", "quiet")


def test_table_prints_no_json_and_json_no_table(cli: Cli) -> None:
    table = cli.ok("customers", "show", "acme")
    assert table.stdout.startswith("customer acme  Acme Telecom Ltd · active · USD\n")
    assert '"customer_id"' not in table.stdout and "{" not in table.stdout
    assert table.stderr == ""
    as_json = cli.ok("customers", "show", "acme", "--format", "json")
    assert as_json.stdout.startswith("{") and as_json.stdout.rstrip().endswith("}")
    assert "─" not in as_json.stdout and "customer acme  " not in as_json.stdout
    json.loads(as_json.stdout)
    assert as_json.stderr == ""


def test_csv_is_the_customers_own_row(cli: Cli) -> None:
    [row] = cli.csv("customers", "show", "acme")
    [listed] = [r for r in cli.csv("customers", "list") if r["customer_id"] == "acme"]
    assert row == listed


def test_every_entitys_show_prints_only_json(cli: Cli, catalog: Catalog) -> None:
    for group, ident in [
        ("providers", "tier1"), ("cards", "retail-usd"), ("packages", "pkg-welcome"),
        ("dids", "12125550100"), ("payments", "PAY-2026-0001"), ("alerts", "acme-asr"),
        ("contracts", "CTR-ACME-2026"), ("routes", "1"), ("auth", "1"), ("contacts", "1"),
        ("cli-rules", "1"), ("customer-packages", "1"),
    ]:  # fmt: skip
        result = cli.ok(group, "show", ident, "--format", "json")
        assert isinstance(json.loads(result.stdout), dict), describe(result)


def test_the_card_fits_80_columns_and_keeps_key_columns_whole(cli: Cli) -> None:
    doc = card(cli, "acme")
    shown = cli.ok("customers", "show", "acme").stdout
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(line for line in lines if len(line) > 80)
    for call in doc["calls"]:
        row = next(line for line in lines if call["dest_number"] in line)
        assert call["dt"][:19].replace("T", " ") in row
    for invoice in doc["invoices"]:
        assert invoice["number"] in shown
    for p in doc["packages"]:
        assert f"{p['package_id']}  " in shown and f"from {p['period_start']}" in shown
    assert "traffic (UTC)" in shown and "balance now (USD)" in shown


def test_passwords_are_never_shown(cli: Cli, catalog: Catalog) -> None:
    [user] = [r for r in catalog.list("auth", customer="initech") if r["kind"] == "user"]
    digest = catalog.password_hash("auth", str(user["id"]))
    assert digest
    doc = card(cli, "initech")
    [shown_user] = [r for r in doc["auth"] if r["kind"] == "user"]
    assert shown_user["password_set"] is True and "password" not in shown_user
    outputs = [
        cli.ok("customers", "show", "initech", *fmt).stdout
        for fmt in ((), ("--format", "json"), ("--format", "csv"))
    ]
    for out in outputs:
        assert digest not in out and "Initech-Secret-2026" not in out
    assert "password" in outputs[0]


def firing(alert: str, crossing: int, customer: str, value: str, at: datetime) -> Firing:
    return Firing(
        alert_id=alert,
        crossing=crossing,
        customer_id=customer,
        name=f"{alert} alert",
        area="asr",
        operator="<",
        threshold=Decimal(35),
        value=Decimal(value),
        at=at,
        recipient="noc@acme-telecom.example",
    )


def test_alert_firings_are_those_the_live_app_recorded(cli: Cli, card_home: Path) -> None:
    doc = card(cli, "acme")
    assert doc["alert_firings"] is None and doc["counts"]["alert_firings"] is None
    shown = cli.ok("customers", "show", "acme").stdout
    assert "alert firings: none (no live app keeps this home's alerts)" in shown
    base = datetime(2026, 12, 5, 10, tzinfo=UTC)
    asr = [
        firing("acme-asr", n, "acme", f"3{n}.5", base + timedelta(minutes=n)) for n in (1, 2, 3, 4)
    ]
    ledger = Ledger(card_home)
    balance = firing("acme-low-balance", 1, "acme", "99.10", base + timedelta(hours=1))
    ledger.record([*asr, balance, firing("globex-channels", 1, "globex", "460", base)])
    settled = base + timedelta(minutes=30)
    ledger.settle(asr[0], Settled("email", "delivered", 1, None, settled))
    ledger.settle(asr[1], Settled("email", "failed", 5, "connection refused", settled))
    try:
        doc = card(cli, "acme", "--latest", "3")
        assert doc["counts"]["alert_firings"] == 5 and doc["problems"] == []
        latest = doc["alert_firings"]
        assert [(f["alert_id"], f["crossing"], f["value"], f["delivery"]) for f in latest] == [
            ("acme-low-balance", 1, "99.10", "pending"),
            ("acme-asr", 4, "34.5", "pending"),
            ("acme-asr", 3, "33.5", "pending"),
        ]  # fmt: skip
        assert doc["alert_firings"][0]["at"] == "2026-12-05T11:00:00Z"
        oldest = card(cli, "acme", "--latest", "10")["alert_firings"][-2:]
        assert [(f["crossing"], f["delivery"], f["tries"], f["error"]) for f in oldest] == [
            (2, "failed", 5, "connection refused"),
            (1, "delivered", 1, None),
        ]
        shown = cli.ok("customers", "show", "acme", "--latest", "3").stdout
        assert "alert firings (latest 3 of 5)" in shown and "2026-12-05 11:00:00" in shown
        assert card(cli, "initech")["alert_firings"] == []
        assert "alert firings: none" in cli.ok("customers", "show", "initech").stdout
        # A file that is not a firing: the card says so, and shows the rest.
        (fired_root(card_home) / "date=2026-12-05" / "bad~1.parquet").write_text("not parquet")
        result = cli.ok("customers", "show", "acme")
        assert "alert firings: could not read the alert firings in" in result.stdout
        assert "contracts (1)" in result.stdout
        doc = card(cli, "acme")
        assert doc["alert_firings"] is None and doc["problems"][0].startswith("could not read")
    finally:
        shutil.rmtree(fired_root(card_home))
        shutil.rmtree(deliveries_root(card_home))


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_an_unknown_customer_is_one_line(cli: Cli, fmt: str) -> None:
    line = cli.refused("customers", "show", "nobody", "--format", fmt)
    assert line == "there is no customer 'nobody'"
