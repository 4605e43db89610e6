"""The practice round: known-answer snippets a new worker answers before any paid work.

Ten items are cut from the bundled samples with the same crop as real snippets
(`ocr.snippets.crop_snippet`): amounts, dates and text lines of the real receipts in
kerani/samples/receipts, an IC number, an amount and an empty box of a bantuan form drawn
with fictional values (`forms.rendering.draw_form`), and a receipt line blurred past
reading. They are made once per process from those files, so every run makes the same.

Each answer is checked with the comparison real answers get (`consensus.answer_key`, the
field type's normalisation) and kept in practice_answers, never as an answer to a task:
practice is neither paid nor counted. A round passes when every item is answered and at
least `practice_pass_share` of them are right (`round_passed`); the worker's
`practice_passed_at` is then set, and only then does `claim_tasks` lease them paid work.
A failed round is tried again as the next round.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter
from sqlalchemy import Engine, func, select, update

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.core.text import unstorable
from kerani.core.vocabulary import AnswerKind
from kerani.forms.rendering import draw_form
from kerani.forms.templates import load_template
from kerani.microtasks.consensus import answer_key
from kerani.microtasks.tasks import MAX_ANSWER_CHARS
from kerani.ocr.snippets import crop_snippet
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.statements import dialect_insert

PRACTICE_KINDS = (AnswerKind.VALUE, AnswerKind.UNREADABLE, AnswerKind.BLANK)
# As the pipeline cuts snippets (ocr.snippet_margin_px): practice looks like the real work.
MARGIN = 6
# The fictional person on the practice form: valid as a MyKad number and a date of birth.
FORM_VALUES = {
    "full_name": "NUR AISYAH BINTI AHMAD",
    "ic_number": "850412-10-5528",
    "date_of_birth": "12/04/1985",
    "monthly_income": "1250.00",
    "city": "Klang",
}


@dataclass(frozen=True)
class PracticeItem:
    """One known-answer snippet: what it shows, how it is labelled, and its right answer."""

    id: str
    field_type: str  # whose tip and normalisation apply (amount, date, ic_number, line, ...)
    kind: str  # the right answer's kind: value | unreadable | blank
    value: str  # the right value ("" for unreadable or blank)
    label_en: str | None  # the field's label (None: a text line, labelled as such)
    label_ms: str | None
    hint: str | None  # the format hint the review page shows
    snippet: bytes  # WebP, as crop_snippet cuts it

    def label(self, language: str) -> str | None:
        """The label in `language` (en or ms), None for a text line."""
        return self.label_ms if language == "ms" else self.label_en


@dataclass(frozen=True)
class PracticeAnswer:
    """One answer of a round, as kept."""

    item: str
    kind: str
    value: str
    correct: bool
    answered_at: datetime


@dataclass(frozen=True)
class PracticeState:
    """Where a worker stands: their round, its answers, and whether (when) they passed."""

    round: int
    answers: dict[str, PracticeAnswer]
    items: tuple[PracticeItem, ...]
    passed_at: datetime | None
    pass_share: float

    @property
    def complete(self) -> bool:
        """Every item of the round is answered."""
        return all(item.id in self.answers for item in self.items)

    @property
    def right(self) -> int:
        """Right answers in the round."""
        return sum(a.correct for a in self.answers.values())

    @property
    def round_passed(self) -> bool:
        """The round, complete, passes the rule."""
        return round_passed(
            [a.correct for a in self.answers.values()], len(self.items), self.pass_share
        )

    @property
    def next_item(self) -> PracticeItem | None:
        """The first item of the round not answered yet (None: the round is complete)."""
        return next((i for i in self.items if i.id not in self.answers), None)

    @property
    def needed(self) -> int:
        """Right answers a round needs."""
        return needed_right(len(self.items), self.pass_share)


def needed_right(items: int, pass_share: float) -> int:
    """The right answers a round of `items` needs to pass at `pass_share`."""
    # The smallest whole count at or above the share (0.8 of 10 is 8, of 9 is 8).
    for n in range(items + 1):
        if n >= pass_share * items - 1e-9:
            return n
    return items


def round_passed(correct: Sequence[bool], items: int, pass_share: float) -> bool:
    """Whether a round passes: all `items` answered, and at least `pass_share` of them right."""
    if items < 1 or len(correct) < items:
        return False
    return sum(bool(c) for c in correct) >= needed_right(items, pass_share)


def check_answer(item: PracticeItem, kind: str, value: str) -> bool:
    """Whether an answer is the item's, compared as real answers are (type-normalised)."""
    return answer_key(kind, value, item.field_type) == answer_key(
        item.kind, item.value, item.field_type
    )


# ---- the items ----------------------------------------------------------------------------


def _samples() -> Path:
    return Path(str(resources.files("kerani") / "samples"))


def _receipt_lines() -> dict[str, dict[str, tuple[tuple[int, int, int, int], str]]]:
    """Each receipt's lines by name: (box, text), from the samples' truth.jsonl."""
    lines = {}
    truth = _samples() / "receipts" / "truth.jsonl"
    for row in truth.read_text("utf-8").splitlines():
        page = json.loads(row)
        lines[Path(page["page"]).stem] = {
            f["name"]: (tuple(f["box"]), f["text"]) for f in page["fields"]
        }
    return lines


@functools.cache
def practice_items() -> tuple[PracticeItem, ...]:
    """The ten practice items, in the order a round shows them (made once per process)."""
    receipt = load_template("receipt")
    form = load_template("bantuan_form")
    total, date = receipt.spec("total"), receipt.spec("date")
    assert total is not None and date is not None  # the bundled receipt template has both
    lines = _receipt_lines()
    pages: dict[str, Image.Image] = {}

    def page(name: str) -> Image.Image:
        if name not in pages:
            with Image.open(_samples() / "receipts" / "pages" / f"{name}.jpg") as image:
                pages[name] = image.convert("L")
        return pages[name]

    def from_receipt(
        item_id: str, name: str, line: str, field_type: str, spec: Any = None
    ) -> PracticeItem:
        box, text = lines[name][line]
        return PracticeItem(
            item_id,
            field_type,
            AnswerKind.VALUE,
            text,
            spec.label.en if spec else None,
            spec.label.ms if spec else None,
            spec.format_hint if spec else None,
            crop_snippet(page(name), box, MARGIN),
        )

    # A line blurred past reading: something is written, nobody can say what.
    blur_box, _ = lines["000"]["line_004"]
    blurred = page("000").copy()
    region = blurred.crop(blur_box).filter(ImageFilter.GaussianBlur(6))
    blurred.paste(region, blur_box[:2])
    unreadable = PracticeItem(
        "unreadable-line",
        "line",
        AnswerKind.UNREADABLE,
        "",
        None,
        None,
        None,
        crop_snippet(blurred, blur_box, MARGIN),
    )

    filled, tight = draw_form(form, FORM_VALUES, random.Random(7), 250)

    def from_form(item_id: str, field: str) -> PracticeItem:
        spec = form.field(field)
        value = FORM_VALUES.get(field, "")
        # An empty box is cut as the pipeline cuts it: the field's whole box.
        box = tight.get(field, spec.box)
        return PracticeItem(
            item_id,
            spec.type,
            AnswerKind.VALUE if value else AnswerKind.BLANK,
            value,
            spec.label.en,
            spec.label.ms,
            spec.format_hint,
            crop_snippet(filled, tuple(box), MARGIN),  # type: ignore[arg-type]
        )

    # Receipt lines whose truth is the print exactly: SROIE's truth upper-cases some lines
    # printed in mixed case, which a worker typing what they see would "get wrong".
    return (
        from_receipt("amount-total-020", "020", "line_058", "amount", total),
        from_receipt("line-000-city", "000", "line_006", "line"),
        from_receipt("date-076", "076", "line_010", "date", date),
        from_form("ic-form", "ic_number"),
        unreadable,
        from_receipt("line-020-company", "020", "line_001", "line"),
        from_form("amount-form", "monthly_income"),
        from_receipt("date-020", "020", "line_013", "date", date),
        from_form("blank-form", "phone"),
        from_receipt("amount-total-148", "148", "line_024", "amount", total),
    )


def round_items(rules: CrowdSettings) -> tuple[PracticeItem, ...]:
    """The items of a round under these settings (the first `practice_items`)."""
    return practice_items()[: rules.practice_items]


def practice_item(item_id: str) -> PracticeItem:
    """The item with this id."""
    for item in practice_items():
        if item.id == item_id:
            return item
    raise NotFoundError(f"no practice item {item_id!r}")


# ---- a worker's rounds --------------------------------------------------------------------


def practice_state(
    db: Engine, worker_id: int, rules: CrowdSettings, round_no: int | None = None
) -> PracticeState:
    """Where the worker stands in practice: their latest round (or `round_no`), its answers."""
    p, w = schema.practice_answers, schema.workers
    with db.connect() as conn:
        passed_at = conn.execute(
            select(w.c.practice_passed_at).where(w.c.id == worker_id)
        ).scalar_one_or_none()
        if round_no is None:
            latest = conn.execute(
                select(func.max(p.c.round)).where(p.c.worker_id == worker_id)
            ).scalar()
            round_no = int(latest) if latest is not None else 1
        rows = conn.execute(
            select(p.c.item, p.c.kind, p.c.value, p.c.correct, p.c.answered_at)
            .where(p.c.worker_id == worker_id, p.c.round == round_no)
            .order_by(p.c.id)
        ).all()
    answers = {
        r.item: PracticeAnswer(r.item, r.kind, r.value, bool(r.correct), r.answered_at)
        for r in rows
    }
    return PracticeState(
        round_no, answers, round_items(rules), passed_at, rules.practice_pass_share
    )


def answer_practice(
    db: Engine,
    worker_id: int,
    round_no: int,
    item_id: str,
    kind: str,
    value: str,
    rules: CrowdSettings,
) -> PracticeState:
    """Keep a practice answer (the first one of an item in a round counts; a resubmit
    changes nothing) and pass the worker when it completes a passing round.

    `round_no` is the worker's latest round, or the one after it when that one is complete
    (the retry of a failed round).
    """
    if kind not in PRACTICE_KINDS:
        raise BadInputError(f"a practice answer is one of {', '.join(PRACTICE_KINDS)}")
    if len(value) > MAX_ANSWER_CHARS or unstorable(value):
        raise BadInputError(f"answer must be at most {MAX_ANSWER_CHARS} storable characters")
    state = practice_state(db, worker_id, rules)
    allowed = {state.round, state.round + 1} if state.complete else {state.round}
    if round_no not in allowed:
        raise BadInputError("that practice round is over; reload the page", key="pr_stale")
    item = practice_item(item_id)
    if item.id not in {i.id for i in state.items}:
        raise NotFoundError(f"no practice item {item_id!r} in this round")
    value = value if kind == AnswerKind.VALUE else ""
    p = schema.practice_answers
    with db.begin() as conn:
        conn.execute(
            dialect_insert(conn.dialect.name)(p)
            .values(
                worker_id=worker_id,
                round=round_no,
                item=item.id,
                kind=kind,
                value=value,
                correct=check_answer(item, kind, value),
                answered_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["worker_id", "round", "item"])
        )
    state = practice_state(db, worker_id, rules, round_no)
    if state.complete and state.round_passed and state.passed_at is None:
        mark_practice_passed(db, worker_id)
        state = practice_state(db, worker_id, rules, round_no)
    return state


def mark_practice_passed(db: Engine, worker_id: int) -> None:
    """Record that the worker passed practice (now; an earlier pass is kept): a passed
    round, or a simulated worker who stands for someone who has."""
    w = schema.workers
    with db.begin() as conn:
        conn.execute(
            update(w)
            .where(w.c.id == worker_id, w.c.practice_passed_at.is_(None))
            .values(practice_passed_at=utcnow())
        )


def has_started_practice(db: Engine, worker_id: int) -> bool:
    """Whether the worker has answered any practice item (in any round)."""
    p = schema.practice_answers
    with db.connect() as conn:
        row = conn.execute(select(p.c.id).where(p.c.worker_id == worker_id).limit(1)).first()
    return row is not None


def has_passed_practice(db: Engine, worker_id: int) -> bool:
    """Whether the worker passed practice (and may get paid work)."""
    w = schema.workers
    with db.connect() as conn:
        passed = conn.execute(
            select(w.c.practice_passed_at).where(w.c.id == worker_id)
        ).scalar_one_or_none()
    return passed is not None
