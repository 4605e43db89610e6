"""Secrets stay out of Prefect: flows take ids and keys, and read the settings where they run.

Prefect records every flow run's parameters on its server (and task runs, artifacts and
logs beside them). The settings hold the database password and the S3 keys, so they must
never be a parameter: the entry point activates them with `using_settings`, and Prefect
carries the context into its task-runner threads and subflows.
"""

from __future__ import annotations

import importlib
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow, flow, tags, task
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.callables import parameter_schema
from pydantic import SecretStr
from sqlalchemy import make_url

from kerani.core.settings import (
    BlobSettings,
    DatabaseSettings,
    Settings,
    current_settings,
    using_settings,
)
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from kerani.storage import blobs as blob_module
from kerani.storage.database import close_engine
from tests.conftest import REPO

# Every flow Kerani has, and the only parameters any of them may take.
FLOWS = {
    "submit-batch",
    "pre-ocr-batch",
    "route-batch",
    "finish-batch",
    "reassemble-settled",
    "reconcile-records",
    "refresh-quality",
}
PLAIN_PARAMETERS = {
    "paths",
    "template",
    "agency",
    "batch_id",
    "page_id",
    "first_page_id",
    "last_page_id",
    "publication",
}


def test_no_flow_nor_deployment_takes_the_settings() -> None:
    """Every flow of prefect.yaml takes plain ids and keys, and its deployment gives no more."""
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert deployments
    for d in deployments:
        module, name = d["entrypoint"].split(":")
        flow_: Flow[Any, Any] = getattr(importlib.import_module(module), name)
        accepted = set(parameter_schema(flow_.fn).properties)
        assert accepted <= PLAIN_PARAMETERS, f"{d['name']} takes {sorted(accepted)}"
        given = set(d.get("parameters", {}))
        for trigger in d.get("triggers", []):
            given |= set(trigger.get("parameters", {}))
        assert given <= accepted, f"prefect.yaml gives {d['name']} {sorted(given - accepted)}"


@pytest.fixture
def secret_settings(settings: Settings) -> Iterator[tuple[Settings, dict[str, str]]]:
    """The test's settings with a database password (PostgreSQL) and S3 keys; what they are."""
    token = secrets.token_hex(8)
    password, key_id, s3_secret = f"pw{token}", f"AKIA{token.upper()}", f"s3secret{token}"
    url = make_url(settings.database_url)
    database = settings.database
    found = {"s3_secret": s3_secret, "s3_key_id": key_id}
    if url.get_backend_name() == "postgresql":  # a SQLite URL cannot hold a password
        # Trust authentication here ignores the password; the URL still carries it.
        with_password = url.set(password=password).render_as_string(hide_password=False)
        database = DatabaseSettings(url=SecretStr(with_password))
        found["password"] = password
    blobs = settings.blobs.model_copy(
        update={"s3_access_key_id": key_id, "s3_secret_access_key": SecretStr(s3_secret)}
    )
    secret = settings.model_copy(update={"database": database, "blobs": blobs})
    yield secret, found
    close_engine(secret.database_url)  # its own engine: the URL differs by the password


def test_settings_show_no_secret_but_hand_them_to_the_stores(
    secret_settings: tuple[Settings, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, found = secret_settings
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    # The key id names the key (AWS shows it in its console); the secret is what signs.
    assert [k for k, s in found.items() if s in shown] == ["s3_key_id"]
    # ... yet the database URL and the S3 keys reach what connects with them.
    if "password" in found:
        assert found["password"] in settings.database_url
    clients: list[dict[str, Any]] = []
    monkeypatch.setattr("boto3.client", lambda *a, **k: clients.append(k))
    s3 = settings.model_copy(update={"blobs": settings.blobs.model_copy(update={"url": "s3://b"})})
    blob_module.open_blob_store(s3)
    assert clients[0]["aws_access_key_id"] == found["s3_key_id"]
    assert clients[0]["aws_secret_access_key"] == found["s3_secret"]


def test_without_keys_boto3_finds_its_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[dict[str, Any]] = []
    monkeypatch.setattr("boto3.client", lambda *a, **k: clients.append(k))
    blob_module.open_blob_store(Settings(blobs=BlobSettings(url="s3://b")))
    assert clients[0]["aws_access_key_id"] is None
    assert clients[0]["aws_secret_access_key"] is None


def test_current_settings_are_the_activated_ones_else_the_environment(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERANI_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("KERANI_DB_URL", "sqlite:///from-env.db")
    # Nothing activated (a deployment's worker process): KERANI_* from the environment.
    assert current_settings().database_url == "sqlite:///from-env.db"
    with using_settings(settings):
        assert current_settings() is settings
        other = settings.model_copy()
        with using_settings(other):
            assert current_settings() is other
        assert current_settings() is settings
    assert current_settings().core.data_dir == tmp_path / "from-env"


@task
def _seen_in_task() -> tuple[int, int]:
    return id(current_settings()), threading.get_ident()


@flow
def _seen_in_subflow() -> int:
    return id(current_settings())


@flow(task_runner=ThreadPoolTaskRunner(max_workers=3))  # type: ignore[arg-type]
def _seen_in_flow() -> dict[str, Any]:
    futures = [_seen_in_task.submit() for _ in range(6)]
    return {
        "flow": id(current_settings()),
        "tasks": [f.result() for f in futures],
        "called_task": _seen_in_task(),
        "subflow": _seen_in_subflow(),
    }


@pytest.mark.slow
def test_prefect_carries_the_activated_settings_into_task_threads_and_subflows(
    settings: Settings, prefect_server: None
) -> None:
    with using_settings(settings):
        seen = _seen_in_flow()
    ours = id(settings)
    assert seen["flow"] == ours and seen["subflow"] == ours
    assert seen["called_task"][0] == ours
    assert {settings_id for settings_id, _ in seen["tasks"]} == {ours}
    # The submitted tasks really ran in the runner's threads, not in this one.
    assert threading.get_ident() not in {thread for _, thread in seen["tasks"]}


def _recorded(tag: str) -> tuple[list[Any], str]:
    """The flow runs tagged `tag`, and all Prefect recorded of them as one JSON text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterTags,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterTags,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the log lines still queued, and wait for them
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
        ids = [r.id for r in runs]
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[tag]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        names = {f.id: f.name for f in client.read_flows()}
    assert task_runs and artifacts and logs  # the check below looks at something
    every = [*runs, *task_runs, *artifacts, *logs]
    text = json.dumps([o.model_dump(mode="json") for o in every])
    return [(names[r.flow_id], r.parameters) for r in runs], text


@pytest.mark.slow
def test_no_secret_reaches_prefect_from_any_flow(
    secret_settings: tuple[Settings, dict[str, str]],
    prefect_server: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kerani.flows.digitise import finish_batch, submit_batch

    # Every log line reaches Prefect here, whatever an earlier `kerani` command in this
    # process quietened (the CLI lowers Prefect's logger to WARNING).
    caplog.set_level(logging.INFO, logger="prefect")
    from kerani.flows.quality import refresh_quality
    from kerani.flows.reassembly import reassemble_settled, reconcile_records

    settings, found = secret_settings
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=1, seed=3)
    tag = f"secrets-{secrets.token_hex(4)}"
    with tags(tag), using_settings(settings):
        report = submit_batch([str(forms / "pages")], "bantuan_form")
        batch_id = report["batch_id"]
        finish_batch(batch_id)
        reconcile_records(batch_id)
        reassemble_settled()
        refresh_quality("bantuan_form")
    # The flows worked on the activated settings' database, password and all.
    assert report["pages_created"] == 1

    runs, recorded = _recorded(tag)
    assert {name for name, _ in runs} == FLOWS
    for name, parameters in runs:
        assert set(parameters) <= PLAIN_PARAMETERS, f"{name} takes {sorted(parameters)}"
    assert [k for k, s in found.items() if s in recorded] == []
