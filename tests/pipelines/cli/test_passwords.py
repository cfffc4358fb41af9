"""Passwords of contacts and SIP users: shown once when generated, stored only as hashes."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.catalog import Catalog
from pipelines.catalog.secrets import verify_password
from tests.pipelines.cli.driver import Cli

CLEAR = "S3cret-pass-123"
GENERATED = re.compile(r"password of (contact|auth entry) (\d+): (\S+)  \(shown once")


def store_bytes(home: Path) -> bytes:
    """The catalog store as it is on disk: the database and its write-ahead log."""
    files = [home / "catalog.sqlite", home / "catalog.sqlite-wal"]
    return b"".join(p.read_bytes() for p in files if p.exists())


def stored_hash(home: Path, group: str, ident: str) -> str:
    with Catalog(home) as catalog:
        digest = catalog.password_hash(group.replace("-", "_"), ident)
    assert digest is not None and digest.startswith("scrypt$")
    return digest


def assert_hidden(cli: Cli, home: Path, clear: str, group: str, ident: str) -> None:
    """``clear`` is nowhere: not in the store, any listing or an export."""
    secret = clear.encode()
    digest = stored_hash(home, group, ident)
    stored = store_bytes(home)
    assert digest.encode() in stored  # the bytes read are where the row lives
    assert secret not in stored
    for args in (
        (group, "list"),
        (group, "list", "--format", "json"),
        (group, "list", "--format", "csv"),
        (group, "show", ident),
        (group, "show", ident, "--format", "json"),
        (group, "show", ident, "--format", "csv"),
        (group, "search", ident),
        (group, "edit", ident, "--format", "json", "--customer-id", "initech"),
    ):
        result = cli.ok(*args)
        assert clear not in result.output, args
        assert "password" not in result.stdout, args  # not even an empty column
    export = home.parent / "export"
    cli.ok("catalog", "export", str(export))
    written = sorted(export.rglob("*"))
    assert any(p.name == "auth.csv" for p in written)
    for path in written:
        if path.is_file():
            assert secret not in path.read_bytes(), path
            assert "password" not in path.read_text().splitlines()[0], path


def test_contacts_add_shows_a_generated_password_once(
    cli: Cli, sample: Catalog, home: Path
) -> None:
    result = cli.ok(
        "contacts",
        "add",
        "--customer-id",
        "initech",
        "--name",
        "Peter Gibbons",
        "--email",
        "peter@initech.example",
    )
    found = GENERATED.findall(result.output)
    assert len(found) == 1, result.output
    _, ident, clear = found[0]
    assert result.output.count(clear) == 1
    assert len(clear) >= 12
    listed = [c for c in cli.json("contacts", "list") if c["email"] == "peter@initech.example"]
    assert [str(c["id"]) for c in listed] == [ident]
    digest = sample.password_hash("contacts", ident)
    assert digest is not None
    assert verify_password(clear, digest)
    assert not verify_password(clear + "x", digest)
    assert_hidden(cli, home, clear, "contacts", ident)


def test_contacts_add_in_json_keeps_the_password_off_stdout(cli: Cli, sample: Catalog) -> None:
    # stdout carries the JSON a program reads; the one-time password is for the operator.
    result = cli.ok(
        "contacts",
        "add",
        "--customer-id",
        "initech",
        "--name",
        "Peter Gibbons",
        "--email",
        "peter@initech.example",
        "--format",
        "json",
    )
    assert "password" not in result.stdout
    found = GENERATED.findall(result.stderr)
    assert len(found) == 1, result.stderr
    _, ident, clear = found[0]
    digest = sample.password_hash("contacts", ident)
    assert digest is not None
    assert verify_password(clear, digest)


def test_auth_user_with_password_stdin_never_prints_it(
    cli: Cli, sample: Catalog, home: Path
) -> None:
    result = cli.ok(
        "auth",
        "add",
        "--customer-id",
        "globex",
        "--kind",
        "user",
        "--value",
        "globex-sbc",
        "--channels",
        "30",
        "--password-stdin",
        input=CLEAR + "\n",
    )
    assert CLEAR not in result.output
    assert "password of" not in result.output
    entry = next(a for a in cli.json("auth", "list") if a["value"] == "globex-sbc")
    ident = str(entry["id"])
    digest = sample.password_hash("auth", ident)
    assert digest is not None and digest.startswith("scrypt$")
    assert verify_password(CLEAR, digest)
    assert not verify_password("S3cret-pass-124", digest)
    assert_hidden(cli, home, CLEAR, "auth", ident)


def test_auth_user_without_password_stdin_gets_a_generated_one(cli: Cli, sample: Catalog) -> None:
    result = cli.ok("auth", "add", "--customer-id", "globex", "--kind", "user", "--value", "g2")
    (kind, ident, clear), *more = GENERATED.findall(result.output)
    assert (kind, more) == ("auth entry", [])
    digest = sample.password_hash("auth", ident)
    assert digest is not None
    assert verify_password(clear, digest)


def test_a_short_password_is_refused_without_echoing_it(cli: Cli, sample: Catalog) -> None:
    message = cli.refused(
        "auth",
        "add",
        "--customer-id",
        "globex",
        "--kind",
        "user",
        "--value",
        "g3",
        "--password-stdin",
        input="short1\n",
    )
    assert message == "new auth entry: column password: is shorter than 8 characters"
    assert "short1" not in message
    assert "g3" not in [a["value"] for a in cli.json("auth", "list")]


def test_reset_password_generated_and_from_stdin(cli: Cli, sample: Catalog, home: Path) -> None:
    user = next(a for a in cli.json("auth", "list") if a["value"] == "initech-pbx1")
    ident = str(user["id"])
    assert verify_password("Initech-Secret-2026", sample.password_hash("auth", ident) or "")

    result = cli.ok("auth", "reset-password", ident)
    assert f"new password set for auth entry {ident}" in result.output
    (_, shown_id, clear), *more = GENERATED.findall(result.output)
    assert (shown_id, more) == (ident, [])
    digest = sample.password_hash("auth", ident) or ""
    assert verify_password(clear, digest)
    assert not verify_password("Initech-Secret-2026", digest)

    result = cli.ok("auth", "reset-password", ident, "--password-stdin", input=CLEAR + "\n")
    assert CLEAR not in result.output
    assert "password of" not in result.output
    assert verify_password(CLEAR, sample.password_hash("auth", ident) or "")

    contact = next(c for c in cli.json("contacts", "list") if c["name"] == "Lena Vogt")
    cid = str(contact["id"])
    result = cli.ok("contacts", "reset-password", cid, "--password-stdin", input=CLEAR + "\n")
    assert CLEAR not in result.output
    assert verify_password(CLEAR, sample.password_hash("contacts", cid) or "")
    # The edited contact's fields are untouched by a new password.
    assert cli.json("contacts", "show", cid) == contact
    assert_hidden(cli, home, CLEAR, "contacts", cid)
    assert cli.refused("contacts", "reset-password", "999") == "there is no contact '999'"


def test_imported_clear_passwords_are_stored_only_as_hashes(
    cli: Cli, sample: Catalog, home: Path
) -> None:
    # The sample's auth.csv carries clear passwords for two SIP users.
    for value, clear in (
        ("initech-pbx1", "Initech-Secret-2026"),
        ("hooli-sbc", "Hooli-Secret-2026"),
    ):
        user = next(a for a in cli.json("auth", "list") if a["value"] == value)
        assert verify_password(clear, sample.password_hash("auth", str(user["id"])) or "")
        assert_hidden(cli, home, clear, "auth", str(user["id"]))
