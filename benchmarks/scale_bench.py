"""`kerani bench scale`: pre-OCR pages per minute on the flow's threads and on a local Dask
cluster of 1, 2, ... worker processes, for the plan of a million pages.

Each configuration ingests the same synthetic forms (fresh SQLite and blob folder each) and
times the pre-OCR subflow alone (ingest and routing aside), after timing the same subflow over
no page: the runner's start-up (a Dask cluster's processes), paid once per chunk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kerani.core.settings import (
    BlobSettings,
    CoreSettings,
    DatabaseSettings,
    OcrSettings,
    ScaleSettings,
    Settings,
    using_settings,
)
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.digitise import preocr_batch, preocr_runner
from kerani.forms.templates import load_template
from kerani.ingest.batches import ingest_paths
from kerani.storage.database import close_engine
from kerani.storage.stores import open_stores


def _settings(root: Path, scale: ScaleSettings, threads: int) -> Settings:
    return Settings(
        core=CoreSettings(data_dir=root),
        database=DatabaseSettings(url=SecretStr(f"sqlite:///{root / 'kerani.db'}")),
        blobs=BlobSettings(url=str(root / "blobs")),
        ocr=OcrSettings(workers=threads),
        scale=scale,
    )


def _time_preocr(settings: Settings, pages_dir: Path) -> tuple[float, float, dict[str, int]]:
    """Ingest the pages, then time one pre-OCR subflow run over none of them (the runner's
    start-up) and one over all of them."""
    stores = open_stores(settings)
    report = ingest_paths(
        stores.db, stores.blobs, [pages_dir], "bantuan_form", settings.ingest, None
    )
    with using_settings(settings):
        # The same run over no page: what starting the runner (a Dask cluster) costs.
        start = time.perf_counter()
        preocr_batch.with_options(task_runner=preocr_runner(settings))(report.batch_id, 10**12)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        outcome = preocr_batch.with_options(task_runner=preocr_runner(settings))(report.batch_id)
        seconds = time.perf_counter() - start
    close_engine(settings.database_url)
    return seconds, startup, outcome


def run(pages: int, dask_workers: list[int], threads: list[int]) -> dict[str, Any]:
    """Pages per minute for each configuration, over the same `pages` synthetic forms."""
    figures: dict[str, Any] = {"pages": pages}
    with tempfile.TemporaryDirectory(prefix="kerani-scale-") as tmp:
        root = Path(tmp)
        generate_dataset(load_template("bantuan_form"), root / "forms", count=pages, seed=21)
        configs = [(f"threads_{n}", ScaleSettings(runner="threads"), n) for n in threads]
        configs += [
            (f"dask_{n}_workers", ScaleSettings(runner="dask", dask_workers=n), 1)
            for n in dask_workers
        ]
        for name, scale, n_threads in configs:
            settings = _settings(root / name, scale, n_threads)
            seconds, startup, outcome = _time_preocr(settings, root / "forms" / "pages")
            working = max(seconds - startup, 1e-6)
            figures[name] = {
                "seconds": round(seconds, 1),
                "startup_seconds": round(startup, 1),
                "pages_per_minute": round(60 * pages / seconds, 1),
                # What a long batch sees: the start-up is paid once per chunk.
                "pages_per_minute_after_startup": round(60 * pages / working, 1),
                "pages_read": outcome.get("ocred", 0),
            }
    return figures
