"""Field kinds: what each accepts, what it refuses, and exact decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import fields as f


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        (f.Money(), "0.015", Decimal("0.015")),
        (f.Money(), "0.0150000", Decimal("0.015")),
        (f.Money(), ".5", Decimal("0.5")),
        (f.Money(), "100", Decimal("100")),
        (f.Money(signed=True), "-50", Decimal("-50")),
        (f.Integer(low=1), "6", 6),
        (f.YesNo(), "YES", True),
        (f.YesNo(), "no", False),
        (f.Day(), "2026-11-26", "2026-11-26"),
        (f.Timestamp(), "2026-11-26T10:00:00", "2026-11-26T10:00:00Z"),
        (f.Timestamp(), "2026-11-26T12:00:00+02:00", "2026-11-26T10:00:00Z"),
        (f.Timestamp(), "2026-11-26", "2026-11-26T00:00:00Z"),
        (f.Timestamp(), "2026-11-26T10:00:00.25Z", "2026-11-26T10:00:00.250000Z"),
        (f.Currency(), "EUR", "EUR"),
        (f.Digits(), "4477", "4477"),
        (f.TechPrefix(), "9901#", "9901#"),
        (f.PrefixList(), "44|447", "44|447"),
        (f.PrefixList(regex=True), "^(33|49)[0-9]+$", "^(33|49)[0-9]+$"),
        (f.CliPattern(), "+44", "+44"),
        (f.Identifier(), "acme-telecom.uk", "acme-telecom.uk"),
        (f.Email(), "noc@example.com", "noc@example.com"),
        (f.Recipient(), "noc@example.com", "noc@example.com"),
        (f.Recipient(), "https://hooks.example/a?b=c", "https://hooks.example/a?b=c"),
        (f.Recipient(), "HTTP://127.0.0.1:8080", "HTTP://127.0.0.1:8080"),
        (f.Recipient(), "http://[::1]:9/x", "http://[::1]:9/x"),
    ],
)
def test_accepts(kind: f.Kind, text: str, value: object) -> None:
    assert kind.parse(text) == value


@pytest.mark.parametrize(
    ("kind", "text", "fragment"),
    [
        (f.Money(), "0.0000001", "more than 6 decimal places"),
        (f.Money(), "-0.01", "negative"),
        (f.Money(), "1e-3", "not a decimal"),
        (f.Money(), "NaN", "not a decimal"),
        (f.Money(), "0,015", "not a decimal"),
        (f.Money(high=Decimal(100)), "100.5", "more than 100"),
        (f.Integer(low=1), "0", "outside"),
        (f.Integer(), "1.5", "not a whole number"),
        (f.YesNo(), "true", "not yes or no"),
        (f.Day(), "2026-02-30", "not a date"),
        (f.Timestamp(), "yesterday", "not an ISO 8601"),
        (f.Currency(), "EURO", "ISO 4217"),
        (f.Currency(), "usd", "ISO 4217"),
        (f.Digits(), "44a", "digits only"),
        (f.Digits(), "+44", "digits only"),
        (f.TechPrefix(), "99-01", "tech prefix"),
        (f.PrefixList(), "44||447", "prefixes"),
        (f.PrefixList(regex=True), "^(33", "regular expression"),
        (f.CliPattern(), "abc", "neither"),
        (f.Identifier(), "has space", "not an identifier"),
        (f.Email(), "nobody", "e-mail"),
        (f.Recipient(), "nobody", "e-mail address or an http"),
        (f.Recipient(), "ftp://files.example/x", "e-mail address or an http"),
        (f.Recipient(), "http:///path", "URL with a host"),
        (f.Recipient(), "https://a b.example", "URL with a host"),
        (f.Text(), "two\nlines", "one line"),
        (f.Secret(), "short", "shorter than 8"),
    ],
)
def test_refuses(kind: f.Kind, text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        kind.parse(text)


def test_ip_or_cidr_is_canonical() -> None:
    assert f.parse_ip_or_cidr("10.0.0.0/24") == "10.0.0.0/24"
    assert f.parse_ip_or_cidr("2001:DB8::1") == "2001:db8::1"
    with pytest.raises(ValueError, match=r"has host bits set; the network is 10\.0\.0\.0/24"):
        f.parse_ip_or_cidr("10.0.0.1/24")
    with pytest.raises(ValueError, match="not an IP"):
        f.parse_ip_or_cidr("300.1.1.1")


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_money_round_trips_through_text_and_micro_units(micro: int) -> None:
    value = f.from_micro(micro)
    kind = f.Money(signed=True)
    assert f.to_micro(kind.parse(kind.render(value))) == micro


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False))
def test_money_render_never_uses_exponents(value: Decimal) -> None:
    text = f.Money().render(value)
    assert "E" not in text.upper()
    assert Decimal(text) == value


def test_a_regex_must_also_compile_for_re2() -> None:
    # A backreference is valid Python but not RE2, which matches dial strings on Arrow columns.
    with pytest.raises(ValueError, match="RE2"):
        f.PrefixList(regex=True).parse(r"^(\d)\1")
    with pytest.raises(ValueError, match="longer than 15 digits"):
        f.Digits().parse("1234567890123456")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'abc", "''abc"),
        ("'", "''"),
        ("=", "'="),
        ("-", "'-"),
        ("+", "'+"),
        # Plain signed decimals are numbers to a spreadsheet, not formulas: as written.
        ("-12.5", "-12.5"),
        ("-50", "-50"),
        ("+442071234567", "+442071234567"),
        ("+1.5", "+1.5"),
        # Anything more than digits and one point is text that could run.
        ("-1e5", "'-1e5"),
        ("+44 20", "'+44 20"),
        ("-.5", "'-.5"),
        ("-12.", "'-12."),
        ("+٣", "'+٣"),  # digits of another script are not [0-9]
        # Nothing else changes.
        ("Acme", "Acme"),
        ("a=b", "a=b"),
        ("12.5", "12.5"),
        ("", ""),
        (" =x", " =x"),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_get_one_quote(cell: str, written: str) -> None:
    assert f.neutralise(cell) == written
    assert f.unneutralise(written) == cell


@pytest.mark.parametrize("cell", ["'abc", "'", "'-12.5", "'x=1", "' =x"])
def test_a_quote_that_neutralise_did_not_add_stays(cell: str) -> None:
    assert f.unneutralise(cell) == cell


@given(
    st.builds(
        str.__add__,
        st.sampled_from(["", "=", "+", "-", "@", "\t", "\r", "'", "''", "-1", "+44", "'="]),
        st.text(),
    )
)
def test_neutralise_is_undone_exactly(cell: str) -> None:
    written = f.neutralise(cell)
    assert f.unneutralise(written) == cell
    assert written == cell or written == "'" + cell
    # What a spreadsheet sees first is harmless: a quote, or a plain signed decimal.
    assert not written.startswith(("=", "+", "-", "@", "\t", "\r")) or (
        f.neutralise(written) == written
    )
