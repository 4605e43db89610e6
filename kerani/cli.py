"""The `kerani` command: demo, submit, serve, status, crowd, export, report, people, gold,
calibration."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from kerani.core.errors import KeraniError
from kerani.core.settings import Settings
from kerani.core.vocabulary import Language, Role

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from kerani.forms.catalogue import StoredTemplate


class _ErrorBoundary(TyperGroup):
    """The CLI's one error boundary: Kerani's errors become one line and their exit code.

    A traceback is printed only with --verbose; anything else is a bug and keeps its own.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeraniError as e:
            if ctx.meta.get(VERBOSE):
                console.print_exception()
            console.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(int(e.exit_code)) from e


app = typer.Typer(
    cls=_ErrorBoundary,
    help="Kerani: digitise paper records with pre-OCR and micro workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
people_app = typer.Typer(help="Workers, operators and agency users.", no_args_is_help=True)
app.add_typer(people_app, name="people")
bench_app = typer.Typer(
    help="Benchmarks that print figures (add --json for scripts).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
dataset_app = typer.Typer(
    help="Ground-truth datasets (pages/ + truth.jsonl).", no_args_is_help=True
)
app.add_typer(dataset_app, name="dataset")
gold_app = typer.Typer(
    help="Gold snippets: staff keying (blind, twice) and harvesting the crowd's.",
    no_args_is_help=True,
)
app.add_typer(gold_app, name="gold")
calibration_app = typer.Typer(
    help="Auto-accept rules refitted from the fields people settled.", no_args_is_help=True
)
app.add_typer(calibration_app, name="calibration")
token_app = typer.Typer(
    help="Agencies' API tokens (the agency API under /api/v1).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
pay_app = typer.Typer(
    help="Workers' pay: rates from measured effort, statements, payouts.", no_args_is_help=True
)
app.add_typer(pay_app, name="pay")
template_app = typer.Typer(
    help="Form templates, stored in the database with a version each.", no_args_is_help=True
)
app.add_typer(template_app, name="template")
console = Console()
VERBOSE = "kerani.verbose"

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where state lives (default: $KERANI_DATA_DIR).")
]


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings.load(data_dir)
    settings.core.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _quiet_prefect(ctx: typer.Context, verbose: bool) -> None:
    # The error boundary shows a traceback with --verbose (the context tree shares meta).
    ctx.meta[VERBOSE] = verbose
    # Prefect's per-task log lines drown the progress bars; --verbose brings them back.
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        logging.getLogger("prefect").setLevel(logging.WARNING)
        # Each page the OCR could not read is printed with its reason once the run is done;
        # its log line in the middle of the progress bar would say it twice.
        logging.getLogger("kerani.ocr.preocr").setLevel(logging.ERROR)
    # The temporary server's telemetry write races the client on its SQLite file.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def _print_figures(figures: dict[str, Any], as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one aligned line per figure."""
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        if isinstance(value, dict):  # a group of figures (a mode, a source): one line each
            _print_figures({f"{key}.{k}": v for k, v in value.items()}, as_json=False)
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        console.print(f"{key:45s} {shown}", soft_wrap=True, markup=False)


@app.command()
def demo(
    ctx: typer.Context,
    simulate_crowd: Annotated[
        bool, typer.Option("--simulate-crowd", help="Simulated workers answer the micro tasks.")
    ] = False,
    forms: Annotated[int, typer.Option(help="How many synthetic forms to render.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for forms and simulated workers.")] = 7,
    data_dir: DataDir = None,
    verbose: bool = False,
) -> None:
    """Digitise the bundled samples end to end and print accuracy against the known truth."""
    from kerani.demo import run_demo

    _quiet_prefect(ctx, verbose)
    base = _settings(data_dir)
    # The demo starts clean each time, in its own folder, so its figures are repeatable.
    workdir = base.core.data_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    settings = Settings.load(workdir)
    if base.database.url or base.blobs.url:
        settings = settings.model_copy(update={"database": base.database, "blobs": base.blobs})
    console.print(f"Demo data folder: {workdir}", soft_wrap=True)
    raise typer.Exit(run_demo(settings, console, simulate_crowd, forms, seed))


@app.command()
def submit(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files, folders or zips of scans.")],
    template: Annotated[
        str,
        typer.Option(
            help="A stored template, NAME or NAME:VERSION, or a YAML file (stored first as "
            "the next version of its name)."
        ),
    ],
    agency: Annotated[
        str | None, typer.Option(help="The agency user it is for: only they see its pages.")
    ] = None,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment",
            help="Send the batch to the submit-batch deployment's work pool (PREFECT_API_URL) "
            "instead of running it here; the paths must be readable by the pool's workers.",
        ),
    ] = False,
    data_dir: DataDir = None,
    verbose: bool = False,
) -> None:
    """Submit a batch of scans: ingest, pre-OCR, and publish micro tasks for doubtful fields."""
    from kerani.storage.stores import open_stores
    from kerani.terminal import submit_with_progress

    _quiet_prefect(ctx, verbose)
    if deployment:
        from kerani.flows.deployments import send_batch

        sent = send_batch(paths, template, agency)
        console.print(
            f"Sent to {sent.deployment} on {sent.api_url}: flow run [bold]{sent.flow_run_id}[/]. "
            "A worker of its pool ingests and reads it; `kerani status` shows the batch "
            "once it is in.",
            soft_wrap=True,
        )
        return
    settings = _settings(data_dir)
    stores = open_stores(settings)
    # The template is checked and stored before any file is touched or any flow starts: a
    # broken one is one line, with no flow run, traceback or progress bar before it.
    stored = _stored_template(stores.db, template, agency)
    report = submit_with_progress(console, settings, stores, paths, stored.ref, "scans", agency)
    linked, again = report.get("pages_linked", 0), report["pages_existing"]
    console.print(
        f"Batch [bold]{report['batch_id']}[/] ({_shown(stored.ref)}): "
        f"{report['pages_created']} new pages"
        + (f", {linked} sent before in an earlier batch (not read again)" if linked else "")
        + (f", {again} already in this batch" if again else ""),
        soft_wrap=True,
    )
    _print_outcome(report["batch_id"], report["accepted_files"], report["routing"], stores.db)


def _stored_template(db: Engine, ref: str, agency: str | None = None) -> StoredTemplate:
    """Resolve `--template` (for `agency`'s batch: among the templates it may use), saying
    when a file became a new stored version."""
    from kerani.forms.catalogue import resolve_template
    from kerani.people.workers import agency_named

    agency_id = agency_named(db, agency) if agency else None
    stored = resolve_template(db, ref, agency_id=agency_id)
    if stored.created:
        console.print(f"Stored template {_shown(stored.ref)} from {_shown(ref)}", soft_wrap=True)
    return stored


def _print_outcome(
    batch_id: str, accepted_files: int | None, routing: dict[str, int], db: Engine
) -> None:
    """What a submit or a retry did: refusals, pages not read, fields routed; exits non-zero
    when not one page of the batch could be read (a script must not read that as success)."""
    from kerani.core.errors import ExitCode
    from kerani.records.progress import batch_progress

    _print_refusals(batch_id, accepted_files, db)
    console.print(
        f"{routing['auto_accepted']} fields auto-accepted, "
        f"{routing['tasks_created']} sent to people"
    )
    progress = batch_progress(db, batch_id)[0]
    failed = progress["pages_failed"]
    if progress["pages"] - failed > 0:
        if failed:
            console.print(
                f"[yellow]{_count(failed, 'page')} not read:[/] fix the template or the scans, "
                f"then `kerani retry {batch_id[:12]} --template NAME[:VERSION]`",
                soft_wrap=True,
            )
        return
    if failed:
        console.print(
            f"[red]nothing read:[/] not one of the batch's {_count(failed, 'page')} could be "
            f"read (reasons above); fix the template or the scans, then "
            f"`kerani retry {batch_id[:12]} --template NAME[:VERSION]`",
            soft_wrap=True,
        )
    else:
        console.print("[red]nothing submitted:[/] every file was refused", soft_wrap=True)
    raise typer.Exit(ExitCode.input_file)


@app.command()
def retry(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id or a unique prefix of it.")],
    template: Annotated[
        str | None,
        typer.Option(
            help="Read the failed pages with this template (NAME, NAME:VERSION or a YAML "
            "file) instead of the batch's own version."
        ),
    ] = None,
    data_dir: DataDir = None,
    verbose: bool = False,
) -> None:
    """Read a batch's failed pages again; pages already read, and what people did on them,
    stay as they are."""
    from kerani.records.progress import resolve_batch_id
    from kerani.storage.stores import open_stores
    from kerani.terminal import retry_with_progress

    _quiet_prefect(ctx, verbose)
    settings = _settings(data_dir)
    stores = open_stores(settings)
    batch_id = resolve_batch_id(stores.db, batch)
    ref = _stored_template(stores.db, template).ref if template else None
    result = retry_with_progress(console, settings, stores, batch_id, ref)
    with_what = f" with {_shown(result['template'])}" if result["template"] else ""
    console.print(
        f"Batch [bold]{batch_id}[/]: {_count(result['pages_reset'], 'page')} read again"
        f"{with_what}, {_count(result['pages_kept'], 'page')} kept as they were",
        soft_wrap=True,
    )
    _print_outcome(batch_id, None, result["routing"], stores.db)


def _print_refusals(batch_id: str, accepted_files: int | None, db: Engine) -> None:
    """One line per file or page refused, or not read by the OCR, then the counts (of files
    too, unless `accepted_files` is None: a retry takes no file in)."""
    from kerani.records.report import batch_refusals

    refusals = batch_refusals(db, batch_id)
    for r in refusals:
        what = "[yellow]not read[/]" if r.kind == "unread" else "[red]rejected[/]"
        console.print(f"{what} {_shown(r.label)}: {_shown(r.reason)}", soft_wrap=True)
    files = sum(r.kind == "file" for r in refusals)
    ranges = [r for r in refusals if r.kind == "pages"]
    not_taken = sum(r.page_count or 1 for r in ranges)
    at_least = "at least " if any(r.page_count is None for r in ranges) else ""
    unread = sum(r.kind == "unread" for r in refusals)
    taken = (
        f"{_count(accepted_files, 'file')} taken in, {files} refused; "
        f"{at_least}{_count(not_taken, 'page')} not taken, "
        if accepted_files is not None
        else ""
    )
    console.print(f"{taken}{_count(unread, 'page')} the OCR could not read", soft_wrap=True)


def _shown(text: str) -> str:
    """A file name or reason as the console prints it: no markup ('[' in a name prints as
    typed) and no control characters (an escape sequence in a name must not reach the
    terminal, nor a newline start a line of its own)."""
    from rich.markup import escape

    from kerani.core.text import visible

    return escape(visible(text))


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Default: $KERANI_REVIEW_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: $KERANI_REVIEW_PORT")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Web server processes (default: $KERANI_SERVE_PROCESSES, one per core up to 4).",
        ),
    ] = None,
) -> None:
    """Serve the review page, the status pages and the JSON API."""
    import uvicorn

    from kerani.review_ui.app import APP_FACTORY
    from kerani.review_ui.server import uvicorn_options

    settings = _settings(data_dir)
    h, p = host or settings.review.host, port or settings.review.port
    processes = workers or settings.serve.processes
    pool = _prepare_serving(settings, processes)
    each = f", {pool} database connections each" if pool is not None else ""
    console.print(f"Review page on http://{h}:{p}/signin ({processes} processes{each})")
    options = uvicorn_options(settings.review)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=processes,
        host=h,
        port=p,
        log_level="info",
        **options,
    )


def _prepare_serving(settings: Settings, processes: int) -> int | None:
    """Migrate once, here, and hand the serving processes their settings; return each one's
    PostgreSQL connections (None on SQLite, whose pool stays SQLAlchemy's).

    The processes build their settings from the environment (review_ui.app.app_from_env):
    the data folder and their share of PostgreSQL's connections go there, never into argv.
    """
    from kerani.storage.database import close_engine, pool_for_processes, server_max_connections
    from kerani.storage.stores import open_stores

    # Migrated before the processes start, so that they never race to migrate a new database.
    db = open_stores(settings).db
    most = server_max_connections(db)
    close_engine(settings.database_url)
    pool = pool_for_processes(processes, settings.serve.db_connections, most)
    os.environ["KERANI_DATA_DIR"] = str(settings.core.data_dir)
    os.environ["KERANI_SERVE_PROCESSES"] = str(processes)
    os.environ["KERANI_SERVE_DB_CONNECTIONS"] = str(pool.most * processes)
    return pool.most if most is not None else None


@app.command()
def status(
    batch: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Show each batch's progress: pages, fields settled, tasks waiting, records."""
    from rich.text import Text

    from kerani.records.progress import batch_progress, resolve_batch_id
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    rows = batch_progress(db, resolve_batch_id(db, batch) if batch else None)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table()
    table.add_column("batch", no_wrap=True)
    for col in (
        "name",
        "status",
        "template",
        "pages",
        "fields",
        "auto",
        "people",
        "waiting",
        "settled",
        "records",
    ):
        table.add_column(col)
    for b in rows:
        version = f":{b['template_version']}" if b["template_version"] else ""
        failed = f" ({b['pages_failed']} not read)" if b["pages_failed"] else ""
        table.add_row(
            b["batch_id"][:12],
            Text(b["name"] or ""),
            b["status"],
            Text(f"{b['template']}{version}"),
            f"{b['pages']}{failed}",
            str(b["fields"]),
            str(b["auto_accepted"]),
            str(b["settled_by_people"]),
            str(b["waiting_for_people"]),
            f"{b['percent_settled']}%",
            str(b["records"]),
        )
    console.print(table)
    for b in rows:
        for r in b["rejected"]:
            line = f"[red]rejected[/] {_shown(r['file'])}: {_shown(r['reason'])}"
            console.print(line, soft_wrap=True)
        for pg in b["failed_pages"]:
            line = (
                f"[yellow]not read[/] {b['batch_id'][:12]} {_shown(pg['file'])} page "
                f"{pg['page']}: {_shown(pg['reason'] or 'no reason recorded')}"
            )
            console.print(line, soft_wrap=True)
        if b["failed_pages"]:
            console.print(
                f"  retry: kerani retry {b['batch_id'][:12]} [--template NAME[:VERSION]]",
                soft_wrap=True,
                markup=False,
            )
    from kerani.microtasks.gold import gold_counts
    from kerani.people.workers import workers_on_probation

    on_probation = workers_on_probation(db)
    if on_probation and not sum(gold_counts(db).by_origin.values()):
        # Nothing else would say why nothing settles: probation is passed on gold only.
        console.print(
            f"[yellow]{on_probation} workers on probation and no gold to pass it:[/] their "
            "answers wait. Key gold (kerani gold sample / add), or vouch for staff with "
            "kerani people add NAME --proven.",
            soft_wrap=True,
        )


@app.command()
def export(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id or a unique prefix of it.")],
    data_dir: DataDir = None,
    verbose: bool = False,
) -> None:
    """Assemble settled records of a batch; export every document as CSV, Parquet and JSON
    Lines with a data dictionary and an audit trail, hOCR, report."""
    from kerani.core.settings import using_settings
    from kerani.flows.digitise import finish_batch
    from kerani.records.exports import export_label
    from kerani.records.progress import resolve_batch_id
    from kerani.storage.stores import open_stores

    _quiet_prefect(ctx, verbose)
    settings = _settings(data_dir)
    batch_id = resolve_batch_id(open_stores(settings).db, batch)
    with using_settings(settings):  # the flow reads them; they are no flow parameter
        result: dict[str, Any] = finish_batch(batch_id)
    for name, where in result["exports"].items():
        console.print(f"{export_label(name)}: {where}", soft_wrap=True)
    layers = result["text_layers"]
    console.print(f"hocr: {layers['where']} ({layers['pages']} pages)", soft_wrap=True)
    report = result["report"]
    console.print(
        f"{report['records']} records ({report['records_flagged']} with a broken rule), "
        f"{report['unreadable']} fields unreadable, cost {report['cost']}"
    )


@app.command()
def report(
    batch: Annotated[str, typer.Argument(help="Batch id or a unique prefix of it.")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Show a batch's report: counts, accuracy indicators, cost, unreadable fields."""
    from rich.markdown import Markdown

    from kerani.records.progress import resolve_batch_id
    from kerani.records.report import batch_report, report_markdown
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    result = batch_report(db, resolve_batch_id(db, batch))
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        console.print(Markdown(report_markdown(result)))


@people_app.command("add")
def people_add(
    name: str,
    role: Annotated[str, typer.Option(help="worker, operator or agency")] = Role.WORKER,
    trusted: Annotated[bool, typer.Option(help="May arbitrate disputed fields.")] = False,
    cleared: Annotated[bool, typer.Option(help="May see restricted fields.")] = False,
    proven: Annotated[
        bool,
        typer.Option(help="Skips probation: answers count before any gold (staff you vouch for)."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Add a person and print their access code (shown only once)."""
    from kerani.people.workers import add_person
    from kerani.storage.stores import open_stores

    code = add_person(
        open_stores(_settings(data_dir)).db,
        name,
        role,
        trusted=trusted,
        cleared=cleared,
        proven=proven,
    )
    shown = (("trusted", trusted), ("cleared", cleared), ("proven", proven))
    flags = "".join(f", {f}" for f, on in shown if on)
    console.print(f"{role}{flags} {name}: access code [bold]{code}[/]")


@people_app.command("invite")
def people_invite(
    name: str,
    trusted: Annotated[bool, typer.Option(help="May arbitrate disputed fields.")] = False,
    cleared: Annotated[bool, typer.Option(help="May see restricted fields.")] = False,
    language: Annotated[
        str, typer.Option(help="en or ms: the pages' first language.")
    ] = Language.ENGLISH,
    data_dir: DataDir = None,
) -> None:
    """Invite a worker: print their worker number and a one-time invite code for /join.

    A worker of that name who has not joined yet gets a fresh code (the old one stops
    working); one who has joined gets a new code with `kerani people reset-pin NUMBER`.
    """
    from kerani.people.workers import invite_or_reinvite
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    invite, again = invite_or_reinvite(
        open_stores(settings).db,
        name,
        settings.review.invite_days,
        trusted=trusted,
        cleared=cleared,
        language=language,
    )
    said = "invited again" if again else "invited"
    console.print(
        f"worker {invite.name} {said}: number [bold]{invite.worker_id}[/], invite code "
        f"[bold]{invite.code}[/] (valid {settings.review.invite_days} days; they choose a PIN "
        "at /join)"
    )


def _worker_number(text: str) -> int:
    from kerani.core.errors import BadInputError

    if not (text.isascii() and text.isdigit() and len(text) < 10):
        raise BadInputError(f"a worker number is digits, like 17, not {text!r}")
    return int(text)


@people_app.command("reset-pin")
def people_reset_pin(
    number: Annotated[str, typer.Argument(help="The worker's number.")],
    data_dir: DataDir = None,
) -> None:
    """A worker forgot their PIN: print a new one-time code (their PIN and sessions end);
    they choose a new PIN at /join with it. Audited."""
    from kerani.people.workers import reset_pin
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    days = settings.review.invite_days
    invite = reset_pin(open_stores(settings).db, _worker_number(number), days)
    console.print(
        f"worker {invite.name} (number {invite.worker_id}): one-time code "
        f"[bold]{invite.code}[/] (valid {days} days; they choose a new PIN at /join)"
    )


@people_app.command("language")
def people_language(
    number: Annotated[str, typer.Argument(help="The worker's number.")],
    language: Annotated[str, typer.Argument(help="en or ms.")],
    data_dir: DataDir = None,
) -> None:
    """Set the language of a worker's pages (they may switch it themselves too). Audited."""
    from kerani.people.workers import set_worker_language
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    changed = set_worker_language(db, _worker_number(number), language)
    console.print(f"worker {number}: language {language}" + ("" if changed else " already"))


@people_app.command("list")
def people_list(
    search: Annotated[str, typer.Option(help="Only names containing this.")] = "",
    standing: Annotated[
        str, typer.Option("--status", help="probation, worker, suspect, arbiter or paused.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    data_dir: DataDir = None,
) -> None:
    """List the workers: standing, answers, gold, accuracy with its interval, speed, pay."""
    from kerani.microtasks.crowd import worker_records
    from kerani.microtasks.ledger import ringgit
    from kerani.storage.stores import open_stores

    records = worker_records(open_stores(_settings(data_dir)).db, search, standing)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in records], indent=2))
        return
    table = Table()
    for col in (
        "id",
        "name",
        "standing",
        "answers",
        "gold",
        "accuracy (95% interval)",
        "s/answer",
        "earned",
    ):
        table.add_column(col)
    for r in records:
        accuracy = "no gold yet"
        if r.accuracy is not None and r.accuracy_low is not None and r.accuracy_high is not None:
            accuracy = f"{r.accuracy:.0%} ({r.accuracy_low:.0%}–{r.accuracy_high:.0%})"
        standing_text = r.status + (", cleared" if r.cleared else "")
        table.add_row(
            str(r.id),
            r.name,
            standing_text,
            str(r.answers),
            f"{r.gold_correct} of {r.gold_seen}",
            accuracy,
            "–" if r.seconds_per_answer is None else f"{r.seconds_per_answer}",
            ringgit(r.earned_sen),
        )
    console.print(table)


@people_app.command("set")
def people_set(
    name: str,
    paused: Annotated[
        bool | None,
        typer.Option(
            "--paused/--unpaused",
            help="Pause (leases go back, fields settled only on their votes reopen) or unpause.",
        ),
    ] = None,
    trusted: Annotated[
        bool | None, typer.Option("--trusted/--not-trusted", help="May arbitrate disputes.")
    ] = None,
    cleared: Annotated[
        bool | None, typer.Option("--cleared/--not-cleared", help="May see restricted fields.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Change a worker's standing; the change is audited."""
    from kerani.microtasks.standing import set_standing
    from kerani.people.workers import person_named
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    db = open_stores(settings).db
    worker_id = person_named(db, name, Role.WORKER, "worker")
    change = set_standing(
        db, None, worker_id, settings.crowd, paused=paused, trusted=trusted, cleared=cleared
    )
    console.print(f"{name}: {', '.join(change.changed) or 'nothing to change'}")


@people_app.command("revoke")
def people_revoke(
    name: str,
    yes: Annotated[
        bool, typer.Option("--yes", help="Say you mean it: it cannot be undone.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """End a worker's access for good (sessions, access code, PIN); their answers stay."""
    from kerani.core.errors import BadInputError
    from kerani.microtasks.standing import revoke
    from kerani.people.workers import person_named
    from kerani.storage.stores import open_stores

    if not yes:
        raise BadInputError("revoking cannot be undone: add --yes")
    settings = _settings(data_dir)
    db = open_stores(settings).db
    change = revoke(db, None, person_named(db, name, Role.WORKER, "worker"), settings.crowd)
    console.print(f"{name}: {', '.join(change.changed)}")


@app.command()
def crowd(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    data_dir: DataDir = None,
) -> None:
    """How the crowd's work stands: the queue by field type and age, leases, pace, ETA."""
    from kerani.microtasks.crowd import crowd_health
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    health = crowd_health(open_stores(settings).db, settings.crowd)
    if as_json:
        typer.echo(json.dumps(health.as_json(), indent=2))
        return
    console.print(
        f"{health.active_workers} workers active in the last 15 minutes; "
        f"{health.answers_last_hour} answers and {health.fields_settled_last_hour} fields "
        f"settled in the last hour; {health.leases_held} tasks held, "
        f"{health.leases_expired} holds run out",
        soft_wrap=True,
    )
    table = Table(title="Open tasks by field type and wait")
    for col in ("field type", "open", "< 1 h", "1–24 h", "> 1 day", "oldest (h)"):
        table.add_column(col)
    for o in health.open_tasks:
        table.add_row(
            o.field_type,
            str(o.total),
            str(o.under_an_hour),
            str(o.under_a_day),
            str(o.older),
            str(o.oldest_hours),
        )
    console.print(table)
    for b in health.batches:
        eta = "no fields settled in the last hour" if b.eta_hours is None else f"{b.eta_hours} h"
        console.print(f"batch {b.batch_id[:12]}: {b.open_fields} fields open, done in {eta}")
    for w in health.waiting:
        console.print(
            f"[yellow]waiting[/] {w.why} on a {w.field_type} field of batch {w.batch_id[:12]}: "
            f"{w.answers} answers, {w.may_take} workers may take it"
        )


@token_app.command("create")
def token_create(
    agency: Annotated[str, typer.Argument(help="The agency user the token acts for.")],
    label: Annotated[str, typer.Option(help="What the token is for (shown in listings).")],
    data_dir: DataDir = None,
) -> None:
    """Make an API token for an agency; print it and its webhook secret (shown only once)."""
    from kerani.people.api_tokens import create_token
    from kerani.people.workers import agency_named
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    made = create_token(db, agency_named(db, agency), label)
    console.print(
        f"API token {made.id} for {agency} ({made.label}): [bold]{made.token}[/]\n"
        f"webhook secret: [bold]{made.webhook_secret}[/]\n"
        "Shown only now: keep both where the agency's program reads them "
        "(Authorization: Bearer <token>; the secret checks Kerani-Signature).",
        soft_wrap=True,
        highlight=False,
    )


@token_app.command("list")
def token_list(
    agency: Annotated[str | None, typer.Argument(help="Only this agency's tokens.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Every API token: its id, agency, label, first characters, and when it was last used."""
    from rich.text import Text

    from kerani.people.api_tokens import list_tokens
    from kerani.people.workers import agency_named
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    tokens = list_tokens(db, agency_named(db, agency) if agency else None)
    if not tokens:
        console.print("No API token yet: `kerani token create AGENCY --label TEXT`.")
        return
    table = Table()
    for col in ("id", "agency", "label", "starts with", "made (UTC)", "last used", "revoked"):
        table.add_column(col)
    for t in tokens:
        table.add_row(
            str(t["id"]),
            Text(t["agency"]),
            Text(t["label"]),
            t["shown"] + "…",
            t["created_at"].strftime("%Y-%m-%d %H:%M"),
            t["last_used_at"].strftime("%Y-%m-%d %H:%M") if t["last_used_at"] else "never",
            t["revoked_at"].strftime("%Y-%m-%d %H:%M") if t["revoked_at"] else "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (`kerani token list`).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API token: it stops working at once."""
    from kerani.people.api_tokens import revoke_token
    from kerani.storage.stores import open_stores

    done = revoke_token(open_stores(_settings(data_dir)).db, token_id)
    console.print(f"token {token_id} " + ("revoked" if done else "was revoked already"))


@template_app.command("add")
def template_add(
    path: Annotated[Path, typer.Argument(help="The template's YAML file.")],
    data_dir: DataDir = None,
) -> None:
    """Check a template and store it as the next version of its name; print the version."""
    from kerani.forms.catalogue import add_template_file
    from kerani.storage.stores import open_stores

    stored = add_template_file(open_stores(_settings(data_dir)).db, path)
    if stored.created:
        console.print(f"Stored {_shown(stored.ref)}", soft_wrap=True)
    else:
        console.print(
            f"{_shown(stored.ref)} already holds this template: no new version", soft_wrap=True
        )


@template_app.command("list")
def template_list(
    name: Annotated[str | None, typer.Argument(help="Only this template's versions.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Every stored template version, with where it came from and how many batches use it."""
    from rich.text import Text

    from kerani.forms.catalogue import template_versions
    from kerani.storage.stores import open_stores

    versions = template_versions(open_stores(_settings(data_dir)).db, name)
    if not versions:
        console.print(
            "No template stored yet: `kerani template add FILE`, or submit with a bundled one "
            "(bantuan_form, receipt), which stores it.",
            soft_wrap=True,
        )
        return
    table = Table()
    for col in ("template", "version", "from", "stored at (UTC)", "batches"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            Text(v.name),
            str(v.version),
            Text(v.origin),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            str(v.batches),
        )
    console.print(table)


@template_app.command("show")
def template_show(
    ref: Annotated[str, typer.Argument(help="NAME (its latest version) or NAME:VERSION.")],
    data_dir: DataDir = None,
) -> None:
    """Print a stored template version's YAML, as it was given."""
    from kerani.forms.catalogue import stored_template, template_content
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    stored = stored_template(db, ref)
    typer.echo(f"# {stored.ref}")
    typer.echo(template_content(db, stored.id).rstrip("\n"))


TemplateOption = Annotated[
    str | None, typer.Option("--template", help="Only this template (default: every one).")
]


@calibration_app.command("refit")
def calibration_refit(template: TemplateOption = None, data_dir: DataDir = None) -> None:
    """Refit each template's auto-accept rule from blind-keyed and audited fields."""
    from kerani.microtasks.refit import refit_all
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    refits = refit_all(
        open_stores(settings).db,
        target=settings.ocr.calibration_target,
        min_samples=settings.ocr.calibration_min_samples,
        folder=settings.ocr.calibration_dir,
        template=template,
    )
    if not refits:
        console.print("No template has pages yet.")
    for r in refits:
        done = f"refitted on {r.fields} fields" if r.refitted else "not refitted"
        console.print(f"{r.template}: {done}: {r.changes}", soft_wrap=True, markup=False)


@calibration_app.command("history")
def calibration_history_command(template: TemplateOption = None, data_dir: DataDir = None) -> None:
    """Show every stored refit, newest first: when, from how many fields, what changed."""
    from rich.text import Text

    from kerani.microtasks.refit import calibration_history
    from kerani.storage.stores import open_stores

    rows = calibration_history(open_stores(_settings(data_dir)).db, template)
    if not rows:
        console.print("No refits yet.")
        return
    table = Table()
    for col in ("fitted at (UTC)", "template", "fields", "what changed"):
        table.add_column(col)
    for r in rows:
        # Text, not markup: a template path or a change line may hold square brackets.
        table.add_row(
            r.fitted_at.strftime("%Y-%m-%d %H:%M"), Text(r.template), str(r.fields), Text(r.changes)
        )
    console.print(table)


@pay_app.command("rates")
def pay_rates_command(data_dir: DataDir = None) -> None:
    """Each task kind's measured time, its rate now and the rate proposed to meet the floor."""
    from kerani.microtasks.ledger import price, ringgit
    from kerani.microtasks.pay_rates import propose_rates
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    crowd = settings.crowd
    proposals = propose_rates(open_stores(settings).db, crowd)
    if not proposals:
        console.print("No task kinds yet: no work has been offered.")
        return
    table = Table()
    for col in (
        "field type",
        "kind",
        "timed answers",
        "median",
        "rate now",
        "per hour now",
        "proposed",
        "per hour proposed",
        "cost per field proposed",
    ):
        table.add_column(col)
    for p in proposals:
        now_h, new_h = p.per_hour_sen(p.current_sen), p.per_hour_sen(p.proposed_sen)
        cost = p.cost_per_field_sen(p.proposed_sen)
        table.add_row(
            p.field_type,
            p.pay_kind,
            str(p.measured),
            "–" if p.median_ms is None else f"{p.median_ms / 1000:.1f} s",
            price(p.current_sen),
            "–" if now_h is None else ringgit(now_h),
            f"too few (needs {crowd.pay_min_timed_answers})"
            if p.proposed_sen is None
            else price(p.proposed_sen),
            "–" if new_h is None else ringgit(new_h),
            "–" if cost is None else f"{cost:.1f} sen",
        )
    console.print(table)
    console.print(
        f"Floor: {ringgit(crowd.pay_floor_sen_per_hour)} an hour worked at the median time of "
        "careful workers (past probation, not paused, no failed check pending). "
        "`kerani pay confirm` puts the proposed rates in force.",
        soft_wrap=True,
    )


@pay_app.command("confirm")
def pay_confirm(data_dir: DataDir = None) -> None:
    """Put the proposed rates in force (kinds with too few timed answers keep theirs)."""
    from kerani.microtasks.ledger import price
    from kerani.microtasks.pay_rates import confirm_rates, propose_rates
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    db = open_stores(settings).db
    for p in confirm_rates(db, None, propose_rates(db, settings.crowd), settings.crowd):
        console.print(
            f"{p.field_type} ({p.pay_kind}): {price(p.current_sen)} -> "
            f"{price(p.proposed_sen or 0)} per answer",
            markup=False,
        )


@pay_app.command("statement")
def pay_statement(
    number: Annotated[int, typer.Argument(help="The worker's number.")],
    week: Annotated[
        str | None, typer.Option(help="ISO week, e.g. 2026-W49 (default: this week).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """A worker's weekly statement: answers by kind, pay credited, held or voided, and why."""
    from rich.text import Text

    from kerani.microtasks.ledger import ringgit
    from kerani.microtasks.statements import parse_week, statement, week_start
    from kerani.storage.database import utcnow
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    start = parse_week(week) if week else week_start(utcnow())
    st = statement(open_stores(settings).db, number, start, settings.crowd)
    console.print(Text(f"Worker {st.worker_id} ({st.name}), week {st.week} (Malaysia time)"))
    table = Table()
    for col in ("field type", "kind", "answers", "amount", "pay", "why"):
        table.add_column(col)
    for x in st.lines:
        table.add_row(
            x.field_type, x.pay_kind, str(x.answers), ringgit(x.amount_sen), x.status, x.reason
        )
    console.print(table)
    hourly = "–" if st.per_hour_sen is None else ringgit(st.per_hour_sen)
    console.print(
        f"credited {ringgit(st.total('credited'))} (paid out {ringgit(st.paid_out_sen)}), "
        f"held {ringgit(st.total('held'))}, voided {ringgit(st.total('voided'))}; "
        f"{hourly} per hour over {st.worked_ms / 60_000:.0f} min of timed work",
        markup=False,
    )


@pay_app.command("payout")
def pay_payout(
    week: Annotated[
        str | None, typer.Option(help="Pay out up to the end of this ISO week (default: last).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the CSV sheet here.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Gather credited pay not paid out yet into one payout (once per week) and its CSV."""
    from datetime import timedelta

    from kerani.microtasks.ledger import ringgit
    from kerani.microtasks.statements import make_payout, parse_week, week_label, week_start
    from kerani.records.payout_sheet import payout_csv, payout_filename
    from kerani.storage.database import utcnow
    from kerani.storage.stores import open_stores

    settings = _settings(data_dir)
    chosen = week or week_label(week_start(utcnow()) - timedelta(days=7))
    made = make_payout(
        open_stores(settings).db, None, parse_week(chosen) + timedelta(days=7), settings.crowd
    )
    target = out or Path(payout_filename(made))
    target.write_text(payout_csv(made), encoding="utf-8")
    said = "made" if made.new else "made before; written again"
    console.print(
        f"payout {made.id} ({said}): {len(made.rows)} workers, {ringgit(made.total_sen)}, "
        f"up to the end of {chosen} -> {target}",
        markup=False,
    )


@dataset_app.command("from-sroie")
def dataset_from_sroie(
    sroie_dir: Annotated[Path, typer.Argument(help="SROIE folder with img/ and box/.")],
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (pages/, truth.jsonl).")],
) -> None:
    """Convert SROIE receipts into a ground-truth dataset: one field per text line."""
    from kerani.evaluation.ground_truth import sroie_to_dataset

    count = sroie_to_dataset(sroie_dir, out_dir)
    console.print(f"{count} receipts written to {out_dir}", soft_wrap=True)


@dataset_app.command("degrade")
def dataset_degrade(
    source: Annotated[Path, typer.Argument(help="Ground-truth dataset folder to copy.")],
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write the copy to.")],
    scale: Annotated[
        float, typer.Option(help="Scale every page by this (0.5: a 300 dpi scan at 150 dpi).")
    ] = 1.0,
    jpeg_quality: Annotated[
        int | None, typer.Option(help="Save the pages as JPEG at this quality (1-95).")
    ] = None,
    fax: Annotated[
        bool, typer.Option("--fax", help="Make the pages look faxed (half rows, 1 bit, specks).")
    ] = False,
    seed: int = 0,
) -> None:
    """Write a low-resolution copy of a dataset (scaled, JPEG, faxed), truth boxes following."""
    from kerani.evaluation.degrade import Degradation, degrade_dataset

    how = Degradation(scale=scale, jpeg_quality=jpeg_quality, fax=fax, seed=seed)
    made = degrade_dataset(source, out_dir, how)
    console.print(f"{made} degraded pages written to {out_dir}", soft_wrap=True)


@dataset_app.command("synthetic")
def dataset_synthetic(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (pages/, truth.jsonl).")],
    template: Annotated[str, typer.Option(help="Form template to fill in.")] = "bantuan_form",
    count: Annotated[int, typer.Option(help="Forms to render.")] = 100,
    seed: int = 0,
) -> None:
    """Render filled-in synthetic forms of a template, with their truth."""
    from kerani.evaluation.synthetic import generate_dataset
    from kerani.forms.templates import load_template

    made = generate_dataset(load_template(template), out_dir, count=count, seed=seed)
    console.print(f"{made} synthetic {template} forms written to {out_dir}", soft_wrap=True)


@bench_app.command("crowd")
def bench_crowd(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Option(help="Ground-truth dataset folder.")],
    workers: Annotated[int, typer.Option(help="Simulated workers in the crowd.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N pages.")] = None,
    calibrate_share: Annotated[
        float,
        typer.Option(
            help="Share of pages (by hash) for calibration and gold (truth-fed), or for the"
            " first batch (production)."
        ),
    ] = 0.3,
    template: Annotated[str | None, typer.Option(help="Template whose field types apply.")] = None,
    seed: int = 0,
    production: Annotated[
        bool,
        typer.Option(
            "--production",
            help="Also run with no truth in the engine (gold from staff keying and the crowd,"
            " calibration refitted from the crowd); the truth only scores.",
        ),
    ] = False,
) -> None:
    """Pre-OCR, routing and a simulated crowd on a dataset, against OCR alone and double keying."""
    from kerani.benchmarks.crowd_bench import run

    _quiet_prefect(ctx, False)
    with console.status("Pre-OCR, routing and the simulated crowd at work ..."):
        figures = run(
            dataset,
            workers=workers,
            seed=seed,
            limit=limit,
            calibrate_share=calibrate_share,
            template=template,
            production=production,
        )
    _print_figures(figures, as_json)


@bench_app.command("ui")
def bench_ui(
    ctx: typer.Context,
    dataset: Annotated[
        Path, typer.Option(help="Ground-truth dataset folder (receipt lines).")
    ] = Path(__file__).parent / "samples" / "receipts",
    pages: Annotated[int, typer.Option(help="Pages of the dataset to serve.")] = 6,
    snippets: Annotated[int, typer.Option(help="Snippets typed per network profile.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The review page in Chromium: page weight, time to type on slow 3G, actions per field."""
    from kerani.benchmarks.ui_bench import run

    _quiet_prefect(ctx, False)
    with console.status("Pre-OCR, then the review page in Chromium on slow 3G ..."):
        figures = run(dataset, pages=pages, snippets=snippets)
    _print_figures(figures, as_json)


@bench_app.command("queue")
def bench_queue(
    clients: Annotated[int, typer.Option(help="Concurrent worker clients.")] = 64,
    # 3,000 tasks: about 47 per client, so most statements run on connections past their
    # first few (which PostgreSQL plans afresh before it keeps a generic plan).
    pages: Annotated[int, typer.Option(help="Pages of open tasks to seed.")] = 150,
    fields_per_page: Annotated[int, typer.Option(help="Tasks per page.")] = 20,
    postgres_url: Annotated[
        str | None, typer.Option(help="Default: $KERANI_BENCH_POSTGRES_URL or local `test`.")
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Turns of Kerani then the floor; figures are the medians.")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Claim+submit throughput and latency on SQLite and PostgreSQL, against a bare SQL floor."""
    from kerani.benchmarks.queue_bench import run

    with console.status(f"{clients} clients claiming and submitting ..."):
        figures = run(clients, pages, fields_per_page, postgres_url, rounds)
    if as_json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        if not isinstance(value, dict):
            console.print(f"{key:30s} {value}")


@bench_app.command("scale")
def bench_scale(
    pages: Annotated[int, typer.Option(help="Synthetic form pages to pre-OCR.")] = 24,
    dask_workers: Annotated[
        str, typer.Option(help="Local Dask cluster sizes to try, comma-separated.")
    ] = "1,2",
    threads: Annotated[
        str, typer.Option(help="Thread counts of the flow's own runner to try.")
    ] = "1,2",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Pre-OCR pages per minute on threads and on local Dask clusters (a million-page plan)."""
    from kerani.benchmarks.scale_bench import run

    def counts(text: str, option: str) -> list[int]:
        try:
            return [int(n) for n in text.split(",") if n.strip()]
        except ValueError as e:
            raise typer.BadParameter(f"{option}: whole numbers separated by commas") from e

    with console.status(f"pre-OCR of {pages} pages in each configuration ..."):
        figures = run(pages, counts(dask_workers, "--dask-workers"), counts(threads, "--threads"))
    _print_figures(figures, as_json)


@bench_app.command("load")
def bench_load(
    workers: Annotated[int, typer.Option(help="Simulated workers, each on its own connection.")] = (
        200
    ),
    seconds: Annotated[float, typer.Option(help="How long they work.")] = 60.0,
    database: Annotated[
        str,
        typer.Option(
            help="sqlite (a new file), postgresql (a new schema in the local `test` database,"
            " or $KERANI_BENCH_POSTGRES_URL) or a postgresql:// URL to make the schema in."
        ),
    ] = "sqlite",
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="kerani serve's processes (default: $KERANI_SERVE_PROCESSES)."),
    ] = None,
    tasks: Annotated[
        int | None, typer.Option(min=1, help="Open tasks to seed (default: 250 a second).")
    ] = None,
    think: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds each worker looks at a snippet, on average."),
    ] = 0.0,
    warmup: Annotated[
        float, typer.Option(min=0.0, help="Seconds of work before the figures start.")
    ] = 5.0,
    client: Annotated[
        str, typer.Option(help="raw (lean asyncio HTTP/1.1, the default) or httpx.")
    ] = "raw",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Simulated workers claim, fetch and answer over HTTP against a real `kerani serve`."""
    from kerani.benchmarks.load_bench import run
    from kerani.terminal import progress_bar

    # The bar goes to stderr: stdout keeps only the figures (one JSON object with --json).
    with progress_bar(Console(stderr=True)) as progress:
        bar = progress.add_task("Seeding, starting kerani serve", total=warmup + seconds)

        def shown(elapsed: float, requests: int) -> None:
            progress.update(bar, completed=elapsed, description=f"{requests} requests")

        figures = run(
            workers, seconds, database, processes, tasks, think, warmup, client, progress=shown
        )
    _print_figures(figures, as_json)


@bench_app.command("ocr")
def bench_ocr(
    dataset: Annotated[Path, typer.Option(help="Ground-truth dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N pages.")] = None,
    calibrate_share: Annotated[
        float, typer.Option(help="Share of pages (by hash) the auto-accept rule is fitted on.")
    ] = 0.5,
    target: Annotated[float, typer.Option(help="Accuracy the auto-accepted fields must reach.")] = (
        0.995
    ),
    template: Annotated[
        str | None, typer.Option(help="Template whose field types (and alignment) apply.")
    ] = None,
    languages: Annotated[str, typer.Option(help="Tesseract languages, e.g. eng+msa.")] = "eng",
    save_calibration: Annotated[
        Path | None, typer.Option(help="Write the fitted calibration JSON here.")
    ] = None,
    fields_out: Annotated[
        Path | None, typer.Option(help="Write every field's guess and truth here (JSON Lines).")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Report with this stored calibration instead of fitting one."),
    ] = None,
    time_floor: Annotated[
        bool, typer.Option(help="Also time bare tesseract on each page (the speed floor).")
    ] = True,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Also read the fields with bare tesseract: per page, per page scaled, per crop."
        ),
    ] = True,
) -> None:
    """Measure the pre-OCR stage on a dataset: accuracy, calibrated auto-accept, speed."""
    from kerani.benchmarks.ocr_bench import format_report, run_bench
    from kerani.terminal import progress_bar

    with progress_bar(Console(stderr=True)) as progress:
        bar = progress.add_task("Reading pages", total=None)

        def shown(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        figures = run_bench(
            dataset,
            limit=limit,
            calibrate_share=calibrate_share,
            target=target,
            template=template,
            languages=languages,
            save_to=save_calibration,
            fields_out=fields_out,
            calibration_file=calibration,
            time_floor=time_floor,
            baselines=baselines,
            progress=shown,
        )
    if as_json:
        typer.echo(json.dumps(figures, ensure_ascii=False))
    else:
        console.print(format_report(figures), soft_wrap=True)


@gold_app.command("sample")
def gold_sample(
    count: Annotated[int, typer.Option(help="How many fields to sample.")],
    out: Annotated[Path, typer.Option(help="Folder for the snippets and keying.csv.")],
    batch: Annotated[str | None, typer.Option(help="Only this batch (id or prefix).")] = None,
    seed: Annotated[int | None, typer.Option(help="Repeat a sample.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Sample fields for staff to key blind: writes OUT/<field_id>.png and OUT/keying.csv."""
    from kerani.microtasks.gold import sample_for_keying, write_keying_sheet
    from kerani.records.progress import resolve_batch_id
    from kerani.storage.stores import open_stores

    stores = open_stores(_settings(data_dir))
    batch_id = resolve_batch_id(stores.db, batch) if batch else None
    ids = sample_for_keying(stores.db, count, batch_id=batch_id, seed=seed)
    sheet = write_keying_sheet(stores.db, stores.blobs, ids, out)
    console.print(
        f"{len(ids)} fields to key: fill in kind and value in two copies of {sheet}, then "
        f"`kerani gold add --round 1 --keyer NAME` and `--round 2` on them",
        soft_wrap=True,
    )


@gold_app.command("add")
def gold_add(
    sheet: Annotated[Path, typer.Argument(help="A keying.csv with kind and value filled in.")],
    round_: Annotated[int, typer.Option("--round", help="1 or 2: which keying this copy is.")],
    keyer: Annotated[str, typer.Option(help="The operator who keyed it.")],
    data_dir: DataDir = None,
) -> None:
    """Record a keyed sheet; where both rounds agree the field becomes gold."""
    from rich.markup import escape

    from kerani.core.errors import BadInputError
    from kerani.flows.triggers import document_settled
    from kerani.microtasks.gold import keyer_named, read_keying_sheet
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    result = read_keying_sheet(db, sheet, round_, keyer_named(db, keyer))
    for line in result.refused:  # a sheet's text is no console markup
        console.print(f"[red]refused[/] {escape(line)}", soft_wrap=True)
    for done in result.recorded:
        if done.completed_page_id is not None:  # staff settled a document's last field
            document_settled(db, done.completed_page_id)
    gold = sum(o.gold_value is not None for o in result.recorded)
    disagree = sum(o.agreed is False for o in result.recorded)
    console.print(
        f"round {round_}: {len(result.recorded)} keyings recorded ({gold} new gold, "
        f"{disagree} disagreeing with the other round), {len(result.refused)} rows refused, "
        f"{result.empty} left empty"
    )
    if not result.recorded:
        raise BadInputError(f"{sheet}: nothing recorded")


@gold_app.command("list")
def gold_list(data_dir: DataDir = None) -> None:
    """Show gold by origin, fields waiting for a second keying, and keyings that disagree."""
    from rich.markup import escape

    from kerani.microtasks.gold import gold_counts, keying_disagreements
    from kerani.storage.stores import open_stores

    db = open_stores(_settings(data_dir)).db
    counts = gold_counts(db)
    disagreements = keying_disagreements(db)
    for origin, n in counts.by_origin.items():
        console.print(f"gold from {origin}: {n}")
    console.print(f"waiting for round 2: {counts.waiting_for_round_2}")
    console.print(f"disagreements: {counts.disagreements}")
    table = Table("field", "type", "round 1", "round 2")
    for d in disagreements:
        table.add_row(
            str(d.field_id),
            d.field_type,
            *(escape(v) if k == "value" else f"({k})" for k, v in (d.first, d.second)),
        )
    if disagreements:
        console.print(table)


@gold_app.command("harvest")
def gold_harvest(
    min_agreeing: Annotated[
        int, typer.Option(help="Proven workers keying blind who must agree.")
    ] = 2,
    data_dir: DataDir = None,
) -> None:
    """Make gold of settled fields that arbiters or proven workers keying blind back."""
    from kerani.microtasks.gold import harvest_gold
    from kerani.storage.stores import open_stores

    n = harvest_gold(open_stores(_settings(data_dir)).db, min_agreeing=min_agreeing)
    console.print(f"{n} fields made gold from the crowd's evidence")


def main() -> None:
    """Entry point for `python -m kerani`."""
    app()


if __name__ == "__main__":
    main()
