"""Rules across rows and tables of the catalog (SPEC §3), checked on a whole would-be state.

Every write, one command's or a whole import's, builds the catalog as it would be after the
change and passes it here before anything is stored; a non-empty answer refuses the write.
A rule is judged only on what was read: a column that did not read (``Rec.bad``) and a table
known only in part (``partial``: a file unusable, rows left out) are already reported where
they are, and judging what follows from them would only report the same problem again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.catalog import BY_NAME, ENTITIES, Entity
from schemas.errors import Problem


@dataclass
class Rec:
    """One row of a would-be catalog and where it came from (a file line, or the store)."""

    row: dict[str, Any]
    where: str
    line: int | None = None
    id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Columns whose text did not read (reported with their line): no rule judges them.
    bad: frozenset[str] = frozenset()

    def problem(self, column: str | None, message: str) -> Problem:
        return Problem(self.where, self.line, column, message)


State = Mapping[str, list[Rec]]


def check(
    state: State,
    before: Mapping[str, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    partial: Collection[str] = (),
) -> list[Problem]:
    """All problems of ``state``; ``before`` holds the stored rows of keyed entities by key;
    rows of ``partial`` entities are known only in part: a name missing from them is not
    judged unknown."""
    problems: list[Problem] = []
    keys = {
        e.name: _keys(e, state.get(e.name, ())) for e in ENTITIES if e.key and e.name not in partial
    }
    for entity in ENTITIES:
        recs = state.get(entity.name, ())
        problems += _unique(entity, recs)
        problems += _single(entity, recs)
        problems += _references(entity, recs, keys)
        problems += _immutable(entity, recs, before.get(entity.name, {}))
    problems += _currencies(state, keys)
    return problems


def _keys(entity: Entity, recs: Iterable[Rec]) -> dict[tuple[Any, ...], Rec]:
    out: dict[tuple[Any, ...], Rec] = {}
    for rec in recs:
        out.setdefault(entity.key_of(rec.row), rec)
    return out


def _place(rec: Rec) -> str:
    return f"line {rec.line}" if rec.line is not None and rec.where else rec.where


def _unique(entity: Entity, recs: Iterable[Rec]) -> list[Problem]:
    problems = []
    for columns in ((entity.key,) if entity.key else ()) + entity.unique:
        seen: dict[tuple[Any, ...], Rec] = {}
        for rec in recs:
            if rec.bad.intersection(columns):
                continue  # not its value: two unreadable prefixes do not repeat each other
            value = tuple(rec.row.get(c) for c in columns)
            first = seen.setdefault(value, rec)
            if first is not rec:
                shown = ", ".join(
                    f"{c}={v if v is not None else ''}" for c, v in zip(columns, value, strict=True)
                )
                where = f"line {first.line}" if first.where == rec.where else _place(first)
                problems.append(rec.problem(None, f"{entity.singular} {shown} repeats {where}"))
    return problems


def _single(entity: Entity, recs: Iterable[Rec]) -> list[Problem]:
    if not entity.single:
        return []
    message = f"is a second {entity.singular}: {entity.file} holds one row; edit that one"
    return [rec.problem(None, message) for rec in list(recs)[1:]]


def _references(
    entity: Entity, recs: Iterable[Rec], keys: Mapping[str, Mapping[tuple[Any, ...], Rec]]
) -> list[Problem]:
    problems = []
    for column in entity.refs:
        assert column.ref is not None
        target = BY_NAME[column.ref.entity]
        known = keys.get(target.name)
        if known is None:
            continue  # known only in part: a missing name may be in the rows not read
        for rec in recs:
            value = rec.row.get(column.name)
            if value is not None and (value,) not in known:
                problems.append(
                    rec.problem(column.name, f"{target.singular} {value!r} does not exist")
                )
    return problems


def _immutable(
    entity: Entity, recs: Iterable[Rec], before: Mapping[tuple[Any, ...], Mapping[str, Any]]
) -> list[Problem]:
    problems: list[Problem] = []
    fixed = [c.name for c in entity.columns if c.immutable]
    if not fixed or not before:
        return problems
    for rec in recs:
        old = before.get(entity.key_of(rec.row))
        if old is None:
            continue
        for name in fixed:
            if name not in rec.bad and rec.row.get(name) != old.get(name):
                problems.append(
                    rec.problem(
                        name,
                        f"cannot change from {old.get(name)} to {rec.row.get(name)} "
                        f"once the {entity.singular} exists",
                    )
                )
    return problems


def _currencies(state: State, keys: Mapping[str, Mapping[tuple[Any, ...], Rec]]) -> list[Problem]:
    """A route's or DID's card is in the currency of the party it prices."""
    problems = []

    def currency(entity: str, key: Any) -> Any:
        if entity not in keys:
            return None  # known only in part: its stored currency may be what changes
        rec = keys[entity].get((key,))
        return None if rec is None else rec.row.get("currency")

    def compare(rec: Rec, party: str, party_column: str, card_column: str) -> None:
        party_id, card_id = rec.row.get(party_column), rec.row.get(card_column)
        mine, theirs = currency(party, party_id), currency("rate_cards", card_id)
        if mine is not None and theirs is not None and mine != theirs:
            problems.append(
                rec.problem(
                    card_column,
                    f"rate card {card_id!r} is in {theirs} but {BY_NAME[party].singular} "
                    f"{party_id!r} is in {mine}",
                )
            )

    for rec in state.get("routes", ()):
        compare(rec, "customers", "customer_id", "card_id")
    for rec in state.get("dids", ()):
        compare(rec, "customers", "customer_id", "customer_card_id")
        compare(rec, "providers", "provider_id", "provider_card_id")
    return problems
