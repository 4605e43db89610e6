"""Quality flows: gold harvested from the crowd, and each template's auto-accept rule
refitted from the crowd's work, on a schedule.

`refresh-quality` runs often (prefect.yaml: every 15 minutes): a refit is one cheap query
when nothing was settled since the last one, so an audited field that came back wrong
turns its group's auto-accept off within minutes, without the answer's hot path doing it.
Each run publishes a Markdown artifact listing what every refit changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from kerani.core.settings import current_settings
from kerani.microtasks.gold import harvest_gold
from kerani.microtasks.refit import refit_calibration, templates_with_pages
from kerani.records.report import markdown_text
from kerani.storage.stores import open_stores

ARTIFACT_KEY = "calibration-refits"


@task(name="templates-with-pages")
def templates_task() -> list[str]:
    """Every template some page was read with."""
    return templates_with_pages(open_stores(current_settings()).db)


@task(name="harvest-gold")
def harvest_task() -> int:
    """Make gold of fields proven workers keyed blind and agreed on; return how many."""
    return harvest_gold(open_stores(current_settings()).db)


@task(name="refit-calibration")
def refit_task(template: str) -> dict[str, Any]:
    """Refit one template's auto-accept rule; return what happened as plain data."""
    settings = current_settings()
    refit = refit_calibration(
        open_stores(settings).db,
        template,
        target=settings.ocr.calibration_target,
        min_samples=settings.ocr.calibration_min_samples,
        folder=settings.ocr.calibration_dir,
    )
    return {
        "template": refit.template,
        "refitted": refit.refitted,
        "fields": refit.fields,
        "changes": refit.changes,
    }


def refits_markdown(refits: list[dict[str, Any]], harvested: int = 0) -> str:
    """The refits of one run as a Markdown table, after the gold it harvested."""
    lines = [
        f"New gold harvested from the crowd: {harvested} fields.",
        "",
        "# Calibration refits",
        "",
        "| template | refitted | fields | what changed |",
        "|---|---|---|---|",
    ]
    for r in refits:
        done = "yes" if r["refitted"] else "no"
        template, changes = markdown_text(r["template"]), markdown_text(r["changes"])
        lines.append(f"| {template} | {done} | {r['fields']} | {changes} |")
    if not refits:
        lines.append("| (no template has pages yet) | | | |")
    return "\n".join(lines) + "\n"


@flow(name="refresh-quality")
def refresh_quality(template: str | None = None) -> dict[str, Any]:
    """Harvest gold, then refit the calibration of every template with pages (or one), and
    publish the changes."""
    harvested = harvest_task()
    templates = [template] if template else templates_task()
    refits = [refit_task(t) for t in templates]
    create_markdown_artifact(
        refits_markdown(refits, harvested),
        key=ARTIFACT_KEY,
        description="Gold harvested and calibration refits",
    )
    return {
        "harvested": harvested,
        "refitted": sum(1 for r in refits if r["refitted"]),
        "refits": refits,
    }
