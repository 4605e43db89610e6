"""Field validators: types, date formats, ranges, allowed values and checksums.

Each check returns None when a value passes, else the reason in words a worker can act on.
`validate` checks a value against its type alone (routing uses it on OCR guesses);
`kerani.forms.templates.FieldSpec.check` adds the field's own validators from its template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation

FIELD_TYPES = (
    "text",
    "number",
    "amount",
    "date",
    "ic_number",
    "phone",
    "postcode",
    "choice",
    "checkbox",
    "signature",
    "line",
)
NUMERIC_TYPES = ("number", "amount")
CHECKSUMS = ("luhn", "mod11", "mykad")
DEFAULT_DATE_FORMATS = ("DD/MM/YYYY",)
CHECKBOX_VALUES = ("yes", "no")
SIGNATURE_VALUES = ("present", "absent")

_DATE_TOKENS = {
    "YYYY": r"(?P<year>\d{4})",
    "MMM": r"(?P<mon>[A-Za-z]{3})",
    "YY": r"(?P<yy>\d{2})",
    "MM": r"(?P<month>\d{2})",
    "M": r"(?P<month>\d{1,2})",
    "DD": r"(?P<day>\d{2})",
    "D": r"(?P<day>\d{1,2})",
}
_TOKEN_RE = re.compile("|".join(sorted(_DATE_TOKENS, key=len, reverse=True)))
# MMM: a month's three-letter name, in English or Bahasa Malaysia (receipts print both).
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {name: i for i, name in enumerate(MONTH_NAMES, start=1)} | {
    "MAC": 3,
    "MEI": 5,
    "OGO": 8,
    "OKT": 10,
    "DIS": 12,
}
_IC_RE = re.compile(r"(\d{2})(\d{2})(\d{2})-(\d{2})-(\d{4})")


def date_format_regex(fmt: str) -> re.Pattern[str]:
    """Compile a date format such as DD/MM/YYYY (tokens YYYY YY MMM MM M DD D) into a regex."""
    parts: list[str] = []
    pos = 0
    seen: set[str] = set()
    for m in _TOKEN_RE.finditer(fmt):
        parts.append(re.escape(fmt[pos : m.start()]))
        group = _DATE_TOKENS[m.group()]
        name = group[4 : group.index(">")]
        name = "month" if name == "mon" else name
        if name in seen:
            raise ValueError(f"date format {fmt!r} names {name} twice")
        seen.add(name)
        parts.append(group)
        pos = m.end()
    parts.append(re.escape(fmt[pos:]))
    if not ({"day", "month"} <= seen and seen & {"year", "yy"}):
        raise ValueError(f"date format {fmt!r} needs a day, a month and a year (DD, MM, YYYY)")
    return re.compile("".join(parts))


def format_date(d: date, fmt: str) -> str:
    """Write a date in a format such as DD/MM/YYYY (the tokens of date_format_regex)."""
    values = {
        "YYYY": f"{d.year:04d}",
        "YY": f"{d.year % 100:02d}",
        "MMM": MONTH_NAMES[d.month - 1],
        "MM": f"{d.month:02d}",
        "M": str(d.month),
        "DD": f"{d.day:02d}",
        "D": str(d.day),
    }
    return _TOKEN_RE.sub(lambda m: values[m.group()], fmt)


def parse_date(value: str, formats: Sequence[str] = DEFAULT_DATE_FORMATS) -> date | None:
    """The date `value` means under the first format that fits it, or None."""
    for fmt in formats:
        m = date_format_regex(fmt).fullmatch(value.strip())
        if not m:
            continue
        groups = m.groupdict()
        # Two-digit years: 00-69 are 20xx, 70-99 are 19xx (POSIX strptime's pivot).
        year = int(groups["year"]) if groups.get("year") else None
        if year is None:
            yy = int(groups["yy"])
            year = 2000 + yy if yy < 70 else 1900 + yy
        month = _MONTHS.get(groups["mon"].upper()) if groups.get("mon") else int(groups["month"])
        if month is None:
            continue  # three letters that name no month
        try:
            return date(year, month, int(groups["day"]))
        except ValueError:
            continue
    return None


def _date(value: str, formats: Sequence[str] = DEFAULT_DATE_FORMATS) -> str | None:
    if parse_date(value, formats) is not None:
        return None
    if any(date_format_regex(f).fullmatch(value) for f in formats):
        return f"{value} is not a real date"
    return f"expected a date as {' or '.join(formats)}"


def ic_birth_yymmdd(value: str) -> str | None:
    """The YYMMDD birth date at the front of a MyKad number, or None if it has none."""
    m = _IC_RE.fullmatch(value.strip())
    return m.group(1) + m.group(2) + m.group(3) if m else None


def _ic_number(value: str) -> str | None:
    # MyKad: YYMMDD-PB-###G; the first six digits are the holder's birth date.
    m = _IC_RE.fullmatch(value)
    if not m:
        return "expected an IC number as YYMMDD-PB-NNNN"
    _yy, mm, dd = (int(g) for g in m.groups()[:3])
    if not (1 <= mm <= 12 and 1 <= dd <= 31):
        return "the first six digits of an IC number must be a birth date YYMMDD"
    return None


def _mykad(value: str) -> str | None:
    # A MyKad number has no check digit; what can be checked is that its birth date exists
    # (in either century) and that its place-of-birth code is one the JPN issues.
    m = _IC_RE.fullmatch(value.strip())
    if not m:
        return "expected an IC number as YYMMDD-PB-NNNN"
    yy, mm, dd, pb = (int(g) for g in m.groups()[:4])
    real = False
    for century in (1900, 2000):
        try:
            date(century + yy, mm, dd)
            real = True
        except ValueError:
            pass
    if not real:
        return f"the birth date {m.group(1)}{m.group(2)}{m.group(3)} in the IC number is not real"
    if pb == 0 or 17 <= pb <= 20:
        return f"{pb:02d} is not a place-of-birth code of a MyKad number"
    return None


def _luhn(value: str) -> str | None:
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return "too few digits for a Luhn check digit"
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return None if total % 10 == 0 else "the check digit is wrong (Luhn)"


def _mod11(value: str) -> str | None:
    # Weighted mod 11 as in ISBN-10: weights n..1 from the left; a final X stands for 10.
    chars = [c for c in value.upper() if c.isdigit() or c == "X"]
    if len(chars) < 2 or "X" in chars[:-1]:
        return "expected digits with a final check digit (0-9 or X)"
    nums = [10 if c == "X" else int(c) for c in chars]
    total = sum(w * n for w, n in zip(range(len(nums), 0, -1), nums, strict=True))
    return None if total % 11 == 0 else "the check digit is wrong (mod 11)"


CHECKSUM_CHECKS: dict[str, Callable[[str], str | None]] = {
    "luhn": _luhn,
    "mod11": _mod11,
    "mykad": _mykad,
}


def _pattern(regex: str, message: str) -> Callable[[str], str | None]:
    compiled = re.compile(regex)
    return lambda value: None if compiled.fullmatch(value) else message


def _one_of(allowed: Sequence[str], what: str) -> Callable[[str], str | None]:
    return lambda value: (
        None if value.lower() in allowed else f"expected {what}: {' or '.join(allowed)}"
    )


_VALIDATORS: dict[str, Callable[[str], str | None]] = {
    "text": _pattern(r"\S.*", "expected some text"),
    "line": _pattern(r"\S.*", "expected some text"),
    "choice": _pattern(r"\S.*", "expected one of the choices"),
    "number": _pattern(r"\d+", "expected a whole number"),
    "amount": _pattern(r"\d{1,9}\.\d{2}", "expected an amount such as 1234.50"),
    "date": _date,
    "ic_number": _ic_number,
    "phone": _pattern(r"0\d{1,2}-\d{7,8}", "expected a phone number such as 012-3456789"),
    "postcode": _pattern(r"\d{5}", "expected a five-digit postcode"),
    "checkbox": _one_of(CHECKBOX_VALUES, "whether the box is ticked"),
    "signature": _one_of(SIGNATURE_VALUES, "whether a signature is there"),
}


def numeric_value(value: str) -> Decimal | None:
    """The number a number or amount field holds (exact, no float rounding), or None."""
    try:
        return Decimal(value.strip())
    except InvalidOperation:
        return None


def validate(field_type: str, value: str, pattern: str | None = None) -> str | None:
    """Check `value` against its field type (and an extra regex); return the failure or None."""
    check = _VALIDATORS.get(field_type)
    if check is None:
        return f"unknown field type {field_type!r}"
    problem = check(value.strip())
    if problem is None and pattern and not re.fullmatch(pattern, value.strip()):
        problem = f"does not match the pattern {pattern}"
    return problem


def validate_date(value: str, formats: Sequence[str]) -> str | None:
    """Check a date field against the template's accepted formats."""
    return _date(value.strip(), formats)
