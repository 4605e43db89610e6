"""`kerani bench crowd`: pre-OCR, calibrated routing and a simulated crowd on a truth dataset.

The dataset (pages/ + truth.jsonl, any folder in that format) is split by a stable hash of
each page's path: the calibration part fits the auto-accept rule and supplies the gold
snippets; the rest is the work. Each truth box is a field's region. Simulated workers
(70% careful, 20% careless, 5% pre-fill spammers, 5% junk typers by default, 1% drop-outs)
answer through the review app's HTTP API in process. In the same run, two baselines on
the same work fields: the OCR alone, and double keying with arbitration (two workers of the
same crowd type every field blind; a careful third settles differences).

Every human figure here comes from simulated workers, not people.
"""

from __future__ import annotations

import io
import os
import random
import secrets
import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, func, insert, select

from kerani.benchmarks.ocr_bench import in_calibration_split, is_upper_case_truth
from kerani.core.errors import KeraniError
from kerani.core.settings import (
    BlobSettings,
    CoreSettings,
    CrowdSettings,
    DatabaseSettings,
    Settings,
)
from kerani.core.vocabulary import (
    AnswerKind,
    BatchStatus,
    FieldStatus,
    PageStatus,
    Role,
    ScanStatus,
    TaskKind,
    ValueKind,
)
from kerani.evaluation.crowd_sim import (
    Profile,
    SimulatedWorker,
    answer_for,
    keystrokes,
    run_crowd,
    truth_by_task,
)
from kerani.evaluation.ground_truth import TruthPage, read_truth, texts_match
from kerani.forms.templates import Template, load_template
from kerani.ingest.batches import record_scan
from kerani.microtasks import quality
from kerani.microtasks.consensus import answer_key
from kerani.microtasks.gold import make_gold
from kerani.microtasks.routing import route_page
from kerani.ocr.calibration import Sample, fit_calibration
from kerani.ocr.fields import SNIPPET_SUFFIX, crop_snippet
from kerani.ocr.preocr import Reading, store_fields
from kerani.ocr.stage import FieldRead, Region, StageOptions, read_page_words, read_regions
from kerani.ocr.tesseract import TesseractEngine
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores, open_stores

DEFAULT_MIX = (("careful", 0.70), ("careless", 0.20), ("spammer", 0.05), ("junk", 0.05))


@dataclass
class BenchField:
    """One field of the work or the gold: its id, type, OCR guess and truth."""

    field_id: int
    kind: str
    guess: str
    truth: str


def make_crowd(n: int, rng: random.Random, dropout: float) -> list[Profile]:
    """N worker profiles in the stated mix; careful 1–3% and careless 10–20% error."""
    profiles: list[Profile] = []
    for kind, share in DEFAULT_MIX:
        for _ in range(max(1 if share >= 0.05 else 0, round(n * share))):
            rate = {"careful": rng.uniform(0.01, 0.03), "careless": rng.uniform(0.10, 0.20)}
            profiles.append(Profile(kind, rate.get(kind, 0.0), dropout))
    while len(profiles) < n:  # rounding: the rest are careful
        profiles.append(Profile("careful", rng.uniform(0.01, 0.03), dropout))
    return profiles[:n]


def read_page(
    dataset: Path,
    truth: TruthPage,
    kinds: dict[str, str],
    engine: TesseractEngine,
    margin: int,
) -> tuple[TruthPage, Image.Image, list[FieldRead]]:
    """Pre-OCR one truth page with each truth box as a field region: (truth, image, reads)."""
    with Image.open(dataset / truth.page) as im:
        image = im.copy()
    try:
        page = read_page_words(image, engine, StageOptions())
    except KeraniError:
        # A page the OCR cannot read still goes to people, every field with an empty guess.
        empty = [
            FieldRead(f.name, kinds.get(f.name, "line"), f.box, "", 0.0, "page")
            for f in truth.fields
        ]
        return truth, image.convert("L"), empty
    regions = [
        Region(f.name, kinds.get(f.name, "line"), page.prepared.to_page.box(f.box))
        for f in truth.fields
    ]
    return truth, page.prepared.image, read_regions(page, regions, engine, StageOptions())


def store_page(
    stores: Stores,
    batch_id: str,
    template: str,
    truth: TruthPage,
    image: Image.Image,
    reads: Sequence[FieldRead],
    engine_name: str,
    fold_case: bool,
    margin: int,
) -> tuple[int, list[BenchField]]:
    """Store a pre-OCRed page, its fields' guesses and snippets; return its id and fields."""
    now = utcnow()
    key = f"pages/bench/{secrets.token_hex(8)}.png"
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    stores.blobs.put(key, buf.getvalue())
    want = {f.name: f.text for f in truth.fields}
    scan_id = record_scan(
        stores.db,
        batch_id,
        truth.page,
        size=0,
        sha256=None,
        blob_key=None,
        status=ScanStatus.ACCEPTED,
        error=None,
    )
    with stores.db.begin() as conn:
        page_id = conn.execute(
            insert(schema.pages).values(
                batch_id=batch_id,
                scan_id=scan_id,
                source_sha256=secrets.token_hex(32),
                page_index=0,
                template=template,
                image_key=key,
                width=image.width,
                height=image.height,
                status=PageStatus.OCRED,
                created_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        rows: list[dict[str, Any]] = []
        guesses: list[Reading] = []
        for r in reads:
            snippet = f"snippets/bench/{page_id}/{r.name}{SNIPPET_SUFFIX}"
            stores.blobs.put(snippet, crop_snippet(image, r.box, margin))
            rows.append(
                {
                    "page_id": page_id,
                    "name": r.name,
                    "kind": r.kind,
                    "x0": r.box[0],
                    "y0": r.box[1],
                    "x1": r.box[2],
                    "y1": r.box[3],
                    "snippet_key": snippet,
                    "status": "pending",
                    "answer_count": 0,
                    "sensitivity": "personal",
                }
            )
            # SROIE's truth is upper case whatever the receipt prints: read OCR the same way.
            guess = r.text.upper() if fold_case else r.text
            guesses.append(Reading(engine_name, guess, r.confidence, r.evidence))
        ids = store_fields(conn, rows, guesses)
        out = [
            BenchField(fid, r.kind, g.text, want[r.name])
            for fid, r, g in zip(ids, reads, guesses, strict=True)
        ]
    return int(page_id), out


def new_batch(stores: Stores, label: str) -> str:
    """An empty batch for benchmark pages."""
    batch_id = secrets.token_hex(16)
    with stores.db.begin() as conn:
        conn.execute(
            insert(schema.batches).values(
                id=batch_id,
                template="bench",
                source=label,
                status=BatchStatus.INGESTED,
                created_at=utcnow(),
            )
        )
    return batch_id


def double_keying(
    fields: Sequence[BenchField], profiles: Sequence[Profile], rng: random.Random
) -> dict[str, float]:
    """Two workers type each field blind; a careful third settles any difference."""
    careful = [p for p in profiles if p.kind == "careful"] or list(profiles)
    right = answers = keys = 0
    for f in fields:
        a, b = rng.sample(list(profiles), 2)
        first, second = (answer_for(f.truth, "", p, rng) for p in (a, b))
        typed = [first, second]
        if answer_key(first["kind"], first["value"], f.kind) != answer_key(
            second["kind"], second["value"], f.kind
        ):
            typed.append(answer_for(f.truth, "", rng.choice(careful), rng))
        final = typed[-1] if len(typed) == 3 else first
        answers += len(typed)
        keys += sum(keystrokes("", t) for t in typed)
        right += final["kind"] == AnswerKind.VALUE and texts_match(final["value"], f.truth)
    n = max(1, len(fields))
    return {
        "accuracy": right / n,
        "answers_per_field": answers / n,
        "keystrokes_per_field": keys / n,
    }


def _quality_error(
    db: Engine, workers: Sequence[SimulatedWorker], ids: dict[str, int]
) -> tuple[float, int, int]:
    """Mean |estimated − true accuracy| of honest workers; spammers/junk caught of all."""
    with db.connect() as conn:
        est = quality.estimates(conn, ids.values(), "*")
    errors, caught, adversarial = [], 0, 0
    for w in workers:
        e = est[ids[w.name]]
        if w.profile.kind in ("spammer", "junk"):
            adversarial += 1
            caught += e.quarantined
        elif e.gold_seen:
            errors.append(abs(e.accuracy - w.true_accuracy))
    return (statistics.fmean(errors) if errors else 0.0), caught, adversarial


def run(
    dataset: Path,
    workers: int = 50,
    seed: int = 0,
    limit: int | None = None,
    calibrate_share: float = 0.3,
    target: float = 0.995,
    template: str | None = None,
    dropout: float = 0.01,
    languages: str = "eng",
) -> dict[str, Any]:
    """Run the crowd benchmark and return its figures (see the module docstring)."""
    pages = read_truth(dataset)
    if limit:
        pages = pages[:limit]
    tpl: Template | None = load_template(template) if template else None
    kinds = {f.name: f.type for f in tpl.fields} if tpl else {}
    fold_case = is_upper_case_truth(pages)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="kerani-crowd-bench-"))
    crowd_rules = CrowdSettings(lease_seconds=2)
    settings = Settings(
        core=CoreSettings(data_dir=workdir),
        database=DatabaseSettings(),
        blobs=BlobSettings(url=str(workdir / "blobs")),
        crowd=crowd_rules,
    )
    stores = open_stores(settings)
    engine = TesseractEngine(languages)
    margin = settings.ocr.snippet_margin_px
    gold_batch, work_batch = new_batch(stores, "gold"), new_batch(stores, "work")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        read = list(pool.map(lambda t: read_page(dataset, t, kinds, engine, margin), pages))
    gold_fields: list[BenchField] = []
    work: list[tuple[int, list[BenchField]]] = []
    for truth, image, reads in read:
        is_gold = in_calibration_split(truth.page, calibrate_share)
        page_id, fields = store_page(
            stores,
            gold_batch if is_gold else work_batch,
            tpl.name if tpl else "receipt",
            truth,
            image,
            reads,
            engine.name,
            fold_case,
            margin,
        )
        if is_gold:
            gold_fields += fields
        else:
            work.append((page_id, fields))
    samples = _calibration_samples(read, gold_fields, fold_case, calibrate_share)
    calibration = fit_calibration(samples, "bench", target=target, case_sensitive=not fold_case)
    for page_id, _fields in work:
        route_page(stores.db, page_id, settings.ocr.auto_accept_confidence, calibration)
    make_gold(stores.db, {f.field_id: f.truth for f in gold_fields if f.truth.strip()})
    profiles = make_crowd(workers, rng, dropout)
    crowd = [
        SimulatedWorker(
            f"sim-{p.kind}-{i}", add_person(stores.db, f"sim-{p.kind}-{i}", Role.WORKER), p
        )
        for i, p in enumerate(profiles)
    ]
    with stores.db.connect() as conn:
        ids = dict(conn.execute(select(schema.workers.c.name, schema.workers.c.id)).tuples().all())
    # An operator designates two careful workers as trusted arbiters from the start.
    arbiters = [w.name for w in crowd if w.profile.kind == "careful"][:2]
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.name.in_(arbiters))
            .values(trusted=True, cleared=True)
        )
    all_fields = [f for _p, fs in work for f in fs] + gold_fields
    truth_of_field: dict[int, str | None] = {f.field_id: f.truth for f in all_fields}
    with TestClient(create_app(settings, stores)) as client:
        stats = run_crowd(
            client,
            crowd,
            truth_by_task(stores.db, truth_of_field),
            seed=seed,
            lease_seconds=crowd_rules.lease_seconds + 0.5,
        )
    work_fields = [f for _p, fs in work for f in fs]
    return _figures(
        stores,
        work_fields,
        stats,
        crowd,
        ids,
        profiles,
        rng,
        fold_case,
        calibration_pages=sum(1 for t in pages if in_calibration_split(t.page, calibrate_share)),
        work_pages=len(work),
    )


def _calibration_samples(
    read: Sequence[tuple[TruthPage, Image.Image, list[FieldRead]]],
    gold: Sequence[BenchField],
    fold_case: bool,
    share: float,
) -> list[Sample]:
    samples = []
    for truth, _image, reads in read:
        if not in_calibration_split(truth.page, share):
            continue
        want = {f.name: f.text for f in truth.fields}
        for r in reads:
            guess = r.text.upper() if fold_case else r.text
            samples.append(
                Sample(r.kind, r.evidence, r.confidence, r.valid, texts_match(guess, want[r.name]))
            )
    return samples


def _figures(
    stores: Stores,
    work: Sequence[BenchField],
    stats: Any,
    crowd: Sequence[SimulatedWorker],
    ids: dict[str, int],
    profiles: Sequence[Profile],
    rng: random.Random,
    fold_case: bool,
    calibration_pages: int,
    work_pages: int,
) -> dict[str, Any]:
    f, t, a = schema.fields, schema.tasks, schema.answers
    by_id = {w.field_id: w for w in work}
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(f.c.id, f.c.status, f.c.value, f.c.value_kind, f.c.source).where(
                f.c.id.in_(list(by_id))
            )
        ).all()
        field_answers = conn.execute(
            select(func.count())
            .select_from(a)
            .join(t, t.c.id == a.c.task_id)
            .where(t.c.kind == TaskKind.FIELD, a.c.kind != AnswerKind.SKIP)
        ).scalar_one()
        gold_answers = conn.execute(
            select(func.count())
            .select_from(a)
            .join(t, t.c.id == a.c.task_id)
            .where(t.c.kind == TaskKind.GOLD)
        ).scalar_one()
    n = max(1, len(work))

    def right(value: str | None, truth: str) -> bool:
        if value is None:
            return False
        return texts_match(value.upper(), truth.upper()) if fold_case else texts_match(value, truth)

    correct = sum(
        r.value_kind == ValueKind.TEXT and right(r.value, by_id[r.id].truth) for r in rows
    )
    correct += sum(r.value_kind == ValueKind.BLANK and not by_id[r.id].truth.strip() for r in rows)
    auto = [r for r in rows if r.status == FieldStatus.AUTO_ACCEPTED]
    auto_ok = sum(right(r.value, by_id[r.id].truth) for r in auto)
    unsettled = sum(r.status not in (FieldStatus.SETTLED, FieldStatus.AUTO_ACCEPTED) for r in rows)
    ocr_ok = sum(right(w.guess, w.truth) for w in work)
    dk = double_keying(work, profiles, rng)
    q_err, caught, adversarial = _quality_error(stores.db, crowd, ids)
    scratch = statistics.fmean(len(w.truth) + 1 for w in work) if work else 0.0
    return {
        "workers": len(crowd),
        "work_pages": work_pages,
        "calibration_and_gold_pages": calibration_pages,
        "fields": len(work),
        "final_accuracy": correct / n,
        "unsettled_fields": unsettled,
        "answers_per_field": (field_answers + gold_answers) / n,
        "answers_per_field_without_gold": field_answers / n,
        "keystrokes_per_field": stats.keystrokes / n,
        "typing_from_scratch_keystrokes_per_field": scratch,
        "human_share": (len(rows) - len(auto)) / n,
        "auto_accepted_share": len(auto) / n,
        "auto_accepted_accuracy": auto_ok / len(auto) if auto else None,
        "quality_estimate_error": q_err,
        "adversarial_workers_quarantined": caught,
        "adversarial_workers": adversarial,
        "simulated_worker_seconds_per_field": stats.seconds / n,
        "dropouts": stats.dropouts,
        "ocr_only_accuracy": ocr_ok / n,
        "double_keying_accuracy": dk["accuracy"],
        "double_keying_answers_per_field": dk["answers_per_field"],
        "double_keying_keystrokes_per_field": dk["keystrokes_per_field"],
        "note": "human figures come from simulated workers",
    }
