"""What commands print: rich tables for people, CSV or JSON for machines.

Tables and lines for people show data as it is, never as console markup, and with every
control character escaped (``visible``): a name or a switch's reason text cannot move the
cursor, clear the screen or hide a link in the operator's terminal. CSV and JSON carry the
data unchanged (CSV neutralises only what a spreadsheet would run).
"""

from __future__ import annotations

import csv
import json
import string
import sys
from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text as RichText

from schemas.catalog import Entity
from schemas.fields import Integer, Kind, Text, neutralise

console = Console()
errors = Console(stderr=True)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _kinds(entity: Entity | None, columns: Sequence[str]) -> list[Kind]:
    by_name = entity.column_by_name if entity else {}
    return [
        Integer() if name == "id" else (by_name[name].kind if name in by_name else Text())
        for name in columns
    ]


def emit(
    rows: Sequence[Mapping[str, Any]],
    fmt: Format,
    *,
    entity: Entity | None = None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    key: Collection[str] | None = None,
    drop: Sequence[str] = (),
    wide: bool = False,
    right: Collection[str] = (),
    hint: str = "--wide, or --format csv|json",
) -> None:
    """Print rows in ``fmt``; values are rendered by their column's kind (money exact).

    A listing names its ``key`` columns: in a terminal narrower than the table, the other
    columns go (first those in ``drop``, in its order, then the rest from the right) until
    the table fits, and a dim line names them and how to see them all (``hint``). Without
    ``key`` every column stays and long values wrap. A ``wide`` table keeps every column
    and every value on one line, wider than the terminal if need be. ``right`` names
    columns of numbers (right-aligned) besides those the kinds say. CSV and JSON always
    carry every column."""
    if columns is None:
        if rows:
            columns = list(rows[0])
        elif entity:
            # The columns a row would have, so that an empty listing has the same header.
            columns = ["id"] if entity.surrogate else []
            columns += [c.name for c in entity.columns if not c.secret]
        else:
            columns = []
    kinds = _kinds(entity, columns)
    if fmt is Format.json:
        payload = [
            {c: k.jsonable(r.get(c)) for c, k in zip(columns, kinds, strict=True)} for r in rows
        ]
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt is Format.csv:
        # Cells a spreadsheet would run as formulas are neutralised, as in a catalog export.
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(map(neutralise, columns))
        for r in rows:
            texts = (k.render(r.get(c)) for c, k in zip(columns, kinds, strict=True))
            writer.writerow(map(neutralise, texts))
        return
    cells = [
        [visible(k.render(r.get(c))) for c, k in zip(columns, kinds, strict=True)] for r in rows
    ]
    headers = [visible(name) for name in columns]
    sizes = dict(zip(columns, _natural_widths(headers, cells), strict=True))
    hidden: list[str] = []
    if key is not None and not wide:
        hidden = _hidden(sizes, key, drop, console.width)
    shown = [i for i, name in enumerate(columns) if name not in hidden]
    table = Table(title=_text(title), title_justify="left", header_style="bold")
    for i in shown:
        numeric = kinds[i].storage in ("int", "micro") or columns[i] in right
        table.add_column(
            RichText(headers[i]),
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=wide,
        )
    for row in cells:
        table.add_row(*(RichText(row[i]) for i in shown))
    if wide:  # as wide as the values need: a terminal scrolls, or `less -S` does
        needed = _table_width(sizes.values())
        Console(width=max(console.width, needed), highlight=False).print(table)
    else:
        console.print(table)
    if not rows:
        console.print("[dim](none)[/dim]")
    if hidden:
        names = ", ".join(escape(visible(name)) for name in hidden)
        count = f"{len(hidden)} column{'s' if len(hidden) > 1 else ''}"
        message = f"[dim]{count} hidden ({names}): {escape(hint)}[/dim]"
        console.print(message, highlight=False, soft_wrap=True)


def _natural_widths(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    """Each column's width with every value on one line (its longest line, in cells)."""
    by_column = zip(*cells, strict=True) if cells else ([] for _ in headers)
    return [
        max(cell_len(line) for text in (header, *values) for line in text.split("\n"))
        for header, values in zip(headers, by_column, strict=True)
    ]


def _table_width(sizes: Collection[int]) -> int:
    # A column is its text, a space of padding on either side and a rule; one more rule ends it.
    return sum(size + 3 for size in sizes) + 1


def _hidden(
    sizes: Mapping[str, int], key: Collection[str], drop: Sequence[str], width: int
) -> list[str]:
    """The columns a listing hides in ``width`` cells: those in ``drop`` (in its order),
    then the others but the keys from the right, until the rest fits. The key columns stay
    even when they alone are wider than the terminal (their values wrap then)."""
    order = [c for c in drop if c in sizes and c not in key]
    order += [c for c in reversed(list(sizes)) if c not in key and c not in order]
    kept = dict(sizes)
    hidden: list[str] = []
    for name in order:
        if _table_width(kept.values()) <= width:
            break
        del kept[name]
        hidden.append(name)
    return [c for c in sizes if c in hidden]


def jsonable(row: Mapping[str, Any], entity: Entity) -> dict[str, Any]:
    """A row of ``entity`` as JSON carries it: money as exact text."""
    columns = list(row)
    return {
        c: k.jsonable(row.get(c)) for c, k in zip(columns, _kinds(entity, columns), strict=True)
    }


def emit_record(row: Mapping[str, Any], fmt: Format, *, entity: Entity, title: str) -> None:
    """One row, shown as field/value pairs in a table (one object in JSON)."""
    columns = list(row)
    kinds = _kinds(entity, columns)
    if fmt is Format.table:
        table = Table(title=_text(title), title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for c, k in zip(columns, kinds, strict=True):
            table.add_row(RichText(visible(c)), RichText(visible(k.render(row.get(c)))))
        console.print(table)
    elif fmt is Format.json:
        sys.stdout.write(json.dumps(jsonable(row, entity), indent=2, ensure_ascii=False) + "\n")
    else:
        emit([row], fmt, entity=entity, columns=columns)


def say(template: str, *values: Any, fmt: Format = Format.table, soft_wrap: bool = False) -> None:
    """A line for the operator: ``template`` is console markup with ``{}`` fields (as
    ``str.format``), and ``values`` fill them as data, shown as they are (``visible``):
    ``say("added [bold]{}[/bold]", ident)``. Goes to stderr when stdout carries CSV or JSON
    (``fmt``), so that what a program reads stays parseable."""
    if any(isinstance(v, Format) for v in values):
        raise TypeError("say() takes the output format as fmt=, after the values")
    message = _SHOWN.format(template, *values) if values else template
    (console if fmt is Format.table else errors).print(message, soft_wrap=soft_wrap)


def fail(message: str) -> None:
    """An error: ``message`` is plain text (a pattern like ``[0-9]`` is shown as it is)."""
    errors.print(
        f"[bold red]error:[/bold red] {escape(visible(message))}", highlight=False, soft_wrap=True
    )


def _escape_of(code: int) -> str:
    named = {0x09: "\\t", 0x0D: "\\r"}
    return named.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


# C0 controls (ESC starts cursor moves, screen clears and OSC 8 links) but the line break,
# which stays a line of its own in a cell or a message; DEL; C1 controls (CSI and OSC in
# their 8-bit form); and the bidirectional overrides that make text read in another order.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {code: _escape_of(code) for code in _CONTROLS if code != 0x0A}


def visible(text: str) -> str:
    """``text`` with every control character written as its escape (``\\x1b``, ``\\t``)."""
    return text.translate(_VISIBLE)


class _Shown(string.Formatter):
    """Fills a markup template with values shown as data, never as markup."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(visible(format(value, format_spec)))


_SHOWN = _Shown()


def _text(title: str | None) -> RichText | None:
    return None if title is None else RichText(visible(title))
