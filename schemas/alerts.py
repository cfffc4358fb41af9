"""The Arrow schemas of the alert records in the lake (SPEC §2, §9).

``FIRED``: one row per firing, in ``lake/alerts/date=YYYY-MM-DD/``: the fields of the message
published to the ``alerts`` topic (its ``at`` as ``fired_at``: AT is a word of SQL), plus the
crossing number (with ``alert_id``, the key of a firing) and the recipient it was for.
``threshold`` and ``value`` are the exact decimal text the message carries (an ASR or an ACD
may have more places than money's six); cast them to DECIMAL to compute.

``DELIVERED``: one row per firing once its delivery is settled, in
``lake/alert_deliveries/date=YYYY-MM-DD/`` (the date of the firing): delivered, or failed
after its last try, with that try's error.
"""

from __future__ import annotations

import pyarrow as pa

AT = pa.timestamp("us", tz="UTC")

FIRED = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("crossing", pa.int64(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("area", pa.string(), nullable=False),
        pa.field("operator", pa.string(), nullable=False),
        pa.field("threshold", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("fired_at", AT, nullable=False),  # the message's ``at``
        pa.field("recipient", pa.string(), nullable=False),
    ]
)

# ``status`` of a settled delivery.
DELIVERED_OK, DELIVERY_FAILED = "delivered", "failed"

DELIVERED = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("crossing", pa.int64(), nullable=False),
        pa.field("recipient", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),  # email | webhook
        pa.field("status", pa.string(), nullable=False),  # delivered | failed
        pa.field("tries", pa.int64(), nullable=False),
        pa.field("error", pa.string()),  # the last try's, when it failed
        pa.field("fired_at", AT, nullable=False),
        pa.field("settled_at", AT, nullable=False),
    ]
)
