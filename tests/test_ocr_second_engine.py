"""The optional second OCR engine: its agreement as evidence, and a clear error when absent."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import pytest
from PIL import Image, ImageDraw

from kerani.core.errors import BadInputError, MissingDependencyError
from kerani.ocr import stage
from kerani.ocr.calibration import Sample, fit_calibration, without_second_engine
from kerani.ocr.cleanup import PreparedPage
from kerani.ocr.engine import Box, NullEngine, Word
from kerani.ocr.geometry import Affine
from kerani.ocr.second_engine import second_engine
from kerani.ocr.stage import PageRead, Region, StageOptions, read_regions, same_text


class FakeReader:
    """A second engine that reads a fixed text for each box, in order."""

    name = "fake"

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.asked: list[Box] = []

    def read_lines(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """Return the next fixed texts, one per box."""
        self.asked.extend(boxes)
        return [(self.texts.pop(0), 90.0) for _ in boxes]


def _page(words: list[Word]) -> PageRead:
    image = Image.new("L", (600, 200), 255)
    draw = ImageDraw.Draw(image)
    for w in words:
        draw.rectangle(w.box, fill=0)  # ink exactly under each word: nothing unread
    return PageRead(PreparedPage(image, Affine(), image.size), words)


def test_agreement_and_disagreement_are_recorded_as_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    words = [
        Word("Total", (10, 10, 100, 40), 91.0, (1, 1, 1)),
        Word("12.50", (10, 60, 100, 90), 93.0, (1, 1, 2)),
        Word("Cashier", (10, 110, 100, 140), 94.0, (1, 1, 3)),
        Word("smudge", (10, 160, 100, 190), 30.0, (1, 1, 4)),
    ]
    regions = [Region(f"line_{i}", "line", w.box) for i, w in enumerate(words)]
    reader = FakeReader(["TOTAL", "12.50", "Cashlor"])
    monkeypatch.setattr(stage, "second_engine", lambda name: reader if name else None)
    options = StageOptions(second_engine="x", second_above=60.0)
    reads = read_regions(_page(words), regions, NullEngine(words), options)
    assert [r.evidence for r in reads] == [
        "page-2agree",  # letter case aside, the same text
        "page-num-2agree",
        "page-2differ",
        "page",  # below second_above: not worth the second engine's time
    ]
    assert len(reader.asked) == 3
    # Without a second engine nothing is tagged and nothing else changes.
    alone = read_regions(_page(words), regions, NullEngine(words), StageOptions(second_engine=""))
    assert [r.evidence for r in alone] == ["page", "page-num", "page", "page"]
    # Where the two differ the text is their vote: the second engine's, weighted up.
    assert [r.text for r in reads] == ["Total", "12.50", "Cashlor", "smudge"]
    assert [r.text for r in alone] == ["Total", "12.50", "Cashier", "smudge"]


def test_by_default_the_second_engine_reads_the_doubtful_fields_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    words = [
        Word("Total", (10, 10, 100, 40), 96.0, (1, 1, 1)),  # sure: not worth a reading
        Word("srnudge", (10, 60, 100, 90), 30.0, (1, 1, 2)),
        Word("12/0S/2019", (10, 110, 200, 140), 97.0, (1, 1, 3)),  # sure, but invalid
    ]
    regions = [
        Region(f"f{i}", kind, w.box)
        for i, (w, kind) in enumerate(zip(words, ["line", "line", "date"], strict=True))
    ]
    reader = FakeReader(["smudge", "12/05/2019"])
    monkeypatch.setattr(stage, "second_engine", lambda name: reader if name else None)
    reads = read_regions(_page(words), regions, NullEngine(words), StageOptions(second_engine="x"))
    assert reader.asked == [words[1].box, words[2].box]
    assert [(r.text, r.evidence) for r in reads] == [
        ("Total", "page"),
        ("smudge", "page-2differ"),
        ("12/05/2019", "page-2differ"),
    ]


def test_typed_fields_are_not_tagged_as_figures() -> None:
    words = [Word("12/03/2019", (10, 10, 200, 40), 96.0, (1, 1, 1))]
    reads = read_regions(
        _page(words),
        [Region("dob", "date", words[0].box)],
        NullEngine(words),
        StageOptions(second_engine=""),
    )
    assert reads[0].evidence == "page"


def test_same_text_ignores_case_and_spacing_runs_only() -> None:
    assert same_text("Jalan  Ampang", "JALAN AMPANG ")
    assert not same_text("TOTAL:", "TOTAL :")
    assert not same_text("7.42", "742")


def test_one_rule_serves_deployments_with_and_without_the_second_engine() -> None:
    assert without_second_engine("page-ink-2agree") == "page-ink"
    assert without_second_engine("disagree-2differ") == "disagree"
    assert without_second_engine("page-num") == "page-num"
    # Agreement makes a group safe that confidence alone does not.
    rng = random.Random(5)
    samples = []
    for _ in range(1500):
        conf = rng.uniform(60, 100)
        agree = rng.random() < 0.8
        correct = agree or rng.random() < 0.5
        evidence = "page-2agree" if agree else "page-2differ"
        samples.append(Sample("line", evidence, conf, True, correct))
        samples.append(Sample("line", without_second_engine(evidence), conf, True, correct))
    cal = fit_calibration(samples, "t", target=0.995)
    assert cal.accepts("line", "page-2agree", 70.0, True)
    assert not cal.accepts("line", "page-2differ", 99.0, True)
    assert not cal.accepts("line", "page", 99.0, True)


def test_unknown_or_missing_second_engine_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert second_engine("") is None
    with pytest.raises(BadInputError, match="unknown second OCR engine"):
        second_engine("abbyy")
    from kerani.ocr import rapid

    # None in sys.modules makes the import fail, as when the extra is not installed.
    monkeypatch.setitem(sys.modules, "rapidocr", None)
    with pytest.raises(MissingDependencyError, match="KERANI_OCR_SECOND_ENGINE=''"):
        rapid.RapidOcrEngine()


def test_rapidocr_reads_a_printed_line() -> None:
    from PIL import ImageFont

    from kerani.ocr.rapid import RapidOcrEngine

    image = Image.new("L", (700, 200), 255)
    font = ImageFont.load_default(size=40)
    ImageDraw.Draw(image).text((20, 60), "JALAN AMPANG 50450", fill=0, font=font)
    engine = RapidOcrEngine()
    ((text, conf),) = engine.read_lines(image, [(10, 50, 600, 120)])
    assert same_text(text, "JALAN AMPANG 50450"), text
    assert 0 < conf <= 100
    assert engine.read_lines(image, []) == []
    page_words = engine.read_page(image)
    assert " ".join(w.text for w in page_words).replace(" ", "") == "JALANAMPANG50450"
