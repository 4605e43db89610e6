"""Turn one scan (image or PDF) into normalised greyscale PNG page images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps, UnidentifiedImageError

from kerani.core.errors import BadInputError, KeraniError
from kerani.core.settings import IngestSettings
from kerani.ingest.pdftoppm import render_pdf
from kerani.ingest.sources import ScanFile

MIN_PAGE_SIDE = 50
# Formats that may carry several pages; for the others (GIF, WebP) only the first frame is a
# page, later frames are animation.
_MULTI_PAGE = frozenset({"TIFF"})


@dataclass(frozen=True)
class PageImage:
    """One page: its 0-based index in the file, greyscale PNG bytes, and their size."""

    index: int
    png: bytes
    width: int
    height: int


def render_pages(scan: ScanFile, limits: IngestSettings) -> list[PageImage]:
    """Decode a scan into page images; raise BadInputError naming the file when it is unusable."""
    kind = sniff_format(scan.data)
    if kind is None:
        raise BadInputError(f"{scan.name}: not an image or a PDF ({describe_bytes(scan.data)})")
    if kind == "PDF":
        pngs = render_pdf(
            scan.data,
            scan.name,
            limits.pdf_dpi,
            limits.max_pages_per_file,
            limits.pdf_timeout_s,
            max_pixels=limits.max_image_pixels,
        )
        pages: list[PageImage] = []
        for index, png in enumerate(pngs):
            label = f"{scan.name} (page {index + 1})"
            pages += _decode(png, "PNG", label, limits, max_frames=1, first_index=index)
        return pages
    max_frames = limits.max_pages_per_file if kind in _MULTI_PAGE else 1
    return _decode(scan.data, kind, scan.name, limits, max_frames=max_frames, first_index=0)


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


def _decode(
    data: bytes,
    fmt: str,
    name: str,
    limits: IngestSettings,
    *,
    max_frames: int,
    first_index: int,
) -> list[PageImage]:
    """Open `data` as `fmt` only and normalise up to `max_frames` frames."""
    pages: list[PageImage] = []
    # Pillow warns (rather than fails) between its pixel limit and twice that; for uploads a
    # would-be bomb is an error. catch_warnings restores the filters afterwards, so Pillow's
    # global state is left as it was.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # Restricting formats keeps the other ~40 Pillow plugins away from hostile bytes.
            image = Image.open(BytesIO(data), formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInputError(f"{name}: image is too large to decode safely: {e}") from e
        except UnidentifiedImageError as e:
            raise BadInputError(f"{name}: cannot be decoded: not a valid {fmt} file") from e
        except Exception as e:  # Pillow raises many types on hostile headers.
            raise BadInputError(f"{name}: cannot be decoded: {e}") from e
        with image:
            for frame in range(max_frames):
                label = name if max_frames == 1 else f"{name} (page {frame + 1})"
                if frame:
                    try:
                        image.seek(frame)
                    except EOFError:
                        break
                    except Exception as e:
                        raise BadInputError(f"{label}: cannot be decoded: {e}") from e
                pages.append(_normalise(image, label, limits, first_index + frame))
    return pages


def _normalise(image: Image.Image, label: str, limits: IngestSettings, index: int) -> PageImage:
    """Check the header size, decode fully, turn upright, make greyscale, encode as PNG."""
    width, height = image.size
    # The size comes from the header: refuse before a single pixel is decoded.
    if width * height > limits.max_image_pixels:
        raise BadInputError(
            f"{label}: image is too large: {width} x {height} pixels "
            f"({width * height:,}), over the limit of {limits.max_image_pixels:,}"
        )
    if width < MIN_PAGE_SIDE or height < MIN_PAGE_SIDE:
        raise BadInputError(f"{label}: too small to be a document page ({width} x {height} pixels)")
    try:
        # load() decodes everything now, so a truncated file fails here and not in OCR.
        image.load()
        upright = ImageOps.exif_transpose(image)
        grey = _to_grey(upright)
        buf = BytesIO()
        grey.save(buf, "PNG", optimize=False)
    except KeraniError:
        raise
    except Exception as e:  # Decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise BadInputError(f"{label}: cannot be decoded: {e}") from e
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
