"""Tesseract: the one module that talks to Tesseract, as a program and as a library.

Pages go to the `tesseract` program as uncompressed greyscale PGM files in a private
temporary folder: PNG encoding (what pytesseract does) costs more than a tenth of a
page's OCR time, and the whole pre-OCR stage is measured against the bare `tesseract`
command. Field crops, many and small, are read in process by `tesserocr` (libtesseract
in its wheel, Debian's language data): about 11 ms a crop where a process costs 130 ms.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytesseract
from PIL import Image

from kerani.core.errors import ExternalProgramError, MissingDependencyError
from kerani.core.programs import require_program, run
from kerani.ocr.engine import Word
from kerani.ocr.reocr import Reading

_TSV_KEYS = ("text", "conf", "left", "top", "width", "height", "block_num", "par_num", "line_num")
_TESSDATA_VAR = re.compile(r"^[a-z_]+$")


def _write_pgm(image: Image.Image, folder: Path) -> Path:
    path = folder / "page.pgm"
    image.convert("L").save(path, format="PPM")
    return path


def _command(
    image_path: Path, languages: str, psm: int, variables: Mapping[str, str], output: str
) -> list[str]:
    args = ["tesseract", str(image_path), "stdout", "-l", languages, "--psm", str(psm)]
    for key, value in variables.items():
        if not _TESSDATA_VAR.match(key):
            raise ExternalProgramError(f"not a Tesseract variable name: {key!r}")
        args += ["-c", f"{key}={value}"]
    if output:
        args.append(output)
    return args


def parse_tsv(text: str) -> list[Word]:
    """Words (non-empty, with a confidence) from Tesseract's TSV output."""
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = reader.fieldnames or []
    missing = [k for k in _TSV_KEYS if k not in header]
    if missing:
        # Check the output even though tesseract exited 0: a broken build prints nothing.
        raise ExternalProgramError(f"tesseract output lacks columns {missing}")
    words: list[Word] = []
    for row in reader:
        word = (row.get("text") or "").strip()
        try:
            conf = float(row["conf"])
            x, y = int(row["left"]), int(row["top"])
            w, h = int(row["width"]), int(row["height"])
            line = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        except (TypeError, ValueError) as e:
            raise ExternalProgramError(f"tesseract printed an unreadable TSV row: {row}") from e
        if not word or conf < 0:
            continue
        words.append(Word(text=word, box=(x, y, x + w, y + h), confidence=conf, line=line))
    return words


def tesseract_words(
    image: Image.Image,
    *,
    languages: str = "eng",
    psm: int = 3,
    variables: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
) -> list[Word]:
    """OCR an image in one `tesseract` process and return its words with boxes and confidences."""
    require_program("tesseract", "tesseract-ocr")
    with tempfile.TemporaryDirectory(prefix="kerani-ocr-") as tmp:
        path = _write_pgm(image, Path(tmp))
        proc = run(_command(path, languages, psm, variables or {}, "tsv"), timeout=timeout_s)
    return parse_tsv(proc.stdout.decode("utf-8", "replace"))


@dataclass(frozen=True)
class Orientation:
    """Tesseract's orientation guess: degrees to turn the page clockwise, and its confidence."""

    rotate: int
    confidence: float


def detect_orientation(image: Image.Image, timeout_s: float = 60.0) -> Orientation:
    """Ask Tesseract's OSD (--psm 0) how far the page is turned; needs the `osd` language."""
    require_program("tesseract", "tesseract-ocr")
    with tempfile.TemporaryDirectory(prefix="kerani-osd-") as tmp:
        path = _write_pgm(image, Path(tmp))
        try:
            proc = run(_command(path, "osd", 0, {}, ""), timeout=timeout_s)
        except ExternalProgramError:
            # OSD refuses pages with too few characters ("Too few characters"): no guess.
            return Orientation(0, 0.0)
    out = proc.stdout.decode("utf-8", "replace")
    rotate = re.search(r"Rotate:\s*(\d+)", out)
    conf = re.search(r"Orientation confidence:\s*([\d.]+)", out)
    if rotate is None or conf is None:
        return Orientation(0, 0.0)
    return Orientation(int(rotate.group(1)) % 360, float(conf.group(1)))


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
        self._crops: CropReader | None = None  # made at the first crop
        self._no_crops = False  # tesserocr is not installed

    def read_page(self, image: Image.Image) -> list[Word]:
        """OCR the whole page once and return its words in reading order."""
        return tesseract_words(
            image, languages=self.languages, psm=self.psm, timeout_s=self.timeout_s
        )

    def read_crop(self, crop: Image.Image, *, block: bool, whitelist: str) -> Reading | None:
        """Read one field crop in process (tesserocr); None when tesserocr is not installed."""
        if self._crops is None and not self._no_crops:
            try:
                self._crops = CropReader(self.languages)
            except MissingDependencyError:
                self._no_crops = True  # keep to the strips (ocr.reocr.reread)
        if self._crops is None:
            return None
        return self._crops.read(crop, block=block, whitelist=whitelist)

    def read_block(
        self, image: Image.Image, psm: int, variables: Mapping[str, str] | None = None
    ) -> list[Word]:
        """OCR an image with another page-segmentation mode and variables (a strip of crops)."""
        return tesseract_words(
            image,
            languages=self.languages,
            psm=psm,
            variables=variables,
            timeout_s=self.timeout_s,
        )


def version() -> str:
    """Tesseract's version, e.g. '5.3.0'."""
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError as e:
        raise MissingDependencyError("tesseract is not installed (tesseract-ocr)") from e


# Where Debian's tesseract-ocr-* packages put the language data.
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")
# White around a crop: Tesseract reads a crop cut close to the ink badly (3 of 10 SROIE
# lines right with none, 6 of 10 with 16 px).
CROP_BORDER_PX = 16


def tessdata_dir() -> str:
    """The folder holding the language data: TESSDATA_PREFIX, else Debian's."""
    for folder in (os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS):
        if folder and Path(folder, "eng.traineddata").is_file():
            return folder
    raise MissingDependencyError(
        "no Tesseract language data found (eng.traineddata): install the Debian package "
        "'tesseract-ocr-eng' or set TESSDATA_PREFIX"
    )


class CropReader:
    """Tesseract in process for field crops: one API per thread, reused for every crop."""

    def __init__(self, languages: str = "eng") -> None:
        try:
            import tesserocr
        except ImportError as e:
            raise MissingDependencyError(
                "reading field crops needs the tesserocr package (pip install tesserocr)"
            ) from e
        self._tesserocr: Any = tesserocr
        self.languages = languages
        self._path = tessdata_dir()
        self._local = threading.local()  # an API object is not safe to share

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            t = self._tesserocr
            try:
                api = t.PyTessBaseAPI(path=self._path, lang=self.languages, oem=t.OEM.LSTM_ONLY)
            except RuntimeError as e:
                raise ExternalProgramError(
                    f"tesserocr could not load languages {self.languages!r} from {self._path}: {e}"
                ) from e
            self._local.api = api
        return api

    def read(self, crop: Image.Image, *, block: bool = False, whitelist: str = "") -> Reading:
        """Read one crop as a single line (or a block of lines), bordered with white.

        The text is its words in reading order; the confidence the weakest word's (0 when
        nothing was read).
        """
        t = self._tesserocr
        grey = crop.convert("L")
        framed = Image.new(
            "L", (grey.width + 2 * CROP_BORDER_PX, grey.height + 2 * CROP_BORDER_PX), 255
        )
        framed.paste(grey, (CROP_BORDER_PX, CROP_BORDER_PX))
        api = self._api()
        api.SetPageSegMode(t.PSM.SINGLE_BLOCK if block else t.PSM.SINGLE_LINE)
        api.SetVariable("tessedit_char_whitelist", whitelist)
        api.SetImage(framed)
        texts: list[str] = []
        confidences: list[float] = []
        try:
            api.Recognize()
            for w in t.iterate_level(api.GetIterator(), t.RIL.WORD):
                try:
                    text = (w.GetUTF8Text(t.RIL.WORD) or "").strip()
                except RuntimeError:  # "No text returned": an empty word
                    continue
                if text:
                    texts.append(text)
                    confidences.append(float(w.Confidence(t.RIL.WORD)))
        except RuntimeError as e:
            raise ExternalProgramError(f"tesserocr could not read a field crop: {e}") from e
        finally:
            api.Clear()
        return Reading(" ".join(texts), min(confidences, default=0.0))
