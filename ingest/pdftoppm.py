"""The external programs pdfinfo and pdftoppm (poppler-utils): count a PDF's pages, render
them to PNG images."""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kerani.core.errors import BadInputError, ExternalProgramError
from kerani.core.programs import require_program, run

# pdftoppm names its output `<prefix>-<page>.png`, zero-padding the page number to the width
# of the page count, so the number is parsed rather than trusting the name's sort order.
_PAGE_FILE = re.compile(r"^page-(\d+)\.png$")
_PAGES_LINE = re.compile(rb"^Pages:\s+(\d+)\s*$", re.MULTILINE)
# What run() puts before the program's last line of stderr.
_EXITED = re.compile(r"exited with code -?\d+: (.*)$", re.DOTALL)


@dataclass(frozen=True)
class RenderedPdf:
    """What came out of a PDF: rendered pages (1-based number, PNG bytes) in page order, the
    PDF's page count, and the pages rendered but refused, with why."""

    pages: list[tuple[int, bytes]]
    page_count: int
    refused: list[tuple[int, str]] = field(default_factory=list)


def render_pdf(
    data: bytes,
    name: str,
    dpi: int,
    max_pages: int,
    timeout: float,
    *,
    max_pixels: int | None = None,
) -> RenderedPdf:
    """Render pages 1 to `max_pages` of a PDF to greyscale PNGs; BadInputError when none can be.

    A page that pdftoppm cannot render, or that is too large, is refused by number and the
    other pages are kept: one bad page does not sink its file.
    """
    if dpi < 1 or max_pages < 1:
        raise ValueError(f"dpi and max_pages must be positive, got {dpi} and {max_pages}")
    pdfinfo = require_program("pdfinfo", "poppler-utils")
    pdftoppm = require_program("pdftoppm", "poppler-utils")
    with tempfile.TemporaryDirectory(prefix="kerani-pdf-") as tmp:
        # Fixed file names: the upload's own name never reaches the file system or argv.
        src = Path(tmp) / "input.pdf"
        src.write_bytes(data)
        page_count = _page_count(pdfinfo, src, name, timeout)
        last = min(page_count, max_pages)
        args = [pdftoppm, "-png", "-gray", "-r", str(dpi), "-f", "1", "-l", str(last)]
        side = 0
        if max_pixels is not None:
            # A hostile PDF can declare a page of 200 x 200 inches; cropping to a square bounds
            # what pdftoppm allocates and writes. A page that fills the square was (almost
            # certainly) cut off, so it is refused below instead of being passed on half-done.
            side = max(1, math.isqrt(max_pixels))
            args += ["-W", str(side), "-H", str(side)]
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        failure = ""
        try:
            run([*args, str(src), str(out_dir / "page")], timeout=timeout)
        except ExternalProgramError as e:
            # The pages written before it failed are still good.
            failure = _poppler_message(e, pdftoppm)
        numbered: list[tuple[int, bytes]] = []
        for path in out_dir.iterdir():
            match = _PAGE_FILE.match(path.name)
            if match:
                numbered.append((int(match.group(1)), path.read_bytes()))
    if not numbered:
        # pdftoppm exits 0 for some broken files yet writes nothing.
        raise BadInputError(
            f"{name}: not a readable PDF: {failure or 'pdftoppm produced no page images'}"
        )
    numbered.sort()
    rendered = {number for number, _ in numbered}
    refused = [
        (n, f"could not be rendered: {failure or 'pdftoppm produced no image of it'}")
        for n in range(1, last + 1)
        if n not in rendered
    ]
    pages: list[tuple[int, bytes]] = []
    for number, png in numbered:
        width, height = _png_size(png)
        if side and (width >= side or height >= side):
            refused.append(
                (number, f"too large: at {dpi} dpi it would exceed {side} x {side} pixels")
            )
        else:
            pages.append((number, png))
    return RenderedPdf(pages, page_count, sorted(refused))


def _page_count(pdfinfo: str, src: Path, name: str, timeout: float) -> int:
    """The PDF's page count from pdfinfo; BadInputError for an encrypted or damaged file."""
    try:
        out = run([pdfinfo, str(src)], timeout=timeout).stdout
    except ExternalProgramError as e:
        message = _poppler_message(e, pdfinfo)
        if "Incorrect password" in message:
            raise BadInputError(
                f"{name}: encrypted PDF: it opens only with a password; "
                "submit a copy saved without one"
            ) from e
        raise BadInputError(f"{name}: not a readable PDF (damaged or cut short?): {message}") from e
    match = _PAGES_LINE.search(out)
    if match is None:
        raise BadInputError(f"{name}: not a readable PDF: pdfinfo found no page count")
    count = int(match.group(1))
    if count < 1:
        raise BadInputError(f"{name}: the PDF has no pages")
    return count


def _poppler_message(error: ExternalProgramError, program: str) -> str:
    """Poppler's own words from a failed run, without the program's path on this server."""
    text = str(error)
    match = _EXITED.search(text)
    return match.group(1) if match else text.replace(program, Path(program).name)


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (0, 0 when the header is not there)."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n"):
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
