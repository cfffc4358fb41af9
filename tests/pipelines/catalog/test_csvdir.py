"""Import and export of the CSV directory (SPEC §3): round trip and every validation rule."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import export_directory, import_card, import_directory
from schemas.catalog import RATES, parse_row
from schemas.errors import ValidationError
from schemas.fields import neutralise
from schemas.integrity import Rec


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*.csv"))}


@pytest.fixture
def bad(tmp_path: Path, sample_dir: Path) -> Path:
    """A copy of the sample catalog, for a test to break."""
    target = tmp_path / "bad"
    shutil.copytree(sample_dir, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def _problems(catalog: Catalog, directory: Path) -> str:
    with pytest.raises(ValidationError) as err:
        import_directory(catalog, directory)
    return str(err.value)


def test_round_trip_import_export_import(
    catalog: Catalog, sample_dir: Path, tmp_path: Path
) -> None:
    import_directory(catalog, sample_dir)
    first = tmp_path / "first"
    export_directory(catalog, first)
    with Catalog(tmp_path / "other") as other:
        import_directory(other, first)
        second = tmp_path / "second"
        export_directory(other, second)
        assert _tree(first) == _tree(second)
        # Not only the files: the stores hold the same rows.
        mine, theirs = catalog.snapshot(), other.snapshot()
        for name in mine:
            assert sorted(str(r.row) for r in mine[name]) == sorted(
                str(r.row) for r in theirs[name]
            )
    # The export holds every file of the format, and rates of every card.
    assert {p.name for p in first.glob("*.csv")} >= {"customers.csv", "dids.csv", "contracts.csv"}
    assert len(list((first / "rates").glob("*.csv"))) == len(catalog.list("rate_cards"))


def test_reimporting_an_export_changes_no_row(sample: Catalog, tmp_path: Path) -> None:
    export_directory(sample, tmp_path / "out")
    before = sample.snapshot()
    import_directory(sample, tmp_path / "out")
    after = sample.snapshot()
    for name in before:
        assert [(r.id, r.row) for r in before[name] if r.id is None] == [
            (r.id, r.row) for r in after[name] if r.id is None
        ]
    assert [r.row for r in before["customers"]] == [r.row for r in after["customers"]]


def test_export_never_carries_passwords(sample: Catalog, sample_dir: Path, tmp_path: Path) -> None:
    export_directory(sample, tmp_path / "out")
    text = "".join(_tree(tmp_path / "out").values())
    assert "Initech-Secret-2026" in (sample_dir / "auth.csv").read_text()
    assert "Initech-Secret-2026" not in text
    assert "password" not in (tmp_path / "out" / "auth.csv").read_text().splitlines()[0]
    assert "scrypt" not in text


def test_a_reimport_without_passwords_keeps_the_hashes(sample: Catalog, tmp_path: Path) -> None:
    user = next(r for r in sample.list("auth") if r["value"] == "initech-pbx1")
    digest = sample.password_hash("auth", str(user["id"]))
    export_directory(sample, tmp_path / "out")
    import_directory(sample, tmp_path / "out")
    again = next(r for r in sample.list("auth") if r["value"] == "initech-pbx1")
    assert sample.password_hash("auth", str(again["id"])) == digest


def test_a_file_present_replaces_its_table_and_absent_ones_stay(
    sample: Catalog, tmp_path: Path
) -> None:
    only = tmp_path / "only"
    only.mkdir()
    (only / "providers.csv").write_text("provider_id,name,currency\nnew,New Carrier,USD\n")
    text = _problems(sample, only)
    assert "provider tier1: is still used by 3 dids" in text
    assert "provider eurotrans: is still used by 1 contracts (contract CTR-GLOBEX-2026)" in text
    assert "mobnet" not in text  # used by nobody: it may go
    (only / "providers.csv").write_text(
        "provider_id,name,currency\ntier1,Tier One,USD\neurotrans,E,EUR\nnew,New Carrier,USD\n"
    )
    import_directory(sample, only)
    assert [r["provider_id"] for r in sample.list("providers")] == ["eurotrans", "new", "tier1"]
    assert sample.get("providers", "tier1")["name"] == "Tier One"
    assert len(sample.list("customers")) == 5 and len(sample.list("dids")) == 3


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "customers.csv",
            "Acme Telecom Ltd,active,USD",
            "Acme Telecom Ltd,active,EURO",
            "customers.csv:2: column currency: 'EURO' is not an ISO 4217 currency code",
        ),
        (
            "customers.csv",
            "Initech Call Centers,active",
            "Initech Call Centers,closed",
            "customers.csv:4: column status: 'closed' is not one of active, inactive",
        ),
        (
            "rates/retail-usd.csv",
            "1212,USA New York,0.0065",
            "1212,USA New York,0.00650001",
            "retail-usd.csv:3: column rate: 0.00650001 has more than 6 decimal places",
        ),
        (
            "rates/retail-usd.csv",
            "1242,Bahamas,0.1850",
            "1242,Bahamas,-0.1850",
            "retail-usd.csv:4: column rate: -0.1850 is negative",
        ),
        (
            "rates/retail-usd.csv",
            "1876,Jamaica,0.2150,0",
            "1876,Jamaica,0.2150,-1",
            "retail-usd.csv:5: column connect_fee: -1 is negative",
        ),
        (
            "rates/retail-usd.csv",
            "52,Mexico",
            "52A,Mexico",
            "retail-usd.csv:24: column prefix: '52A' is not a prefix of digits only",
        ),
        (
            "rates/premium-usd.csv",
            "49,Germany,0.0140",
            "44,Germany,0.0140",
            "premium-usd.csv:7: rate card_id=premium-usd, prefix=44, effective_from= "
            "repeats line 3",
        ),
        (
            "rates/retail-usd.csv",
            "4474,United Kingdom Mobile Vodafone,0.0230,0,30,6,3,,",
            "4474,United Kingdom Mobile Vodafone,0.0230,0,30,6,3,2027-01-01,2026-01-01",
            "retail-usd.csv:9: column effective_to: 2026-01-01T00:00:00Z must be after",
        ),
        (
            "rates/retail-usd.csv",
            "91,India,0.0290,0,60,60",
            "91,India,0.0290,0,sixty,60",
            "retail-usd.csv:18: column mcd: 'sixty' is not a whole number",
        ),
        (
            "routes.csv",
            "globex,wholesale-eur",
            "globex,retail-usd",
            "routes.csv:4: column card_id: rate card 'retail-usd' is in USD but customer 'globex'",
        ),
        (
            "routes.csv",
            "initech,retail-usd",
            "initech,no-such-card",
            "routes.csv:5: column card_id: rate card 'no-such-card' does not exist",
        ),
        (
            "routes.csv",
            "^(33|49)[0-9]+$",
            "^(33|49[0-9]+$",
            "routes.csv:7: column dial_string: '^(33|49[0-9]+$' is not a valid regular expression",
        ),
        (
            "dids.csv",
            "18005550199,initech,did-in-usd,tier1,cost-tier1",
            "18005550199,initech,did-in-usd,eurotrans,cost-tier1",
            "dids.csv:4: column provider_card_id: rate card 'cost-tier1' is in USD but provider",
        ),
        (
            "auth.csv",
            "203.0.113.10",
            "203.0.113.300",
            "auth.csv:2: column value: '203.0.113.300' is not an IP address or CIDR network",
        ),
        (
            "payments.csv",
            "Wire transfer October",
            "Wire transfer October,extra",
            "payments.csv:2: has 7 fields but the header has 6",
        ),
        (
            "payments.csv",
            "completed,2026-10-01T09:30:00Z",
            "settled,2026-10-01T09:30:00Z",
            "payments.csv:2: column status: 'settled' is not one of completed, pending, cancelled",
        ),
        (
            "contracts.csv",
            "2026-01-01,2027-12-31,signed",
            "2026-01-01,2025-12-31,signed",
            "contracts.csv:2: column end_date: 2025-12-31 must be on or after start_date",
        ),
        (
            "alerts.csv",
            "balance,<,100",
            "balance,=<,100",
            "alerts.csv:2: column operator: '=<' is not one of <, <=, >, >=",
        ),
        (
            "cli_rules.csv",
            "acme,+44,allow",
            "acme,+44,block",
            "cli_rules.csv:2: column action: 'block' is not one of allow, deny",
        ),
        (
            "customer_packages.csv",
            "acme,pkg-uk-mob-1000",
            "acme,pkg-nope",
            "customer_packages.csv:2: column package_id: package 'pkg-nope' does not exist",
        ),
        (
            "packages.csv",
            "60000,447,monthly",
            "60000,447,yearly",
            "packages.csv:2: column frequency: 'yearly' is not one of daily, weekly, monthly, once",
        ),
        (
            "contacts.csv",
            "jane.porter@acme-telecom.example",
            "jane.porter-at-acme",
            "contacts.csv:2: column email: 'jane.porter-at-acme' is not an e-mail address",
        ),
        (
            "providers.csv",
            "tier1,Tier One Carrier Inc,USD",
            "tier1,Tier One Carrier Inc,USD\ntier1,Again,USD",
            "providers.csv:3: provider provider_id=tier1 repeats line 2",
        ),
        (
            "dids.csv",
            "1.5,0.6,2026-11-10,2026-12-20",
            "1.5,0.6,2026-11-10,2026-11-09",
            "dids.csv:3: column end_date: 2026-11-09 must be on or after start_date 2026-11-10",
        ),
        (
            "company.csv",
            "0000 00.\n",
            "0000 00.\nOther Carrier,,,,,\n",
            "company.csv:3: is a second company: company.csv holds one row; edit that one",
        ),
    ],
)
def test_each_rule_is_refused_with_file_line_and_column(
    catalog: Catalog, bad: Path, file: str, old: str, new: str, expected: str
) -> None:
    _edit(bad / file, old, new)
    assert expected in _problems(catalog, bad)
    assert catalog.counts()["customers"] == 0, "a refused import changes nothing"


def test_header_problems(catalog: Catalog, bad: Path) -> None:
    _edit(bad / "customers.csv", "customer_id,name,status", "customer_id,nam,status")
    _edit(bad / "providers.csv", "provider_id,name,currency", "provider_id,name,currency,colour")
    text = _problems(catalog, bad)
    assert "customers.csv:1: column nam: is not a column of customers.csv" in text
    assert "customers.csv:1: column name: is required but missing from the header" in text
    assert "providers.csv:1: column colour: is not a column of providers.csv" in text


def test_unknown_files_are_refused(catalog: Catalog, bad: Path) -> None:
    (bad / "customer.csv").write_text("customer_id\n")
    (bad / "rates" / "no spaces allowed.csv").write_text("prefix,name,rate\n")
    text = _problems(catalog, bad)
    assert "customer.csv: is not a catalog file" in text
    assert "no spaces allowed.csv: is not a rate file" in text


def test_rates_of_an_unknown_card_are_refused(catalog: Catalog, bad: Path) -> None:
    (bad / "rates" / "ghost.csv").write_text("prefix,name,rate\n44,UK,0.01\n")
    assert "ghost.csv:2: column card_id: rate card 'ghost' does not exist" in _problems(
        catalog, bad
    )


def test_every_problem_is_reported_not_just_the_first(catalog: Catalog, bad: Path) -> None:
    _edit(bad / "customers.csv", "active,USD,20", "active,USD,200")
    _edit(bad / "rates/wholesale-eur.csv", "39,Italy,0.0110", "39,Italy,abc")
    _edit(bad / "dids.csv", "12125550101,acme", "12125550101,nobody")
    text = _problems(catalog, bad)
    assert "customers.csv:2: column tax_percent: 200 is more than 100" in text
    assert "wholesale-eur.csv:12: column rate: 'abc' is not a decimal number" in text
    assert "dids.csv:3: column customer_id: customer 'nobody' does not exist" in text


def test_currency_cannot_change_through_an_import(sample: Catalog, bad: Path) -> None:
    _edit(
        bad / "customers.csv", "Initech Call Centers,active,USD", "Initech Call Centers,active,EUR"
    )
    _edit(bad / "routes.csv", "initech,retail-usd", "initech,wholesale-eur")
    text = _problems(sample, bad)
    assert "customers.csv:4: column currency: cannot change from USD to EUR" in text


def test_import_one_card(sample: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    path.write_text("prefix,name,rate,mcd,pulse\n44,UK,0.009,30,6\n447,UK Mobile,0.02,30,6\n")
    assert import_card(sample, "premium-usd", path) == 2
    rows = sample.list("rates", card="premium-usd")
    assert [(r["prefix"], str(r["rate"]), r["mcd"]) for r in rows] == [
        ("44", "0.009", 30),
        ("447", "0.02", 30),
    ]
    # Other cards are untouched.
    assert len(sample.list("rates", card="retail-usd")) == 24


def test_a_bom_and_crlf_file_imports(catalog: Catalog, tmp_path: Path) -> None:
    directory = tmp_path / "excel"
    directory.mkdir()
    (directory / "providers.csv").write_bytes(
        '\ufeffprovider_id,name,currency\r\np1,"Carrier, Inc",USD\r\n'.encode()
    )
    import_directory(catalog, directory)
    assert catalog.get("providers", "p1")["name"] == "Carrier, Inc"


def test_a_broken_header_is_reported_alone(sample: Catalog, bad: Path) -> None:
    """A file whose header is unusable is one problem, not one per row that names it."""
    _edit(bad / "customers.csv", "customer_id,name", "customer_id;name")
    text = _problems(sample, bad)
    assert text.count("\n") + 1 == 3, text  # the unknown column, and two missing ones
    assert "customers.csv:1: column customer_id;name: is not a column" in text


def _lines(catalog: Catalog, directory: Path) -> list[str]:
    return _problems(catalog, directory).splitlines()


def _latin1(path: Path, old: str, new: str) -> None:
    """Rewrite ``path`` with ``old`` replaced by ``new`` in Latin-1, as an old tool saves."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_bytes(text.replace(old, new, 1).encode("latin-1"))


def test_a_file_that_is_not_utf8_is_its_one_problem(sample: Catalog, bad: Path) -> None:
    # Without its customers, the import would delete acme and its payments; it reads none.
    _latin1(bad / "customers.csv", "Umbrella Wholesale", "Umbrella Großhandel")
    at = (bad / "customers.csv").read_bytes().index("ß".encode("latin-1"))
    lines = _lines(sample, bad)
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        f"customers.csv:5: is not UTF-8 text (invalid continuation byte at byte {at}); "
        "save it as UTF-8"
    )
    assert sample.get("customers", "umbrella")["name"] == "Umbrella Wholesale"


def test_unreadable_prefixes_do_not_repeat_each_other(sample: Catalog, bad: Path) -> None:
    _edit(bad / "rates/retail-usd.csv", "52,Mexico", "52A,Mexico")
    _edit(bad / "rates/retail-usd.csv", "521,Mexico Mobile", "5x1,Mexico Mobile")
    lines = _lines(sample, bad)
    assert [line.split("retail-usd.csv")[1] for line in lines] == [
        ":24: column prefix: '52A' is not a prefix of digits only",
        ":25: column prefix: '5x1' is not a prefix of digits only",
    ]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # Every customer is new: the unread file is the one problem, not the rows naming them.
        (
            "customers.csv",
            "Umbrella Wholesale",
            "Umbrella Großhandel",
            "customers.csv:5: is not UTF-8 text",
        ),
        ("customers.csv", "customer_id,name", "customer_id;name", "customers.csv:1: column"),
        (
            "rate_cards.csv",
            "retail-usd,Retail termination USD",
            "retail-usd,Retail, termination USD",
            "rate_cards.csv:2: has 8 fields but the header has 7",
        ),
        (
            "customers.csv",
            "acme,Acme Telecom Ltd",
            "acme!,Acme Telecom Ltd",
            "customers.csv:2: column customer_id: 'acme!' is not an identifier",
        ),
    ],
)
def test_rows_not_read_are_not_missing(
    catalog: Catalog, bad: Path, file: str, old: str, new: str, expected: str
) -> None:
    """A row that did not read is reported once: not again as a name that does not exist."""
    if "ß" in new:
        _latin1(bad / file, old, new)
    else:
        _edit(bad / file, old, new)
    lines = _lines(catalog, bad)
    assert all(expected in line for line in lines), lines
    assert lines


def test_a_customer_row_not_read_is_not_deleted(sample: Catalog, bad: Path) -> None:
    """Its payments do not ask for --force, and the rows naming it do not name no one."""
    _edit(bad / "customers.csv", "acme,Acme Telecom Ltd", "acme!,Acme Telecom Ltd")
    lines = _lines(sample, bad)
    assert lines == [
        f"{bad}/customers.csv:2: column customer_id: 'acme!' is not an identifier "
        "(1-64 letters, digits and _ . : @ -, starting with a letter or digit)"
    ]


def test_a_value_not_read_is_not_a_change(sample: Catalog, bad: Path) -> None:
    # The currency did not read: it is not also "changed from USD to nothing".
    _edit(bad / "customers.csv", "Acme Telecom Ltd,active,USD", "Acme Telecom Ltd,active,US")
    lines = _lines(sample, bad)
    assert len(lines) == 1, lines
    assert "customers.csv:2: column currency: 'US' is not an ISO 4217 currency code" in lines[0]


def test_payments_not_read_are_not_counted(sample: Catalog, bad: Path) -> None:
    # umbrella leaves the catalog; whether it has payments is in the file that did not read.
    customers = bad / "customers.csv"
    customers.write_text("".join(customers.read_text().splitlines(True)[:4]))
    owned = ["routes", "auth", "contacts", "dids", "alerts", "cli_rules", "contracts"]
    for name in [*owned, "customer_packages"]:
        (bad / f"{name}.csv").unlink()  # absent: umbrella's stored rows go with it
    _latin1(bad / "payments.csv", "Cheque returned", "Chèque returned")
    lines = _lines(sample, bad)
    assert len(lines) == 1, lines
    assert "payments.csv:6: is not UTF-8 text" in lines[0]


def test_currencies_of_cards_not_read_are_not_compared(sample: Catalog, bad: Path) -> None:
    # The file that did not read moves retail-usd to EUR, which the route to it expects.
    _latin1(bad / "rate_cards.csv", "Retail termination USD,USD", "Retail tarifa ½ EUR,EUR")
    _edit(bad / "routes.csv", "globex,wholesale-eur", "globex,retail-usd")
    lines = _lines(sample, bad)
    assert len(lines) == 1, lines
    assert "rate_cards.csv:2: is not UTF-8 text" in lines[0]


# Text as the catalog holds it (one line, trimmed), often starting as a formula would.
FORMULA_STARTS = ["", "=", "+", "-", "@", "\t", "'", "''", "'=", "-1", "+44", "-2.5"]
catalog_text = (
    st.builds(
        str.__add__,
        st.sampled_from(FORMULA_STARTS),
        st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=30),
    ).map(lambda text: text.strip() or "x")  # as parsed: trimmed, and a name is required
)
# Text columns of the sample's rows, by entity and key (id: a contact's).
TEXT_COLUMNS = [
    ("customers", "acme", "name"),
    ("customers", "acme", "website"),
    ("customers", "globex", "address"),
    ("providers", "tier1", "name"),
    ("rate_cards", "retail-usd", "name"),
    ("packages", "pkg-welcome", "name"),
    ("payments", "PAY-2026-0001", "description"),
    ("alerts", "acme-asr", "name"),
    ("contracts", "CTR-GLOBEX-2026", "name"),
    ("contacts", "1", "public_notes"),
    ("contacts", "1", "private_notes"),
]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    texts=st.lists(catalog_text, min_size=len(TEXT_COLUMNS), max_size=len(TEXT_COLUMNS)),
    rate_name=catalog_text,
)
def test_any_text_survives_export_and_import(
    sample: Catalog, tmp_path: Path, texts: list[str], rate_name: str
) -> None:
    for (entity, ident, column), text in zip(TEXT_COLUMNS, texts, strict=True):
        sample.edit(entity, ident, {column: text})
    rate = {"card_id": "premium-usd", "prefix": "44", "name": rate_name, "rate": "0.01"}
    row, problems = parse_row(RATES, rate)
    assert problems == []
    sample.replace({"rates": [Rec(row, "a test")]}, ["premium-usd"])
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    export_directory(sample, out / "first")
    for path in (out / "first").rglob("*.csv"):
        with path.open(newline="") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        assert [c for c in cells if neutralise(c) != c and not c.startswith("'")] == [], path
    with Catalog(out / "home") as other:
        import_directory(other, out / "first")
        export_directory(other, out / "second")
        assert _tree(out / "first") == _tree(out / "second")
        mine, theirs = sample.snapshot(), other.snapshot()
        for name in mine:
            assert sorted(map(repr, (r.row for r in mine[name]))) == sorted(
                map(repr, (r.row for r in theirs[name]))
            ), name
    for (entity, ident, column), text in zip(TEXT_COLUMNS, texts, strict=True):
        assert sample.get(entity, ident)[column] == text
    assert [r["name"] for r in sample.list("rates", card="premium-usd")] == [rate_name]
