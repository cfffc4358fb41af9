"""The catalog's entities (SPEC §3): every column, its kind, key, references and rules.

This table drives the store's SQL schema, CSV import and export, and the management
commands, so that a column is spelled once. Row rules that involve several columns of one
row live here too (``row_problems``); rules across rows and tables live with the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas import fields as f


@dataclass(frozen=True)
class Ref:
    """A column that names a row of another entity.

    ``cascade``: the row is owned by it and goes when it goes; ``history``: the row is
    billing history, and goes with it only when the deletion is forced; neither: the
    referenced row cannot be deleted while this one uses it.
    """

    entity: str
    cascade: bool = False
    history: bool = False


@dataclass(frozen=True)
class Column:
    name: str
    kind: f.Kind
    required: bool = False
    default: Any = None
    ref: Ref | None = None
    help: str = ""
    # Fixed once the row exists (SPEC §3: a customer's currency).
    immutable: bool = False
    # Part of the CSV format; a contact's password is set by the CLI only.
    csv: bool = True

    @property
    def secret(self) -> bool:
        return isinstance(self.kind, f.Secret)


@dataclass(frozen=True)
class Entity:
    """One catalog table and its CSV file."""

    name: str
    singular: str
    file: str
    columns: tuple[Column, ...]
    # The natural key; entities without one get a surrogate ``id`` in the store.
    key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    search: tuple[str, ...] = ()
    status: str | None = None
    help: str = ""
    # At most one row (the carrier's own details).
    single: bool = False
    column_by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_by_name", {c.name: c for c in self.columns})

    @property
    def surrogate(self) -> bool:
        return not self.key

    @property
    def article(self) -> str:
        """ "a" or "an" before ``singular`` (every singular here sounds as it is spelt)."""
        return "an" if self.singular[0].lower() in "aeiou" else "a"

    @property
    def plural(self) -> str:
        """``singular`` for many: "auth entries", "rate cards", "DIDs"."""
        if self.singular.endswith("y") and self.singular[-2] not in "aeiou":
            return self.singular[:-1] + "ies"
        return self.singular + "s"

    @property
    def csv_columns(self) -> tuple[Column, ...]:
        """Columns an import file may carry."""
        return tuple(c for c in self.columns if c.csv)

    @property
    def exported_columns(self) -> tuple[Column, ...]:
        """Columns an export writes: never a password."""
        return tuple(c for c in self.columns if c.csv and not c.secret)

    @property
    def refs(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.ref is not None)

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.key)


def _c(name: str, kind: f.Kind, required: bool = False, **kw: Any) -> Column:
    return Column(name, kind, required, **kw)


ID = f.Identifier()
NAME = f.Text(max_len=200)
DEC = f.Money()
CUSTOMER = Ref("customers", cascade=True)
ROUNDING = ("up", "down", "half_up", "half_down")

CUSTOMERS = Entity(
    "customers",
    "customer",
    "customers.csv",
    (
        _c("customer_id", ID, True),
        _c("name", NAME, True),
        _c("status", f.Choice(("active", "inactive", "pending", "penalty")), True),
        _c("currency", f.Currency(), True, immutable=True),
        _c("tax_percent", f.Money(high=Decimal(100)), default=Decimal(0)),
        _c("debit_limit", DEC, default=Decimal(0)),
        _c("minimum_payment", DEC),
        _c("portal_access", f.YesNo(), default=False),
        _c("paypal_email", f.Email()),
        _c("website", f.Text()),
        _c("address", f.Text(max_len=500)),
        _c("channels", f.Integer(low=0)),
        _c("cps", f.Integer(low=0)),
    ),
    key=("customer_id",),
    search=("customer_id", "name", "paypal_email", "website", "address"),
    status="status",
    help="Customers: who pays for calls.",
)

PROVIDERS = Entity(
    "providers",
    "provider",
    "providers.csv",
    (_c("provider_id", ID, True), _c("name", NAME, True), _c("currency", f.Currency(), True)),
    key=("provider_id",),
    search=("provider_id", "name"),
    help="Providers (carriers): the cost leg of a call.",
)

RATE_CARDS = Entity(
    "rate_cards",
    "rate card",
    "rate_cards.csv",
    (
        _c("card_id", ID, True),
        _c("name", NAME, True),
        _c("currency", f.Currency(), True),
        _c("direction", f.Choice(("termination", "origination")), True),
        _c("precision", f.Integer(low=0, high=6), default=4),
        _c("rounding", f.Choice(ROUNDING), default="half_up"),
        _c("duration_rounding", f.Choice(ROUNDING), default="up"),
    ),
    key=("card_id",),
    search=("card_id", "name"),
    help="Rate cards: prices per destination prefix.",
)

RATES = Entity(
    "rates",
    "rate",
    "rates/<card_id>.csv",
    (
        _c("card_id", ID, True, ref=Ref("rate_cards", cascade=True)),
        _c("prefix", f.Digits(), True),
        _c("name", NAME, True),
        _c("rate", DEC, True),
        _c("connect_fee", DEC, default=Decimal(0)),
        _c("mcd", f.Integer(low=0, high=86_400), default=0),
        _c("pulse", f.Integer(low=1, high=86_400), default=1),
        _c("grace", f.Integer(low=0, high=86_400), default=0),
        _c("effective_from", f.Timestamp()),
        _c("effective_to", f.Timestamp()),
    ),
    unique=(("card_id", "prefix", "effective_from"),),
    search=("prefix", "name"),
    help="Rate rows of a card (one CSV file per card: rates/<card_id>.csv).",
)

ROUTES = Entity(
    "routes",
    "route",
    "routes.csv",
    (
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("card_id", ID, True, ref=Ref("rate_cards")),
        _c("tech_prefix", f.TechPrefix()),
        _c("strip_digits", f.Integer(low=0, high=32), default=0),
        _c("dial_string", f.PrefixList(regex=True)),
        _c("priority", f.Integer(low=0), default=0),
    ),
    unique=(("customer_id", "card_id", "tech_prefix", "dial_string", "priority"),),
    search=("customer_id", "card_id", "tech_prefix", "dial_string"),
    help="Ingress routes: which rate card prices a customer's calls.",
)

AUTH = Entity(
    "auth",
    "auth entry",
    "auth.csv",
    (
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("kind", f.Choice(("ip", "user")), True),
        _c("value", f.Text(max_len=128), True),
        _c("tech_prefix", f.TechPrefix()),
        _c("channels", f.Integer(low=0)),
        _c("cps", f.Integer(low=0)),
        _c("password", f.Secret()),
    ),
    unique=(("kind", "value", "tech_prefix"),),
    search=("customer_id", "value", "tech_prefix"),
    help="Switch authentication: IP/CIDR (with tech prefix) or SIP user and password.",
)

PACKAGES = Entity(
    "packages",
    "package",
    "packages.csv",
    (
        _c("package_id", ID, True),
        _c("name", NAME, True),
        _c("seconds", f.Integer(low=1), True),
        _c("prefixes", f.PrefixList()),
        _c("frequency", f.Choice(("daily", "weekly", "monthly", "once")), True),
        _c("retail", DEC, True),
        _c("cost", DEC),
        _c("setup_retail", DEC),
    ),
    key=("package_id",),
    search=("package_id", "name", "prefixes"),
    help="Minute packages: free seconds per period.",
)

CUSTOMER_PACKAGES = Entity(
    "customer_packages",
    "customer package",
    "customer_packages.csv",
    (
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("package_id", ID, True, ref=Ref("packages")),
        _c("quantity", f.Integer(low=1), default=1),
        _c("auto_decrement", f.YesNo(), default=False),
        _c("start_date", f.Day(), True),
        _c("end_date", f.Day()),
    ),
    unique=(("customer_id", "package_id", "start_date"),),
    search=("customer_id", "package_id"),
    help="Packages assigned to customers.",
)

DIDS = Entity(
    "dids",
    "DID",
    "dids.csv",
    (
        _c("number", f.Digits(), True),
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("customer_card_id", ID, True, ref=Ref("rate_cards")),
        _c("provider_id", ID, ref=Ref("providers")),
        _c("provider_card_id", ID, ref=Ref("rate_cards")),
        _c("monthly_retail", DEC),
        _c("monthly_cost", DEC),
        _c("start_date", f.Day(), help="first day billed (no start date: no monthly fee)"),
        _c("end_date", f.Day()),
    ),
    key=("number",),
    search=("number", "customer_id"),
    help="DIDs: inbound numbers and the cards that price them.",
)

PAYMENTS = Entity(
    "payments",
    "payment",
    "payments.csv",
    (
        _c("payment_id", ID, True),
        # A payment is ledger history: deleting its customer needs --force.
        _c("customer_id", ID, True, ref=Ref("customers", history=True)),
        _c("amount", f.Money(signed=True), True, help="negative for a refund"),
        _c("status", f.Choice(("completed", "pending", "cancelled")), True),
        _c("at", f.Timestamp(), True),
        _c("description", f.Text(max_len=500)),
    ),
    key=("payment_id",),
    search=("payment_id", "customer_id", "description"),
    status="status",
    help="Payments received from customers.",
)

ALERTS = Entity(
    "alerts",
    "alert",
    "alerts.csv",
    (
        _c("alert_id", ID, True),
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("name", NAME, True),
        _c("area", f.Choice(("balance", "asr", "acd", "pdd", "channels", "cps")), True),
        _c("operator", f.Choice(("<", "<=", ">", ">=")), True),
        _c("threshold", f.Money(signed=True), True),
        _c("recipient", f.Recipient(), True),
    ),
    key=("alert_id",),
    search=("alert_id", "customer_id", "name", "recipient"),
    help="Alerts raised when a metric crosses a threshold.",
)

CONTACTS = Entity(
    "contacts",
    "contact",
    "contacts.csv",
    (
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("name", NAME, True),
        _c("email", f.Email(), True),
        _c("public_notes", f.Text(max_len=2000)),
        _c("private_notes", f.Text(max_len=2000)),
        _c("password", f.Secret(), csv=False),
    ),
    unique=(("customer_id", "email"),),
    search=("customer_id", "name", "email", "public_notes", "private_notes"),
    help="Customer contacts (portal users).",
)

CLI_RULES = Entity(
    "cli_rules",
    "CLI rule",
    "cli_rules.csv",
    (
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("pattern", f.CliPattern(), True),
        _c("action", f.Choice(("allow", "deny")), True),
    ),
    unique=(("customer_id", "pattern"),),
    search=("customer_id", "pattern"),
    help="Calling-number (CLI) rules: allow or deny patterns.",
)

CONTRACTS = Entity(
    "contracts",
    "contract",
    "contracts.csv",
    (
        _c("contract_id", ID, True),
        _c("customer_id", ID, True, ref=CUSTOMER),
        _c("provider_id", ID, ref=Ref("providers")),
        _c("name", NAME, True),
        _c("start_date", f.Day(), True),
        _c("end_date", f.Day()),
        _c("status", f.Choice(("draft", "signed", "expired")), True),
    ),
    key=("contract_id",),
    search=("contract_id", "customer_id", "provider_id", "name"),
    status="status",
    help="Contracts with customers and providers.",
)

COMPANY = Entity(
    "company",
    "company",
    "company.csv",
    (
        _c("name", NAME, True),
        _c("address", f.Text(max_len=500)),
        _c("tax_id", f.Text(max_len=64)),
        _c("email", f.Email()),
        _c("phone", f.Text(max_len=64)),
        _c("invoice_footer", f.Text(max_len=2000)),
    ),
    search=("name", "address", "tax_id", "email"),
    single=True,
    help="The carrier itself (one row), printed on invoices.",
)

# Parents before children: the order of import, and the reverse order of deletion.
ENTITIES: tuple[Entity, ...] = (
    CUSTOMERS,
    PROVIDERS,
    RATE_CARDS,
    PACKAGES,
    RATES,
    ROUTES,
    AUTH,
    CUSTOMER_PACKAGES,
    DIDS,
    PAYMENTS,
    ALERTS,
    CONTACTS,
    CLI_RULES,
    CONTRACTS,
    COMPANY,
)
BY_NAME: Mapping[str, Entity] = {e.name: e for e in ENTITIES}


def parse_value(column: Column, text: str | None) -> Any:
    """Parse one field's text; empty text is 'not given' (``None``)."""
    if text is None:
        return None
    text = text.strip()
    if text == "":
        return None
    return column.kind.parse(text)


def parse_row(
    entity: Entity, raw: Mapping[str, str | None], *, fill_defaults: bool = True
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Turn one row of texts into values; returns the row and (column, message) problems.

    Columns missing from ``raw`` take their defaults when ``fill_defaults`` (a new row) and
    are left out otherwise (an edit keeps what the row had).
    """
    row: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for column in entity.columns:
        if column.name not in raw:
            if fill_defaults:
                row[column.name] = column.default
            continue
        try:
            value = parse_value(column, raw[column.name])
        except ValueError as exc:
            problems.append((column.name, str(exc)))
            continue
        row[column.name] = column.default if value is None else value
    return row, problems


def row_problems(entity: Entity, row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules over one complete row: required columns and rules joining two columns."""
    problems = [
        (c.name, "is required")
        for c in entity.columns
        if c.required and row.get(c.name) in (None, "")
    ]
    rule = _ROW_RULES.get(entity.name)
    if rule is not None:
        problems.extend(rule(row))
    return problems


def _ordered(row: Mapping[str, Any], first: str, last: str, strict: bool) -> list[tuple[str, str]]:
    a, b = row.get(first), row.get(last)
    if a is None or b is None:
        return []
    # Canonical times drop a zero fraction, so compare them as times, not as text.
    earlier, later = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in (a, b))
    if (later <= earlier) if strict else (later < earlier):
        word = "after" if strict else "on or after"
        return [(last, f"{b} must be {word} {first} {a}")]
    return []


def _auth_rules(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    value = row.get("value")
    if value is None:
        return []
    if row.get("kind") == "ip":
        problems = []
        try:
            f.parse_ip_or_cidr(value)
        except ValueError as exc:
            problems.append(("value", str(exc)))
        if row.get("password") is not None:
            problems.append(("password", "only a kind=user entry has a password"))
        return problems
    if row.get("kind") == "user":
        try:
            f.Identifier().parse(value)
        except ValueError:
            return [("value", f"{value!r} is not a SIP user name (letters, digits, _ . : @ -)")]
    return []


def canonical_auth_value(row: Mapping[str, Any]) -> Any:
    """The canonical spelling of an auth value (IP networks as ``ipaddress`` writes them)."""
    if row.get("kind") == "ip" and row.get("value") is not None:
        try:
            return f.parse_ip_or_cidr(row["value"])
        except ValueError:
            return row["value"]
    return row.get("value")


_ROW_RULES = {
    "rates": lambda r: _ordered(r, "effective_from", "effective_to", strict=True),
    "customer_packages": lambda r: _ordered(r, "start_date", "end_date", strict=False),
    "contracts": lambda r: _ordered(r, "start_date", "end_date", strict=False),
    "dids": lambda r: _ordered(r, "start_date", "end_date", strict=False),
    "auth": _auth_rules,
}
