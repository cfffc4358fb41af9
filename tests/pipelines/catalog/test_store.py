"""The catalog store: rules of SPEC §3 on single writes, deletion, versions, migrations."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines.catalog import Catalog, migrations
from pipelines.catalog.secrets import verify_password
from pipelines.catalog.tables import meta
from schemas.errors import CdrflowError, ValidationError

CUSTOMER = {"customer_id": "c1", "name": "One", "status": "active", "currency": "USD"}
CARD = {"card_id": "k1", "name": "Card", "currency": "USD", "direction": "termination"}


def test_add_fills_defaults_and_keeps_money_exact(catalog: Catalog) -> None:
    row = catalog.add("customers", {**CUSTOMER, "tax_percent": "7.125", "debit_limit": "0.000001"})
    assert row["tax_percent"] == Decimal("7.125")
    assert row["debit_limit"] == Decimal("0.000001")
    assert row["portal_access"] is False
    card = catalog.add("rate_cards", CARD)
    assert (card["precision"], card["rounding"], card["duration_rounding"]) == (4, "half_up", "up")
    rate = catalog.add("rates", {"card_id": "k1", "prefix": "44", "name": "UK", "rate": "0.015"})
    assert (rate["mcd"], rate["pulse"], rate["grace"], rate["connect_fee"]) == (0, 1, 0, 0)
    assert catalog.get("customers", "c1")["tax_percent"] == Decimal("7.125")


def test_required_columns_are_all_reported(catalog: Catalog) -> None:
    with pytest.raises(ValidationError) as err:
        catalog.add("customers", {"customer_id": "c1"})
    text = str(err.value)
    for column in ("name", "status", "currency"):
        assert f"column {column}: is required" in text


def test_currency_is_fixed_once_the_customer_exists(catalog: Catalog) -> None:
    catalog.add("customers", CUSTOMER)
    with pytest.raises(ValidationError, match="cannot change from USD to EUR"):
        catalog.edit("customers", "c1", {"currency": "EUR"})
    assert catalog.get("customers", "c1")["currency"] == "USD"


def test_route_card_currency_must_match_the_customer(catalog: Catalog) -> None:
    catalog.add("customers", CUSTOMER)
    catalog.add("rate_cards", {**CARD, "card_id": "eur", "currency": "EUR"})
    with pytest.raises(
        ValidationError, match="rate card 'eur' is in EUR but customer 'c1' is in USD"
    ):
        catalog.add("routes", {"customer_id": "c1", "card_id": "eur"})
    catalog.add("rate_cards", CARD)
    route = catalog.add("routes", {"customer_id": "c1", "card_id": "k1"})
    # Changing the card's currency afterwards would break the route: refused too.
    with pytest.raises(ValidationError, match=f"route #{route['id']}: column card_id"):
        catalog.edit("rate_cards", "k1", {"currency": "EUR"})


def test_references_must_exist(catalog: Catalog) -> None:
    with pytest.raises(ValidationError, match="customer 'ghost' does not exist"):
        catalog.add("routes", {"customer_id": "ghost", "card_id": "k1"})


def test_key_cannot_repeat_or_change(catalog: Catalog) -> None:
    catalog.add("customers", CUSTOMER)
    with pytest.raises(ValidationError, match="customer customer_id=c1 repeats"):
        catalog.add("customers", CUSTOMER)
    with pytest.raises(CdrflowError, match="key and cannot change"):
        catalog.edit("customers", "c1", {"customer_id": "c2"})


def test_duplicate_prefix_and_effective_from_in_a_card(catalog: Catalog) -> None:
    catalog.add("rate_cards", CARD)
    row = {"card_id": "k1", "prefix": "44", "name": "UK", "rate": "0.01"}
    catalog.add("rates", row)
    with pytest.raises(ValidationError, match="prefix=44, effective_from= repeats"):
        catalog.add("rates", row)
    # Another version of the prefix, effective later, is fine.
    catalog.add("rates", {**row, "effective_from": "2027-01-01"})


def test_delete_cascades_what_a_customer_owns(sample: Catalog) -> None:
    assert sample.list("routes", customer="globex")
    sample.delete("customers", "globex", force=True)  # globex has a payment
    for entity in ("routes", "auth", "contacts", "alerts", "contracts", "payments"):
        assert not sample.list(entity, customer="globex"), entity


def test_customer_with_payments_needs_force(sample: Catalog) -> None:
    with pytest.raises(
        ValidationError, match="customer acme: has 2 payments; delete it with --force"
    ):
        sample.delete("customers", "acme")
    assert sample.get("customers", "acme")


def test_customer_with_rated_cdrs_needs_force(sample: Catalog, home: Path) -> None:
    part = home / "lake" / "rated" / "date=2026-11-01"
    part.mkdir(parents=True)
    table = pa.table({"callid": ["a", "b"], "customer_id": ["hooli", "hooli"]})
    pq.write_table(table, part / "part-0.parquet")
    with pytest.raises(ValidationError, match="customer hooli: has 2 rated CDRs in the lake"):
        sample.delete("customers", "hooli")
    sample.delete("customers", "hooli", force=True)
    with pytest.raises(CdrflowError, match="there is no customer 'hooli'"):
        sample.get("customers", "hooli")


def test_a_card_in_use_cannot_be_deleted(sample: Catalog) -> None:
    with pytest.raises(ValidationError, match=r"rate card retail-usd: is still used by 3 routes"):
        sample.delete("rate_cards", "retail-usd")
    # An unused card goes, with its rate rows.
    sample.add("rate_cards", {**CARD, "card_id": "spare"})
    sample.add("rates", {"card_id": "spare", "prefix": "1", "name": "US", "rate": "0.01"})
    sample.delete("rate_cards", "spare")
    assert sample.list("rates", card="spare") == []


def test_every_write_bumps_the_version_and_a_refusal_does_not(catalog: Catalog) -> None:
    start = catalog.version()
    catalog.add("customers", CUSTOMER)
    assert catalog.version() == start + 1
    with pytest.raises(ValidationError):
        catalog.add("customers", CUSTOMER)
    assert catalog.version() == start + 1


def test_passwords_are_stored_only_as_hashes(catalog: Catalog, home: Path) -> None:
    catalog.add("customers", CUSTOMER)
    clear = "Very-Secret-Pass-42"
    row = catalog.add(
        "auth", {"customer_id": "c1", "kind": "user", "value": "pbx", "password": clear}
    )
    assert "password" not in row
    stored = catalog.password_hash("auth", str(row["id"]))
    assert stored is not None and clear not in stored
    assert verify_password(clear, stored)
    assert not verify_password("wrong-password", stored)
    catalog.close()
    for path in home.glob("catalog.sqlite*"):
        assert clear.encode() not in path.read_bytes(), path


def test_an_ip_entry_has_no_password(catalog: Catalog) -> None:
    catalog.add("customers", CUSTOMER)
    with pytest.raises(ValidationError, match="only a kind=user entry has a password"):
        catalog.add(
            "auth", {"customer_id": "c1", "kind": "ip", "value": "10.0.0.1", "password": "x" * 10}
        )


def test_list_filters_and_search(sample: Catalog) -> None:
    assert [r["customer_id"] for r in sample.list("customers", status="pending")] == ["umbrella"]
    assert {r["customer_id"] for r in sample.list("customers", text="GMBH")} == {"globex"}
    assert {r["payment_id"] for r in sample.list("payments", customer="acme")} == {
        "PAY-2026-0001",
        "PAY-2026-0004",
    }
    with pytest.raises(CdrflowError, match="have no status"):
        sample.list("routes", status="active")


def test_a_new_store_is_at_the_newest_schema(home: Path) -> None:
    with Catalog(home) as catalog, catalog.engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.MIGRATIONS[-1].version


def test_an_older_store_runs_the_newer_migrations(catalog: Catalog) -> None:
    head = migrations.MIGRATIONS[-1].version
    added = migrations.Migration(
        head + 1,
        "customers get a column",
        lambda conn: conn.exec_driver_sql("ALTER TABLE customers ADD COLUMN nickname TEXT"),
    )
    newer = (*migrations.MIGRATIONS, added)
    with catalog.transaction(write=True) as conn:
        assert migrations.migrate(conn, newer) == head + 1
    with catalog.transaction(write=True) as conn:
        assert migrations.migrate(conn, newer) == head + 1  # nothing left to run
        columns = {c["name"] for c in sa.inspect(conn).get_columns("customers")}
        assert "nickname" in columns
        assert migrations.current_version(conn) == head + 1


def test_a_store_from_before_the_state_gets_one(catalog: Catalog) -> None:
    """Stores made before migration 2 had no state; migrating names theirs."""
    with catalog.transaction(write=True) as conn:
        conn.execute(sa.delete(meta).where(meta.c.key == "state"))
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 2")
    assert catalog.state() is None
    with catalog.transaction(write=True) as conn:
        migrations.migrate(conn)
    assert catalog.state() is not None


def test_a_store_from_before_billing_gets_did_dates_the_company_and_documents(
    sample: Catalog, home: Path
) -> None:
    with sample.transaction(write=True) as conn:
        for table in ("document_lines", "documents", "document_counter", "company"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        for column in ("start_date", "end_date"):
            conn.exec_driver_sql(f"ALTER TABLE dids DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 3")
    sample.close()
    with Catalog(home) as catalog:  # opening it migrates
        dids = catalog.list("dids")
        assert [(d["number"], d["start_date"], d["end_date"]) for d in dids] == [
            ("12125550100", None, None),
            ("12125550101", None, None),
            ("18005550199", None, None),
        ]
        catalog.edit("dids", "12125550100", {"start_date": "2026-01-15"})
        assert catalog.add("company", {"name": "Northwind"})["id"] == 1
        with catalog.transaction() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert {"documents", "document_lines", "document_counter"} <= tables


def test_the_company_is_one_row(sample: Catalog) -> None:
    with pytest.raises(ValidationError, match=r"is a second company: company\.csv holds one row"):
        sample.add("company", {"name": "Another Carrier"})
    assert sample.edit("company", "1", {"phone": "+44 20 0000 0000"})["phone"] == "+44 20 0000 0000"


def test_a_did_ends_on_or_after_it_starts(sample: Catalog) -> None:
    with pytest.raises(
        ValidationError, match="end_date: 2026-01-14 must be on or after start_date"
    ):
        sample.edit("dids", "12125550100", {"end_date": "2026-01-14"})
    assert (
        sample.edit("dids", "12125550100", {"end_date": "2026-01-15"})["end_date"] == "2026-01-15"
    )


def test_a_store_newer_than_the_program_is_refused(catalog: Catalog, home: Path) -> None:
    newer = (*migrations.MIGRATIONS, migrations.Migration(99, "future", lambda conn: None))
    with catalog.transaction(write=True) as conn:
        migrations.migrate(conn, newer)
    catalog.close()
    with pytest.raises(CdrflowError, match="schema version 99, newer than this cdrflow knows"):
        Catalog(home)


def test_effective_times_compare_as_times_not_text(catalog: Catalog) -> None:
    catalog.add("rate_cards", CARD)
    row = {"card_id": "k1", "prefix": "44", "name": "UK", "rate": "0.01"}
    # "…00.5Z" sorts before "…00Z" as text, yet is half a second later.
    catalog.add(
        "rates",
        {**row, "effective_from": "2026-12-01T00:00:00Z", "effective_to": "2026-12-01T00:00:00.5Z"},
    )
    with pytest.raises(ValidationError, match="must be after"):
        catalog.add(
            "rates",
            {
                **row,
                "effective_from": "2026-12-02T00:00:00.5Z",
                "effective_to": "2026-12-02T00:00:00Z",
            },
        )
