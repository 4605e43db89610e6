"""The template catalogue: every version of every template, stored in the database.

`kerani template add FILE` (and `submit --template FILE`) checks a template and stores its
YAML as the next version of its name; identical content gives back the version that holds
it. A batch and its pages record the version (templates.id) they were read with, and every
later step reads that stored version, never a file: the review page and the exports work
from any folder, and editing a template never changes a batch already submitted.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, true
from sqlalchemy.exc import IntegrityError

from kerani.core.errors import BadInputError, NotFoundError, TemplateError
from kerani.core.vocabulary import Role
from kerani.forms.feasibility import check_rules_can_hold
from kerani.forms.templates import (
    BUNDLED_TEMPLATES,
    Template,
    bundled_template_names,
    load_template,
    parse_template,
)
from kerani.storage import schema
from kerani.storage.database import utcnow

MAX_TEMPLATE_BYTES = 256 * 1024  # a template is a page of YAML; anything bigger is not one


@dataclass(frozen=True)
class StoredTemplate:
    """One stored version of a template, parsed."""

    id: int
    name: str
    version: int
    template: Template
    created: bool = False  # whether storing it made this version (else it was there)

    @property
    def ref(self) -> str:
        """How people name it: `name:version`."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class TemplateVersion:
    """A row of the catalogue, for listings."""

    id: int
    name: str
    version: int
    origin: str
    created_at: datetime
    batches: int

    @property
    def ref(self) -> str:
        """How people name it: `name:version`."""
        return f"{self.name}:{self.version}"


@functools.lru_cache(maxsize=256)
def _parsed(content: str, origin: str) -> Template:
    # Keyed by the content itself: a stored version never changes, and two databases that
    # give the same id to different templates can never be confused.
    return parse_template(content, origin)


def _stored(row: object, created: bool = False) -> StoredTemplate:
    name, version = str(row.name), int(row.version)  # type: ignore[attr-defined]
    return StoredTemplate(
        id=int(row.id),  # type: ignore[attr-defined]
        name=name,
        version=version,
        template=_parsed(str(row.content), f"template {name}:{version}"),  # type: ignore[attr-defined]
        created=created,
    )


def _insert_version(
    conn: Connection, template: Template, text: str, origin: str, by: int | None
) -> StoredTemplate:
    t = schema.templates
    digest = hashlib.sha256(text.encode()).hexdigest()
    # The version already holding this very text, among those its maker may see: another
    # agency's identical template is not shown to exist.
    agency = conn.execute(
        select(schema.workers.c.id).where(
            schema.workers.c.id == by, schema.workers.c.role == Role.AGENCY
        )
    ).scalar()
    same = conn.execute(
        select(t)
        .where(t.c.name == template.name, t.c.sha256 == digest, visible_to(agency))
        .order_by(t.c.version)
    ).first()
    if same is not None:
        return _stored(same)
    latest = conn.execute(
        select(func.max(t.c.version)).where(t.c.name == template.name)
    ).scalar_one()
    version = int(latest or 0) + 1
    result = conn.execute(
        insert(t).values(
            name=template.name,
            version=version,
            content=text,
            sha256=digest,
            origin=origin,
            created_at=utcnow(),
            created_by=by,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return StoredTemplate(int(key[0]), template.name, version, template, created=True)


def add_template(db: Engine, text: str, origin: str, by: int | None = None) -> StoredTemplate:
    """Check a template's YAML and store it as a new version of its name (or find the
    version that holds this very text); `origin` names it in errors and in listings."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{origin}: a template is at most {MAX_TEMPLATE_BYTES // 1024} KiB")
    template = parse_template(text, origin)
    check_rules_can_hold(template)
    for _attempt in range(3):
        try:
            with db.begin() as conn:
                return _insert_version(conn, template, text, origin, by)
        except IntegrityError:
            continue  # another process stored a version of this name at the same moment
    raise TemplateError(f"{origin}: could not store a new version of {template.name!r}")


def add_template_file(db: Engine, path: Path, by: int | None = None) -> StoredTemplate:
    """Store the template in a YAML file (see add_template); the file's name is its origin."""
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{path}: a template is at most {MAX_TEMPLATE_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: a template is UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise BadInputError(f"{path}: cannot be read ({e.strerror or e})") from e
    return add_template(db, text, path.name, by)


@contextmanager
def _reading(db: Engine | Connection) -> Iterator[Connection]:
    # Inside a caller's transaction, read on its connection (a second one could wait for
    # the first's lock on SQLite).
    if isinstance(db, Connection):
        yield db
    else:
        with db.connect() as conn:
            yield conn


def template_by_id(db: Engine | Connection, template_id: int) -> StoredTemplate:
    """The stored version with this id."""
    with _reading(db) as conn:
        row = conn.execute(
            select(schema.templates).where(schema.templates.c.id == template_id)
        ).first()
    if row is None:
        raise NotFoundError(f"no stored template version {template_id}")
    return _stored(row)


def _split_ref(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.rpartition(":")
    if not sep or not name:
        return ref, None
    if not version.isdigit() or int(version) < 1:
        raise TemplateError(f"template {ref!r}: the version after ':' is a number from 1")
    return name, int(version)


def visible_to(agency_id: int | None) -> Any:
    """The condition on templates that an agency may see and use: bundled ones, those
    operators stored, and its own; None: every template (operators, the CLI).

    Another agency's templates are neither listed nor usable, and their use is never
    counted: the same answer as a template that does not exist.
    """
    t, w = schema.templates, schema.workers
    if agency_id is None:
        return true()
    creator_role = select(w.c.role).where(w.c.id == t.c.created_by).scalar_subquery()
    return or_(t.c.created_by.is_(None), t.c.created_by == agency_id, creator_role != Role.AGENCY)


def stored_template(db: Engine, ref: str, agency_id: int | None = None) -> StoredTemplate:
    """The version a reference names: `name:version`, or `name` for its latest (among the
    templates `agency_id` may see, if given). A bundled template that was never stored is
    stored (as version 1) the first time it is named."""
    name, version = _split_ref(ref)
    t = schema.templates
    query = select(t).where(t.c.name == name, visible_to(agency_id))
    query = query.where(t.c.version == version) if version else query.order_by(t.c.version.desc())
    with db.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    if row is not None:
        return _stored(row)
    if version is None and name in bundled_template_names():
        path = BUNDLED_TEMPLATES / f"{name}.yaml"
        return add_template(db, path.read_text(encoding="utf-8"), "bundled")
    if version is not None:
        with db.connect() as conn:
            latest = conn.execute(
                select(func.max(t.c.version)).where(t.c.name == name, visible_to(agency_id))
            ).scalar()
        if latest:
            raise TemplateError(f"template {name!r} has no version {version} (latest: {latest})")
    known = sorted({*stored_names(db, agency_id), *bundled_template_names()})
    raise TemplateError(
        f"no template {name!r}: give a YAML file, `kerani template add FILE`, or one of "
        f"{', '.join(known)}"
    )


def resolve_template(
    db: Engine, ref: str, by: int | None = None, agency_id: int | None = None
) -> StoredTemplate:
    """What `--template` names: a YAML file (stored first, see add_template_file), or a
    stored or bundled template by `name[:version]` (among those `agency_id` may use, when
    the batch is an agency's)."""
    path = Path(ref)
    if ref.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise TemplateError(f"{ref}: no such template file")
        return add_template_file(db, path, by)
    return stored_template(db, ref, agency_id)


def stored_names(db: Engine, agency_id: int | None = None) -> list[str]:
    """Names of the templates stored so far (that `agency_id` may see, if given)."""
    t = schema.templates
    query = select(t.c.name).where(visible_to(agency_id)).distinct()
    with db.connect() as conn:
        return [str(n) for n in conn.execute(query).scalars()]


def template_versions(
    db: Engine, name: str | None = None, agency_id: int | None = None
) -> list[TemplateVersion]:
    """Every stored version (of one name, or all), with how many batches use each; for an
    agency, the versions it may see and only its own batches counted."""
    t, b = schema.templates, schema.batches
    counted = select(b.c.template_id, func.count().label("n"))
    if agency_id is not None:
        counted = counted.where(b.c.agency_id == agency_id)
    used = counted.group_by(b.c.template_id).subquery()
    query = (
        select(t.c.id, t.c.name, t.c.version, t.c.origin, t.c.created_at, used.c.n)
        .outerjoin(used, used.c.template_id == t.c.id)
        .where(visible_to(agency_id))
        .order_by(t.c.name, t.c.version)
    )
    if name is not None:
        query = query.where(t.c.name == name)
    with db.connect() as conn:
        rows = conn.execute(query).all()
    return [
        TemplateVersion(
            int(r.id), str(r.name), int(r.version), str(r.origin), r.created_at, int(r.n or 0)
        )
        for r in rows
    ]


def template_content(db: Engine, template_id: int) -> str:
    """The YAML text of a stored version, as it was given."""
    with db.connect() as conn:
        content = conn.execute(
            select(schema.templates.c.content).where(schema.templates.c.id == template_id)
        ).scalar()
    if content is None:
        raise NotFoundError(f"no stored template version {template_id}")
    return str(content)


def template_of(db: Engine | Connection, name: str, template_id: int | None) -> Template:
    """The template a batch or page was read with: its stored version, or (for batches from
    before templates were stored) the bundled template or file its name gives."""
    if template_id is not None:
        return template_by_id(db, template_id).template
    return load_template(name)
