"""Ground-truth datasets (read, write, SROIE conversion) and the synthetic form renderer."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from kerani.core.boxes import box_iou
from kerani.core.errors import BadInputError
from kerani.core.text import fold_whitespace
from kerani.evaluation.ground_truth import (
    TruthField,
    TruthPage,
    match_by_box,
    read_keys,
    read_truth,
    sroie_to_dataset,
    texts_match,
    with_keys,
    write_truth,
)
from kerani.evaluation.synthetic import fake_values, generate_dataset, render_form
from kerani.forms.templates import Template, load_template
from kerani.forms.validators import validate

SROIE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sroie"
NO_EFFECTS: dict[str, float] = {
    "noise": 0.0,
    "max_skew_deg": 0.0,
    "max_shift_frac": 0.0,
    "max_scale": 0.0,
}


@pytest.fixture(scope="module")
def form() -> Template:
    return load_template("bantuan_form")


def _blank_page(path: Path, size: tuple[int, int] = (200, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 255).save(path)


def _ink(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Dark pixels in `box`: how much text the box holds."""
    hist = image.crop(box).convert("L").histogram()
    return sum(hist[:128])


# ------------------------------------------------------------------------------ truth files


def test_truth_round_trip(tmp_path: Path) -> None:
    _blank_page(tmp_path / "pages" / "a.png")
    _blank_page(tmp_path / "pages" / "b.png")
    pages = [
        TruthPage(
            page="pages/a.png",
            fields=[
                TruthField("name", (1, 2, 150, 40), "SITI BINTI ISMAIL"),
                TruthField("note", (0, 50, 200, 100), 'quote " comma , ünïcode 中文'),
            ],
        ),
        TruthPage(page="pages/b.png", fields=[]),
    ]
    write_truth(tmp_path, pages)
    assert read_truth(tmp_path) == pages
    lines = (tmp_path / "truth.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["fields"][0] == {
        "name": "name",
        "box": [1, 2, 150, 40],
        "text": "SITI BINTI ISMAIL",
    }


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"page": "pages/a.png", "fields": [', "not valid JSON"),
        ('{"page": "pages/a.png"}', "missing key 'fields'"),
        ('{"page": "pages/a.png", "fields": [{"name": "x", "box": [0, 0, 5, 5]}]}', "'text'"),
        ('{"page": "pages/a.png", "fields": [{"name": "x", "box": [0, 0, 5], "text": ""}]}', "box"),
        (
            '{"page": "pages/a.png", "fields": [{"name": "x", "box": [9, 0, 5, 5], "text": ""}]}',
            "empty",
        ),
        (
            '{"page": "pages/a.png", "fields": [{"name": "x", "box": [0, 0, 500, 5], "text": ""}]}',
            "outside",
        ),
        ('{"page": "pages/missing.png", "fields": []}', "missing.png' not found"),
        ('{"page": "../etc/passwd", "fields": []}', "inside the dataset"),
        ('["pages/a.png"]', "expected an object"),
    ],
)
def test_malformed_truth_line_names_file_and_line(
    tmp_path: Path, second_line: str, message: str
) -> None:
    _blank_page(tmp_path / "pages" / "ok.png")
    _blank_page(tmp_path / "pages" / "a.png")
    good = '{"page": "pages/ok.png", "fields": [{"name": "x", "box": [0, 0, 5, 5], "text": "1"}]}'
    (tmp_path / "truth.jsonl").write_text(good + "\n" + second_line + "\n", encoding="utf-8")
    with pytest.raises(BadInputError) as err:
        read_truth(tmp_path)
    text = str(err.value)
    assert "truth.jsonl, line 2" in text
    assert message in text


def test_duplicate_page_and_missing_file_are_reported(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"truth\.jsonl not found"):
        read_truth(tmp_path)
    _blank_page(tmp_path / "pages" / "a.png")
    line = '{"page": "pages/a.png", "fields": []}'
    (tmp_path / "truth.jsonl").write_text(f"{line}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"line 3: page 'pages/a.png' already listed on line 1"):
        read_truth(tmp_path)


def test_text_comparison_folds_whitespace_only() -> None:
    assert fold_whitespace("  NO 12\tJALAN \n MERANTI  3 ") == "NO 12 JALAN MERANTI 3"
    assert texts_match("012-3456789 ", "012-3456789")
    assert not texts_match("012 - 3456789", "012-3456789")
    assert not texts_match("shah alam", "SHAH ALAM")


def test_box_iou_and_greedy_one_to_one_matching() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    truth = [
        TruthField("line_001", (0, 0, 100, 20), "A"),
        TruthField("line_002", (0, 30, 100, 50), "B"),
    ]
    # Predicted 0 overlaps line_001 a bit; predicted 1 overlaps it best and must win it.
    predicted = [(0, 5, 100, 25), (0, 0, 100, 21), (0, 31, 100, 50), (500, 500, 510, 510)]
    assert match_by_box(predicted, truth) == {1: 0, 2: 1}
    assert match_by_box(predicted, truth, min_iou=0.99) == {}


# ------------------------------------------------------------------------------------ SROIE


def test_sroie_conversion_of_real_receipts(tmp_path: Path) -> None:
    if not SROIE_DIR.is_dir():
        pytest.skip(f"SROIE data not found at {SROIE_DIR} (shared test data not installed)")
    out = tmp_path / "receipts"
    assert sroie_to_dataset(SROIE_DIR, out, ["000", "004"]) == 2
    pages = read_truth(out)  # also checks every box lies inside its image
    assert [p.page for p in pages] == ["pages/000.jpg", "pages/004.jpg"]
    assert (out / "pages" / "000.jpg").read_bytes() == (SROIE_DIR / "img" / "000.jpg").read_bytes()
    # 004.csv has CRLF line ends; both counts are the non-blank rows of the files.
    assert [len(p.fields) for p in pages] == [44, 61]
    first = pages[0].fields[0]
    assert first == TruthField("line_001", (72, 25, 326, 64), "TAN WOON YANN")
    # TEXT holds commas: only the first eight commas separate columns.
    fourth = pages[0].fields[3]
    assert fourth.name == "line_004"
    assert fourth.text == "NO.53 55,57 & 59, JALAN SAGU 18,"
    assert fourth.box == (110, 144, 383, 163)
    assert pages[1].fields[3].text == "LOT 1851-A & 1851-B, JALAN KPB 6,"
    # The key values go beside the boxed lines, by page, for the receipt's key fields.
    keys = read_keys(out)
    assert keys["pages/000.jpg"] == {
        "company": "BOOK TA .K (TAMAN DAYA) SDN BHD",
        "date": "25/12/2018",
        "total": "9.00",
    }
    scored = with_keys(pages, keys)
    assert [f.name for f in scored[0].fields[-3:]] == ["company", "date", "total"]
    assert len(scored[0].fields) == 44 + 3


def test_sroie_conversion_handles_bom_blank_lines_and_slanted_corners(tmp_path: Path) -> None:
    src = tmp_path / "sroie"
    _blank_page(src / "img" / "007.jpg", (300, 300))
    (src / "box").mkdir()
    rows = (
        "\ufeff10,20,110,25,108,45,8,40,TOTAL, RM 12.00\r\n\r\n  \n5,5,50,5,50,15,5,15,THANK YOU\n"
    )
    (src / "box" / "007.csv").write_text(rows, encoding="utf-8")
    out = tmp_path / "out"
    assert sroie_to_dataset(src, out) == 1
    (page,) = read_truth(out)
    assert page.fields == [
        TruthField("line_001", (8, 20, 110, 45), "TOTAL, RM 12.00"),
        TruthField("line_002", (5, 5, 50, 15), "THANK YOU"),
    ]
    (src / "box" / "007.csv").write_text(
        "1,2,3,4,5,6,7,8,A\n1,2,3,4,5,6,7,TEXT\n", encoding="utf-8"
    )
    with pytest.raises(BadInputError, match=r"007\.csv, line 2: expected x1,y1"):
        sroie_to_dataset(src, tmp_path / "out2")
    (src / "box" / "007.csv").write_text("1,2,3,4,5,6,7,x,TEXT\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"007\.csv, line 1: corner coordinates"):
        sroie_to_dataset(src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------- synthetic


def test_fake_values_pass_validators_and_ic_agrees_with_birth_date(form: Template) -> None:
    for seed in range(60):
        values = fake_values(form, random.Random(seed))
        assert set(values) == {f.name for f in form.fields}
        for f in form.fields:
            assert validate(f.type, values[f.name], f.pattern) is None, (seed, f.name, values)
        dd, mm, yyyy = values["date_of_birth"].split("/")
        assert values["ic_number"][:6] == yyyy[2:] + mm + dd
        assert values["full_name"] == values["full_name"].upper()


def test_rendering_is_deterministic_per_seed(form: Template) -> None:
    def render(seed: int) -> tuple[bytes, list[TruthField]]:
        rng = random.Random(seed)
        image, truth = render_form(form, fake_values(form, rng), rng)
        assert image.mode == "L"
        assert image.size == form.page_size
        return image.tobytes(), truth

    assert render(5) == render(5)
    assert render(5)[0] != render(6)[0]


def test_generate_dataset_is_readable_and_repeatable(form: Template, tmp_path: Path) -> None:
    assert generate_dataset(form, tmp_path / "a", 2, seed=11) == 2
    generate_dataset(form, tmp_path / "b", 2, seed=11)
    pages = read_truth(tmp_path / "a")
    assert [p.page for p in pages] == ["pages/form_001.png", "pages/form_002.png"]
    assert [f.name for f in pages[0].fields] == [f.name for f in form.fields]
    assert (tmp_path / "a" / "truth.jsonl").read_bytes() == (
        tmp_path / "b" / "truth.jsonl"
    ).read_bytes()
    for name in ("form_001.png", "form_002.png"):
        a = Image.open(tmp_path / "a" / "pages" / name)
        b = Image.open(tmp_path / "b" / "pages" / name)
        assert a.tobytes() == b.tobytes()


def test_clean_render_is_read_by_tesseract_where_the_truth_says(form: Template) -> None:
    pytesseract = pytest.importorskip("pytesseract")
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed (Debian package tesseract-ocr)")
    rng = random.Random(0)
    image, truth = render_form(form, fake_values(form, rng), rng, **NO_EFFECTS)
    assert len(truth) == 10
    read_right = []
    for f in truth:
        # A white margin round the crop, as Tesseract expects some paper around a line.
        crop = ImageOps.expand(image.crop(f.box), border=12, fill=255)
        got = pytesseract.image_to_string(crop, lang="eng", config="--psm 7")
        if texts_match(got, f.text):
            read_right.append(f.name)
    assert len(read_right) >= 8, f"only {read_right} read correctly"


def test_transformed_truth_boxes_follow_the_text(form: Template) -> None:
    values = fake_values(form, random.Random(3))
    clean, clean_truth = render_form(form, values, random.Random(5), **NO_EFFECTS)
    effects = {**NO_EFFECTS, "max_skew_deg": 3.0, "max_shift_frac": 0.04}
    scan, scan_truth = render_form(form, values, random.Random(5), **effects)
    assert [f.name for f in scan_truth] == [f.name for f in clean_truth]
    clean_boxes = {f.name: f.box for f in clean_truth}

    # The page really turned: the long address box grew by at least w * sin(2 degrees).
    addr_clean = clean_boxes["address"]
    addr_scan = next(f.box for f in scan_truth if f.name == "address")
    grown = (addr_scan[3] - addr_scan[1]) - (addr_clean[3] - addr_clean[1])
    assert grown >= (addr_clean[2] - addr_clean[0]) * math.sin(math.radians(2.0))

    ink_at_truth = ink_at_old_place = 0
    for f in scan_truth:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= scan.width and 0 <= y0 < y1 <= scan.height
        expected = _ink(clean, clean_boxes[f.name])
        found = _ink(scan, f.box)
        assert expected > 0
        assert found >= 0.9 * expected, f"{f.name}: truth box holds {found} of {expected} ink"
        ink_at_truth += found
        ink_at_old_place += _ink(scan, clean_boxes[f.name])
    # The untransformed boxes miss much of the text on the shifted, rotated page.
    assert ink_at_old_place < 0.6 * ink_at_truth


def test_large_shift_keeps_values_on_the_page(form: Template) -> None:
    for seed in range(3):
        rng = random.Random(seed)
        image, truth = render_form(
            form, fake_values(form, rng), rng, noise=0.3, max_shift_frac=0.2, max_skew_deg=1
        )
        assert len(truth) == len(form.fields)
        for f in truth:
            x0, y0, x1, y1 = f.box
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            assert _ink(image, f.box) > 0
