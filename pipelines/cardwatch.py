"""Which rate cards changed, whose calls they price, and which days are still open to a
re-rate (SPEC §7.4): what the Dagster sensor ``rate_card_sensor`` asks the catalog and the lake.

A card's fingerprint is a hash of its settings (currency, precision, rounding) and of its
rate rows in a fixed order, so two catalogs with the same card give the same fingerprint,
whatever else changed. The open month is the month after the newest month with an issued
invoice (the first day of the lake when nothing has been invoiced): re-rating earlier days
would change invoiced months, which only an operator's ``cdrflow rerate`` should do (their
next build then issues notes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

from billing.invoices import INVOICE
from pipelines.catalog.documents import listing
from pipelines.catalog.store import Catalog
from pipelines.home import rated_lake
from pipelines.lakefiles import whole_runs
from pipelines.ledger import next_month
from pipelines.rerate import newest_day


def card_fingerprints(catalog: Catalog) -> dict[str, str]:
    """Each rate card's fingerprint (``card_id`` → hex)."""
    columns = catalog.rate_columns()
    rows: dict[str, list[tuple[str, ...]]] = {}
    at = list(columns).index("card_id")
    for values in zip(*columns.values(), strict=True):
        rows.setdefault(values[at], []).append(tuple(str(v) for v in values))
    out = {}
    for card in catalog.list("rate_cards"):
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps(card, sort_keys=True, default=str).encode())
        for rate in sorted(rows.get(card["card_id"], [])):
            digest.update(json.dumps(rate).encode())
        out[card["card_id"]] = digest.hexdigest()
    return out


def changed_cards(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Cards added, removed or changed between two ``card_fingerprints``."""
    return sorted(c for c in old.keys() | new.keys() if old.get(c) != new.get(c))


def customers_of(catalog: Catalog, cards: Iterable[str]) -> list[str]:
    """Customers whose calls a card of ``cards`` prices: through a route, or a DID (its
    customer card or its provider card)."""
    wanted = set(cards)
    found = {r["customer_id"] for r in catalog.list("routes") if r["card_id"] in wanted}
    for did in catalog.list("dids"):
        if wanted & {did["customer_card_id"], did["provider_card_id"]}:
            found.add(did["customer_id"])
    return sorted(found)


def open_days(home: Path, catalog: Catalog, today: date) -> tuple[date, date] | None:
    """[first, end) of the days a rate change re-rates: from the first day of the open
    month (or of the lake, when no month was invoiced) to tomorrow, at most the day after
    the lake's newest day; None when the lake has no day there."""
    months = [doc.month for doc in listing(catalog) if doc.kind == INVOICE]
    newest = newest_day(rated_lake(home))
    if newest is None:
        return None
    if months:
        first = next_month(max(months))
    else:
        first = min(
            (
                date.fromisoformat(Path(f).parent.name.removeprefix("date="))
                for f in whole_runs(rated_lake(home))
            ),
            default=newest,
        )
    end = min(today + timedelta(days=1), newest + timedelta(days=1))
    return (first, end) if first < end else None
