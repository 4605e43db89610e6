"""The external program pdftoppm (poppler-utils): render the pages of a PDF to PNG images."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

from kerani.core.errors import BadInputError, ExternalProgramError
from kerani.core.programs import require_program, run

# pdftoppm names its output `<prefix>-<page>.png`, zero-padding the page number to the width
# of the page count, so the number is parsed rather than trusting the name's sort order.
_PAGE_FILE = re.compile(r"^page-(\d+)\.png$")


def render_pdf(
    data: bytes,
    name: str,
    dpi: int,
    max_pages: int,
    timeout: float,
    *,
    max_pixels: int | None = None,
) -> list[bytes]:
    """Render up to `max_pages` pages of a PDF to greyscale PNG bytes, in page order."""
    if dpi < 1 or max_pages < 1:
        raise ValueError(f"dpi and max_pages must be positive, got {dpi} and {max_pages}")
    program = require_program("pdftoppm", "poppler-utils")
    args = [program, "-png", "-gray", "-r", str(dpi), "-f", "1", "-l", str(max_pages)]
    side = 0
    if max_pixels is not None:
        # A hostile PDF can declare a page of 200 x 200 inches; cropping to a square bounds
        # what pdftoppm allocates and writes. A page that fills the square was (almost
        # certainly) cut off, so it is refused below instead of being passed on half-rendered.
        side = max(1, math.isqrt(max_pixels))
        args += ["-W", str(side), "-H", str(side)]
    with tempfile.TemporaryDirectory(prefix="kerani-pdf-") as tmp:
        # Fixed file names: the upload's own name never reaches the file system or argv.
        src = Path(tmp) / "input.pdf"
        src.write_bytes(data)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        try:
            run([*args, str(src), str(out_dir / "page")], timeout=timeout)
        except ExternalProgramError as e:
            raise BadInputError(f"{name}: not a readable PDF: {e}") from e
        numbered: list[tuple[int, bytes]] = []
        for path in out_dir.iterdir():
            match = _PAGE_FILE.match(path.name)
            if match:
                numbered.append((int(match.group(1)), path.read_bytes()))
    if not numbered:
        # pdftoppm exits 0 for some broken files yet writes nothing.
        raise BadInputError(f"{name}: not a readable PDF: pdftoppm produced no page images")
    numbered.sort()
    if side:
        for number, png in numbered:
            width, height = _png_size(png)
            if width >= side or height >= side:
                raise BadInputError(
                    f"{name}: page {number} is too large: at {dpi} dpi it would exceed "
                    f"{side} x {side} pixels"
                )
    return [png for _, png in numbered]


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (0, 0 when the header is not there)."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n"):
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
