"""Answers compared as their field type reads them: spaces, date and amount formats, IC digits."""

from __future__ import annotations

import re

from kerani.core.text import fold_whitespace

_DATE = re.compile(r"(\d{1,2})\s*[/.\-]\s*(\d{1,2})\s*[/.\-]\s*(\d{4})")
_AMOUNT = re.compile(r"(?:RM)?\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?", re.IGNORECASE)


def normalise_answer(field_type: str, text: str) -> str:
    """The canonical form of `text` for its field type; two answers agree when these are equal.

    Dates become DD/MM/YYYY, amounts 1234.50, IC numbers YYMMDD-PB-NNNN, phone numbers and
    postcodes lose stray spaces. Free text only has its whitespace folded: its case is part
    of what the page says.
    """
    folded = fold_whitespace(text)
    if field_type == "date":
        m = _DATE.fullmatch(folded)
        if m:
            d, mo, y = m.groups()
            return f"{int(d):02d}/{int(mo):02d}/{y}"
    elif field_type == "amount":
        m = _AMOUNT.fullmatch(folded)
        if m:
            whole, cents = m.groups()
            return f"{int(whole.replace(',', ''))}.{(cents or '0').ljust(2, '0')}"
    elif field_type == "ic_number":
        digits = re.sub(r"[\s\-]", "", folded)
        if re.fullmatch(r"\d{12}", digits):
            return f"{digits[:6]}-{digits[6:8]}-{digits[8:]}"
    elif field_type == "phone":
        return re.sub(r"\s*-\s*", "-", folded).replace(" ", "")
    elif field_type in ("postcode", "number"):
        return folded.replace(" ", "")
    return folded
