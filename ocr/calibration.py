"""Calibrated auto-accept rules: fitted on fields with ground truth to a target accuracy.

A field's evidence is its type, how its text was obtained (`page`: page OCR only; `agree`:
the field re-OCR read the same; `reocr`: only the re-OCR read something; `disagree`: the two
differed; with `-ink` appended when ink beside or inside the field went unread, `-num` when
a free-text field is all figures, and `-2agree` or `-2differ` when the optional second
engine read it too), whether it passes its validator, and its confidence. For each (type, evidence)
group the fit picks the lowest confidence floor whose accepted fields are, on the
calibration data, at least `target` correct with a safety margin: the one-sided 95%
Wilson upper bound of the error rate (z = 1.64), not the raw rate, because picking the
lowest floor that looks good on one sample overrates it (measured on held-out data).
Groups with too little data share one pooled rule per evidence; groups no floor can make
safe never auto-accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kerani.core.errors import BadInputError
from kerani.core.stats import wilson_interval

BUNDLED_CALIBRATIONS = Path(__file__).parent / "calibrations"
EVIDENCE = ("page", "agree", "reocr", "disagree")
POOLED = "*"


@dataclass(frozen=True)
class Sample:
    """One field with truth: its evidence and whether its OCR text was right."""

    kind: str
    evidence: str
    confidence: float
    valid: bool
    correct: bool


class GroupRule(BaseModel):
    """The floor for one (type, evidence) group; `min_confidence` None means never accept."""

    min_confidence: float | None
    samples: int
    accepted: int
    errors: int


class Calibration(BaseModel):
    """The auto-accept rule of one template or document type, as stored in JSON."""

    template: str
    target: float
    z: float
    case_sensitive: bool = True
    fitted_on: str = ""
    rules: dict[str, GroupRule]

    def rule_for(self, kind: str, evidence: str) -> GroupRule | None:
        """The rule of a group, or the pooled rule of its evidence, or None (uncalibrated)."""
        return self.rules.get(f"{kind}|{evidence}") or self.rules.get(f"{POOLED}|{evidence}")

    def accepts(self, kind: str, evidence: str, confidence: float, valid: bool) -> bool:
        """True when the calibrated rule auto-accepts a field with this evidence."""
        rule = self.rule_for(kind, evidence)
        if rule is None or rule.min_confidence is None or not valid:
            return False
        return confidence >= rule.min_confidence


SECOND_TAGS = ("-2agree", "-2differ")


def without_second_engine(evidence: str) -> str:
    """The evidence a deployment without the second engine would have recorded."""
    for tag in SECOND_TAGS:
        evidence = evidence.removesuffix(tag)
    return evidence


def engine_label(engine_name: str, evidence: str) -> str:
    """A record's `ocr_engine`: the engine and, after '+', the evidence (none for `page`)."""
    return f"{engine_name}+{evidence}" if evidence != "page" else engine_name


def error_upper_bound(errors: int, n: int, z: float) -> float:
    """Wilson score upper bound of an error rate seen as errors/n (z standard deviations)."""
    return wilson_interval(errors, n, z)[1]


def _fit_group(samples: Sequence[Sample], target: float, z: float, min_samples: int) -> GroupRule:
    usable = sorted((s for s in samples if s.valid), key=lambda s: -s.confidence)
    best: float | None = None
    best_n = errors_at_best = 0
    errors = 0
    for i, s in enumerate(usable):
        errors += 0 if s.correct else 1
        n = i + 1
        # Only cut between distinct confidences: equal scores cannot be told apart.
        if i + 1 < len(usable) and usable[i + 1].confidence == s.confidence:
            continue
        if n >= min_samples and error_upper_bound(errors, n, z) <= 1 - target:
            best, best_n, errors_at_best = s.confidence, n, errors
    return GroupRule(
        min_confidence=best, samples=len(samples), accepted=best_n, errors=errors_at_best
    )


def _clearly_worse(group: Sequence[Sample], floor: float, target: float, z: float) -> bool:
    accepted = [s for s in group if s.valid and s.confidence >= floor]
    if not accepted:
        return False
    errors = sum(1 for s in accepted if not s.correct)
    # Wilson lower bound of the error rate: even optimistically above what the target allows.
    return wilson_interval(errors, len(accepted), z)[0] > 1 - target


def fit_calibration(
    samples: Iterable[Sample],
    template: str,
    target: float = 0.995,
    z: float = 1.64,
    min_samples: int = 40,
    case_sensitive: bool = True,
    fitted_on: str = "",
) -> Calibration:
    """Fit a floor per (type, evidence) group, pooling small groups, to reach `target`."""
    if not 0.5 <= target < 1:
        raise BadInputError(f"target accuracy must be between 0.5 and 1, not {target}")
    data = list(samples)
    rules: dict[str, GroupRule] = {}
    for evidence in sorted({s.evidence for s in data}):
        of_evidence = [s for s in data if s.evidence == evidence]
        if not of_evidence:
            continue
        pooled = _fit_group(of_evidence, target, z, min_samples)
        rules[f"{POOLED}|{evidence}"] = pooled
        for kind in sorted({s.kind for s in of_evidence}):
            group = [s for s in of_evidence if s.kind == kind]
            if len(group) < min_samples:
                continue
            own = _fit_group(group, target, z, min_samples)
            if own.min_confidence is not None:
                rules[f"{kind}|{evidence}"] = own
            elif pooled.min_confidence is not None and _clearly_worse(
                group, pooled.min_confidence, target, z
            ):
                # Too few to prove a floor of its own, and clearly worse than the pooled
                # floor allows: never accept this type on this evidence.
                rules[f"{kind}|{evidence}"] = own
            # Otherwise the type has too little data to differ from the pooled rule.
    return Calibration(
        template=template,
        target=target,
        z=z,
        case_sensitive=case_sensitive,
        fitted_on=fitted_on,
        rules=rules,
    )


def save_calibration(calibration: Calibration, path: Path) -> None:
    """Write a calibration as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(calibration.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_calibration(path: Path) -> Calibration:
    """Read a calibration JSON file; BadInputError names the file when it is unusable."""
    try:
        return Calibration.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        raise BadInputError(f"{path}: not a usable calibration: {e}") from e


def load_calibration(template: str, folder: Path | None = None) -> Calibration | None:
    """The calibration for a template: from `folder` if given, else bundled; None if none."""
    for base in (folder, BUNDLED_CALIBRATIONS):
        if base is None:
            continue
        path = base / f"{Path(template).stem}.json"
        if path.is_file():
            return read_calibration(path)
    return None
