"""The fast path of reading CDRs: numba scanners for JSON Lines and CSV, and typed fields.

A switch writes the same plain shapes millions of times: a flat JSON object, or a CSV row
without quotes; numbers as digits; times as ISO 8601. These kernels find each field's bytes
in such a line and type them (digits to integers, decimals to millionths, times to
microseconds), straight from the file's buffer. A line they do not fully understand (an
escape, a nested value, an exponent, a time zone name, a value out of range, …) is not
guessed at: it is marked for the slow path (``pipelines.cdrfile.validate``, DuckDB), which
handles every case and words every rejection. So the fast path only ever accepts records the
slow path would accept, with the same values; tests hold the two paths to that.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from schemas.cdr import (
    DT_FROM_US,
    DT_UNTIL_US,
    INPUT_NAMES,
    MAX_DURATION,
    MAX_UTC_OFFSET_MINUTES,
    TEXT_NAMES,
)

# Line status.
OK, SLOW, BLANK = 0, 1, 2
# Value kinds.
ABSENT, TEXT, BARE, ESCAPED, DOUBLED = 0, 1, 2, 3, 4  # BARE: a JSON number, or a CSV field
# DOUBLED: a quoted CSV field holding "" for each quote (decoded when gathered)
# ESCAPED: a JSON string holding \" \\ \/ \b \f \n \r or \t (decoded when gathered)
FIELD = {name: i for i, name in enumerate(INPUT_NAMES)}
N_FIELDS = len(INPUT_NAMES)
MAX_DURATION_US = MAX_DURATION * 1_000_000  # longer: the slow path words the rejection
MAX_CSV_FIELD = 131_072  # bytes; Python's csv module (the slow path) refuses a longer field
NAMES_OFFSETS = np.cumsum([0] + [len(n) for n in INPUT_NAMES]).astype(np.int64)
NAMES_DATA = np.frombuffer("".join(INPUT_NAMES).encode(), np.uint8).copy()

_SP, _TAB, _CR = 32, 9, 13
_QUOTE, _BACKSLASH, _COMMA, _COLON = 34, 92, 44, 58
_LBRACE, _RBRACE = 123, 125


@nb.njit(cache=True, nogil=True, inline="always")
def _ws(data, i, end):
    while i < end and (data[i] == _SP or data[i] == _TAB or data[i] == _CR or data[i] == 10):
        i += 1
    return i


def _key_slot(name: bytes) -> int:
    return (len(name) * 31 + name[0] * 7 + name[-1] * 3) & 1023


KEY_TABLE = np.full(1024, -1, np.int64)
for _i, _name in enumerate(INPUT_NAMES):
    assert KEY_TABLE[_key_slot(_name.encode())] == -1, "two field names share a key slot"
    KEY_TABLE[_key_slot(_name.encode())] = _i


@nb.njit(cache=True, nogil=True, inline="always")
def _field_of(data, a, b, names_offsets, names_data, key_table):
    if b <= a:
        return -1
    f = key_table[((b - a) * 31 + data[a] * 7 + data[b - 1] * 3) & 1023]
    if f < 0:
        return -1
    s, e = names_offsets[f], names_offsets[f + 1]
    if e - s != b - a:
        return -1
    for k in range(e - s):
        if data[a + k] != names_data[s + k]:
            return -1
    return f


@nb.njit(cache=True, nogil=True, inline="always")
def _simple_escape(c):
    """The byte a one-letter JSON escape stands for, or -1."""
    if c in (_QUOTE, _BACKSLASH, 47):
        return c
    if c == 98:
        return 8
    if c == 102:
        return 12
    if c == 110:
        return 10
    if c == 114:
        return 13
    if c == 116:
        return 9
    return -1


# Bytes that may run on inside a JSON string without a second look: not the closing quote,
# not a backslash, not a control character (one table load a byte instead of three tests).
_PLAIN = np.ones(256, np.bool_)
_PLAIN[:32] = False
_PLAIN[_QUOTE] = False
_PLAIN[_BACKSLASH] = False
# Bytes that may run on in a bare JSON number: digits, sign, point and exponent.
_NUMERIC = np.zeros(256, np.bool_)
_NUMERIC[[*b"0123456789+-.eE"]] = True
# What a bare JSON number may stand for, by field: NUMBER for a typed field (its text is
# judged when typed), WHOLE for a text field (a whole number is its digits), NEVER for
# ``callid`` (the key of idempotency is a string: 5, true or ["a"] is no callid).
NUMBER, WHOLE, NEVER = 0, 1, 2
BARE_RULE = np.array(
    [NEVER if n == "callid" else WHOLE if n in TEXT_NAMES else NUMBER for n in INPUT_NAMES],
    np.int8,
)


@nb.njit(cache=True, nogil=True, inline="always")
def _past_digits(data, i, b):
    while i < b and 48 <= data[i] <= 57:
        i += 1
    return i


@nb.njit(cache=True, nogil=True, inline="always")
def _json_number(data, a, b):
    """What ``data[a:b]`` is by JSON's grammar: 0 no number (``05``, ``1.``, ``1e``), 1 an
    integer, 2 a number with a fraction or an exponent."""
    i = a + 1 if a < b and data[a] == 45 else a
    if i >= b or not 48 <= data[i] <= 57:
        return 0
    i = i + 1 if data[i] == 48 else _past_digits(data, i, b)
    kind = 1
    if i < b and data[i] == 46:
        j = _past_digits(data, i + 1, b)
        if j == i + 1:
            return 0
        i, kind = j, 2
    if i < b and (data[i] == 101 or data[i] == 69):
        i += 1
        if i < b and (data[i] == 43 or data[i] == 45):
            i += 1
        j = _past_digits(data, i, b)
        if j == i:
            return 0
        i, kind = j, 2
    return kind if i == b else 0


@nb.njit(cache=True, nogil=True)
def scan_json(
    data, line_offsets, names_offsets, names_data, key_table, starts, ends, kinds, status
):
    """Find the SPEC fields of each line that is one flat JSON object (``status`` OK), or
    say the line is blank or needs the slow path."""
    for r in range(line_offsets.size - 1):
        a, b = line_offsets[r], line_offsets[r + 1]
        for f in range(starts.shape[0]):
            kinds[f, r] = ABSENT
        i = _ws(data, a, b)
        if i == b:
            status[r] = BLANK
            continue
        status[r] = SLOW
        if data[i] != _LBRACE:
            continue
        i = _ws(data, i + 1, b)
        good = False
        if i < b and data[i] == _RBRACE:
            i += 1
            good = True
        while not good:
            if i >= b or data[i] != _QUOTE:
                break
            ka = i + 1
            j = ka
            while j < b and _PLAIN[data[j]]:
                j += 1
            if j >= b or data[j] != _QUOTE:
                break
            field = _field_of(data, ka, j, names_offsets, names_data, key_table)
            i = _ws(data, j + 1, b)
            if i >= b or data[i] != _COLON:
                break
            i = _ws(data, i + 1, b)
            if i >= b:
                break
            c = data[i]
            kind = ABSENT
            if c == _QUOTE:
                va = i + 1
                j = va
                kind = TEXT
                while j < b and _PLAIN[data[j]]:
                    j += 1
                while j < b and data[j] != _QUOTE and data[j] >= 32:
                    if data[j] == _BACKSLASH:
                        if j + 1 < b and _simple_escape(data[j + 1]) >= 0:
                            kind = ESCAPED
                            j += 2
                            continue
                        j = b  # \u…, or a broken escape: slow path
                        break
                    j += 1
                if j >= b or data[j] != _QUOTE:
                    break  # a control character, \u…, or no end: slow path
                vb = j
                i = j + 1
            elif c == 45 or (48 <= c <= 57):
                va = i
                j = i
                while j < b and _NUMERIC[data[j]]:
                    j += 1
                vb = j
                i = j
                kind = BARE
                number = _json_number(data, va, vb)
                if number == 0:
                    break  # not JSON: the slow path says so
                if field >= 0:
                    rule = BARE_RULE[field]
                    # A whole number as text: its digits, as DuckDB writes them (not -0,
                    # and within 64 bits); anything else the slow path judges.
                    whole = number == 1 and data[va] != 45 and vb - va <= 18
                    if rule == NEVER or (rule == WHOLE and not whole):
                        break
            elif (
                c == 110
                and i + 4 <= b
                and data[i + 1] == 117
                and data[i + 2] == 108
                and data[i + 3] == 108
            ):
                va = vb = i
                i += 4  # null: as if absent
            else:
                break  # true, false, an object or an array: slow path
            if field >= 0:
                if kinds[field, r] != ABSENT or starts[field, r] == -2:
                    break  # a repeated key: slow path
                starts[field, r] = va
                ends[field, r] = vb
                kinds[field, r] = kind
                if kind == ABSENT:
                    starts[field, r] = -2  # seen, null
            i = _ws(data, i, b)
            if i < b and data[i] == _COMMA:
                i = _ws(data, i + 1, b)
                continue
            if i < b and data[i] == _RBRACE:
                i += 1
                good = True
            break
        if good and _ws(data, i, b) == b:
            status[r] = OK
        for f in range(starts.shape[0]):
            if starts[f, r] == -2:
                starts[f, r] = 0


@nb.njit(cache=True, nogil=True)
def scan_csv(data, line_offsets, columns, starts, ends, kinds, status):
    """Split each CSV line into its fields (``columns[k]``: the SPEC field of header column
    k, or -1). A field may be quoted (``""`` inside stands for a quote); a quote in unquoted
    text, a carriage return outside quotes that does not end the line, a field longer than
    Python's csv module reads, or a line of the wrong width, needs the slow path."""
    width = columns.size
    for r in range(line_offsets.size - 1):
        a, b = line_offsets[r], line_offsets[r + 1]
        while b > a and (data[b - 1] == 10 or data[b - 1] == _CR):
            b -= 1
        for f in range(starts.shape[0]):
            kinds[f, r] = ABSENT
        blank = True
        for i in range(a, b):
            if data[i] != _SP and data[i] != _TAB:
                blank = False
                break
        if blank:
            status[r] = BLANK
            continue
        status[r] = SLOW
        k = 0
        i = a
        bad = False
        while True:
            if k >= width:
                bad = True
                break
            kind = BARE
            if i < b and data[i] == _QUOTE:
                fa = i + 1
                j = fa
                while j < b:
                    if data[j] == _QUOTE:
                        if j + 1 < b and data[j + 1] == _QUOTE:
                            kind = DOUBLED
                            j += 2
                            continue
                        break
                    j += 1
                if j >= b or (j + 1 < b and data[j + 1] != _COMMA):
                    bad = True  # no closing quote, or text after it: slow path
                    break
                fb = j
                i = j + 1
            else:
                fa = i
                while i < b and data[i] != _COMMA and data[i] != _QUOTE and data[i] != _CR:
                    i += 1
                if i < b and data[i] != _COMMA:
                    bad = True  # a quote in the text, or a CR not ending the line: slow path
                    break
                fb = i
            if fb - fa > MAX_CSV_FIELD:
                bad = True
                break
            f = columns[k]
            if f >= 0 and fb > fa:
                starts[f, r] = fa
                ends[f, r] = fb
                kinds[f, r] = kind
            k += 1
            if i >= b:
                break
            i += 1  # the comma
            if i == b:  # a trailing comma: one more, empty, field
                k += 1
                break
        if not bad and k == width:
            status[r] = OK


# -- typing the fields --------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, inline="always")
def _digits(data, a, b):
    """The value of b - a ≥ 1 ASCII digits (at most 18), or -1."""
    if b <= a or b - a > 18:
        return -1
    v = np.int64(0)
    for k in range(a, b):
        c = data[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@nb.njit(cache=True, nogil=True)
def _micro(data, a, b):
    """A non-negative decimal with at most 6 places, in millionths; -1 when not one (a
    point alone is none)."""
    dot = -1
    for k in range(a, b):
        if data[k] == 46:
            dot = k
            break
    if dot >= 0 and b - a == 1:
        return -1
    if dot < 0:
        whole = _digits(data, a, b)
        return whole * 1_000_000 if 0 <= whole < 10**12 else -1
    whole = _digits(data, a, dot) if dot > a else 0
    places = b - dot - 1
    if whole < 0 or whole >= 10**12 or places > 6:
        return -1
    frac = _digits(data, dot + 1, b) if places > 0 else 0
    if frac < 0:
        return -1
    for _ in range(6 - places):
        frac *= 10
    return whole * 1_000_000 + frac


@nb.njit(cache=True, nogil=True, inline="always")
def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


@nb.njit(cache=True, nogil=True)
def _time_us(data, a, b):
    """Epoch milliseconds, or ``YYYY-MM-DD[T ]HH:MM:SS[.f]`` with ``Z`` or ``±HH:MM`` (a
    real offset, at most 14:00; or none: UTC), as microseconds; (False, 0) for anything else."""
    if b - a <= 15:
        ms = _digits(data, a, b)
        if ms >= 0:
            return True, ms * 1000
    if b - a < 19:
        return False, 0
    y = _digits(data, a, a + 4)
    mo = _digits(data, a + 5, a + 7)
    d = _digits(data, a + 8, a + 10)
    h = _digits(data, a + 11, a + 13)
    mi = _digits(data, a + 14, a + 16)
    s = _digits(data, a + 17, a + 19)
    if (
        data[a + 4] != 45
        or data[a + 7] != 45
        or (data[a + 10] != 84 and data[a + 10] != 32)
        or data[a + 13] != 58
        or data[a + 16] != 58
    ):
        return False, 0
    if (
        y < 1
        or mo < 1
        or mo > 12
        or d < 1
        or h > 23
        or mi > 59
        or s > 59
        or h < 0
        or mi < 0
        or s < 0
    ):
        return False, 0
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    if d > _MONTH_DAYS[mo] or (mo == 2 and d == 29 and not leap):
        return False, 0
    i = a + 19
    us = np.int64(0)
    if i < b and data[i] == 46:
        j = i + 1
        while j < b and 48 <= data[j] <= 57:
            j += 1
        places = j - i - 1
        if places < 1 or places > 6:
            return False, 0
        us = _digits(data, i + 1, j)
        for _ in range(6 - places):
            us *= 10
        i = j
    offset = np.int64(0)
    if i < b and data[i] == 90:  # Z
        i += 1
    elif i < b and (data[i] == 43 or data[i] == 45):
        if b - i != 6 or data[i + 3] != 58:
            return False, 0
        oh = _digits(data, i + 1, i + 3)
        om = _digits(data, i + 4, i + 6)
        if oh < 0 or om < 0 or om > 59 or oh * 60 + om > MAX_UTC_OFFSET_MINUTES:
            return False, 0
        offset = (oh * 60 + om) * 60_000_000
        if data[i] == 45:
            offset = -offset
        i = b
    if i != b:
        return False, 0
    day = _days_from_civil(y, mo, d)
    return True, ((day * 86400 + h * 3600 + mi * 60 + s) * 1_000_000 + us) - offset


INBOUND = np.frombuffer(b"inbound", np.uint8).copy()
OUTBOUND = np.frombuffer(b"outbound", np.uint8).copy()


@nb.njit(cache=True, nogil=True, inline="always")
def _equals(data, a, b, word):
    if b - a != word.size:
        return False
    for k in range(word.size):
        if data[a + k] != word[k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def type_fields(
    data,
    starts,
    ends,
    kinds,
    status,
    dt,
    duration,
    has_duration,
    sip_code,
    pdd_ms,
    has_pdd,
    ring,
    has_ring,
    inbound,
    f_callid,
    f_dt,
    f_dest,
    f_duration,
    f_sip,
    f_pdd,
    f_ring,
    f_direction,
):
    """Type the fields of the OK lines; a line whose values are not the plain, valid ones
    (SPEC §4) goes to the slow path, which words the rejection."""
    for r in range(status.size):
        if status[r] != OK:
            continue
        slow = False
        # Text fields: no surrounding blanks (the slow path trims them).
        for f in range(starts.shape[0]):
            edged = data[starts[f, r]] == _SP or data[ends[f, r] - 1] == _SP
            if kinds[f, r] != ABSENT and ends[f, r] > starts[f, r] and edged:
                slow = True
        if kinds[f_callid, r] == ABSENT or ends[f_callid, r] == starts[f_callid, r]:
            slow = True
        a, b = starts[f_dest, r], ends[f_dest, r]
        if kinds[f_dest, r] == ABSENT or b == a or b - a > 64:
            slow = True
        else:
            for k in range(a, b):
                c = data[k]
                if not (48 <= c <= 57 or c == 43 or c == 42 or c == 35):
                    slow = True
                    break
        ok, t = _time_us(data, starts[f_dt, r], ends[f_dt, r])
        if kinds[f_dt, r] == ABSENT or not ok or not DT_FROM_US <= t < DT_UNTIL_US:
            slow = True
        dt[r] = t
        code = _digits(data, starts[f_sip, r], ends[f_sip, r])
        if kinds[f_sip, r] == ABSENT or code < 100 or code > 699:
            slow = True
        sip_code[r] = code
        for f, out, present in ((f_duration, duration, has_duration), (f_ring, ring, has_ring)):
            present[r] = kinds[f, r] != ABSENT and ends[f, r] > starts[f, r]
            if present[r]:
                v = _micro(data, starts[f, r], ends[f, r])
                if v < 0 or v > MAX_DURATION_US:
                    slow = True
                out[r] = v
        has_pdd[r] = kinds[f_pdd, r] != ABSENT and ends[f_pdd, r] > starts[f_pdd, r]
        if has_pdd[r]:
            p = _digits(data, starts[f_pdd, r], ends[f_pdd, r])
            if p < 0:
                slow = True
            pdd_ms[r] = p
        inbound[r] = False
        a, b = starts[f_direction, r], ends[f_direction, r]
        if kinds[f_direction, r] != ABSENT and b > a:
            if _equals(data, a, b, INBOUND):
                inbound[r] = True
            elif not _equals(data, a, b, OUTBOUND):
                slow = True
        if slow:
            status[r] = SLOW


@nb.njit(cache=True, nogil=True, inline="always")
def _decoded_length(data, a, b, kind):
    """A value's length once its JSON escapes (or CSV doubled quotes) are decoded."""
    if kind != ESCAPED and kind != DOUBLED:
        return b - a
    n = 0
    j = a
    while j < b:
        escaped = (data[j] == _BACKSLASH and kind == ESCAPED) or (
            data[j] == _QUOTE and kind == DOUBLED
        )
        j += 2 if escaped else 1
        n += 1
    return n


@nb.njit(cache=True, nogil=True)
def gather_columns(data, starts, ends, kinds, rows, fields, offsets, present):
    """Text columns of the given rows, all at once: ``offsets[c]`` (int32, from 0) and
    ``present[c]`` (a value neither absent nor empty) of column c = field ``fields[c]``;
    returns every column's bytes in one buffer and where each column's bytes begin.
    Row by row, like the scanners: a line's fields sit together in memory."""
    m = rows.size
    nc = fields.size
    for i in range(m):
        r = rows[i]
        for c in range(nc):
            f = fields[c]
            a, b = starts[f, r], ends[f, r]
            p = kinds[f, r] != ABSENT and b > a
            present[c, i] = p
            length = _decoded_length(data, a, b, kinds[f, r]) if p else 0
            offsets[c, i + 1] = offsets[c, i] + length
    bases = np.zeros(nc + 1, np.int64)
    for c in range(nc):
        bases[c + 1] = bases[c] + offsets[c, m]
    out = np.empty(bases[-1], np.uint8)
    for i in range(m):
        r = rows[i]
        for c in range(nc):
            if not present[c, i]:
                continue
            f = fields[c]
            o = bases[c] + offsets[c, i]
            a, b, kind = starts[f, r], ends[f, r], kinds[f, r]
            if kind != ESCAPED and kind != DOUBLED:
                for j in range(a, b):
                    out[o] = data[j]
                    o += 1
                continue
            j = a
            while j < b:
                ch = data[j]
                if ch == _BACKSLASH and kind == ESCAPED:
                    ch = _simple_escape(data[j + 1])
                    j += 1
                elif ch == _QUOTE and kind == DOUBLED:
                    j += 1  # "" stands for one "
                out[o] = ch
                o += 1
                j += 1
    return out, bases


def line_ends(data: np.ndarray, ends: np.ndarray) -> tuple[int, bool]:
    """Where each line ends (after its newline), and whether any byte is not ASCII; returns
    the number of lines, which may exceed the room in ``ends`` (then only that much is set)."""
    whole = data.size // 8 * 8
    # Eight bytes at a time where the buffer allows it (bytes objects are 8-aligned).
    words = data[:whole].view(np.uint64) if data.ctypes.data % 8 == 0 else _NO_WORDS
    count, high = _line_ends(data, words, ends)
    return int(count), bool(high)


_NO_WORDS = np.zeros(0, np.uint64)
_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)


@nb.njit(cache=True, nogil=True)
def _line_ends(data, words, ends):
    n = 0
    seen = np.uint64(0)  # every byte OR-ed: its high bit says whether one was not ASCII
    for w in range(words.size):
        x = words[w]
        seen |= x
        y = x ^ _NEWLINES  # a newline byte is now 0
        if (y - _ONES) & ~y & _HIGH:  # some byte of y is 0
            for i in range(w * 8, w * 8 + 8):
                if data[i] == 10:
                    if n < ends.size:  # the caller checks n against the room it gave
                        ends[n] = i + 1
                    n += 1
    for i in range(words.size * 8, data.size):
        c = data[i]
        seen |= np.uint64(c)
        if c == 10:
            if n < ends.size:
                ends[n] = i + 1
            n += 1
    return n, (seen & _HIGH) != 0


# -- CSV records over several lines -----------------------------------------------------------

# A quoted CSV field may hold line breaks (RFC 4180), so a record may span physical lines: one
# that starts on a line with an odd number of quotes (a line whose quotes pair up is a record
# of its own, as it always was). An unclosed quote reads the same as such a field until a
# later quote closes it, so lines become one record only when together they have the
# header's number of fields; else the quote is taken as never closed: the record is its
# first line, as if the quote were text, and reading goes on with the next line. A quote
# still open this far (bytes) from its record's start is taken as never closed too, which
# bounds what is read twice and held back for the next block.
MAX_RECORD_BYTES = 65_536

# Where the reader of a record is: at a field's start or just after a closing quote (the
# two read the same: a quote (re)opens quoting, whence ``""``; a comma ends the field, a
# newline the record; anything else is text), in unquoted text (a quote there is text), or
# in quotes.
_START, _TEXT, _QUOTED = 0, 1, 2


def csv_records(
    data: np.ndarray, line_ends: np.ndarray, width: int, final: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """The CSV records of ``data`` (whole lines, ending where ``line_ends`` say) whose header
    has ``width`` fields: where each ends (after its newline), the index of the line it
    starts on, and where the last complete one ends. A record whose quoted field is still
    open at the end of ``data`` is incomplete unless ``final`` (then the quote is taken as
    never closed)."""
    ends = np.empty(line_ends.size, np.int64)
    lines = np.empty_like(ends)
    whole = data.size // 8 * 8
    words = data[:whole].view(np.uint64) if data.ctypes.data % 8 == 0 else _NO_WORDS
    count, cut = _csv_records(data, words, line_ends, width, final, MAX_RECORD_BYTES, ends, lines)
    return ends[:count], lines[:count], int(cut)


_QUOTES = np.uint64(0x2222222222222222)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)


@nb.njit(cache=True, nogil=True)
def _odd_quotes(data, words, a, b):
    """Whether ``data[a:b]`` holds an odd number of quote bytes (eight at a time where the
    words are aligned: the high bit of each byte that is a quote, exactly, then summed)."""
    quotes = np.uint64(0)
    i = a
    while i < b and (i & 7) != 0:
        quotes += np.uint64(data[i] == _QUOTE)
        i += 1
    while i + 8 <= b and (i >> 3) < words.size:
        y = words[i >> 3] ^ _QUOTES
        zero = ~(((y & _LOW7) + _LOW7) | y | _LOW7)
        quotes += ((zero >> np.uint64(7)) * _ONES) >> np.uint64(56)
        i += 8
    while i < b:
        quotes += np.uint64(data[i] == _QUOTE)
        i += 1
    return (quotes & np.uint64(1)) != 0


@nb.njit(cache=True, nogil=True)
def _quoted_record(data, line_ends, k, width, most):
    """The record that starts on line ``k`` (one with an odd number of quotes): how many
    lines it takes, or 0 when its quotes are still open at the end of ``data``."""
    a = line_ends[k - 1] if k > 0 else 0
    state = _START
    fields = 1
    j = k  # the line of position i
    for i in range(a, data.size):
        c = data[i]
        if c == 10:
            if state != _QUOTED:
                if j > k and 0 < width != fields:
                    return 1  # the lines together are no record
                return j - k + 1
            if i + 1 - a > most:
                return 1  # open too long
            j += 1
        elif state == _QUOTED:
            if c == _QUOTE:
                state = _START
        elif c == _COMMA:
            state = _START
            fields += 1
        elif state == _START:
            state = _QUOTED if c == _QUOTE else _TEXT
    return 0


@nb.njit(cache=True, nogil=True)
def _csv_records(data, words, line_ends, width, final, most, ends, lines):
    n = 0
    k = 0
    while k < line_ends.size:
        a = line_ends[k - 1] if k > 0 else 0
        taken = 1
        if _odd_quotes(data, words, a, line_ends[k]):
            taken = _quoted_record(data, line_ends, k, width, most)
            if taken == 0:
                if not final:
                    return n, a
                taken = 1  # the quotes never closed
        ends[n] = line_ends[k + taken - 1]
        lines[n] = k
        n += 1
        k += taken
    return n, line_ends[k - 1] if k > 0 else 0
