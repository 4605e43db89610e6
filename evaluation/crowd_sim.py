"""Simulated workers with stated error models, working through the same HTTP API as people.

They stand in for people in the demo and in benchmarks; every figure that comes from them
says so. A simulated worker 'reads' a snippet by looking its true text up in ground truth,
then answers according to its profile: careful (1–3% slips), careless (10–20%), a spammer
who submits whatever is pre-filled, or a junk typer. Some drop out mid-task, leaving a
lease to expire.

Honest workers are anchored by a pre-filled guess: shown a wrong one, they let it through
a stated share of the time, more often when it is a near miss (one character off). People
checking a pre-filled value visually miss many errors that blind double entry catches
(Barchard et al. 2008: blind double entry left about 28 times fewer errors than visual
checking). The shares here are assumptions in that spirit, not measurements,
stated in each profile: careful workers miss 25% of wrong guesses (50% of near misses),
careless ones 50% (75%).
"""

from __future__ import annotations

import random
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine, select

from kerani.core.vocabulary import AnswerKind
from kerani.evaluation.ground_truth import edit_distance
from kerani.storage import schema


@dataclass(frozen=True)
class Profile:
    """How a simulated worker behaves."""

    kind: str  # careful | careless | spammer | junk
    error_rate: float = 0.0
    dropout_rate: float = 0.0  # chance per task of vanishing with the task leased
    read_seconds: float = 2.0
    keys_per_second: float = 3.0
    # Shown a wrong pre-filled guess: how often it is accepted unchanged (anchoring),
    # and how often when it is one character off the truth.
    accepts_wrong_prefill: float = 0.0
    accepts_near_miss: float = 0.0


CAREFUL_ANCHORING = (0.25, 0.50)
CARELESS_ANCHORING = (0.50, 0.75)
CAREFUL = Profile("careful", 0.02, 0.0, 2.0, 3.0, *CAREFUL_ANCHORING)
CARELESS = Profile("careless", 0.15, 0.0, 2.0, 3.0, *CARELESS_ANCHORING)
# Spammers do not read: a glance and a tap, or a few random keys.
SPAMMER = Profile("spammer", read_seconds=0.8)
JUNK = Profile("junk", read_seconds=0.8, keys_per_second=6.0)


@dataclass(frozen=True)
class SimulatedWorker:
    """A simulated worker's name, access code and profile."""

    name: str
    code: str
    profile: Profile

    @property
    def true_accuracy(self) -> float:
        """The accuracy the profile implies on fields people see (spammers and junk: none)."""
        if self.profile.kind in ("spammer", "junk"):
            return 0.0
        return 1.0 - self.profile.error_rate


@dataclass
class CrowdStats:
    """What the simulated crowd did: answers, keystrokes, simulated working time, drop-outs."""

    answers: int = 0
    keystrokes: int = 0
    seconds: float = 0.0
    dropouts: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)


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
    true_text: str | None, prefill: str, profile: Profile, rng: random.Random
) -> dict[str, str]:
    """What a worker of this profile submits for a snippet showing `true_text`."""
    if profile.kind == "spammer":
        if prefill:
            return {"kind": AnswerKind.VALUE, "value": prefill}
        return {"kind": AnswerKind.BLANK, "value": ""}
    if profile.kind == "junk":
        junk = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(2, 8)))
        return {"kind": AnswerKind.VALUE, "value": junk}
    if true_text is None or not true_text.strip():
        return {"kind": AnswerKind.BLANK, "value": ""}
    if prefill and prefill != true_text:
        near = edit_distance(prefill, true_text) <= 1
        miss = profile.accepts_near_miss if near else profile.accepts_wrong_prefill
        if rng.random() < miss:
            return {"kind": AnswerKind.VALUE, "value": prefill}  # anchored: let it through
    if rng.random() < profile.error_rate:
        return {"kind": AnswerKind.VALUE, "value": corrupt(true_text, rng)}
    return {"kind": AnswerKind.VALUE, "value": true_text}


def keystrokes(prefill: str, answer: dict[str, str]) -> int:
    """Keys pressed: edits from the pre-filled text to the answer, plus one to submit."""
    if answer["kind"] != AnswerKind.VALUE:
        return 1  # one tap on Unreadable or Blank
    return edit_distance(prefill, answer["value"]) + 1


def run_crowd(
    client: httpx.Client,
    workers: Sequence[SimulatedWorker],
    truth_of_task: Callable[[str], str | None],
    seed: int = 0,
    on_answer: Callable[[], None] | None = None,
    lease_seconds: float = 0.0,
    max_answers: int = 1_000_000,
) -> CrowdStats:
    """Let the workers claim and answer until none gets a task; return what they did.

    A worker who drops out leaves a task leased and comes back `lease_seconds` later, when
    the lease has expired and the task is back in the queue.
    """
    rng = random.Random(seed)
    stats = CrowdStats()
    present = list(workers)
    away: dict[str, float] = {}  # worker -> when they come back (after their lease expired)
    while present and stats.answers < max_answers:
        idle = 0
        now = time.monotonic()
        for worker in list(present):
            if away.get(worker.name, 0.0) > now:
                idle += 1
                continue
            auth = {"Authorization": f"Bearer {worker.code}"}
            claim = client.post("/api/tasks/claim", headers=auth)
            if claim.status_code in (204, 403):  # nothing to do, or paused by quarantine
                idle += 1
                continue
            claim.raise_for_status()
            task = claim.json()
            client.get(task["snippet_url"], headers=auth).raise_for_status()
            if rng.random() < worker.profile.dropout_rate:
                # Gone mid-task (battery, signal): back later, once the lease has expired.
                away[worker.name] = time.monotonic() + lease_seconds
                stats.dropouts += 1
                continue
            prefill = task["ocr_guess"]
            body = answer_for(truth_of_task(task["task_id"]), prefill, worker.profile, rng)
            keys = keystrokes(prefill, body)
            took = worker.profile.read_seconds + keys / worker.profile.keys_per_second
            # The simulated time, as the review page reports a worker's: rates are set from it.
            payload = body | {"idempotency_key": secrets.token_urlsafe(12)}
            client.post(
                f"/api/tasks/{task['task_id']}/answer",
                json={**payload, "duration_ms": round(took * 1000)},
                headers=auth,
            ).raise_for_status()
            stats.answers += 1
            stats.keystrokes += keys
            stats.seconds += took
            stats.by_worker[worker.name] = stats.by_worker.get(worker.name, 0) + 1
            if on_answer is not None:
                on_answer()
        if idle == len(present):
            if any(t > time.monotonic() for t in away.values()):
                time.sleep(lease_seconds)  # wait for the absent workers and their leases
                continue
            break
    return stats


def truth_by_task(db: Engine, truth_of_field: dict[int, str | None]) -> Callable[[str], str | None]:
    """The simulated worker's eyes: the true text of the field a task's snippet shows."""

    def lookup(task_id: str) -> str | None:
        with db.connect() as conn:
            field_id = conn.execute(
                select(schema.tasks.c.field_id, schema.tasks.c.gold_field_id).where(
                    schema.tasks.c.id == task_id
                )
            ).one()
        return truth_of_field.get(field_id[0] or field_id[1])

    return lookup
