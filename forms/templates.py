"""Form templates: named fields with regions, types and validators, plus cross-field rules.

A template is checked when it is loaded (registered): an unusable one is refused with a
TemplateError that names the field (or rule) and what is wrong. docs/templates.md is the
reference of the format.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from kerani.core.boxes import boxes_overlap
from kerani.core.errors import TemplateError
from kerani.core.vocabulary import Sensitivity
from kerani.forms.rules import RULE_CHECKS, Captured, Rule, RuleFailure, check_rules
from kerani.forms.validators import (
    CHECKSUM_CHECKS,
    CHECKSUMS,
    DEFAULT_DATE_FORMATS,
    FIELD_TYPES,
    NUMERIC_TYPES,
    date_format_regex,
    numeric_value,
    validate,
    validate_date,
)

BUNDLED_TEMPLATES = Path(__file__).parent / "templates"
# Export columns of every record: a field may not take one of these names, nor contain "__"
# (the separator of its own provenance columns, `<field>__source` and so on).
RESERVED_FIELD_NAMES = (
    "batch_id",
    "document",
    "page",
    "sha256",
    "status",
    "waiting_fields",
    "failure_reason",
    "valid",
    "problems",
    "text_layer",
)


class Label(BaseModel):
    """A label in English and Bahasa Malaysia."""

    model_config = ConfigDict(extra="forbid")

    en: str
    ms: str


class Range(BaseModel):
    """Inclusive bounds of a number or amount field; either may be left out."""

    model_config = ConfigDict(extra="forbid")

    min: Decimal | None = None
    max: Decimal | None = None


class FieldProblem(BaseModel):
    """Why a value breaks its field's validators: the rule's name and the reason."""

    rule: str
    message: str


class ValueSpec(BaseModel):
    """What a field holds and how its value is checked: shared by form fields and key fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    label: Label
    type: str
    required: bool = True
    sensitivity: Sensitivity = Sensitivity.PERSONAL
    format_hint: str | None = None
    pattern: str | None = None
    range: Range | None = None
    allowed: list[str] | None = None
    date_formats: list[str] | None = None
    checksum: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"field name {v!r} must be letters, digits and underscores")
        return v

    @property
    def formats(self) -> list[str]:
        """The date formats this field accepts (DD/MM/YYYY unless the template says)."""
        return list(self.date_formats or DEFAULT_DATE_FORMATS)

    def problem(self, value: str | None, kind: str = "text") -> FieldProblem | None:
        """Check a settled value (kind text, unreadable or blank) against every validator."""
        if kind != "text" or value is None or not value.strip():
            if not self.required:
                return None
            what = "unreadable" if kind == "unreadable" else "blank"
            return FieldProblem(rule="required", message=f"a value is required, people saw {what}")
        v = value.strip()
        reason = validate_date(v, self.formats) if self.type == "date" else validate(self.type, v)
        if reason is not None:
            return FieldProblem(rule="type", message=reason)
        if (
            self.type in ("checkbox", "signature")
            and self.required
            and v.lower() in ("no", "absent")
        ):
            return FieldProblem(rule="required", message=f"the {self.type} must be there")
        if self.pattern and not re.fullmatch(self.pattern, v):
            return FieldProblem(
                rule="pattern", message=f"does not match the pattern {self.pattern}"
            )
        if self.allowed is not None and v.casefold() not in {a.casefold() for a in self.allowed}:
            return FieldProblem(
                rule="allowed", message=f"expected one of {', '.join(self.allowed)}"
            )
        if self.range is not None:
            number = numeric_value(v)
            lo, hi = self.range.min, self.range.max
            if (
                number is None
                or (lo is not None and number < lo)
                or (hi is not None and number > hi)
            ):
                bounds = f"{'' if lo is None else lo} to {'' if hi is None else hi}".strip()
                return FieldProblem(rule="range", message=f"{v} is outside the range {bounds}")
        if self.checksum is not None:
            reason = CHECKSUM_CHECKS[self.checksum](v)
            if reason is not None:
                return FieldProblem(rule="checksum", message=reason)
        return None


class AnchorWord(BaseModel):
    """A printed word of the form (upper case, letters and digits) and its centre in
    page_size pixels: pages are aligned to the template by finding these words."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=3, max_length=60, pattern=r"^[0-9A-Z]+$")
    x: float
    y: float


class FieldSpec(ValueSpec):
    """One field of a form: where it is on the page, what it holds and how it is checked."""

    box: tuple[int, int, int, int] = Field(validation_alias=AliasChoices("box", "region"))


class KeyFind(BaseModel):
    """How a key field is found among a template-free page's text lines (forms.key_fields)."""

    model_config = ConfigDict(extra="forbid")

    # Words that label the value (any case, any punctuation or none between their words):
    # it follows the keyword on its line, or stands alone to its right on the same row.
    # Earlier keywords are preferred when `pick` starts with `keyword`.
    keywords: list[str] = []
    # Lines holding one of these never give the value, nor does a value labelled by one.
    exclude: list[str] = []
    # Below the first value a keyword labels, the first line holding one of these ends the
    # search (a receipt's payment lines: change, tax summaries and points come after).
    stop_at: list[str] = []
    # Without a keyword line, no candidate (else any value in `where`, less sure).
    require_keyword: bool = False
    where: Literal["anywhere", "first_lines", "last_lines"] = "anywhere"
    lines: int | None = None  # how many first or last lines `where` looks at (default 10)
    # How to choose among the candidates, criterion after criterion ...
    pick: list[Literal["keyword", "first", "last", "largest", "smallest"]] = ["keyword", "first"]
    # ... and among the values found by position alone, when no keyword labels one
    # (default: as `pick`).
    otherwise: list[Literal["first", "last", "largest", "smallest"]] | None = None
    # Text fields: the whole line, or what follows the keyword on it ...
    value: Literal["line", "after_keyword"] = "line"
    # ... less what these regular expressions match (a registration number after a name).
    remove: list[str] = []
    # Date fields: the formats the page may print; the value is written in the field's
    # first date format. Default: the field's own date_formats.
    read_formats: list[str] | None = None

    @field_validator("pick", "otherwise", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def window(self) -> int:
        """How many first or last lines `where` looks at."""
        return self.lines if self.lines is not None else 10


class KeyFieldSpec(ValueSpec):
    """A field of a template-free (lines) template whose value rules find among its lines."""

    required: bool = False  # a receipt may lack a date: blank is an answer, not an error
    find: KeyFind = KeyFind()


class Template(BaseModel):
    """A document type: a form with fixed fields, or template-free text lines."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: Label
    kind: Literal["form", "lines"]
    page_size: tuple[int, int] | None = None
    fields: list[FieldSpec] = []
    # Template-free (lines) templates: fields with a fixed meaning found among the lines.
    key_fields: list[KeyFieldSpec] = []
    rules: list[Rule] = []
    description: str | None = None
    # Which fields may become gold snippets (known answers shown to any worker to test
    # them): by default only public ones; restricted fields never (see check_template).
    gold_sensitivity: list[Sensitivity] = [Sensitivity.PUBLIC]
    # The words pages are aligned by, chosen from a sample scan (the designer does); empty:
    # chosen from a clean rendering of the template's labels.
    anchors: list[AnchorWord] = []

    def field(self, name: str) -> FieldSpec:
        """Return the field called `name`."""
        for f in self.fields:
            if f.name == name:
                return f
        raise TemplateError(f"template {self.name!r} has no field {name!r}")

    def may_become_gold(self, sensitivity: str) -> bool:
        """Whether a field of this sensitivity may become a gold snippet."""
        return sensitivity != Sensitivity.RESTRICTED and sensitivity in self.gold_sensitivity

    def has_field(self, name: str) -> bool:
        """Whether the template defines a field called `name`."""
        return any(f.name == name for f in self.fields)

    def spec(self, name: str) -> ValueSpec | None:
        """The form field or key field called `name` (None: a text line, or no such field)."""
        for f in (*self.fields, *self.key_fields):
            if f.name == name:
                return f
        return None

    def value_names(self) -> list[str]:
        """The names of the fields with a fixed meaning, in export order: fields, key fields."""
        return [f.name for f in self.fields] + [k.name for k in self.key_fields]

    def broken_rules(self, values: dict[str, Captured]) -> list[RuleFailure]:
        """The cross-field rules these captured values break."""
        formats = {f.name: f.formats for f in self.fields if f.type == "date"}
        return check_rules(self.rules, values, formats)


def _check_date_formats(where: str, formats: list[str]) -> None:
    """Refuse an empty list of date formats, or one that is not a date format."""
    if not formats:
        raise TemplateError(f"{where}: the list of formats is empty")
    for fmt in formats:
        try:
            date_format_regex(fmt)
        except ValueError as e:
            raise TemplateError(f"{where}: {e}") from e


def _check_validators(t: Template, f: ValueSpec, what: str = "field") -> None:
    where = f"template {t.name!r}: {what} {f.name!r}"
    if f.pattern is not None:
        try:
            re.compile(f.pattern)
        except re.error as e:
            raise TemplateError(f"{where}: rule pattern: {f.pattern!r} is not a regex ({e})") from e
    if f.range is not None:
        if f.type not in NUMERIC_TYPES:
            raise TemplateError(
                f"{where}: rule range applies to {' and '.join(NUMERIC_TYPES)} fields, "
                f"not {f.type!r}"
            )
        if f.range.min is not None and f.range.max is not None and f.range.min > f.range.max:
            raise TemplateError(
                f"{where}: rule range: min {f.range.min} is above max {f.range.max}"
            )
    if f.type == "choice" and not f.allowed:
        raise TemplateError(f"{where}: rule allowed: a choice field needs a list of allowed values")
    if f.allowed is not None and len(f.allowed) == 0:
        raise TemplateError(f"{where}: rule allowed: the list of allowed values is empty")
    if f.date_formats is not None:
        if f.type != "date":
            raise TemplateError(
                f"{where}: rule date_formats applies to date fields, not {f.type!r}"
            )
        _check_date_formats(f"{where}: rule date_formats", f.date_formats)
    if f.checksum is not None and f.checksum not in CHECKSUMS:
        raise TemplateError(
            f"{where}: rule checksum: unknown checksum {f.checksum!r} "
            f"(known: {', '.join(CHECKSUMS)})"
        )
    if f.checksum == "mykad" and f.type != "ic_number":
        raise TemplateError(f"{where}: rule checksum: mykad applies to ic_number fields")


def _check_rules(t: Template) -> None:
    names: set[str] = set()
    for rule in t.rules:
        where = f"template {t.name!r}: rule {rule.name!r}"
        if rule.name in names:
            raise TemplateError(f"{where} is defined twice")
        names.add(rule.name)
        if t.kind == "lines":
            raise TemplateError(f"{where}: a template-free (lines) template has no named fields")
        for field_name, types in rule.field_types().items():
            if not t.has_field(field_name):
                raise TemplateError(
                    f"{where} ({rule.check}) names field {field_name!r}, which the template "
                    f"does not have"
                )
            actual = t.field(field_name).type
            if actual not in types:
                raise TemplateError(
                    f"{where} ({rule.check}) needs field {field_name!r} to be of type "
                    f"{' or '.join(types)}, not {actual!r}"
                )


def check_template(t: Template) -> None:
    """Raise TemplateError naming the field and the rule when the template is unusable."""
    if t.kind == "form":
        if not t.fields:
            raise TemplateError(f"template {t.name!r}: a form needs at least one field")
        if t.page_size is None:
            raise TemplateError(f"template {t.name!r}: a form needs page_size [width, height]")
    elif t.fields or t.anchors:
        raise TemplateError(
            f"template {t.name!r}: a template-free (lines) template cuts pages into text lines "
            f"and takes no fields and no anchors (fields with a fixed meaning are its "
            f"key_fields)"
        )
    if t.page_size is not None:
        for anchor in t.anchors:
            if not (0 <= anchor.x <= t.page_size[0] and 0 <= anchor.y <= t.page_size[1]):
                raise TemplateError(
                    f"template {t.name!r}: anchor {anchor.text!r} at ({anchor.x}, {anchor.y}) "
                    f"lies outside the page {t.page_size}"
                )
    if Sensitivity.RESTRICTED in t.gold_sensitivity:
        raise TemplateError(
            f"template {t.name!r}: gold_sensitivity: restricted fields never become gold "
            f"(a gold snippet is shown to any worker); use public and/or personal"
        )
    seen: set[str] = set()
    for f in t.fields:
        if f.name in seen:
            raise TemplateError(f"template {t.name!r}: field {f.name!r} is defined twice")
        seen.add(f.name)
        if f.name in RESERVED_FIELD_NAMES or "__" in f.name:
            raise TemplateError(
                f"template {t.name!r}: field name {f.name!r} is reserved for export columns "
                f"({', '.join(RESERVED_FIELD_NAMES)}, and names with '__')"
            )
        if f.type not in FIELD_TYPES or f.type == "line":
            known = [x for x in FIELD_TYPES if x != "line"]
            raise TemplateError(
                f"template {t.name!r}: field {f.name!r} has unknown type {f.type!r} "
                f"(known: {', '.join(known)})"
            )
        x0, y0, x1, y1 = f.box
        if not (x0 < x1 and y0 < y1):
            raise TemplateError(f"template {t.name!r}: field {f.name!r} has an empty box {f.box}")
        if t.page_size and (x0 < 0 or y0 < 0 or x1 > t.page_size[0] or y1 > t.page_size[1]):
            raise TemplateError(
                f"template {t.name!r}: field {f.name!r} box {f.box} lies outside the page "
                f"{t.page_size}"
            )
        _check_validators(t, f)
    for i, a in enumerate(t.fields):
        for b in t.fields[i + 1 :]:
            if boxes_overlap(a.box, b.box):
                raise TemplateError(
                    f"template {t.name!r}: fields {a.name!r} and {b.name!r} overlap"
                )
    _check_key_fields(t)
    _check_rules(t)


# Names of a template-free page's text lines (ocr.stage.line_regions): line_001, ...
LINE_NAME = re.compile(r"line_\d+")
# Types whose value is read from a line's text; a tick or a signature is not text.
KEY_FIELD_TYPES = tuple(x for x in FIELD_TYPES if x not in ("line", "checkbox", "signature"))


def _check_key_fields(t: Template) -> None:
    if t.key_fields and t.kind != "lines":
        raise TemplateError(
            f"template {t.name!r}: key_fields are for template-free (lines) templates; "
            f"a form's fields have regions"
        )
    seen: set[str] = set()
    for k in t.key_fields:
        where = f"template {t.name!r}: key field {k.name!r}"
        if k.name in seen:
            raise TemplateError(f"{where} is defined twice")
        seen.add(k.name)
        if k.name in RESERVED_FIELD_NAMES or "__" in k.name or LINE_NAME.fullmatch(k.name):
            raise TemplateError(
                f"{where}: the name is taken: text lines are line_001, line_002, ... and "
                f"{', '.join(RESERVED_FIELD_NAMES)} (and names with '__') are export columns"
            )
        if k.type not in KEY_FIELD_TYPES:
            what = "unknown type" if k.type not in FIELD_TYPES else "type"
            raise TemplateError(
                f"{where} has {what} {k.type!r}: a key field's value is read from text "
                f"(key fields take: {', '.join(KEY_FIELD_TYPES)})"
            )
        _check_validators(t, k, "key field")
        find = k.find
        for w in find.keywords + find.exclude + find.stop_at:
            if not re.search(r"[A-Za-z0-9]", w):
                raise TemplateError(f"{where}: find: keyword {w!r} has no letter or digit")
        if find.require_keyword and not find.keywords:
            raise TemplateError(f"{where}: find: require_keyword needs keywords")
        if find.stop_at and not find.keywords:
            raise TemplateError(f"{where}: find: stop_at needs keywords")
        if find.lines is not None and find.where == "anywhere":
            raise TemplateError(f"{where}: find: lines applies to where: first_lines or last_lines")
        if find.lines is not None and find.lines < 1:
            raise TemplateError(f"{where}: find: lines must be at least 1, not {find.lines}")
        if not find.pick or find.otherwise == []:
            raise TemplateError(f"{where}: find: pick needs at least one criterion")
        if find.otherwise is not None and find.require_keyword:
            raise TemplateError(
                f"{where}: find: otherwise has nothing to pick with require_keyword"
            )
        if "keyword" in find.pick and not find.keywords and "pick" in find.model_fields_set:
            raise TemplateError(f"{where}: find: pick 'keyword' needs keywords")
        if k.type not in NUMERIC_TYPES and {"largest", "smallest"} & {
            *find.pick,
            *(find.otherwise or []),
        }:
            raise TemplateError(
                f"{where}: find: pick largest or smallest applies to "
                f"{' and '.join(NUMERIC_TYPES)} fields, not {k.type!r}"
            )
        if find.value == "after_keyword" and (k.type != "text" or not find.keywords):
            raise TemplateError(
                f"{where}: find: value after_keyword applies to text fields with keywords"
            )
        for regex in find.remove:
            if k.type != "text":
                raise TemplateError(f"{where}: find: remove applies to text fields, not {k.type!r}")
            try:
                re.compile(regex)
            except re.error as e:
                raise TemplateError(f"{where}: find: remove: {regex!r} is not a regex ({e})") from e
        if find.read_formats is not None:
            if k.type != "date":
                raise TemplateError(
                    f"{where}: find: read_formats applies to date fields, not {k.type!r}"
                )
            _check_date_formats(f"{where}: find: read_formats", find.read_formats)


WHAT = {"fields": "field", "key_fields": "key field", "rules": "rule"}


def _where(data: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    # "fields.3.type" tells an agency little; "field 'phone': type" says which one.
    parts = [str(p) for p in loc]
    if len(loc) >= 2 and loc[0] in WHAT and isinstance(loc[1], int):
        items = data.get(str(loc[0]))
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        what = WHAT[str(loc[0])]
        head = f"{what} {name!r}" if name else f"{what} #{loc[1] + 1}"
        rest = [p for p in parts[2:] if p not in RULE_CHECKS]
        return ": ".join([head, ".".join(rest)]) if rest else head
    return ".".join(parts)


def parse_template(text: str, origin: str) -> Template:
    """Parse and check a template from YAML text; `origin` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TemplateError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise TemplateError(f"{origin}: a template is a mapping with name, title, kind, fields")
    try:
        template = Template.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise TemplateError(f"{origin}: {_where(data, first['loc'])}: {first['msg']}") from e
    check_template(template)
    return template


def bundled_template_names() -> list[str]:
    """Names of the templates that ship with Kerani."""
    return sorted(p.stem for p in BUNDLED_TEMPLATES.glob("*.yaml"))


def load_template(name_or_path: str) -> Template:
    """Load a bundled template by name, or any template file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = BUNDLED_TEMPLATES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TemplateError(
            f"no template {name_or_path!r}: give a YAML file or one of "
            f"{', '.join(bundled_template_names())}"
        )
    return parse_template(path.read_text(encoding="utf-8"), str(path))
