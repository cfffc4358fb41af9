"""The Arrow schema of a day's summary (SPEC §6 per customer and per provider, §7: the
daily summaries Dagster keeps in ``lake/summaries/date=YYYY-MM-DD/summary.parquet``)."""

from __future__ import annotations

import pyarrow as pa

from schemas.cdr import MONEY

# ``kind`` of a row: the metrics of one customer's calls in one currency, or of one
# provider's calls.
CUSTOMER, PROVIDER = "customer", "provider"

SUMMARY = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("currency", pa.string()),  # the customer's; null on provider rows
        pa.field("attempts", pa.int64(), nullable=False),
        pa.field("answered", pa.int64(), nullable=False),
        pa.field("asr", pa.float64()),
        pa.field("acd", pa.float64()),
        pa.field("pdd", pa.float64()),
        pa.field("ner", pa.float64()),
        pa.field("minutes", pa.float64()),
        pa.field("billed_minutes", pa.float64()),
        # Null where the group's calls are in more than one currency (a provider's charges
        # to customers of several currencies, SPEC §6 as ``cdrflow stats`` shows it).
        pa.field("charge", MONEY),
        pa.field("provider_charge", MONEY),
        pa.field("profit", MONEY),
        pa.field("channels", pa.int64()),
        pa.field("cps", pa.int64()),
    ]
)
