"""Archive files of a batch: ALTO per page (valid against the official ALTO 4.3 schema), a
searchable PDF/A-2b per document whose text layer is what people settled, and the languages
the pages were read with, in hOCR, ALTO and PDF alike."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pikepdf
import pytest
from lxml import etree
from pikepdf import pdfa
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select

from kerani.core.settings import OcrSettings, Settings, using_settings
from kerani.core.vocabulary import FieldStatus, PageStatus
from kerani.flows.documents import finish_ready_documents
from kerani.flows.reassembly import text_layers_task
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import ingest_paths
from kerani.microtasks.routing import route_page
from kerani.ocr.preocr import Reading, store_fields
from kerani.records.alto import NS, render_alto
from kerani.records.archive import (
    alto_key,
    hocr_key,
    pdf_key,
    write_archive_files,
    write_text_layers,
)
from kerani.records.page_text import FieldText, PageText
from kerani.records.searchable_pdf import DEFAULT_DPI, paper_sizes
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page
from tests.test_records_exports import settle_by_people

DATA = Path(__file__).parent / "data"
XLINK = "http://www.loc.gov/standards/xlink/xlink.xsd"
A = f"{{{NS}}}"
XHTML = "{http://www.w3.org/1999/xhtml}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DPI = 200
SIZE = (800, 1000)  # pixels of each page: 4 x 5 inches at DPI
FILE = "surat.tiff"


class F(NamedTuple):
    """A field of the scan: what the OCR guessed, how sure, and what people answer (None:
    the guess is trusted; a typed field above 96 is settled by the OCR alone, routing's
    hand-set floor, while a receipt's free text line always goes to people)."""

    page: int
    name: str
    box: tuple[int, int, int, int]
    guess: str
    confidence: float
    answer: tuple[str, str] | None


CORRECTED = "LOT 5, KAMPUNG BARU"  # what a person keyed over the OCR's guess
FIELDS = [
    F(0, "line_001", (60, 100, 700, 150), "LOT 5 KAMPUNG BAHRU", 40, ("value", CORRECTED)),
    F(0, "line_002", (60, 200, 560, 250), "SITI BINTI AHMAD", 99, None),
    F(0, "line_003", (60, 300, 400, 350), "x#@!", 20, ("unreadable", "")),
    F(1, "line_004", (60, 100, 600, 150), "JUMLAH RM 12.5O", 50, ("value", "JUMLAH RM 12.50")),
]


def _page(text_lines: list[tuple[tuple[int, int, int, int], str]]) -> Image.Image:
    font = ImageFont.truetype(FONT, 36)
    image = Image.new("L", SIZE, 245)
    draw = ImageDraw.Draw(image)
    for (x0, y0, _x1, _y1), text in text_lines:
        draw.text((x0, y0), text, fill=20, font=font)
    return image


def _scan(folder: Path) -> Path:
    """A two-page TIFF at DPI showing the true text of every field."""
    pages = [
        _page([(f.box, f.answer[1] if f.answer else f.guess) for f in FIELDS if f.page == index])
        for index in (0, 1)
    ]
    path = folder / FILE
    pages[0].save(path, save_all=True, append_images=pages[1:], dpi=(DPI, DPI))
    return path


@pytest.fixture
def document(settings: Settings, stores: Stores, tmp_path: Path) -> str:
    """A two-page scan ingested for real, its fields 'read' with known guesses, the doubtful
    ones settled by people (one corrected, one unreadable), the records built; its batch."""
    report = ingest_paths(
        stores.db,
        stores.blobs,
        [_scan(tmp_path)],
        stored_template(stores.db, "receipt"),
        settings.ingest,
    )
    assert report.pages_created == 2
    p = schema.pages
    with stores.db.connect() as conn:
        page_ids = list(
            conn.execute(
                select(p.c.id).where(p.c.batch_id == report.batch_id).order_by(p.c.page_index)
            ).scalars()
        )
    for index, page_id in enumerate(page_ids):
        mine = [f for f in FIELDS if f.page == index]
        with stores.db.begin() as conn:
            conn.execute(p.update().where(p.c.id == page_id).values(status=PageStatus.OCRED))
            rows = [
                {
                    "page_id": page_id,
                    "name": f.name,
                    "kind": "text" if f.answer is None else "line",
                    "x0": f.box[0],
                    "y0": f.box[1],
                    "x1": f.box[2],
                    "y1": f.box[3],
                    "snippet_key": f"snippets/{page_id}/{f.name}.png",
                    "status": FieldStatus.PENDING,
                    "answer_count": 0,
                }
                for f in mine
            ]
            guesses = [Reading("tesseract-5.3.0", f.guess, f.confidence) for f in mine]
            store_fields(conn, rows, guesses)
        route_page(stores.db, page_id, 96.0)
    settle_by_people(settings, stores, {f.name: f.answer for f in FIELDS if f.answer})
    assert finish_ready_documents(stores.db, report.batch_id) == 2
    return report.batch_id


def _alto_schema() -> etree.XMLSchema:
    """The official ALTO 4.3 schema (tests/data/README.md), its xlink import read locally."""

    class Local(etree.Resolver):
        def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
            if system_url == XLINK:
                return self.resolve_filename(str(DATA / "xlink.xsd"), context)
            return None

    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(Local())
    return etree.XMLSchema(etree.parse(str(DATA / "alto-4-3.xsd"), parser))


def _valid_alto(data: bytes) -> Any:
    doc = etree.fromstring(data, etree.XMLParser(no_network=True))
    schema_ = _alto_schema()
    assert schema_.validate(doc), schema_.error_log
    return doc


def _blocks(doc: Any) -> dict[str, Any]:
    """ALTO TextBlocks by the field name their tag gives."""
    labels = {t.get("ID"): t.get("LABEL") for t in doc.iter(f"{A}OtherTag")}
    return {labels[b.get("TAGREFS")]: b for b in doc.iter(f"{A}TextBlock")}


def _content(block: Any) -> str:
    return " ".join(s.get("CONTENT") for s in block.iter(f"{A}String"))


def _pdftotext(pdf: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "out.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", *args, str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_alto_is_valid_and_holds_what_people_settled(stores: Stores, document: str) -> None:
    files = write_archive_files(stores.db, stores.blobs, document, "eng+msa")
    assert files.alto == (alto_key(document, FILE, 1), alto_key(document, FILE, 2))
    assert files.hocr == (hocr_key(document, FILE, 1), hocr_key(document, FILE, 2))
    doc = _valid_alto(stores.blobs.get(files.alto[0]))
    assert doc.findtext(f".//{A}sourceImageInformation/{A}fileName") == FILE
    page = doc.find(f".//{A}Page")
    assert (page.get("WIDTH"), page.get("HEIGHT")) == (str(SIZE[0]), str(SIZE[1]))
    blocks = _blocks(doc)
    assert set(blocks) == {"line_001", "line_002", "line_003"}
    # The person's correction, not the OCR's guess, marked as corrected (CS).
    assert _content(blocks["line_001"]) == CORRECTED
    assert "BAHRU" not in stores.blobs.get(files.alto[0]).decode()
    assert all(s.get("CS") == "true" for s in blocks["line_001"].iter(f"{A}String"))
    assert "people" in blocks["line_001"].get("PROCESSINGREFS").split()
    # The guess the OCR was trusted with stays, not marked as corrected.
    assert _content(blocks["line_002"]) == "SITI BINTI AHMAD"
    assert all(s.get("CS") is None for s in blocks["line_002"].iter(f"{A}String"))
    assert float(next(blocks["line_002"].iter(f"{A}String")).get("WC")) == pytest.approx(0.99)
    # Unreadable: the block is there, with no text.
    assert _content(blocks["line_003"]) == "" and "x#@!" not in _content(blocks["line_003"])
    words = list(blocks["line_001"].iter(f"{A}String"))
    assert int(words[0].get("HPOS")) == 60 and int(words[-1].get("HPOS")) < 700
    # Tesseract, as the record names it, and the people who corrected it.
    steps = {p.get("ID"): p for p in doc.iter(f"{A}Processing")}
    assert steps["tesseract"].findtext(f".//{A}softwareVersion") == "5.3.0"
    assert steps["people"].findtext(f"{A}processingCategory") == "contentModification"
    second = _valid_alto(stores.blobs.get(files.alto[1]))
    assert _content(_blocks(second)["line_004"]) == "JUMLAH RM 12.50"


def test_a_scan_sent_again_gets_the_text_of_its_first_reading(
    settings: Settings, stores: Stores, document: str, tmp_path: Path
) -> None:
    # The same agency sends the scan again with another file: a new batch, whose pages of
    # the scan link to those read first and get copies of their records (no fields).
    other = tmp_path / "other"
    other.mkdir()
    _page([((60, 100, 0, 0), "LAIN")]).save(other / "lain.png")
    again = ingest_paths(
        stores.db,
        stores.blobs,
        [tmp_path / FILE, other / "lain.png"],
        stored_template(stores.db, "receipt"),
        settings.ingest,
    )
    assert again.batch_id != document and again.pages_linked == 2
    files = write_archive_files(stores.db, stores.blobs, again.batch_id, "eng")
    assert files.alto == (alto_key(again.batch_id, FILE, 1), alto_key(again.batch_id, FILE, 2))
    doc = _valid_alto(stores.blobs.get(files.alto[0]))
    assert _content(_blocks(doc)["line_001"]) == CORRECTED
    assert ">KAMPUNG<" in stores.blobs.get(files.hocr[0]).decode()  # a word of the hOCR
    assert files.pdf == (pdf_key(again.batch_id, FILE),)


def test_alto_stays_valid_with_text_xml_cannot_hold() -> None:
    field = FieldText("line_001", (0, 0, 90, 20), "A\x01B <&> \ufffe", "text", "human", 100.0)
    page = PageText(1, "b", 1, "odd & <name>.png", 1, (100, 40), "k", "0" * 64, (field,), ())
    # What XML cannot hold is left out (a control character, U+FFFE); the rest escaped.
    doc = _valid_alto(render_alto(page, None, None))
    assert doc.findtext(f".//{A}fileName") == "odd & <name>.png"


def test_pdf_text_layer_holds_what_people_settled(
    stores: Stores, document: str, tmp_path: Path
) -> None:
    files = write_archive_files(stores.db, stores.blobs, document, "eng+msa")
    assert files.pdf == (pdf_key(document, FILE),) and files.pdf_skipped == ()
    data = stores.blobs.get(files.pdf[0])
    first, second = _pdftotext(data, tmp_path).split("\f")[:2]
    assert CORRECTED in first and "SITI BINTI AHMAD" in first
    assert "BAHRU" not in first and "x#@!" not in first
    assert "JUMLAH RM 12.50" in second and "12.5O" not in second
    # Each word sits over its field on the page image (pdftotext's boxes are in points).
    boxes = _pdftotext(data, tmp_path, "-bbox", "-f", "1", "-l", "1")
    assert 'xMin="21.600000" yMin="36.000000"' in boxes  # line_001 at (60, 100) px, 200 dpi
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert len(pdf.pages) == 2
        # The TIFF's 200 dpi gives the paper size: 800 x 1000 px is 4 x 5 inches.
        assert [float(v) for v in pdf.pages[0].mediabox] == [0, 0, 288, 360]
        (image,) = pdf.pages[0].get_images().values()
        assert (image.Width, image.Height, image.ColorSpace) == (*SIZE, "/DeviceGray")
        meta = pdf.open_metadata()
        assert (meta["pdfaid:part"], meta["pdfaid:conformance"]) == ("2", "B")
        assert meta["dc:title"] == FILE
        (intent,) = pdf.Root.OutputIntents
        assert intent.S == "/GTS_PDFA1" and "/DestOutputProfile" in intent
        # pikepdf's PDF/A-2b validator passes the bytes written (veraPDF is not at hand).
        assert pdfa.check(pdf, "2b").passed


def test_paper_size_is_the_originals() -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(612, 792))  # US letter, portrait
    turned = pdf.add_blank_page(page_size=(612, 792))
    turned.obj.Rotate = 90  # shown, and rendered at ingest, in landscape
    buf = io.BytesIO()
    pdf.save(buf)
    # Pages rendered at 200 dpi: the PDF's own size, turned as the page image is.
    assert paper_sizes(buf.getvalue(), [(0, 1700, 2200), (1, 2200, 1700)]) == [
        (612, 792),
        (792, 612),
    ]
    image = io.BytesIO()
    Image.new("L", (600, 300), 255).save(image, "PNG", dpi=(150, 150))
    # PNG keeps pixels per metre: 150 dpi comes back a hair over.
    ((width, height),) = paper_sizes(image.getvalue(), [(0, 600, 300)])
    assert (width, height) == (pytest.approx(288, abs=0.1), pytest.approx(144, abs=0.1))
    # No resolution stated, a camera's 72 dpi, or no original: the default resolution.
    camera = io.BytesIO()
    Image.new("L", (600, 300), 255).save(camera, "JPEG", dpi=(72, 72))
    default = (600 * 72 / DEFAULT_DPI, 300 * 72 / DEFAULT_DPI)
    assert paper_sizes(camera.getvalue(), [(0, 600, 300)]) == [default]
    assert paper_sizes(None, [(0, 600, 300)]) == [default]
    assert paper_sizes(b"not a scan", [(0, 600, 300)]) == [default]


def test_languages_are_those_the_pages_were_read_with(stores: Stores, document: str) -> None:
    # Two languages: each named as read with, no single language claimed for the text.
    files = write_archive_files(stores.db, stores.blobs, document, "eng+msa")
    hocr = etree.fromstring(stores.blobs.get(files.hocr[0]))
    meta = {m.get("name"): m.get("content") for m in hocr.iter(f"{XHTML}meta")}
    assert meta["ocr-langs"] == "en ms" and hocr.get("lang") is None
    alto = _valid_alto(stores.blobs.get(files.alto[0]))
    settings_text = alto.findtext(f".//{A}Processing[@ID='tesseract']/{A}processingStepSettings")
    assert settings_text == "languages eng+msa"
    assert all(b.get("LANG") is None for b in alto.iter(f"{A}TextBlock"))
    with pikepdf.open(io.BytesIO(stores.blobs.get(files.pdf[0]))) as pdf:
        assert set(pdf.open_metadata()["dc:language"]) == {"en", "ms"}  # an XMP bag
        assert "/Lang" not in pdf.Root

    # One language: the text's language too, in all three.
    files = write_archive_files(stores.db, stores.blobs, document, "eng")
    hocr = etree.fromstring(stores.blobs.get(files.hocr[0]))
    assert hocr.get("lang") == "en" and hocr.get(XML_LANG) == "en"
    alto = _valid_alto(stores.blobs.get(files.alto[0]))
    assert {b.get("LANG") for b in alto.iter(f"{A}TextBlock")} == {"en"}
    with pikepdf.open(io.BytesIO(stores.blobs.get(files.pdf[0]))) as pdf:
        assert str(pdf.Root.Lang) == "en"

    # Unknown: nothing claimed (the hOCR used to say Malay whatever the page).
    (key, _) = write_text_layers(stores.db, stores.blobs, document)
    text = stores.blobs.get(key).decode()
    assert "lang=" not in text and "ocr-langs" not in text


def test_the_flow_task_writes_all_three_with_the_deployments_languages(
    settings: Settings, stores: Stores, document: str
) -> None:
    read_with = settings.model_copy(update={"ocr": OcrSettings(languages="msa")})
    with using_settings(read_with):
        result = text_layers_task.fn(document)
    assert result["pages"] == 2 and result["alto"]["pages"] == 2
    assert result["pdf"]["documents"] == 1 and result["pdf"]["skipped"] == []
    assert result["pdf"]["where"].endswith(f"exports/{document}/pdf")
    assert result["ocr_languages"] == "msa"
    hocr = stores.blobs.get(hocr_key(document, FILE, 1)).decode()
    assert 'lang="ms"' in hocr and 'content="ms"' in hocr
    assert stores.blobs.exists(pdf_key(document, FILE))


def test_a_document_whose_image_is_missing_gets_no_pdf_but_its_pages_get_the_rest(
    stores: Stores,
) -> None:
    # seed_page's page has no image in the blob store (its key is "none").
    page_id = seed_page(stores, [("line_001", "text", "JALAN 1", 99.0)], template="receipt")
    batch = batch_of(stores, page_id)
    assert finish_ready_documents(stores.db, batch) == 1
    files = write_archive_files(stores.db, stores.blobs, batch, "eng")
    assert len(files.hocr) == len(files.alto) == 1 and files.pdf == ()
    ((name, reason),) = files.pdf_skipped
    assert name == "scan.png" and "page image cannot be read" in reason
    alto = _valid_alto(stores.blobs.get(files.alto[0]))
    assert _content(_blocks(alto)["line_001"]) == "JALAN 1"
    # The OCR settled it alone: no step of people is claimed.
    assert [p.get("ID") for p in alto.iter(f"{A}Processing")] == ["tesseract"]


def test_the_languages_kept_at_pre_ocr_beat_the_setting_of_the_day(
    stores: Stores, document: str
) -> None:
    # Read with eng+msa (what the pre-OCR keeps on each page), finished under another
    # setting: the files name what the pages were read with.
    with stores.db.begin() as conn:
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.batch_id == document)
            .values(ocr_languages="eng+msa")
        )
    files = write_archive_files(stores.db, stores.blobs, document, "eng")
    hocr = etree.fromstring(stores.blobs.get(files.hocr[0]))
    meta = {m.get("name"): m.get("content") for m in hocr.iter(f"{XHTML}meta")}
    assert meta["ocr-langs"] == "en ms" and hocr.get("lang") is None
    alto = _valid_alto(stores.blobs.get(files.alto[0]))
    steps = alto.findtext(f".//{A}Processing[@ID='tesseract']/{A}processingStepSettings")
    assert steps == "languages eng+msa"
    with pikepdf.open(io.BytesIO(stores.blobs.get(files.pdf[0]))) as pdf:
        assert set(pdf.open_metadata()["dc:language"]) == {"en", "ms"}
