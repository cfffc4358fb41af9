"""``cdrflow price``: a call simulated step by step, its failures, its formats, and agreement
with what ``cdrflow rate`` puts in the lake for the same call."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import Result

from pipelines.catalog import Catalog
from tests.pipelines.cli.driver import Cli, describe

AT = "2026-11-02T08:00:00Z"
STEPS = [
    "cdr",
    "customer",
    "cli",
    "route",
    "number",
    "rate",
    "billing",
    "packages",
    "charge",
    "tax",
    "provider",
]
GLOBEX_CALL = (
    "33612345678",
    "--source-ip",
    "198.51.100.7",
    "--at",
    AT,
    "--duration",
    "95.5",
    "--provider-card",
    "cost-eurotrans",
)


def priced(cli: Cli, *args: str) -> dict[str, Any]:
    """``cdrflow price … --format json`` of a call that is rated (exit 0)."""
    return cli.json("price", *args)  # type: ignore[no-any-return]


def refused(cli: Cli, *args: str) -> tuple[Result, dict[str, Any]]:
    """A call that fails a step: exit 1, no traceback, the steps still on stdout as JSON."""
    result = cli.run("price", *args, "--format", "json")
    assert result.exit_code == 1, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    return result, json.loads(result.stdout)


def step(document: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in document["steps"] if s["step"] == name]
    assert len(found) == 1, document
    return found[0]


def lake_files(home: Path) -> list[Path]:
    return sorted((home / "lake").rglob("*.parquet"))


# -- a rated call -------------------------------------------------------------------------------


def test_table_shows_every_step_and_the_result(cli: Cli, sample: Catalog, home: Path) -> None:
    version = sample.version()
    result = cli.ok("price", *GLOBEX_CALL)
    out = result.stdout
    assert out.startswith("price of 33612345678 at 2026-11-02T08:00:00Z, 95.5 s, sip_code 200")
    for name in STEPS:
        assert f"│ {name:<8} │" in out, name
    assert "│ charge          │ 0.04480 EUR" in out
    assert "│ tax             │ 0.00851 EUR" in out
    assert "│ provider charge │ 0.03008 EUR" in out
    assert "│ profit          │ 0.01472 EUR" in out
    assert "FAILED" not in out
    assert "nothing was written" in out
    # Nothing was written: no lake, the catalog unchanged.
    assert lake_files(home) == [] and not (home / "lake" / "rated").exists()
    assert sample.version() == version


def test_json_gives_the_steps_and_the_result(cli: Cli, sample: Catalog) -> None:
    document = priced(cli, *GLOBEX_CALL)
    assert (document["ok"], document["failed_step"], document["reject_reason"]) == (
        True,
        None,
        None,
    )
    assert [s["step"] for s in document["steps"]] == STEPS
    assert {s["verdict"] for s in document["steps"]} == {"ok"}
    assert document["result"] == {
        "reject_reason": None,
        "customer_id": "globex",
        "customer_status": "active",
        "card_id": "wholesale-eur",
        "number": "33612345678",
        "dest_code": "336",
        "dest_name": "France Mobile",
        "billed_duration": 96,
        "rate": "0.028",
        "connect_fee": "0",
        "package_seconds": 0,
        "package_id": None,
        "charge": "0.04480",
        "tax": "0.00851",
        "currency": "EUR",
        "provider_charge": "0.03008",
        "provider_currency": "EUR",
        "profit": "0.01472",
    }
    customer = step(document, "customer")
    assert customer["values"] == {"customer_id": "globex", "via": "ip", "auth_id": 3, "did": None}
    rate = step(document, "rate")["values"]
    assert (rate["prefix"], rate["mcd"], rate["pulse"], rate["effective_from"]) == (
        "336",
        6,
        6,
        None,
    )
    billing = step(document, "billing")
    assert billing["result"] == "96 s (6/6)"
    assert "96 s > mcd 6 s: 6 + ceil((96 - 6) / 6) × 6 = 6 + 15 × 6 = 96 s" in billing["detail"]
    provider = step(document, "provider")
    assert provider["result"] == "0.030080 EUR"
    assert provider["values"]["card_id"] == "cost-eurotrans"


def test_csv_gives_step_rows_then_result_rows(cli: Cli, sample: Catalog) -> None:
    rows = cli.csv("price", *GLOBEX_CALL)
    assert list(rows[0]) == ["kind", "name", "verdict", "value", "detail"]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["name"] for r in steps] == STEPS
    assert {r["verdict"] for r in steps} == {"ok"}
    result = {r["name"]: r["value"] for r in rows if r["kind"] == "result"}
    assert (result["charge"], result["tax"], result["provider_charge"]) == (
        "0.04480",
        "0.00851",
        "0.03008",
    )
    assert result["reject_reason"] == "" and result["dest_code"] == "336"
    route = next(r for r in steps if r["name"] == "route")
    assert route["value"] == "#3 → wholesale-eur" and "first route that matches" in route["detail"]


def test_cli_rule_verdict_is_shown_and_informational(cli: Cli, sample: Catalog) -> None:
    denied = priced(cli, "447700900123", "--customer", "acme", "--cli", "0000", "--at", AT)
    rule = step(denied, "cli")
    assert (rule["verdict"], rule["result"]) == ("ok", "deny (rule #3)")
    assert rule["values"]["action"] == "deny" and rule["values"]["informational"] is True
    assert "SPEC §5 does not make rating depend on CLI rules" in rule["detail"]
    allowed = priced(cli, "447700900123", "--customer", "acme", "--cli", "+4479", "--at", AT)
    assert step(allowed, "cli")["result"] == "allow (rule #1)"
    nothing = priced(cli, "447700900123", "--customer", "acme", "--cli", "3312", "--at", AT)
    assert step(nothing, "cli")["result"] == "no rule matches"
    assert denied["result"] == allowed["result"] == nothing["result"]


def test_inbound_to_a_did(cli: Cli, sample: Catalog) -> None:
    document = priced(cli, "+18005550199", "--direction", "inbound", "--at", AT, "--duration", "7")
    assert step(document, "customer")["values"]["via"] == "did"
    assert step(document, "route")["result"] == "DID → did-in-usd"
    result = document["result"]
    assert (result["customer_id"], result["dest_code"], result["billed_duration"]) == (
        "initech",
        "18",
        12,
    )
    # The DID's provider card prices the carrier leg: 12 s × 0.0042 / 60.
    assert result["provider_charge"] == "0.00084"


# -- the SPEC's worked examples -----------------------------------------------------------------


@pytest.fixture
def examples(cli: Cli, home: Path, tmp_path: Path) -> Cli:
    """One customer whose routes reach cards of 0.015/min with the SPEC's increments and
    roundings: tech prefix 1# → 6/6, 2# → 30/6, 3# → 60/6, and 4#…7# → 1/1 with each rounding."""
    folder = tmp_path / "examples"
    (folder / "rates").mkdir(parents=True)
    cards = {
        "k66": (6, 6, "half_up"),
        "k306": (30, 6, "half_up"),
        "k606": (60, 6, "half_up"),
        "hu": (1, 1, "half_up"),
        "hd": (1, 1, "half_down"),
        "dn": (1, 1, "down"),
        "up": (1, 1, "up"),
    }
    (folder / "customers.csv").write_text("customer_id,name,status,currency\nc,C,active,USD\n")
    lines = ["card_id,name,currency,direction,precision,rounding"]
    routes = ["customer_id,card_id,tech_prefix"]
    for i, (card, (mcd, pulse, rounding)) in enumerate(cards.items(), start=1):
        lines.append(f"{card},{card},USD,termination,4,{rounding}")
        routes.append(f"c,{card},{i}#")
        (folder / "rates" / f"{card}.csv").write_text(
            f"prefix,name,rate,mcd,pulse\n44,United Kingdom,0.015,{mcd},{pulse}\n"
        )
    (folder / "rate_cards.csv").write_text("\n".join(lines) + "\n")
    (folder / "routes.csv").write_text("\n".join(routes) + "\n")
    cli.ok("catalog", "import", str(folder))
    return cli


def example(cli: Cli, tech: str, seconds: str) -> dict[str, Any]:
    args = (f"{tech}447700900123", "--customer", "c", "--at", AT, "--duration", seconds)
    return priced(cli, *args)


@pytest.mark.parametrize(("seconds", "billed"), [("1", 30), ("30", 30), ("31", 36), ("37", 42)])
def test_spec_30_6_increments(examples: Cli, seconds: str, billed: int) -> None:
    document = example(examples, "2#", seconds)
    assert document["result"]["billed_duration"] == billed
    assert step(document, "billing")["result"] == f"{billed} s (30/6)"


@pytest.mark.parametrize(
    ("tech", "billed", "charge"), [("1#", 12, "0.0030"), ("2#", 30, "0.0075"), ("3#", 60, "0.0150")]
)
def test_spec_7_seconds_at_0_015(examples: Cli, tech: str, billed: int, charge: str) -> None:
    document = example(examples, tech, "7")
    assert (document["result"]["billed_duration"], document["result"]["charge"]) == (
        billed,
        charge,
    )
    assert step(document, "charge")["result"] == f"{charge} USD"


@pytest.mark.parametrize(
    ("tech", "rounding", "charge"),
    [("4#", "half_up", "0.0018"), ("5#", "half_down", "0.0017"), ("6#", "down", "0.0017"),
     ("7#", "up", "0.0018")],
)  # fmt: skip
def test_spec_rounding_of_0_00175(examples: Cli, tech: str, rounding: str, charge: str) -> None:
    document = example(examples, tech, "7")
    assert document["result"]["charge"] == charge
    detail = step(document, "charge")["detail"]
    assert "= 0.00175 exactly" in detail and f"rounded {rounding} to 4 places → {charge}" in detail


# -- failures -----------------------------------------------------------------------------------


def test_unknown_customer(cli: Cli, sample: Catalog) -> None:
    result = cli.run("price", "447700900123", "--customer", "nobody", "--at", AT)
    assert result.exit_code == 1, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert result.stderr == (
        "error: step customer failed (unknown_customer): customer_id 'nobody' names no "
        "customer (auth is not tried when it is given)\n"
    )
    assert "FAILED: unknown_customer" in result.stdout
    assert "│ route" not in result.stdout  # the steps stop where rating stops
    _, document = refused(cli, "447700900123", "--source-ip", "192.0.2.200", "--at", AT)
    assert (document["ok"], document["failed_step"], document["reject_reason"]) == (
        False,
        "customer",
        "unknown_customer",
    )
    assert step(document, "customer")["detail"].splitlines() == [
        "source_ip 192.0.2.200: no ip auth entry holds it",
        "no sip_user",
        "no customer_id, and no auth entry matches",
    ]
    assert document["result"] == {"reject_reason": "unknown_customer"}


def test_no_route_names_each_routes_reason(cli: Cli, sample: Catalog) -> None:
    result, document = refused(cli, "4477", "--sip-user", "hooli-sbc", "--at", AT)
    assert result.stderr == "error: step route failed (no_route): no route of hooli takes 4477\n"
    assert [s["step"] for s in document["steps"]] == ["cdr", "customer", "cli", "route"]
    route = step(document, "route")
    assert route["verdict"] == "failed"
    assert route["values"]["routes"] == [
        {
            "route_id": 6,
            "verdict": "no",
            "why": "4477 does not match its dial string regex ^(33|49)[0-9]+$",
        }
    ]


def test_no_rate(cli: Cli, sample: Catalog) -> None:
    result, document = refused(cli, "999123", "--customer", "acme", "--at", AT)
    assert result.stderr == (
        "error: step rate failed (no_rate): card retail-usd has no rate for 999123 at "
        "2026-11-02T08:00:00Z\n"
    )
    assert document["failed_step"] == "rate"
    assert step(document, "number")["result"] == "999123"


def test_invalid_number(cli: Cli, sample: Catalog) -> None:
    result = cli.run("price", "44a1", "--customer", "acme")
    assert result.exit_code == 1, describe(result)
    assert result.stderr == (
        "error: step cdr failed (invalid): dest_number: '44a1' may hold only digits, +, * and #\n"
    )
    result = cli.run("price", "44", "--sip-code", "99", "-f", "csv")
    assert result.exit_code == 1, describe(result)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["kind"], r["name"], r["verdict"]) for r in rows] == [
        ("step", "cdr", "failed"),
        ("result", "reject_reason", ""),
    ]
    assert rows[1]["value"] == "invalid"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--at", "yesterday"),
         "--at: 'yesterday' is not an ISO 8601 time (e.g. 2026-11-02 or 2026-11-02T08:00:00Z)"),
        (("--duration", "a minute"), "--duration: 'a minute' is not a number of seconds"),
    ],
)  # fmt: skip
def test_bad_options_are_refused(
    cli: Cli, sample: Catalog, args: tuple[str, ...], message: str
) -> None:
    assert cli.refused("price", "447700900123", "--customer", "acme", *args) == message


def test_the_time_defaults_to_now(cli: Cli, sample: Catalog) -> None:
    document = priced(cli, "447700900123", "--customer", "acme")
    assert step(document, "cdr")["values"]["dt"].endswith("Z")
    assert document["result"]["billed_duration"] == 60


# -- packages and the lake ----------------------------------------------------------------------


def write_cdrs(path: Path, *cdrs: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cdrs))
    return path


def lake_row(home: Path, callid: str) -> dict[str, Any]:
    """The rated CDR of ``callid`` as the lake holds it."""
    with duckdb.connect() as con:
        relation = con.sql(
            "SELECT * FROM read_parquet($lake, hive_partitioning = true) WHERE callid = $callid",
            params={"lake": str(home / "lake" / "rated" / "**" / "*.parquet"), "callid": callid},
        )
        names, rows = relation.columns, relation.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(names, rows[0], strict=True))


def test_package_draw_counts_what_the_lake_holds(cli: Cli, sample: Catalog, tmp_path: Path) -> None:
    call = ("12125551234", "--sip-user", "initech-pbx1", "--at", "2026-11-03T10:00:00Z")
    before = priced(cli, *call, "--duration", "600")
    assert before["result"]["package_seconds"] == 600
    # 5700 s of initech's weekly 6000 are used by a call of Monday 2026-11-02.
    used = {
        "callid": "used-1",
        "dt": "2026-11-02T09:00:00Z",
        "dest_number": "12125551234",
        "sip_user": "initech-pbx1",
        "sip_code": 200,
        "duration": 5700,
    }
    cli.ok("rate", str(write_cdrs(tmp_path / "used.jsonl", used)))
    files = lake_files(cli.home)
    after = priced(cli, *call, "--duration", "600")
    packages = step(after, "packages")
    assert packages["values"]["draws"] == [
        {
            "package_id": "pkg-all-weekly",
            "start_date": "2026-03-02",
            "period_start": "2026-11-02",
            "allowance": 6000,
            "used": 5700,
            "seconds": 300,
        }
    ]
    assert "6000 s, 5700 s used, 300 s left → draws 300 s" in packages["detail"]
    assert (after["result"]["package_seconds"], after["result"]["charge"]) == (300, "0.0325")
    # Showing it again shows the same: nothing was drawn, nothing written.
    assert priced(cli, *call, "--duration", "600") == after
    assert lake_files(cli.home) == files
    # And rating that very call draws what was shown.
    following = {**used, "callid": "next", "dt": "2026-11-03T10:00:00Z", "duration": 600}
    cli.ok("rate", str(write_cdrs(tmp_path / "next.jsonl", following)))
    rated = lake_row(cli.home, "next")
    assert (rated["package_seconds"], str(rated["charge"].normalize())) == (300, "0.0325")


CALLS = [
    {"source_ip": "203.0.113.10", "dest_number": "447700900123", "duration": "7.2"},
    {"source_ip": "203.0.113.5", "dest_number": "9901#+4915112345678", "duration": "65"},
    {"sip_user": "initech-pbx1", "dest_number": "447700900123", "source_cli": "+12125550000"},
    {"customer_id": "umbrella", "dest_number": "7712125559876", "duration": "1801"},
    {"direction": "inbound", "dest_number": "12125550101", "duration": "300"},
    {"source_ip": "198.51.100.7", "dest_number": "4915212345",
     "provider_card_id": "cost-eurotrans"},
    {"customer_id": "acme", "dest_number": "12125551234", "provider_card_id": "cost-tier1",
     "sip_code": 486, "duration": "0"},
]  # fmt: skip
OPTIONS = {
    "source_ip": "--source-ip",
    "sip_user": "--sip-user",
    "customer_id": "--customer",
    "source_cli": "--cli",
    "duration": "--duration",
    "direction": "--direction",
    "provider_card_id": "--provider-card",
    "sip_code": "--sip-code",
}
COMPARED = (
    "customer_id", "card_id", "number", "dest_code", "dest_name", "billed_duration",
    "package_seconds", "package_id", "currency", "provider_currency",
)  # fmt: skip


def _money_text(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def test_what_is_shown_is_what_rate_puts_in_the_lake(
    cli: Cli, sample: Catalog, tmp_path: Path
) -> None:
    """Each call priced, then rated by ``cdrflow rate``: the lake holds the shown figures."""
    for i, call in enumerate(CALLS):
        at = f"2026-11-02T1{i}:00:00Z"
        options = [x for k, v in call.items() if k != "dest_number" for x in (OPTIONS[k], str(v))]
        shown = priced(cli, call["dest_number"], *options, "--at", at)["result"]
        cdr = {"callid": f"c{i}", "dt": at, "sip_code": 200, "duration": "60", **call}
        cli.ok("rate", str(write_cdrs(tmp_path / f"c{i}.jsonl", cdr)))
        rated = lake_row(cli.home, f"c{i}")
        assert {k: shown[k] for k in COMPARED} == {k: rated[k] for k in COMPARED}, call
        for name in ("rate", "connect_fee", "charge", "tax", "provider_charge", "profit"):
            shown_value = None if shown[name] is None else Decimal(shown[name])
            assert _money_text(shown_value) == _money_text(rated[name]), (call, name)
