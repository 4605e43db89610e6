"""Try a template on a sample page before it is saved: for each field, the crop it would
cut, what the OCR reads there, whether the value passes the field's validators, and
whether routing would accept it without people.

The template designer runs it on two or three sample scans ("dry run"). Nothing is stored.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from PIL import Image

from kerani.core.errors import KeraniError
from kerani.forms.templates import Template
from kerani.microtasks.routing import decide
from kerani.ocr.calibration import Calibration
from kerani.ocr.engine import OcrEngine
from kerani.ocr.snippets import crop_snippet
from kerani.ocr.stage import StageOptions, read_template_page


@dataclass(frozen=True)
class FieldTrial:
    """What one field of the template becomes on the sample."""

    name: str
    crop_webp: bytes
    guess: str
    confidence: float
    problem: str | None  # the validator's verdict: None when the value passes
    auto_accepted: bool
    why: str  # routing's reason, in words

    def as_dict(self) -> dict[str, object]:
        """Plain data for the designer page (the crop as a data: URL)."""
        crop = "data:image/webp;base64," + base64.b64encode(self.crop_webp).decode()
        return {
            "name": self.name,
            "crop": crop,
            "guess": self.guess,
            "confidence": round(self.confidence, 1),
            "problem": self.problem,
            "auto_accepted": self.auto_accepted,
            "why": self.why,
        }


@dataclass
class PageTrial:
    """The template tried on one sample: each field, how the page was placed, or why the
    page could not be read with it."""

    fields: list[FieldTrial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def try_template(
    image: Image.Image,
    template: Template,
    engine: OcrEngine,
    options: StageOptions,
    calibration: Calibration | None,
    threshold: float | None,
    snippet_margin: int,
) -> PageTrial:
    """Read a sample page with the template, as pre-OCR and routing would."""
    try:
        read, reads = read_template_page(image, template, engine, options)
    except KeraniError as e:
        return PageTrial(error=str(e))
    cleaned = read.prepared.image
    out = PageTrial(notes=list(read.notes))
    for r in reads:
        spec = template.field(r.name) if template.has_field(r.name) else None
        problem = spec.problem(r.text) if spec is not None else None
        decision = decide(r.kind, r.text, r.confidence, threshold, calibration, r.evidence)
        accepted = decision.accept and problem is None
        out.fields.append(
            FieldTrial(
                name=r.name,
                crop_webp=crop_snippet(cleaned, r.box, snippet_margin),
                guess=r.text,
                confidence=r.confidence,
                problem=problem.message if problem is not None else None,
                auto_accepted=accepted,
                why=decision.reason if problem is None else f"fails {problem.rule}",
            )
        )
    return out
