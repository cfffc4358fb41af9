"""Field kinds of the catalog: how a CSV or command-line text becomes a value, and back.

Each kind parses text into one Python value (raising ``ValueError`` with a message for the
operator), renders it back to the canonical text that export writes, and names the storage
class the catalog store uses (``text``, ``int``, ``micro`` for decimals held as integer
millionths, ``bool``). Money is never a float: decimals are parsed with ``Decimal`` and kept
as integer micro-units, which is exact for the at most six places SPEC §3 allows.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from schemas.currencies import ISO_4217

MICRO = 1_000_000
DECIMAL_PLACES = 6
MAX_DIGITS = 15


@dataclass(frozen=True)
class Kind:
    """A field kind: parse text, render a value, and say how the store keeps it."""

    storage: ClassVar[str] = "text"

    def parse(self, text: str) -> Any:
        return text

    def render(self, value: Any) -> str:
        return "" if value is None else str(value)

    def jsonable(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "text"


@dataclass(frozen=True)
class Text(Kind):
    max_len: int = 255

    def parse(self, text: str) -> str:
        if len(text) > self.max_len:
            raise ValueError(f"is longer than {self.max_len} characters")
        if any(c in text for c in "\r\n\x00"):
            raise ValueError("must be on one line")
        return text


_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")


@dataclass(frozen=True)
class Identifier(Kind):
    def parse(self, text: str) -> str:
        if not _IDENT.fullmatch(text):
            raise ValueError(
                f"{text!r} is not an identifier (1-64 letters, digits and _ . : @ -, "
                "starting with a letter or digit)"
            )
        return text

    def describe(self) -> str:
        return "identifier"


@dataclass(frozen=True)
class Choice(Kind):
    values: tuple[str, ...] = ()

    def parse(self, text: str) -> str:
        if text not in self.values:
            raise ValueError(f"{text!r} is not one of {', '.join(self.values)}")
        return text

    def describe(self) -> str:
        return "|".join(self.values)


@dataclass(frozen=True)
class YesNo(Kind):
    storage: ClassVar[str] = "bool"

    def parse(self, text: str) -> bool:
        word = text.lower()
        if word not in ("yes", "no"):
            raise ValueError(f"{text!r} is not yes or no")
        return word == "yes"

    def render(self, value: Any) -> str:
        return "" if value is None else ("yes" if value else "no")

    def describe(self) -> str:
        return "yes|no"


@dataclass(frozen=True)
class Integer(Kind):
    storage: ClassVar[str] = "int"
    low: int = 0
    high: int = 2**31 - 1

    def parse(self, text: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"{text!r} is not a whole number")
        value = int(text)
        if not self.low <= value <= self.high:
            raise ValueError(f"{value} is outside {self.low}..{self.high}")
        return value

    def describe(self) -> str:
        return f"whole number {self.low}..{self.high}"


@dataclass(frozen=True)
class Money(Kind):
    """A decimal of at most six places, kept as integer millionths (exact)."""

    storage: ClassVar[str] = "micro"
    signed: bool = False
    high: Decimal | None = None

    def parse(self, text: str) -> Decimal:
        if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", text):
            raise ValueError(f"{text!r} is not a decimal number")
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern above already refused it
            raise ValueError(f"{text!r} is not a decimal number") from None
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > DECIMAL_PLACES and value != value.quantize(Decimal("1e-6")):
            raise ValueError(f"{text} has more than {DECIMAL_PLACES} decimal places")
        if value < 0 and not self.signed:
            raise ValueError(f"{text} is negative")
        if self.high is not None and value > self.high:
            raise ValueError(f"{text} is more than {self.high}")
        if abs(value) >= Decimal(10) ** 12:
            raise ValueError(f"{text} is too large")
        return value.quantize(Decimal("1e-6")).normalize() + 0

    def render(self, value: Any) -> str:
        if value is None:
            return ""
        text = format(Decimal(value).normalize(), "f")
        return text

    def jsonable(self, value: Any) -> Any:
        # Strings, so that no JSON reader turns money into a binary float.
        return None if value is None else self.render(value)

    def describe(self) -> str:
        return "decimal, at most 6 places" + ("" if self.signed else ", not negative")


def to_micro(value: Decimal) -> int:
    """A decimal of at most six places as integer millionths."""
    return int(value.scaleb(DECIMAL_PLACES))


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro).scaleb(-DECIMAL_PLACES)).normalize() + 0


@dataclass(frozen=True)
class Day(Kind):
    def parse(self, text: str) -> str:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None

    def describe(self) -> str:
        return "date YYYY-MM-DD"


@dataclass(frozen=True)
class Timestamp(Kind):
    """ISO 8601, UTC when no offset is given; kept as canonical UTC text that sorts."""

    def parse(self, text: str) -> str:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
        return moment.strftime(pattern)

    def describe(self) -> str:
        return "ISO 8601 time (UTC unless an offset is given)"


@dataclass(frozen=True)
class Currency(Kind):
    def parse(self, text: str) -> str:
        if text not in ISO_4217:
            raise ValueError(f"{text!r} is not an ISO 4217 currency code (e.g. USD, EUR)")
        return text

    def describe(self) -> str:
        return "ISO 4217 code"


@dataclass(frozen=True)
class Digits(Kind):
    """A dialling prefix or number: digits only, at most 15 (E.164's longest number)."""

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[0-9]+", text):
            raise ValueError(f"{text!r} is not a prefix of digits only")
        if len(text) > MAX_DIGITS:
            raise ValueError(f"{text!r} is longer than {MAX_DIGITS} digits (E.164)")
        return text

    def describe(self) -> str:
        return "digits"


@dataclass(frozen=True)
class TechPrefix(Kind):
    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[0-9*#]{1,16}", text):
            raise ValueError(f"{text!r} is not a tech prefix (digits, * and # only)")
        return text

    def describe(self) -> str:
        return "digits, * and #"


def _check_regex(text: str) -> None:
    """A pattern must compile for Python and for RE2, which matches it on Arrow columns."""
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression ({exc})") from None
    try:
        pc.match_substring_regex(pa.array([""]), text)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{text!r} uses a feature RE2 does not support ({exc})") from None


@dataclass(frozen=True)
class PrefixList(Kind):
    """``|``-separated digit prefixes, or (when ``regex`` is allowed) a regex starting ``^``."""

    regex: bool = False

    def parse(self, text: str) -> str:
        if self.regex and text.startswith("^"):
            _check_regex(text)
            return text
        parts = text.split("|")
        if not all(re.fullmatch(r"[0-9]{1,15}", p) for p in parts):
            hint = ", or a regex starting with ^" if self.regex else ""
            raise ValueError(f"{text!r} is not |-separated digit prefixes{hint}")
        return text

    def describe(self) -> str:
        return "prefixes a|b|c" + (" or ^regex" if self.regex else "")


@dataclass(frozen=True)
class CliPattern(Kind):
    """A calling-number prefix (digits, one leading +), or a regex starting with ``^``."""

    def parse(self, text: str) -> str:
        if text.startswith("^"):
            _check_regex(text)
        elif not re.fullmatch(r"\+?[0-9]{1,32}", text):
            raise ValueError(f"{text!r} is neither a number prefix nor a regex starting with ^")
        return text

    def describe(self) -> str:
        return "prefix or ^regex"


_EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")


@dataclass(frozen=True)
class Email(Kind):
    def parse(self, text: str) -> str:
        if not _EMAIL.fullmatch(text):
            raise ValueError(f"{text!r} is not an e-mail address")
        return text

    def describe(self) -> str:
        return "e-mail address"


# A URL's host: a name or an IPv4 address, or an IPv6 address in brackets; an optional port.
_WEB_URL = re.compile(r"(?i:https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?([/?#]\S*)?")


@dataclass(frozen=True)
class Recipient(Kind):
    """Where an alert goes (SPEC §9): an e-mail address, or an ``http://`` or ``https://``
    URL that gets an HTTP POST."""

    max_len: int = 2000

    def parse(self, text: str) -> str:
        if len(text) > self.max_len:
            raise ValueError(f"is longer than {self.max_len} characters")
        if text.lower().startswith(("http://", "https://")):
            if not _WEB_URL.fullmatch(text):
                raise ValueError(f"{text!r} is not an http(s):// URL with a host")
            return text
        if not _EMAIL.fullmatch(text):
            raise ValueError(f"{text!r} is not an e-mail address or an http(s):// URL")
        return text

    def describe(self) -> str:
        return "e-mail address or http(s):// URL"


@dataclass(frozen=True)
class Secret(Kind):
    """A password: accepted on input, stored only as a hash, never rendered."""

    def parse(self, text: str) -> str:
        if len(text) < 8:
            raise ValueError("is shorter than 8 characters")
        return text

    def render(self, value: Any) -> str:
        return ""

    def describe(self) -> str:
        return "password, 8 characters or more (stored only as a hash)"


def parse_ip_or_cidr(text: str) -> str:
    """An IPv4/IPv6 address or CIDR network, in canonical form."""
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True))
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    raise ValueError(f"{text!r} has host bits set; the network is {network}")


# A spreadsheet runs a cell that starts with one of these (OWASP's list for CSV injection);
# the ' that neutralises the others is one too, so that a text starting with ' survives.
_RUNS = ("=", "+", "-", "@", "\t", "\r", "'")
# A spreadsheet reads these as numbers, not formulas: money and +44… numbers stay as written.
_SIGNED_DECIMAL = re.compile(r"[+-][0-9]+(\.[0-9]+)?")


def neutralise(cell: str) -> str:
    """A CSV cell as cdrflow writes it (SPEC §3): text a spreadsheet would run as a formula
    gets one leading ``'``; plain signed decimals stay as they are."""
    if cell.startswith(_RUNS) and not _SIGNED_DECIMAL.fullmatch(cell):
        return "'" + cell
    return cell


def unneutralise(cell: str) -> str:
    """The cell ``neutralise`` was given: its one added ``'`` goes, and nothing else does
    (a hand-written ``'abc`` stays ``'abc``)."""
    if cell.startswith("'") and neutralise(cell[1:]) == cell:
        return cell[1:]
    return cell
