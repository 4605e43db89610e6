"""Ingest against hostile uploads: folders, zips, bombs, broken images, PDFs."""

from __future__ import annotations

import os
import shutil
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kerani.core.errors import BadInputError
from kerani.core.settings import IngestSettings
from kerani.ingest.pages import MAX_PAGES_VARIABLE, PageImage, RefusedPages, render_pages
from kerani.ingest.sources import RejectedFile, ScanFile, ScanSource, collect_scans

needs_pdftoppm = pytest.mark.skipif(
    shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed"
)


def make_limits(**overrides: Any) -> IngestSettings:
    """Every limit spelled out, so KERANI_INGEST_* in the environment can't leak in."""
    values: dict[str, Any] = {
        "max_file_bytes": 5 * 1024 * 1024,
        "max_zip_members": 100,
        "max_zip_total_bytes": 50 * 1024 * 1024,
        "max_zip_ratio": 200.0,
        "max_image_pixels": 80_000_000,
        "max_pages_per_file": 50,
        "pdf_dpi": 100,
        "pdf_timeout_s": 30.0,
    }
    values.update(overrides)
    return IngestSettings(**values)


def png_bytes(size: tuple[int, int] = (120, 160), color: str = "white") -> bytes:
    buf = BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def noise_png(size: tuple[int, int] = (200, 200)) -> bytes:
    buf = BytesIO()
    Image.effect_noise(size, 64).save(buf, "PNG")
    return buf.getvalue()


def assert_grey_png(page: PageImage) -> None:
    with Image.open(BytesIO(page.png)) as im:
        assert im.format == "PNG"
        assert im.mode == "L"
        assert im.size == (page.width, page.height)


def names(items: list[ScanSource] | list[RejectedFile]) -> list[str]:
    return [i.name for i in items]


def reason_of(rejected: list[RejectedFile], name: str) -> str:
    matches = [r.reason for r in rejected if r.name == name]
    assert matches, f"{name} not rejected; rejected: {rejected}"
    return matches[0]


# --- collect_scans: folders -------------------------------------------------------------


def test_folder_walk_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    root = tmp_path / "batch"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.png").write_bytes(png_bytes())
    (root / "a.png").write_bytes(png_bytes())
    (root / "sub" / "deeper" / "c.png").write_bytes(png_bytes())
    (root / "sub" / "note.txt").write_bytes(b"hello")
    (root / ".hidden.png").write_bytes(png_bytes())
    (root / ".git" / "d.png").write_bytes(png_bytes())
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    (root / "escape.png").symlink_to(outside)
    (root / "alias.png").symlink_to(root / "a.png")
    (root / "loop").symlink_to(root)

    scans, rejected = collect_scans([root], make_limits())

    assert names(scans) == [
        "batch/a.png",
        "batch/alias.png",
        "batch/b.png",
        "batch/sub/deeper/c.png",
        "batch/sub/note.txt",
    ]
    assert scans[0].read().data == png_bytes()
    assert "outside" in reason_of(rejected, "batch/escape.png")
    assert names(rejected) == ["batch/escape.png"]
    # Deterministic: a second run gives exactly the same answer.
    assert collect_scans([root], make_limits()) == (scans, rejected)


def test_missing_path_is_reported_not_raised(tmp_path: Path) -> None:
    scans, rejected = collect_scans([tmp_path / "nope.png"], make_limits())
    assert scans == []
    assert rejected == [RejectedFile("nope.png", "does not exist")]


def test_file_over_size_limit_is_refused_with_size_and_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes())

    scans, rejected = collect_scans([big, small], make_limits(max_file_bytes=1500))

    assert names(scans) == ["small.png"]
    reason = reason_of(rejected, "big.png")
    assert "2,008 bytes" in reason
    assert "1,500 bytes" in reason


# --- collect_scans: zips ----------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            # ZipInfo keeps the name exactly as given, even '/abs.png' or '../evil.png'.
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)


def test_zip_rejects_unsafe_member_paths_by_name_and_keeps_good_ones(tmp_path: Path) -> None:
    archive = tmp_path / "scans.zip"
    write_zip(
        archive,
        {
            "forms/b.png": png_bytes(),
            "../evil.png": png_bytes(),
            "/abs.png": png_bytes(),
            "C:/windows.png": png_bytes(),
            "forms/..\\..\\sneaky.png": png_bytes(),
            "forms/a.png": png_bytes(),
            "inner.zip": b"PK\x03\x04 not expanded",
            "__MACOSX/forms/._a.png": b"resource fork",
        },
    )

    scans, rejected = collect_scans([archive], make_limits())

    assert names(scans) == ["scans.zip!forms/a.png", "scans.zip!forms/b.png"]
    assert scans[0].read().data == png_bytes()
    assert "'..'" in reason_of(rejected, "scans.zip!../evil.png")
    assert "absolute" in reason_of(rejected, "scans.zip!/abs.png")
    assert "drive letter" in reason_of(rejected, "scans.zip!C:/windows.png")
    assert "'..'" in reason_of(rejected, "scans.zip!forms/../../sneaky.png")
    assert "nested zip" in reason_of(rejected, "scans.zip!inner.zip")
    assert len(rejected) == 5


def test_zip_inside_a_folder_is_read(tmp_path: Path) -> None:
    root = tmp_path / "batch"
    root.mkdir()
    write_zip(root / "more.zip", {"x.png": png_bytes()})
    scans, rejected = collect_scans([root], make_limits())
    assert names(scans) == ["batch/more.zip!x.png"]
    assert rejected == []


def test_zip_bomb_is_refused_with_its_ratio(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    write_zip(archive, {"page.png": bytes(20 * 1024 * 1024), "ok.png": png_bytes()})

    scans, rejected = collect_scans([archive], make_limits(max_zip_ratio=100.0))

    assert scans == []  # the whole archive is refused, good members included
    reason = reason_of(rejected, "bomb.zip")
    assert "ratio" in reason
    assert "page.png" in reason


def test_zip_with_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    write_zip(archive, {f"p{i:02d}.png": png_bytes() for i in range(12)})
    scans, rejected = collect_scans([archive], make_limits(max_zip_members=10))
    assert scans == []
    assert "12 members" in reason_of(rejected, "many.zip")


def test_zip_over_declared_total_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "total.zip"
    # Small on disk, 200,000 bytes once unpacked; each member alone is under every limit.
    write_zip(archive, {"a.bmp": bytes(100_000), "b.bmp": bytes(100_000)})
    scans, rejected = collect_scans([archive], make_limits(max_zip_total_bytes=150_000))
    assert scans == []
    assert "200,000 bytes uncompressed" in reason_of(rejected, "total.zip")


def test_zip_member_over_file_limit_is_refused_by_name(tmp_path: Path) -> None:
    archive = tmp_path / "s.zip"
    write_zip(archive, {"big.png": noise_png((400, 400)), "small.png": png_bytes()})
    scans, rejected = collect_scans([archive], make_limits(max_file_bytes=50_000))
    assert names(scans) == ["s.zip!small.png"]
    assert "over the limit of 50,000 bytes" in reason_of(rejected, "s.zip!big.png")


def test_zip_member_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    # A stored member of 300,000 bytes whose headers claim 1,000: a reader trusting the
    # declared size would accept it; we must not get 300 KB (or a silently cut file) back.
    data = noise_png((600, 500))
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("liar.png", data)
    raw = bytearray(archive.read_bytes())
    assert raw[:4] == b"PK\x03\x04"
    raw[22:26] = struct.pack("<I", 1000)  # local header: uncompressed size
    central = raw.index(b"PK\x01\x02")
    raw[central + 24 : central + 28] = struct.pack("<I", 1000)
    archive.write_bytes(bytes(raw))

    scans, rejected = collect_scans([archive], make_limits(max_file_bytes=100_000))

    assert scans == []
    assert "liar.zip!liar.png" in names(rejected)


def test_damaged_zip_is_rejected_not_raised(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip")
    scans, rejected = collect_scans([archive], make_limits())
    assert scans == []
    assert "not a readable zip" in reason_of(rejected, "broken.zip")


def test_a_repeated_member_name_takes_the_first_and_reads_back_its_bytes(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "twice.zip"
    first, second = png_bytes(color="red"), png_bytes(color="blue")
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate
        zf.writestr("a.png", first)
        zf.writestr("a.png", second)
    scans, rejected = collect_scans([archive], make_limits())
    assert [s.read().data for s in scans] == [first]
    assert rejected == [RejectedFile("twice.zip!a.png", "duplicate name in zip")]


# --- collect_scans: nothing held in memory ----------------------------------------------


def test_collecting_a_folder_keeps_no_file_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(12):
        (folder / f"scan{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2 << 20))
    tracemalloc.start()
    try:
        scans, rejected = collect_scans([folder], make_limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(scans), rejected) == (12, [])
    assert peak < 8 << 20  # a chunk or two, not 24 MB of scans
    assert scans[3].read().data == (folder / "scan03.png").read_bytes()


def test_a_file_changed_after_collecting_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes())
    archive = tmp_path / "s.zip"
    write_zip(archive, {"b.png": png_bytes()})
    (scan, member), _ = collect_scans([path, archive], make_limits())
    path.write_bytes(png_bytes(color="black"))
    write_zip(archive, {"b.png": png_bytes(color="black")})
    with pytest.raises(BadInputError, match=r"^a\.png: changed while the batch was being read"):
        scan.read()
    with pytest.raises(BadInputError, match=r"^s\.zip!b\.png: changed while the batch was"):
        member.read()


# --- render_pages: bad images -----------------------------------------------------------


def test_truncated_png_is_rejected_naming_the_file() -> None:
    data = noise_png()
    scan = ScanFile("batch/cut.png", data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"^batch/cut\.png: cannot be decoded"):
        render_pages(scan, make_limits())


def test_truncated_jpeg_fails_at_ingest(tmp_path: Path) -> None:
    buf = BytesIO()
    Image.effect_noise((300, 300), 64).save(buf, "JPEG")
    scan = ScanFile("cut.jpg", buf.getvalue()[:3000])
    with pytest.raises(BadInputError, match=r"^cut\.jpg: cannot be decoded"):
        render_pages(scan, make_limits())


def test_text_file_named_png_is_rejected_by_content() -> None:
    scan = ScanFile("batch/notes.png", b"Dear sir,\nplease find attached...\n")
    with pytest.raises(BadInputError) as info:
        render_pages(scan, make_limits())
    message = str(info.value)
    assert message.startswith("batch/notes.png: not an image or a PDF")
    assert "looks like text" in message


def test_unknown_binary_says_how_it_starts() -> None:
    with pytest.raises(BadInputError, match="starts with bytes 4d 5a 90 00"):
        render_pages(ScanFile("setup.tif", b"MZ\x90\x00\x03\x00\x00\x00\x04"), make_limits())


def patched_png(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims another size (CRC fixed so Pillow believes it)."""
    data = bytearray(png_bytes((60, 60)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_png_declaring_30000_squared_is_refused_without_decoding() -> None:
    scan = ScanFile("bomb.png", patched_png(30000, 30000))
    with pytest.raises(BadInputError) as info:
        render_pages(scan, make_limits())
    message = str(info.value)
    assert message.startswith("bomb.png: image is too large")
    assert "cannot be decoded" not in message  # refused on the header, not while decoding


def test_png_in_pillows_warning_band_is_refused() -> None:
    # 100 M pixels: above Pillow's warning threshold, below its hard error.
    scan = ScanFile("warn.png", patched_png(10000, 10000))
    with pytest.raises(BadInputError, match="too large"):
        render_pages(scan, make_limits(max_image_pixels=200_000_000))


def test_own_pixel_limit_applies_before_decoding() -> None:
    scan = ScanFile("large.png", patched_png(1000, 1000))
    with pytest.raises(BadInputError, match=r"large\.png: image is too large: 1000 x 1000"):
        render_pages(scan, make_limits(max_image_pixels=500_000))


def test_tiny_image_is_not_a_page() -> None:
    with pytest.raises(BadInputError, match="too small to be a document page"):
        render_pages(ScanFile("icon.png", png_bytes((20, 300))), make_limits())


# --- render_pages: good images ----------------------------------------------------------


def test_png_becomes_one_greyscale_page() -> None:
    pages = render_pages(ScanFile("a.png", png_bytes((120, 160), "red")), make_limits()).pages
    assert [(p.index, p.width, p.height) for p in pages] == [(0, 120, 160)]
    assert_grey_png(pages[0])


def test_transparent_png_turns_white_not_black() -> None:
    buf = BytesIO()
    Image.new("RGBA", (80, 80), (0, 0, 0, 0)).save(buf, "PNG")
    (page,) = render_pages(ScanFile("clear.png", buf.getvalue()), make_limits()).pages
    with Image.open(BytesIO(page.png)) as im:
        assert im.getextrema() == (255, 255)


def multi_page_tiff(count: int) -> bytes:
    frames = [Image.new("L", (100, 150), 40 * i) for i in range(count)]
    buf = BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def test_multi_page_tiff_gives_every_page() -> None:
    pages = render_pages(ScanFile("forms.tif", multi_page_tiff(3)), make_limits()).pages
    assert [p.index for p in pages] == [0, 1, 2]
    for i, page in enumerate(pages):
        assert (page.width, page.height) == (100, 150)
        assert_grey_png(page)
        with Image.open(BytesIO(page.png)) as im:
            assert im.getpixel((5, 5)) == 40 * i


def test_multi_page_tiff_over_the_page_limit_names_the_pages_not_taken() -> None:
    rendered = render_pages(
        ScanFile("forms.tif", multi_page_tiff(3)), make_limits(max_pages_per_file=2)
    )
    assert [p.index for p in rendered.pages] == [0, 1]
    assert rendered.refused == [
        RefusedPages(
            3,
            3,
            "not taken: the file has 3 pages and at most 2 are taken from one file "
            "(KERANI_INGEST_MAX_PAGES_PER_FILE); split it, or raise the limit and submit it "
            "again",
        )
    ]
    assert rendered.refused[0].label("forms.tif") == "forms.tif (page 3)"


def test_a_bad_tiff_page_is_refused_by_number_and_the_others_kept() -> None:
    frames = [Image.new("L", (100, 150), 255), Image.new("L", (100, 20), 0)]
    frames.append(Image.new("L", (100, 150), 0))
    buf = BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    rendered = render_pages(ScanFile("forms.tif", buf.getvalue()), make_limits())
    assert [p.index for p in rendered.pages] == [0, 2]
    assert rendered.refused == [
        RefusedPages(2, 2, "too small to be a document page (100 x 20 pixels)")
    ]


def test_a_one_page_tiff_with_a_bad_page_is_refused_as_a_file() -> None:
    buf = BytesIO()
    Image.new("L", (100, 20), 0).save(buf, "TIFF")
    with pytest.raises(BadInputError, match=r"^strip\.tif: too small to be a document page"):
        render_pages(ScanFile("strip.tif", buf.getvalue()), make_limits())


def test_the_page_limit_is_read_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MAX_PAGES_VARIABLE, "7")
    assert IngestSettings().max_pages_per_file == 7


def test_jpeg_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = BytesIO()
    Image.new("RGB", (200, 100), "white").save(buf, "JPEG", exif=exif)
    (page,) = render_pages(ScanFile("photo.jpg", buf.getvalue()), make_limits()).pages
    assert (page.width, page.height) == (100, 200)
    assert_grey_png(page)


def test_type_is_sniffed_not_taken_from_the_extension() -> None:
    buf = BytesIO()
    Image.new("RGB", (90, 90), "white").save(buf, "JPEG")
    (page,) = render_pages(ScanFile("misnamed.pdf", buf.getvalue()), make_limits()).pages
    assert (page.width, page.height) == (90, 90)


# --- render_pages: PDFs -----------------------------------------------------------------


@needs_pdftoppm
def test_pdf_gives_one_greyscale_page_per_page(tmp_path: Path) -> None:
    first = Image.new("RGB", (300, 400), "white")
    second = Image.new("RGB", (300, 400), "blue")
    path = tmp_path / "two.pdf"
    first.save(path, "PDF", save_all=True, append_images=[second], resolution=100)

    pages = render_pages(ScanFile("two.pdf", path.read_bytes()), make_limits(pdf_dpi=100)).pages

    assert [p.index for p in pages] == [0, 1]
    for page in pages:
        assert abs(page.width - 300) <= 1
        assert abs(page.height - 400) <= 1
        assert_grey_png(page)
    with Image.open(BytesIO(pages[0].png)) as a, Image.open(BytesIO(pages[1].png)) as b:
        assert a.getextrema() == (255, 255)  # white page...
        _, lightest = b.getextrema()
        assert isinstance(lightest, int) and lightest < 128  # ...then a blue one, dark in grey


@needs_pdftoppm
def test_pdf_pages_over_the_limit_are_named_not_dropped(tmp_path: Path) -> None:
    frames = [Image.new("L", (100, 100), 255) for _ in range(4)]
    path = tmp_path / "four.pdf"
    frames[0].save(path, "PDF", save_all=True, append_images=frames[1:], resolution=100)
    rendered = render_pages(
        ScanFile("four.pdf", path.read_bytes()), make_limits(max_pages_per_file=2)
    )
    assert [p.index for p in rendered.pages] == [0, 1]
    (rest,) = rendered.refused
    assert (rest.label("four.pdf"), rest.reason) == (
        "four.pdf (pages 3-4)",
        "not taken: the file has 4 pages and at most 2 are taken from one file "
        "(KERANI_INGEST_MAX_PAGES_PER_FILE); split it, or raise the limit and submit it again",
    )


@needs_pdftoppm
def test_broken_pdf_is_bad_input() -> None:
    scan = ScanFile("batch/broken.pdf", b"%PDF-1.4\n% nothing else here\n")
    with pytest.raises(BadInputError, match=r"^batch/broken\.pdf: not a readable PDF"):
        render_pages(scan, make_limits())


@needs_pdftoppm
def test_pdf_with_a_giant_page_is_refused_not_rendered(tmp_path: Path) -> None:
    # 2000 x 2000 inches: 200,000 px a side at 100 dpi if pdftoppm were allowed to try.
    path = tmp_path / "poster.pdf"
    Image.new("1", (2000, 2000), 1).save(path, "PDF", resolution=1)
    with pytest.raises(BadInputError, match=r"^poster\.pdf: too large: at 100 dpi it would exc"):
        render_pages(
            ScanFile("poster.pdf", path.read_bytes()), make_limits(max_image_pixels=1_000_000)
        )
