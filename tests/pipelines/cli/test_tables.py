"""Tables that fit: in a terminal narrower than a listing, the key columns stay whole, the
others go in a fixed order, and one line says which and how to see them all."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from pipelines.catalog import Catalog
from pipelines.cli import output
from pipelines.cli.entities import listing_of
from pipelines.cli.output import Format, emit
from schemas.catalog import BY_NAME, CUSTOMERS, ENTITIES
from tests.pipelines.cli.driver import Cli, narrow, shown

GROUPS = {e.name: {"rate_cards": "cards"}.get(e.name, e.name.replace("_", "-")) for e in ENTITIES}
GROUPS.pop("rates")  # listed by `cards rates CARD`


def listed_columns(entity: str) -> list[str]:
    e = BY_NAME[entity]
    return (["id"] if e.surrogate else []) + [c.name for c in e.columns if not c.secret]


@pytest.mark.parametrize("entity", sorted(GROUPS))
def test_a_listing_fits_80_columns_with_its_keys_whole(
    cli: Cli, sample: Catalog, monkeypatch: pytest.MonkeyPatch, entity: str
) -> None:
    narrow(monkeypatch, 80)
    out = cli.ok(GROUPS[entity], "list").stdout
    table = shown(out)
    everything = listed_columns(entity)
    assert set(listing_of(BY_NAME[entity]).key) <= set(table.headers)
    # What is shown and what the hint names are every column, in order, each once.
    assert sorted(table.headers + table.hidden, key=everything.index) == everything
    assert table.headers == [c for c in everything if c not in table.hidden]
    assert table.header_lines == 1  # no header folded
    assert len(table.rows) == len(sample.list(entity))  # no value wrapped
    assert all(cell_len(line) <= 80 for line in table.lines if "hidden (" not in line)


@pytest.mark.parametrize("entity", sorted(GROUPS))
def test_wide_and_machines_get_every_column(
    cli: Cli, sample: Catalog, monkeypatch: pytest.MonkeyPatch, entity: str
) -> None:
    narrow(monkeypatch, 80)
    everything = listed_columns(entity)
    table = shown(cli.ok(GROUPS[entity], "list", "--wide").stdout)
    assert (table.headers, table.hidden) == (everything, [])
    assert len(table.rows) >= len(sample.list(entity))
    assert list(cli.csv(GROUPS[entity], "list")[0]) == everything
    assert list(cli.json(GROUPS[entity], "list")[0]) == everything


def test_customers_in_80_columns(
    cli: Cli, sample: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample's customers: who, what, in which state and currency, and the debit limit
    that still fits; the hint names the eight that do not, in table order."""
    narrow(monkeypatch, 80)
    out = cli.ok("customers", "list").stdout
    table = shown(out)
    assert table.headers == ["customer_id", "name", "status", "currency", "debit_limit"]
    assert table.hidden == ["tax_percent", "minimum_payment", "portal_access", "paypal_email",
                            "website", "address", "channels", "cps"]  # fmt: skip
    hint = "8 columns hidden (tax_percent, minimum_payment, portal_access, paypal_email, "
    assert hint in out
    assert out.rstrip("\n").endswith(": --wide, or --format csv|json")
    # search lists as list does
    assert shown(cli.ok("customers", "search", "o").stdout).hidden == table.hidden
    # In a terminal wide enough, nothing is hidden and no hint is printed.
    narrow(monkeypatch, 250)
    wide = cli.ok("customers", "list").stdout
    assert shown(wide).headers == listed_columns("customers") and "hidden" not in wide


def test_the_rates_of_a_card(cli: Cli, sample: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    narrow(monkeypatch, 80)
    table = shown(cli.ok("cards", "rates", "retail-usd").stdout)
    assert table.headers[:3] == ["prefix", "name", "rate"] and table.hidden
    assert table.hidden[-1] == "effective_to"  # from the right
    wide = shown(cli.ok("cards", "rates", "retail-usd", "--wide").stdout)
    assert wide.headers == [c.name for c in BY_NAME["rates"].columns if c.name != "card_id"]


ROWS = [
    {"a": "a" * 10, "b": "b" * 20, "c": "c" * 20, "d": "d" * 20, "e": "e" * 5},
    {"a": "x", "b": "y", "c": "z", "d": "w", "e": "v"},
]


def printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **kw: object
) -> str:
    narrow(monkeypatch, 60)
    emit(ROWS, Format.table, **kw)  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_columns_go_in_the_drop_order_then_from_the_right(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Natural widths 13 + 23 + 23 + 23 + 8 + 1 = 91 > 60.
    table = shown(printed(monkeypatch, capsys, key=["a"]))
    assert (table.headers, table.hidden) == (["a", "b", "c"], ["d", "e"])
    table = shown(printed(monkeypatch, capsys, key=["a"], drop=["b"]))
    assert (table.headers, table.hidden) == (["a", "c", "d"], ["b", "e"])
    table = shown(printed(monkeypatch, capsys, key=["a", "e"], drop=["c", "b"]))
    assert (table.headers, table.hidden) == (["a", "d", "e"], ["b", "c"])


def test_keys_stay_even_when_they_alone_do_not_fit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = shown(printed(monkeypatch, capsys, key=["a", "b", "c", "d"]))
    assert (table.headers[:4], table.hidden) == (["a", "b", "c", "d"], ["e"])


def test_a_table_that_is_not_a_listing_keeps_every_column(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without key columns (an explanation, a run's summary) nothing is hidden."""
    out = printed(monkeypatch, capsys)
    assert shown(out).hidden == [] and "hidden" not in out
    assert len(shown(out).headers) == 5


def test_csv_and_json_ignore_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    narrow(monkeypatch, 40)
    emit(ROWS, Format.csv, key=["a"])
    assert capsys.readouterr().out.splitlines()[0] == "a,b,c,d,e"
    emit([], Format.json, entity=CUSTOMERS, key=["customer_id"])
    assert capsys.readouterr().out == "[]\n"
    assert output.console.width == 40
