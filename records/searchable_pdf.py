"""A searchable PDF/A-2b of one document: each page's image under an invisible text layer.

The text layer holds the settled (corrected) words, each placed over its box on the image
in text render mode 3 (neither fill nor stroke), as Tesseract's and OCRmyPDF's PDFs do: a
viewer shows the scan, and search, copy and `pdftotext` find the words people settled on.
The words are set in a glyphless font (one empty glyph, every character code mapped to it,
and a ToUnicode map back to the text), made here with fontTools, so that no font program
has to be found on the machine and every code point can be written.

PDF/A without Ghostscript: the page image is greyscale PNG data put in the file as it is
(its Flate stream and PNG predictors), which PDF/A accepts with an output intent; pikepdf's
`pdfa.save` adds the sRGB output intent and the XMP metadata declaring PDF/A-2b, and only
writes a file its own PDF/A validator (built from veraPDF's rules) passes. That validator
is not veraPDF itself.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import pikepdf
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from pikepdf import Array, Dictionary, Name
from pikepdf import pdfa as pikepdf_pdfa
from PIL import Image

from kerani.core.errors import BadInputError

FLAVOUR = "2b"
# The glyphless font's one glyph is half an em wide: Tz stretches each word to its box.
GLYPH_WIDTH = 500
# A fixed time in the font program (seconds since 1904), so that it is the same bytes.
_FONT_TIME = int((datetime(2024, 1, 1) - datetime(1904, 1, 1)).total_seconds())
# A scan whose file states no resolution (or a camera's 72 dpi, which would make a page a
# metre wide) is taken to be at this one, a usual one for document scanners.
DEFAULT_DPI = 300.0
_PLAUSIBLE_DPI = (100.0, 2400.0)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PdfPage:
    """One page: its image (PNG), its size on paper in points, and its words in pixels."""

    png: bytes
    size_pt: tuple[float, float]
    lines: Sequence[Sequence[tuple[str, Box]]]  # each line's words, left to right


@lru_cache(maxsize=1)
def glyphless_font() -> bytes:
    """A TrueType font of one empty glyph (besides .notdef), GLYPH_WIDTH of 1000 wide."""
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder([".notdef", "blank"])
    builder.setupCharacterMap({})
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "blank": TTGlyphPen(None).glyph()})
    builder.setupHorizontalMetrics({".notdef": (GLYPH_WIDTH, 0), "blank": (GLYPH_WIDTH, 0)})
    builder.setupHorizontalHeader(ascent=1000, descent=0)
    builder.setupNameTable({"familyName": "GlyphLessFont", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=1000, sTypoDescender=0, usWinAscent=1000, usWinDescent=0)
    builder.setupPost()
    head = builder.font["head"]
    head.created = head.modified = _FONT_TIME
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


def _to_unicode() -> bytes:
    """A CMap from the two-byte codes of the text (UTF-16 code units) back to Unicode."""
    # Ranges may not cross a change of the first byte: one range per high byte, at most
    # 100 to a block. A code is one UTF-16 unit, so a character beyond the BMP (two
    # surrogate codes) cannot map back: it is drawn, but search and copy do not find it.
    ranges = [f"<{h:02X}00> <{h:02X}FF> <{h:02X}00>" for h in range(256) if not 0xD8 <= h <= 0xDF]
    blocks = []
    for start in range(0, len(ranges), 100):
        chunk = ranges[start : start + 100]
        blocks.append(f"{len(chunk)} beginbfrange\n" + "\n".join(chunk) + "\nendbfrange")
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        + "\n".join(blocks)
        + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def _font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    program = glyphless_font()
    file = pdf.make_stream(program)
    file.Length1 = len(program)
    descriptor = Dictionary(
        Type=Name.FontDescriptor,
        FontName=Name("/GlyphLessFont"),
        Flags=5,  # fixed pitch, symbolic
        FontBBox=Array([0, 0, GLYPH_WIDTH, 1000]),
        ItalicAngle=0,
        Ascent=1000,
        Descent=0,
        CapHeight=1000,
        StemV=80,
        FontFile2=file,
    )
    # Every character code draws glyph 1, the blank one.
    to_glyph = pdf.make_stream(b"\x00\x01" * 65536)
    cid_font = Dictionary(
        Type=Name.Font,
        Subtype=Name.CIDFontType2,
        BaseFont=Name("/GlyphLessFont"),
        CIDSystemInfo=Dictionary(
            Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
        ),
        FontDescriptor=pdf.make_indirect(descriptor),
        DW=GLYPH_WIDTH,
        CIDToGIDMap=to_glyph,
    )
    return pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type0,
            BaseFont=Name("/GlyphLessFont"),
            Encoding=Name("/Identity-H"),
            DescendantFonts=Array([pdf.make_indirect(cid_font)]),
            ToUnicode=pdf.make_stream(_to_unicode()),
        )
    )


def _png_image(pdf: pikepdf.Pdf, png: bytes) -> tuple[pikepdf.Stream, int, int]:
    """The page image as an image XObject: a plain 8-bit greyscale PNG's data as it is, any
    other image decoded and compressed again."""
    if png[:8] == b"\x89PNG\r\n\x1a\n":
        pos, idat, header = 8, [], b""
        while pos + 8 <= len(png):
            (length,) = struct.unpack(">I", png[pos : pos + 4])
            kind = png[pos + 4 : pos + 8]
            body = png[pos + 8 : pos + 8 + length]
            if kind == b"IHDR":
                header = body
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
            pos += 12 + length
        if len(header) == 13:
            width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", header)
            if depth == 8 and colour == 0 and interlace == 0 and idat:
                stream = pikepdf.Stream(pdf, b"".join(idat))
                stream.Filter = Name.FlateDecode
                stream.DecodeParms = Dictionary(
                    Predictor=15, Colors=1, BitsPerComponent=8, Columns=width
                )
                return _as_image(stream, width, height), width, height
    try:
        with Image.open(io.BytesIO(png)) as img:
            grey = img.convert("L")
    except Exception as e:  # Pillow raises many kinds for a file it cannot decode
        raise BadInputError(f"page image cannot be decoded: {e}") from e
    stream = pikepdf.Stream(pdf, zlib.compress(grey.tobytes(), 6))
    stream.Filter = Name.FlateDecode
    return _as_image(stream, grey.width, grey.height), grey.width, grey.height


def _as_image(stream: pikepdf.Stream, width: int, height: int) -> pikepdf.Stream:
    stream.Type = Name.XObject
    stream.Subtype = Name.Image
    stream.Width = width
    stream.Height = height
    stream.ColorSpace = Name.DeviceGray
    stream.BitsPerComponent = 8
    return stream


def paper_sizes(
    original: bytes | None, pages: Sequence[tuple[int, int, int]]
) -> list[tuple[float, float]]:
    """The size in points of each page (index in its file, width and height in pixels): a
    PDF's own page size, an image's size at the resolution it states, else DEFAULT_DPI."""
    found: list[tuple[float, float] | None] = [None] * len(pages)
    if original is not None:
        try:
            found = (
                _pdf_sizes(original, pages)
                if original[:5] == b"%PDF-"
                else _image_sizes(original, pages)
            )
        except Exception:  # a file ingest could read but this cannot: the default size
            found = [None] * len(pages)
    return [
        size or (w * 72.0 / DEFAULT_DPI, h * 72.0 / DEFAULT_DPI)
        for size, (_i, w, h) in zip(found, pages, strict=True)
    ]


def _pdf_sizes(
    original: bytes, pages: Sequence[tuple[int, int, int]]
) -> list[tuple[float, float] | None]:
    out: list[tuple[float, float] | None] = []
    with pikepdf.open(io.BytesIO(original)) as pdf:
        for index, w, h in pages:
            if index >= len(pdf.pages):
                out.append(None)
                continue
            x0, y0, x1, y1 = (float(v) for v in pdf.pages[index].cropbox)
            box_w, box_h = abs(x1 - x0), abs(y1 - y0)
            # The page image is drawn turned by /Rotate: match the box to its orientation.
            if (box_w > box_h) != (w > h):
                box_w, box_h = box_h, box_w
            out.append((box_w, box_h))
    return out


def _image_sizes(
    original: bytes, pages: Sequence[tuple[int, int, int]]
) -> list[tuple[float, float] | None]:
    out: list[tuple[float, float] | None] = []
    with Image.open(io.BytesIO(original)) as img:
        for index, w, h in pages:
            img.seek(index)
            dpi = img.info.get("dpi")
            low, high = _PLAUSIBLE_DPI
            if not dpi or not all(low <= float(d) <= high for d in dpi[:2]):
                out.append(None)
                continue
            dx, dy = float(dpi[0]), float(dpi[1])
            if img.size == (h, w) and img.size != (w, h):  # turned upright at ingest
                dx, dy = dy, dx
            out.append((w * 72.0 / dx, h * 72.0 / dy))
    return out


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be")


def _text_ops(page: PdfPage, pixels: tuple[int, int]) -> list[str]:
    """Invisible words, each stretched over its box (and the gap to the next word)."""
    width_pt, height_pt = page.size_pt
    sx, sy = width_pt / pixels[0], height_pt / pixels[1]
    ops: list[str] = []
    for line in page.lines:
        for j, (word, (x0, y0, x1, y1)) in enumerate(line):
            last = j == len(line) - 1
            # A space after each word but the last, so that extracted text keeps the gaps.
            text = word if last else word + " "
            right = x1 if last else line[j + 1][1][0]
            code = _utf16(text)
            size = max(0.5, (y1 - y0) * sy)
            natural = size * GLYPH_WIDTH / 1000 * (len(code) // 2)
            stretch = 100.0 * max(0.01, (right - x0) * sx) / max(natural, 0.01)
            # The glyphless font sits on its baseline: put it on the box's bottom edge.
            ops.append(
                f"BT 3 Tr /F0 {size:.2f} Tf {stretch:.2f} Tz "
                f"1 0 0 1 {x0 * sx:.2f} {height_pt - y1 * sy:.2f} Tm <{code.hex()}> Tj ET"
            )
    return ops


def render_pdf(
    pages: Sequence[PdfPage],
    *,
    title: str,
    languages: Sequence[str] = (),
    creator: str = "Kerani",
    created: datetime | None = None,
) -> bytes:
    """The PDF/A-2b of a document's pages; pikepdf.pdfa.PdfaError if it fails validation.

    `languages`: BCP 47 tags of the text (XMP dc:language); the document's /Lang only when
    there is exactly one. `created`: the time the metadata gives (default: now)."""
    if not pages:
        raise ValueError("a PDF needs at least one page")
    pdf = pikepdf.new()
    font = _font(pdf)
    for page in pages:
        image, w, h = _png_image(pdf, page.png)
        width_pt, height_pt = page.size_pt
        content = [f"q {width_pt:.2f} 0 0 {height_pt:.2f} 0 0 cm /Im0 Do Q"]
        content += _text_ops(page, (w, h))
        new = pdf.add_blank_page(page_size=(width_pt, height_pt))
        new.obj.Resources = Dictionary(XObject=Dictionary(Im0=image), Font=Dictionary(F0=font))
        new.obj.Contents = pdf.make_stream("\n".join(content).encode("ascii"))
    when = (created or datetime.now(UTC)).isoformat(timespec="seconds")
    with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as meta:
        meta["dc:title"] = title
        if languages:
            meta["dc:language"] = list(languages)
        meta["xmp:CreatorTool"] = creator
        meta["xmp:CreateDate"] = when
        meta["xmp:ModifyDate"] = when
    if len(languages) == 1:
        pdf.Root.Lang = pikepdf.String(languages[0])
    out = io.BytesIO()
    # Writes only a file its PDF/A validator passes; the same input, the same /ID.
    pikepdf_pdfa.save(pdf, out, FLAVOUR, output_intent="sRGB", deterministic_id=True)
    return out.getvalue()
