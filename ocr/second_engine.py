"""Choosing the optional second OCR engine by name (KERANI_OCR_SECOND_ENGINE).

Kept apart from the engine interface (ocr.engine), which the engines themselves import.
"""

from __future__ import annotations

import functools

from kerani.core.errors import BadInputError
from kerani.ocr.engine import LineReader
from kerani.ocr.rapid import RapidOcrEngine

SECOND_ENGINES = ("rapidocr",)


@functools.lru_cache(maxsize=4)
def second_engine(name: str) -> LineReader | None:
    """The second engine called `name` ('' for none), loaded once per process.

    Raises BadInputError for an unknown name and MissingDependencyError when its optional
    package is not installed, so a misconfigured deployment stops at the first page.
    """
    if not name:
        return None
    if name == "rapidocr":
        return RapidOcrEngine()
    raise BadInputError(f"unknown second OCR engine {name!r}; known: {', '.join(SECOND_ENGINES)}")
