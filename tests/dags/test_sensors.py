"""The rate-card sensor: a changed card asks once for a re-rate of the open month."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dags.definitions import defs
from dags.resources import CdrflowHome
from dags.sensors import rate_card_sensor
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_card
from pipelines.cli.demo import sample_catalog
from pipelines.ledger import build_month
from tests.pipelines.billed import NOVEMBER, NOW


def tick(home: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"home": CdrflowHome(path=str(home))}
    )
    result = rate_card_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_changed_card_re_rates_its_customers_open_month_once(
    billed_home: Path, tmp_path: Path
) -> None:
    with Catalog(billed_home) as catalog:
        build_month(billed_home, catalog, NOVEMBER, NOW)  # November is closed
    first = tick(billed_home, None)
    assert not first.run_requests and first.cursor
    assert tick(billed_home, first.cursor).skip_reason is not None
    with Catalog(billed_home) as catalog:
        catalog.add(
            "payments",
            {
                "payment_id": "p-sensor",
                "customer_id": "acme",
                "amount": "5",
                "status": "completed",
                "at": "2026-12-06",
            },
        )
    unrelated = tick(billed_home, first.cursor)
    assert not unrelated.run_requests and unrelated.cursor != first.cursor

    rates = (sample_catalog() / "rates" / "wholesale-eur.csv").read_text().splitlines()
    header, row, *rest = rates
    fields = row.split(",")
    fields[2] = str(float(fields[2]) * 2)
    changed = tmp_path / "wholesale-eur.csv"
    changed.write_text("\n".join([header, ",".join(fields), *rest]) + "\n")
    with Catalog(billed_home) as catalog:
        import_card(catalog, "wholesale-eur", changed)
    after = tick(billed_home, unrelated.cursor)
    [request] = after.run_requests
    config = request.run_config["ops"]["rerate_op"]["config"]
    # globex and hooli route through the card; December is open, its lake ends on the 5th.
    assert config == {"from_day": "2026-12-01", "to_day": "2026-12-06",
                      "customers": ["globex", "hooli"]}  # fmt: skip
    assert request.tags["cdrflow/cards"] == "wholesale-eur"
    assert not tick(billed_home, after.cursor).run_requests

    result = defs.resolve_job_def("rerate_job").execute_in_process(run_config=request.run_config)
    assert result.output_for_node("rerate_op")["customers"] == ["globex", "hooli"]
