"""Tesseract, through pytesseract: the one module that talks to the `tesseract` program."""

from __future__ import annotations

import os

import pytesseract
from PIL import Image

from kerani.exceptions import ExternalProgramError, MissingDependencyError
from kerani.external import require_program
from ocr.engine import Word

_TSV_KEYS = ("text", "conf", "left", "top", "width", "height", "block_num", "par_num", "line_num")


class TesseractEngine:
    """Page OCR with Tesseract's LSTM engine; one process per page, words with confidences."""

    def __init__(self, languages: str = "eng", timeout_s: float = 120.0, psm: int = 3) -> None:
        require_program("tesseract", "tesseract-ocr")
        # Tesseract's OpenMP threads fight each other when several pages run at once.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        self.languages = languages
        self.timeout_s = timeout_s
        self.psm = psm
        self.name = f"tesseract-{version()}"

    def read_page(self, image: Image.Image) -> list[Word]:
        """OCR the whole page once and return its words in reading order."""
        try:
            data = pytesseract.image_to_data(
                image,
                lang=self.languages,
                config=f"--psm {self.psm}",
                output_type=pytesseract.Output.DICT,
                timeout=self.timeout_s,
            )
        except pytesseract.TesseractNotFoundError as e:
            raise MissingDependencyError("tesseract is not installed (tesseract-ocr)") from e
        except pytesseract.TesseractError as e:
            raise ExternalProgramError(f"tesseract failed: {e.message}") from e
        except RuntimeError as e:  # pytesseract's timeout
            raise ExternalProgramError(f"tesseract timed out after {self.timeout_s} s") from e
        # Check the output even though tesseract exited 0: a broken build prints nothing.
        missing = [k for k in _TSV_KEYS if k not in data]
        if missing:
            raise ExternalProgramError(f"tesseract output lacks columns {missing}")
        words: list[Word] = []
        for i, text in enumerate(data["text"]):
            text = str(text).strip()
            conf = float(data["conf"][i])
            if not text or conf < 0:
                continue
            x, y = int(data["left"][i]), int(data["top"][i])
            w, h = int(data["width"][i]), int(data["height"][i])
            line = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
            words.append(Word(text=text, box=(x, y, x + w, y + h), confidence=conf, line=line))
        return words


def version() -> str:
    """Tesseract's version, e.g. '5.3.0'."""
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError as e:
        raise MissingDependencyError("tesseract is not installed (tesseract-ocr)") from e
