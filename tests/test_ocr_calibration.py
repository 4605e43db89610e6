"""Calibrated auto-accept rules: fitted on one part of the data, checked on another."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from kerani.core.errors import BadInputError
from kerani.ocr.calibration import (
    Sample,
    engine_label,
    error_upper_bound,
    fit_calibration,
    load_calibration,
    read_calibration,
    save_calibration,
)


def _samples(n: int, seed: int) -> list[Sample]:
    """Fields whose chance of being right rises with confidence, sooner when engines agree."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        evidence = rng.choice(("page", "agree", "disagree"))
        conf = rng.uniform(0, 100)
        middle = {"page": 62.0, "agree": 50.0, "disagree": 90.0}[evidence]
        p_right = 1 / (1 + math.exp(-(conf - middle) / 6))
        kind = rng.choice(("line", "date"))
        valid = rng.random() > 0.05
        out.append(Sample(kind, evidence, conf, valid=valid, correct=rng.random() < p_right))
    return out


def test_the_fitted_rule_reaches_its_target_on_held_out_data() -> None:
    cal = fit_calibration(_samples(20_000, 1), template="t", target=0.995)
    held = _samples(20_000, 2)
    accepted = [s for s in held if cal.accepts(s.kind, s.evidence, s.confidence, s.valid)]
    assert len(accepted) > 0.03 * len(held)  # it does accept something ...
    accuracy = sum(s.correct for s in accepted) / len(accepted)
    assert accuracy >= 0.995  # ... and what it accepts is right often enough
    # Disagreeing engines never get a floor with this data.
    rule = cal.rule_for("line", "disagree")
    assert rule is not None and rule.min_confidence is None


def test_invalid_and_uncalibrated_fields_are_never_accepted() -> None:
    cal = fit_calibration(_samples(5000, 3), template="t", target=0.99)
    assert not cal.accepts("line", "agree", 100.0, valid=False)
    assert cal.rule_for("line", "reocr") is None  # no data with that evidence
    assert not cal.accepts("line", "reocr", 100.0, valid=True)


def test_small_samples_are_not_trusted() -> None:
    perfect = [Sample("line", "page", 99.0, True, True)] * 50
    # 50 right out of 50 does not prove 99.5%: the bound on the error is still too high.
    assert error_upper_bound(0, 50, 1.0) > 0.005
    rule = fit_calibration(perfect, template="t").rule_for("line", "page")
    assert rule is not None and rule.min_confidence is None


def test_calibrations_round_trip_and_bad_files_are_named(tmp_path: Path) -> None:
    cal = fit_calibration(_samples(3000, 4), template="mine", target=0.99)
    save_calibration(cal, tmp_path / "mine.json")
    assert load_calibration("mine", tmp_path) == cal
    assert read_calibration(tmp_path / "mine.json") == cal
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"bad\.json"):
        load_calibration("bad", tmp_path)
    assert load_calibration("no_such_template", tmp_path) is None
    with pytest.raises(BadInputError):
        fit_calibration([], template="t", target=1.5)


def test_bundled_calibrations_load() -> None:
    for name in ("bantuan_form", "receipt"):
        cal = load_calibration(name)
        assert cal is not None and cal.target == 0.995


def test_the_record_label_joins_engine_and_evidence() -> None:
    assert engine_label("tesseract-5.3.0", "agree-ink") == "tesseract-5.3.0+agree-ink"
    assert engine_label("tesseract-5.3.0", "page") == "tesseract-5.3.0"
