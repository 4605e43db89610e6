"""Field-type validators: each returns None when a value fits its type, else the reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

FIELD_TYPES = ("text", "number", "amount", "date", "ic_number", "phone", "postcode", "line")


def _date(value: str) -> str | None:
    m = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", value)
    if not m:
        return "expected a date as DD/MM/YYYY"
    day, month, year = (int(g) for g in m.groups())
    try:
        date(year, month, day)
    except ValueError:
        return f"{value} is not a real date"
    return None


def _ic_number(value: str) -> str | None:
    # MyKad: YYMMDD-PB-###G; the first six digits are the holder's birth date.
    m = re.fullmatch(r"(\d{2})(\d{2})(\d{2})-(\d{2})-(\d{4})", value)
    if not m:
        return "expected an IC number as YYMMDD-PB-NNNN"
    _yy, mm, dd = (int(g) for g in m.groups()[:3])
    if not (1 <= mm <= 12 and 1 <= dd <= 31):
        return "the first six digits of an IC number must be a birth date YYMMDD"
    return None


def _pattern(regex: str, message: str) -> Callable[[str], str | None]:
    compiled = re.compile(regex)
    return lambda value: None if compiled.fullmatch(value) else message


_VALIDATORS: dict[str, Callable[[str], str | None]] = {
    "text": _pattern(r"\S.*", "expected some text"),
    "line": _pattern(r"\S.*", "expected some text"),
    "number": _pattern(r"\d+", "expected a whole number"),
    "amount": _pattern(r"\d{1,9}\.\d{2}", "expected an amount such as 1234.50"),
    "date": _date,
    "ic_number": _ic_number,
    "phone": _pattern(r"0\d{1,2}-\d{7,8}", "expected a phone number such as 012-3456789"),
    "postcode": _pattern(r"\d{5}", "expected a five-digit postcode"),
}


def validate(field_type: str, value: str, pattern: str | None = None) -> str | None:
    """Check `value` against its field type (and an extra regex); return the failure or None."""
    check = _VALIDATORS.get(field_type)
    if check is None:
        return f"unknown field type {field_type!r}"
    problem = check(value.strip())
    if problem is None and pattern and not re.fullmatch(pattern, value.strip()):
        problem = f"does not match the pattern {pattern}"
    return problem
