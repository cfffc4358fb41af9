"""The catalog store: SQLite in WAL mode through SQLAlchemy Core.

Many processes use one store at once (raters reading, an operator editing, a Dagster run
importing): readers never block, a writer takes the write lock at the start of its
transaction (``BEGIN IMMEDIATE``) and waits up to ``BUSY_TIMEOUT_MS`` for another writer.
Every write builds the catalog as it would be afterwards, checks it whole
(``schemas.integrity``), and only then stores the difference, in one transaction; each
committed write increments the catalog version that compiled rate tables are keyed on.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipelines.catalog import migrations
from pipelines.catalog.secrets import hash_password
from pipelines.catalog.tables import PASSWORD_HASH, TABLES, meta, stored_name
from pipelines.home import catalog_path, make_home, private_file
from pipelines.lake import customers_with_rated_cdrs
from schemas.catalog import BY_NAME, ENTITIES, Entity, canonical_auth_value, parse_row, row_problems
from schemas.errors import CdrflowError, Problem, ValidationError
from schemas.fields import from_micro, to_micro
from schemas.integrity import Rec, check

BUSY_TIMEOUT_MS = 30_000

# Rate rows are loaded only for the cards a write touches; everything else is small.
SMALL_ENTITIES = tuple(e.name for e in ENTITIES if e.name != "rates")

StateDict = dict[str, list[Rec]]
# In Catalog's body ``list`` is its method: its annotations use these names.
Recs = list[Rec]
Values = list[Any]


class Catalog:
    """One home's catalog store; cheap to open, safe to use from many processes."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        make_home(self.home)
        path = catalog_path(self.home)
        private_file(path)  # before SQLite makes it (0644) and its -wal and -shm (alike)
        for other in (f"{path}-wal", f"{path}-shm"):
            private_file(Path(other), create=False)
        self.engine = sa.create_engine(f"sqlite:///{path}")
        sa.event.listen(self.engine, "connect", _on_connect)
        sa.event.listen(self.engine, "begin", _on_begin)
        with self.transaction() as conn:
            current = migrations.current_version(conn)
        if current != migrations.MIGRATIONS[-1].version:
            with self.transaction(write=True) as conn:
                migrations.migrate(conn)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sa.Connection]:
        """A transaction; ``write`` takes SQLite's write lock at its start, so that two
        writers queue instead of failing when the second tries to upgrade a read lock."""
        with self.engine.connect() as conn:
            conn.info["begin"] = "BEGIN IMMEDIATE" if write else "BEGIN"
            with conn.begin():
                yield conn

    def version(self) -> int:
        with self.transaction() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "version")).scalar()
        return int(value or 0)

    def state(self) -> str | None:
        """A random name of the store's current content, new at every committed change
        (None for a store not changed since it was created or last migrated)."""
        with self.transaction() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "state")).scalar()
        return None if value is None else str(value)

    # -- reading ---------------------------------------------------------------------------

    def list(
        self,
        entity_name: str,
        *,
        status: str | None = None,
        customer: str | None = None,
        card: str | None = None,
        text: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of an entity, filtered by status, customer, card or a text search."""
        entity = BY_NAME[entity_name]
        table = TABLES[entity.name]
        query = sa.select(table)
        if status is not None:
            if entity.status is None:
                raise CdrflowError(f"{entity.name} have no status to filter by")
            query = query.where(table.c[entity.status] == status)
        for column, value in (("customer_id", customer), ("card_id", card)):
            if value is not None:
                if column not in entity.column_by_name:
                    raise CdrflowError(f"{entity.name} have no {column} to filter by")
                query = query.where(table.c[column] == value)
        if text:
            # Literal text: % and _ are not wildcards.
            matches = (
                sa.func.lower(table.c[c]).contains(text.lower(), autoescape=True)
                for c in entity.search
            )
            query = query.where(sa.or_(*matches))
        order = [table.c[k] for k in entity.key] or [table.c.id]
        with self.transaction() as conn:
            return [_public(entity, r) for r in _fetch(conn, entity, query.order_by(*order))]

    def get(self, entity_name: str, ident: str) -> dict[str, Any]:
        entity = BY_NAME[entity_name]
        with self.transaction() as conn:
            return _public(entity, _find(_load(conn, entity), entity, ident))

    def owned_by(self, customer_id: str) -> dict[str, Recs]:
        """The customer (``customers``: its one row), every row that names it, by entity,
        and the ``packages`` its customer packages are of: read in one transaction, in the
        order of ``list``. A row with a password keeps only its hash, in ``extra``."""
        customers = BY_NAME["customers"]
        with self.transaction() as conn:
            table = TABLES["customers"]
            query = sa.select(table).where(table.c.customer_id == customer_id)
            out = {"customers": [_find(_fetch(conn, customers, query), customers, customer_id)]}
            for entity in ENTITIES:
                if entity.name == "customers" or "customer_id" not in entity.column_by_name:
                    continue
                table = TABLES[entity.name]
                order = [table.c[k] for k in entity.key] or [table.c.id]
                query = sa.select(table).where(table.c.customer_id == customer_id)
                out[entity.name] = _fetch(conn, entity, query.order_by(*order))
            table = TABLES["packages"]
            ids = sorted({r.row["package_id"] for r in out["customer_packages"]})
            query = sa.select(table).where(table.c.package_id.in_(ids))
            out["packages"] = _fetch(conn, BY_NAME["packages"], query.order_by(table.c.package_id))
        return out

    def rate_columns(self) -> dict[str, Values]:
        """Every rate row, column by column, as stored (money in millionths, ISO times): the
        fast read that compiling rate tables needs (hundreds of thousands of rows)."""
        names = ["card_id", "prefix", "name", "rate", "connect_fee", "mcd", "pulse", "grace",
                 "effective_from", "effective_to"]  # fmt: skip
        with self.transaction() as conn:
            rows = conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM rates").fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return {name: list(values) for name, values in zip(names, columns, strict=True)}

    def password_hash(self, entity_name: str, ident: str) -> str | None:
        entity = BY_NAME[entity_name]
        with self.transaction() as conn:
            return _find(_load(conn, entity), entity, ident).extra.get(PASSWORD_HASH)

    def counts(self) -> dict[str, int]:
        with self.transaction() as conn:
            return {
                e.name: conn.execute(
                    sa.select(sa.func.count()).select_from(TABLES[e.name])
                ).scalar_one()
                for e in ENTITIES
            }

    def snapshot(self, cards: Sequence[str] | None = None) -> StateDict:
        """Every row of every entity (rate rows of ``cards`` only, all when None)."""
        with self.transaction() as conn:
            state = _state(conn)
            state["rates"] = _load(conn, BY_NAME["rates"], cards)
        return state

    # -- writing one row -------------------------------------------------------------------

    def add(self, entity_name: str, raw: Mapping[str, str | None]) -> dict[str, Any]:
        """Add one row given as texts (the command line's options); returns it as stored."""
        entity = BY_NAME[entity_name]
        row, problems = parse_row(entity, raw)
        rec = Rec(_canonical(entity, row), f"new {entity.singular}")
        _raise(rec, _merge(problems, row_problems(entity, rec.row)))

        def change(state: StateDict) -> None:
            state[entity.name].append(rec)

        cards = [rec.row["card_id"]] if entity.name == "rates" else []
        self._change(change, touched=[entity.name], cards=cards)
        return _public(entity, rec)

    def edit(self, entity_name: str, ident: str, raw: Mapping[str, str | None]) -> dict[str, Any]:
        """Change some columns of one row; a key column cannot change."""
        entity = BY_NAME[entity_name]
        for key in entity.key:
            if key in raw:
                raise CdrflowError(f"{entity.singular} {ident}: {key} is the key and cannot change")
        updates, problems = parse_row(entity, raw, fill_defaults=False)
        result: dict[str, Any] = {}

        def change(state: StateDict) -> None:
            old = _find(state[entity.name], entity, ident)
            extra = old.extra
            if entity.name == "auth" and updates.get("kind") == "ip":
                extra = {}  # an IP entry has no password: the old one goes
            new = Rec(_canonical(entity, {**old.row, **updates}), old.where, id=old.id, extra=extra)
            _raise(new, _merge(problems, row_problems(entity, new.row)))
            state[entity.name] = [new if r is old else r for r in state[entity.name]]
            result.update(_public(entity, new))

        self._change(change, touched=[entity.name])
        return result

    def delete(self, entity_name: str, ident: str, *, force: bool = False) -> None:
        """Delete one row and what it owns; refuse while others still use it.

        A customer who has rated CDRs in the lake or payments is deleted only with ``force``
        (its payments go with it; its rated CDRs stay in the lake as history).
        """
        entity = BY_NAME[entity_name]

        def change(state: StateDict) -> None:
            target = _find(state[entity.name], entity, ident)
            if entity.name == "customers":
                _guard_customer_history(self.home, state, [ident], force)
            state[entity.name] = [r for r in state[entity.name] if r is not target]
            if entity.key:
                _cascade(state, entity, {entity.key_of(target.row)}, force)

        self._change(
            change,
            touched=(*SMALL_ENTITIES, "rates"),
            cards=[ident] if entity.name == "rate_cards" else [],
        )

    def set_password(self, entity_name: str, ident: str, password: str) -> None:
        entity = BY_NAME[entity_name]

        def change(state: StateDict) -> None:
            old = _find(state[entity.name], entity, ident)
            new = Rec({**old.row, "password": password}, old.where, id=old.id, extra=old.extra)
            _raise(new, row_problems(entity, new.row))
            state[entity.name] = [new if r is old else r for r in state[entity.name]]

        self._change(change, touched=[entity.name])

    # -- writing many rows -----------------------------------------------------------------

    def replace(
        self,
        new: Mapping[str, Recs],
        cards: Sequence[str],
        *,
        force: bool = False,
        problems: Sequence[Problem] = (),
        partial: Collection[str] = (),
    ) -> None:
        """Replace whole entities (and the rate rows of ``cards``) with ``new``, as one write.

        Keyed rows are matched by key, so a kept customer keeps its routes; a removed one
        takes its owned rows along as ``delete`` would. A stored password hash is kept for a
        row that names no password. ``problems`` found while reading the rows are reported
        together with the ones the whole catalog shows, so that one run names them all;
        ``partial`` names the entities whose rows were read only in part (their problems are
        among ``problems``): no row of theirs counts as removed, and no name is unknown for
        being missing from them.
        """

        def change(state: StateDict) -> None:
            removed: dict[str, set[tuple[Any, ...]]] = {}
            for name, recs in new.items():
                entity = BY_NAME[name]
                if entity.key and name not in partial:
                    kept = {entity.key_of(r.row) for r in recs}
                    removed[name] = {entity.key_of(r.row) for r in state[name]} - kept
            gone = sorted(k[0] for k in removed.get("customers", ()))
            _guard_customer_history(self.home, state, gone, force, partial)
            for name, recs in new.items():
                _keep_hashes(BY_NAME[name], state[name], recs)
                if name == "rates":
                    recs = [r for r in state["rates"] if r.row["card_id"] not in cards] + recs
                state[name] = list(recs)
            for name, keys in removed.items():
                if keys:
                    _cascade(state, BY_NAME[name], keys, force, frozenset(new), partial)

        self._change(
            change,
            touched=(*SMALL_ENTITIES, "rates"),
            cards=cards,
            earlier=problems,
            partial=partial,
        )

    def _change(
        self,
        change: Any,
        touched: Sequence[str],
        cards: Sequence[str] = (),
        earlier: Sequence[Problem] = (),
        partial: Collection[str] = (),
    ) -> None:
        with self.transaction(write=True) as conn:
            before = _state(conn)
            before["rates"] = _load(conn, BY_NAME["rates"], cards)
            after = {name: list(recs) for name, recs in before.items()}
            try:
                change(after)
            except ValidationError as exc:
                raise ValidationError([*earlier, *exc.problems]) from None
            keyed_before = {
                name: {BY_NAME[name].key_of(r.row): r.row for r in recs}
                for name, recs in before.items()
                if BY_NAME[name].key
            }
            problems = [*earlier, *check(after, keyed_before, partial)]
            if problems:
                raise ValidationError(problems)
            for name in reversed([e.name for e in ENTITIES if e.name in touched]):
                _delete_missing(conn, BY_NAME[name], before[name], after[name])
            for name in [e.name for e in ENTITIES if e.name in touched]:
                _upsert(conn, BY_NAME[name], before[name], after[name])
            _bump_version(conn)


# -- SQLite connection setup -------------------------------------------------------------------


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off; _on_begin emits BEGIN itself.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.info.pop("begin", "BEGIN"))


def _bump_version(conn: sa.Connection) -> None:
    """Every committed change counts up the version and draws a new random state: the state
    names this content among all copies of the store (a copy edited apart from its original
    may reach the same version number, never the same state)."""
    current = conn.execute(sa.select(meta.c.value).where(meta.c.key == "version")).scalar()
    state = uuid.uuid4().hex
    if current is None:
        conn.execute(meta.insert().values(key="version", value="1"))
        conn.execute(meta.insert().values(key="state", value=state))
        return
    conn.execute(meta.update().where(meta.c.key == "version").values(value=str(int(current) + 1)))
    if conn.execute(meta.update().where(meta.c.key == "state").values(value=state)).rowcount == 0:
        conn.execute(meta.insert().values(key="state", value=state))


# -- rows in and out ---------------------------------------------------------------------------


def _fetch(conn: sa.Connection, entity: Entity, query: sa.Select[Any]) -> list[Rec]:
    recs = []
    for mapping in conn.execute(query).mappings():
        row: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for c in entity.columns:
            if c.secret:
                extra[PASSWORD_HASH] = mapping[PASSWORD_HASH]
                row[c.name] = None
                continue
            value = mapping[c.name]
            row[c.name] = (
                from_micro(value) if value is not None and c.kind.storage == "micro" else value
            )
        ident = mapping["id"] if entity.surrogate else None
        label = "#" + str(ident) if entity.surrogate else "/".join(str(row[k]) for k in entity.key)
        recs.append(Rec(row, f"{entity.singular} {label}", id=ident, extra=extra))
    return recs


def _load(conn: sa.Connection, entity: Entity, cards: Sequence[str] | None = None) -> list[Rec]:
    table = TABLES[entity.name]
    query = sa.select(table)
    if cards is not None:
        query = query.where(table.c.card_id.in_(list(cards)))
    return _fetch(conn, entity, query)


def _state(conn: sa.Connection) -> StateDict:
    return {name: _load(conn, BY_NAME[name]) for name in SMALL_ENTITIES}


def _stored(entity: Entity, rec: Rec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in entity.columns:
        value = rec.row.get(c.name)
        if c.secret:
            out[PASSWORD_HASH] = hash_password(value) if value else rec.extra.get(PASSWORD_HASH)
        elif value is not None and c.kind.storage == "micro":
            out[c.name] = to_micro(Decimal(value))
        else:
            out[stored_name(c.name, False)] = value
    return out


def _public(entity: Entity, rec: Rec) -> dict[str, Any]:
    """A row as commands show it: no password, ``id`` first for rows without a key."""
    row = {c.name: rec.row.get(c.name) for c in entity.columns if not c.secret}
    return {"id": rec.id, **row} if entity.surrogate else row


def _delete_missing(conn: sa.Connection, entity: Entity, old: list[Rec], new: list[Rec]) -> None:
    table = TABLES[entity.name]
    if entity.key:
        kept = {entity.key_of(r.row) for r in new}
        gone = [entity.key_of(r.row) for r in old if entity.key_of(r.row) not in kept]
        column = table.c[entity.key[0]]
        for chunk in _chunks([k[0] for k in gone]):
            conn.execute(table.delete().where(column.in_(chunk)))
    else:
        kept_ids = {r.id for r in new if r.id is not None}
        for chunk in _chunks([r.id for r in old if r.id not in kept_ids]):
            conn.execute(table.delete().where(table.c.id.in_(chunk)))


def _upsert(conn: sa.Connection, entity: Entity, old: list[Rec], new: list[Rec]) -> None:
    table = TABLES[entity.name]
    if entity.key:
        before = {entity.key_of(r.row): r for r in old}
        inserts = []
        for rec in new:
            prior = before.get(entity.key_of(rec.row))
            if prior is None:
                inserts.append(_stored(entity, rec))
            elif _changed(prior, rec):
                where = sa.and_(*(table.c[k] == rec.row[k] for k in entity.key))
                conn.execute(table.update().where(where).values(**_stored(entity, rec)))
        if inserts:
            conn.execute(table.insert(), inserts)
    else:
        by_id = {r.id: r for r in old}
        fresh = [rec for rec in new if rec.id is None]
        for rec in new:
            if rec.id is not None and _changed(by_id[rec.id], rec):
                conn.execute(
                    table.update().where(table.c.id == rec.id).values(**_stored(entity, rec))
                )
        if fresh:
            # The new rows learn their ids, so that `add` can name what it added.
            insert = table.insert().returning(table.c.id, sort_by_parameter_order=True)
            ids = conn.execute(insert, [_stored(entity, rec) for rec in fresh]).scalars().all()
            for rec, ident in zip(fresh, ids, strict=True):
                rec.id = ident


def _changed(old: Rec, new: Rec) -> bool:
    # A row that carries a clear password is new or changes its password.
    return old.row != new.row or bool(new.row.get("password"))


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# -- rules that need the store -----------------------------------------------------------------


def _find(recs: list[Rec], entity: Entity, ident: str) -> Rec:
    for rec in recs:
        if entity.surrogate:
            if str(rec.id) == str(ident).lstrip("#"):
                return rec
        elif str(rec.row[entity.key[0]]) == ident:
            return rec
    raise CdrflowError(f"there is no {entity.singular} {ident!r}")


def _canonical(entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
    if entity.name == "auth":
        row["value"] = canonical_auth_value(row)
    return row


def _merge(parsed: list[tuple[str, str]], rules: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A column whose value did not parse is not also reported as missing."""
    failed = {column for column, _ in parsed}
    return parsed + [p for p in rules if p[0] not in failed]


def _raise(rec: Rec, problems: list[tuple[str, str]]) -> None:
    if problems:
        raise ValidationError([rec.problem(column, message) for column, message in problems])


def _cascade(
    state: StateDict,
    parent: Entity,
    keys: set[tuple[Any, ...]],
    force: bool,
    imported: frozenset[str] = frozenset(),
    partial: Collection[str] = (),
) -> None:
    """Remove rows owned by deleted parents; refuse where a non-owning row still uses one.

    Rows of ``imported`` entities are left alone: a file row naming a removed parent is an
    error that ``check`` reports with its line. The stored rows of a ``partial`` entity
    (its file did not read) go without a word: whether the file still holds them is
    unknown, and the import is refused for that file anyway.
    """
    problems: list[Problem] = []
    for child in ENTITIES:
        for column in child.refs:
            assert column.ref is not None
            if (
                column.ref.entity != parent.name
                or child.name not in state
                or child.name in imported
            ):
                continue
            users = [r for r in state[child.name] if (r.row.get(column.name),) in keys]
            if column.ref.cascade or (column.ref.history and force) or child.name in partial:
                state[child.name] = [r for r in state[child.name] if r not in users]
                continue
            for key in sorted(keys):
                mine = [r for r in users if (r.row.get(column.name),) == key]
                if mine:
                    problems.append(_still_used(parent, key[0], child, mine))
    if problems:
        raise ValidationError(problems)


def _still_used(parent: Entity, key: Any, child: Entity, users: list[Rec]) -> Problem:
    names = ", ".join(r.where for r in users[:5]) + (" …" if len(users) > 5 else "")
    return Problem(
        f"{parent.singular} {key}",
        None,
        None,
        f"is still used by {len(users)} {child.name} ({names}); change or delete them first",
    )


def _guard_customer_history(
    home: Path,
    state: StateDict,
    customers: Sequence[str],
    force: bool,
    partial: Collection[str] = (),
) -> None:
    """A customer with billing history (rated CDRs, payments) is deleted only when forced;
    payments read only in part (``partial``) are not counted."""
    if force or not customers:
        return
    rated = customers_with_rated_cdrs(home, customers)
    paid: dict[str, int] = {}
    for rec in () if "payments" in partial else state["payments"]:
        if rec.row["customer_id"] in customers:
            paid[rec.row["customer_id"]] = paid.get(rec.row["customer_id"], 0) + 1
    problems = []
    for customer in sorted(set(rated) | set(paid)):
        history = []
        if customer in rated:
            history.append(f"{rated[customer]} rated CDRs in the lake")
        if customer in paid:
            history.append(f"{paid[customer]} payments")
        problems.append(
            Problem(
                f"customer {customer}",
                None,
                None,
                f"has {' and '.join(history)}; delete it with --force to remove it anyway",
            )
        )
    if problems:
        raise ValidationError(problems)


def _keep_hashes(entity: Entity, old: list[Rec], new: list[Rec]) -> None:
    """An imported row that names no password keeps the hash of the stored row it replaces."""
    if not any(c.secret for c in entity.columns):
        return
    identity = entity.unique[0]
    hashes = {tuple(r.row.get(c) for c in identity): r.extra.get(PASSWORD_HASH) for r in old}
    for rec in new:
        if not rec.row.get("password"):
            digest = hashes.get(tuple(rec.row.get(c) for c in identity))
            if digest:
                rec.extra[PASSWORD_HASH] = digest
