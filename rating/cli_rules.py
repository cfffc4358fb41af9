"""CLI rules (SPEC §3 cli_rules.csv, §9.1): which of a customer's rules a calling number meets.

One definition, read by authorization (which applies the rules) and by the explanation of a
call (which shows them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Rule = Mapping[str, Any]


def matches(pattern: str, cli: str) -> bool:
    """SPEC §3: a prefix, or a regex when the pattern starts with '^'."""
    return (
        re.search(pattern, cli) is not None if pattern.startswith("^") else cli.startswith(pattern)
    )


def first_match(rules: Iterable[Rule], cli: str | None) -> Rule | None:
    """The first rule (in the order given: the catalog's) whose pattern the calling number
    matches, or None; a call without a calling number matches none (SPEC §9.1)."""
    if cli is None or cli == "":
        return None
    return next((rule for rule in rules if matches(rule["pattern"], cli)), None)


__all__ = ["first_match", "matches"]
