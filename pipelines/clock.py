"""Now (SPEC §7.6): the UTC wall clock, or ``$CDRFLOW_NOW`` (ISO 8601) when it is set, for
money, invoices and authorization, so that a test or a replay can say what time it is."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from schemas.errors import CdrflowError

ENV_NOW = "CDRFLOW_NOW"


def now() -> datetime:
    """The current instant, timezone-aware UTC."""
    text = os.environ.get(ENV_NOW, "").strip()
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CdrflowError(
            f"${ENV_NOW}: {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00Z); "
            "set it to one or unset it"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
