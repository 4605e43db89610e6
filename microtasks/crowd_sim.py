"""Simulated workers with stated error rates, working through the same HTTP API as people.

They stand in for people in the demo and in benchmarks; every figure that comes from them
says so. A simulated worker 'reads' a snippet by looking its true text up in ground truth.
"""

from __future__ import annotations

import random
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import Engine, select

from storage import schema


@dataclass(frozen=True)
class SimulatedWorker:
    """A worker's access code and the chance that an answer of theirs is wrong."""

    name: str
    code: str
    error_rate: float


def corrupt(text: str, rng: random.Random) -> str:
    """A plausible human slip: a dropped, doubled or mistyped character."""
    if not text:
        return rng.choice(string.ascii_uppercase)
    i = rng.randrange(len(text))
    slip = rng.choice(("drop", "double", "typo"))
    if slip == "drop" and len(text) > 1:
        return text[:i] + text[i + 1 :]
    if slip == "double":
        return text[:i] + text[i] + text[i:]
    alphabet = string.digits if text[i].isdigit() else string.ascii_uppercase
    wrong = rng.choice([c for c in alphabet if c != text[i]])
    return text[:i] + wrong + text[i + 1 :]


def answer_for(
    true_text: str | None, worker: SimulatedWorker, rng: random.Random
) -> dict[str, str]:
    """What this worker submits for a snippet whose true text is `true_text`."""
    if true_text is None or not true_text.strip():
        return {"kind": "blank", "value": ""}
    if rng.random() < worker.error_rate:
        return {"kind": "value", "value": corrupt(true_text, rng)}
    return {"kind": "value", "value": true_text}


def run_crowd(
    client: httpx.Client,
    workers: Sequence[SimulatedWorker],
    truth_of_task: Callable[[str], str | None],
    seed: int = 0,
    on_answer: Callable[[], None] | None = None,
    max_answers: int = 100_000,
) -> int:
    """Let the workers claim and answer until no worker gets a task; return answers given."""
    rng = random.Random(seed)
    given = 0
    active = list(workers)
    while active and given < max_answers:
        for worker in list(active):
            auth = {"Authorization": f"Bearer {worker.code}"}
            claim = client.post("/api/tasks/claim", headers=auth)
            claim.raise_for_status()
            if claim.status_code == 204:
                active.remove(worker)
                continue
            task = claim.json()
            client.get(task["snippet_url"], headers=auth).raise_for_status()
            body = answer_for(truth_of_task(task["task_id"]), worker, rng)
            body["idempotency_key"] = secrets.token_urlsafe(12)
            client.post(
                f"/api/tasks/{task['task_id']}/answer", json=body, headers=auth
            ).raise_for_status()
            given += 1
            if on_answer is not None:
                on_answer()
    return given


def truth_by_task(db: Engine, truth_of_field: dict[int, str | None]) -> Callable[[str], str | None]:
    """The simulated worker's eyes: the true text of the field a task's snippet shows."""

    def lookup(task_id: str) -> str | None:
        with db.connect() as conn:
            field_id = conn.execute(
                select(schema.tasks.c.field_id).where(schema.tasks.c.id == task_id)
            ).scalar_one()
        return truth_of_field.get(field_id)

    return lookup
