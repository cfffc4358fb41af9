"""When an alert fires (SPEC §9, §9.1): the crossing rules, pure of any I/O.

An alert (a row of the catalog's alerts, §3) watches one area of one customer's live values
and fires when ``value operator threshold`` *becomes* true: once, then it stays quiet while
the condition holds, and re-arms when the condition is false again. An alert is armed when
first seen and when edited (any of its columns changed), so a condition that is already
true then fires once. Comparisons are exact (``Decimal``), never floats.

Each alert keeps a small ``State``: armed or not, how many times it has fired (the crossing
number: with the alert id, the key of a firing), and the definition it was last seen with.
Crossing numbers keep counting across edits, so that a key is never used twice.
``evaluate`` takes the states and a customer's new values and returns the firings and the
states that changed; the caller keeps the states (the live app: a changelog-backed table)
and records the firings (``pipelines.live.firings``).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

AREAS = ("balance", "asr", "acd", "pdd", "channels", "cps")
# The unit each area's value is in (SPEC §9.1); balance is money in the customer's currency.
UNITS = {"balance": "", "asr": "%", "acd": "s", "pdd": "ms", "channels": "", "cps": "/s"}
OPERATORS: Mapping[str, Callable[[Decimal, Decimal], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def text(value: Decimal) -> str:
    """A decimal as plain text, never with an exponent (``1E+2`` is ``100``)."""
    return format(value, "f")


@dataclass(frozen=True)
class Alert:
    """One alert row of the catalog."""

    alert_id: str
    customer_id: str
    name: str
    area: str
    operator: str
    threshold: Decimal
    recipient: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Alert:
        """An alert from a catalog row (``Catalog.list("alerts")``: threshold a Decimal or
        its text)."""
        area, op = str(row["area"]), str(row["operator"])
        if area not in AREAS:
            raise ValueError(f"alert {row['alert_id']}: area {area!r} is not one of {AREAS}")
        if op not in OPERATORS:
            raise ValueError(f"alert {row['alert_id']}: operator {op!r} is not one of {OPERATORS}")
        return cls(
            alert_id=str(row["alert_id"]),
            customer_id=str(row["customer_id"]),
            name=str(row["name"]),
            area=area,
            operator=op,
            threshold=Decimal(str(row["threshold"])),
            recipient=str(row["recipient"]),
        )

    @property
    def definition(self) -> str:
        """The alert's columns as one text: a changed text is an edited alert. The threshold
        is normalized, so that 100 and 100.00 are one definition."""
        return json.dumps(
            [
                self.customer_id,
                self.name,
                self.area,
                self.operator,
                text(self.threshold.normalize()),
                self.recipient,
            ],
            ensure_ascii=False,
        )

    def holds(self, value: Decimal) -> bool:
        """Whether ``value operator threshold`` is true."""
        return OPERATORS[self.operator](value, self.threshold)


@dataclass(frozen=True)
class State:
    """What an alert remembers between evaluations."""

    armed: bool
    crossings: int  # firings so far: the next one is crossings + 1
    definition: str

    def to_json(self) -> dict[str, Any]:
        return {"armed": self.armed, "crossings": self.crossings, "definition": self.definition}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        return cls(bool(data["armed"]), int(data["crossings"]), str(data["definition"]))


@dataclass(frozen=True)
class Firing:
    """One firing of an alert: the message SPEC §9 publishes, and its key."""

    alert_id: str
    crossing: int
    customer_id: str
    name: str
    area: str
    operator: str
    threshold: Decimal
    value: Decimal
    at: datetime
    recipient: str

    @property
    def key(self) -> str:
        """The firing's name: alert id and crossing number (``~`` is not in an id)."""
        return f"{self.alert_id}~{self.crossing}"

    @property
    def definition(self) -> str:
        return self.alert.definition

    @property
    def alert(self) -> Alert:
        return Alert(
            self.alert_id,
            self.customer_id,
            self.name,
            self.area,
            self.operator,
            self.threshold,
            self.recipient,
        )

    def message(self) -> dict[str, Any]:
        """The JSON of the ``alerts`` topic and of a webhook's POST: numbers as exact text,
        ``at`` ISO 8601 UTC; ``crossing`` besides SPEC §9's fields, so that a consumer can
        tell a firing delivered again (at least once) from a new one."""
        return {
            "alert_id": self.alert_id,
            "crossing": self.crossing,
            "customer_id": self.customer_id,
            "name": self.name,
            "area": self.area,
            "operator": self.operator,
            "threshold": text(self.threshold),
            "value": text(self.value),
            "at": iso(self.at),
        }

    def summary(self) -> str:
        """One line for a person: who, what, and against which threshold."""
        unit = UNITS[self.area]
        return (
            f"{self.name}: customer {self.customer_id} {self.area} {text(self.value)}{unit} "
            f"{self.operator} {text(self.threshold)}{unit}"
        )


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, microseconds only when there are any."""
    moment = moment.astimezone(UTC)
    shown = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return shown.replace("+00:00", "Z")


def evaluate(
    alerts: Iterable[Alert],
    states: Mapping[str, State],
    values: Mapping[str, Decimal | int | None],
    at: datetime,
    recorded: Mapping[str, State] | None = None,
) -> tuple[list[Firing], dict[str, State]]:
    """The firings of ``alerts`` given one customer's new ``values`` (area → value; an area
    that is absent or None is not evaluated), and the states that changed.

    ``recorded`` is, per alert, the state its newest recorded firing implies (fired, so not
    armed, at that crossing, with that definition): it wins over a state that is behind it,
    as after a crash between recording a firing and keeping the state. So a firing is never
    made twice, and a crossing number is never reused.
    """
    recorded = recorded or {}
    firings: list[Firing] = []
    changed: dict[str, State] = {}
    for alert in alerts:
        raw = values.get(alert.area)
        if raw is None:
            continue
        if isinstance(raw, float):  # a float is never exact enough to decide on
            raise TypeError(f"{alert.area} value {raw!r} is a float, not a Decimal")
        value = Decimal(raw)
        before = states.get(alert.alert_id)
        state = before
        lake = recorded.get(alert.alert_id)
        if lake is not None and (state is None or lake.crossings > state.crossings):
            state = lake
        if state is None:
            state = State(armed=True, crossings=0, definition=alert.definition)
        elif state.definition != alert.definition:
            state = State(armed=True, crossings=state.crossings, definition=alert.definition)
        if alert.holds(value):
            if state.armed:
                state = State(
                    armed=False, crossings=state.crossings + 1, definition=state.definition
                )
                firings.append(
                    Firing(
                        alert_id=alert.alert_id,
                        crossing=state.crossings,
                        customer_id=alert.customer_id,
                        name=alert.name,
                        area=alert.area,
                        operator=alert.operator,
                        threshold=alert.threshold,
                        value=value,
                        at=at,
                        recipient=alert.recipient,
                    )
                )
        elif not state.armed:
            state = State(armed=True, crossings=state.crossings, definition=state.definition)
        if state != before:
            changed[alert.alert_id] = state
    return firings, changed


def by_customer(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Alert]]:
    """Alert rows grouped by customer, in catalog order."""
    out: dict[str, list[Alert]] = {}
    for row in rows:
        alert = Alert.of(row)
        out.setdefault(alert.customer_id, []).append(alert)
    return out
