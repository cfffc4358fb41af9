"""Problems as operators read them: one line each."""

from __future__ import annotations

from schemas.errors import Problem, ValidationError


def test_a_problem_is_one_line_whatever_the_input_it_quotes() -> None:
    """A header cell whose quote never closes is the rest of the file: named as a column,
    it made one problem many lines, each looking like a problem of its own."""
    start = ',customer_id,name\nacme-low,acme,"Low"\r\nglobex,x'
    problem = Problem("alerts.csv", 1, start + "y" * 100, "is not a column of alerts.csv")
    assert str(problem) == (
        r'alerts.csv:1: column ,customer_id,name\nacme-low,acme,"Low"\r\nglobex,x'
        + "y" * (80 - len(start)) + "…: is not a column of alerts.csv"
    )  # fmt: skip
    lines = str(ValidationError([problem, Problem("a.csv", 2, None, "bad\nvalue")])).split("\n")
    assert lines == [r"a.csv:2: bad\nvalue", str(problem)]
