"""The demo: digitise the bundled samples end to end on the embedded defaults and score them."""

from __future__ import annotations

import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import func, select

from kerani.core.settings import CrowdSettings, Settings, using_settings
from kerani.core.vocabulary import AnswerKind, FieldStatus, Role, ValueSource
from kerani.evaluation.accuracy import Score, field_truths, score_batch
from kerani.evaluation.crowd_sim import (
    CAREFUL,
    CARELESS,
    SPAMMER,
    CrowdStats,
    Profile,
    SimulatedWorker,
    run_crowd,
    truth_by_task,
)
from kerani.evaluation.gold import make_gold_batch
from kerani.evaluation.ground_truth import TruthPage, read_keys, read_truth, with_keys
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from kerani.microtasks.ledger import price, ringgit, ringgit_each
from kerani.microtasks.pay_rates import propose_rates
from kerani.microtasks.tasks import queue_depth
from kerani.people.workers import add_person, invite_worker
from kerani.records.accuracy import NOT_ENOUGH
from kerani.records.exports import export_label
from kerani.records.progress import batch_progress
from kerani.records.report import SOURCE_LABELS
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port, port_is_free
from kerani.storage import schema
from kerani.storage.stores import Stores, open_stores
from kerani.terminal import progress_bar, submit_with_progress

SAMPLES = Path(__file__).parent / "samples"
FORM_TEMPLATE = "bantuan_form"

# The demo's crowd: mostly careful people, some careless, one who only accepts the pre-filled
# guess (error rates per answer; see evaluation/crowd_sim.py). Enough of them to finish the
# receipts: no worker sees more than ten fields of one, each field needs two independent
# looks, and new workers' first answers wait for their probation to end. The longest
# receipt holds 46 lines and 3 key fields: 20 people fell 4 fields short of it.
DEMO_CROWD = [CAREFUL] * 20 + [CARELESS] * 3 + [SPAMMER]


@dataclass
class DemoBatch:
    """One batch of the demo: its samples, its id once submitted, and its truth."""

    label: str
    template: str
    dataset: Path
    truth: list[TruthPage]
    batch_id: str = ""
    report: dict[str, Any] | None = None
    exports: dict[str, str] | None = None
    score: Score | None = None
    human_answers: int = 0
    waiting: int = 0  # fields still waiting for people when the demo ended
    truth_waiting: int = 0  # of the true fields found, those still waiting for people
    batch_report: dict[str, Any] | None = None  # records.report.BatchReport.as_dict()


def submit_gold(console: Console, settings: Settings, stores: Stores) -> DemoBatch:
    """Submit the gold receipts and make every line of them a gold snippet."""
    gold = DemoBatch("gold receipts", "receipt", SAMPLES / "gold", read_truth(SAMPLES / "gold"))
    gold.report = submit_with_progress(
        console, settings, stores, [gold.dataset / "pages"], gold.template, gold.label
    )
    gold.batch_id = gold.report["batch_id"]
    count = make_gold_batch(stores.db, gold.batch_id, gold.truth)
    console.print(f"{count} gold snippets (known answers) will measure the workers.")
    return gold


def crowd_profiles(crowd: list[Profile]) -> str:
    """The simulated crowd in words: how many of each profile, with its error rate."""
    habits = {"spammer": "submits every guess unchanged", "junk": "types junk"}

    def habit(p: Profile) -> str:
        return habits.get(
            p.kind,
            f"{p.error_rate:.0%} of answers wrong, lets {p.accepts_wrong_prefill:.0%} of wrong "
            "pre-filled guesses through",
        )

    return ", ".join(f"{n} {p.kind} ({habit(p)})" for p, n in Counter(crowd).items())


def quarantined_workers(stores: Stores) -> list[str]:
    """Names of the workers the gold snippets caught and paused."""
    w = schema.workers
    with stores.db.connect() as conn:
        return [
            str(n)
            for n in conn.execute(
                select(w.c.name).where(w.c.quarantined.is_(True)).order_by(w.c.name)
            ).scalars()
        ]


def prepare_samples(workdir: Path, forms: int, seed: int) -> list[DemoBatch]:
    """Render synthetic forms and copy the bundled receipts into the demo's folder."""
    forms_dir = workdir / "samples" / "forms"
    generate_dataset(load_template(FORM_TEMPLATE), forms_dir, count=forms, seed=seed)
    receipts_dir = workdir / "samples" / "receipts"
    shutil.copytree(SAMPLES / "receipts", receipts_dir, dirs_exist_ok=True)
    return [
        DemoBatch("synthetic forms", FORM_TEMPLATE, forms_dir, read_truth(forms_dir)),
        # The receipts' key values (company, date, total) score their key fields.
        DemoBatch(
            "SROIE receipts",
            "receipt",
            receipts_dir,
            with_keys(read_truth(receipts_dir), read_keys(receipts_dir)),
        ),
    ]


def simulate_crowd(
    console: Console, stores: Stores, server_url: str, batches: list[DemoBatch], seed: int
) -> CrowdStats:
    """Let simulated workers answer every task through the review server's HTTP API."""
    truth_of_field: dict[int, str | None] = {}
    for b in batches:
        mapping, _missed = field_truths(stores.db, b.batch_id, b.truth)
        truth_of_field.update(mapping)

    truth_of_task = truth_by_task(stores.db, truth_of_field)
    workers = []
    for i, profile in enumerate(DEMO_CROWD, start=1):
        name = f"sim-{profile.kind}-{i}"
        workers.append(
            SimulatedWorker(name, add_person(stores.db, name, Role.WORKER, practised=True), profile)
        )
    # As an operator would: two proven careful workers arbitrate disputes from the start
    # and are cleared to see restricted fields (MyKad numbers).
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.name.in_([w.name for w in workers[:2]]))
            .values(trusted=True, cleared=True)
        )
    open_tasks = queue_depth(stores.db)
    with progress_bar(console) as progress, httpx.Client(base_url=server_url, timeout=30) as client:
        bar = progress.add_task("Simulated crowd answering", total=open_tasks)
        tick: Callable[[], None] = lambda: progress.update(  # noqa: E731
            bar, completed=open_tasks - queue_depth(stores.db)
        )
        return run_crowd(client, workers, truth_of_task, seed=seed, on_answer=tick)


def wait_for_people(console: Console, stores: Stores, server_url: str) -> None:
    """Serve the review page until people have answered every task (Ctrl-C stops waiting)."""
    number, invite = invite_worker(stores.db, f"demo-worker-{secrets.token_hex(3)}", 14)
    console.print(
        f"\nReview page: [bold]{server_url}/join[/]  invite code: [bold]{invite}[/] "
        f"(choose a 6-digit PIN; you are worker number {number})"
    )
    open_tasks = queue_depth(stores.db)
    try:
        with progress_bar(console) as progress:
            bar = progress.add_task("Tasks answered by people", total=open_tasks)
            while (left := queue_depth(stores.db)) > 0:
                progress.update(bar, completed=open_tasks - left)
                threading.Event().wait(1.0)
    except KeyboardInterrupt:
        console.print("Stopped waiting; exporting what is settled so far.")


def run_demo(settings: Settings, console: Console, simulate: bool, forms: int, seed: int) -> int:
    """Digitise the bundled samples end to end and print where the records are and how good."""
    from kerani.flows.digitise import finish_batch

    workdir = settings.core.data_dir
    stores = open_stores(settings)
    batches = prepare_samples(workdir, forms, seed)
    host, port = settings.review.host, settings.review.port
    if not port_is_free(host, port):
        port = free_port(host)
    server = BackgroundServer(create_app(settings, stores), host, port).start()
    try:
        for b in batches:
            b.report = submit_with_progress(
                console, settings, stores, [b.dataset / "pages"], b.template, b.label
            )
            b.batch_id = b.report["batch_id"]
            assert b.report is not None
            for bad in b.report["rejected"]:
                console.print(f"[red]rejected[/] {bad['name']}: {bad['reason']}")
        if simulate:
            gold = submit_gold(console, settings, stores)
            stats = simulate_crowd(console, stores, server.url, [*batches, gold], seed)
            console.print(
                f"Simulated workers ({crowd_profiles(DEMO_CROWD)}) gave {stats.answers} "
                f"answers ({stats.keystrokes / max(1, stats.answers):.1f} keystrokes per "
                f"answer); paused by gold: {', '.join(quarantined_workers(stores)) or 'nobody'}."
            )
            console.print(pay_line(stores, settings.crowd), soft_wrap=True)
        else:
            wait_for_people(console, stores, server.url)
        for b in batches:
            with using_settings(settings):  # the flow reads them; they are no parameter
                finished = finish_batch(b.batch_id)
            b.exports, b.batch_report = finished["exports"], finished["report"]
            b.score = score_batch(stores.db, b.batch_id, b.truth)
            b.truth_waiting = _truth_waiting(stores, b)
            b.human_answers = _human_answers(stores, b.batch_id)
            b.waiting = batch_progress(stores.db, b.batch_id)[0]["waiting_for_people"]
    finally:
        server.stop()
    print_summary(console, batches, server.url, simulate)
    return 0


def _human_answers(stores: Stores, batch_id: str) -> int:
    a, t, f, p = schema.answers, schema.tasks, schema.fields, schema.pages
    with stores.db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(a)
                .join(t, t.c.id == a.c.task_id)
                .join(f, f.c.id == t.c.field_id)
                .join(p, p.c.id == f.c.page_id)
                .where(p.c.batch_id == batch_id, a.c.kind != AnswerKind.SKIP)
            ).scalar_one()
        )


def _truth_waiting(stores: Stores, b: DemoBatch) -> int:
    """How many true fields the OCR found are still waiting for people (counted wrong);
    on receipts, lines only (the key fields are counted apart, see _score_line)."""
    mapping, _missed = field_truths(stores.db, b.batch_id, b.truth)
    found = [fid for fid, text in mapping.items() if text is not None]
    f = schema.fields
    query = (
        select(func.count())
        .select_from(f)
        .where(f.c.id.in_(found), f.c.status.in_([FieldStatus.PENDING, FieldStatus.IN_REVIEW]))
    )
    if b.template != FORM_TEMPLATE:
        query = query.where(f.c.kind == "line")
    with stores.db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.1%})" if whole else f"{part} of {whole}"


def _right(part: int, whole: int) -> str:
    return f"{part} right ({part / whole:.1%})" if whole else f"{part} right"


def _score_line(s: Score, waiting: int = 0, template: str = FORM_TEMPLATE) -> str:
    """The batch against the known truth, every figure saying what it counts."""
    unit, finder = (
        ("lines", "line segmentation") if template == "receipt" else ("fields", "the OCR")
    )
    # A receipt's key fields (company, date, total) are counted apart from its lines.
    truth, correct = s.truth_fields - s.key_fields, s.correct - s.key_correct
    found = truth - s.missed
    # A true field the OCR never found has no snippet: nobody could type it, so it counts
    # as wrong; so does one still waiting. The share of those found says what people did.
    wrong = found - waiting - correct
    line = (
        f"against the known truth: {_share(correct, truth)} true {unit} digitised "
        f"right; the other {truth - correct}: {s.missed} never found by {finder}, "
        f"{waiting} still waiting for people, {wrong} settled wrong; of the {found} {unit} "
        f"found, {_right(correct, found)}"
    )
    if s.key_fields:
        line += f"; key fields (company, date, total): {_share(s.key_correct, s.key_fields)} right"
    auto = (
        f"of the {s.auto_accepted} auto-accepted fields with a true text, "
        f"{_right(s.auto_accepted_correct, s.auto_accepted)}"
        if s.auto_accepted
        else "no auto-accepted field has a true text"
    )
    return f"{line}; {auto}"


def _cost_line(r: dict[str, Any], who: str) -> str:
    """What the batch cost, in all, per record (RM and sen) and per field."""
    sen, records, fields = int(r["cost_sen"]), int(r["records"]), int(r["fields"])
    each = (
        f"{ringgit(round(sen / records))} per record ({sen / records:.0f} sen)"
        if records
        else ("no record built")
    )
    return (
        f"cost: {ringgit(sen)} paid to {who}; {each} over {records} records; "
        f"{ringgit_each(sen, fields)} per field over {fields} fields (auto-accepted included)"
    )


def pay_line(stores: Stores, crowd: CrowdSettings) -> str:
    """Where the workers' pay stands (held, credited, voided) and the rates proposed from
    their measured times, with what a median careful worker would earn an hour."""
    led = schema.ledger
    with stores.db.connect() as conn:
        sums = {
            str(status): (int(n), int(sen))
            for status, n, sen in conn.execute(
                select(led.c.status, func.count(), func.sum(led.c.amount_sen)).group_by(
                    led.c.status
                )
            )
        }
    parts = [
        f"{label} {ringgit(sums.get(status, (0, 0))[1])} ({sums.get(status, (0, 0))[0]} answers)"
        for status, label in (
            ("credited", "credited after a passed check"),
            ("held", "held for a check"),
            ("voided", "voided (paused by gold)"),
        )
    ]
    proposals = [p for p in propose_rates(stores.db, crowd) if p.proposed_sen is not None]
    rates = ", ".join(
        f"{p.field_type} {price(p.proposed_sen or 0)} (median worker "
        f"{(p.median_ms or 0) / 1000:.1f} s a task, so "
        f"{ringgit(p.per_hour_sen(p.proposed_sen) or 0)} an hour)"
        for p in proposals
    )
    floor = ringgit(crowd.pay_floor_sen_per_hour)
    proposed = (
        f"Rates proposed from the measured times to pay at least {floor} an hour: {rates} "
        "(`kerani pay rates`, `kerani pay confirm`)"
        if rates
        else "too few timed answers to propose rates yet"
    )
    return f"Pay, at the default rates: {'; '.join(parts)}. {proposed}."


def _estimates_line(r: dict[str, Any]) -> str:
    """Each source's estimated accuracy as the batch report gives it, without the truth."""
    parts = []
    for e in r.get("sources", []):
        if not e["fields"]:
            continue
        label = SOURCE_LABELS.get(ValueSource(e["source"]), e["source"])
        if e["estimate"] is None:
            parts.append(f"{label}, {e['fields']} fields: {e['evidence']}")
        else:
            parts.append(
                f"{label}, {e['fields']} fields: {e['estimate']:.1%} "
                f"(95% interval {e['low']:.1%} to {e['high']:.1%}; {e['evidence']})"
            )
    if not parts:
        return f"estimated without the truth: {NOT_ENOUGH}"
    return "estimated without the truth: " + "; ".join(parts)


def print_summary(console: Console, batches: list[DemoBatch], url: str, simulated: bool) -> None:
    """Print per batch: pages, fields, auto-accepted, sent to people, accuracy, and exports."""
    who = "simulated workers" if simulated else "people"
    console.print()
    for b in batches:
        r, s = b.report or {}, b.score
        routing = r.get("routing", {})
        pages = r.get("pages_created", 0) + r.get("pages_existing", 0) + r.get("pages_linked", 0)
        auto, tasks = routing.get("auto_accepted", 0), routing.get("tasks_created", 0)
        console.print(
            f"[bold]{b.label}[/] (batch {b.batch_id}): {pages} pages, "
            f"{auto + tasks} fields: {auto} auto-accepted, {tasks} sent to people "
            f"({b.human_answers} answers from {who})"
        )
        if s is not None:
            console.print(f"  {_score_line(s, b.truth_waiting, b.template)}")
        if b.batch_report is not None:
            console.print(f"  {_estimates_line(b.batch_report)}")
            n = b.batch_report.get("prefilled_confirmations", 0)
            console.print(f"  {n} fields rest partly on a confirmation of the pre-filled OCR guess")
            console.print(f"  {_cost_line(b.batch_report, who)}")
        if b.waiting:
            console.print(f"  {b.waiting} fields are still waiting for people")
        for name, where in (b.exports or {}).items():
            console.print(f"  {export_label(name)}: {where}", soft_wrap=True)
    console.print(f"Review page was served at {url}/signin", soft_wrap=True)
