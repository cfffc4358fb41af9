"""Numba kernels of the rating engine: plain loops over 1-D arrays that fill ``out`` arrays.

They import nothing but numpy, numba and ``rating.prefetch`` (a cache hint). Strings
arrive as Arrow's own buffers (an offsets array and a uint8 data array), money as int64
millionths, times as int64 microseconds, rounding modes as ``rating.modes.Rounding``
integers.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from rating.prefetch import prefetch

UP, DOWN, HALF_UP, HALF_DOWN = 0, 1, 2, 3
MICRO = 1_000_000
MAX_DIGITS = 15
# Above this, a product of two int64 factors may overflow: the row is flagged and the
# wrapper computes it exactly in Python.
SAFE = np.int64(2**62)

_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


@nb.njit(cache=True, inline="always")
def round_ratio(num, den, mode):
    q = num // den
    r = num - q * den
    if mode == UP:
        return q + (r > 0)
    if mode == DOWN:
        return q
    if mode == HALF_UP:
        return q + (2 * r >= den)
    return q + (2 * r > den)


@nb.njit(cache=True, inline="always")
def bloom_bit(h, bloom_bits):
    # The middle of the hash (the slot takes its top bits).
    return np.int64((h >> np.uint64(20)) & np.uint64((1 << bloom_bits) - 1))


# One slot of the (card, prefix) hash is one 64-byte row (one cache line when the table is
# aligned, ``rating.tables.aligned_rows``): the key, the card, the group's versions, and its
# newest version repeated, so that a lookup whose newest version is in effect reads one line.
SLOT_KEY, SLOT_CARD, SLOT_FIRST, SLOT_COUNT, SLOT_FROM, SLOT_TO, SLOT_ROW = range(7)
SLOT_WIDTH = 8
# Numbers are looked up in blocks of this many: the candidates of one block stay in the
# core's cache between the passes, and a large input allocates nothing in proportion.
LOOKUP_BLOCK = 1024


@nb.njit(cache=True, nogil=True)
def build_rate_hash(cards, keys, firsts, counts, versions, bits, slots, bloom, bloom_bits):
    """Insert each (card, prefix) group into the open-addressing table ``longest_prefix``
    probes (Fibonacci hashing of the packed (digits, length) key mixed with the card, then linear
    probing) and set its bit in the ``bloom`` filter."""
    mask = (1 << bits) - 1
    for g in range(cards.size):
        h = (np.uint64(keys[g]) * _MUL) ^ (np.uint64(cards[g]) * _MIX)
        b = bloom_bit(h, bloom_bits)
        bloom[b >> 6] |= np.uint64(1) << np.uint64(b & 63)
        s = np.int64(h >> np.uint64(64 - bits))
        while slots[s, SLOT_KEY] != -1:
            s = (s + 1) & mask
        slots[s, SLOT_KEY] = keys[g]
        slots[s, SLOT_CARD] = cards[g]
        slots[s, SLOT_FIRST] = firsts[g]
        slots[s, SLOT_COUNT] = counts[g]
        slots[s, SLOT_FROM] = versions[firsts[g], 0]
        slots[s, SLOT_TO] = versions[firsts[g], 1]
        slots[s, SLOT_ROW] = versions[firsts[g], 2]


@nb.njit(cache=True, nogil=True)
def bad_slot(slots, n_versions, n_rows):
    """The first filled slot of the hash whose versions (``SLOT_FIRST``, ``SLOT_COUNT``) lie
    outside the ``n_versions`` rows of ``versions`` or whose rate row is not one of the
    ``n_rows``, else -1; -2 when no slot is empty (a probe for an absent key would never end).
    What ``longest_prefix`` reads without checking, checked once per loaded table."""
    empty = 0
    for s in range(slots.shape[0]):
        if slots[s, SLOT_KEY] == -1:
            empty += 1
            continue
        first, count, row = slots[s, SLOT_FIRST], slots[s, SLOT_COUNT], slots[s, SLOT_ROW]
        # Written so that no sum can overflow on crafted values.
        if first < 0 or count < 1 or first > n_versions - count or row < 0 or row >= n_rows:
            return s
    return -1 if empty else -2


@nb.njit(cache=True, inline="always")
def _probe(slots, bits, h, key, card):
    """The slot of (card, key), or -1."""
    mask = (1 << bits) - 1
    s = np.int64(h >> np.uint64(64 - bits))
    while slots[s, SLOT_KEY] != -1:
        if slots[s, SLOT_KEY] == key and slots[s, SLOT_CARD] == card:
            return s
        s = (s + 1) & mask
    return -1


@nb.njit(cache=True, inline="always")
def _effective(slots, s, versions, t):
    """The rate row of slot ``s`` effective at ``t``, or -1."""
    if slots[s, SLOT_FROM] <= t < slots[s, SLOT_TO]:
        return slots[s, SLOT_ROW]
    return _older_version(slots, s, versions, t)


@nb.njit(cache=True, nogil=True)
def _older_version(slots, s, versions, t):
    """The row of the newest older version of slot ``s`` in effect at ``t`` (versions newest
    first), or -1. Rare, and kept out of line (see ``longest_prefix``)."""
    for j in range(slots[s, SLOT_FIRST] + 1, slots[s, SLOT_FIRST] + slots[s, SLOT_COUNT]):
        if versions[j, 0] <= t < versions[j, 1]:
            return versions[j, 2]
    return -1


@nb.njit(cache=True, inline="always")
def _digits(data, begin, k):
    """The first ``k`` digits of the number at ``data[begin:]`` as an integer."""
    v = np.int64(0)
    for d in range(k):
        v = v * 10 + (data[begin + d] - 48)
    return v


@nb.njit(cache=True, inline="always")
def _candidate(data, begin, length, card, len_top, len_mask, bloom, bloom_bits):
    """The longest length ≤ ``length`` of a prefix the card has that the filter lets through
    for this number (0: none), with its key and hash. The search starts at the card's longest
    prefix length ≤ ``length`` (``len_top[card, length]``)."""
    k = len_top[card, length]
    return _filtered(_digits(data, begin, k), k, card, len_mask[card], bloom, bloom_bits)


@nb.njit(cache=True, inline="always")
def _filtered(v, k, card, lengths, bloom, bloom_bits):
    """``_candidate`` from the number's first ``k`` digits ``v``: lengths ``k``, ``k - 1``, …
    in turn; a length the card lacks (bit clear in ``lengths``) is never returned."""
    mixed = np.uint64(card) * _MIX
    while k > 0:
        key = v * 16 + k  # digits and length: "4" and "04" differ
        h = (np.uint64(key) * _MUL) ^ mixed
        b = bloom_bit(h, bloom_bits)
        if (bloom[b >> 6] >> np.uint64(b & 63)) & np.uint64(1) and (lengths >> k) & 1:
            return k, key, h
        k -= 1
        v //= 10
    return 0, np.int64(0), np.uint64(0)


@nb.njit(cache=True, nogil=True)
def longest_prefix(
    offsets,
    data,
    starts,
    cards,
    times,  # the numbers: data[offsets[i] + starts[i]:offsets[i+1]]
    slots,
    bits,
    bloom,
    bloom_bits,
    len_top,
    len_mask,
    versions,
    out,
):
    """Fill ``out[i]`` with the rate row of the longest prefix of number i effective at its
    time on card ``cards[i]``, or -1 (no card: ``cards[i] < 0``; no such row).

    Memory latency decides the speed, so: the bloom filter (small enough for the core's
    cache) turns away lengths without a prefix before the table is touched; a slot is one
    cache line holding its newest version; and the first probe of every number is made in a
    pass of independent loads that the CPU overlaps, a block of numbers at a time, each
    slot's line prefetched as soon as its hash is known (10 % faster). The digits come first,
    in a pass of their own: the filter's checks then run in a loop small enough for many of
    them to be in flight at once (12–15 % faster than the digits and checks in one loop). The
    rare number whose first candidate fails (a filter false positive, a version not in
    effect) continues one length at a time."""
    count = cards.size
    cand_len = np.empty(LOOKUP_BLOCK, np.int64)
    cand_key = np.empty(LOOKUP_BLOCK, np.int64)
    cand_hash = np.empty(LOOKUP_BLOCK, np.uint64)
    mask = (1 << bits) - 1
    for lo in range(0, count, LOOKUP_BLOCK):
        hi = min(lo + LOOKUP_BLOCK, count)
        for i in range(lo, hi):  # the digits up to the card's longest prefix length
            out[i] = -1
            cand_len[i - lo] = 0
            card = cards[i]
            if card < 0:
                continue
            begin = offsets[i] + starts[i]
            k = len_top[card, min(offsets[i + 1] - begin, MAX_DIGITS)]
            cand_len[i - lo], cand_key[i - lo] = k, _digits(data, begin, k)
        for i in range(lo, hi):  # the filter's checks
            if cand_len[i - lo] == 0:
                continue
            card = cards[i]
            k, key, h = _filtered(
                cand_key[i - lo], cand_len[i - lo], card, len_mask[card], bloom, bloom_bits
            )
            cand_len[i - lo], cand_key[i - lo], cand_hash[i - lo] = k, key, h
            if k:  # its slot's line, asked for now, is there when the probe pass reads it
                prefetch(slots, np.int64(h >> np.uint64(64 - bits)))
        for i in range(lo, hi):
            if cand_len[i - lo] == 0:
                continue
            # _probe and _effective written out, the older versions' loop out of line: with
            # that loop inlined here, the lookup measured a third slower.
            key = cand_key[i - lo]
            card = cards[i]
            s = np.int64(cand_hash[i - lo] >> np.uint64(64 - bits))
            while slots[s, SLOT_KEY] != -1:
                if slots[s, SLOT_KEY] == key and slots[s, SLOT_CARD] == card:
                    t = times[i]
                    if slots[s, SLOT_FROM] <= t < slots[s, SLOT_TO]:
                        out[i] = slots[s, SLOT_ROW]
                    else:
                        out[i] = _older_version(slots, s, versions, t)
                    break
                s = (s + 1) & mask
        for i in range(lo, hi):
            length = cand_len[i - lo] - 1
            if out[i] >= 0 or length <= 0:
                continue
            card = cards[i]
            begin = offsets[i] + starts[i]
            while length > 0:
                k, key, h = _candidate(
                    data, begin, length, card, len_top, len_mask, bloom, bloom_bits
                )
                if k == 0:
                    break
                s = _probe(slots, bits, h, key, card)
                if s >= 0:
                    out[i] = _effective(slots, s, versions, times[i])
                    if out[i] >= 0:
                        break
                length = k - 1


@nb.njit(cache=True, nogil=True)
def bill(answered, duration_us, rows, duration_rounding, mcd, pulse, grace, out_billed):
    """Billed seconds (SPEC §5.2): duration rounded to whole seconds by the card's mode, then
    grace, minimum charge duration and pulse; 0 when unanswered or without a rate row."""
    for i in range(rows.size):
        r = rows[i]
        out_billed[i] = 0
        if r < 0 or not answered[i]:
            continue
        d = round_ratio(duration_us[i], MICRO, duration_rounding[i])
        if d == 0 or d <= grace[r]:
            continue
        if d <= mcd[r]:
            out_billed[i] = mcd[r]
        else:
            steps = (d - mcd[r] + pulse[r] - 1) // pulse[r]
            out_billed[i] = mcd[r] + steps * pulse[r]


@nb.njit(cache=True, nogil=True)
def charge(billed, package_seconds, rows, rate, connect_fee, precision, rounding, out, flags):
    """``round(charged × rate / 60 + connect_fee, precision, rounding)`` in millionths, exact:
    the rational is rounded on integers. ``flags[i]`` marks a row too large for int64."""
    for i in range(rows.size):
        r = rows[i]
        out[i] = 0
        if r < 0 or billed[i] == 0:
            continue
        charged = billed[i] - package_seconds[i]
        unit = np.int64(10) ** (6 - precision[i])
        if charged > 0 and rate[r] > SAFE // charged // 60:
            flags[i] = True
            continue
        num = charged * rate[r] + (60 * connect_fee[r] if charged > 0 else 0)
        out[i] = round_ratio(num, 60 * unit, rounding[i]) * unit


@nb.njit(cache=True, nogil=True)
def tax(charges, tax_micro_percent, precision, out, flags):
    """``round(charge × tax_percent / 100, precision, half_up)`` in millionths, exact."""
    for i in range(charges.size):
        out[i] = 0
        if charges[i] == 0 or tax_micro_percent[i] == 0:
            continue
        if charges[i] > SAFE // tax_micro_percent[i]:
            flags[i] = True
            continue
        unit = np.int64(10) ** (6 - precision[i])
        # charge (µ) × percent (µ) / 100 / 10^6 = tax in µ; then to the card's unit.
        out[i] = round_ratio(charges[i] * tax_micro_percent[i], 100 * MICRO * unit, HALF_UP) * unit


@nb.njit(cache=True, nogil=True)
def _first_of_month(day):
    # days since 1970-01-01 -> the first day of its month (Hinnant's civil_from_days).
    z = day + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    return day - (d - 1)


@nb.njit(cache=True, nogil=True)
def period_start(day, frequency, start_day):
    """The first day of the package period holding ``day``: 0 daily, 1 ISO week from Monday,
    2 calendar month, 3 once (the whole validity, which starts at ``start_day``)."""
    if frequency == 0:
        return day
    if frequency == 1:
        return day - (day + 3) % 7  # 1970-01-01 was a Thursday
    if frequency == 2:
        return _first_of_month(day)
    return start_day


@nb.njit(cache=True, nogil=True)
def _matches_any(data, begin, n, pfx_first, pfx_count, pfx_offsets, pfx_data):
    if pfx_count == 0:
        return True
    for p in range(pfx_first, pfx_first + pfx_count):
        a, b = pfx_offsets[p], pfx_offsets[p + 1]
        if b - a > n:
            continue
        ok = True
        for k in range(b - a):
            if data[begin + k] != pfx_data[a + k]:
                ok = False
                break
        if ok:
            return True
    return False


@nb.njit(cache=True, nogil=True)
def usage_slot(keys, key):
    """The slot of ``key`` in an open-addressing table (``keys`` -1 where empty, size 2^k)."""
    mask = keys.size - 1
    s = np.int64((np.uint64(key) * _MUL) >> np.uint64(64 - 40)) & mask
    while keys[s] != -1 and keys[s] != key:
        s = (s + 1) & mask
    return s


@nb.njit(cache=True, nogil=True)
def draw_packages(
    order,
    customers,
    days,
    offsets,
    data,
    starts,
    billed,
    cust_first,
    cust_count,
    allot_start,
    allot_end,
    allot_freq,
    allot_seconds,
    allot_pfx_first,
    allot_pfx_count,
    pfx_offsets,
    pfx_data,
    used_keys,
    used_values,
    out_seconds,
    out_first,
    draw_row,
    draw_allot,
    draw_period,
    draw_seconds,
):
    """Consume package seconds call by call in ``order`` (SPEC §5.3). ``used_keys`` and
    ``used_values`` map allotment × 2^32 + period start day to seconds already used (a table
    with room for every draw) and are updated. Returns the number of draws written to the
    ``draw_*`` arrays."""
    n_draws = 0
    for o in range(order.size):
        i = order[o]
        out_seconds[i] = 0
        out_first[i] = -1
        need = billed[i]
        c = customers[i]
        if need <= 0 or c < 0:
            continue
        day = days[i]
        begin = offsets[i] + starts[i]
        n = offsets[i + 1] - begin
        for a in range(cust_first[c], cust_first[c] + cust_count[c]):
            if need == 0:
                break
            if day < allot_start[a] or day > allot_end[a]:
                continue
            if not _matches_any(
                data, begin, n, allot_pfx_first[a], allot_pfx_count[a], pfx_offsets, pfx_data
            ):
                continue
            p = period_start(day, allot_freq[a], allot_start[a])
            key = np.int64(a) * 4294967296 + p
            slot = usage_slot(used_keys, key)
            used_keys[slot] = key
            spent = used_values[slot]
            available = allot_seconds[a] - spent
            if available <= 0:
                continue
            take = min(available, need)
            used_values[slot] = spent + take
            need -= take
            out_seconds[i] += take
            if out_first[i] < 0:
                out_first[i] = a
            draw_row[n_draws] = i
            draw_allot[n_draws] = a
            draw_period[n_draws] = p
            draw_seconds[n_draws] = take
            n_draws += 1
    return n_draws


@nb.njit(cache=True, inline="always")
def _starts_with(data, begin, n, pfx_data, a, b):
    if b - a > n:
        return False
    for k in range(b - a):
        if data[begin + k] != pfx_data[a + k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def resolve_auth(
    offsets,
    data,
    keys,
    cand_first,
    cand_count,
    cand_entry,
    tp_offsets,
    tp_data,
    entry_customer,
    out_customer,
):
    """For each unresolved CDR (``out_customer[i] < 0``) whose auth key (a distinct source IP
    or SIP user) is ``keys[i] ≥ 0``: the customer of the first candidate entry, in the given
    order, whose tech prefix starts the dialled number (SPEC §5.1 step 1)."""
    for i in range(keys.size):
        k = keys[i]
        if out_customer[i] >= 0 or k < 0:
            continue
        begin = offsets[i]
        n = offsets[i + 1] - begin
        for c in range(cand_first[k], cand_first[k] + cand_count[k]):
            e = cand_entry[c]
            if _starts_with(data, begin, n, tp_data, tp_offsets[e], tp_offsets[e + 1]):
                out_customer[i] = entry_customer[e]
                break


@nb.njit(cache=True, nogil=True)
def choose_route(
    offsets,
    data,
    customers,
    route_first,
    route_count,
    route_card,
    tp_offsets,
    tp_data,
    strip,
    dial_kind,
    dial_first,
    dial_count,
    dial_offsets,
    dial_data,
    regex_col,
    regex_ok,
    out_card,
    out_start,
):
    """The first matching route of each CDR's customer (routes come sorted by priority, then
    longest tech prefix): its card, and where the rated number starts in the dialled one
    (after the tech prefix, one '+', and ``strip`` digits). -1 when no route matches."""
    for i in range(customers.size):
        c = customers[i]
        if c < 0:
            continue
        begin = offsets[i]
        n = offsets[i + 1] - begin
        for r in range(route_first[c], route_first[c] + route_count[c]):
            a, b = tp_offsets[r], tp_offsets[r + 1]
            if not _starts_with(data, begin, n, tp_data, a, b):
                continue
            s = b - a
            if s < n and data[begin + s] == 43:  # '+'
                s += 1
            s += strip[r]
            if s >= n:
                continue
            digits = True
            for k in range(begin + s, begin + n):
                if data[k] < 48 or data[k] > 57:
                    digits = False
                    break
            if not digits:
                continue
            kind = dial_kind[r]
            if kind == 1:
                if not _matches_any(
                    data, begin + s, n - s, dial_first[r], dial_count[r], dial_offsets, dial_data
                ):
                    continue
            elif kind == 2 and not regex_ok[i, regex_col[r]]:
                continue
            out_card[i] = route_card[r]
            out_start[i] = s
            break


@nb.njit(cache=True, nogil=True)
def may_draw(
    customers, days, offsets, data, starts, billed, cust_first, cust_count, allot_start,
    allot_end, allot_pfx_first, allot_pfx_count, pfx_offsets, pfx_data, out,
):  # fmt: skip
    """Whether each call could draw on a package: billed, and one of its customer's
    allotments covers its day and its number (the calls ``draw_packages`` must see)."""
    for i in range(customers.size):
        out[i] = False
        c = customers[i]
        if billed[i] <= 0 or c < 0:
            continue
        begin = offsets[i] + starts[i]
        n = offsets[i + 1] - begin
        for a in range(cust_first[c], cust_first[c] + cust_count[c]):
            if allot_start[a] <= days[i] <= allot_end[a] and _matches_any(
                data, begin, n, allot_pfx_first[a], allot_pfx_count[a], pfx_offsets, pfx_data
            ):
                out[i] = True
                break


@nb.njit(cache=True, nogil=True)
def copy_spans(data, begins, ends, offsets, out):
    """Copy ``data[begins[i]:ends[i]]`` to ``out[offsets[i]:]``, for every i."""
    for i in range(begins.size):
        o = offsets[i]
        for k in range(begins[i], ends[i]):
            out[o] = data[k]
            o += 1
