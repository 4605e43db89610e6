"""RapidOCR: the second OCR engine (PP-OCRv6 models run by onnxruntime, offline).

Part of Kerani's install (`rapidocr` 3.10 and `onnxruntime`). Its wheel ships the
PP-OCRv6 small detector and one multilingual recogniser (Latin script, Malay among its
languages); only those bundled files are used, named by path, so it never tries to
download a model. It reads differently from Tesseract (a neural detector and a CTC
recogniser): where the two read a field alike, that agreement is evidence the
calibration can weigh, and where they differ the stage votes between the readings
character by character (ocr.vote).

Measured on SROIE receipt line crops it reads far better than Tesseract (see
ocr/calibrations/README.md); the stage asks it to recognise field crops (`read_lines`),
one at a time (batches are padded to their widest crop, which costs more on a CPU), and
to find the lines of template-free pages (`detect_lines`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kerani.core.errors import ExternalProgramError, MissingDependencyError
from kerani.ocr.engine import Box, Word
from kerani.ocr.geometry import clip_box

# Context around a field crop: the recogniser wants a little paper around the text.
MARGIN_PX = 4
PACKAGE = "rapidocr"
# The models inside the rapidocr 3.10 wheel (pyproject pins 3.10: names follow versions).
DETECTOR = "PP-OCRv6_det_small.onnx"
RECOGNISER = "PP-OCRv6_rec_small.onnx"
CLASSIFIER = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def _load(threads: int, recognise_only: bool = False, detect_only: bool = False) -> Any:
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as e:
        raise MissingDependencyError(
            "the second OCR engine 'rapidocr' is not installed: pip install "
            "'rapidocr>=3.10,<3.11' onnxruntime (scripts/bootstrap.sh does), or set "
            "KERANI_OCR_SECOND_ENGINE='' to read with Tesseract alone"
        ) from e
    models = Path(rapidocr.__file__).parent / "models"
    missing = [m for m in (DETECTOR, RECOGNISER, CLASSIFIER) if not (models / m).is_file()]
    if missing:
        raise MissingDependencyError(
            f"rapidocr {metadata.version(PACKAGE)} lacks its bundled models {missing} in "
            f"{models}: install the version pyproject.toml names"
        )
    params: dict[str, Any] = {
        # One thread each, like Tesseract's OMP_THREAD_LIMIT=1: pages run one per core.
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": threads,
        "Global.log_level": "warning",
        # Paths, not names: a model named but not found would be fetched from the internet.
        "Det.model_path": str(models / DETECTOR),
        "Rec.model_path": str(models / RECOGNISER),
        "Cls.model_path": str(models / CLASSIFIER),
    }
    if recognise_only:
        params |= {"Global.use_det": False, "Global.use_cls": False}
    if detect_only:
        params |= {"Global.use_rec": False, "Global.use_cls": False}
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return RapidOCR(params=params)


class RapidOcrEngine:
    """RapidOCR behind the OCR-engine interface: page reading and field-crop recognition."""

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads or int(os.environ.get("OMP_THREAD_LIMIT", "1") or 1)
        # One engine per use: a call's use_det/use_cls flags stick to the engine they were
        # given to. The recogniser is made now (a missing extra fails at once); the page
        # reader and the detector when first asked for.
        self._lines = _load(self._threads, recognise_only=True)
        self._page: Any = None
        self._detector: Any = None
        self.name = f"rapidocr-{metadata.version(PACKAGE)}"

    def detect_lines(self, image: Image.Image) -> list[Box]:
        """The boxes of the page's text lines (the PP-OCR detector alone, no reading)."""
        if self._detector is None:
            self._detector = _load(self._threads, detect_only=True)
        try:
            result = self._detector(_bgr(image))
        except Exception as e:  # onnxruntime and OpenCV raise many kinds
            raise ExternalProgramError(f"rapidocr could not find the lines: {e}") from e
        boxes = result.boxes if result.boxes is not None else []
        return [_bound(points) for points in boxes]

    def read_page(self, image: Image.Image) -> list[Word]:
        """Detect and read every text line of a page; each line's words share its box."""
        if self._page is None:
            self._page = _load(self._threads)
        try:
            result = self._page(_bgr(image))
        except Exception as e:  # onnxruntime and OpenCV raise many kinds
            raise ExternalProgramError(f"rapidocr could not read the page: {e}") from e
        words: list[Word] = []
        boxes = result.boxes if result.boxes is not None else []
        for n, (points, text, score) in enumerate(
            zip(boxes, result.txts or (), result.scores or (), strict=True)
        ):
            box = _bound(points)
            words.extend(
                Word(text=t, box=box, confidence=100 * float(score), line=(n,))
                for t in str(text).split()
            )
        return words

    def read_lines(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """Recognise the text in each box (one line each); confidence 0-100 per box."""
        if not boxes:
            return []
        bgr = _bgr(image)
        out = []
        for box in boxes:
            x0, y0, x1, y1 = clip_box(
                (box[0] - MARGIN_PX, box[1] - MARGIN_PX, box[2] + MARGIN_PX, box[3] + MARGIN_PX),
                image.width,
                image.height,
            )
            crop = np.ascontiguousarray(bgr[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)])
            try:
                result = self._lines(crop)
            except Exception as e:  # onnxruntime and OpenCV raise many kinds
                raise ExternalProgramError(f"rapidocr could not read a field crop: {e}") from e
            texts, scores = result.txts or ("",), result.scores or (0.0,)
            out.append((str(texts[0]), 100 * float(scores[0])))
        return out


def _bound(points: Any) -> Box:
    """The upright box around a detected quadrilateral."""
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1)


def _bgr(image: Image.Image) -> np.ndarray:
    """OpenCV's channel order, which RapidOCR takes arrays in."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
