"""Turn one scan (image or PDF) into normalised greyscale PNG page images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from io import BytesIO

from PIL import Image, ImageOps, UnidentifiedImageError

from kerani.core.errors import BadInputError, KeraniError
from kerani.core.settings import IngestSettings
from kerani.core.text import pages_label
from kerani.ingest.pdftoppm import render_pdf
from kerani.ingest.sources import ScanFile

MIN_PAGE_SIDE = 50
# Formats that may carry several pages; for the others (GIF, WebP) only the first frame is a
# page, later frames are animation.
_MULTI_PAGE = frozenset({"TIFF"})
# Frames past the page limit are counted (not decoded) this far, to say how many were not
# taken; each costs a seek through the file's page directory.
_FRAMES_COUNTED = 10_000
MAX_PAGES_VARIABLE = "KERANI_INGEST_MAX_PAGES_PER_FILE"


@dataclass(frozen=True)
class PageImage:
    """One page: its 0-based index in the file, greyscale PNG bytes, and their size."""

    index: int
    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class RefusedPages:
    """Pages of a scan that were not taken, and why: pages `first` to `last` (1-based;
    `last` None when the file's end was not counted)."""

    first: int
    last: int | None
    reason: str

    def label(self, name: str) -> str:
        """How these pages of file `name` are named to the user (`a.pdf (pages 201-1000)`)."""
        return pages_label(name, self.first, self.last)


@dataclass(frozen=True)
class RenderedScan:
    """A scan's pages that were taken, and the pages that were not, each with its reason."""

    pages: list[PageImage]
    refused: list[RefusedPages] = field(default_factory=list)


class _Refused(Exception):
    """One page cannot be taken; the message is the reason, without the file's name."""


def render_pages(scan: ScanFile, limits: IngestSettings) -> RenderedScan:
    """Decode a scan into page images, refusing bad pages one by one.

    BadInputError (naming the file) when the file as a whole is unusable: not an image or a
    PDF, undecodable, or its only page refused. Pages past `max_pages_per_file` are refused
    as one range, named with the setting, never dropped without a word.
    """
    kind = sniff_format(scan.data)
    if kind is None:
        raise BadInputError(f"{scan.name}: not an image or a PDF ({describe_bytes(scan.data)})")
    limit = limits.max_pages_per_file
    if kind == "PDF":
        pdf = render_pdf(
            scan.data,
            scan.name,
            limits.pdf_dpi,
            limit,
            limits.pdf_timeout_s,
            max_pixels=limits.max_image_pixels,
        )
        pages: list[PageImage] = []
        refused = [RefusedPages(n, n, reason) for n, reason in pdf.refused]
        for number, png in pdf.pages:
            try:
                pages.append(_decode_one(png, "PNG", limits, number - 1))
            except _Refused as e:
                refused.append(RefusedPages(number, number, str(e)))
        total: int | None = pdf.page_count
    elif kind in _MULTI_PAGE:
        pages, refused, total = _decode_frames(scan.data, kind, scan.name, limits)
    else:
        try:
            return RenderedScan([_decode_one(scan.data, kind, limits, 0)])
        except _Refused as e:
            raise BadInputError(f"{scan.name}: {e}") from e
    if total is None or total > limit:
        has = f"more than {limit + _FRAMES_COUNTED:,}" if total is None else f"{total:,}"
        refused.append(
            RefusedPages(
                limit + 1,
                total,
                f"not taken: the file has {has} pages and at most {limit:,} are taken from "
                f"one file ({MAX_PAGES_VARIABLE}); split it, or raise the limit and submit "
                "it again",
            )
        )
    refused.sort(key=lambda r: r.first)
    if not pages and total == 1:
        # A one-page file is refused as a file, as a single image is.
        raise BadInputError(f"{scan.name}: {refused[0].reason}")
    return RenderedScan(pages, refused)


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name (or "PDF") that the magic bytes announce, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    # PDF readers accept junk before the header (within the first KB), and so does pdftoppm.
    if b"%PDF-" in data[:1024]:
        return "PDF"
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def describe_bytes(data: bytes) -> str:
    """A short hint of what unrecognised bytes look like, for the rejection message."""
    if not data:
        return "the file is empty"
    if data.startswith(b"PK\x03\x04"):
        return "looks like a zip archive; archives inside archives are not expanded"
    if data[4:8] == b"ftyp":
        return "looks like a HEIC/HEIF or video file; export the scan as JPEG, PNG or PDF"
    if data.startswith(b"\x00\x00\x00\x0cjP  "):
        return "looks like JPEG 2000; export the scan as JPEG, PNG or PDF"
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return "looks like an old Microsoft Office document"
    if data.startswith(b"%!PS"):
        return "looks like PostScript; print it to PDF first"
    head = data[:512]
    if _looks_like_text(head):
        if b"<html" in head.lower() or b"<!doctype" in head.lower():
            return "looks like an HTML page"
        return "looks like text"
    return f"starts with bytes {head[:8].hex(' ')}"


def _looks_like_text(head: bytes) -> bool:
    """True when the bytes are printable ASCII/UTF-8 with ordinary whitespace."""
    allowed_controls = {0x09, 0x0A, 0x0C, 0x0D}
    return all(b >= 0x20 or b in allowed_controls for b in head)


def _open(data: bytes, fmt: str) -> Image.Image:
    """Open `data` as `fmt` only (headers read, no pixels yet); _Refused says why not."""
    try:
        # Restricting formats keeps the other ~40 Pillow plugins away from hostile bytes.
        return Image.open(BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Refused(f"image is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise _Refused(f"cannot be decoded: not a valid {fmt} file") from e
    except Exception as e:  # Pillow raises many types on hostile headers.
        raise _Refused(f"cannot be decoded: {e}") from e


def _decode_one(data: bytes, fmt: str, limits: IngestSettings, index: int) -> PageImage:
    """The first (only) frame of `data` as page `index`; _Refused says why not."""
    # Pillow warns (rather than fails) between its pixel limit and twice that; for uploads a
    # would-be bomb is an error. catch_warnings restores the filters afterwards, so Pillow's
    # global state is left as it was.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(data, fmt) as image:
            return _normalise(image, limits, index)


def _decode_frames(
    data: bytes, fmt: str, name: str, limits: IngestSettings
) -> tuple[list[PageImage], list[RefusedPages], int | None]:
    """Decode up to `max_pages_per_file` frames, refusing bad ones by number; also count the
    file's frames (None when there are more than the limit and _FRAMES_COUNTED)."""
    pages: list[PageImage] = []
    refused: list[RefusedPages] = []
    limit = limits.max_pages_per_file
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _open(data, fmt)
        except _Refused as e:
            raise BadInputError(f"{name}: {e}") from e
        with image:
            for frame in range(limit):
                if frame:
                    try:
                        image.seek(frame)
                    except EOFError:
                        return pages, refused, frame
                    except Exception as e:  # a broken page directory: nothing after it
                        reason = f"cannot be decoded: {e}; the pages after it cannot be reached"
                        refused.append(RefusedPages(frame + 1, None, reason))
                        return pages, refused, frame + 1
                try:
                    pages.append(_normalise(image, limits, frame))
                except _Refused as e:
                    refused.append(RefusedPages(frame + 1, frame + 1, str(e)))
            return pages, refused, _count_frames(image, limit)


def _count_frames(image: Image.Image, start: int) -> int | None:
    """How many frames the file has, seeking past `start` without decoding; None when more
    than `start + _FRAMES_COUNTED` (a hostile file can declare millions)."""
    for index in range(start, start + _FRAMES_COUNTED + 1):
        try:
            image.seek(index)
        except Exception:  # EOFError at the end; a broken directory ends the count too
            return index
    return None


def _normalise(image: Image.Image, limits: IngestSettings, index: int) -> PageImage:
    """Check the header size, decode fully, turn upright, make greyscale, encode as PNG."""
    width, height = image.size
    # The size comes from the header: refuse before a single pixel is decoded.
    if width * height > limits.max_image_pixels:
        raise _Refused(
            f"image is too large: {width} x {height} pixels "
            f"({width * height:,}), over the limit of {limits.max_image_pixels:,}"
        )
    if width < MIN_PAGE_SIDE or height < MIN_PAGE_SIDE:
        raise _Refused(f"too small to be a document page ({width} x {height} pixels)")
    try:
        # load() decodes everything now, so a truncated file fails here and not in OCR.
        image.load()
        upright = ImageOps.exif_transpose(image)
        grey = _to_grey(upright)
        buf = BytesIO()
        grey.save(buf, "PNG", optimize=False)
    except KeraniError as e:
        raise _Refused(str(e)) from e
    except Exception as e:  # Decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise _Refused(f"cannot be decoded: {e}") from e
    return PageImage(index=index, png=buf.getvalue(), width=grey.width, height=grey.height)


def _to_grey(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit greyscale "L", keeping transparent areas white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.convert("I")
        _, high = image.getextrema()
        if isinstance(high, (int, float)) and high > 255:
            # 16-bit scans: a plain convert("L") clips everything above 255 to white.
            image = image.point(lambda v: v / 256)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        # Transparent pixels are often black with alpha 0; on paper they are white.
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        page.alpha_composite(rgba)
        image = page
    try:
        return image.convert("L")
    except ValueError:
        # Some modes (LAB, HSV) have no direct path to "L".
        return image.convert("RGB").convert("L")
