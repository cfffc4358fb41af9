"""A catalog the size of a real wholesale platform's, for benchmarks and load tests.

``build_bench_catalog`` writes a catalog directory of CSV files (SPEC §3) to a temporary
directory and imports it into a home with the ordinary import, so the catalog passes every
rule an operator's import does. What it holds:

- ``cards`` customer termination cards (``sell-<currency>-<n>``, alternately USD and EUR),
  each with a row for every prefix of one prefix tree of ``prefixes`` nodes: real country
  codes (NANP area codes nested under ``1``), then mobile and fixed ranges nested down to
  6-8 digits, sized by how much traffic a country draws. Rates have 4 to 6 decimals;
  increments are a mix of 1/1, 6/6, 30/6 and 60/60 per country and card; some countries have
  a grace period or a connect fee; about one prefix in 200 has two versions (a price change
  on ``PRICE_CHANGE``), so a card holds slightly more rows than ``prefixes``.
- three providers, each with a cost card (``cost-<provider>``) over part of the same tree
  (``COST_DECKS``): carriers quote the regions they serve, not the whole world (about 40 %
  of the tree between them).
- a USD and an EUR origination card for DIDs, and DIDs on them;
- customers with IP (CIDR, tech prefix) and SIP user auth, routes with tech prefixes, a
  dial string of prefixes, a regex dial string and digit stripping; providers; packages and
  customer packages; payments.

The tree, rates and names are a pure function of ``seed``. Addresses are taken from
198.18.0.0/15, the range RFC 2544 reserves for benchmarks. Making the files takes about a
second; the catalog import takes about 0.07 ms a rate row (parsing and checking every row,
as an operator's import does), so the defaults (some 285,000 rows) take about 20 s, and a
single card of 50,000 prefixes about 6 s.
"""

from __future__ import annotations

import csv
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from schemas.catalog import (
    AUTH,
    CUSTOMER_PACKAGES,
    CUSTOMERS,
    DIDS,
    PACKAGES,
    PAYMENTS,
    PROVIDERS,
    RATE_CARDS,
    RATES,
    ROUTES,
    Entity,
)

PRICE_CHANGE = "2026-12-01T00:00:00Z"
MAX_PREFIX = 8

# (country code, name, relative traffic): the destinations of an international A-Z deck.
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("1", "USA/Canada", 40),
    ("7", "Russia/Kazakhstan", 6),
    ("20", "Egypt", 3),
    ("27", "South Africa", 3),
    ("30", "Greece", 2),
    ("31", "Netherlands", 3),
    ("32", "Belgium", 2),
    ("33", "France", 8),
    ("34", "Spain", 6),
    ("36", "Hungary", 1),
    ("39", "Italy", 6),
    ("40", "Romania", 2),
    ("41", "Switzerland", 2),
    ("43", "Austria", 2),
    ("44", "United Kingdom", 14),
    ("45", "Denmark", 1),
    ("46", "Sweden", 2),
    ("47", "Norway", 1),
    ("48", "Poland", 3),
    ("49", "Germany", 12),
    ("51", "Peru", 1),
    ("52", "Mexico", 6),
    ("53", "Cuba", 1),
    ("54", "Argentina", 2),
    ("55", "Brazil", 6),
    ("56", "Chile", 1),
    ("57", "Colombia", 2),
    ("58", "Venezuela", 1),
    ("60", "Malaysia", 2),
    ("61", "Australia", 3),
    ("62", "Indonesia", 4),
    ("63", "Philippines", 4),
    ("64", "New Zealand", 1),
    ("65", "Singapore", 1),
    ("66", "Thailand", 2),
    ("81", "Japan", 3),
    ("82", "South Korea", 2),
    ("84", "Vietnam", 2),
    ("86", "China", 8),
    ("90", "Turkey", 3),
    ("91", "India", 12),
    ("92", "Pakistan", 5),
    ("93", "Afghanistan", 1),
    ("94", "Sri Lanka", 1),
    ("95", "Myanmar", 1),
    ("98", "Iran", 2),
    ("212", "Morocco", 2),
    ("213", "Algeria", 1),
    ("216", "Tunisia", 1),
    ("218", "Libya", 0.5),
    ("220", "Gambia", 0.3),
    ("221", "Senegal", 0.6),
    ("225", "Ivory Coast", 0.6),
    ("233", "Ghana", 1),
    ("234", "Nigeria", 4),
    ("237", "Cameroon", 0.6),
    ("251", "Ethiopia", 1),
    ("254", "Kenya", 1),
    ("255", "Tanzania", 0.6),
    ("256", "Uganda", 0.6),
    ("260", "Zambia", 0.4),
    ("263", "Zimbabwe", 0.5),
    ("351", "Portugal", 1),
    ("352", "Luxembourg", 0.3),
    ("353", "Ireland", 1),
    ("354", "Iceland", 0.2),
    ("355", "Albania", 0.4),
    ("356", "Malta", 0.2),
    ("357", "Cyprus", 0.3),
    ("358", "Finland", 0.6),
    ("359", "Bulgaria", 0.6),
    ("370", "Lithuania", 0.4),
    ("371", "Latvia", 0.3),
    ("372", "Estonia", 0.3),
    ("373", "Moldova", 0.3),
    ("374", "Armenia", 0.3),
    ("375", "Belarus", 0.4),
    ("380", "Ukraine", 1.5),
    ("381", "Serbia", 0.6),
    ("385", "Croatia", 0.4),
    ("386", "Slovenia", 0.3),
    ("387", "Bosnia and Herzegovina", 0.3),
    ("420", "Czech Republic", 0.8),
    ("421", "Slovakia", 0.4),
    ("502", "Guatemala", 0.5),
    ("503", "El Salvador", 0.5),
    ("504", "Honduras", 0.4),
    ("505", "Nicaragua", 0.3),
    ("506", "Costa Rica", 0.3),
    ("507", "Panama", 0.3),
    ("509", "Haiti", 0.4),
    ("591", "Bolivia", 0.3),
    ("593", "Ecuador", 0.4),
    ("595", "Paraguay", 0.3),
    ("598", "Uruguay", 0.2),
    ("852", "Hong Kong", 1),
    ("855", "Cambodia", 0.4),
    ("856", "Laos", 0.2),
    ("880", "Bangladesh", 3),
    ("886", "Taiwan", 1),
    ("960", "Maldives", 0.1),
    ("961", "Lebanon", 0.5),
    ("962", "Jordan", 0.5),
    ("963", "Syria", 0.5),
    ("964", "Iraq", 0.8),
    ("965", "Kuwait", 0.5),
    ("966", "Saudi Arabia", 2),
    ("967", "Yemen", 0.4),
    ("968", "Oman", 0.3),
    ("971", "United Arab Emirates", 2),
    ("972", "Israel", 1),
    ("973", "Bahrain", 0.2),
    ("974", "Qatar", 0.4),
    ("975", "Bhutan", 0.05),
    ("976", "Mongolia", 0.1),
    ("977", "Nepal", 0.6),
    ("992", "Tajikistan", 0.3),
    ("993", "Turkmenistan", 0.1),
    ("994", "Azerbaijan", 0.4),
    ("995", "Georgia", 0.3),
    ("996", "Kyrgyzstan", 0.3),
    ("998", "Uzbekistan", 0.5),
    ("1242", "Bahamas", 0.2),
    ("1246", "Barbados", 0.1),
    ("1268", "Antigua and Barbuda", 0.05),
    ("1345", "Cayman Islands", 0.05),
    ("1441", "Bermuda", 0.05),
    ("1473", "Grenada", 0.05),
    ("1671", "Guam", 0.05),
    ("1758", "Saint Lucia", 0.05),
    ("1767", "Dominica", 0.05),
    ("1787", "Puerto Rico", 0.3),
    ("1809", "Dominican Republic", 0.6),
    ("1868", "Trinidad and Tobago", 0.1),
    ("1876", "Jamaica", 0.3),
)

OPERATORS = (
    "Vodafone",
    "Orange",
    "T-Mobile",
    "Telefonica",
    "Airtel",
    "MTN",
    "Claro",
    "Digicel",
    "Ooredoo",
    "Etisalat",
    "Jio",
    "Three",
    "Tigo",
    "Beeline",
)
REGIONS = ("Capital", "North", "South", "East", "West", "Central", "Coast", "Metro")

# (mcd, pulse) mixes an A-Z deck carries, and how often.
INCREMENTS = ((1, 1), (6, 6), (30, 6), (60, 60))
INCREMENT_WEIGHTS = (0.35, 0.25, 0.15, 0.25)

PROVIDERS_SPEC = (
    ("carrier-a", "Carrier A Global Transit", "USD"),
    ("carrier-b", "Carrier B Europe", "EUR"),
    ("carrier-c", "Carrier C Mobile Direct", "USD"),
)
# What each provider's cost deck covers, given (prefix, name, country index): a global
# carrier quoting coarse ranges, a European one quoting every range of Europe (country codes
# 3x and 4x), and a mobile specialist in the big markets.
COST_DECKS: tuple[Callable[[str, str, int], bool], ...] = (
    lambda prefix, name, country: len(prefix) <= 5,
    lambda prefix, name, country: prefix[0] in "34",
    lambda prefix, name, country: "Mobile" in name and COUNTRIES[country][2] >= 3,
)


def build_bench_catalog(
    home: Path, prefixes: int = 60_000, cards: int = 4, seed: int = 0
) -> dict[str, int]:
    """Create (or replace) a benchmark-sized catalog in ``home``; returns rows per file.

    ``cards`` customer termination cards each carry every prefix of a tree of ``prefixes``
    nested prefixes, and three provider cost cards parts of it; see the module docstring.
    """
    rnd = random.Random(seed)
    tree = _prefix_tree(rnd, prefixes)
    currencies = ["USD" if i % 2 == 0 else "EUR" for i in range(cards)]
    sell_cards = [f"sell-{c.lower()}-{i // 2 + 1}" for i, c in enumerate(currencies)]
    tables: dict[Entity, list[dict[str, Any]]] = {}
    rate_files: dict[str, list[dict[str, Any]]] = {}

    tables[RATE_CARDS] = []
    for i, (card, currency) in enumerate(zip(sell_cards, currencies, strict=True)):
        tables[RATE_CARDS].append(
            {
                "card_id": card,
                "name": f"Wholesale termination {currency} {i // 2 + 1}",
                "currency": currency,
                "direction": "termination",
                "precision": rnd.choice((4, 5, 6)),
                "rounding": rnd.choice(("half_up", "half_up", "up", "half_down")),
                "duration_rounding": "up",
            }
        )
        rate_files[card] = _rates(rnd, tree, markup=rnd.uniform(1.15, 1.6))
    tables[PROVIDERS] = [
        {"provider_id": p, "name": name, "currency": cur} for p, name, cur in PROVIDERS_SPEC
    ]
    for (provider, name, currency), covers in zip(PROVIDERS_SPEC, COST_DECKS, strict=True):
        card = f"cost-{provider}"
        tables[RATE_CARDS].append(
            {
                "card_id": card,
                "name": f"{name} buy rates",
                "currency": currency,
                "direction": "termination",
                "precision": 6,
                "rounding": "half_up",
                "duration_rounding": "up",
            }
        )
        deck = [node for node in tree if covers(*node)]
        rate_files[card] = _rates(rnd, deck, markup=rnd.uniform(0.75, 0.95))
    for currency in ("USD", "EUR"):
        card = f"did-in-{currency.lower()}"
        tables[RATE_CARDS].append(
            {
                "card_id": card,
                "name": f"DID origination {currency}",
                "currency": currency,
                "direction": "origination",
                "precision": 4,
                "rounding": "half_up",
                "duration_rounding": "up",
            }
        )
        rate_files[card] = [
            {"prefix": "1", "name": "US DID inbound", "rate": "0.0040", "mcd": 6, "pulse": 6},
            {"prefix": "18", "name": "US toll-free inbound", "rate": "0.0150", "mcd": 6,
             "pulse": 6},
            {"prefix": "44", "name": "UK DID inbound", "rate": "0.0035"},
            {"prefix": "49", "name": "Germany DID inbound", "rate": "0.0030"},
        ]  # fmt: skip

    customers, routes, auth = _customers(rnd, sell_cards, currencies)
    tables[CUSTOMERS] = customers
    tables[ROUTES] = routes
    tables[AUTH] = auth
    tables[PACKAGES] = [
        {"package_id": "pkg-uk-mobile", "name": "UK mobile 1000 minutes", "seconds": 60_000,
         "prefixes": "447", "frequency": "monthly", "retail": "15", "cost": "9"},
        {"package_id": "pkg-us-daily", "name": "USA 60 minutes a day", "seconds": 3600,
         "prefixes": "1", "frequency": "daily", "retail": "0.25", "cost": "0.12"},
        {"package_id": "pkg-eu-weekly", "name": "Europe fixed 500 minutes a week",
         "seconds": 30_000, "prefixes": "33|34|39|49", "frequency": "weekly", "retail": "4.5"},
        {"package_id": "pkg-welcome", "name": "Welcome bundle 30 minutes", "seconds": 1800,
         "frequency": "once", "retail": "0", "setup_retail": "0"},
    ]  # fmt: skip
    ids = [c["customer_id"] for c in customers]
    tables[CUSTOMER_PACKAGES] = [
        {"customer_id": ids[0], "package_id": "pkg-uk-mobile", "quantity": 2,
         "auto_decrement": "yes", "start_date": "2026-01-01"},
        {"customer_id": ids[2], "package_id": "pkg-us-daily", "auto_decrement": "yes",
         "start_date": "2026-06-01", "end_date": "2027-05-31"},
        {"customer_id": ids[3], "package_id": "pkg-eu-weekly", "start_date": "2026-03-02"},
        {"customer_id": ids[5], "package_id": "pkg-welcome", "start_date": "2026-11-01",
         "end_date": "2026-11-30"},
    ]  # fmt: skip
    tables[DIDS] = _dids(rnd, customers)
    tables[PAYMENTS] = [
        {
            "payment_id": f"PAY-BENCH-{i:04d}",
            "customer_id": c["customer_id"],
            "amount": f"{rnd.randint(5, 200) * 50}",
            "status": "completed",
            "at": "2026-10-01T09:00:00Z",
            "description": "Prepayment",
        }
        for i, c in enumerate(customers)
    ]

    with tempfile.TemporaryDirectory(prefix="cdrflow-bench-") as tmp:
        directory = Path(tmp)
        (directory / "rates").mkdir()
        for entity, rows in tables.items():
            _write(directory / entity.file, entity, rows)
        for card, rows in rate_files.items():
            _write(directory / "rates" / f"{card}.csv", RATES, rows, skip="card_id")
        with Catalog(home) as catalog:
            return import_directory(catalog, directory, force=True)


def _prefix_tree(rnd: random.Random, size: int) -> list[tuple[str, str, int]]:
    """``size`` nested prefixes as (prefix, name, country index), in the order they grew.

    Each country gets a share of the nodes by its traffic weight; its tree grows by giving a
    random node of its frontier a few children, down to ``MAX_PREFIX`` digits. Country codes
    are reserved up front, so that ``1`` never grows into ``1242`` (the Bahamas).
    """
    taken = {code for code, _, _ in COUNTRIES}
    total = sum(w for _, _, w in COUNTRIES)
    budget = max(size - len(COUNTRIES), 0)
    shares = [int(budget * w / total) for _, _, w in COUNTRIES]
    by_weight = sorted(range(len(COUNTRIES)), key=lambda i: -COUNTRIES[i][2])
    for i in range(budget - sum(shares)):
        shares[by_weight[i % len(by_weight)]] += 1
    nodes = [(code, name, index) for index, (code, name, _) in enumerate(COUNTRIES)]
    for index, (code, name, _) in enumerate(COUNTRIES):
        share = shares[index]
        frontier: list[tuple[str, str]] = [(code, name)]
        grown = 0
        while grown < share and frontier:
            pick = rnd.randrange(len(frontier))
            parent, parent_name = frontier[pick]
            digits = rnd.sample("0123456789", rnd.randint(2, 6))
            for digit in digits:
                child = parent + digit
                if child in taken or grown >= share:
                    continue
                taken.add(child)
                child_name = _child_name(rnd, name, parent, parent_name, code)
                nodes.append((child, child_name, index))
                grown += 1
                if len(child) < MAX_PREFIX:
                    frontier.append((child, child_name))
            if len(frontier) > 1 and rnd.random() < 0.3:
                frontier.pop(pick)
    del nodes[size:]
    return nodes


def _child_name(rnd: random.Random, country: str, parent: str, parent_name: str, code: str) -> str:
    if parent == code:
        if rnd.random() < 0.35:
            return f"{country} Mobile"
        return f"{country} {rnd.choice(REGIONS)}"
    if parent_name == f"{country} Mobile":
        return f"{country} Mobile {rnd.choice(OPERATORS)}"
    return parent_name


def _rates(
    rnd: random.Random, tree: list[tuple[str, str, int]], markup: float
) -> list[dict[str, Any]]:
    """One card's rows over the whole tree: prices follow the country and the range type."""
    by_country = []
    for _code, _name, _weight in COUNTRIES:
        base = rnd.lognormvariate(-4.2, 1.0)  # median ~0.015 a minute
        mcd, pulse = rnd.choices(INCREMENTS, INCREMENT_WEIGHTS)[0]
        grace = rnd.choice((3, 5)) if rnd.random() < 0.1 else 0
        fee = f"{rnd.randint(10, 500) / 10_000:.4f}" if rnd.random() < 0.05 else "0"
        by_country.append((base, mcd, pulse, grace, fee))
    rows = []
    for prefix, name, index in tree:
        base, mcd, pulse, grace, fee = by_country[index]
        value = base * markup * (2.5 if "Mobile" in name else 1.0) * rnd.uniform(0.85, 1.2)
        row = {
            "prefix": prefix,
            "name": name,
            "rate": _decimal(rnd, value),
            "connect_fee": fee,
            "mcd": mcd,
            "pulse": pulse,
            "grace": grace,
        }
        if rnd.random() < 0.005:
            rows.append({**row, "effective_to": PRICE_CHANGE})
            row = {**row, "rate": _decimal(rnd, value * 1.08), "effective_from": PRICE_CHANGE}
        rows.append(row)
    return rows


def _decimal(rnd: random.Random, value: float) -> str:
    places = rnd.choice((4, 5, 6))
    return f"{max(value, 10.0**-places):.{places}f}"


def _customers(
    rnd: random.Random, sell_cards: list[str], currencies: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    names = (
        ("northwind", "Northwind Telecom Ltd"),
        ("contoso", "Contoso Voice GmbH"),
        ("fabrikam", "Fabrikam Call Centers"),
        ("tailspin", "Tailspin Wholesale"),
        ("wingtip", "Wingtip Mobile"),
        ("litware", "Litware VoIP"),
        ("proseware", "Proseware Carrier Services"),
        ("woodgrove", "Woodgrove Contact Centre"),
        ("adatum", "Adatum Communications"),
        ("fourthcoffee", "Fourth Coffee Networks"),
    )
    statuses = ["active"] * 8 + ["pending", "penalty"]
    customers, routes, auth = [], [], []
    for i, (cid, name) in enumerate(names):
        currency = currencies[i % len(currencies)]
        own = [c for c, cur in zip(sell_cards, currencies, strict=True) if cur == currency]
        customers.append(
            {
                "customer_id": cid,
                "name": name,
                "status": statuses[i],
                "currency": currency,
                "tax_percent": rnd.choice(("0", "0", "19", "20", "7.5")),
                "debit_limit": str(rnd.choice((0, 500, 1000, 5000))),
                "channels": rnd.choice((100, 300, 1000, 3000)),
                "cps": rnd.choice((10, 30, 100)),
            }
        )
        card = own[i % len(own)]
        net = f"198.{18 + i // 8}.{(i % 8) * 32}.0/27"
        kind = i % 5
        if kind == 0:
            # Two products on one trunk, told apart by a tech prefix.
            premium = own[(i + 1) % len(own)]
            routes += [
                {"customer_id": cid, "card_id": card, "priority": 10},
                {"customer_id": cid, "card_id": premium, "tech_prefix": "9901#", "priority": 1},
            ]
            auth += [
                {"customer_id": cid, "kind": "ip", "value": net},
                {"customer_id": cid, "kind": "ip", "value": net, "tech_prefix": "9901#"},
            ]
        elif kind == 1:
            # A call centre dialling only a few countries, and a SIP-registered PBX.
            routes.append({"customer_id": cid, "card_id": card, "dial_string": "1|44|49|33|34"})
            auth += [
                {"customer_id": cid, "kind": "ip", "value": net},
                {"customer_id": cid, "kind": "user", "value": f"{cid}-pbx1",
                 "password": f"{cid.title()}-Bench-2026"},
            ]  # fmt: skip
        elif kind == 2:
            # International access code 00 in front of every number, stripped by the route.
            routes.append({"customer_id": cid, "card_id": card, "strip_digits": 2})
            auth.append({"customer_id": cid, "kind": "ip", "value": net})
        elif kind == 3:
            routes.append({"customer_id": cid, "card_id": card, "tech_prefix": f"{70 + i}"})
            auth.append(
                {"customer_id": cid, "kind": "ip", "value": net, "tech_prefix": f"{70 + i}"}
            )
        else:
            routes.append(
                {"customer_id": cid, "card_id": card, "dial_string": "^(44|49|33)[0-9]+$"}
            )
            auth.append({"customer_id": cid, "kind": "ip", "value": f"198.19.{i}.10"})
    return customers, routes, auth


def _dids(rnd: random.Random, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, customer in enumerate(customers[:6]):
        usd = customer["currency"] == "USD"
        for j in range(3):
            number = f"1{rnd.choice(('212', '305', '415', '800'))}555{i:02d}{j:02d}"
            if not usd:
                number = f"4930{rnd.randint(1000000, 9999999)}"
            rows.append(
                {
                    "number": number,
                    "customer_id": customer["customer_id"],
                    "customer_card_id": "did-in-usd" if usd else "did-in-eur",
                    "provider_id": "carrier-a" if usd else "carrier-b",
                    "provider_card_id": "cost-carrier-a" if usd else "cost-carrier-b",
                    "monthly_retail": "1.5",
                    "monthly_cost": "0.6",
                }
            )
    return rows


def _write(path: Path, entity: Entity, rows: list[dict[str, Any]], skip: str | None = None) -> None:
    columns = [c.name for c in entity.csv_columns if c.name != skip]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, columns, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
