"""RapidOCR: an optional second OCR engine (PP-OCR models run by onnxruntime, offline).

Install it with the `ocr2` extra (`pip install 'kerani[ocr2]'`, the `rapidocr_onnxruntime`
wheel, which ships its detection and recognition models inside). It reads differently from
Tesseract (a neural detector and a CTC recogniser), so when the two read a field alike,
that agreement is evidence the calibration can weigh. The stage only asks it to recognise
field crops (`read_lines`): its detector costs about four times a Tesseract page.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from kerani.core.errors import MissingDependencyError
from kerani.ocr.engine import Box, Word
from kerani.ocr.geometry import clip_box

# Context around a field crop: the recogniser wants a little white around the text.
MARGIN_PX = 3
PACKAGE = "rapidocr_onnxruntime"


def _load(threads: int) -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:
        raise MissingDependencyError(
            "the second OCR engine 'rapidocr' needs the ocr2 extra: "
            "pip install 'kerani[ocr2]' (package rapidocr_onnxruntime)"
        ) from e
    # One thread each, like Tesseract's OMP_THREAD_LIMIT=1: pages run one per core.
    return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=threads)


class RapidOcrEngine:
    """RapidOCR behind the OCR-engine interface: page reading and field-crop recognition."""

    def __init__(self, threads: int | None = None) -> None:
        count = threads or int(os.environ.get("OMP_THREAD_LIMIT", "1") or 1)
        self._ocr = _load(count)
        self.name = f"rapidocr-{metadata.version(PACKAGE)}"

    def read_page(self, image: Image.Image) -> list[Word]:
        """Detect and read every text line of a page; each line's words share its box."""
        result, _times = self._ocr(np.asarray(image.convert("RGB")))
        words: list[Word] = []
        for n, (points, text, score) in enumerate(result or []):
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            box = (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1)
            words.extend(
                Word(text=t, box=box, confidence=100 * float(score), line=(n,))
                for t in str(text).split()
            )
        return words

    def read_lines(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """Recognise the text in each box (one line each); confidence 0-100 per box."""
        if not boxes:
            return []
        rgb = np.asarray(image.convert("RGB"))
        crops = []
        for box in boxes:
            x0, y0, x1, y1 = clip_box(
                (box[0] - MARGIN_PX, box[1] - MARGIN_PX, box[2] + MARGIN_PX, box[3] + MARGIN_PX),
                image.width,
                image.height,
            )
            crops.append(rgb[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)])
        # The recogniser alone, batched: no detection, no angle classifier.
        results, _elapsed = self._ocr.text_rec(crops)
        return [(str(text), 100 * float(score)) for text, score in results]
