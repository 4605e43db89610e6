"""`kerani dataset degrade`: low-resolution copies of a dataset, and text-size estimation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kerani.cli import app
from kerani.evaluation.ground_truth import read_truth
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from kerani.ocr.cleanup import SCALE_BELOW_PX, TARGET_TEXT_PX, text_height, text_scale


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forms")
    generate_dataset(load_template("bantuan_form"), out, count=2, seed=5)
    return out


def test_a_degraded_copy_scales_pages_and_truth_alike(forms: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "dataset",
            "degrade",
            str(forms),
            str(tmp_path / "low"),
            "--scale",
            "0.5",
            "--jpeg-quality",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    before, after = read_truth(forms), read_truth(tmp_path / "low")
    assert [p.page.replace(".png", ".jpg") for p in before] == [p.page for p in after]
    for old, new in zip(before, after, strict=True):
        with Image.open(forms / old.page) as a, Image.open(tmp_path / "low" / new.page) as b:
            assert b.format == "JPEG" and b.size == (round(a.width / 2), round(a.height / 2))
        for f, g in zip(old.fields, new.fields, strict=True):
            assert (f.name, f.text) == (g.name, g.text)
            # The box follows the page and still holds its text (rounded outwards).
            assert g.box[0] <= f.box[0] / 2 and g.box[2] >= f.box[2] / 2
            assert g.box[1] <= f.box[1] / 2 and g.box[3] >= f.box[3] / 2


def test_a_faxed_copy_is_one_bit(forms: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dataset", "degrade", str(forms), str(tmp_path), "--fax"])
    assert result.exit_code == 0, result.output
    page = read_truth(tmp_path)[0]
    with Image.open(tmp_path / page.page) as im:
        assert set(np.unique(np.asarray(im))) <= {0, 255}


def test_degrade_refuses_a_bad_scale_in_one_line(forms: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["dataset", "degrade", str(forms), str(tmp_path), "--scale", "2"]
    )
    assert result.exit_code != 0
    assert "--scale must be between 0.05 and 1, not 2.0" in result.output
    assert "Traceback" not in result.output


def test_text_height_follows_the_scan_and_small_text_is_scaled_to_the_target(
    forms: Path,
) -> None:
    page = read_truth(forms)[0]
    with Image.open(forms / page.page) as im:
        grey = im.convert("L")
    full = text_height(grey)
    half = text_height(grey.resize((grey.width // 2, grey.height // 2), Image.Resampling.BOX))
    assert 12 <= full <= 40 and abs(half - full / 2) <= 2
    small = grey.resize((grey.width * 6 // 10, grey.height * 6 // 10), Image.Resampling.BOX)
    scale = text_scale(small)
    assert text_height(small) < SCALE_BELOW_PX and scale > 1
    grown = small.resize((round(small.width * scale), round(small.height * scale)))
    assert abs(text_height(grown) - TARGET_TEXT_PX) <= 3
    # Big text is left as it is.
    large = grey.resize((grey.width * 2, grey.height * 2))
    assert text_scale(large) == 1.0
    assert text_height(Image.new("L", (400, 400), 255)) == 0.0
