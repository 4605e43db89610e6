"""Text helpers every layer shares."""

from __future__ import annotations


def fold_whitespace(text: str) -> str:
    """Strip `text` and collapse every run of whitespace to a single space."""
    return " ".join(text.split())
