"""The compiled tables' own checks: what ``check`` refuses, compiled tables always pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from rating import kernels
from rating.tables import Strings, Texts, check, compile_tables
from tests.rating.test_engine import worlds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_compiled_tables_always_pass_the_check(world: Any) -> None:
    check(compile_tables(world[0]))


def test_the_check_names_what_it_refuses() -> None:
    snapshot = {
        "customers": [{"customer_id": "c", "status": "active", "currency": "USD",
                       "tax_percent": None}],
        "rate_cards": [{"card_id": "k", "currency": "USD", "precision": 4,
                        "rounding": "half_up", "duration_rounding": "up"}],
        "rates": [{"card_id": "k", "prefix": "44", "name": "UK", "rate": 1, "connect_fee": 0,
                   "mcd": 0, "pulse": 1, "grace": 0, "effective_from": None,
                   "effective_to": None}],
        "routes": [{"id": 1, "customer_id": "c", "card_id": "k", "priority": 0,
                    "tech_prefix": None, "strip_digits": 0, "dial_string": None}],
        "auth": [], "packages": [], "customer_packages": [], "dids": [],
    }  # fmt: skip
    tables = compile_tables(snapshot)
    check(tables)
    tables.route_card[0] = 1
    with pytest.raises(ValueError, match=r"route_card has a value outside 0\.\.0"):
        check(tables)
    tables.route_card[0] = 0
    tables.slots[tables.slots[:, kernels.SLOT_KEY] != -1, kernels.SLOT_FIRST] = 1
    with pytest.raises(ValueError, match="points past its versions or rate rows"):
        check(tables)


def test_texts_read_like_a_list() -> None:
    words = ["", "Ünïcode", "UK", "44 mobile"]
    texts = Texts(Strings.of(words))
    assert len(texts) == 4 and list(texts) == words
    assert texts[1] == "Ünïcode" and texts[-1] == "44 mobile" and texts[1:3] == words[1:3]
    with pytest.raises(IndexError):
        texts[4]
    assert np.array_equal(texts.strings.offsets, Strings.of(words).offsets)
