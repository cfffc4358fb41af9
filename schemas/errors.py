"""The one exception root of cdrflow, and the problem records that validation collects.

Messages are written for operators: what was wrong, where (file, line, column or the
command-line option), and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


class CdrflowError(Exception):
    """An error an operator can act on; the CLI prints its message and exits non-zero."""


@dataclass(frozen=True, order=True)
class Problem:
    """One validation failure: where it was, which column, and what was wrong."""

    where: str
    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        """One line, whatever the input it quotes: a header cell whose quote never closes
        holds the rest of its file, line breaks and all."""
        place = self.where if self.line is None else f"{self.where}:{self.line}"
        column = self.column or ""
        if len(column) > COLUMN_SHOWN:
            column = column[:COLUMN_SHOWN] + "…"
        text = f"{place}: column {column}: {self.message}" if column else f"{place}: {self.message}"
        return text.replace("\r", "\\r").replace("\n", "\\n")


COLUMN_SHOWN = 80  # characters of a column's name a problem shows


class ValidationError(CdrflowError):
    """Every problem found in one validation pass, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems), key=_problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))


def _problem_order(p: Problem) -> tuple[str, int, str, str]:
    return (p.where, p.line or 0, p.column or "", p.message)
