"""Kerani's deployments on a real `prefect server start` on loopback, made from `prefect.yaml`
as an operator makes them: `kerani submit --deployment` hands a batch to the work pool, and
says so in one line when there is no server; and a Prefect worker killed with SIGKILL in the
middle of a `submit-batch` run loses nothing: the batch, run again by a new worker, ends with
every page once, read once and routed once, on SQLite and PostgreSQL.

The kill takes the worker and every process under it (the flow run's own process too), as a
machine lost mid-run would. The point is drawn at random and printed, so a failure can be
replayed with KERANI_TEST_KILL_SEED.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kerani.benchmarks.load_bench import process_ticks
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from tests.conftest import REPO, free_port_for_tests
from tests.test_fault_submit import counts, intact

pytestmark = pytest.mark.slow

PAGES = 3
BIN = Path(sys.executable).parent
POOL = "kerani-fault-test"


def prefect_env(home: Path, api: str) -> dict[str, str]:
    """The environment of Prefect commands talking to the test's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERANI_", "PREFECT_"))}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick the run up at once, not in 10 s
    }


def prefect(env: dict[str, str], *args: str) -> str:
    """Run a `prefect` command from the repository; its output (failing on a non-zero exit)."""
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextlib.contextmanager
def prefect_server_with(
    home: Path, deployments: tuple[str, ...]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`prefect server start` on loopback with its own home, the work pool, and these
    deployments of prefect.yaml made with the operator's own `prefect deploy`."""
    port = free_port_for_tests()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not healthy(api):
            assert server.poll() is None, "prefect server start exited"
            assert time.monotonic() < deadline, "the Prefect server did not start in 120 s"
            time.sleep(0.5)
        prefect(env, "work-pool", "create", POOL, "--type", "process")
        # The operator's own command; the pool name is the test's, not the shared `kerani`.
        deployed = env | {"KERANI_SOURCE_DIR": str(REPO)}
        for name in deployments:
            prefect(deployed, "deploy", "--name", name, "--pool", POOL)
        yield api, server
    finally:
        kill_tree(server.pid)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real Prefect server with the submit-batch and reconcile-records deployments."""
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server_with(home, ("submit-batch", "reconcile-records")) as (api, _server):
        yield api, home


def healthy(api: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    return False


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it, from /proc (children before their parents die)."""
    parents = {child: parent for child, (parent, _name, _ticks) in process_ticks().items()}
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all under it, at once."""
    for each in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`prefect worker start` on the test's pool, with Kerani's settings in its environment."""
    return subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def run_deployment(api: str, parameters: dict[str, Any]) -> str:
    """Create a run of submit-batch/submit-batch; its id."""
    deployment = api_call("GET", f"{api}/deployments/name/submit-batch/submit-batch")
    url = f"{api}/deployments/{deployment['id']}/create_flow_run"
    return str(api_call("POST", url, json={"parameters": parameters})["id"])


def api_call(method: str, url: str, **kwargs: Any) -> Any:
    """A Prefect API call, tried again while the server answers 503 or not at all (its
    SQLite is busy with the worker's writes)."""
    timeouts = 0
    for _ in range(20):
        try:
            response = httpx.request(method, url, timeout=30, **kwargs)
        except httpx.TimeoutException:
            timeouts += 1
            if timeouts == 4:
                raise
            continue  # its SQLite held by a burst of writes: ask again
        if response.status_code != 503:
            break
        time.sleep(0.5)
    response.raise_for_status()
    return response.json()


def state_of(api: str, run_id: str) -> str:
    return str(api_call("GET", f"{api}/flow_runs/{run_id}")["state"]["type"])


def test_a_prefect_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(
    prefect_api: tuple[str, Path], tmp_path: Path, database_url: str
) -> None:
    api, home = prefect_api
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=PAGES, seed=7)
    env = prefect_env(home, api) | {
        "KERANI_SOURCE_DIR": str(REPO),
        "KERANI_DATA_DIR": str(tmp_path / "data"),
        "KERANI_DB_URL": database_url,
        "KERANI_BLOB_URL": str(tmp_path / "blobs"),
    }
    parameters = {"paths": [str(forms / "pages")], "template": "bantuan_form"}
    seed = int(os.environ.get("KERANI_TEST_KILL_SEED", time.time_ns() % 10**6))
    # Anywhere in the run's work: ingest, pre-OCR or routing (3 pages take about 10 s).
    delay = random.Random(seed).uniform(0.0, 12.0)
    worker = start_worker(env)
    first = run_deployment(api, parameters)
    deadline = time.monotonic() + 120
    while state_of(api, first) in {"SCHEDULED", "PENDING"}:
        assert time.monotonic() < deadline, "the worker did not start the run in 120 s"
        time.sleep(0.2)
    time.sleep(delay)
    killed_in = state_of(api, first)
    kill_tree(worker.pid)
    print(f"KERANI_TEST_KILL_SEED={seed}: worker killed {delay:.1f} s into the run ({killed_in})")
    # The operator starts a new worker and runs the batch again.
    worker = start_worker(env)
    try:
        again = run_deployment(api, parameters)
        deadline = time.monotonic() + 300
        while (state := state_of(api, again)) not in {"COMPLETED", "FAILED", "CRASHED"}:
            assert time.monotonic() < deadline, f"the second run is still {state} after 300 s"
            time.sleep(1)
    finally:
        kill_tree(worker.pid)
    assert state == "COMPLETED", f"KERANI_TEST_KILL_SEED={seed}: the rerun ended {state}"
    assert counts(database_url) == intact(PAGES), (
        f"KERANI_TEST_KILL_SEED={seed}, killed {delay:.1f} s into the run ({killed_in})"
    )


def wait_for(api: str, run_id: str, seconds: float = 300) -> str:
    """The run's final state type, polling until it has one."""
    deadline = time.monotonic() + seconds
    while (state := state_of(api, run_id)) not in {"COMPLETED", "FAILED", "CRASHED"}:
        assert time.monotonic() < deadline, f"the run is still {state} after {seconds} s"
        time.sleep(1)
    return state


def test_kerani_submit_deployment_hands_the_batch_to_the_work_pool(
    prefect_api: tuple[str, Path], tmp_path: Path, database_url: str
) -> None:
    api, home = prefect_api
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=2, seed=8)
    kerani_env = {
        "KERANI_SOURCE_DIR": str(REPO),
        "KERANI_DATA_DIR": str(tmp_path / "data"),
        "KERANI_DB_URL": database_url,
        "KERANI_BLOB_URL": str(tmp_path / "blobs"),
    }
    env = prefect_env(home, api)
    sent = subprocess.run(
        [
            str(BIN / "kerani"),
            "submit",
            str(forms / "pages"),
            "--template",
            "bantuan_form",
            "--deployment",
        ],
        env=env,  # the submitting machine needs no database: the workers have it
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    run_id = sent.stdout.split("flow run ", 1)[1].split(".", 1)[0].strip()
    worker = start_worker(env | kerani_env)
    try:
        assert wait_for(api, run_id) == "COMPLETED"
    finally:
        kill_tree(worker.pid)
    found = counts(database_url)
    assert (found["pages"], found["pages not routed"]) == (2, 0)


def test_kerani_submit_deployment_says_in_one_line_when_there_is_no_server(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port_for_tests()}/api"
    for url, said in (
        (closed, f"cannot reach the Prefect server at {closed}"),
        ("", "no Prefect server to send to: set PREFECT_API_URL"),
    ):
        env = prefect_env(tmp_path / "home", url)
        done = subprocess.run(
            [
                str(BIN / "kerani"),
                "submit",
                str(tmp_path),
                "--template",
                "bantuan_form",
                "--deployment",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 9, done.stdout + done.stderr
        assert said in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_the_reconcile_schedule_of_prefect_yaml_creates_runs(
    prefect_api: tuple[str, Path],
) -> None:
    api, _ = prefect_api
    deployment = api_call("GET", f"{api}/deployments/name/reconcile-records/reconcile-records")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["*/10 * * * *"]
    deadline = time.monotonic() + 120
    while True:
        runs = api_call(
            "POST",
            f"{api}/flow_runs/filter",
            json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 10},
        )
        if runs or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert runs, "the scheduler made no run of reconcile-records in 120 s"
    assert {r["state"]["type"] for r in runs} <= {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED"}
