"""`kerani bench crowd`: pre-OCR, calibrated routing and a simulated crowd on a truth dataset.

The dataset (pages/ + truth.jsonl, any folder in that format) is split by a stable hash of
each page's path into a first part and the work. Each truth box is a field's region.

- Truth-fed mode (the default): the first part's truth fits the auto-accept rule and
  supplies the gold snippets.
- Production mode (`--production`, which also runs the truth-fed mode for comparison): the
  engine gets no truth at all. The first part is a first batch that goes to people whole
  (no calibration yet); two simulated staff key a sample of it blind, twice, and what
  agrees is gold; gold is harvested from fields proven workers keyed blind and agreed on;
  then the auto-accept rule is refitted from the crowd's blind-keyed fields and routes the
  work, with audit sampling. The truth only scores.

Simulated workers
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
    OcrSettings,
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
    CAREFUL_ANCHORING,
    CARELESS_ANCHORING,
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
from kerani.microtasks.gold import harvest_gold, make_gold, record_keying, sample_for_keying
from kerani.microtasks.pay_rates import default_rate, propose_rates, rate_kind
from kerani.microtasks.refit import current_calibration, refit_calibration
from kerani.microtasks.routing import route_page
from kerani.ocr.calibration import Sample, fit_calibration
from kerani.ocr.preocr import Reading, store_fields
from kerani.ocr.snippets import SNIPPET_SUFFIX, crop_snippet
from kerani.ocr.stage import FieldRead, Region, StageOptions, read_page_words, read_regions
from kerani.ocr.tesseract import TesseractEngine
from kerani.people.workers import add_person, person_by_code
from kerani.records.accuracy import source_estimates
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
    """N worker profiles in the stated mix; careful 1–3% and careless 10–20% error, both
    anchored by wrong pre-fills as crowd_sim states (CAREFUL_ANCHORING, CARELESS_ANCHORING)."""
    profiles: list[Profile] = []

    def honest(kind: str) -> Profile:
        if kind == "careful":
            return Profile(kind, rng.uniform(0.01, 0.03), dropout, 2.0, 3.0, *CAREFUL_ANCHORING)
        return Profile(kind, rng.uniform(0.10, 0.20), dropout, 2.0, 3.0, *CARELESS_ANCHORING)

    for kind, share in DEFAULT_MIX:
        for _ in range(max(1 if share >= 0.05 else 0, round(n * share))):
            is_honest = kind in ("careful", "careless")
            profiles.append(honest(kind) if is_honest else Profile(kind, 0.0, dropout))
    while len(profiles) < n:  # rounding: the rest are careful
        profiles.append(honest("careful"))
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
                    # The benchmark's pages hold nobody's personal data (public receipts,
                    # synthetic forms): their fields may become gold.
                    "sensitivity": "public",
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
) -> tuple[float, int, int, int]:
    """Mean |estimated − true accuracy| of honest workers; spammers/junk caught of all;
    the most fields any of them settled with their vote among the winners (the agreement
    counters count a vote only when it counted)."""
    q = schema.worker_quality
    with db.connect() as conn:
        est = quality.estimates(conn, ids.values(), "*")
        agreed = dict(
            conn.execute(select(q.c.worker_id, func.sum(q.c.agree_correct)).group_by(q.c.worker_id))
            .tuples()
            .all()
        )
    errors, caught, adversarial, most = [], 0, 0, 0
    for w in workers:
        e = est[ids[w.name]]
        if w.profile.kind in ("spammer", "junk"):
            adversarial += 1
            caught += e.quarantined
            most = max(most, int(agreed.get(ids[w.name]) or 0))
            # Never past probation, or most would count their fields: checked by tests.
        elif e.gold_seen:
            errors.append(abs(e.accuracy - w.true_accuracy))
    return (statistics.fmean(errors) if errors else 0.0), caught, adversarial, most


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
    production: bool = False,
    staff_gold: int = 60,
) -> dict[str, Any]:
    """Run the crowd benchmark and return its figures (see the module docstring).

    With `production`, both modes run on the same OCR reads and work fields, and the
    figures of each are returned under "production" and "truth_fed".
    """
    pages = read_truth(dataset)
    if limit:
        pages = pages[:limit]
    tpl: Template | None = load_template(template) if template else None
    kinds = {f.name: f.type for f in tpl.fields} if tpl else {}
    engine = TesseractEngine(languages)
    margin = OcrSettings().snippet_margin_px
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        read = list(pool.map(lambda t: read_page(dataset, t, kinds, engine, margin), pages))
    bench = _Bench(
        read=read,
        template=tpl.name if tpl else "receipt",
        engine_name=engine.name,
        fold_case=is_upper_case_truth(pages),
        calibrate_share=calibrate_share,
        target=target,
        workers=workers,
        seed=seed,
        dropout=dropout,
        margin=margin,
    )
    if not production:
        return _truth_fed(bench)
    return {"production": _production(bench, staff_gold), "truth_fed": _truth_fed(bench)}


@dataclass
class _Bench:
    """What both modes share: the OCR reads of the dataset and the run's parameters."""

    read: list[tuple[TruthPage, Image.Image, list[FieldRead]]]
    template: str
    engine_name: str
    fold_case: bool
    calibrate_share: float
    target: float
    workers: int
    seed: int
    dropout: float
    margin: int

    def is_first(self, truth: TruthPage) -> bool:
        """Whether a page is in the calibration (truth-fed) or first-batch (production) part."""
        return in_calibration_split(truth.page, self.calibrate_share)


def _open(bench: _Bench, crowd_rules: CrowdSettings) -> tuple[Settings, Stores]:
    workdir = Path(tempfile.mkdtemp(prefix="kerani-crowd-bench-"))
    settings = Settings(
        core=CoreSettings(data_dir=workdir),
        database=DatabaseSettings(),
        blobs=BlobSettings(url=str(workdir / "blobs")),
        crowd=crowd_rules,
    )
    return settings, open_stores(settings)


def _store(
    bench: _Bench, stores: Stores, batch_id: str, first: bool
) -> list[tuple[int, list[BenchField]]]:
    """Store the pages of one part (first/calibration, or the work) in a batch."""
    return [
        store_page(
            stores,
            batch_id,
            bench.template,
            truth,
            image,
            reads,
            bench.engine_name,
            bench.fold_case,
            bench.margin,
        )
        for truth, image, reads in bench.read
        if bench.is_first(truth) == first
    ]


def _enlist(
    bench: _Bench, stores: Stores, rng: random.Random
) -> tuple[list[Profile], list[SimulatedWorker], dict[str, int]]:
    profiles = make_crowd(bench.workers, rng, bench.dropout)
    crowd = [
        SimulatedWorker(
            f"sim-{p.kind}-{i}",
            add_person(stores.db, f"sim-{p.kind}-{i}", Role.WORKER, practised=True),
            p,
        )
        for i, p in enumerate(profiles)
    ]
    with stores.db.connect() as conn:
        ids = dict(conn.execute(select(schema.workers.c.name, schema.workers.c.id)).tuples().all())
    # An operator names two careful workers (the agency's own staff, say) as trusted
    # arbiters from the start: a choice a deployment makes without any truth.
    arbiters = [w.name for w in crowd if w.profile.kind == "careful"][:2]
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.name.in_(arbiters))
            .values(trusted=True, cleared=True, proven=True)
        )
    return profiles, crowd, ids


def _work_crowd(
    settings: Settings,
    stores: Stores,
    crowd: Sequence[SimulatedWorker],
    truth_of_field: dict[int, str | None],
    seed: int,
    on_answer: Any = None,
) -> Any:
    # Seeded draws for gold and blind leases: the run repeats its figures for a seed.
    with TestClient(create_app(settings, stores, random.Random(seed))) as client:
        return run_crowd(
            client,
            crowd,
            truth_by_task(stores.db, truth_of_field),
            seed=seed,
            on_answer=on_answer,
            lease_seconds=settings.crowd.lease_seconds + 0.5,
        )


def _truth_fed(bench: _Bench) -> dict[str, Any]:
    """The engine fed with truth: calibration fitted and gold made from the first part."""
    rng = random.Random(bench.seed)
    settings, stores = _open(bench, CrowdSettings(lease_seconds=2))
    gold_batch, work_batch = new_batch(stores, "gold"), new_batch(stores, "work")
    first = _store(bench, stores, gold_batch, True)
    work = _store(bench, stores, work_batch, False)
    gold_fields = [f for _p, fs in first for f in fs]
    samples = _calibration_samples(bench.read, bench.fold_case, bench.calibrate_share)
    calibration = fit_calibration(
        samples, "bench", target=bench.target, case_sensitive=not bench.fold_case
    )
    for page_id, _fields in work:
        route_page(stores.db, page_id, None, calibration)
    make_gold(stores.db, {f.field_id: f.truth for f in gold_fields if f.truth.strip()})
    profiles, crowd, ids = _enlist(bench, stores, rng)
    work_fields = [f for _p, fs in work for f in fs]
    truth_of_field: dict[int, str | None] = {
        f.field_id: f.truth for f in [*work_fields, *gold_fields]
    }
    stats = _work_crowd(settings, stores, crowd, truth_of_field, bench.seed)
    figures = _figures(stores, work_fields, stats, crowd, ids, profiles, rng, bench.fold_case)
    return figures | {
        "mode": "truth-fed: calibration and gold from the truth of the first part",
        "work_pages": len(work),
        "calibration_and_gold_pages": len(first),
    }


def _production(bench: _Bench, staff_gold: int) -> dict[str, Any]:
    """No truth in the engine: staff key a sample of the first batch blind twice, the crowd
    works it with no auto-accept, harvested gold grows, then the calibration is refitted
    from the crowd's blind-keyed fields and routes the work with audit sampling."""
    rng = random.Random(bench.seed)
    settings, stores = _open(bench, CrowdSettings(lease_seconds=2))
    first_batch, work_batch = new_batch(stores, "first"), new_batch(stores, "work")
    first = _store(bench, stores, first_batch, True)
    work = _store(bench, stores, work_batch, False)
    for page_id, _fields in first:
        route_page(stores.db, page_id, None, None)  # no calibration yet: all to people
    profiles, crowd, ids = _enlist(bench, stores, rng)
    first_fields = [f for _p, fs in first for f in fs]
    work_fields = [f for _p, fs in work for f in fs]
    truth_of_field: dict[int, str | None] = {
        f.field_id: f.truth for f in [*first_fields, *work_fields]
    }
    staff = _staff_key(stores, first_batch, truth_of_field, staff_gold, rng)

    def harvest_now_and_then(every: int = 50) -> Any:
        count = {"answers": 0, "harvested": 0}

        def on_answer() -> None:
            count["answers"] += 1
            if count["answers"] % every == 0:
                count["harvested"] += harvest_gold(stores.db)

        return on_answer, count

    on_first, harvested_first = harvest_now_and_then()
    first_stats = _work_crowd(settings, stores, crowd, truth_of_field, bench.seed, on_first)
    harvested_first["harvested"] += harvest_gold(stores.db)
    refit = refit_calibration(stores.db, bench.template, target=bench.target)
    calibration = current_calibration(stores.db, bench.template)
    for page_id, _fields in work:
        route_page(stores.db, page_id, None, calibration, crowd=settings.crowd, rng=rng)
    answers_before = _answer_counts(stores)
    on_work, harvested_work = harvest_now_and_then()
    stats = _work_crowd(settings, stores, crowd, truth_of_field, bench.seed + 1, on_work)
    figures = _figures(
        stores, work_fields, stats, crowd, ids, profiles, rng, bench.fold_case, answers_before
    )
    gold_made = _gold_made(stores)
    harvested = harvested_first["harvested"] + harvested_work["harvested"]
    return figures | {
        "mode": "production: no truth in the engine; the truth only scores",
        "first_batch_pages": len(first),
        "work_pages": len(work),
        "first_batch_fields": len(first_fields),
        "first_batch_answers_per_field": first_stats.answers / max(1, len(first_fields)),
        "staff_keyed_fields": staff,
        "gold_made": gold_made,
        "gold_harvested_from_the_crowd": harvested,
        "calibration_refit_fields": refit.fields if refit is not None else 0,
        "calibration_groups_on": sorted(
            k for k, r in (calibration.rules.items() if calibration else []) if r.min_confidence
        ),
    }


def _staff_key(
    stores: Stores,
    batch_id: str,
    truth_of_field: dict[int, str | None],
    count: int,
    rng: random.Random,
) -> int:
    """Two staff (simulated, careful: 1% slips, blind) key a sample twice; agreement is gold."""
    keyers = [
        person_by_code(stores.db, add_person(stores.db, f"sim-staff-{i}", Role.OPERATOR)).id
        for i in (1, 2)
    ]
    staff = Profile("careful", 0.01)
    sample = sample_for_keying(stores.db, count, batch_id=batch_id, seed=rng.randrange(1 << 30))
    for field_id in sample:
        for round_, keyer in zip((1, 2), keyers, strict=True):
            typed = answer_for(truth_of_field.get(field_id), "", staff, rng)
            record_keying(stores.db, field_id, round_, keyer, typed["kind"], typed["value"])
    return len(sample)


def _gold_made(stores: Stores) -> dict[str, int]:
    f = schema.fields
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(f.c.gold_origin, func.count())
            .where(f.c.gold_value.is_not(None))
            .group_by(f.c.gold_origin)
        ).all()
    return {str(origin): int(n) for origin, n in rows}


def _answer_counts(stores: Stores) -> tuple[int, int]:
    """Answers so far on field tasks and on gold (skips aside)."""
    t, a = schema.tasks, schema.answers
    with stores.db.connect() as conn:
        rows = dict(
            conn.execute(
                select(t.c.kind, func.count())
                .select_from(a)
                .join(t, t.c.id == a.c.task_id)
                .where(a.c.kind != AnswerKind.SKIP)
                .group_by(t.c.kind)
            )
            .tuples()
            .all()
        )
    return int(rows.get(TaskKind.FIELD, 0)), int(rows.get(TaskKind.GOLD, 0))


def _calibration_samples(
    read: Sequence[tuple[TruthPage, Image.Image, list[FieldRead]]],
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
    answers_before: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    f = schema.fields
    by_id = {w.field_id: w for w in work}
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(f.c.id, f.c.status, f.c.value, f.c.value_kind, f.c.source, f.c.page_id).where(
                f.c.id.in_(list(by_id))
            )
        ).all()
    field_answers, gold_answers = (
        now - before for now, before in zip(_answer_counts(stores), answers_before, strict=True)
    )
    n = max(1, len(work))

    def right(value: str | None, truth: str) -> bool:
        if value is None:
            return False
        return texts_match(value.upper(), truth.upper()) if fold_case else texts_match(value, truth)

    def is_right(r: Any) -> bool:
        if r.value_kind == ValueKind.BLANK:
            return not by_id[r.id].truth.strip()
        return r.value_kind == ValueKind.TEXT and right(r.value, by_id[r.id].truth)

    correct = sum(is_right(r) for r in rows)
    auto = [r for r in rows if r.status == FieldStatus.AUTO_ACCEPTED]
    auto_ok = sum(right(r.value, by_id[r.id].truth) for r in auto)
    unsettled = sum(r.status not in (FieldStatus.SETTLED, FieldStatus.AUTO_ACCEPTED) for r in rows)
    ocr_ok = sum(right(w.guess, w.truth) for w in work)
    dk = double_keying(work, profiles, rng)
    q_err, caught, adversarial, most_settled = _quality_error(stores.db, crowd, ids)
    scratch = statistics.fmean(len(w.truth) + 1 for w in work) if work else 0.0
    estimated = {
        e.source: e
        for e in source_estimates(stores.db, page_ids=sorted({int(r.page_id) for r in rows}))
    }
    by_source: dict[str, dict[str, Any]] = {}
    for source in sorted({str(r.source) for r in rows if r.source}):
        mine = [r for r in rows if r.source == source]
        e = estimated.get(source)
        by_source[source] = {
            "fields": len(mine),
            "actual_accuracy": sum(is_right(r) for r in mine) / len(mine),
            "estimated_accuracy": e.estimate if e else None,
            "estimated_interval": [e.low, e.high] if e and e.estimate is not None else None,
            "evidence": e.evidence if e else "no estimate",
        }
    return {
        "workers": len(crowd),
        "fields": len(work),
        "final_accuracy": correct / n,
        "unsettled_fields": unsettled,
        "answers_per_field": (field_answers + gold_answers) / n,
        "answers_per_field_without_gold": field_answers / n,
        "keystrokes_per_field": stats.keystrokes / n,
        "typing_from_scratch_keystrokes_per_field": scratch,
        "human_seconds_per_field": stats.seconds / n,
        "human_share": (len(rows) - len(auto)) / n,
        "auto_accepted_share": len(auto) / n,
        "auto_accepted_accuracy": auto_ok / len(auto) if auto else None,
        "by_source": by_source,
        "quality_estimate_error": q_err,
        "adversarial_workers_quarantined": caught,
        "adversarial_workers": adversarial,
        "adversarial_most_fields_settled_with_their_vote": most_settled,
        "adversarial_workers_proven": _adversaries_proven(stores.db, crowd, ids),
        **_earnings_per_hour(stores.db, crowd, ids, CrowdSettings()),
        "dropouts": stats.dropouts,
        "ocr_only_accuracy": ocr_ok / n,
        "double_keying_accuracy": dk["accuracy"],
        "double_keying_answers_per_field": dk["answers_per_field"],
        "double_keying_keystrokes_per_field": dk["keystrokes_per_field"],
        "note": (
            "human figures come from simulated workers: "
            f"{_crowd_description(profiles)}; human seconds are simulated reading and typing"
        ),
    }


def _earnings_per_hour(
    db: Engine, crowd: Sequence[SimulatedWorker], ids: dict[str, int], rules: CrowdSettings
) -> dict[str, Any]:
    """What each simulated profile earns per hour worked under the rates Kerani proposes from
    this run's times (RM; pay voided by the checks is not earned; times capped as in pay)."""
    proposals = propose_rates(db, rules)
    rates = {
        (p.field_type, p.pay_kind): p.proposed_sen if p.proposed_sen is not None else p.current_sen
        for p in proposals
    }
    led, a, w = schema.ledger, schema.answers, schema.workers
    cap = rules.pay_max_timed_seconds * 1000
    earned: dict[int, int] = {}
    worked: dict[int, int] = {}
    with db.connect() as conn:
        for wid, field_type, kind, status, ms, doubted in conn.execute(
            select(
                led.c.worker_id,
                led.c.field_type,
                led.c.task_kind,
                led.c.status,
                a.c.duration_ms,
                w.c.quarantined | w.c.suspect,
            )
            .join(a, a.c.id == led.c.answer_id)
            .join(w, w.c.id == led.c.worker_id)
            .where(a.c.duration_ms.is_not(None))
        ):
            key = (str(field_type), rate_kind(str(kind)))
            # Paid: credited, or held for a worker whose hold will end (not paused, not
            # doubted after a failed check). A spammer's held pay waits for a check they fail.
            if status == "credited" or (status == "held" and not doubted):
                earned[wid] = earned.get(wid, 0) + rates.get(key, default_rate(key[1], rules))
            worked[wid] = worked.get(wid, 0) + min(int(ms), cap)

    def per_hour(kind: str) -> float | None:
        mine = [ids[w.name] for w in crowd if w.profile.kind == kind]
        # sen over ms, as RM an hour: sen / 100 * 3,600,000 / ms
        each = [earned.get(i, 0) * 36_000 / worked[i] for i in mine if worked.get(i)]
        return round(statistics.median(each), 2) if each else None

    return {
        "earnings_per_hour_median_careful": per_hour("careful"),
        "earnings_per_hour_careless": per_hour("careless"),
        "earnings_per_hour_spammer": per_hour("spammer"),
        "earnings_per_hour_junk": per_hour("junk"),
        "pay_floor_per_hour": rules.pay_floor_sen_per_hour / 100,
        "proposed_rates_sen": {f"{p.field_type}/{p.pay_kind}": p.proposed_sen for p in proposals},
        "earnings_note": (
            "RM per hour of simulated work (each profile's read and typing time) at the rates "
            "proposed from the careful workers' times; pay voided by gold, or held for a "
            "worker paused or doubted after a failed check, is not earned; spammers: median "
            "of the spammer profiles"
        ),
    }


def _adversaries_proven(db: Engine, crowd: Sequence[SimulatedWorker], ids: dict[str, int]) -> int:
    """Spammers and junk typers who ever passed probation (their answers became votes)."""
    bad = [ids[w.name] for w in crowd if w.profile.kind in ("spammer", "junk")]
    w = schema.workers
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(w.c.id.in_(bad), w.c.proven.is_(True))
            ).scalar_one()
        )


def _crowd_description(profiles: Sequence[Profile]) -> str:
    counts = {kind: sum(p.kind == kind for p in profiles) for kind, _share in DEFAULT_MIX}
    return (
        f"{counts['careful']} careful (1-3% slips, accept {CAREFUL_ANCHORING[0]:.0%} of wrong "
        f"pre-fills, {CAREFUL_ANCHORING[1]:.0%} of near misses), {counts['careless']} careless "
        f"(10-20% slips, {CARELESS_ANCHORING[0]:.0%}/{CARELESS_ANCHORING[1]:.0%}), "
        f"{counts['spammer']} pre-fill spammers, {counts['junk']} junk typers"
    )
