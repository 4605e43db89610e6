"""Terminal progress: rich progress bars that follow long work through the database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from kerani.core.settings import Settings, using_settings
from kerani.storage import schema
from kerani.storage.stores import Stores


def progress_bar(console: Console) -> Progress:
    """Kerani's progress bar: description, bar, done/total, elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _batch_ids(stores: Stores) -> list[str]:
    with stores.db.connect() as conn:
        return [str(i) for i in conn.execute(select(schema.batches.c.id)).scalars().all()]


def _count_pages(stores: Stores, batch_ids: list[str]) -> tuple[int, int]:
    p = schema.pages
    with stores.db.connect() as conn:
        rows: dict[str, int] = dict(
            conn.execute(
                select(p.c.status, func.count())
                .where(p.c.batch_id.in_(batch_ids))
                .group_by(p.c.status)
            )
            .tuples()
            .all()
        )
    total = sum(rows.values())
    return total - rows.get("ingested", 0), total


def _follow(
    console: Console,
    settings: Settings,
    label: str,
    run: Callable[[], dict[str, Any]],
    pages_done: Callable[[], tuple[int, int]],
) -> dict[str, Any]:
    """Run a flow in a thread while a bar follows its pages in the database."""
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            # A new thread starts with an empty context: the settings are activated in it.
            with using_settings(settings):
                result.update(run())
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    thread = threading.Thread(target=work, daemon=True)
    with progress_bar(console) as progress:
        bar = progress.add_task(label, total=None)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            done, total = pages_done()
            if total:
                progress.update(bar, completed=done, total=total)
    if errors:
        raise errors[0]
    return result


def submit_with_progress(
    console: Console,
    settings: Settings,
    stores: Stores,
    paths: list[Path],
    template: str,
    label: str,
    agency: str | None = None,
) -> dict[str, Any]:
    """Run the submit-batch flow in a thread while a bar follows its pages in the database."""
    from kerani.flows.digitise import submit_batch

    before = set(_batch_ids(stores))
    return _follow(
        console,
        settings,
        f"Pre-OCR {label}",
        lambda: submit_batch([str(p) for p in paths], template, agency),
        lambda: _count_pages(stores, [i for i in _batch_ids(stores) if i not in before]),
    )


def retry_with_progress(
    console: Console, settings: Settings, stores: Stores, batch_id: str, template: str | None
) -> dict[str, Any]:
    """Run the retry-batch flow in a thread while a bar follows the batch's pages."""
    from kerani.flows.digitise import retry_batch

    return _follow(
        console,
        settings,
        f"Pre-OCR again, batch {batch_id[:12]}",
        lambda: retry_batch(batch_id, template),
        lambda: _count_pages(stores, [batch_id]),
    )
