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
        place = self.where if self.line is None else f"{self.where}:{self.line}"
        if self.column:
            return f"{place}: column {self.column}: {self.message}"
        return f"{place}: {self.message}"


class ValidationError(CdrflowError):
    """Every problem found in one validation pass, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems), key=_problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))


def _problem_order(p: Problem) -> tuple[str, int, str, str]:
    return (p.where, p.line or 0, p.column or "", p.message)
