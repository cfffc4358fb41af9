"""``--help`` reads as prose: one line a paragraph (Rich keeps a single line break) and
entity commands in plain English."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.cli import app, prose
from schemas.catalog import ENTITIES


def test_a_docstring_wrapped_in_the_source_is_one_line_a_paragraph() -> None:
    doc = """Simulate a call: who pays,
        which route and why.

        Nothing is written.
        """
    assert prose(doc) == "Simulate a call: who pays, which route and why.\n\nNothing is written."
    helped = [c for c in app.registered_commands if c.help]
    assert {c.name for c in helped} >= {"price", "report", "stream", "simulate"}
    assert all("\n" not in p for c in helped for p in c.help.split("\n\n"))


def test_entity_commands_say_a_or_an_and_the_plural() -> None:
    assert {e.name: (e.article, e.plural) for e in ENTITIES} == {
        "customers": ("a", "customers"),
        "providers": ("a", "providers"),
        "rate_cards": ("a", "rate cards"),
        "rates": ("a", "rates"),
        "routes": ("a", "routes"),
        "auth": ("an", "auth entries"),
        "packages": ("a", "packages"),
        "customer_packages": ("a", "customer packages"),
        "dids": ("a", "DIDs"),
        "payments": ("a", "payments"),
        "alerts": ("an", "alerts"),
        "contacts": ("a", "contacts"),
        "cli_rules": ("a", "CLI rules"),
        "contracts": ("a", "contracts"),
        "company": ("a", "companies"),
    }
    shown = CliRunner().invoke(app, ["auth", "--help"], terminal_width=200).stdout
    assert "Add an auth entry." in shown and "List auth entries." in shown
