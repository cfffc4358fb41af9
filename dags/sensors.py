"""``rate_card_sensor``: a changed rate card re-rates the days of the open month (SPEC §7.4).

Its cursor holds the catalog's state name (new at every committed change) and each card's
fingerprint (``pipelines.cardwatch``); the cards are read only when the state moved. When a
card changed (added, removed, its settings or rates edited), it requests one ``rerate_job``
run for the customers whose calls those cards price, from the first day of the open (not
yet invoiced) month to tomorrow, at most the lake's newest day. The first tick only learns
the cards. The run key names the catalog state, so one change asks for one run.
"""

import json

import dagster as dg

from dags.jobs import rerate_job
from dags.resources import CdrflowHome
from pipelines.cardwatch import card_fingerprints, changed_cards, customers_of, open_days
from pipelines.catalog.store import Catalog
from pipelines.clock import now


@dg.sensor(
    job=rerate_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-rates the open month's days of the customers of a changed rate card.",
)
def rate_card_sensor(context: dg.SensorEvaluationContext, home: CdrflowHome) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else None
    path = home.home()
    with Catalog(path) as catalog:
        state = catalog.state()
        if cursor is not None and cursor["state"] == state:
            return dg.SensorResult(skip_reason="the catalog has not changed")
        cards = card_fingerprints(catalog)
        new_cursor = json.dumps({"state": state, "cards": cards})
        if cursor is None:
            return dg.SensorResult(skip_reason="learnt the rate cards", cursor=new_cursor)
        changed = changed_cards(cursor["cards"], cards)
        customers = customers_of(catalog, changed)
        days = open_days(path, catalog, now().date())
    if not changed or not customers or days is None:
        why = (
            "no rate card changed"
            if not changed
            else f"no customer uses {', '.join(changed)}"
            if not customers
            else "the open month has no rated day"
        )
        return dg.SensorResult(skip_reason=why, cursor=new_cursor)
    first, end = days
    config = {"from_day": first.isoformat(), "to_day": end.isoformat(), "customers": customers}
    request = dg.RunRequest(
        run_key=f"rates-{state}",
        run_config={"ops": {"rerate_op": {"config": config}}},
        tags={"cdrflow/cards": " ".join(changed)},
    )
    return dg.SensorResult(run_requests=[request], cursor=new_cursor)
