"""`kerani bench ui`: how light and fast the review page is, and how much work each field costs.

On real receipt lines (a truth dataset: pages/ + truth.jsonl, pre-OCRed here with Tesseract)
served by the real app, Debian's Chromium (Playwright) at a phone viewport measures:

- page weight of each screen: HTML + CSS + JS bytes as served, without the snippet images
  (a page that carries snippets inline is counted without them), and the snippet sizes;
- time until the worker can type (input focused, snippet decoded on screen) with Chromium's
  network emulation: the first snippet of a session (GET /review, the stylesheet cached from
  the sign-in page) and each next one (from pressing Enter to the next snippet on screen,
  after a realistic few seconds of reading and typing), on two slow-3G profiles:
  `slow3g` is Chrome DevTools' / Puppeteer's "Slow 3G" preset (2 s latency, 400 kbit/s),
  `3g_400ms` is WebPageTest's "3G Slow" (400 ms round trip, 400 kbit/s);
- clicks and keystrokes per field in the one-by-one and the column mode, from the OCR
  guesses of the pre-OCR stage and the truth, by the model in `field_actions`; a sample of
  fields is also corrected in the browser by exactly those actions, and the submitted values
  are checked against the truth (so the model matches what the page lets a worker do);
- answers typed with the browser offline (a reload offline among them) and how many of
  them the server stored once the line came back (`offline_answers_kept` of
  `offline_answers_typed`).
"""

from __future__ import annotations

import contextlib
import difflib
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update

from kerani.benchmarks.crowd_bench import BenchField, new_batch, read_page, store_page
from kerani.benchmarks.ocr_bench import is_upper_case_truth
from kerani.benchmarks.phone_measures import smallest_target, snippet_text_px
from kerani.core.settings import BlobSettings, CoreSettings, DatabaseSettings, Settings
from kerani.core.vocabulary import Role
from kerani.evaluation.ground_truth import read_truth
from kerani.microtasks.practice import mark_practice_passed
from kerani.microtasks.routing import route_page
from kerani.ocr.tesseract import TesseractEngine
from kerani.people.workers import add_person, invite_worker, join_with_invite
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.stores import open_stores

CHROMIUM = "/usr/bin/chromium"
PIN = "402917"
# Chrome DevTools' presets as Puppeteer spells them out (bytes/s and ms), and WebPageTest's.
NETWORKS: dict[str, dict[str, float]] = {
    "slow3g": {
        "latency": 400 * 5,
        "download": 500 * 1000 / 8 * 0.8,
        "upload": 500 * 1000 / 8 * 0.8,
    },
    "3g_400ms": {"latency": 400, "download": 400 * 1000 / 8, "upload": 400 * 1000 / 8},
}
READY = (
    "() => { const i = document.getElementById('snippet'), v = document.getElementById('value');"
    " return i && v && i.complete && i.naturalWidth > 0 && document.activeElement === v; }"
)
DATA_URI = re.compile(rb"data:image/(?:png|webp);base64,[A-Za-z0-9+/=]+")


@dataclass(frozen=True)
class Actions:
    """What correcting one field costs a worker: taps/clicks and keys pressed."""

    clicks: int
    keys: int

    @property
    def total(self) -> int:
        """Clicks and keystrokes together."""
        return self.clicks + self.keys


def correction(guess: str, truth: str) -> Actions:
    """The cheapest way to turn the (selected) guess into the truth.

    Either type the whole truth over the selection, or edit: one tap to put the caret at each
    place that differs, then backspaces and typed characters there.
    """
    if guess == truth:
        return Actions(0, 0)
    taps, keys = 0, 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, guess, truth, autojunk=False
    ).get_opcodes():
        if op != "equal":
            taps += 1
            keys += (i2 - i1) + (j2 - j1)
    retype = Actions(0, len(truth))
    edit = Actions(taps, keys)
    return retype if retype.total <= edit.total else edit


def field_actions(guess: str, truth: str, mode: str) -> Actions:
    """One field's cost in a mode: `single` ends with Enter; in `column` a wrong row is tapped
    open first and a right one costs nothing (the column's one Submit is shared out)."""
    fix = correction(guess, truth)
    if mode == "single":
        return Actions(fix.clicks, fix.keys + 1)
    if guess == truth:
        return Actions(0, 0)
    return Actions(fix.clicks + 1, fix.keys)


def _per_field(
    fields: list[BenchField], mode: str, column_size: int, next_taps: float = 0.0
) -> dict[str, float]:
    """Clicks and keys per field in a mode; `next_taps`: Next taps per column (its pages)."""
    acts = [field_actions(f.guess, f.truth, mode) for f in fields]
    clicks: float = sum(a.clicks for a in acts)
    if mode == "column":
        columns = -(-len(fields) // column_size)
        clicks += columns * (1 + next_taps)  # one Submit per column, a Next per screen
    keys = sum(a.keys for a in acts)
    n = max(1, len(fields))
    return {"clicks": clicks / n, "keys": keys / n, "total": (clicks + keys) / n}


def _weight(body: bytes) -> int:
    """Bytes of a page without its inline snippets."""
    return len(body) - sum(len(d) for d in DATA_URI.findall(body))


def _emulate(page: Page, network: str) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    n = NETWORKS[network]
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": n["latency"],
            "downloadThroughput": n["download"],
            "uploadThroughput": n["upload"],
        },
    )


def _type_like_a_worker(page: Page, guess: str, truth: str) -> None:
    """Correct the selected guess by the actions `correction` counts (retype or edit)."""
    fix = correction(guess, truth)
    if fix.total == 0:
        return
    if fix.clicks == 0:
        page.keyboard.type(truth)  # replaces the selection
        return
    # Edit in place: the caret moves to each differing spot (a tap; here End + arrows), and
    # the page's input ends up with exactly the truth.
    page.keyboard.press("End")
    ops = difflib.SequenceMatcher(None, guess, truth, autojunk=False).get_opcodes()
    caret = len(guess)  # edits go right to left, so the text left of the caret is the guess's
    for op, i1, i2, j1, j2 in reversed(ops):
        if op == "equal":
            continue
        for _ in range(caret - i2):
            page.keyboard.press("ArrowLeft")
        for _ in range(i2 - i1):
            page.keyboard.press("Backspace")
        if j2 > j1:
            page.keyboard.insert_text(truth[j1:j2])
        caret = i1 + (j2 - j1)


def _phone_page(p: Any, service_workers: Literal["allow", "block"] = "allow") -> Page:
    """A page of Debian's Chromium as a 360x640 touch phone."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    context = browser.new_context(
        viewport={"width": 360, "height": 640},
        has_touch=True,
        is_mobile=True,
        service_workers=service_workers,
    )
    return context.new_page()


def _measure_session(
    url: str,
    number: int,
    network: str,
    tasks: dict[str, BenchField],
    think_seconds: float,
    snippets: int,
) -> dict[str, Any]:
    with sync_playwright() as p:
        # No service worker: the page's network emulation would not slow its fetches (it
        # only passes /review through online; _offline_answers measures what it is for).
        page = _phone_page(p, "block")
        page.goto(f"{url}/signin")  # unthrottled: the stylesheet is now in the cache
        page.fill("#number", str(number))
        page.fill("#pin", PIN)
        page.click("button.primary")
        page.wait_for_selector("#value")
        _emulate(page, network)
        firsts = []
        for _ in range(3):
            page.goto(f"{url}/review", wait_until="commit")
            page.wait_for_function(READY, polling="raf")
            firsts.append(float(page.evaluate("performance.now()")))
        checked = 0
        right = 0
        text_px: list[float] = []
        for _ in range(snippets):
            task = str(page.get_attribute("#answer", "action")).rsplit("/", 1)[1]
            field = tasks[task]
            if any(c.isalnum() for c in field.truth):
                # A line of "***" has no letters whose height would say anything.
                text_px.append(snippet_text_px(page) or 0.0)
            time.sleep(think_seconds)  # reading the snippet and typing take a worker seconds
            _type_like_a_worker(page, page.input_value("#value"), field.truth)
            right += page.input_value("#value") == field.truth
            checked += 1
            page.keyboard.press("Enter")
            page.wait_for_function(
                "t => document.getElementById('answer').getAttribute('action') !== '/review/' + t",
                arg=task,
            )
            page.wait_for_function(READY, polling="raf")
        timings = [float(t) for t in page.evaluate("window.keraniTimings")]
        # Let the outbox empty before leaving (answers on the way still count).
        page.wait_for_function(
            "() => (localStorage.getItem('kerani-outbox') || '[]') === '[]'", timeout=60_000
        )
        page.context.browser.close()  # type: ignore[union-attr]
    return {
        "first_ms": statistics.median(firsts),
        "next_ms": statistics.median(timings) if timings else None,
        "next_ms_max": max(timings) if timings else None,
        "next_without_page_load": len(timings),
        "typed_right": right,
        "typed": checked,
        "text_px": text_px,
    }


def _smallest_targets(url: str, code: str, screens: dict[str, str]) -> dict[str, float]:
    """The smallest side of any control on each worker screen at 360x640 (the menu open)."""
    out: dict[str, float] = {}
    with sync_playwright() as p:
        page = _phone_page(p)
        page.goto(f"{url}/signin")
        page.click("summary")
        page.fill("#code", code)
        page.click("form[action='/signin/code'] button")
        page.wait_for_load_state()
        for name, path in screens.items():
            page.goto(f"{url}{path}")
            page.wait_for_load_state("load")
            if page.locator("#menu summary").count():
                page.tap("#menu summary")  # the menu's links count too
            smallest = smallest_target(page)
            out[name] = round(smallest.size, 1) if smallest else 0.0
            if name == "column":
                # Column mode comes a screenful of rows at a time: each Next is a tap.
                while page.locator("#rows-next").is_visible():
                    page.tap("#rows-next")
                    out["column_next_taps"] = out.get("column_next_taps", 0) + 1
                    smallest = smallest_target(page)
                    out[name] = min(out[name], round(smallest.size, 1) if smallest else 0.0)
                rows = page.locator("#column .row").count()
                out["column_rows"] = rows
        page.context.browser.close()  # type: ignore[union-attr]
    return out


def _offline_answers(url: str, number: int, db: Engine, typed_at_most: int) -> dict[str, int]:
    """Answers typed while the browser is offline (Playwright's set_offline), with a reload
    offline halfway, and how many of them the server stored once the line came back."""
    with db.begin() as conn:  # the sessions before are over: their leases go back
        conn.execute(
            update(schema.tasks)
            .where(schema.tasks.c.status == "open")
            .values(lease_worker_id=None, lease_expires_at=None)
        )
    moved_on = (
        "t => document.getElementById('answer').getAttribute('action') !== '/review/' + t"
        " || document.getElementById('task').classList.contains('empty')"
    )
    typed: list[str] = []
    with sync_playwright() as p:
        page = _phone_page(p)
        page.goto(f"{url}/signin")
        page.fill("#number", str(number))
        page.fill("#pin", PIN)
        page.click("button.primary")
        page.wait_for_selector("#value")
        page.wait_for_function("() => !!navigator.serviceWorker.controller")
        # The reserve topped up (fewer tasks when the queue holds fewer).
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                "n => JSON.parse(localStorage.getItem('kerani-reserve')).tasks.length > n",
                arg=typed_at_most,
                timeout=10_000,
            )
        page.context.set_offline(True)
        for i in range(typed_at_most):
            if not page.is_visible("#value"):
                break  # no more tasks kept on the phone
            task = str(page.get_attribute("#answer", "action")).rsplit("/", 1)[1]
            page.fill("#value", f"OFFLINE {i}")
            page.press("#value", "Enter")
            page.wait_for_function(moved_on, arg=task)
            typed.append(task)
            if i == typed_at_most // 2:
                page.reload()  # the service worker's shell, filled from the reserve
                page.wait_for_selector("#net:not([hidden])")
        page.context.set_offline(False)
        page.wait_for_function(
            "() => (localStorage.getItem('kerani-outbox') || '[]') === '[]'", timeout=60_000
        )
        page.context.browser.close()  # type: ignore[union-attr]
    a = schema.answers
    with db.connect() as conn:
        stored = conn.execute(
            select(func.count())
            .select_from(a)
            .where(a.c.worker_id == number, a.c.task_id.in_(typed), a.c.value.like("OFFLINE %"))
        ).scalar_one()
    return {"typed": len(typed), "kept": int(stored)}


def _page_weights(
    url: str, logins: dict[str, str | None], screens: dict[str, tuple[str, str]]
) -> dict[str, dict[str, int]]:
    """Each screen's bytes (HTML, CSS, JS as served, cache off): without inline snippets, and
    all bytes on the wire (compressed) including them."""
    out: dict[str, dict[str, int]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        contexts: dict[str, Any] = {}
        for who, code in logins.items():
            # Bytes as the server sends them, not as a service worker hands them over.
            context = browser.new_context(
                viewport={"width": 360, "height": 640}, service_workers="block"
            )
            if code:
                page = context.new_page()
                page.goto(f"{url}/signin")
                page.click("summary")
                page.fill("#code", code)
                page.click("form[action='/signin/code'] button")
                page.wait_for_load_state()
                page.close()
            contexts[who] = context
        for name, (who, path) in screens.items():
            page = contexts[who].new_page()
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            responses: list[Any] = []
            page.on("response", lambda r, got=responses: got.append(r))
            page.goto(f"{url}{path}")
            page.wait_for_load_state("networkidle")
            without, wire = 0, 0
            for r in responses:
                if r.url.startswith("data:") or r.status in (301, 302, 303, 307):
                    continue
                body = r.body()
                without += _weight(body)
                wire += r.request.sizes()["responseBodySize"]
            out[name] = {"bytes_without_snippets": without, "bytes_on_the_wire": wire}
            page.close()
        browser.close()
    return out


def run(
    dataset: Path,
    pages: int = 6,
    snippets: int = 8,
    think_seconds: float = 3.0,
    column_size: int = 15,
    languages: str = "eng",
) -> dict[str, Any]:
    """Run the UI benchmark on the first `pages` pages of a truth dataset; return figures."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"Chromium is missing at {CHROMIUM}: run scripts/bootstrap.sh --dev"
        )
    truth_pages = read_truth(dataset)
    fold_case = is_upper_case_truth(truth_pages)
    workdir = Path(tempfile.mkdtemp(prefix="kerani-ui-bench-"))
    settings = Settings(
        core=CoreSettings(data_dir=workdir),
        database=DatabaseSettings(url=SecretStr(f"sqlite:///{workdir / 'kerani.db'}")),
        blobs=BlobSettings(url=str(workdir / "blobs")),
    )
    settings.crowd.gold_every = 0  # every snippet here is a receipt line with a known truth
    settings.crowd.max_fields_per_document = 1000
    settings.review.column_size = column_size
    stores = open_stores(settings)
    engine = TesseractEngine(languages)
    margin = settings.ocr.snippet_margin_px
    batch = new_batch(stores, "ui-bench")
    fields: list[BenchField] = []
    for truth in truth_pages[:pages]:
        truth, image, reads = read_page(dataset, truth, {}, engine, margin)
        page_id, stored = store_page(
            stores, batch, "receipt", truth, image, reads, engine.name, fold_case, margin
        )
        fields += stored
        route_page(stores.db, page_id, 101.0)  # everything to people: the bench is about them
    by_field = {f.field_id: f for f in fields}
    with stores.db.connect() as conn:
        task_field = dict(
            conn.execute(select(schema.tasks.c.id, schema.tasks.c.field_id)).tuples().all()
        )
        snippet_keys = conn.execute(select(schema.fields.c.snippet_key)).scalars().all()
    tasks = {t: by_field[f] for t, f in task_field.items() if f in by_field}
    snippet_sizes = sorted(len(stores.blobs.get(k)) for k in snippet_keys)

    people: dict[str, int] = {}
    for network in [*NETWORKS, "offline"]:
        number, invite = invite_worker(stores.db, f"bench-{network}", 1)
        join_with_invite(stores.db, invite, PIN, PIN)
        mark_practice_passed(stores.db, number)  # they stand for workers past practice
        people[network] = number
    worker_code = add_person(stores.db, "bench-pages", Role.WORKER, practised=True)
    operator_code = add_person(stores.db, "bench-operator", Role.OPERATOR)
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    try:
        sessions = {
            network: _measure_session(
                server.url, people[network], network, tasks, think_seconds, snippets
            )
            for network in NETWORKS
        }
        targets = _smallest_targets(
            server.url,
            worker_code,
            {"review": "/review", "column": "/column", "me": "/me", "pin": "/me/pin"},
        )
        weights = _page_weights(
            server.url,
            {"anonymous": None, "worker": worker_code, "operator": operator_code},
            {
                "signin": ("anonymous", "/signin"),
                "join": ("anonymous", "/join"),
                "review": ("worker", "/review"),
                "column": ("worker", "/column"),
                "me": ("worker", "/me"),
                "status": ("operator", "/status"),
                "report": ("operator", f"/batches/{batch}/report"),
            },
        )
        offline = _offline_answers(
            server.url, people["offline"], stores.db, settings.crowd.offline_reserve
        )
    finally:
        server.stop()
    single = _per_field(fields, "single", column_size)
    # Next taps per full column, from the rows one column showed per screen in the browser.
    rows_per_screen = targets.pop("column_rows", 0) / (1 + targets.pop("column_next_taps", 0))
    next_taps = max(0.0, column_size / rows_per_screen - 1) if rows_per_screen else 0.0
    column = _per_field(fields, "column", column_size, next_taps)
    kb = {name: round(w["bytes_without_snippets"] / 1024, 1) for name, w in weights.items()}
    slow, wpt = sessions["slow3g"], sessions["3g_400ms"]
    text_px = slow["text_px"] + wpt["text_px"]
    return {
        "fields": len(fields),
        "pages": min(pages, len(truth_pages)),
        "page_weight_kb_max": max(kb.values()),
        "page_weight_kb": kb,
        "page_wire_kb": {n: round(w["bytes_on_the_wire"] / 1024, 1) for n, w in weights.items()},
        "snippet_bytes_median": int(statistics.median(snippet_sizes)),
        "snippet_bytes_p90": snippet_sizes[int(0.9 * (len(snippet_sizes) - 1))],
        "snippet_bytes_max": snippet_sizes[-1],
        # The height of the line to type as drawn on a 360 px screen, in CSS px.
        "snippet_text_px_median": round(statistics.median(text_px), 1) if text_px else None,
        "snippet_text_px_min": round(min(text_px), 1) if text_px else None,
        "snippet_text_px_measured": len(text_px),
        # The smallest side of any tap target on the worker's screens, in CSS px.
        "touch_target_px_min": min(targets.values()),
        "touch_target_px_by_screen": targets,
        "column_rows_per_screen": round(rows_per_screen, 1),
        "first_snippet_ms_slow3g": round(slow["first_ms"]),
        "next_snippet_ms_slow3g": round(slow["next_ms"]) if slow["next_ms"] is not None else None,
        "next_snippet_ms_slow3g_max": round(slow["next_ms_max"]) if slow["next_ms_max"] else None,
        "first_snippet_ms_3g_400ms": round(wpt["first_ms"]),
        "next_snippet_ms_3g_400ms": round(wpt["next_ms"]) if wpt["next_ms"] is not None else None,
        "next_snippets_without_page_load": slow["next_without_page_load"]
        + wpt["next_without_page_load"],
        "snippets_typed_in_browser": slow["typed"] + wpt["typed"],
        "snippets_typed_right_in_browser": slow["typed_right"] + wpt["typed_right"],
        "keystrokes_per_field_single": round(single["total"], 3),
        "keystrokes_per_field_column": round(column["total"], 3),
        "clicks_per_field_single": round(single["clicks"], 3),
        "keys_per_field_single": round(single["keys"], 3),
        "clicks_per_field_column": round(column["clicks"], 3),
        "keys_per_field_column": round(column["keys"], 3),
        "typing_from_scratch_per_field": round(
            sum(len(f.truth) + 1 for f in fields) / max(1, len(fields)), 3
        ),
        "ocr_guess_right_share": round(
            sum(f.guess == f.truth for f in fields) / max(1, len(fields)), 3
        ),
        # Typed with the browser offline (a reload among them), stored once back online.
        "offline_answers_typed": offline["typed"],
        "offline_answers_kept": offline["kept"],
        "network_profiles": {k: dict(v) for k, v in NETWORKS.items()},
    }
