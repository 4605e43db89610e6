"""Every piece of text on the pages, in English and Bahasa Malaysia (review_ui/locales/*.json).

A catalog maps message keys to text with `{name}` placeholders. The language is the signed-in
person's choice (stored with them), else the `kerani_lang` cookie, else the browser's
Accept-Language, else English.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).parent / "locales"
LANGUAGES = ("en", "ms")
LANGUAGE_NAMES = {"en": "English", "ms": "Bahasa Malaysia"}
LANG_COOKIE = "kerani_lang"


@cache
def catalog(language: str) -> dict[str, str]:
    """The messages of one language, read once."""
    messages: dict[str, str] = json.loads((LOCALES / f"{language}.json").read_text("utf-8"))
    return messages


def translator(language: str) -> Callable[..., str]:
    """A function `t(key, **values)` giving the text of `key` in `language`."""
    messages = catalog(language if language in LANGUAGES else "en")
    fallback = catalog("en")

    def t(key: str, **values: object) -> str:
        text = messages.get(key) or fallback.get(key)
        if text is None:
            raise KeyError(f"no message {key!r} in review_ui/locales/en.json")
        return text.format(**values) if values else text

    return t


def language_from_headers(cookie: str | None, accept_language: str | None) -> str:
    """The language for someone not signed in: their cookie, else what the browser prefers."""
    if cookie in LANGUAGES:
        return str(cookie)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("ms"):
            return "ms"
        if tag.startswith("en"):
            return "en"
    return "en"
