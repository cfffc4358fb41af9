"""Import and export of the catalog as a directory of CSV files (SPEC §3).

Import reads every file before it changes anything and reports every problem it finds, each
with file, line and column; then the whole directory is applied as one write. Each file
present replaces its table (rows matched by key, so unchanged customers keep their history);
a file that is absent leaves its table as it is. Export writes every file, header included
even when empty, so that importing an export gives back the same catalog; a cell that a
spreadsheet would run as a formula is written with one leading ``'``, which import takes off
(``schemas.fields.neutralise``).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pipelines.catalog.store import Catalog
from schemas.catalog import ENTITIES, RATES, Entity, canonical_auth_value, parse_row, row_problems
from schemas.errors import CdrflowError, Problem, ValidationError
from schemas.fields import Identifier, neutralise, unneutralise
from schemas.integrity import Rec

RATES_DIR = "rates"
FILES = {e.file: e for e in ENTITIES if e is not RATES}


def read_entity_file(
    path: Path, entity: Entity, label: str, fixed: dict[str, Any] | None = None
) -> tuple[list[Rec] | None, list[Problem], bool]:
    """Parse one CSV file of ``entity``; ``fixed`` columns (a rate file's card) are implied.

    Returns the rows, the problems, and whether the rows are the whole file. The rows are
    None when the file as a whole is unusable (encoding, header): then its table is left
    out of the import. A row whose key or reference does not read is left out too, and the
    file is not whole: what it would delete or make unknown is not judged, since that
    would only repeat the one problem (``Rec.bad`` says which columns of a row did not read).
    """
    fixed = fixed or {}
    allowed = {c.name for c in entity.csv_columns} - set(fixed)
    required = {c.name for c in entity.csv_columns if c.required} - set(fixed)
    recs: list[Rec] = []
    problems: list[Problem] = []
    data = path.read_bytes()
    body = data.removeprefix(codecs.BOM_UTF8)  # as Excel writes UTF-8
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        at = len(data) - len(body) + exc.start
        reason = f"is not UTF-8 text ({exc.reason} at byte {at}); save it as UTF-8"
        return None, [Problem(label, line, None, reason)], False
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [unneutralise(h).strip() for h in next(reader)]
    except StopIteration:
        return None, [Problem(label, 1, None, "is empty: the first line must be the header")], False
    except csv.Error as exc:
        return None, [Problem(label, 1, None, f"is not valid CSV ({exc})")], False
    for name in header:
        if name not in allowed:
            hint = "" if name else " (an empty header cell)"
            problems.append(
                Problem(
                    label,
                    1,
                    name or None,
                    f"is not a column of {entity.file}{hint}; "
                    f"expected some of {', '.join(sorted(allowed))}",
                )
            )
        elif header.count(name) > 1:
            problems.append(Problem(label, 1, name, "appears twice in the header"))
    for name in sorted(required - set(header)):
        problems.append(Problem(label, 1, name, "is required but missing from the header"))
    if problems:
        return None, problems, False
    key_columns = set(entity.key) | {c.name for c in entity.refs}
    whole = True
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(label, reader.line_num, None, f"is not valid CSV ({exc})"))
            whole = False
            break
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(
                Problem(
                    label, line, None, f"has {len(fields)} fields but the header has {len(header)}"
                )
            )
            whole = False
            continue
        raw = dict(zip(header, map(unneutralise, fields), strict=True))
        row, field_problems = parse_row(entity, raw)
        row.update(fixed)
        field_problems += [
            p for p in row_problems(entity, row) if p[0] not in {fp[0] for fp in field_problems}
        ]
        problems += [Problem(label, line, column, message) for column, message in field_problems]
        if entity.name == "auth":
            row["value"] = canonical_auth_value(row)
        bad = frozenset(column for column, _ in field_problems)
        if bad & key_columns:
            whole = False
        else:
            recs.append(Rec(row, label, line, bad=bad))
    return recs, problems, whole


def read_directory(
    directory: Path,
) -> tuple[dict[str, list[Rec]], list[str], list[Problem], set[str]]:
    """Every catalog file of ``directory``: rows per entity, cards with rate files, problems,
    and the entities whose rows are known only in part (a file unusable, rows left out)."""
    if not directory.is_dir():
        raise CdrflowError(f"{directory}: not a directory of catalog CSV files")
    state: dict[str, list[Rec]] = {}
    cards: list[str] = []
    problems: list[Problem] = []
    partial: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            if path.name != RATES_DIR:
                problems.append(
                    Problem(
                        str(path), None, None, f"is not part of a catalog (only {RATES_DIR}/ is)"
                    )
                )
            continue
        entity = FILES.get(path.name)
        if entity is None:
            problems.append(
                Problem(
                    str(path),
                    None,
                    None,
                    f"is not a catalog file; expected one of {', '.join(sorted(FILES))}",
                )
            )
            continue
        recs, found, whole = read_entity_file(path, entity, str(path))
        problems += found
        if recs is not None:
            state[entity.name] = recs
        if not whole:
            partial.add(entity.name)
    rates_dir = directory / RATES_DIR
    if rates_dir.is_dir():
        state["rates"] = []
        for path in sorted(rates_dir.iterdir()):
            card = path.stem
            try:
                if path.suffix != ".csv":
                    raise ValueError("a rate file is named <card_id>.csv")
                Identifier().parse(card)
            except ValueError as exc:
                problems.append(Problem(str(path), None, None, f"is not a rate file: {exc}"))
                continue
            rates, found, whole = read_entity_file(path, RATES, str(path), fixed={"card_id": card})
            problems += found
            if rates is not None:
                state["rates"] += rates
                cards.append(card)
            if not whole:
                partial.add("rates")
    return state, cards, problems, partial


def import_directory(catalog: Catalog, directory: Path, *, force: bool = False) -> dict[str, int]:
    """Apply a catalog directory as one write; returns rows per file read."""
    state, cards, problems, partial = read_directory(directory)
    catalog.replace(state, cards, force=force, problems=problems, partial=partial)
    return {name: len(recs) for name, recs in state.items()}


def import_card(catalog: Catalog, card_id: str, path: Path) -> int:
    """Replace the rate rows of one card with a CSV file of SPEC §3's rates format."""
    if not path.is_file():
        raise CdrflowError(f"{path}: no such file")
    recs, problems, whole = read_entity_file(path, RATES, str(path), fixed={"card_id": card_id})
    if recs is None:
        raise ValidationError(problems)
    partial = set() if whole else {"rates"}
    catalog.replace({"rates": recs}, [card_id], problems=problems, partial=partial)
    return len(recs)


def export_directory(catalog: Catalog, directory: Path) -> dict[str, int]:
    """Write the whole catalog as CSV files (no passwords); returns rows per entity."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RATES_DIR).mkdir(exist_ok=True)
    state = catalog.snapshot()
    counts = {}
    for entity in ENTITIES:
        recs = state[entity.name]
        counts[entity.name] = len(recs)
        if entity is RATES:
            for card in state["rate_cards"]:
                card_id = card.row["card_id"]
                rows = [r for r in recs if r.row["card_id"] == card_id]
                _write_csv(
                    directory / RATES_DIR / f"{card_id}.csv",
                    entity,
                    rows,
                    skip=frozenset({"card_id"}),
                )
        else:
            _write_csv(directory / entity.file, entity, recs)
    return counts


def _sorted(entity: Entity, recs: list[Rec]) -> list[Rec]:
    columns = entity.key or (entity.unique[0] if entity.unique else ())
    return sorted(
        recs,
        key=lambda r: tuple("" if r.row.get(c) is None else str(r.row.get(c)) for c in columns),
    )


def _write_csv(
    path: Path, entity: Entity, recs: list[Rec], skip: frozenset[str] = frozenset()
) -> None:
    columns = [c for c in entity.exported_columns if c.name not in skip]
    with _atomic(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([neutralise(c.name) for c in columns])
        for rec in _sorted(entity, recs):
            writer.writerow([neutralise(c.kind.render(rec.row.get(c.name))) for c in columns])


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """Write a file next to its destination, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
