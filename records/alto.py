"""ALTO 4.3 XML of one page, with the settled (corrected) value of each field.

Each field is a TextBlock holding one TextLine, whose Strings are the words of the value
people settled on, or of the OCR text where the machine was trusted (records.page_text says
how word boxes are placed). A String a person settled has CS="true" (ALTO's correction
status); WC is the OCR's confidence, or people's agreement, from 0 to 1. An OtherTag per
field names it. Two Processing steps say how the text came about: Tesseract read the page
(contentGeneration), people corrected what it was unsure of (contentModification); ALTO 4
deprecates the older OCRProcessing element for this. Measurements are pixels of the page
image the fields were read on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from kerani import __version__
from kerani.records.page_text import FieldText, PageText, software, xml_safe

NS = "http://www.loc.gov/standards/alto/ns-v4#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_VERSION = "4.3"
SCHEMA_LOCATION = f"{NS} http://www.loc.gov/standards/alto/v4/alto-4-3.xsd"
OCR_STEP = "tesseract"
PEOPLE_STEP = "people"


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _box(box: tuple[int, int, int, int]) -> dict[str, str]:
    x0, y0, x1, y1 = box
    return {
        "HPOS": str(x0),
        "VPOS": str(y0),
        "WIDTH": str(max(0, x1 - x0)),
        "HEIGHT": str(max(0, y1 - y0)),
    }


def _wc(confidence: float) -> str:
    return f"{min(1.0, max(0.0, confidence / 100.0)):.2f}"


def _processing(
    description: ET.Element, engines: Sequence[str], ocr_languages: str | None, people: bool
) -> None:
    ocr = _el(description, "Processing", ID=OCR_STEP)
    _el(ocr, "processingCategory", "contentGeneration")
    _el(
        ocr,
        "processingStepDescription",
        "Pre-OCR of the page image; each field's words taken from its region",
    )
    if ocr_languages:
        _el(ocr, "processingStepSettings", f"languages {ocr_languages}")
    # The engine the record names (e.g. tesseract-5.3.0); ALTO has one software per step.
    named = software(engines[0]) if engines else None
    soft = _el(ocr, "processingSoftware")
    _el(soft, "softwareName", named.name if named else "tesseract")
    if named and named.version:
        _el(soft, "softwareVersion", named.version)
    if not people:  # the OCR settled every field
        return
    step = _el(description, "Processing", ID=PEOPLE_STEP)
    _el(step, "processingCategory", "contentModification")
    _el(
        step,
        "processingStepDescription",
        "Fields the OCR was not sure of keyed or confirmed by people, each shown only its "
        "field's snippet, and settled when independent answers agreed",
    )
    kerani = _el(step, "processingSoftware")
    _el(kerani, "softwareName", "Kerani")
    _el(kerani, "softwareVersion", __version__)


def _block(parent: ET.Element, page: int, i: int, f: FieldText, lang: str | None) -> None:
    steps = f"{OCR_STEP} {PEOPLE_STEP}" if f.corrected else OCR_STEP
    attrs = _box(f.box) | {"TAGREFS": f"field_{page}_{i}", "PROCESSINGREFS": steps}
    if f.corrected:
        attrs["CS"] = "true"
    if lang:
        attrs["LANG"] = lang
    block = _el(parent, "TextBlock", ID=f"block_{page}_{i}", **attrs)
    words = f.words()
    if not words:  # unreadable or blank: the block stays, with no text
        return
    line = _el(block, "TextLine", ID=f"line_{page}_{i}", **_box(f.box))
    for j, (word, box) in enumerate(words, start=1):
        if j > 1:  # the gap since the last word
            gap = words[j - 2][1][2]
            _el(line, "SP", HPOS=str(gap), VPOS=str(box[1]), WIDTH=str(max(0, box[0] - gap)))
        string_attrs = _box(box) | {"CONTENT": word, "WC": _wc(f.confidence)}
        if f.corrected:
            string_attrs["CS"] = "true"
        _el(line, "String", ID=f"string_{page}_{i}_{j}", **string_attrs)


def render_alto(page: PageText, ocr_languages: str | None, language: str | None) -> bytes:
    """ALTO 4.3 of one page (UTF-8 bytes). `ocr_languages`: Tesseract's setting the page
    was read with ('eng+msa'), None if unknown; `language`: the one BCP 47 tag of its text,
    None when unknown or several."""
    # The namespaces are declared as plain attributes: ElementTree would otherwise give
    # ALTO's a prefix, or refuse the unprefixed attributes beside a default namespace.
    root = ET.Element(
        "alto",
        {
            "xmlns": NS,
            "xmlns:xsi": XSI,
            "xsi:schemaLocation": SCHEMA_LOCATION,
            "SCHEMAVERSION": SCHEMA_VERSION,
        },
    )
    description = _el(root, "Description")
    _el(description, "MeasurementUnit", "pixel")
    source = _el(description, "sourceImageInformation")
    _el(source, "fileName", xml_safe(page.filename))
    _el(source, "fileIdentifier", page.source_sha256, fileIdentifierLocation="sha256")
    _processing(description, page.engines, ocr_languages, any(f.corrected for f in page.fields))
    p = page.number
    if page.fields:
        tags = _el(root, "Tags")
        for i, f in enumerate(page.fields, start=1):
            _el(
                tags,
                "OtherTag",
                ID=f"field_{p}_{i}",
                TYPE="field",
                LABEL=xml_safe(f.name),
                DESCRIPTION=f"{f.kind}, settled by {'people' if f.corrected else 'OCR'}",
            )
    layout = _el(root, "Layout")
    width, height = page.size
    page_el = _el(
        layout,
        "Page",
        ID=f"page_{p}",
        PHYSICAL_IMG_NR=str(p),
        WIDTH=str(width),
        HEIGHT=str(height),
    )
    space = _el(page_el, "PrintSpace", **_box((0, 0, width, height)))
    for i, f in enumerate(page.fields, start=1):
        _block(space, p, i, f, language)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
