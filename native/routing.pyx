"""Compiled route table: longest-prefix match on card-number or payment-code digits.

Sans-I/O and independent of the rest of the project: the switch turns its
route configuration into ``RouteTable.add`` calls, calls ``compile()`` once,
and asks ``lookup()`` for every request (DESIGN.md, step 3).

Rules
-----
``add(start, end, target, ...)`` covers every number whose first
``len(start)`` digits, read as an integer, lie in ``[start, end]`` (both
ends inclusive): ``"4"``-``"4"`` is every number starting with 4,
``"25"``-``"30"`` every code starting 25 to 30, ``"400000"``-``"499999"`` a
range of six-digit BINs. ``start`` and ``end`` are ASCII digit strings of the
same length, 1 to 19 digits.

Conditions (``None`` = any value, including an absent one):

- ``mti_classes``: 2-digit MTI classes. The class of an MTI is its first two
  digits, the ISO 8583 version and message class: ``"01"`` for 0100/0110
  (authorization), ``"02"`` for 0200/0210/0220/0230 (financial and its
  completion advice), ``"04"`` for 0400/0410/0420 (reversal), ``"05"``,
  ``"08"``. The function and origin digits are ignored so that a request,
  its advice and its repeat route alike.
- ``processing_codes``: 2-digit transaction types, the first two digits of
  field 3 (``"00"`` purchase, ``"20"`` refund, ``"31"`` balance inquiry,
  ``"21"`` top-up).
- ``merchants``: merchant IDs (field 42). Trailing spaces are ignored on both
  sides, since field 42 is ans15 and shorter IDs arrive space-padded.
- ``currencies``: 3-digit ISO 4217 numeric codes (field 49).
- ``min_amount`` / ``max_amount``: inclusive bounds on field 4 in minor units,
  0 to 10**18 - 1.

A condition on a field the message does not carry does not match.

Choosing a rule
---------------
``lookup()`` returns the ``target`` of the matching rule with the longest
prefix; among rules of the same prefix length, the one added first. A rule
whose range covers the number but whose conditions fail is skipped, so the
search falls through to the next rule of the same length and then to shorter
prefixes. A number shorter than a rule's prefix never matches that rule. No
match, or a number with a character other than 0-9, gives -1.

Life cycle
----------
A table is built, compiled once, then read-only: ``add()`` after
``compile()`` raises ``RuntimeError``, and a configuration reload builds a new
table, which the switch swaps in with one assignment while lookups on the old
one finish undisturbed. ``lookup()`` and ``candidates()`` before
``compile()`` raise ``RuntimeError``.

How it is laid out
------------------
For each distinct prefix length, longest first, the rules' ranges are cut into
disjoint segments sorted by key; each segment lists the rules covering it in
add order, up to the first rule without conditions. A lookup reads the number's digits once into the integer keys of
its 1..19-digit prefixes, then binary-searches each length's segments and
walks that segment's rules, checking conditions against precomputed bitsets
(MTI class, transaction type) and small sorted arrays (merchants,
currencies). Only the merchant ID costs one dict lookup, and only when a
candidate rule has a merchant condition. Overlapping ranges of the same
length are allowed; a segment lists every rule with conditions covering it,
so many nested ranges that all carry conditions cost memory quadratic in
their number.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_GET_LENGTH
from libc.stdint cimport INT32_MAX, INT64_MAX, INT64_MIN, int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memset

from bisect import bisect_left, insort
from heapq import heappop, heappush


cdef extern from "Python.h":
    # Strings made by Python 3.11+ code are always "ready" (PEP 393 layout).
    bint PyUnicode_IS_ASCII(object o)

__all__ = ["RouteTable", "luhn_ok"]

# Amount bounds stay strictly inside int64, so that an amount too large for
# int64 can be clamped at lookup without changing any comparison.
cdef int64_t AMOUNT_LIMIT = 1_000_000_000_000_000_000


cdef inline bint _is_digit(Py_UCS4 c) noexcept nogil:
    # ASCII only: str.isdigit() would also accept '²' or '٣'.
    return c >= 48 and c <= 57


cdef inline int _number_keys(str number, uint64_t* keys) noexcept:
    """Store in keys[i] the integer of the first i digits (i = 1..19).

    Returns how many keys were stored, or -1 when number is None, empty or
    holds a character other than 0-9.
    """
    cdef Py_ssize_t n, i
    cdef const unsigned char* data
    cdef uint64_t key = 0
    # A str holding anything but ASCII holds a non-digit; an ASCII str stores
    # one byte per character, read here without a per-character kind switch.
    if number is None or not PyUnicode_IS_ASCII(number):
        return -1
    n = PyUnicode_GET_LENGTH(number)
    if n == 0:
        return -1
    data = <const unsigned char*>PyUnicode_1BYTE_DATA(number)
    for i in range(n):
        if not _is_digit(data[i]):
            return -1
        if i < MAX_PREFIX:
            key = key * 10 + (data[i] - 48)
            keys[i + 1] = key
    return <int>n if n < MAX_PREFIX else MAX_PREFIX


cdef inline int _leading_two_digits(str value) noexcept:
    """The first two digits of value as 0..99, or -1 when absent or not digits."""
    cdef Py_UCS4 a, b
    if value is None or len(value) < 2:
        return -1
    a = value[0]
    b = value[1]
    if not (_is_digit(a) and _is_digit(b)):
        return -1
    return (<int>a - 48) * 10 + (<int>b - 48)


cdef inline int _currency_code(str value) noexcept:
    """An ISO 4217 numeric code (exactly 3 digits) as 0..999, or -1."""
    cdef Py_UCS4 a, b, c
    if value is None or len(value) != 3:
        return -1
    a = value[0]
    b = value[1]
    c = value[2]
    if not (_is_digit(a) and _is_digit(b) and _is_digit(c)):
        return -1
    return (<int>a - 48) * 100 + (<int>b - 48) * 10 + (<int>c - 48)


cdef inline bint _has_bit(const uint64_t* bits, int value) noexcept nogil:
    return (bits[value >> 6] >> (value & 63)) & 1


cdef inline bint _sorted_contains(const int32_t* values, int32_t count, int32_t value) noexcept nogil:
    cdef int32_t lo = 0, hi = count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < count and values[lo] == value


cdef inline int32_t _segment(const uint64_t* seg_lo, const uint64_t* seg_hi,
                             const RouteLevel* level, uint64_t key) noexcept nogil:
    """The segment of level that contains key, or -1."""
    # Binary search for the last segment starting at or below key.
    cdef int32_t lo = level.first, hi = level.first + level.count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if seg_lo[mid] <= key:
            lo = mid + 1
        else:
            hi = mid
    if lo == level.first or key > seg_hi[lo - 1]:
        return -1
    return lo - 1


cdef inline str _strip_padding(str merchant):
    # Field 42 is ans15: a shorter merchant ID arrives padded with spaces.
    cdef Py_ssize_t n = len(merchant)
    cdef Py_UCS4 last
    if n == 0:
        return merchant
    last = merchant[n - 1]
    if last == u' ':
        return merchant.rstrip(u' ')
    return merchant


# ---- validation of add() arguments (configuration time, Python objects welcome)

cdef object _digit_string(str what, value):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str of digits, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} is empty")
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{what} {value!r} has a character other than 0-9")
    if len(value) > MAX_PREFIX:
        raise ValueError(f"{what} {value!r} is longer than {MAX_PREFIX} digits")


cdef object _entries(str what, values):
    """The entries of a condition collection as a list, rejecting a lone str and emptiness."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a collection of strings, not a single {type(values).__name__}")
    try:
        entries = list(values)
    except TypeError:
        raise TypeError(f"{what} must be a collection of strings, got {type(values).__name__}") from None
    if not entries:
        raise ValueError(f"{what} is empty; use None to allow any value")
    return entries


cdef object _code_set(str what, values, int width):
    """Sorted distinct ints of a collection of fixed-width digit strings."""
    codes = set()
    for entry in _entries(what, values):
        if not (isinstance(entry, str) and len(entry) == width and entry.isascii() and entry.isdigit()):
            raise ValueError(f"{what} entry {entry!r} is not a {width}-digit string")
        codes.add(int(entry))
    return sorted(codes)


cdef object _merchant_set(values):
    merchants = set()
    for entry in _entries("merchants", values):
        if not isinstance(entry, str):
            raise TypeError(f"merchants entry {entry!r} is not a str")
        merchant = entry.rstrip(" ")
        if not merchant:
            raise ValueError(f"merchants entry {entry!r} is blank")
        merchants.add(merchant)
    return sorted(merchants)


cdef object _amount_bound(str what, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int (minor units), got {type(value).__name__}")
    if not 0 <= value < AMOUNT_LIMIT:
        raise ValueError(f"{what} {value} is outside 0..{AMOUNT_LIMIT - 1}")
    return value


cdef object _segments(list ranges, list unconditional):
    """Cut (lo, hi, rule) ranges of one prefix length into disjoint segments.

    Returns [lo, hi, [rules in add order]] sorted by lo, without empty
    segments, adjacent segments with the same rules merged. Rule numbers are
    add order, so sorting them gives priority order. A segment's list ends at
    its first rule without conditions: no rule after it can ever be chosen,
    and cutting there keeps overlapping catch-all ranges from costing memory
    quadratic in their number.
    """
    cdef dict starts = {}, stops = {}
    cdef list out = []
    cdef list conditioned = []  # active rules with conditions, sorted
    cdef list catch_all = []    # heap of active rules without conditions
    cdef set ended = set()      # rules of catch_all that no longer cover the sweep
    for lo, hi, rule in ranges:
        starts.setdefault(lo, []).append(rule)
        stops.setdefault(hi + 1, []).append(rule)
    bounds = sorted(starts.keys() | stops.keys())
    for i in range(len(bounds) - 1):
        bound = bounds[i]
        for rule in stops.get(bound, ()):
            if unconditional[rule]:
                ended.add(rule)
            else:
                del conditioned[bisect_left(conditioned, rule)]
        for rule in starts.get(bound, ()):
            if unconditional[rule]:
                heappush(catch_all, rule)
            else:
                insort(conditioned, rule)
        while catch_all and catch_all[0] in ended:
            ended.discard(heappop(catch_all))
        if catch_all:
            rules = conditioned[:bisect_left(conditioned, catch_all[0])]
            rules.append(catch_all[0])
        elif conditioned:
            rules = conditioned[:]
        else:
            continue
        last = out[len(out) - 1] if out else None  # no out[-1]: built with wraparound=False
        if last is not None and last[1] + 1 == bound and last[2] == rules:
            last[1] = bounds[i + 1] - 1
        else:
            out.append([bound, bounds[i + 1] - 1, rules])
    return out


cdef void* _alloc(Py_ssize_t count, size_t size) except NULL:
    cdef void* p = PyMem_Malloc((count if count > 0 else 1) * size)
    if p == NULL:
        raise MemoryError()
    return p


cdef class RouteTable:
    """Routes compiled from configuration; see the module docstring."""

    def __cinit__(self):
        self._pending = []
        self._merchant_index = {}
        self._compiled = False

    def __dealloc__(self):
        self._free_arrays()

    cdef void _free_arrays(self) noexcept:
        PyMem_Free(self._rules)
        PyMem_Free(self._levels)
        PyMem_Free(self._seg_lo)
        PyMem_Free(self._seg_hi)
        PyMem_Free(self._seg_off)
        PyMem_Free(self._seg_rules)
        PyMem_Free(self._values)
        self._rules = NULL
        self._levels = NULL
        self._seg_lo = NULL
        self._seg_hi = NULL
        self._seg_off = NULL
        self._seg_rules = NULL
        self._values = NULL
        self._nrules = 0
        self._nlevels = 0

    def __len__(self):
        return self._nrules if self._compiled else len(self._pending)

    def add(self, start, end, target, *, mti_classes=None, processing_codes=None,
            merchants=None, currencies=None, min_amount=None, max_amount=None):
        """Add a rule covering prefixes start..end (inclusive); see the module docstring."""
        if self._compiled:
            raise RuntimeError("the route table is compiled; build a new RouteTable to change its routes")
        _digit_string("start", start)
        _digit_string("end", end)
        if len(start) != len(end):
            raise ValueError(
                f"start {start!r} and end {end!r} differ in length ({len(start)} and {len(end)} digits)")
        lo = int(start)
        hi = int(end)
        if lo > hi:
            raise ValueError(f"start {start!r} is greater than end {end!r}")
        if isinstance(target, bool) or not isinstance(target, int):
            raise TypeError(f"target must be an int, got {type(target).__name__}")
        if not 0 <= target <= INT64_MAX:
            raise ValueError(f"target {target} is outside 0..{INT64_MAX} (-1 means no route)")
        min_amount = _amount_bound("min_amount", min_amount)
        max_amount = _amount_bound("max_amount", max_amount)
        if min_amount is not None and max_amount is not None and min_amount > max_amount:
            raise ValueError(f"min_amount {min_amount} is greater than max_amount {max_amount}")
        self._pending.append((
            len(start), lo, hi, target,
            None if mti_classes is None else _code_set("mti_classes", mti_classes, 2),
            None if processing_codes is None else _code_set("processing_codes", processing_codes, 2),
            None if merchants is None else _merchant_set(merchants),
            None if currencies is None else _code_set("currencies", currencies, 3),
            min_amount, max_amount,
        ))

    def compile(self):
        """Freeze the rules into C arrays. Call once, after the last add(); later calls do nothing."""
        cdef RouteRule* rule
        cdef Py_ssize_t i, j, nsegments, nlinks
        cdef int code
        if self._compiled:
            return
        self._free_arrays()  # left by an earlier compile() that failed part way
        rules = self._pending
        values = []
        merchant_index = self._merchant_index

        self._nrules = len(rules)
        self._rules = <RouteRule*>_alloc(self._nrules, sizeof(RouteRule))
        memset(self._rules, 0, (self._nrules if self._nrules > 0 else 1) * sizeof(RouteRule))
        by_length = {}
        unconditional = [False] * self._nrules
        for i, (length, lo, hi, target, mti_classes, processing_codes,
                merchants, currencies, min_amount, max_amount) in enumerate(rules):
            by_length.setdefault(length, []).append((lo, hi, i))
            rule = &self._rules[i]
            rule.target = target
            rule.min_amount = INT64_MIN
            rule.max_amount = INT64_MAX
            if mti_classes is not None:
                rule.conds |= COND_MTI_CLASS
                for code in mti_classes:
                    rule.mti_bits[code >> 6] |= (<uint64_t>1) << (code & 63)
            if processing_codes is not None:
                rule.conds |= COND_PROCESSING_CODE
                for code in processing_codes:
                    rule.pc_bits[code >> 6] |= (<uint64_t>1) << (code & 63)
            if merchants is not None:
                rule.conds |= COND_MERCHANT
                ids = sorted(merchant_index.setdefault(m, len(merchant_index)) for m in merchants)
                rule.merchant_off = len(values)
                rule.merchant_count = len(ids)
                values.extend(ids)
            if currencies is not None:
                rule.conds |= COND_CURRENCY
                rule.currency_off = len(values)
                rule.currency_count = len(currencies)
                values.extend(currencies)
            if min_amount is not None or max_amount is not None:
                rule.conds |= COND_AMOUNT
                if min_amount is not None:
                    rule.min_amount = min_amount
                if max_amount is not None:
                    rule.max_amount = max_amount
            unconditional[i] = rule.conds == 0

        self._values = <int32_t*>_alloc(len(values), sizeof(int32_t))
        for i, value in enumerate(values):
            self._values[i] = value

        lengths = sorted(by_length, reverse=True)
        segments = []
        self._levels = <RouteLevel*>_alloc(len(lengths), sizeof(RouteLevel))
        for i, length in enumerate(lengths):
            self._levels[i].length = length
            self._levels[i].first = len(segments)
            segments.extend(_segments(by_length[length], unconditional))
            self._levels[i].count = len(segments) - self._levels[i].first
        self._nlevels = len(lengths)

        nsegments = len(segments)
        nlinks = sum(len(segment[2]) for segment in segments)
        if nlinks > INT32_MAX:
            raise ValueError(f"the route table's ranges overlap too much ({nlinks} rule links)")
        self._seg_lo = <uint64_t*>_alloc(nsegments, sizeof(uint64_t))
        self._seg_hi = <uint64_t*>_alloc(nsegments, sizeof(uint64_t))
        self._seg_off = <int32_t*>_alloc(nsegments + 1, sizeof(int32_t))
        self._seg_rules = <int32_t*>_alloc(nlinks, sizeof(int32_t))
        j = 0
        for i, (lo, hi, members) in enumerate(segments):
            self._seg_lo[i] = lo
            self._seg_hi[i] = hi
            self._seg_off[i] = j
            for member in members:
                self._seg_rules[j] = member
                j += 1
        self._seg_off[nsegments] = j

        self._pending = None
        self._compiled = True

    cdef int64_t _find(self, const uint64_t* keys, int ndigits, int mti_class,
                       int pc_type, str merchant, int currency,
                       bint has_amount, int64_t amount) except? -2:
        cdef int li
        cdef int32_t seg, j, end
        cdef int merchant_id = -2  # looked up on first need
        cdef const RouteLevel* level
        cdef const RouteRule* rule
        cdef uint32_t conds
        for li in range(self._nlevels):
            level = &self._levels[li]
            if level.length > ndigits:
                continue
            seg = _segment(self._seg_lo, self._seg_hi, level, keys[level.length])
            if seg < 0:
                continue
            end = self._seg_off[seg + 1]
            for j in range(self._seg_off[seg], end):
                rule = &self._rules[self._seg_rules[j]]
                conds = rule.conds
                if conds == 0:
                    return rule.target
                if conds & COND_MTI_CLASS:
                    if mti_class < 0 or not _has_bit(rule.mti_bits, mti_class):
                        continue
                if conds & COND_PROCESSING_CODE:
                    if pc_type < 0 or not _has_bit(rule.pc_bits, pc_type):
                        continue
                if conds & COND_CURRENCY:
                    if currency < 0 or not _sorted_contains(
                            self._values + rule.currency_off, rule.currency_count, currency):
                        continue
                if conds & COND_AMOUNT:
                    if not has_amount or amount < rule.min_amount or amount > rule.max_amount:
                        continue
                if conds & COND_MERCHANT:
                    if merchant_id == -2:
                        merchant_id = self._merchant_id(merchant)
                    if merchant_id < 0 or not _sorted_contains(
                            self._values + rule.merchant_off, rule.merchant_count, merchant_id):
                        continue
                return rule.target
        return -1

    cdef int _merchant_id(self, str merchant) except? -2:
        if merchant is None:
            return -1
        found = self._merchant_index.get(_strip_padding(merchant))
        return -1 if found is None else <int>found

    def lookup(self, str number, str mti, str processing_code, str merchant,
               str currency, object amount):
        """The target of the best matching rule, or -1; see the module docstring.

        number: PAN or payment code; mti: the 4-digit MTI; processing_code:
        field 3; merchant: field 42; currency: field 49; amount: field 4 as an
        int in minor units. Any of the last five may be None (not in the
        message).
        """
        cdef uint64_t keys[MAX_PREFIX + 1]
        cdef int ndigits
        cdef int overflow = 0
        cdef int64_t amount_value = 0
        cdef bint has_amount = amount is not None
        if not self._compiled:
            raise RuntimeError("compile() the route table before lookup()")
        ndigits = _number_keys(number, keys)
        if ndigits < 0:
            return -1
        if has_amount:
            amount_value = PyLong_AsLongLongAndOverflow(amount, &overflow)
            # Clamping is exact: configured bounds lie strictly inside int64.
            if overflow > 0:
                amount_value = INT64_MAX
            elif overflow < 0:
                amount_value = INT64_MIN
        return self._find(keys, ndigits, _leading_two_digits(mti),
                          _leading_two_digits(processing_code), merchant,
                          _currency_code(currency), has_amount, amount_value)

    def candidates(self, str number):
        """Targets of the rules that lookup(number, ...) may choose, best first.

        Every rule whose range covers number, in priority order, whatever its
        conditions, up to and including the first rule without conditions
        (the rules after it are shadowed for that number).
        """
        cdef uint64_t keys[MAX_PREFIX + 1]
        cdef int ndigits, li
        cdef int32_t seg, j
        cdef const RouteLevel* level
        if not self._compiled:
            raise RuntimeError("compile() the route table before candidates()")
        found = []
        ndigits = _number_keys(number, keys)
        for li in range(self._nlevels):
            level = &self._levels[li]
            if level.length > ndigits:
                continue
            seg = _segment(self._seg_lo, self._seg_hi, level, keys[level.length])
            if seg < 0:
                continue
            for j in range(self._seg_off[seg], self._seg_off[seg + 1]):
                found.append(self._rules[self._seg_rules[j]].target)
                if self._rules[self._seg_rules[j]].conds == 0:
                    return found
        return found


def luhn_ok(str pan not None):
    """True when pan is 12 to 19 ASCII digits with a valid Luhn check digit."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(pan), i
    cdef const unsigned char* data
    cdef int digit, total = 0
    cdef bint double = False
    if n < 12 or n > 19 or not PyUnicode_IS_ASCII(pan):
        return False
    data = <const unsigned char*>PyUnicode_1BYTE_DATA(pan)
    for i in range(n - 1, -1, -1):
        if not _is_digit(data[i]):
            return False
        digit = data[i] - 48
        if double:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
        double = not double
    return total % 10 == 0
