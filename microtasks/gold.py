"""Gold snippets: fields with a known answer, mixed into workers' streams to measure them.

A real deployment brings no truth, so gold is made in production, three ways, each kept in
`fields.gold_value` with its `fields.gold_origin`:

- truth (`make_gold`): a truth folder's answers, for the demo and the benchmarks only;
- staff: a random sample of fields (`sample_for_keying`) keyed blind by operators twice
  (`record_keying`, table gold_keyings); where both rounds agree, the agreed value is gold
  and a field still waiting for people is settled with it;
- crowd (`harvest_gold`): settled fields backed by strong independent evidence, either a
  trusted worker's arbitration or enough proven workers keying blind and agreeing.

A gold snippet is shown to any worker, so only fields whose sensitivity their page's
template lets become gold (`gold_sensitivity`, default public) may; restricted never.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
)

from kerani.core.errors import (
    BadInputError,
    ConflictError,
    ForbiddenError,
    KeraniError,
    NotFoundError,
    TemplateError,
)
from kerani.core.vocabulary import (
    AnswerKind,
    AuditAction,
    FieldStatus,
    GoldOrigin,
    PageStatus,
    Role,
    Sensitivity,
    TaskStatus,
    ValueKind,
    ValueSource,
)
from kerani.forms.catalogue import template_of
from kerani.microtasks.consensus import ANSWER_KINDS, answer_key, normalise
from kerani.microtasks.tasks import MAX_ANSWER_CHARS
from kerani.people.workers import person_named
from kerani.storage import schema
from kerani.storage.blobs import BlobStore
from kerani.storage.database import utcnow

log = logging.getLogger(__name__)

ROUNDS = (1, 2)
# Fields people (or the OCR) have had a go at: a pending field has not been routed yet.
KEYABLE = (FieldStatus.IN_REVIEW, FieldStatus.SETTLED, FieldStatus.AUTO_ACCEPTED)
SHEET_COLUMNS = ("field_id", "snippet", "field_type", "kind", "value")
SHEET_NAME = "keying.csv"
# Ids per UPDATE of harvest_gold: well under SQLite's bound-parameter limit.
_CHUNK = 500


# ---- truth gold ---------------------------------------------------------------------------


def make_gold(db: Engine, answers: dict[int, str]) -> int:
    """Turn fields (id → known answer) into gold, out of the agency flow; return how many."""
    f, t, p, a = schema.fields, schema.tasks, schema.pages, schema.answers
    with db.begin() as conn:
        for field_id, value in answers.items():
            conn.execute(
                f.update()
                .where(f.c.id == field_id)
                .values(
                    status=FieldStatus.GOLD,
                    value=value,
                    value_kind=ValueKind.TEXT,
                    source=ValueSource.GOLD,
                    gold_value=value,
                    gold_origin=GoldOrigin.TRUTH,
                )
            )
            # Their ordinary tasks (unanswered, as gold comes from fresh pages) are withdrawn.
            conn.execute(
                delete(t).where(t.c.field_id == field_id, ~exists().where(a.c.task_id == t.c.id))
            )
        page_ids = (
            conn.execute(select(f.c.page_id).where(f.c.id.in_(list(answers))).distinct())
            .scalars()
            .all()
        )
        conn.execute(p.update().where(p.c.id.in_(page_ids)).values(status=PageStatus.GOLD))
    return len(answers)


# ---- which fields may become gold ---------------------------------------------------------


def template_gold_sensitivity(
    conn: Connection, template: str, template_id: int | None
) -> tuple[str, ...]:
    """The sensitivities a template version lets become gold; none when it cannot be read."""
    try:
        allowed = template_of(conn, template, template_id).gold_sensitivity
    except TemplateError as e:
        # No gold from pages whose template is gone or broken, rather than no gold at all.
        log.warning("no gold from pages of template %r: %s", template, e)
        return ()
    return tuple(sorted(str(s) for s in allowed if s != Sensitivity.RESTRICTED))


def _gold_allowed(conn: Connection) -> ColumnElement[bool]:
    """A condition on pages and fields: the field's template lets its sensitivity be gold."""
    p, f = schema.pages, schema.fields
    # One condition per set of sensitivities, over the templates that allow that set: a
    # handful of templates, so a short condition the database checks row by row.
    by_allowed: dict[tuple[str, ...], list[ColumnElement[bool]]] = {}
    for name, template_id in conn.execute(select(p.c.template, p.c.template_id).distinct()):
        allowed = template_gold_sensitivity(conn, str(name), template_id)
        if allowed:
            version = (
                p.c.template_id.is_(None) if template_id is None else p.c.template_id == template_id
            )
            by_allowed.setdefault(allowed, []).append(and_(p.c.template == name, version))
    clauses = [
        and_(or_(*pages), f.c.sensitivity.in_(allowed))
        for allowed, pages in sorted(by_allowed.items(), key=lambda item: item[0])
    ]
    # Restricted again, on its own: whatever a template says, never a restricted field.
    return and_(f.c.sensitivity != Sensitivity.RESTRICTED, or_(false(), *clauses))


def _keyings_of_field() -> Any:
    k, f = schema.gold_keyings, schema.fields
    return select(func.count()).where(k.c.field_id == f.c.id).scalar_subquery()


def _keyable(conn: Connection) -> list[ColumnElement[bool]]:
    """Conditions on fields joined to pages: may be keyed by staff to become gold."""
    f, p = schema.fields, schema.pages
    return [
        p.c.status != PageStatus.GOLD,
        f.c.status.in_(KEYABLE),
        f.c.gold_value.is_(None),
        _keyings_of_field() < len(ROUNDS),
        _gold_allowed(conn),
    ]


# ---- staff keying, blind, twice ---------------------------------------------------------


def sample_for_keying(
    db: Engine, count: int, *, batch_id: str | None = None, seed: int | None = None
) -> list[int]:
    """A random sample of up to `count` field ids that staff may key to make gold.

    From work pages (not truth-gold pages), fields people or the OCR have had a go at, with
    no gold yet, not keyed in both rounds, whose template lets their sensitivity be gold.
    A `seed` makes the sample repeatable.
    """
    if count < 1:
        raise BadInputError(f"count must be at least 1, not {count}")
    f, p = schema.fields, schema.pages
    with db.connect() as conn:
        query = select(f.c.id).join(p, p.c.id == f.c.page_id).where(*_keyable(conn))
        if batch_id is not None:
            query = query.where(p.c.batch_id == batch_id)
        if seed is None:
            # The database draws the sample: nothing but `count` ids leaves it.
            drawn = conn.execute(query.order_by(func.random()).limit(count)).scalars()
            return [int(i) for i in drawn]
        ids = [int(i) for i in conn.execute(query.order_by(f.c.id)).scalars()]
    return sorted(random.Random(seed).sample(ids, min(count, len(ids))))


@dataclass(frozen=True)
class KeyingOutcome:
    """What a keying did: its round, and once both rounds are in, whether they agree."""

    field_id: int
    round: int
    complete: bool  # both rounds are keyed
    agreed: bool | None  # None until both rounds are keyed
    gold_value: str | None  # the gold made (agreeing values; none for unreadable or blank)
    settled: bool  # the field was waiting for people and is settled with the agreed answer
    completed_page_id: int | None  # its page has no open field left: reassemble it


def _check_keying(field_id: int, round_: int, kind: str, value: str) -> str:
    """Refuse a malformed keying, naming the field; return the value to keep."""
    if round_ not in ROUNDS:
        raise BadInputError(f"field {field_id}: round must be 1 or 2, not {round_!r}")
    if kind not in ANSWER_KINDS:
        raise BadInputError(
            f"field {field_id}: kind must be one of {', '.join(ANSWER_KINDS)}, not {kind!r}"
        )
    if len(value) > MAX_ANSWER_CHARS:
        raise BadInputError(f"field {field_id}: value is longer than {MAX_ANSWER_CHARS} characters")
    if kind == AnswerKind.VALUE and not value.strip():
        raise BadInputError(
            f"field {field_id}: kind value needs a value (or kind unreadable or blank)"
        )
    return value if kind == AnswerKind.VALUE else ""


def _check_keyer(conn: Connection, keyer_id: int) -> None:
    w = schema.workers
    role = conn.execute(select(w.c.role).where(w.c.id == keyer_id)).scalar()
    if role is None:
        raise NotFoundError(f"no person {keyer_id}")
    if role != Role.OPERATOR:
        # A worker keying gold would write the answers that later test them.
        raise ForbiddenError(f"person {keyer_id} is a {role}: only operators key gold")


def _keyable_field(conn: Connection, field_id: int, *, lock: bool = True) -> Any:
    """The field's row (locked, to record a keying) if staff may key it; why not otherwise."""
    f, p = schema.fields, schema.pages
    query = (
        select(
            f.c.id,
            f.c.kind,
            f.c.status,
            f.c.sensitivity,
            f.c.gold_value,
            f.c.page_id,
            p.c.status.label("page_status"),
            p.c.template,
            p.c.template_id,
        )
        .join(p, p.c.id == f.c.page_id)
        .where(f.c.id == field_id)
    )
    if lock and conn.dialect.name == "postgresql":
        # Two rounds keyed at once must not both miss the other: one waits for the first.
        query = query.with_for_update(of=f)
    row = conn.execute(query).first()
    if row is None:
        raise NotFoundError(f"no field {field_id}")
    if row.gold_value is not None or row.page_status == PageStatus.GOLD:
        raise ConflictError(f"field {field_id} is gold already")
    if row.status not in KEYABLE:
        raise ConflictError(f"field {field_id} is {row.status}: not routed to people yet")
    if row.sensitivity == Sensitivity.RESTRICTED:
        raise ForbiddenError(f"field {field_id} is restricted: restricted fields never become gold")
    if row.sensitivity not in template_gold_sensitivity(conn, row.template, row.template_id):
        raise ForbiddenError(
            f"field {field_id} is {row.sensitivity}: its template {row.template!r} does not "
            f"let {row.sensitivity} fields become gold (gold_sensitivity)"
        )
    return row


def _page_complete(conn: Connection, page_id: int) -> bool:
    f = schema.fields
    still_open = conn.execute(
        select(func.count()).where(
            f.c.page_id == page_id, f.c.status.in_((FieldStatus.PENDING, FieldStatus.IN_REVIEW))
        )
    ).scalar_one()
    return int(still_open) == 0


def _settle_with_gold(conn: Connection, field: Any, kind: str, value: str) -> int | None:
    """Settle a field waiting for people with what staff agreed; its page id if complete."""
    f, t = schema.fields, schema.tasks
    now = utcnow()
    conn.execute(
        f.update()
        .where(f.c.id == field.id, f.c.status == FieldStatus.IN_REVIEW)
        .values(
            status=FieldStatus.SETTLED,
            value=value,
            value_kind=ValueKind.TEXT if kind == AnswerKind.VALUE else ValueKind(kind),
            source=ValueSource.GOLD,
        )
    )
    # Its task settles as settling.py settles one: no lease left, so the next claim skips it
    # and the holder's late answer is refused by the lease check.
    conn.execute(
        t.update()
        .where(t.c.field_id == field.id, t.c.status == TaskStatus.OPEN)
        .values(
            status=TaskStatus.SETTLED, settled_at=now, lease_worker_id=None, lease_expires_at=None
        )
    )
    # The page stays `routed`: its reassembly (the caller's trigger, or the reconcile flow's
    # pages_to_reassemble) finds it complete and builds its record.
    return int(field.page_id) if _page_complete(conn, int(field.page_id)) else None


def record_keying(
    db: Engine, field_id: int, round: int, keyer_id: int, kind: str, value: str
) -> KeyingOutcome:
    """Record an operator's blind keying of a field in round 1 or 2; gold when both agree.

    A round is keyed once (ConflictError for a second keying of it). When both rounds are in
    and agree as their field type reads them, the field's gold is the agreed value
    (normalised), and a field still waiting for people is settled with it. When they
    disagree the pair stays on record as a disagreement: the field is simply not gold.
    Agreeing on unreadable or blank settles a waiting field too, but makes no gold: a gold
    snippet tests workers against a value.
    """
    value = _check_keying(field_id, round, kind, value)
    with db.begin() as conn:
        _check_keyer(conn, keyer_id)
        field = _keyable_field(conn, field_id)
        return _record(conn, field, round, keyer_id, kind, value)


def record_next_keying(
    db: Engine, field_id: int, keyer_id: int, kind: str, value: str
) -> KeyingOutcome:
    """Record a keying as the field's next missing round (the operator page's way).

    The second round must come from another operator than the first: one person keying a
    field twice is not two independent readings (the CLI's two copies by one clerk are
    `record_keying`'s to take).
    """
    k = schema.gold_keyings
    _check_keying(field_id, 1, kind, value)
    with db.begin() as conn:
        _check_keyer(conn, keyer_id)
        field = _keyable_field(conn, field_id)
        done = dict(
            conn.execute(select(k.c.round, k.c.keyer_id).where(k.c.field_id == field_id))
            .tuples()
            .all()
        )
        missing = [r for r in ROUNDS if r not in done]
        if not missing:
            raise ConflictError(f"field {field_id} is keyed in both rounds already")
        if keyer_id in done.values():
            raise ConflictError(
                f"field {field_id}: you keyed its other round; another operator keys this one"
            )
        kept = _check_keying(field_id, missing[0], kind, value)
        return _record(conn, field, missing[0], keyer_id, kind, kept)


def _record(
    conn: Connection, field: Any, round_: int, keyer_id: int, kind: str, value: str
) -> KeyingOutcome:
    k, f = schema.gold_keyings, schema.fields
    field_id = int(field.id)
    other = conn.execute(
        select(k.c.round, k.c.kind, k.c.value).where(k.c.field_id == field_id)
    ).all()
    if any(r.round == round_ for r in other):
        raise ConflictError(f"field {field_id}: round {round_} is keyed already")
    conn.execute(
        insert(k).values(
            field_id=field_id,
            round=round_,
            keyer_id=keyer_id,
            kind=kind,
            value=value,
            created_at=utcnow(),
        )
    )
    if not other:
        return KeyingOutcome(field_id, round_, False, None, None, False, None)
    first = other[0]
    ftype = str(field.kind)
    if answer_key(first.kind, first.value, ftype) != answer_key(kind, value, ftype):
        return KeyingOutcome(field_id, round_, True, False, None, False, None)
    agreed = normalise(kind, value, ftype)
    gold = agreed if kind == AnswerKind.VALUE else None
    if gold is not None:
        conn.execute(
            f.update()
            .where(f.c.id == field_id)
            .values(gold_value=gold, gold_origin=GoldOrigin.STAFF)
        )
    settled, page_id = False, None
    if field.status == FieldStatus.IN_REVIEW:
        settled, page_id = True, _settle_with_gold(conn, field, kind, agreed)
    return KeyingOutcome(field_id, round_, True, True, gold, settled, page_id)


# ---- what the keyers see and what they have done ------------------------------------------


@dataclass(frozen=True)
class KeyingField:
    """A field as staff key it: what it is and where its snippet is, never a guess."""

    field_id: int
    field_type: str
    field_name: str
    template: str
    snippet_key: str
    template_id: int | None = None


def keying_field(db: Engine, field_id: int) -> KeyingField:
    """The field staff may key, for its snippet and label (NotFound, Forbidden otherwise)."""
    f = schema.fields
    with db.connect() as conn:
        row = _keyable_field(conn, field_id, lock=False)
        key = conn.execute(select(f.c.snippet_key, f.c.name).where(f.c.id == field_id)).one()
    return KeyingField(
        field_id, str(row.kind), str(key.name), str(row.template), key.snippet_key, row.template_id
    )


def next_field_for_keying(db: Engine, keyer_id: int) -> int | None:
    """A field for this operator to key next: one waiting for its second round that someone
    else keyed first, else a fresh random one; None when nothing is left to key."""
    f, p, k = schema.fields, schema.pages, schema.gold_keyings
    with db.connect() as conn:
        mine = select(k.c.field_id).where(k.c.keyer_id == keyer_id)
        found = conn.execute(
            select(f.c.id)
            .join(p, p.c.id == f.c.page_id)
            .where(*_keyable(conn), f.c.id.not_in(mine))
            # Pairs are finished first, so that keyed rounds turn into gold soon.
            .order_by(_keyings_of_field().desc(), func.random())
            .limit(1)
        ).scalar()
    return None if found is None else int(found)


def log_keying_view(db: Engine, keyer_id: int, field_id: int) -> None:
    """Put an operator's view of a snippet to key in the audit log, like a worker's view."""
    with db.begin() as conn:
        conn.execute(
            insert(schema.audit_log).values(
                at=utcnow(),
                worker_id=keyer_id,
                action=AuditAction.VIEW,
                task_id=None,
                field_id=field_id,
                detail="gold keying",
            )
        )


def keyer_named(db: Engine, name: str) -> int:
    """The id of the operator called `name` (who keys gold); BadInputError otherwise."""
    return person_named(db, name, Role.OPERATOR, "operator")


@dataclass(frozen=True)
class Disagreement:
    """A field whose two rounds of keying disagree: it is not gold."""

    field_id: int
    field_type: str
    first: tuple[str, str]  # round 1's (kind, value)
    second: tuple[str, str]  # round 2's


@dataclass(frozen=True)
class GoldCounts:
    """How much gold there is by origin, and where staff keying stands."""

    by_origin: dict[str, int]
    waiting_for_round_2: int
    disagreements: int


def keying_disagreements(db: Engine, limit: int | None = None) -> list[Disagreement]:
    """Fields keyed in both rounds whose keyings disagree, newest first."""
    f, k = schema.fields, schema.gold_keyings
    k2 = k.alias("k2")
    query = (
        select(f.c.id, f.c.kind, k.c.kind.label("k1"), k.c.value.label("v1"), k2.c.kind, k2.c.value)
        .join(k, and_(k.c.field_id == f.c.id, k.c.round == 1))
        .join(k2, and_(k2.c.field_id == f.c.id, k2.c.round == 2))
        .where(f.c.gold_value.is_(None))
        .order_by(f.c.id.desc())
    )
    found = []
    with db.connect() as conn:
        for r in conn.execute(query).tuples():
            fid, ftype, k1, v1, kind2, v2 = r
            if answer_key(k1, v1, ftype) != answer_key(kind2, v2, ftype):
                found.append(Disagreement(int(fid), str(ftype), (k1, v1), (kind2, v2)))
                if limit is not None and len(found) >= limit:
                    break
    return found


def gold_counts(db: Engine) -> GoldCounts:
    """Gold by origin (truth, staff, crowd), fields waiting for a second round, disagreements."""
    f, k = schema.fields, schema.gold_keyings
    with db.connect() as conn:
        by_origin = dict(
            conn.execute(
                select(f.c.gold_origin, func.count())
                .where(f.c.gold_value.is_not(None))
                .group_by(f.c.gold_origin)
            )
            .tuples()
            .all()
        )
        once = (
            select(k.c.field_id)
            .join(f, f.c.id == k.c.field_id)
            .where(f.c.gold_value.is_(None))
            .group_by(k.c.field_id)
            .having(func.count() == 1)
            .subquery()
        )
        waiting = conn.execute(select(func.count()).select_from(once)).scalar_one()
    counts = {str(o): int(by_origin.get(o, 0)) for o in GoldOrigin}
    return GoldCounts(counts, int(waiting), len(keying_disagreements(db)))


# ---- the keying sheet: the CLI's way for a clerk to key on paper or in a spreadsheet ----


@dataclass(frozen=True)
class SheetImport:
    """What a keying sheet recorded, and each row refused, as one line naming file and row."""

    recorded: list[KeyingOutcome] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    empty: int = 0  # rows left without kind or value: not keyed yet


def _as_png(image: bytes) -> bytes:
    if image[:8] == b"\x89PNG\r\n\x1a\n":
        return image
    out = io.BytesIO()
    with Image.open(io.BytesIO(image)) as picture:
        picture.save(out, format="PNG")
    return out.getvalue()


def write_keying_sheet(
    db: Engine, blobs: BlobStore, field_ids: Iterable[int], out_dir: Path
) -> Path:
    """Write each field's snippet as `<field_id>.png` and the sheet `keying.csv` to fill in.

    The sheet has the columns field_id, snippet, field_type, kind, value, the last two
    empty: blind keying shows neither the OCR's guess nor anyone's answer.
    """
    f = schema.fields
    ids = list(field_ids)
    with db.connect() as conn:
        rows = conn.execute(
            select(f.c.id, f.c.kind, f.c.snippet_key).where(f.c.id.in_(ids)).order_by(f.c.id)
        ).all()
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet = out_dir / SHEET_NAME
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SHEET_COLUMNS)
        for r in rows:
            name = f"{r.id}.png"
            (out_dir / name).write_bytes(_as_png(blobs.get(r.snippet_key)))
            writer.writerow([r.id, name, r.kind, "", ""])
    return sheet


def read_keying_sheet(db: Engine, path: Path, round: int, keyer_id: int) -> SheetImport:
    """Record every keyed row of a sheet as round `round` by `keyer_id`.

    A row's kind defaults to value when its value is filled in; a row with neither is not
    keyed yet and is left. Each refused row (unknown field, bad kind, a round keyed already)
    is one line naming the file and the row; the other rows are recorded all the same.
    """
    if round not in ROUNDS:
        raise BadInputError(f"round must be 1 or 2, not {round}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet may add a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read the keying sheet ({e})") from e
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("field_id", "kind", "value") if c not in (reader.fieldnames or [])]
    if missing:
        raise BadInputError(f"{path}: the keying sheet has no column {', '.join(missing)}")
    recorded, refused, empty = [], [], 0
    for line, row in enumerate(reader, start=2):  # line 1 is the header
        where = f"{path} row {line}"
        raw_id = (row.get("field_id") or "").strip()
        kind = (row.get("kind") or "").strip().lower()
        value = row.get("value") or ""
        if not kind and not value.strip():
            empty += 1
            continue
        if not raw_id.isdigit():
            refused.append(f"{where}: field_id {raw_id!r} is not a field number")
            continue
        try:
            outcome = record_keying(
                db, int(raw_id), round, keyer_id, kind or AnswerKind.VALUE, value.strip()
            )
        except KeraniError as e:
            refused.append(f"{where}: {e}")
            continue
        recorded.append(outcome)
    return SheetImport(recorded, refused, empty)


# ---- crowd gold ---------------------------------------------------------------------------


def harvest_gold(db: Engine, *, min_agreeing: int = 2) -> int:
    """Make gold of settled fields whose value strong independent evidence backs.

    A field qualifies when it is settled on a value, has no gold yet, and its template lets
    its sensitivity be gold, and its value was either arbitrated by a trusted worker or
    keyed blind by at least `min_agreeing` distinct workers who are now proven and not
    quarantined, whose answers agree with it as its type reads them. Returns how many.

    Two set-based statements over the large tables (besides reading the template names):
    one reads the blind answers of the fields that have enough of them from proven workers,
    the other writes the gold (repeated per 500 fields backed by answers, as SQLite bounds
    a statement's parameters). The answers are compared in Python, as
    consensus.answer_key reads them (dates, amounts, IC numbers normalised), which SQL
    cannot do alike on both databases.
    """
    if min_agreeing < 1:
        raise BadInputError(f"min_agreeing must be at least 1, not {min_agreeing}")
    f, p, t, a, w = schema.fields, schema.pages, schema.tasks, schema.answers, schema.workers
    with db.begin() as conn:
        allowed = _gold_allowed(conn)
        field_ok = [
            f.c.status == FieldStatus.SETTLED,
            f.c.gold_value.is_(None),
            # A gold snippet tests a worker against a value: not unreadable or blank.
            f.c.value_kind == ValueKind.TEXT,
            f.c.value.is_not(None),
            f.c.value != "",
        ]
        page_ok = [p.c.status != PageStatus.GOLD, allowed]
        strong = [
            a.c.blind.is_(True),
            a.c.kind == AnswerKind.VALUE,
            w.c.proven.is_(True),
            w.c.quarantined.is_(False),
        ]
        answered = (
            f.join(p, p.c.id == f.c.page_id)
            .join(t, t.c.field_id == f.c.id)
            .join(a, a.c.task_id == t.c.id)
            .join(w, w.c.id == a.c.worker_id)
        )
        # Fields with enough strong answers at all, before their values are compared.
        enough = (
            select(f.c.id)
            .select_from(answered)
            .where(*field_ok, *page_ok, *strong, f.c.source != ValueSource.ARBITRATED)
            .group_by(f.c.id)
            .having(func.count(func.distinct(a.c.worker_id)) >= min_agreeing)
            .correlate(None)  # a list of ids of its own, not tied to the outer query's field
        )
        rows = conn.execute(
            select(f.c.id, f.c.kind, f.c.value, a.c.worker_id, a.c.value.label("answer"))
            .select_from(
                f.join(t, t.c.field_id == f.c.id)
                .join(a, a.c.task_id == t.c.id)
                .join(w, w.c.id == a.c.worker_id)
            )
            .where(f.c.id.in_(enough), *strong)
        ).all()
        backers: dict[int, set[int]] = {}
        for r in rows:
            if answer_key(AnswerKind.VALUE, r.answer, r.kind) == answer_key(
                AnswerKind.VALUE, r.value, r.kind
            ):
                backers.setdefault(int(r.id), set()).add(int(r.worker_id))
        backed = sorted(i for i, who in backers.items() if len(who) >= min_agreeing)
        # The arbitrated fields, and the backed ones in chunks (SQLite bounds parameters).
        chunks = [backed[i : i + _CHUNK] for i in range(0, len(backed), _CHUNK)] or [[]]
        chosen = [or_(f.c.source == ValueSource.ARBITRATED, f.c.id.in_(chunks[0]))]
        chosen += [f.c.id.in_(chunk) for chunk in chunks[1:]]
        on_page = select(p.c.id).where(p.c.id == f.c.page_id, *page_ok).exists()
        harvested = 0
        for which in chosen:
            harvested += conn.execute(
                f.update()
                .where(*field_ok, on_page, which)
                .values(gold_value=f.c.value, gold_origin=GoldOrigin.CROWD)
            ).rowcount
    return harvested
