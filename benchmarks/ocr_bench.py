"""`kerani bench ocr`: the pre-OCR stage measured on any ground-truth dataset folder.

For every page: the whole stage (clean, page OCR, turn if needed, words to the truth
boxes as field regions, batched re-OCR of doubtful fields) is timed, and so is the bare
`tesseract IMAGE stdout` command on the same image, alternately in the same run, one
process at a time (one core, OMP_THREAD_LIMIT=1). The pages are split by a hash of their
path: the auto-accept rule is fitted on one part and reported on the other.

In the same run and on the same pages, three bare-Tesseract baselines read the truth's
fields (`--baselines`): once per page as the scan is, once per page scaled as the stage
would scale it, and once per field crop (`--psm 7`). A template-free dataset also gives
the stage's line finding against the truth lines (`line_recall`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from kerani.core.boxes import coverage
from kerani.core.errors import BadInputError, KeraniError
from kerani.core.programs import run
from kerani.evaluation.ground_truth import (
    TruthPage,
    edit_distance,
    fold_whitespace,
    match_by_box,
    read_truth,
)
from kerani.forms.templates import Template, load_template
from kerani.ocr.calibration import (
    Calibration,
    Sample,
    fit_calibration,
    read_calibration,
    save_calibration,
    without_second_engine,
)
from kerani.ocr.cleanup import text_scale
from kerani.ocr.engine import Box
from kerani.ocr.fields import join_words
from kerani.ocr.second_engine import second_engine
from kerani.ocr.stage import (
    FieldRead,
    LineDetector,
    PageRead,
    Region,
    StageOptions,
    assign_words,
    line_regions,
    read_page_words,
    read_regions,
    template_anchors,
    template_regions,
)
from kerani.ocr.tesseract import TesseractEngine, parse_tsv, tesseract_words

# A region covers its field when at least this share of the content lies inside it.
COVERED = 0.95


@dataclass(frozen=True)
class FieldResult:
    """One field of the dataset: the truth, the stage's guess and its evidence."""

    page: str
    name: str
    kind: str
    truth: str
    guess: str
    confidence: float
    evidence: str
    valid: bool
    correct: bool
    cer: float


def is_upper_case_truth(pages: list[TruthPage]) -> bool:
    """True when the truth has (almost) no lower-case letters, as in SROIE."""
    letters = [c for p in pages for f in p.fields for c in f.text if c.isalpha()]
    lower = sum(1 for c in letters if c.islower())
    return bool(letters) and lower <= 0.001 * len(letters)


def in_calibration_split(page: str, share: float) -> bool:
    """Whether a page belongs to the calibration part: a stable hash of its path."""
    digest = hashlib.sha256(page.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _content_box(truth_box: tuple[int, int, int, int], page_map: Any) -> tuple[int, int, int, int]:
    """The truth box on the cleaned page, without the growth a rotation adds to a bound box.

    The generator's truth is the axis-aligned bound of a turned text box; turning it back
    would inflate it again. Undo the growth for the page's rotation angle.
    """
    import math

    angle = abs(math.atan2(page_map.b, page_map.a)) % (math.pi / 2)
    angle = min(angle, math.pi / 2 - angle)
    c, s = math.cos(angle), math.sin(angle)
    big_w, big_h = truth_box[2] - truth_box[0], truth_box[3] - truth_box[1]
    det = c * c - s * s
    w = max(1.0, (big_w * c - big_h * s) / det)
    h = max(1.0, (big_h * c - big_w * s) / det)
    cx, cy = page_map.apply((truth_box[0] + truth_box[2]) / 2, (truth_box[1] + truth_box[3]) / 2)
    scale = page_map.scale
    return (
        round(cx - w * scale / 2),
        round(cy - h * scale / 2),
        round(cx + w * scale / 2),
        round(cy + h * scale / 2),
    )


def _bare_tesseract(path: Path, languages: str) -> float:
    started = time.perf_counter()
    run(["tesseract", str(path), "stdout", "-l", languages], timeout=300)
    return time.perf_counter() - started


@dataclass
class Baseline:
    """What one bare-Tesseract way of reading got right, and the time its tesseract took."""

    correct: int = 0
    fields: int = 0
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        """Share of the truth's fields read exactly; None when nothing was read."""
        return self.correct / self.fields if self.fields else None


def _right(guess: str, truth: str, fold_case: bool) -> bool:
    return fold_whitespace(guess.upper() if fold_case else guess) == fold_whitespace(truth)


def _bare_page(
    image: Image.Image, path: Path, truth: TruthPage, languages: str, scale: float
) -> tuple[list[str], float]:
    """Bare tesseract on the whole page (scaled by `scale`, Lanczos): each field's words."""
    with tempfile.TemporaryDirectory(prefix="kerani-bench-") as tmp:
        source = path
        if scale != 1.0:
            source = Path(tmp) / "scaled.png"
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.LANCZOS).save(source)
        started = time.perf_counter()
        proc = run(["tesseract", str(source), "stdout", "-l", languages, "tsv"], timeout=300)
        seconds = time.perf_counter() - started
    words = parse_tsv(proc.stdout.decode("utf-8", "replace"))
    boxes: list[Box] = [
        (
            round(f.box[0] * scale),
            round(f.box[1] * scale),
            round(f.box[2] * scale),
            round(f.box[3] * scale),
        )
        for f in truth.fields
    ]
    return [join_words(ws)[0] for ws in assign_words(words, boxes)], seconds


def _bare_crops(image: Image.Image, truth: TruthPage, languages: str) -> tuple[list[str], float]:
    """Bare tesseract once per field crop (one text line, --psm 7), as the scan is."""
    texts, seconds = [], 0.0
    for f in truth.fields:
        x0, y0, x1, y1 = f.box
        # A little paper around the text: Tesseract reads a crop cut at the ink badly.
        pad = max(2, (y1 - y0) // 6)
        crop = image.crop((max(0, x0 - pad), max(0, y0 - pad), x1 + pad, y1 + pad))
        started = time.perf_counter()
        words = tesseract_words(crop, languages=languages, psm=7, timeout_s=60)
        seconds += time.perf_counter() - started
        texts.append(join_words(words)[0])
    return texts, seconds


def _line_matches(
    page: PageRead, truth: TruthPage, detector: LineDetector | None
) -> tuple[int, int, int, float]:
    """Template-free: truth lines the stage's line finding matched, covered, read right.

    Also the seconds the line finding itself took (the rest is scoring, not the stage).

    Matched: paired one to one with a found line (IoU >= 0.3). Covered: at least half of
    the truth line lies in one found region (or the region in it), so its text reaches
    a person even when joined with a neighbour. Read right: matched, and the page OCR's
    text of that line (before any re-OCR) is the truth's.
    """
    started = time.perf_counter()
    lines = line_regions(page, detector)
    finding_s = time.perf_counter() - started
    texts = [join_words(ws)[0] for ws in assign_words(page.words, [r.box for r in lines])]
    on_page = [dataclasses.replace(f, box=page.prepared.to_page.box(f.box)) for f in truth.fields]
    pairs = match_by_box([r.box for r in lines], on_page)
    covered = sum(
        any(coverage(r.box, f.box) >= 0.5 or coverage(f.box, r.box) >= 0.5 for r in lines)
        for f in on_page
    )
    read = sum(
        fold_whitespace(texts[i].upper()) == fold_whitespace(truth.fields[t].text.upper())
        for i, t in pairs.items()
    )
    return len(pairs), covered, read, finding_s


def _kinds(template: Template | None) -> dict[str, str]:
    return {f.name: f.type for f in template.fields} if template else {}


def run_bench(
    dataset: Path,
    *,
    limit: int | None = None,
    calibrate_share: float = 0.5,
    target: float = 0.995,
    template: str | None = None,
    languages: str = "eng",
    options: StageOptions | None = None,
    save_to: Path | None = None,
    fields_out: Path | None = None,
    calibration_file: Path | None = None,
    time_floor: bool = True,
    baselines: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the stage and bare Tesseract over a dataset; return the figures as plain data."""
    if not 0 < calibrate_share < 1:
        raise BadInputError(f"--calibrate-share must be between 0 and 1, not {calibrate_share}")
    os.environ["OMP_THREAD_LIMIT"] = "1"  # one core per process, for both sides
    pages = read_truth(dataset)
    if limit is not None:
        pages = pages[: max(1, limit)]
    tpl = load_template(template) if template else None
    kinds = _kinds(tpl)
    fold_case = is_upper_case_truth(pages)
    engine = TesseractEngine(languages)
    opts = options or StageOptions()
    anchors = template_anchors(tpl, languages) if tpl and tpl.kind == "form" else None

    results: list[FieldResult] = []
    stage_s = bare_s = second_s = 0.0
    failed: dict[str, str] = {}
    covered = placed = timed = 0
    bare = {"page": Baseline(), "page_scaled": Baseline(), "crop": Baseline()}
    template_free = tpl is None or tpl.kind == "lines"
    truth_lines = lines_found = lines_covered = lines_read = 0
    reader = second_engine(opts.second_engine)
    detector = reader if isinstance(reader, LineDetector) else None
    for done, truth in enumerate(pages, start=1):
        path = dataset / truth.page
        floor: float | None
        try:
            floor = _bare_tesseract(path, languages) if time_floor else 0.0
        except KeraniError as e:
            # The floor could not be measured on this page: leave it out of both timings.
            floor = None
            failed[truth.page] = f"bare tesseract: {e}"
        started = time.perf_counter()
        reads: list[FieldRead] = []
        page: PageRead | None = None
        try:
            try:
                with Image.open(path) as im:
                    image = im.copy()
            except (UnidentifiedImageError, OSError) as e:
                raise BadInputError(f"cannot read {path}: {e}") from e
            page = read_page_words(image, engine, opts)
            regions = [
                Region(f.name, kinds.get(f.name, "line"), page.prepared.to_page.box(f.box))
                for f in truth.fields
            ]
            aligned: list[Region] = []
            if tpl is not None and tpl.kind == "form":
                # Alignment is part of the stage in production: time it with the rest.
                aligned, _how = template_regions(tpl, page, anchors)
            reads = read_regions(page, regions, engine, opts)
            if template_free:
                # Line finding is part of the stage on template-free pages: timed with it;
                # the matching against the truth that follows it is not.
                scored = time.perf_counter()
                found, in_region, read_right, finding_s = _line_matches(page, truth, detector)
                started += time.perf_counter() - scored - finding_s
                truth_lines += len(truth.fields)
                lines_found += found
                lines_covered += in_region
                lines_read += read_right
        except KeraniError as e:
            failed[truth.page] = str(e)
        if floor is not None:
            stage_s += time.perf_counter() - started
            bare_s += floor
            if page is not None:
                # The second engine's reading and, on template-free pages, its lines.
                second_s += page.seconds.get("second_engine", 0.0)
                second_s += page.seconds.get("line_detection", 0.0)
                second_s += page.seconds.get("second_engine_page", 0.0)
            timed += 1
        if baselines and page is not None:
            try:
                _run_baselines(bare, image, path, truth, languages, fold_case)
            except KeraniError as e:
                failed.setdefault(truth.page, f"baseline: {e}")
        if aligned and page is not None:
            where = {r.name: r.box for r in aligned}
            for f in truth.fields:
                if f.name in where:
                    placed += 1
                    content = _content_box(f.box, page.prepared.to_page)
                    covered += coverage(where[f.name], content) >= COVERED
        by_name = {r.name: r for r in reads}
        for f in truth.fields:
            r = by_name.get(f.name)
            guess = r.text if r else ""
            want = fold_whitespace(f.text)
            have = fold_whitespace(guess.upper() if fold_case else guess)
            results.append(
                FieldResult(
                    page=truth.page,
                    name=f.name,
                    kind=r.kind if r else kinds.get(f.name, "line"),
                    truth=want,
                    guess=have,
                    confidence=r.confidence if r else 0.0,
                    evidence=r.evidence if r else "page",
                    valid=r.valid if r else False,
                    correct=have == want,
                    cer=edit_distance(have, want) / max(1, len(want)),
                )
            )
        if progress:
            progress(done, len(pages))

    if fields_out is not None:
        fields_out.write_text(
            "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in results),
            encoding="utf-8",
        )

    def samples(r: FieldResult) -> list[Sample]:
        # A field the second engine read also counts as what a deployment without it sees
        # (its evidence less the second engine's tag): one rule serves both deployments.
        out = [Sample(r.kind, r.evidence, r.confidence, r.valid, r.correct)]
        alone = without_second_engine(r.evidence)
        if alone != r.evidence:
            out.append(Sample(r.kind, alone, r.confidence, r.valid, r.correct))
        return out

    if calibration_file is not None:
        # A stored rule (fitted on other data): every page of this dataset is held out.
        calibration: Calibration = read_calibration(calibration_file)
        cal: list[FieldResult] = []
        held = results
        split = f"rule read from {calibration_file} ({calibration.fitted_on}); all pages held out"
    else:
        cal = [r for r in results if in_calibration_split(r.page, calibrate_share)]
        held = [r for r in results if not in_calibration_split(r.page, calibrate_share)]
        cal_n = len({r.page for r in cal})
        calibration = fit_calibration(
            (s for r in cal for s in samples(r)),
            template=tpl.name if tpl else dataset.name,
            target=target,
            case_sensitive=not fold_case,
            fitted_on=f"{dataset.name}: {cal_n} pages (hash split, share {calibrate_share})",
        )
        split = (
            f"pages whose sha256(path) falls below {calibrate_share} calibrate the rule "
            f"({cal_n} pages); the figures for auto-accept are on the other "
            f"{len({r.page for r in held})} pages"
        )
    cal_pages = len({r.page for r in cal})
    if save_to is not None:
        save_calibration(calibration, save_to)
    accepted = [r for r in held if calibration.accepts(r.kind, r.evidence, r.confidence, r.valid)]
    n = len(results)
    accuracy = sum(r.correct for r in results) / n if n else 0.0
    measured = [b.accuracy for b in bare.values() if b.accuracy is not None]
    best_baseline = max(measured) if measured else None
    tesseract_only_s = stage_s - second_s
    figures: dict[str, Any] = {
        "dataset": str(dataset),
        "pages": len(pages),
        "fields": n,
        "pages_failed": len(failed),
        "field_accuracy": accuracy,
        "cer": sum(r.cer for r in results) / n if n else 0.0,
        # Bare tesseract on the same pages, reading the truth's fields: once per page as
        # scanned, once per page scaled as the stage scales it, once per field crop.
        "baseline_page_accuracy": bare["page"].accuracy,
        "baseline_page_scaled_accuracy": bare["page_scaled"].accuracy,
        "baseline_crop_accuracy": bare["crop"].accuracy,
        "accuracy_ratio_to_best_baseline": (accuracy / best_baseline if best_baseline else None),
        # Template-free datasets: truth lines the stage's line finding found (one-to-one,
        # IoU >= 0.3); covered by a found region (>= half of one inside the other: its
        # text reaches a person); and found and read right by the page OCR.
        "line_recall": lines_found / truth_lines if truth_lines else None,
        "line_coverage": lines_covered / truth_lines if truth_lines else None,
        "line_read_accuracy": lines_read / truth_lines if truth_lines else None,
        "auto_accepted_share": len(accepted) / len(held) if held else 0.0,
        "auto_accepted_accuracy": (
            sum(r.correct for r in accepted) / len(accepted) if accepted else None
        ),
        "auto_accepted_fields": len(accepted),
        "held_out_fields": len(held),
        "held_out_pages": len({r.page for r in held}),
        "calibration_pages": cal_pages,
        "split": split,
        "target": calibration.target,
        "case_folded": fold_case,
        "pages_per_minute_per_core": 60.0 * timed / stage_s if stage_s else 0.0,
        "stage_seconds": stage_s,
        "tesseract_seconds": bare_s,
        # None when the floor was not timed (time_floor=False). The Tesseract-only stage
        # (without the second engine's time) against bare tesseract on the scan as it is,
        # and against bare tesseract on the page scaled as the stage scales it.
        "tesseract_time_ratio": tesseract_only_s / bare_s if bare_s else None,
        "tesseract_time_ratio_to_scaled_page": (
            tesseract_only_s / bare["page_scaled"].seconds
            if bare["page_scaled"].seconds and bare_s
            else None
        ),
        "second_engine_seconds": second_s,
        "second_engine_time_ratio": (stage_s / bare_s if bare_s and opts.second_engine else None),
        "reocr_share": sum(r.evidence.split("-")[0] != "page" for r in results) / n if n else 0.0,
        # The second engine (StageOptions.second_engine, KERANI_OCR_SECOND_ENGINE) and the
        # share of fields it confirmed; its time is part of stage_seconds.
        "second_engine": opts.second_engine or None,
        "second_agree_share": sum("-2agree" in r.evidence for r in results) / n if n else 0.0,
        "alignment_coverage": covered / placed if placed else None,
        "failed": failed,
        "calibration": calibration.model_dump(),
    }
    return figures


def _run_baselines(
    bare: dict[str, Baseline],
    image: Image.Image,
    path: Path,
    truth: TruthPage,
    languages: str,
    fold_case: bool,
) -> None:
    """Add one page's bare-Tesseract reads of the truth's fields to the three baselines."""
    runs = {
        "page": _bare_page(image, path, truth, languages, 1.0),
        "page_scaled": _bare_page(image, path, truth, languages, text_scale(image)),
        "crop": _bare_crops(image, truth, languages),
    }
    for name, (texts, seconds) in runs.items():
        b = bare[name]
        b.correct += sum(
            _right(t, f.text, fold_case) for t, f in zip(texts, truth.fields, strict=True)
        )
        b.fields += len(truth.fields)
        b.seconds += seconds


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def format_report(f: dict[str, Any]) -> str:
    """The figures as a few lines for people."""
    case = ", case folded: truth is upper case" if f["case_folded"] else ""
    lines = [
        f"dataset {f['dataset']}: {f['pages']} pages, {f['fields']} fields"
        + (f", {f['pages_failed']} pages refused" if f["pages_failed"] else ""),
        f"field accuracy (exact match{case}): {_pct(f['field_accuracy'])}; mean CER {f['cer']:.3f}",
        f"auto-accepted with the calibrated rule (target {_pct(f['target'])}): "
        f"{_pct(f['auto_accepted_share'])} of {f['held_out_fields']} held-out fields, "
        f"accuracy {_pct(f['auto_accepted_accuracy'])} ({f['auto_accepted_fields']} fields)",
        f"split: {f['split']}",
        f"speed: {f['pages_per_minute_per_core']:.1f} pages/minute/core through the whole stage"
        + (
            f"; {f['tesseract_time_ratio']:.2f}x the time of bare tesseract on the same pages "
            f"({f['stage_seconds']:.1f} s vs {f['tesseract_seconds']:.1f} s)"
            if f["tesseract_time_ratio"] is not None
            else " (bare tesseract not timed)"
        ),
    ]
    baselines = [
        (f["baseline_page_accuracy"], "once per page"),
        (f["baseline_page_scaled_accuracy"], "once per page scaled as the stage scales it"),
        (f["baseline_crop_accuracy"], "once per field crop"),
    ]
    if any(value is not None for value, _ in baselines):
        lines.append(
            "bare tesseract on the same fields: "
            + "; ".join(f"{_pct(value)} {how}" for value, how in baselines)
            + (
                f" (the stage reads {f['accuracy_ratio_to_best_baseline']:.2f}x the best)"
                if f["accuracy_ratio_to_best_baseline"] is not None
                else ""
            )
        )
    if f["line_recall"] is not None:
        lines.append(
            f"line finding: {_pct(f['line_recall'])} of the truth lines found "
            f"(IoU >= 0.3, one to one), {_pct(f['line_coverage'])} covered by a found "
            f"region; {_pct(f['line_read_accuracy'])} of them all found and read right "
            "by the page OCR"
        )
    if f["second_engine_time_ratio"] is not None:
        lines.append(
            f"with the second engine: {f['second_engine_time_ratio']:.2f}x the time of bare "
            f"tesseract ({f['second_engine_seconds']:.1f} s of it the second engine's)"
        )
    if f["second_engine"]:
        lines.append(
            f"second engine {f['second_engine']}: agrees with Tesseract on "
            f"{_pct(f['second_agree_share'])} of the fields"
        )
    if f["alignment_coverage"] is not None:
        lines.append(
            f"template alignment: {_pct(f['alignment_coverage'])} of field regions cover "
            f"their content (>= {COVERED:.0%} of its box)"
        )
    for page, reason in f["failed"].items():
        lines.append(f"refused {page}: {reason}")
    return "\n".join(lines)
