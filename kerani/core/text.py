"""Text helpers every layer shares."""

from __future__ import annotations

import re
import unicodedata


def fold_whitespace(text: str) -> str:
    """Strip `text` and collapse every run of whitespace to a single space."""
    return " ".join(text.split())


def storable(text: str) -> str:
    """`text` as a database can keep it: a character UTF-8 cannot encode (a lone surrogate,
    as a file name that was not UTF-8 decodes to) becomes '?', and NUL is dropped
    (PostgreSQL text cannot hold it)."""
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "")


def unstorable(text: str) -> bool:
    """Whether `text` holds a character a database cannot keep as typed (see storable)."""
    return storable(text) != text


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) matching values that contain `text`
    as typed: its % and _ are characters, not wildcards."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Characters that reorder the text after them (Trojan-Source style): a file name shown with
# one can read as another ("invoice\u202egnp.exe" shows as "invoiceexe.png").
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def visible(text: str) -> str:
    """`text` with control and bidirectional-control characters written out as `\\x1b` or
    `\\u202e`: a file name shown to a user can neither drive their terminal (escape
    sequences), start a new line, nor reverse what follows it."""
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if c in _BIDI_CONTROLS or unicodedata.category(c) == "Cc"
        else c
        for c in text
    )


_PAGES_LABEL = re.compile(
    r"^(.*) \(page (\d+)\)$|^(.*) \(pages (\d+)(?:-(\d+)| and later)\)$", re.DOTALL
)


def pages_label(name: str, first: int, last: int | None) -> str:
    """How pages of a file are named in messages and records (1-based, `last` None for "to
    the end"): `a.pdf (page 3)`, `a.pdf (pages 201-1000)`, `a.tif (pages 10001 and later)`."""
    if last == first:
        return f"{name} (page {first})"
    if last is None:
        return f"{name} (pages {first} and later)"
    return f"{name} (pages {first}-{last})"


def split_pages_label(label: str) -> tuple[str, int, int | None] | None:
    """The file name, first and last page of a `pages_label`, or None for a plain name."""
    match = _PAGES_LABEL.match(label)
    if match is None:
        return None
    if match.group(1) is not None:
        page = int(match.group(2))
        return match.group(1), page, page
    last = match.group(5)
    return match.group(3), int(match.group(4)), int(last) if last is not None else None
