"""A standing corpus of hostile uploads, run through the ingest `kerani submit` uses.

Every class is generated here (no stored binaries) and submitted in one folder beside good
scans. For each: the one line the user sees (file, and pages when not the whole file, then
what is wrong), the good files of the same batch still taken in, and nothing raised. A few
cases go through `kerani submit` itself, where what the terminal shows is the point.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import zipfile
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from kerani.core.settings import (
    BlobSettings,
    CoreSettings,
    DatabaseSettings,
    IngestSettings,
    Settings,
)
from kerani.core.text import visible
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import IngestReport, ingest_paths
from kerani.records.report import batch_refusals
from kerani.storage import schema
from kerani.storage.database import close_engine
from kerani.storage.stores import Stores, open_stores

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftoppm") is None or shutil.which("pdfinfo") is None,
    reason="pdftoppm and pdfinfo (poppler-utils) are not installed",
)

# The limits of the corpus: the defaults, but a pixel limit small enough that a page near it
# is cheap to make; 100 dpi keeps the PDFs' pages small.
LIMITS = IngestSettings(
    max_file_bytes=50 * 1024 * 1024,
    max_zip_members=2000,
    max_zip_total_bytes=2 * 1024 * 1024 * 1024,
    max_zip_ratio=200.0,
    max_image_pixels=4_000_000,
    max_pages_per_file=200,
    pdf_dpi=100,
    pdf_timeout_s=60.0,
)


# --- what the corpus is made of ----------------------------------------------------------


def page_png(size: tuple[int, int] = (300, 400), mark: int = 0) -> bytes:
    """A small page with a dark block on it (ink), distinct per `mark`."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle((20, 20 + mark % 200, 120, 60 + mark % 200), fill=0)
    buf = BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def noise(fmt: str, size: tuple[int, int] = (300, 300)) -> bytes:
    """The same noisy image every time (Image.effect_noise is not seeded): a cut-off copy
    then leaves the same bytes unprocessed, which the decoder's message counts."""
    pixels = random.Random(f"noise:{size}").randbytes(size[0] * size[1])
    buf = BytesIO()
    Image.frombytes("L", size, pixels).save(buf, fmt)
    return buf.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims another size (CRC fixed so Pillow believes it)."""
    data = bytearray(page_png((60, 60)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def tiff(frames: int, size: tuple[int, int] = (60, 60)) -> bytes:
    images = [Image.new("L", size, 255) for _ in range(frames)]
    buf = BytesIO()
    images[0].save(buf, "TIFF", save_all=True, append_images=images[1:])
    return buf.getvalue()


def pdf(pages: int, *, giant: int | None = None) -> bytes:
    """A PDF of 1-inch pages; page `giant` (1-based) is 200 inches a side."""
    images = [Image.new("1", (72, 72), 1) for _ in range(pages)]
    buf = BytesIO()
    if giant is None:
        images[0].save(buf, "PDF", save_all=True, append_images=images[1:], resolution=72)
        return buf.getvalue()
    # Pillow gives every page of one PDF the same resolution: draw the giant page larger.
    images[giant - 1] = Image.new("1", (72 * 200, 72 * 200), 1)
    images[0].save(buf, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return buf.getvalue()


_PDF_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(password: bytes = b"secret") -> bytes:
    """A one-page PDF encrypted as the PDF standard says (RC4, 40 bits, revision 2): it opens
    with `password` (pdftoppm -upw renders it) and not without."""
    md5 = hashlib.md5  # what the PDF standard's (old) encryption is built on
    file_id = md5(b"kerani").digest()
    perms = -4
    user = (password + _PDF_PAD)[:32]
    o_value = _rc4(md5((b"owner" + _PDF_PAD)[:32]).digest()[:5], user)
    key = md5(user + o_value + struct.pack("<i", perms) + file_id).digest()[:5]
    u_value = _rc4(key, _PDF_PAD)
    stream = _rc4(md5(key + b"\x04\x00\x00\x00\x00").digest()[:10], b"0 0 50 50 re f")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (o_value.hex().encode(), u_value.hex().encode(), perms),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    ident = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 5 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        ident,
        ident,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def jpeg_turned_180() -> bytes:
    """A page stored upside down with EXIF orientation 3 (how phones save it)."""
    image = Image.open(BytesIO(page_png((200, 300)))).rotate(180)
    exif = Image.Exif()
    exif[0x0112] = 3
    buf = BytesIO()
    image.convert("RGB").save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            # ZipInfo keeps the name exactly as given, even '../evil.png'.
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)


def zip_with_raw_names(path: Path, members: list[tuple[bytes, bytes, bool]]) -> None:
    """A zip of (name bytes, data, flagged as UTF-8) members: names as another system's tool
    wrote them, valid UTF-8 or not, whatever the flag says."""
    with zipfile.ZipFile(path, "w") as zf:
        for i, (raw, data, _) in enumerate(members):
            zf.writestr(str(i).rjust(len(raw), "x"), data)
    blob = bytearray(path.read_bytes())
    end = blob.rindex(b"PK\x05\x06")
    entry = int.from_bytes(blob[end + 16 : end + 20], "little")
    for raw, _, utf8 in members:
        local = int.from_bytes(blob[entry + 42 : entry + 46], "little")
        for flags_at, name_at in ((entry + 8, entry + 46), (local + 6, local + 30)):
            flags = int.from_bytes(blob[flags_at : flags_at + 2], "little")
            flags = flags | 0x800 if utf8 else flags & ~0x800
            blob[flags_at : flags_at + 2] = flags.to_bytes(2, "little")
            blob[name_at : name_at + len(raw)] = raw
        lengths = [int.from_bytes(blob[entry + i : entry + i + 2], "little") for i in (28, 30, 32)]
        entry += 46 + sum(lengths)
    path.write_bytes(bytes(blob))


RECEIPT = Path(__file__).resolve().parents[1] / "kerani" / "samples" / "receipts" / "pages"
# A name that is Markdown, HTML and a console-markup tag at once.
HOSTILE_NAME = "[x](javascript:alert(1))|<img src=x onerror=alert(1)>.png"


def build_corpus(root: Path) -> Path:
    """The folder `batch/` holding one file (or zip, or link) of each hostile class, and good
    scans beside them."""
    folder = root / "batch"
    folder.mkdir()
    outside = root / "outside.png"
    outside.write_bytes(page_png(mark=99))

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)

    # Good scans, which must all be taken whatever sits beside them.
    put("good.png", page_png(mark=1))
    put("good.jpg", noise("JPEG"))
    put("misnamed.pdf", page_png(mark=2))  # a PNG named .pdf: its bytes decide
    with open(os.path.join(os.fsencode(folder), b"odd\xff.png"), "wb") as f:
        f.write(page_png(mark=3))  # a name that is not UTF-8
    put("blank.png", blank_png())
    put("upside-down.png", turned_png(page_png(mark=5)))  # scanned upside down, no EXIF
    put("turned-exif.jpg", jpeg_turned_180())
    put("enormous.png", page_png((1900, 2000), mark=6))  # 3.8 M pixels, the limit is 4 M
    shutil.copy(RECEIPT / "000.jpg", folder / "receipt.jpg")  # a receipt, not the form
    # Broken files.
    put("empty.png", b"")
    put("cut.jpg", noise("JPEG")[:3000])
    put("cut.png", noise("PNG")[:40_000])
    put("cut.pdf", pdf(2)[:300])
    put("notes.png", b"Dear sir,\nplease find the forms attached.\n")
    put("bomb.png", declared_png(30000, 30000))
    put("huge.png", declared_png(3000, 3000))
    put("tiny.png", page_png((20, 300)))
    put("frames.tif", tiff(260))
    put("locked.pdf", encrypted_pdf())
    put("register.pdf", pdf(1000))
    put("poster.pdf", pdf(3, giant=2))
    put(HOSTILE_NAME, noise("PNG")[:500])
    put("esc\x1b[2J.png", b"text")
    put("new\nline.png", b"text")
    put("invoice\u202egnp.exe", b"MZ\x90\x00")
    (folder / "a[").mkdir()
    (folder / "a[" / "bold]b.png").write_bytes(b"text")
    # Links and special files.
    (folder / "escape.png").symlink_to(outside)
    (folder / "dangling.png").symlink_to(root / "gone.png")
    os.mkfifo(folder / "pipe.png")
    # Zips.
    write_zip(
        folder / "slip.zip",
        {"../evil.png": page_png(), "/abs.png": page_png(), "ok.png": page_png(mark=7)},
    )
    write_zip(folder / "bomb.zip", {"page.png": bytes(20 * 1024 * 1024), "ok.png": page_png()})
    inner = BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("deep.png", page_png())
    write_zip(folder / "outer.zip", {"inner.zip": inner.getvalue(), "ok.png": page_png(mark=8)})
    zip_with_raw_names(
        folder / "names.zip",
        [
            (b"caf\x82.png", page_png(mark=9), False),  # cp437, as old Windows tools write
            (b"r\xe9sum\xe9.png", page_png(mark=10), True),  # flagged UTF-8, and it is not
            (b"ok.png", page_png(mark=11), False),
        ],
    )
    return folder


def blank_png(size: tuple[int, int] = (300, 400)) -> bytes:
    buf = BytesIO()
    Image.new("L", size, 255).save(buf, "PNG")
    return buf.getvalue()


def turned_png(png: bytes) -> bytes:
    buf = BytesIO()
    Image.open(BytesIO(png)).rotate(180).save(buf, "PNG")
    return buf.getvalue()


# --- the corpus, ingested once --------------------------------------------------------------

# Each refused class: the name it is shown by, and the one line of what is wrong.
REFUSED = {
    "empty file": ("batch/empty.png", "not an image or a PDF (the file is empty)"),
    "truncated JPEG": (
        "batch/cut.jpg",
        "cannot be decoded: image file is truncated (30 bytes not processed)",
    ),
    "truncated PNG": ("batch/cut.png", "cannot be decoded: image file is truncated"),
    "truncated PDF": (
        "batch/cut.pdf",
        "not a readable PDF (damaged or cut short?): Syntax Error: Couldn't read xref table",
    ),
    "text named .png": ("batch/notes.png", "not an image or a PDF (looks like text)"),
    "program named .exe": (
        "batch/invoice\\u202egnp.exe",
        "not an image or a PDF (starts with bytes 4d 5a 90 00)",
    ),
    "decompression bomb": (
        "batch/bomb.png",
        "image is too large to decode safely: Image size (900000000 pixels) exceeds limit of "
        "178956970 pixels, could be decompression bomb DOS attack.",
    ),
    "over the pixel limit": (
        "batch/huge.png",
        "image is too large: 3000 x 3000 pixels (9,000,000), over the limit of 4,000,000",
    ),
    "too small for a page": (
        "batch/tiny.png",
        "too small to be a document page (20 x 300 pixels)",
    ),
    "260-frame TIFF": (
        "batch/frames.tif (pages 201-260)",
        "not taken: the file has 260 pages and at most 200 are taken from one file "
        "(KERANI_INGEST_MAX_PAGES_PER_FILE); split it, or raise the limit and submit it again",
    ),
    "1,000-page PDF": (
        "batch/register.pdf (pages 201-1000)",
        "not taken: the file has 1,000 pages and at most 200 are taken from one file "
        "(KERANI_INGEST_MAX_PAGES_PER_FILE); split it, or raise the limit and submit it again",
    ),
    "encrypted PDF": (
        "batch/locked.pdf",
        "encrypted PDF: it opens only with a password; submit a copy saved without one",
    ),
    "PDF with a giant page": (
        "batch/poster.pdf (page 2)",
        "too large: at 100 dpi it would exceed 2000 x 2000 pixels",
    ),
    "zip slip": ("batch/slip.zip!../evil.png", "unsafe path in zip: '..' in path"),
    "zip absolute path": ("batch/slip.zip!/abs.png", "unsafe path in zip: absolute path"),
    "zip bomb": (
        "batch/bomb.zip",
        "zip refused (looks like a zip bomb): member 'page.png' has a compression ratio of "
        "1029:1, over the limit of 200:1",
    ),
    "nested zip": (
        "batch/outer.zip!inner.zip",
        "nested zip archive: not expanded; upload its contents",
    ),
    "symlink out of the folder": ("batch/escape.png", "symlink points outside the folder"),
    "dangling symlink": ("batch/dangling.png", "broken symlink"),
    "FIFO": ("batch/pipe.png", "not a regular file"),
    "Markdown and HTML in a name": (
        f"batch/{HOSTILE_NAME}",
        "cannot be decoded: image file is truncated",
    ),
    "console markup in a name": ("batch/a[/bold]b.png", "not an image or a PDF (looks like text)"),
    "terminal escape in a name": (
        "batch/esc\\x1b[2J.png",
        "not an image or a PDF (looks like text)",
    ),
    "newline in a name": ("batch/new\\x0aline.png", "not an image or a PDF (looks like text)"),
}

# Each class taken in: the name it is stored by, and the 0-based pages it gives.
TAKEN = {
    "good PNG": ("batch/good.png", [0]),
    "good JPEG": ("batch/good.jpg", [0]),
    "PNG named .pdf": ("batch/misnamed.pdf", [0]),
    "non-UTF-8 name in a folder": ("batch/odd?.png", [0]),
    "blank page (the OCR names it)": ("batch/blank.png", [0]),
    "upside-down page (the OCR turns it)": ("batch/upside-down.png", [0]),
    "page turned by EXIF": ("batch/turned-exif.jpg", [0]),
    "enormous page within the limit": ("batch/enormous.png", [0]),
    "wrong-template page": ("batch/receipt.jpg", [0]),
    "260-frame TIFF, first 200": ("batch/frames.tif", list(range(200))),
    "1,000-page PDF, first 200": ("batch/register.pdf", list(range(200))),
    "PDF with a giant page, the others": ("batch/poster.pdf", [0, 2]),
    "zip slip, the safe member": ("batch/slip.zip!ok.png", [0]),
    "nested zip, the plain member": ("batch/outer.zip!ok.png", [0]),
    "non-UTF-8 name in a zip (code page 437)": ("batch/names.zip!caf\u00e9.png", [0]),
    "name flagged UTF-8 in a zip that is not": ("batch/names.zip!r\u0398sum\u0398.png", [0]),
    "zip with odd names, the plain member": ("batch/names.zip!ok.png", [0]),
}


class Ingested:
    """The corpus batch: the report, each refusal as the user reads it, the pages taken."""

    def __init__(self, stores: Stores, report: IngestReport) -> None:
        self.stores = stores
        self.report = report
        self.lines = {
            visible(r.label): visible(r.reason) for r in batch_refusals(stores.db, report.batch_id)
        }
        s, p = schema.scans, schema.pages
        with stores.db.connect() as conn:
            rows = conn.execute(
                select(s.c.filename, p.c.page_index, p.c.width, p.c.height, p.c.image_key)
                .join(p, p.c.scan_id == s.c.id)
                .order_by(s.c.filename, p.c.page_index)
            ).all()
        self.pages: dict[str, list[Any]] = {}
        for row in rows:
            self.pages.setdefault(row.filename, []).append(row)


def sqlite_settings(root: Path) -> Settings:
    return Settings(
        core=CoreSettings(data_dir=root / "data"),
        database=DatabaseSettings(url=f"sqlite:///{root / 'kerani.db'}"),
        blobs=BlobSettings(url=str(root / "blobs")),
        ingest=LIMITS,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingested]:
    """The corpus ingested once, on SQLite (the ingest is the same code on either)."""
    if shutil.which("pdftoppm") is None or shutil.which("pdfinfo") is None:
        pytest.skip("pdftoppm and pdfinfo (poppler-utils) are not installed")
    root = tmp_path_factory.mktemp("hostile")
    settings = sqlite_settings(root)
    stores = open_stores(settings)
    report = ingest_paths(
        stores.db,
        stores.blobs,
        [build_corpus(root)],
        stored_template(stores.db, "bantuan_form"),
        LIMITS,
    )
    yield Ingested(stores, report)
    close_engine(settings.database_url)


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_each_hostile_file_gets_one_line_naming_it_and_what_is_wrong(
    corpus: Ingested, case: str
) -> None:
    name, reason = REFUSED[case]
    assert corpus.lines.get(name) == reason, sorted(corpus.lines)


@pytest.mark.parametrize("case", TAKEN, ids=list(TAKEN))
def test_the_good_files_beside_them_are_still_taken_in(corpus: Ingested, case: str) -> None:
    name, pages = TAKEN[case]
    assert [p.page_index for p in corpus.pages.get(name, [])] == pages, sorted(corpus.pages)
    assert name not in corpus.lines  # the file itself is not refused


def test_nothing_else_is_said_and_nothing_is_taken_twice(corpus: Ingested) -> None:
    assert set(corpus.lines) == {name for name, _ in REFUSED.values()}
    assert set(corpus.pages) == {name for name, _ in TAKEN.values()}
    assert corpus.report.pages_created == sum(len(pages) for _, pages in TAKEN.values())
    with corpus.stores.db.connect() as conn:
        status = conn.execute(select(schema.batches.c.status)).scalar_one()
    assert status == "ingested"


def test_a_page_turned_by_exif_is_stored_upright(corpus: Ingested) -> None:
    (page,) = corpus.pages["batch/turned-exif.jpg"]
    with Image.open(BytesIO(corpus.stores.blobs.get(page.image_key))) as image:
        assert (image.width, image.height) == (200, 300)
        dark = image.getpixel((60, 40))  # the block drawn near the top left, upright
        assert isinstance(dark, int) and dark < 100


def test_an_enormous_page_within_the_limit_keeps_its_size(corpus: Ingested) -> None:
    (page,) = corpus.pages["batch/enormous.png"]
    assert (page.width, page.height) == (1900, 2000)


# --- page limits on both databases ----------------------------------------------------------


def test_pages_over_the_limit_are_taken_when_the_batch_comes_again_with_a_higher_limit(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    scan = tmp_path / "register.tif"
    frames = [Image.new("L", (60, 60), 40 * i) for i in range(5)]
    buf = BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    scan.write_bytes(buf.getvalue())
    low = LIMITS.model_copy(update={"max_pages_per_file": 2})
    first = ingest_paths(
        stores.db, stores.blobs, [scan], stored_template(stores.db, "bantuan_form"), low
    )
    assert (first.pages_created, [r.name for r in first.rejected]) == (
        2,
        ["register.tif (pages 3-5)"],
    )
    (refusal,) = batch_refusals(stores.db, first.batch_id)
    assert (refusal.document, refusal.first_page, refusal.last_page, refusal.kind) == (
        "register.tif",
        3,
        5,
        "pages",
    )
    assert refusal.page_count == 3

    again = ingest_paths(
        stores.db, stores.blobs, [scan], stored_template(stores.db, "bantuan_form"), LIMITS
    )

    assert again.batch_id == first.batch_id
    assert (again.pages_created, again.pages_existing, again.rejected) == (3, 2, [])
    assert batch_refusals(stores.db, first.batch_id) == []  # no longer listed as not taken
    with stores.db.connect() as conn:
        names = conn.execute(select(schema.scans.c.filename, schema.scans.c.status)).all()
    assert [tuple(n) for n in names] == [("register.tif", "accepted")]


def test_a_file_whose_every_page_is_refused_is_refused_with_each_page_named(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    scan = tmp_path / "strips.tif"
    scan.write_bytes(tiff(2, (300, 20)))
    good = tmp_path / "good.png"
    good.write_bytes(page_png())
    report = ingest_paths(
        stores.db, stores.blobs, [scan, good], stored_template(stores.db, "bantuan_form"), LIMITS
    )
    lines = [f"{r.label}: {r.reason}" for r in batch_refusals(stores.db, report.batch_id)]
    assert lines == [
        "strips.tif: no page could be taken (each refused page is listed)",
        "strips.tif (page 1): too small to be a document page (300 x 20 pixels)",
        "strips.tif (page 2): too small to be a document page (300 x 20 pixels)",
    ]
    assert (report.accepted_files, report.pages_created) == (1, 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_five_hundred_files_in_one_folder_are_all_taken(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(500):
        image = Image.new("L", (60, 60), 255)
        image.putpixel((i % 60, i // 60), 0)  # each file its own content: no page is a copy
        image.save(folder / f"scan{i:03d}.png")
    report = ingest_paths(
        stores.db, stores.blobs, [folder], stored_template(stores.db, "bantuan_form"), LIMITS
    )
    assert (report.accepted_files, report.pages_created, report.rejected) == (500, 500, [])


# --- names in what the agency reads: Markdown artifacts, the HTML report ----------------------


def hostile_batch(stores: Stores, tmp_path: Path) -> str:
    """A batch of a blank page and a broken file, both with HOSTILE_NAME, the page failed by
    the pre-OCR; the batch's template is a hostile name too (a template may be a YAML path)."""
    from kerani.forms.templates import load_template
    from kerani.ocr.preocr import preocr_page
    from kerani.ocr.tesseract import TesseractEngine

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / HOSTILE_NAME).write_bytes(blank_png())
    (folder / "sub" / HOSTILE_NAME).write_bytes(b"text")
    report = ingest_paths(
        stores.db, stores.blobs, [folder], stored_template(stores.db, "bantuan_form"), LIMITS
    )
    with stores.db.begin() as conn:
        page_id = conn.execute(select(schema.pages.c.id)).scalar_one()
        conn.execute(schema.batches.update().values(template="forms/*my* <b>form</b>|x.yaml"))
    status = preocr_page(
        stores.db, stores.blobs, page_id, load_template("bantuan_form"), TesseractEngine(), 6
    )
    assert status == "ocr_failed"
    return report.batch_id


def rendered(markdown: str) -> str:
    """Markdown as a renderer makes it HTML (CommonMark with tables, as artifacts are shown)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_every_name_in_the_markdown_report_stays_text(stores: Stores, tmp_path: Path) -> None:
    from kerani.records.report import batch_report, report_markdown

    text = report_markdown(batch_report(stores.db, hostile_batch(stores, tmp_path)))
    html = rendered(text)
    assert "<a" not in html and "<img" not in html and "<b>" not in html and "<em>" not in html
    # The names are all there, as typed, and the tables keep their columns (the page the OCR
    # could not read is listed once, with its reason, among the refusals).
    assert html.count("[x](javascript:alert(1))|&lt;img src=x onerror=alert(1)&gt;.png") == 2
    assert "forms/*my* &lt;b&gt;form&lt;/b&gt;|x.yaml" in html
    shown = "in/\\[x\\](javascript:alert(1))\\|\\<img src=x onerror=alert(1)\\>.png"
    assert f"| {shown} | 1 | not read by the OCR | blank page: no ink found |" in text
    assert f"| in/sub/{shown[3:]} | all | file refused | not an image or a PDF (looks like" in text


def test_the_refits_artifact_keeps_a_hostile_template_name_as_text() -> None:
    from kerani.flows.quality import refits_markdown

    refit = {"template": f"forms/{HOSTILE_NAME}", "refitted": True, "fields": 3}
    refit["changes"] = "date: <script>alert(1)</script> [a](javascript:x)"
    html = rendered(refits_markdown([refit]))
    assert "<a" not in html and "<img" not in html and "<script>" not in html
    assert f"forms/{HOSTILE_NAME}".replace("<", "&lt;").replace(">", "&gt;") in html
    assert html.count("<td>") == 4  # one row of four cells: the '|' in the name is no border


def test_the_html_report_escapes_every_name(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from kerani.people.workers import add_person
    from kerani.review_ui.app import create_app
    from tests.factories import sign_in_with_code

    batch = hostile_batch(stores, tmp_path)
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(client, add_person(stores.db, "olivia", "operator"))
    page = client.get(f"/batches/{batch}/report")
    assert page.status_code == 200
    assert "<img src=x" not in page.text and "<b>form" not in page.text
    assert "[x](javascript:alert(1))|&lt;img src=x onerror=alert(1)&gt;.png" in page.text
    # The page lists what was not taken or not read, with why, as the Markdown report does.
    refused = page.text.split('id="refused"', 1)[1].split("</table>", 1)[0]
    assert "not read by the OCR</td><td>blank page: no ink found" in refused
    assert "file refused</td><td>not an image or a PDF (looks like" in refused


# --- what `kerani submit` shows ---------------------------------------------------------------


@pytest.mark.slow
@needs_poppler
def test_submit_names_each_refused_and_unread_page_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    from typer.testing import CliRunner

    from kerani.cli import app

    monkeypatch.setenv("KERANI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("KERANI_DB_URL", raising=False)
    monkeypatch.delenv("KERANI_BLOB_URL", raising=False)
    monkeypatch.setenv("KERANI_INGEST_MAX_PAGES_PER_FILE", "2")
    folder = tmp_path / "in"
    (folder / "a[").mkdir(parents=True)
    shutil.copy(RECEIPT / "000.jpg", folder / "receipt.jpg")
    (folder / "blank.png").write_bytes(blank_png())
    (folder / "frames.tif").write_bytes(tiff(260, (150, 150)))
    (folder / "notes.png").write_bytes(b"Dear sir,\n")
    (folder / HOSTILE_NAME).write_bytes(noise("PNG")[:500])
    (folder / "a[" / "bold]b.png").write_bytes(b"text")
    (folder / "esc\x1b]0;owned\x07.png").write_bytes(b"text")
    (folder / "new\nline.png").write_bytes(b"text")

    result = CliRunner().invoke(app, ["submit", str(folder), "--template", "receipt"])

    assert result.exit_code == 0, result.output
    assert result.exception is None
    lines = result.output.splitlines()  # Prefect's log lines and the bar come first
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("Batch ")) :]
    assert lines[0].startswith("Batch ") and lines[0].endswith(": 4 new pages")
    assert lines[1:-2] == [
        "rejected in/[x](javascript:alert(1))|<img src=x onerror=alert(1)>.png: cannot be "
        "decoded: image file is truncated",
        "rejected in/a[/bold]b.png: not an image or a PDF (looks like text)",
        "not read in/blank.png (page 1): blank page: no ink found",
        "rejected in/esc\\x1b]0;owned\\x07.png: not an image or a PDF (looks like text)",
        "not read in/frames.tif (page 1): blank page: no ink found",
        "not read in/frames.tif (page 2): blank page: no ink found",
        "rejected in/frames.tif (pages 3-260): not taken: the file has 260 pages and at most 2 "
        "are taken from one file (KERANI_INGEST_MAX_PAGES_PER_FILE); split it, or raise the "
        "limit and submit it again",
        "rejected in/new\\x0aline.png: not an image or a PDF (looks like text)",
        "rejected in/notes.png: not an image or a PDF (looks like text)",
        "3 files taken in, 5 refused; 258 pages not taken, 3 pages the OCR could not read",
    ]
    assert lines[-2].endswith(" sent to people")
    assert lines[-1].startswith("3 pages not read: fix the template or the scans, then")
    assert "\x1b" not in result.output  # nothing from a name reaches the terminal as control

    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "rejected in/frames.tif (pages 3-260): not taken" in status.output
    assert "rejected in/a[/bold]b.png: not an image" in status.output


# --- the text helpers behind the lines -----------------------------------------------------


def test_visible_writes_out_what_would_drive_a_terminal_or_reorder_text() -> None:
    assert visible("Resit — café.png") == "Resit — café.png"
    assert visible("a\x1b[2Jb\nc\td\u202egnp.exe\x7f") == (
        "a\\x1b[2Jb\\x0ac\\x09d\\u202egnp.exe\\x7f"
    )


def test_markdown_text_writes_out_control_characters_too() -> None:
    from kerani.records.report import markdown_text

    assert markdown_text("a\x1b[2J\u202eb") == "a\\\\x1b\\[2J\\\\u202eb"


@pytest.mark.parametrize(
    ("first", "last", "label"),
    [
        (3, 3, "a (page 3).pdf (page 3)"),
        (201, 1000, "a (page 3).pdf (pages 201-1000)"),
        (10001, None, "a (page 3).pdf (pages 10001 and later)"),
    ],
)
def test_a_pages_label_reads_back_even_when_the_name_looks_like_one(
    first: int, last: int | None, label: str
) -> None:
    from kerani.core.text import pages_label, split_pages_label

    assert pages_label("a (page 3).pdf", first, last) == label
    assert split_pages_label(label) == ("a (page 3).pdf", first, last)
    assert split_pages_label("a (page 3).pdf") is None
