"""A driver for the ``cdrflow`` command line, run in-process through typer's CliRunner.

click 8.2+ keeps stderr apart: ``result.stdout`` is what a pipe would get, ``result.stderr``
the operator's messages, ``result.output`` both interleaved as a terminal shows them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from pipelines.cli import app, output


def describe(result: Result) -> str:
    """Everything about a run, for an assertion message."""
    text = f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        text += "\n--- exception\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


class Cli:
    """``cdrflow --home HOME …`` with assertions on the exit status."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def run(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, ["--home", str(self.home), *args], input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self.run(*args, input=input)
        assert result.exit_code == 0, describe(result)
        assert result.exception is None, describe(result)
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        result = self.ok(*args, "--format", "json", input=input)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - a failure's message
            raise AssertionError(f"stdout is not JSON ({exc})\n{describe(result)}") from None

    def csv(self, *args: str) -> list[dict[str, str]]:
        result = self.ok(*args, "--format", "csv")
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def refused_lines(self, *args: str, input: str | None = None) -> list[str]:
        """A refusal: exit 1, nothing on stdout, no traceback, ``error:`` lines on stderr."""
        result = self.run(*args, input=input)
        assert result.exit_code == 1, describe(result)
        assert isinstance(result.exception, SystemExit), describe(result)
        assert result.stdout == "", describe(result)
        assert result.stderr.startswith("error: "), describe(result)
        return result.stderr.removeprefix("error: ").splitlines()

    def refused(self, *args: str, input: str | None = None) -> str:
        """A refusal of one problem: exactly one line on stderr; returns it."""
        lines = self.refused_lines(*args, input=input)
        assert len(lines) == 1, "expected one line, got:\n" + "\n".join(lines)
        return lines[0]


def keys(rows: list[dict[str, Any]], column: str) -> list[Any]:
    return [r[column] for r in rows]


@dataclass
class Shown:
    """A table as a terminal shows it: the header row's names, the lines of its rows, and
    the columns its hint line says are hidden."""

    headers: list[str]
    header_lines: int
    rows: list[str]
    hidden: list[str]
    lines: list[str]


_HINT = re.compile(r"(\d+) columns? hidden \((.*)\): --wide, or --format csv\|json")


def shown(out: str) -> Shown:
    """The (last) table in ``out`` as :class:`Shown`."""
    lines = out.splitlines()
    heads = [line for line in lines if line.startswith("┃")]
    headers = [cell.strip() for cell in heads[0].strip("┃").split("┃")] if heads else []
    rows = [line for line in lines if line.startswith("│")]
    hidden: list[str] = []
    for line in lines:
        if match := _HINT.fullmatch(line):
            hidden = match[2].split(", ")
            assert int(match[1]) == len(hidden), line
    return Shown(headers, len(heads), rows, hidden, lines)


def narrow(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> None:
    """Tables printed as in a terminal ``width`` columns wide."""
    monkeypatch.setattr(output, "console", Console(width=width))
