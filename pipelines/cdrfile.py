"""Reading switch CDR files (JSON Lines, CSV, Parquet) in bounded memory, line by line exact.

A file is read in blocks of whole lines; every record keeps its raw text, its source file and
its line (for Parquet, its row number), so that a rejection can say exactly where it was.
Each block becomes a table of the SPEC §4 fields as text (``RawBlock``); ``validate`` then
types it (``schemas.cdr.INPUT``) and splits off the invalid records with the field at fault.
"""

from __future__ import annotations

import csv
import json
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import parquet_fast, scan
from schemas.cdr import (
    DT_FROM_US,
    DT_UNTIL_US,
    FIRST_YEAR,
    INPUT,
    INPUT_NAMES,
    LAST_YEAR,
    MAX_DURATION,
    MAX_UTC_OFFSET_MINUTES,
    REQUIRED,
    SECONDS,
    TEXT_NAMES,
    VALID,
)
from schemas.errors import CdrflowError

BLOCK_BYTES = 16 << 20
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
HEADER_BYTES = 1 << 20  # the most of a CSV file's first line read to check its header
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}


@dataclass
class RawBlock:
    """Records of one block as text: the SPEC fields, ``raw``, ``source``, ``line``, and a
    ``problem`` already found while reading (malformed JSON, a CSV row of the wrong width)."""

    table: pa.Table
    bytes_read: int


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise CdrflowError(
            f"{path}: unknown CDR file type {path.suffix!r}; use .jsonl, .csv or .parquet"
        ) from None


def check_input(path: Path) -> str:
    """The format of a CDR file named as input, or an error saying why it cannot be read as
    one (missing, a directory, an unknown type, a Parquet file without a readable footer),
    so that a run of several files stops before it rates any of them."""
    if path.is_dir():
        raise CdrflowError(f"{path}: a directory, not a CDR file")
    if not path.is_file():
        raise CdrflowError(f"{path}: no such file")
    kind = file_format(path)
    if kind == "parquet":
        open_parquet(path)
    elif kind == "csv":
        with path.open("rb") as f:
            first = f.readline(HEADER_BYTES).removeprefix(UTF8_BOM)
        if first.startswith(GZIP_MAGIC):
            raise CdrflowError(
                f"{path}: gzip-compressed data, not CSV text; decompress it (gunzip) and rate "
                "the result"
            )
        if first:  # an empty file (a switch's quiet hour) has no records and needs none
            _csv_header(path, first.decode("utf-8", "replace"))
    return kind


def read_blocks(
    path: Path, con: duckdb.DuckDBPyConnection, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawBlock]:
    """The records of a CDR file, block by block."""
    kind = check_input(path)
    if kind == "parquet":
        yield from _parquet_blocks(path)
        return
    header: list[str] | None = None
    for block in _line_blocks(path, block_bytes, csv_quotes=kind == "csv"):
        lines, numbers, raw_bytes = block.text, block.numbers, block.data.tobytes()
        if kind == "jsonl":
            yield RawBlock(_json_records(con, str(path), numbers, lines), len(raw_bytes))
            continue
        if header is None:
            header = _csv_header(path, lines[0].as_py() if len(lines) else "")
            lines, raw_bytes, numbers = (
                lines.slice(1),
                raw_bytes[int(block.offsets[1]) :],
                numbers[1:],
            )
        yield RawBlock(_csv_records(str(path), header, numbers, lines), len(raw_bytes))


@dataclass
class Lines:
    """One block of whole records: the bytes, where each record starts, and the same records
    as an Arrow string array over those bytes (each with its newline). A record is a line,
    except that a CSV record whose quoted field holds line breaks spans several."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, len + 1
    text: pa.LargeStringArray
    numbers: np.ndarray  # int64: the file's line number where each record starts
    row0: int = 0  # the index of the first record in the block it was cut from

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def part(self, lo: int, hi: int) -> Lines:
        """Records ``lo:hi``, over the same bytes."""
        return Lines(
            self.data,
            self.offsets[lo : hi + 1],
            self.text.slice(lo, hi - lo),
            self.numbers[lo:hi],
            self.row0 + lo,
        )


def _line_blocks(path: Path, block_bytes: int, csv_quotes: bool = False) -> Iterator[Lines]:
    """The file in blocks of whole lines (a last line without newline gets one; a UTF-8
    byte order mark at its start, as spreadsheet exports write, is not part of line 1).
    With ``csv_quotes``, a block is of whole CSV records: line breaks inside a quoted field
    (RFC 4180) belong to its record (``scan.csv_records``)."""
    line = 1
    carry = b""
    width = 0  # the CSV header's fields
    with path.open("rb") as f:
        while True:
            chunk = f.read(block_bytes)
            if line == 1 and not carry:
                chunk = chunk.removeprefix(UTF8_BOM)
            data = carry + chunk
            if not data:
                return
            if chunk:
                end = data.rfind(b"\n") + 1
                if end == 0:
                    carry = data
                    continue
            else:
                if not data.endswith(b"\n"):
                    data += b"\n"
                end = len(data)
            block, carry = data[:end], data[end:]
            array, ends, high = _line_ends_of(block)
            records = None
            if csv_quotes and line == 1:
                try:
                    width = len(_csv_fields(block[: ends[0]].decode("utf-8", "replace")))
                except csv.Error:  # the header is refused (``_csv_header``) before any record
                    width = 0
            if csv_quotes and b'"' in block:
                records = scan.csv_records(array, ends, width, not chunk)
                cut = records[2]
                if cut < len(block):  # a quoted field goes on in the next chunk
                    block, carry = block[:cut], block[cut:] + carry
                    if not block:
                        continue
                    array = np.frombuffer(block, np.uint8)
                    ends = ends[: np.searchsorted(ends, cut, side="right")]
            if high and not _utf8(block):
                # Undecodable bytes become U+FFFD, so that every line is still text.
                block = b"".join(
                    part.decode("utf-8", "replace").encode() + b"\n"
                    for part in block.split(b"\n")[:-1]
                )
                array, ends, _ = _line_ends_of(block)
                if records is not None:  # the same records, at their new byte offsets
                    records = scan.csv_records(array, ends, width, True)
            physical = ends.size
            if records is None:
                numbers = np.arange(line, line + physical, dtype=np.int64)
            else:
                ends, numbers = records[0], line + records[1]
            offsets = np.zeros(ends.size + 1, np.int64)
            offsets[1:] = ends
            text = pa.LargeStringArray.from_buffers(
                ends.size, pa.py_buffer(offsets), pa.py_buffer(block)
            )
            yield Lines(array, offsets, text, numbers)
            line += physical
            if not chunk:
                return


def _line_ends_of(block: bytes) -> tuple[np.ndarray, np.ndarray, bool]:
    """The bytes of a block of whole lines, where each line ends (after its newline), and
    whether any byte is beyond ASCII."""
    array = np.frombuffer(block, np.uint8)
    found = np.empty(array.size // 16 + 16, np.int64)  # lines are longer than 16 bytes…
    count, high = scan.line_ends(array, found)
    ends = found[:count] if count <= found.size else np.flatnonzero(array == 10) + 1
    return array, ends, high


def _utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_TEXT_STRUCT = json.dumps({name: "VARCHAR" for name in INPUT_NAMES})
# json_transform to VARCHAR keeps each value's text (a number as written, an object as JSON);
# validation then judges the text. A line that is not one JSON object is malformed.
# A SPEC field given twice in one object is a problem (JSON readers disagree on which one
# counts, and a bill must not guess): the fields that repeat, named.
_SPEC_NAMES = "[" + ", ".join(f"'{name}'" for name in INPUT_NAMES) + "]"


def _not_text() -> str:
    """SQL CASE branches naming the first text field whose JSON value is no text: a callid
    that is not a string; another field that is neither a string nor a whole number (which
    reads as its digits). The scanner (``scan.BARE_RULE``) leaves such lines to this path."""
    branches = []
    for k, name in enumerate(TEXT_NAMES, 1):
        value = f"json_extract(raw, '$.{name}')::VARCHAR"
        if name == "callid":
            wrong, what = f"types[{k}] NOT IN ('VARCHAR', 'NULL')", "a JSON string"
        else:
            wrong = f"types[{k}] IN ('DOUBLE', 'BOOLEAN', 'OBJECT', 'ARRAY')"
            what = "a JSON string or whole number"
        branches.append(f"WHEN {wrong} THEN '{name}: ' || {value} || ' is not {what}'")
    return "\n            ".join(branches)


_JSON_SPACE = "' ' || chr(9) || chr(10) || chr(13)"  # what JSON takes for white space
_TEXT_PATHS = "[" + ", ".join(f"'$.{name}'" for name in TEXT_NAMES) + "]"
_JSON_SQL = f"""
WITH parsed AS (
    SELECT line AS raw, n, source,
           json_valid(line) AND starts_with(ltrim(line, {_JSON_SPACE}), '{{') AS ok
    FROM lines
), keyed AS (
    SELECT *, CASE WHEN ok THEN json_keys(raw) END AS keys,
           CASE WHEN ok THEN json_type(raw, {_TEXT_PATHS}) END AS types
    FROM parsed
)
SELECT unnest(CASE WHEN ok THEN json_transform(raw, '{_TEXT_STRUCT}') END),
       raw, source, n AS line,
       CASE WHEN NOT ok THEN 'not a JSON object'
            WHEN len(repeated) > 0
            THEN array_to_string(repeated, ', ') || ': given more than once in the object'
            {_not_text()}
       END AS problem
FROM (SELECT *, list_sort(list_distinct(list_filter(keys, lambda k, i:
                    list_position(keys, k) < i AND list_contains({_SPEC_NAMES}, k)))) AS repeated
      FROM keyed)
"""


def _json_records(
    con: duckdb.DuckDBPyConnection, source: str, numbers: np.ndarray, lines: pa.Array
) -> pa.Table:
    table = pa.table(
        {
            "line": lines.cast(pa.string()),
            "n": pa.array(numbers, pa.int64()),
            "source": pa.repeat(source, len(lines)),
        }
    )
    con.register("lines", table)
    try:
        result = _prepared(con, "cdrflow_json", _JSON_SQL)
    finally:
        con.unregister("lines")
    return _mark_empty(result)


# The statements each connection has prepared (``_prepared``).
_PREPARED: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, set[str]] = (
    weakref.WeakKeyDictionary()
)


def _prepared(con: duckdb.DuckDBPyConnection, name: str, sql: str) -> pa.Table:
    """The result of ``sql`` over the tables registered now, by a statement ``con``
    prepares once. DuckDB plans a relation's query when it is made and again when it runs;
    a prepared statement is only bound again to the registered table. A block's few unusual
    lines cost 8 ms in ``validate`` this way, not 12–19, and 5 ms in the JSON parse, not 6."""
    names = _PREPARED.setdefault(con, set())
    if name not in names:
        con.sql(f"PREPARE {name} AS {sql}")
        names.add(name)
    return con.sql(f"EXECUTE {name}").to_arrow_table()


def _blank(raw: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Lines holding nothing but white space: not records at all."""
    lengths = pc.fill_null(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False)
    blank = np.zeros(len(lengths), bool)
    for i in np.flatnonzero(lengths <= 4):  # a newline, a CR, a stray space or tab
        blank[i] = not (raw[int(i)].as_py() or "").strip()
    return blank


def _mark_empty(table: pa.Table) -> pa.Table:
    blank = _blank(table["raw"])
    if not blank.any():
        return table
    problem = pc.if_else(pa.array(blank), "empty", table["problem"])
    return table.set_column(table.schema.get_field_index("problem"), "problem", problem)


def _csv_fields(record: str, separator: str = ",") -> list[str]:
    """The fields of one CSV record (its line breaks inside quotes kept), by Python's csv.
    Raises ``csv.Error`` for what that module cannot read: a carriage return outside quotes
    (``_bare_cr``), a field longer than its limit."""
    return next(csv.reader([record.rstrip("\r\n")], delimiter=separator), [])


def _bare_cr(record: str, separator: str = ",") -> int | None:
    """The index of the field of ``record`` that holds its first carriage return outside
    quotes (one that does not end the record), or None. Read as Python's csv reads quotes:
    a quote opens quoting at a field's start or right after a closing quote (``""``), and is
    text anywhere else."""
    body = record.rstrip("\r\n")
    field, i, n = 0, 0, len(body)
    while i < n:
        c = body[i]
        if c == '"':  # at a field's start, or just after a closing quote
            end = body.find('"', i + 1)
            if end < 0:
                return None
            i = end + 1
            continue
        if c == "\r":
            return field
        if c == separator:
            field += 1
            i += 1
            continue
        cr, comma = body.find("\r", i), body.find(separator, i)  # unquoted text runs on
        if cr >= 0 and (comma < 0 or cr < comma):
            return field
        if comma < 0:
            return None
        field += 1
        i = comma + 1
    return None


def _csv_problem(record: str, header: list[str], error: csv.Error) -> str:
    """Why a record Python's csv module refused is no record, naming the field."""
    k = _bare_cr(record)
    if k is None:
        return f"the row cannot be read as CSV ({error})"
    name = header[k] if k < len(header) else f"field {k + 1}"
    return (
        f"{name}: a carriage return (CR) outside quotes; CSV lines end with LF or CRLF, and "
        "a CR inside a value needs quotes"
    )


def _csv_header(path: Path, line: str) -> list[str]:
    """The column names of a CSV file's first line, or an error saying what is wrong."""
    try:
        names = [h.strip() for h in _csv_fields(line)]
    except csv.Error as exc:
        if _bare_cr(line) is None:
            raise CdrflowError(f"{path}:1: the CSV header cannot be read ({exc})") from None
        raise CdrflowError(
            f"{path}:1: the CSV header holds a carriage return (CR) that ends no line; "
            "cdrflow reads lines that end with LF or CRLF (convert a file whose lines end "
            "with CR alone, e.g. with tr '\\r' '\\n')"
        ) from None
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        hint = ""
        for separator, called in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            try:
                fields = [f.strip() for f in _csv_fields(line, separator)]
            except csv.Error:
                continue
            if all(name in fields for name in REQUIRED):
                hint = f"; its fields are separated by {called}, and cdrflow reads commas"
                break
        raise CdrflowError(
            f"{path}:1: the CSV header lacks {', '.join(missing)} (SPEC §4 fields){hint}"
        )
    twice = [name for name in INPUT_NAMES if names.count(name) > 1]
    if twice:
        raise CdrflowError(f"{path}:1: the CSV header names {', '.join(twice)} more than once")
    return names


def _csv_records(source: str, header: list[str], numbers: np.ndarray, lines: pa.Array) -> pa.Table:
    """CSV records as text records, one at a time with Python's csv module (the slow path
    sees few records; each keeps the line number where it starts)."""
    texts = lines.cast(pa.string()).to_pylist()
    values: dict[str, list[str | None]] = {name: [] for name in INPUT_NAMES}
    problem: list[str | None] = []
    index = {name: k for k, name in enumerate(header)}
    for text in texts:
        blank = not text.strip()
        fields: list[str] = []
        unreadable = None
        if not blank:
            try:
                fields = _csv_fields(text)
            except csv.Error as exc:
                unreadable = _csv_problem(text, header, exc)
        if blank:
            problem.append("empty")
        elif unreadable is not None:
            problem.append(unreadable)
        elif len(fields) != len(header):
            problem.append(f"the row does not have the {len(header)} fields of the header")
        else:
            problem.append(None)
        ok = problem[-1] is None
        for name in INPUT_NAMES:
            k = index.get(name)
            values[name].append(fields[k] if ok and k is not None and fields[k] != "" else None)
    columns: dict[str, pa.Array] = {name: pa.array(v, pa.string()) for name, v in values.items()}
    columns["raw"] = pa.array(texts, pa.string())
    columns["source"] = pa.array([source] * len(texts), pa.string())
    columns["line"] = pa.array(numbers, pa.int64())
    columns["problem"] = pa.array(problem, pa.string())
    return pa.table(columns)


# Rows of a Parquet input read at a time: about a text block's worth of records, so that the
# blocks in flight (read, rated, staged) stay as small as a CSV run's.
PARQUET_ROWS = 131_072


def _parquet_tables(path: Path) -> Iterator[tuple[pa.Table, np.ndarray, int]]:
    """The SPEC §4 columns a Parquet file has, block by block as stored, with each row's
    line (its number from 1) and the bytes read. A file that is not Parquet, or whose data
    cannot be decoded, is an error naming the file and the rows (the run then lands nothing
    of it: a run commits whole)."""
    # pre_buffer off: with it, iter_batches keeps what it has read until the file ends (its
    # memory grew with the input, 1 GiB at 20M CDRs).
    file = open_parquet(path)
    names = [name for name in INPUT_NAMES if name in file.schema_arrow.names]
    row = 1
    batches = file.iter_batches(batch_size=PARQUET_ROWS, columns=names)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise CdrflowError(
                f"{path}: rows from {row} on cannot be read ({_one_line(exc)}); nothing of "
                "this run landed"
            ) from None
        n = batch.num_rows
        yield pa.Table.from_batches([batch]), np.arange(row, row + n, dtype=np.int64), batch.nbytes
        row += n


def open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file opened for reading by blocks, or an error saying it is not one."""
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise CdrflowError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    """A library's message on one printable line (Arrow's span lines, with control bytes
    from the damaged data)."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())


def _parquet_blocks(path: Path) -> Iterator[RawBlock]:
    for table, lines, nbytes in _parquet_tables(path):
        yield RawBlock(_parquet_text(table, str(path), lines), nbytes)


def _parquet_text(table: pa.Table, source: str, lines: np.ndarray) -> pa.Table:
    """Parquet rows as text records, for ``validate``. A value of a type that has no text
    (a struct, a list) makes its row invalid, naming the field; bytes that are not UTF-8 are
    read with replacement characters, as in a text file."""
    n = table.num_rows
    columns = {}
    problems = []
    for name in INPUT_NAMES:
        if name not in table.column_names:
            columns[name] = pa.nulls(n, pa.string())
            continue
        columns[name], problem = _parquet_column_text(name, table[name])
        if problem is not None:
            problems.append(problem)
    columns["raw"] = pa.nulls(n, pa.string())  # made from the row only when it is rejected
    columns["source"] = pa.repeat(pa.scalar(source, pa.string()), n)
    columns["line"] = pa.array(lines, pa.int64())
    columns["problem"] = pc.coalesce(*problems) if problems else pa.nulls(n, pa.string())
    return pa.table(columns)


def _parquet_column_text(
    name: str, column: pa.ChunkedArray
) -> tuple[pa.ChunkedArray | pa.Array, pa.ChunkedArray | None]:
    """One Parquet column as text, and the problem of each row whose value has none, or
    whose type is none a text field takes: a ``callid`` is text, another text field text or
    a whole number (as in JSON)."""
    if pa.types.is_timestamp(column.type):
        text, beyond = _time_text(column)
        if pc.any(beyond).as_py():
            count = pc.cast(column.cast(pa.int64()), pa.string())
            far = pc.binary_join_element_wise(
                f"{name}: ", count, f" {column.type.unit} from 1970 is not in the years "
                f"{FIRST_YEAR} to {LAST_YEAR}", ""
            )  # fmt: skip
            return text, pc.if_else(beyond, far, pa.scalar(None, pa.string()))
    text = _as_text(column)
    if text is None:  # no text for this type: its JSON, for ``raw``
        what = "text, a number or a time"
        values = [
            None if v is None else json.dumps(v, default=str, separators=(",", ":"))
            for v in column.to_pylist()
        ]
        text = pa.array(values, pa.string())
    else:
        takes = _TEXT_TYPES if name == "callid" else (*_TEXT_TYPES, pa.types.is_integer)
        if name not in TEXT_NAMES or _kind_is(column.type, *takes):
            return text, None
        what = "text" if name == "callid" else "text or a whole number"
    return text, pc.if_else(
        pc.is_valid(column),
        f"{name}: a Parquet {column.type} value, not {what}",
        pa.scalar(None, pa.string()),
    )


_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
               pa.types.is_large_binary)  # fmt: skip


def _kind_is(kind: pa.DataType, *tests: Callable[[pa.DataType], bool]) -> bool:
    """Whether a column type (or a dictionary's values) passes one of ``tests``."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(test(kind) for test in tests)


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array | None:
    """A Parquet column as the text its values read as (a time as its instant in ISO 8601,
    bytes that are not UTF-8 with replacement characters), or None for a type without text
    (a struct, a list)."""
    if pa.types.is_timestamp(column.type):
        return _time_text(column)[0]
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:  # bytes that are not UTF-8
        values = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else None if v is None else str(v)
            for v in column.to_pylist()
        ]
        return pa.array(values, pa.string())
    except pa.ArrowNotImplementedError:
        return None


def _time_text(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """A timestamp column as ISO 8601 instants in UTC, and where a value lies beyond what
    microseconds hold (about 290,000 years either side of 1970; a second or millisecond
    column reaches further, and strftime's arithmetic overflows there): such a value is
    its count of the column's unit, as text."""
    unit = column.type.unit
    count = column.cast(pa.int64())
    most = (2**63 - 1) // {"s": 1_000_000, "ms": 1_000}.get(unit, 1)
    beyond = pc.or_(pc.less(count, -most), pc.greater(count, most))
    # The instant in UTC (strftime writes a zoned time in its own zone), %S with its fraction.
    iso = pc.strftime(column.cast(pa.timestamp(unit, tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    return pc.if_else(beyond, pc.cast(count, pa.string()), iso), pc.fill_null(beyond, False)


def _parquet_raw(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Array:
    """Parquet rows as JSON objects of the values the file holds, for a rejection's ``raw``:
    numbers as numbers, nested values nested, times as ISO 8601 instants and bytes as text
    (as ``validate`` read them), a null as null."""
    shown = {}
    for name in table.column_names:
        column = table[name]
        text = None
        if _kind_is(column.type, pa.types.is_timestamp, pa.types.is_binary,
                    pa.types.is_large_binary):  # fmt: skip
            text = _as_text(column)
        shown[name] = column if text is None else text
    rows = pa.table(shown)
    try:
        con.register("parquet_rows", rows)
        try:
            result = con.sql("SELECT to_json(parquet_rows)::VARCHAR AS j FROM parquet_rows")
            return result.to_arrow_table()["j"].combine_chunks()
        finally:
            con.unregister("parquet_rows")
    except duckdb.Error:  # a type DuckDB does not take (a half float, an interval)
        return pa.array(
            [json.dumps(row, default=str, separators=(",", ":")) for row in rows.to_pylist()],
            pa.string(),
        )


def _parquet_block(
    con: duckdb.DuckDBPyConnection, source: str, table: pa.Table, lines: np.ndarray, nbytes: int
) -> Block:
    """One Parquet block: the rows ``parquet_fast`` takes as they are typed, the others (all
    of them when a column's type is not one it converts exactly) through ``validate``."""
    if parquet_fast.plain_types(table.schema):
        plain = parquet_fast.plain_rows(table)
    else:
        plain = np.zeros(table.num_rows, np.bool_)
    if plain.all():
        return Block(parquet_fast.typed(table, source, lines), _no_invalid(), 0, None, nbytes)
    slow = ~plain
    given = table.filter(pa.array(slow)) if plain.any() else table  # no copy when all are slow
    text = _parquet_text(given, source, lines[slow])
    valid, invalid, blank = validate(con, text)
    if invalid.num_rows:  # the raw values, not what validate made of them (a null dt)
        rows = np.searchsorted(lines[slow], invalid["line"].to_numpy())
        raw = _parquet_raw(con, given.take(pa.array(rows)))
        invalid = invalid.set_column(invalid.schema.get_field_index("raw"), "raw", raw)
    valid = valid.drop_columns(["raw"]).append_column("row", pc.subtract(valid["line"], 1))
    if plain.any():
        fast = parquet_fast.typed(table.filter(pa.array(plain)), source, lines[plain])
        valid = pa.concat_tables([fast, valid.cast(fast.schema)])
        valid = valid.take(pc.sort_indices(valid["line"]))
    return Block(valid, invalid, blank, None, nbytes)


def _checks() -> str:
    """The SPEC §4 rules as one SQL CASE: the first broken rule names its field."""

    def q(name: str) -> str:
        # A NUL byte is shown as JSON writes it (dropped, it left a value that looked right).
        shown = f"""replace("{name}", chr(0), '\\u0000')"""
        return f"""'{name}: ' || coalesce('''' || {shown} || '''', 'null')"""

    return f"""
    CASE
      WHEN problem IS NOT NULL THEN problem
      WHEN callid IS NULL THEN 'callid: missing'
      WHEN dt IS NULL THEN 'dt: missing'
      WHEN t_dt IS NULL THEN {q("dt")} || ' is neither ISO 8601 nor epoch milliseconds'
      WHEN NOT real_offset
        THEN {q("dt")} || ' has no real UTC offset (they run from -14:00 to +14:00)'
      WHEN NOT in_years THEN {q("dt")} || ' is not in the years {FIRST_YEAR} to {LAST_YEAR}'
      WHEN dest_number IS NULL THEN 'dest_number: missing'
      WHEN NOT regexp_full_match(dest_number, '[0-9+*#]{{1,64}}')
        THEN {q("dest_number")} || ' may hold only digits, +, * and #'
      WHEN sip_code IS NULL THEN 'sip_code: missing'
      WHEN t_sip_code IS NULL OR t_sip_code NOT BETWEEN 100 AND 699
        THEN {q("sip_code")} || ' is not a SIP response code (100-699)'
      WHEN duration IS NOT NULL AND (t_duration IS NULL OR t_duration < 0)
        THEN {q("duration")} || ' is not a number of seconds >= 0'
      WHEN t_duration > {MAX_DURATION}
        THEN {q("duration")} || ' is more than {MAX_DURATION} seconds, longer than any call'
      WHEN pdd_ms IS NOT NULL AND (t_pdd_ms IS NULL OR t_pdd_ms < 0)
        THEN {q("pdd_ms")} || ' is not a whole number of milliseconds >= 0'
      WHEN ring_duration IS NOT NULL AND (t_ring_duration IS NULL OR t_ring_duration < 0)
        THEN {q("ring_duration")} || ' is not a number of seconds >= 0'
      WHEN t_ring_duration > {MAX_DURATION}
        THEN {q("ring_duration")} || ' is more than {MAX_DURATION} seconds, longer than any call'
      WHEN direction IS NOT NULL AND direction NOT IN ('outbound', 'inbound')
        THEN {q("direction")} || ' is neither outbound nor inbound'
    END"""


_GIVEN = ", ".join(f'nullif(trim("{name}"), \'\') AS "{name}"' for name in INPUT_NAMES)
# What a number is written as. DuckDB's casts take more, and read it as something else:
# 200.5 as the SIP code 201, 1_000 as 1000, 0x10 as 16 milliseconds, +5 as 5.
_WHOLE = "[0-9]+"
# Decimal seconds: digits with a point, and an exponent (JSON writers, and Parquet floats
# written as text, give 1e-05 for 0.00001): 1e3 is 1000 seconds, exactly.
_DECIMAL = r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
# A numeric UTC offset (at a time's end) whose minutes or seconds are 60 or more: DuckDB reads
# +01:60 as +02:00.
_BAD_OFFSET = ".*[+-][0-9]{2}:?[6-9][0-9](:?[0-9]{2})?|.*[+-][0-9]{2}:?[0-9]{2}:?[6-9][0-9]"
_VALIDATE_SQL = f"""
WITH given AS (
    SELECT {_GIVEN},
           raw, source, line, problem
    FROM block
), typed AS (
    SELECT *,
           CASE WHEN regexp_full_match(dt, '[0-9]{{1,15}}')
                THEN epoch_ms(CAST(dt AS BIGINT))::TIMESTAMPTZ
                ELSE TRY_CAST(dt AS TIMESTAMPTZ) END AS t_dt,
           CASE WHEN regexp_full_match(sip_code, '{_WHOLE}')
                THEN TRY_CAST(sip_code AS SMALLINT) END AS t_sip_code,
           CASE WHEN regexp_full_match(duration, '{_DECIMAL}')
                THEN TRY_CAST(duration AS DECIMAL(18, 6)) END AS t_duration,
           CASE WHEN regexp_full_match(pdd_ms, '{_WHOLE}')
                THEN TRY_CAST(pdd_ms AS BIGINT) END AS t_pdd_ms,
           CASE WHEN regexp_full_match(ring_duration, '{_DECIMAL}')
                THEN TRY_CAST(ring_duration AS DECIMAL(18, 6)) END AS t_ring_duration
    FROM given
), zoned AS (
    -- The offset a time's text gives (a number, or a zone's): its local time less its instant.
    SELECT *, CASE WHEN regexp_full_match(dt, '[0-9]{{1,15}}') THEN 0
                   ELSE epoch_us(TRY_CAST(dt AS TIMESTAMP)) - epoch_us(t_dt) END AS offset_us
    FROM typed
), checked AS (
    SELECT *, coalesce(
               offset_us = 0
               OR (abs(offset_us) <= {MAX_UTC_OFFSET_MINUTES * 60_000_000}
                   AND NOT regexp_full_match(right(dt, 9), '{_BAD_OFFSET}')),
               false) AS real_offset
    FROM zoned
)
SELECT {", ".join(f'"{name}"' for name in TEXT_NAMES if name not in ("direction",))},
       -- A dt out of the years (or with no real offset) is no valid dt: its rejection is
       -- filed by the day it was made.
       CASE WHEN in_years AND real_offset THEN t_dt END AS dt, t_sip_code AS sip_code,
       t_duration AS duration, t_pdd_ms AS pdd_ms,
       t_ring_duration AS ring_duration, coalesce(direction, 'outbound') AS direction,
       raw, source, line, {_checks()} AS invalid
FROM (SELECT *, epoch_us(t_dt) BETWEEN {DT_FROM_US} AND {DT_UNTIL_US - 1} AS in_years
      FROM checked)
"""


def validate(con: duckdb.DuckDBPyConnection, block: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """Type a block of text records. Returns (valid records: ``INPUT`` plus raw, source and
    line; invalid ones with their ``detail``; the number of blank lines skipped)."""
    con.register("block", block)
    try:
        result = _prepared(con, "cdrflow_validate", _VALIDATE_SQL)
    finally:
        con.unregister("block")
    invalid = result["invalid"]
    blank = pc.fill_null(pc.equal(invalid, "empty"), False)
    bad = pc.and_not(pc.is_valid(invalid), blank)
    good = pc.is_null(invalid)
    valid = result.filter(good)
    columns = [valid[name].cast(INPUT.field(name).type) for name in INPUT_NAMES]
    columns += [valid["raw"], valid["source"], valid["line"]]
    typed = pa.table(columns, names=[*INPUT_NAMES, "raw", "source", "line"])
    rejects = result.filter(bad)
    return typed, rejects, int(pc.sum(blank).as_py() or 0)


@dataclass
class Block:
    """One block of a file, validated: typed records (``INPUT`` plus ``source``, ``line``
    and ``row``, the record's index in ``lines``), invalid ones with their detail and raw
    text, the blank lines skipped, the block's raw lines (None for Parquet), and for a CSV
    file its header line (which a rejected record keeps, so that its ``raw`` reads again)."""

    valid: pa.Table
    invalid: pa.Table
    blank: int
    lines: pa.Array | None
    bytes_read: int
    csv_header: str | None = None

    def __post_init__(self) -> None:
        # One schema whatever the reader (a Parquet file's columns are all nullable, a JSON
        # reader's required ones not): blocks of several inputs concatenate (the held calls
        # of a run that mixes them). Only the fields' flags change; no data is copied.
        self.valid = self.valid.cast(VALID)


def prefetched(blocks: Iterator[Block]) -> Iterator[Block]:
    """The next block is read and scanned on a thread while the caller rates this one."""
    queue: Queue[tuple[Block | None, BaseException | None]] = Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        queue.put((block, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((None, None))
        except BaseException as exc:  # handed to the caller, who raises it
            queue.put((None, exc))

    thread = threading.Thread(target=produce, name="cdrflow-read", daemon=True)
    thread.start()
    try:
        while True:
            block, error = queue.get()
            if error is not None:
                raise error
            if block is None:
                return
            yield block
    finally:
        stop.set()
        thread.join()


def read_records(
    path: Path, con: duckdb.DuckDBPyConnection, block_bytes: int = BLOCK_BYTES
) -> Iterator[Block]:
    """Validated records of a CDR file, block by block: the plain records through a fast
    path (text: the numba scanner, ``pipelines.scan``; Parquet: ``pipelines.parquet_fast``),
    every other record through ``validate``."""
    kind = check_input(path)
    if kind == "parquet":
        for table, lines, nbytes in _parquet_tables(path):
            yield _parquet_block(con, str(path), table, lines, nbytes)
        return
    columns: np.ndarray | None = None
    header: list[str] = []
    header_line: str | None = None
    for block in _line_blocks(path, block_bytes, csv_quotes=kind == "csv"):
        skip = 0
        if kind == "csv" and columns is None:
            header_line = block.text[0].as_py().rstrip("\r\n") if len(block.text) else ""
            header = _csv_header(path, header_line)
            columns = np.array([scan.FIELD.get(name, -1) for name in header], np.int64)
            skip = 1
        out = _parallel_block(con, str(path), kind, block, skip, header, columns)
        out.csv_header = header_line
        yield out


# What an empty Kafka message is read as: not a JSON object, so it is rejected (a blank line
# of a file is no record, but a message is one).
EMPTY_MESSAGE = b"(empty message)"


def read_messages(
    con: duckdb.DuckDBPyConnection,
    values: Sequence[bytes | None],
    partitions: np.ndarray,
    offsets: np.ndarray,
    source_of: Callable[[int], str],
) -> dict[int, Block]:
    """Validated records of Kafka messages (one JSON object each, SPEC §8), read as one
    block and handed back per partition; a record's ``source`` is ``source_of(partition)``
    and its ``line`` is its offset. Every message is one record, as sent: a line break in
    it is JSON's (white space between values, no JSON inside a string), and an empty one,
    or one of white space alone, is read as ``EMPTY_MESSAGE`` (a blank line of a file is no
    record, but a message is one)."""
    block = _message_block(con, [v or EMPTY_MESSAGE for v in values])
    if block.blank:  # rare: read again, the blank ones as empty
        block = _message_block(
            con,
            [v if v and v.decode("utf-8", "replace").strip() else EMPTY_MESSAGE for v in values],
        )
    names = sorted(set(partitions.tolist()))
    sources = pa.array([source_of(p) for p in names], pa.string())
    code = np.searchsorted(np.array(names, np.int64), partitions)

    def placed(table: pa.Table, index: pa.Array) -> tuple[pa.Table, np.ndarray]:
        rows = index.to_numpy(zero_copy_only=False)
        source = sources.take(pa.array(code[rows]))
        table = table.set_column(table.schema.get_field_index("source"), "source", source)
        line = pa.array(offsets[rows], pa.int64())
        return table.set_column(table.schema.get_field_index("line"), "line", line), code[rows]

    valid, valid_code = placed(block.valid, block.valid["row"])
    invalid, invalid_code = (
        placed(block.invalid, block.invalid["line"])
        if block.invalid.num_rows
        else (block.invalid, np.zeros(0, np.int64))
    )
    out = {}
    for c, partition in enumerate(names):
        bad = invalid.filter(pa.array(invalid_code == c)) if invalid.num_rows else invalid
        out[partition] = Block(
            valid.filter(pa.array(valid_code == c)), bad, 0, block.lines, block.bytes_read
        )
    return out


def _message_block(con: duckdb.DuckDBPyConnection, values: list[bytes]) -> Block:
    """Messages as one block of records, each a record however many line breaks it holds
    (the scanner and DuckDB read a record between its offsets, not up to a newline)."""
    data = b"\n".join(values) + b"\n"
    if not _utf8(data):  # undecodable bytes become U+FFFD, as in a file
        values = [v.decode("utf-8", "replace").encode() for v in values]
        data = b"\n".join(values) + b"\n"
    line_offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)) + 1, out=line_offsets[1:])
    text = pa.LargeStringArray.from_buffers(
        len(values), pa.py_buffer(line_offsets), pa.py_buffer(data)
    )
    array = np.frombuffer(data, np.uint8)
    lines = Lines(array, line_offsets, text, np.arange(len(values), dtype=np.int64))
    return _parallel_block(con, "", "jsonl", lines, 0, [], None)


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cdrflow-scan")


def _parallel_block(
    con: duckdb.DuckDBPyConnection,
    source: str,
    kind: str,
    block: Lines,
    skip: int,
    header: list[str],
    columns: np.ndarray | None,
) -> Block:
    """A block's plain records through the fast path, both halves at once (the kernels
    release the GIL); then the rest, from both halves together, through DuckDB (the JSON
    parse, then ``validate``: 5-8 ms each however few the lines, so once a block, not once
    a half)."""
    n = len(block)
    if n < 20_000:
        fast, slow, blank = _scanned(source, kind, block, skip, columns)
    else:
        half = n // 2
        futures = [
            _POOL.submit(_scanned, source, kind, block.part(lo, hi), skip if lo == 0 else 0,
                         columns)
            for lo, hi in ((0, half), (half, n))
        ]  # fmt: skip
        (fast0, slow0, blank0), (fast1, slow1, blank1) = (f.result() for f in futures)
        fast = pa.concat_tables([fast0, fast1])
        slow = np.concatenate([slow0, slow1 + half])
        blank = blank0 + blank1
    if slow.size == 0:
        return Block(fast, _no_invalid(), blank, block.text, block.data.size)
    lines = block.text.take(pa.array(slow))
    numbers = block.numbers[slow]
    if kind == "jsonl":
        texts = _json_records(con, source, numbers, lines)
    else:
        texts = _csv_records(source, header, numbers, lines)
    valid, invalid, more_blank = validate(con, texts)
    if valid.num_rows == 0:  # the usual case: the unusual lines were all invalid
        return Block(fast, invalid, blank + more_blank, block.text, block.data.size)
    # A record's line number is where it starts: increasing, so it finds the record's row.
    rows = block.row0 + np.searchsorted(block.numbers, valid["line"].to_numpy())
    valid = valid.drop_columns(["raw"]).append_column("row", pa.array(rows, pa.int64()))
    merged = pa.concat_tables([fast, valid.cast(fast.schema)])
    order = pc.sort_indices(merged["line"])
    return Block(merged.take(order), invalid, blank + more_blank, block.text, block.data.size)


def _scanned(
    source: str, kind: str, block: Lines, skip: int, columns: np.ndarray | None
) -> tuple[pa.Table, np.ndarray, int]:
    """The fast path over one run of records: the table of its plain records (``row`` is a
    record's index in the block ``block`` was cut from, ``Lines.row0``), the indices in
    ``block`` of the records it leaves to ``validate``, and the number of blank lines."""
    n = len(block)
    # Indexed [field, line] but laid out line by line: the kernels work a line at a time.
    starts = np.zeros((n, scan.N_FIELDS), np.int64).T
    ends = np.zeros((n, scan.N_FIELDS), np.int64).T
    kinds = np.zeros((n, scan.N_FIELDS), np.int8).T
    status = np.empty(n, np.int8)
    if kind == "jsonl":
        scan.scan_json(
            block.data,
            block.offsets,
            scan.NAMES_OFFSETS,
            scan.NAMES_DATA,
            scan.KEY_TABLE,
            starts,
            ends,
            kinds,
            status,
        )
    else:
        scan.scan_csv(block.data, block.offsets, columns, starts, ends, kinds, status)
    status[:skip] = scan.BLANK  # a CSV header is not a record
    typed = {
        "dt": np.zeros(n, np.int64),
        "duration": np.zeros(n, np.int64),
        "has_duration": np.zeros(n, np.bool_),
        "sip_code": np.zeros(n, np.int64),
        "pdd_ms": np.zeros(n, np.int64),
        "has_pdd": np.zeros(n, np.bool_),
        "ring": np.zeros(n, np.int64),
        "has_ring": np.zeros(n, np.bool_),
        "inbound": np.zeros(n, np.bool_),
    }
    f = scan.FIELD
    t = typed
    scan.type_fields(
        block.data, starts, ends, kinds, status, t["dt"], t["duration"], t["has_duration"],
        t["sip_code"], t["pdd_ms"], t["has_pdd"], t["ring"], t["has_ring"], t["inbound"],
        f["callid"], f["dt"], f["dest_number"], f["duration"], f["sip_code"], f["pdd_ms"],
        f["ring_duration"], f["direction"],
    )  # fmt: skip
    ok = np.flatnonzero(status == scan.OK)
    slow = np.flatnonzero(status == scan.SLOW)
    blank = int(np.count_nonzero(status == scan.BLANK)) - skip
    return _fast_table(block, ok, starts, ends, kinds, typed, source), slow, blank


def _no_invalid() -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in ("callid", "customer_id")})


# The fields the scanner types itself; every other field is text.
_TYPED = frozenset({"dt", "sip_code", "duration", "ring_duration", "pdd_ms", "direction"})
_TEXT = tuple(name for name in INPUT_NAMES if name not in _TYPED)
_TEXT_FIELDS = np.array([scan.FIELD[name] for name in _TEXT], np.int64)


def _fast_table(
    block: Lines,
    ok: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    kinds: np.ndarray,
    typed: dict[str, np.ndarray],
    source: str,
) -> pa.Table:
    n = ok.size
    offsets = np.zeros((len(_TEXT), n + 1), np.int32)
    present = np.zeros((len(_TEXT), n), np.bool_)
    out, bases = scan.gather_columns(
        block.data, starts, ends, kinds, ok, _TEXT_FIELDS, offsets, present
    )
    data = pa.py_buffer(out)
    columns: dict[str, pa.Array] = {}
    for c, name in enumerate(_TEXT):
        # Empty values are null, as on the slow path.
        missing = int(n - np.count_nonzero(present[c]))
        validity = pa.array(present[c]).buffers()[1] if missing else None
        columns[name] = pa.StringArray.from_buffers(
            n,
            pa.py_buffer(offsets[c]),
            data.slice(int(bases[c]), int(bases[c + 1] - bases[c])),
            validity,
            missing,
        )
    columns["dt"] = pa.array(typed["dt"][ok], pa.int64()).cast(INPUT.field("dt").type)
    columns["sip_code"] = pa.array(typed["sip_code"][ok].astype(np.int16), pa.int16())
    columns["duration"] = _decimal(typed["duration"][ok], typed["has_duration"][ok])
    columns["ring_duration"] = _decimal(typed["ring"][ok], typed["has_ring"][ok])
    columns["pdd_ms"] = pa.array(typed["pdd_ms"][ok], pa.int64(), mask=~typed["has_pdd"][ok])
    columns["direction"] = pc.if_else(pa.array(typed["inbound"][ok]), "inbound", "outbound")
    return pa.table(
        [
            *(columns[name] for name in INPUT_NAMES),
            pa.repeat(pa.scalar(source, pa.string()), n),
            pa.array(block.numbers[ok], pa.int64()),
            pa.array(block.row0 + ok, pa.int64()),
        ],
        schema=_FAST_SCHEMA,
    )


_FAST_SCHEMA = pa.schema(
    [*INPUT, pa.field("source", pa.string()), pa.field("line", pa.int64()),
     pa.field("row", pa.int64())]
)  # fmt: skip


def _decimal(micro: np.ndarray, present: np.ndarray) -> pa.Array:
    """Millionths as DECIMAL(18,6) (two little-endian words per value)."""
    words = np.empty((micro.size, 2), np.int64)
    words[:, 0] = micro
    words[:, 1] = micro >> 63
    validity = None if present.all() else pa.array(present).buffers()[1]
    return pa.Array.from_buffers(
        SECONDS,
        micro.size,
        [validity, pa.py_buffer(words)],
        null_count=int(micro.size - present.sum()),
    )
