"""The checks of the books against the lake find what differs, and only that."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from pipelines.audits import invoice_usage
from pipelines.cardwatch import open_days
from pipelines.catalog import Catalog
from pipelines.ledger import build_month
from pipelines.rerate import recalc
from tests.pipelines.billed import NOVEMBER, NOW, month_calls


def test_issued_usage_that_the_lake_no_longer_sums_is_named(billed_home: Path) -> None:
    with Catalog(billed_home) as catalog:
        lake = month_calls(billed_home, NOVEMBER)
        customers, gaps = invoice_usage(billed_home, catalog, NOVEMBER)  # nothing issued yet
        assert customers == len(lake)
        assert {(g.customer_id, g.issued, g.lake) for g in gaps} == {
            (c, Decimal(0), sum(v[2] for v in dests.values())) for c, dests in lake.items()
        }
        build_month(billed_home, catalog, NOVEMBER, NOW)
        customers, gaps = invoice_usage(billed_home, catalog, NOVEMBER)
        assert customers == len(month_calls(billed_home, NOVEMBER)) and gaps == []
        before = month_calls(billed_home, NOVEMBER, "customer_id = 'acme'")["acme"]
        recalc(billed_home, date(2026, 11, 2), Decimal(60), "acme", Decimal(600))
        after = month_calls(billed_home, NOVEMBER, "customer_id = 'acme'")["acme"]
        _, gaps = invoice_usage(billed_home, catalog, NOVEMBER)
        [gap] = gaps
        assert gap.customer_id == "acme"
        assert gap.issued == sum(v[2] for v in before.values())
        assert gap.lake == sum(v[2] for v in after.values()) != gap.issued


def test_the_open_days_start_after_the_newest_invoiced_month(billed_home: Path) -> None:
    with Catalog(billed_home) as catalog:
        # Nothing invoiced: the whole lake is open, up to its newest day.
        assert open_days(billed_home, catalog, NOW.date()) == (date(2026, 11, 2), date(2026, 12, 6))
        assert open_days(billed_home, catalog, date(2026, 11, 20)) == (
            date(2026, 11, 2), date(2026, 11, 21)
        )  # fmt: skip
        build_month(billed_home, catalog, NOVEMBER, NOW)
        assert open_days(billed_home, catalog, NOW.date()) == (date(2026, 12, 1), date(2026, 12, 6))
        build_month(billed_home, catalog, date(2026, 12, 1), NOW)
        assert open_days(billed_home, catalog, NOW.date()) is None
