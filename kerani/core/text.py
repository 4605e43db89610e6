"""Text helpers every layer shares."""

from __future__ import annotations


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
