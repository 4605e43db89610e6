"""The template designer: agency users and operators draw a form's fields on a sample scan,
try the template on sample pages, and save it as a new stored version.

A sample is uploaded once (`POST /templates/samples`): Kerani renders its first page as an
ingested page would be, reads its words, proposes fields from its printed labels
(kerani.ocr.proposals) and keeps image and words in the blob store under the uploader's id,
so only they can fetch it again. The page's script (static/designer.js) draws boxes on it
and sends the template as JSON to try (`/templates/trial`) and to save (`/templates`); the
server fills in the page size and the anchor words from the first sample, then checks and
stores it like `kerani template add` (forms.catalogue).
"""

from __future__ import annotations

import io
import json
import re
import secrets
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

from kerani.core.errors import BadInputError, NotFoundError, TemplateError
from kerani.core.vocabulary import Role
from kerani.forms.catalogue import (
    add_template,
    stored_template,
    template_content,
    template_versions,
)
from kerani.forms.feasibility import check_rules_can_hold
from kerani.forms.templates import Template, parse_template
from kerani.forms.validators import CHECKSUMS, FIELD_TYPES
from kerani.ingest.pages import render_pages
from kerani.ingest.sources import ScanFile
from kerani.microtasks.refit import current_calibration
from kerani.ocr.align import anchors_from_words
from kerani.ocr.engine import Word
from kerani.ocr.proposals import propose_fields
from kerani.ocr.stage import StageOptions
from kerani.ocr.tesseract import TesseractEngine
from kerani.people.workers import Person
from kerani.records.template_trial import try_template
from kerani.review_ui.web import (
    PageSession,
    agency_of,
    check_csrf,
    need_role,
    render,
    settings_of,
    stores_of,
)

router = APIRouter()

SAMPLE_LIMIT = 20 * 1024 * 1024  # a scanned page, as a file (review_ui.app BODY_LIMITS)
MAX_SAMPLES = 3  # a dry run reads two or three sample pages
_TOKEN = re.compile(r"[0-9a-f]{32}")
DATE_FORMATS = ("DD/MM/YYYY", "D/M/YYYY", "DD-MM-YYYY", "DD.MM.YYYY", "YYYY-MM-DD", "DD/MM/YY")
RULE_CHECKS = ("ic_birth_date", "date_order", "sum")


def _staff(session: tuple[Person, str]) -> tuple[Person, str]:
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    return person, csrf


def _json_csrf(request: Request, expected: str) -> None:
    """The page's script sends the session's form token in a header."""
    check_csrf(request.headers.get("x-csrf-token", ""), expected)


def _sample_key(person: Person, token: str, suffix: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise NotFoundError("no such sample")
    return f"designer-samples/{person.id}/{token}{suffix}"


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, session: PageSession) -> Response:
    """Every stored template version, and the way to the designer."""
    person, csrf = _staff(session)
    # An agency sees bundled templates, operators' and its own; batches counted are its own.
    versions = template_versions(stores_of(request).db, agency_id=agency_of(person))
    return render(request, "templates.html", {"versions": versions}, person, csrf)


@router.get("/templates/designer", response_class=HTMLResponse)
def designer_page(request: Request, session: PageSession, start: str = "") -> Response:
    """The designer, empty or started from a stored version (`?start=name:version`)."""
    person, csrf = _staff(session)
    start_from: dict[str, Any] | None = None
    if start:
        try:
            stored = stored_template(stores_of(request).db, start[:120], agency_of(person))
        except TemplateError as e:  # a name the visitor typed: theirs to fix, not a 500
            raise NotFoundError(str(e)) from e
        if stored.template.kind == "form":
            start_from = yaml.safe_load(template_content(stores_of(request).db, stored.id))
    context = {
        "start_from": json.dumps(start_from),
        "field_types": [t for t in FIELD_TYPES if t != "line"],
        "checksums": CHECKSUMS,
        "date_formats": DATE_FORMATS,
        "rule_checks": RULE_CHECKS,
    }
    return render(request, "designer.html", context, person, csrf)


@router.post("/templates/samples")
def upload_sample(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
) -> Response:
    """Keep a sample scan's first page and its words; propose fields from its labels."""
    person, expected = _staff(session)
    check_csrf(csrf, expected)
    data = file.file.read(SAMPLE_LIMIT + 1)
    name = (file.filename or "sample")[-120:]
    if len(data) > SAMPLE_LIMIT:
        raise BadInputError(f"{name}: a sample is at most {SAMPLE_LIMIT // (1024 * 1024)} MB")
    settings = settings_of(request)
    rendered = render_pages(ScanFile(name, data), settings.ingest)
    if not rendered.pages:
        reason = rendered.refused[0].reason if rendered.refused else "no page in it"
        raise BadInputError(f"{name}: {reason}")
    page = rendered.pages[0]
    image = Image.open(io.BytesIO(page.png))
    words = TesseractEngine(settings.ocr.languages, settings.ocr.timeout_s).read_page(image)
    token = secrets.token_hex(16)
    blobs = stores_of(request).blobs
    blobs.put(_sample_key(person, token, ".png"), page.png)
    blobs.put(_sample_key(person, token, ".words.json"), _words_json(words))
    proposals = propose_fields(words, image.width, image.height)
    return JSONResponse(
        {
            "sample": token,
            "width": image.width,
            "height": image.height,
            "proposals": [
                {
                    "name": p.name,
                    "type": p.type,
                    "label": {"en": p.label_en, "ms": p.label_ms},
                    "box": list(p.box),
                    "label_box": list(p.label_box),
                    "label_text": p.label_text,
                    "sensitivity": p.sensitivity,
                    "format_hint": p.format_hint,
                    "checksum": p.checksum,
                }
                for p in proposals
            ],
            "anchor_words": [
                {"text": a.text, "x": a.x, "y": a.y} for a in anchors_from_words(words, [])
            ],
        }
    )


def _words_json(words: list[Word]) -> bytes:
    rows = [{"t": w.text, "b": list(w.box), "c": w.confidence, "l": list(w.line)} for w in words]
    return json.dumps(rows).encode()


def _sample_words(request: Request, person: Person, token: str) -> list[Word]:
    raw = stores_of(request).blobs.get(_sample_key(person, token, ".words.json"))
    return [Word(str(r["t"]), tuple(r["b"]), float(r["c"]), tuple(r["l"])) for r in json.loads(raw)]


def _sample_png(request: Request, person: Person, token: str) -> bytes:
    """A sample's page image, if this person uploaded it."""
    key = _sample_key(person, token, ".png")
    blobs = stores_of(request).blobs
    if not blobs.exists(key):
        raise NotFoundError("no such sample: upload it again")
    return blobs.get(key)


def _sample_image(request: Request, person: Person, token: str) -> Image.Image:
    image = Image.open(io.BytesIO(_sample_png(request, person, token)))
    image.load()
    return image


@router.get("/templates/samples/{token}")
def sample_image(request: Request, token: str, session: PageSession) -> Response:
    """A sample this person uploaded (nobody else's)."""
    person, _csrf = _staff(session)
    png = _sample_png(request, person, token.removesuffix(".png"))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})


def _template_from(
    request: Request, person: Person, body: dict[str, Any]
) -> tuple[Template, str, list[str]]:
    """The template the page sent, with the first sample's size and anchor words; its
    YAML; the samples named. A broken one is a 400 naming the field and the rule."""
    samples = body.get("samples")
    if not isinstance(samples, list) or not 1 <= len(samples) <= MAX_SAMPLES:
        raise BadInputError(f"samples: give 1 to {MAX_SAMPLES} uploaded samples")
    samples = [str(s) for s in samples]
    data = body.get("template")
    if not isinstance(data, dict):
        raise BadInputError("template: the designer sends the template as an object")
    first = _sample_image(request, person, samples[0])
    data = {**data, "kind": "form", "page_size": [first.width, first.height]}
    data.pop("anchors", None)
    try:
        # As from a file: the first problem in one line, naming the field and the rule.
        draft = parse_template(yaml.safe_dump(data, allow_unicode=True), "template")
    except TemplateError as e:
        raise BadInputError(str(e)) from e
    # Pages are aligned by the sample's printed words outside the fields.
    words = _sample_words(request, person, samples[0])
    anchors = anchors_from_words(words, [f.box for f in draft.fields])
    data["anchors"] = [{"text": a.text, "x": round(a.x, 1), "y": round(a.y, 1)} for a in anchors]
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    return parse_template(text, "template"), text, samples


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise BadInputError("the request is not JSON") from e
    if not isinstance(body, dict):
        raise BadInputError("the request is not a JSON object")
    return body


@router.post("/templates/trial")
async def trial(request: Request, session: PageSession) -> Response:
    """Read one sample with the template as drawn: per field, crop, guess, verdict."""
    person, expected = _staff(session)
    _json_csrf(request, expected)
    body = await _body(request)
    from starlette.concurrency import run_in_threadpool

    return JSONResponse(await run_in_threadpool(_trial, request, person, body))


def _trial(request: Request, person: Person, body: dict[str, Any]) -> dict[str, Any]:
    template, _text, samples = _template_from(request, person, body)
    try:
        check_rules_can_hold(template)
    except TemplateError as e:
        raise BadInputError(str(e)) from e
    which = str(body.get("sample", samples[0]))
    if which not in samples:
        raise BadInputError("sample: not one of the samples named")
    settings = settings_of(request)
    calibration = current_calibration(
        stores_of(request).db, template.name, settings.ocr.calibration_dir
    )
    result = try_template(
        _sample_image(request, person, which),
        template,
        TesseractEngine(settings.ocr.languages, settings.ocr.timeout_s),
        StageOptions.from_settings(settings.ocr),
        calibration,
        settings.ocr.auto_accept_confidence,
        settings.ocr.snippet_margin_px,
    )
    return {
        "sample": which,
        "fields": [f.as_dict() for f in result.fields],
        "notes": result.notes,
        "error": result.error,
        "anchors": [a.model_dump() for a in template.anchors],
    }


@router.post("/templates")
async def save_template(request: Request, session: PageSession) -> Response:
    """Check the template as drawn and store it as the next version of its name."""
    person, expected = _staff(session)
    _json_csrf(request, expected)
    body = await _body(request)
    template, text, _samples = _template_from(request, person, body)
    try:
        stored = add_template(stores_of(request).db, text, f"designer ({person.name})", person.id)
    except TemplateError as e:
        raise BadInputError(str(e)) from e
    return JSONResponse(
        {"ref": stored.ref, "created": stored.created, "anchors": len(template.anchors)}
    )
