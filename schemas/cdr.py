"""Arrow schemas of the CDR a switch emits, the rated CDR, and the rejected record (SPEC §4-§5.4).

Every column name and type of the lake is spelled here and nowhere else. Money is
``DECIMAL(18,6)``; durations are decimals too, so that a re-rate starts from the exact
seconds the switch reported.
"""

from __future__ import annotations

import pyarrow as pa

MONEY = pa.decimal128(18, 6)
SECONDS = pa.decimal128(18, 6)
TIME = pa.timestamp("us", tz="UTC")

# The fields of SPEC §4, in order, with the types they have once validated.
INPUT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("callid", pa.string(), nullable=False),
    pa.field("dt", TIME, nullable=False),
    pa.field("dest_number", pa.string(), nullable=False),
    pa.field("source_cli", pa.string()),
    pa.field("duration", SECONDS),
    pa.field("sip_code", pa.int16(), nullable=False),
    pa.field("sip_reason", pa.string()),
    pa.field("release_reason", pa.string()),
    pa.field("pdd_ms", pa.int64()),
    pa.field("ring_duration", SECONDS),
    pa.field("customer_id", pa.string()),
    pa.field("source_ip", pa.string()),
    pa.field("sip_user", pa.string()),
    pa.field("provider_id", pa.string()),
    pa.field("provider_card_id", pa.string()),
    pa.field("switch", pa.string()),
    pa.field("direction", pa.string()),
)
INPUT = pa.schema(INPUT_FIELDS)
# The longest ``duration`` or ``ring_duration`` a CDR may carry, in seconds (about 31 years):
# no call lasts that long; billed seconds (mcd and pulse are at most a day each) stay within
# the rated lake's INT32 ``billed_duration``; and every accepted value has at most 15
# significant digits, which a JSON reader that goes through a binary double (DuckDB's, on
# the slow path) keeps exact.
MAX_DURATION = 1_000_000_000
# The years a ``dt`` may fall in: a switch whose clock was never set sends 1970 (epoch 0),
# a broken one the year 1 or 9999; billed, such a call lands in a partition no invoice
# reads and stretches every time axis of the stats across millennia.
FIRST_YEAR, LAST_YEAR = 2000, 2099
DT_FROM_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
DT_UNTIL_US = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z
# The UTC offsets a ``dt`` may carry: the world's run from -12:00 to +14:00; -25:00 or
# +01:60 is a broken clock or a typo, not a place, and read as given it moves the call by a day.
MAX_UTC_OFFSET_MINUTES = 14 * 60
INPUT_NAMES: tuple[str, ...] = tuple(f.name for f in INPUT_FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in INPUT_FIELDS if not f.nullable)
# The fields that are text: JSON gives them as strings (or, but for ``callid``, whole numbers).
TEXT_NAMES: tuple[str, ...] = tuple(f.name for f in INPUT_FIELDS if pa.types.is_string(f.type))

# Where a record came from: a file and its line (or row), or a topic, partition and offset.
ORIGIN_FIELDS: tuple[pa.Field, ...] = (
    pa.field("source", pa.string(), nullable=False),
    pa.field("line", pa.int64(), nullable=False),
)

# A block of validated records, whichever reader typed it (JSON Lines, CSV, Parquet, Kafka):
# the input fields, where each came from, and its index among the block's raw lines.
VALID = pa.schema([*INPUT_FIELDS, *ORIGIN_FIELDS, pa.field("row", pa.int64(), nullable=False)])

PACKAGE_DRAW = pa.struct(
    [
        pa.field("package_id", pa.string(), nullable=False),
        pa.field("start_date", pa.date32(), nullable=False),
        pa.field("period_start", pa.date32(), nullable=False),
        pa.field("seconds", pa.int32(), nullable=False),
    ]
)

# SPEC §5.4: every input field (customer_id now resolved), then what rating adds. Beyond the
# SPEC's list: `number` (the number rated, after the route's manipulation) and
# `package_draws` (every package a call drew on; the lake is the truth of package usage).
RATED_FIELDS: tuple[pa.Field, ...] = (
    *(f for f in INPUT_FIELDS),
    pa.field("customer_status", pa.string()),
    pa.field("card_id", pa.string()),
    pa.field("number", pa.string()),
    pa.field("dest_code", pa.string()),
    pa.field("dest_name", pa.string()),
    pa.field("billed_duration", pa.int32()),
    pa.field("rate", MONEY),
    pa.field("connect_fee", MONEY),
    pa.field("package_seconds", pa.int32()),
    pa.field("package_id", pa.string()),
    pa.field("package_draws", pa.list_(PACKAGE_DRAW)),
    pa.field("charge", MONEY),
    pa.field("tax", MONEY),
    pa.field("currency", pa.string()),
    pa.field("provider_charge", MONEY),
    pa.field("provider_currency", pa.string()),
    pa.field("profit", MONEY),
    pa.field("rated_at", TIME),
    *ORIGIN_FIELDS,
    # The duration the switch reported, kept by ``cdrflow recalc`` when it set another one
    # (SPEC §7.4); null otherwise. Files written before it lack the column: read the lake
    # with ``union_by_name = true`` wherever all columns are read.
    pa.field("original_duration", SECONDS),
)
RATED = pa.schema(RATED_FIELDS)

REJECT_REASONS: tuple[str, ...] = (
    "invalid",
    "duplicate",
    "unknown_customer",
    "no_route",
    "no_rate",
)

REJECTED_FIELDS: tuple[pa.Field, ...] = (
    pa.field("callid", pa.string()),
    pa.field("dt", TIME),
    pa.field("customer_id", pa.string()),
    pa.field("reject_reason", pa.string(), nullable=False),
    pa.field("reject_detail", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
    pa.field("rejected_at", TIME),
    *ORIGIN_FIELDS,
    # The header line of the CSV file a record came from (null for JSON Lines, Parquet, Kafka
    # and re-rates, whose ``raw`` is a JSON object): with it, ``raw`` reads again as the record
    # it was (``cdrflow rejects replay``). Files written before it lack the column.
    pa.field("csv_header", pa.string()),
)
REJECTED = pa.schema(REJECTED_FIELDS)
