"""``cdrflow catalog import DIR`` on random corruptions of the bundled sample catalog
(hypothesis): never a traceback. Either the import is clean, or it is refused with exit 1,
each problem on one line naming its file (and its line, and column, where it has them),
and the catalog as it was."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from schemas.catalog import ENTITIES
from tests.pipelines.cli.driver import Cli, describe

SAMPLE = sample_catalog()
FILES = sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*.csv"))
# Values no column takes as they are, or takes only just: wrong types, huge and tiny numbers,
# bad dates and codes, quoting, line breaks and bytes that are no text.
HOSTILE = [
    b"", b" ", b"-1", b"-0", b"1e400", b"9" * 40, b"0.0000001", b"1_000", b"0x10", b"NaN",
    b"inf", b"abc", b'"', b'"unclosed', b'a""b', b'"a"b', b"a\rb", b"a\r\nb", b"a\nb",
    b"a\x00b", b"\xff\xfe", b"\xef\xbb\xbf", b"=1+2", b"'", b"''x", b"2026-02-30",
    b"9999-12-31T99:99", b"2026-11-01T10:00:00-25:00", b"x" * 70, b"usd", b"XXX", b"^[",
    b"(", b"10.0.0.0/33", b"YES", b"1,2", b"+44", b"\t", b"acme", b"retail-usd", b"7",
    b"caf\xc3\xa9",
]  # fmt: skip

ROWS = tuple(f"{entity.singular} " for entity in ENTITIES)  # how a problem names a row

Edit = Callable[[bytes], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _set_cell(line: int, column: int, value: bytes) -> Edit:
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        k = line % len(lines)
        cells = lines[k].split(b",")
        cells[column % len(cells)] = value
        lines[k] = b",".join(cells)
        return b"\n".join(lines)

    return edit


def _drop_cell(line: int, column: int) -> Edit:
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        k = line % len(lines)
        cells = lines[k].split(b",")
        del cells[column % len(cells)]
        lines[k] = b",".join(cells)
        return b"\n".join(lines)

    return edit


def _lines_edit(kind: str, line: int, other: int) -> Edit:
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        k, j = line % len(lines), other % len(lines)
        if kind == "delete":
            del lines[k]
        elif kind == "repeat":
            lines.insert(j, lines[k])
        else:
            lines[k], lines[j] = lines[j], lines[k]
        return b"\n".join(lines)

    return edit


def _bytes_edit(kind: str, at: int, byte: int) -> Edit:
    def edit(data: bytes) -> bytes:
        k = at % (len(data) + 1)
        if kind == "truncate":
            return data[:k]
        if kind == "insert":
            return data[:k] + bytes([byte]) + data[k:]
        return data[:k] + bytes([byte]) + data[k + 1 :]

    return edit


WHOLE: dict[str, Edit] = {
    "empty": lambda data: b"",
    "bom": lambda data: b"\xef\xbb\xbf" + data,
    "crlf": lambda data: data.replace(b"\n", b"\r\n"),
    "cr": lambda data: data.replace(b"\n", b"\r"),
    "blank lines": lambda data: data.replace(b"\n", b"\n\n \n"),
    "latin-1": lambda data: data.decode("utf-8", "replace").encode("latin-1", "replace") + b"\xe9",
    "unknown column": lambda data: data.replace(b"\n", b",extra\n", 1),
}

INDEX = st.integers(0, 1000)
EDITS = st.one_of(
    st.builds(_set_cell, INDEX, INDEX, st.sampled_from(HOSTILE)),
    st.builds(_drop_cell, INDEX, INDEX),
    st.builds(_lines_edit, st.sampled_from(["delete", "repeat", "swap"]), INDEX, INDEX),
    st.builds(_bytes_edit, st.sampled_from(["truncate", "insert", "replace"]), INDEX,
              st.integers(0, 255)),
    st.sampled_from(list(WHOLE.values())),
)  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose catalog holds the sample, copied for each example."""
    home = tmp_path_factory.mktemp("fuzz-import") / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, SAMPLE)
    return home


def _state(home: Path) -> dict[str, list[str]]:
    with Catalog(home) as catalog:
        return {name: sorted(str(r.row) for r in recs) for name, recs in catalog.snapshot().items()}


_EXAMPLES = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from([*FILES, "rates/nobody.csv"]), EDITS), min_size=1, max_size=3
    ),
    st.sampled_from([None, *FILES]),
)
def test_a_corrupted_catalog_is_imported_or_refused_line_by_line_never_a_traceback(
    template: Path, tmp_path: Path, edits: list[tuple[str, Edit]], removed: str | None
) -> None:
    example = tmp_path / f"example-{next(_EXAMPLES)}"
    home, directory = example / "home", example / "catalog"
    shutil.copytree(template, home)
    shutil.copytree(SAMPLE, directory)
    for name, edit in edits:
        path = directory / name
        path.write_bytes(edit(path.read_bytes() if path.exists() else b"prefix,name,rate\n"))
    if removed is not None:  # a file that is absent leaves its table alone
        (directory / removed).unlink(missing_ok=True)
    before = _state(home)
    result = Cli(home).run("catalog", "import", str(directory))
    assert result.exit_code in (0, 1), describe(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), describe(result)
    assert "Traceback" not in result.output, describe(result)
    if result.exit_code == 0:
        return
    assert result.stdout == "" and result.stderr.startswith("error: "), describe(result)
    # A problem of a file names it (and its line, and column); one of the catalog as the
    # import would leave it (a provider removed that a contract still uses) names the row.
    files = {str(p): p for p in directory.rglob("*")} | {str(directory): directory}
    for line in result.stderr.removeprefix("error: ").splitlines():
        where, _, rest = line.partition(":")
        if where in files and files[where].is_file():
            number = rest.split(":")[0]
            lines = len(files[where].read_bytes().splitlines()) + 1
            assert not number.isdigit() or 1 <= int(number) <= lines, describe(result)
        else:
            assert where in files or where.startswith(ROWS), f"{line!r}\n{describe(result)}"
    assert _state(home) == before
