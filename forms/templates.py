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
RESERVED_FIELD_NAMES = ("batch_id", "document", "page", "valid", "problems", "text_layer")


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


class FieldSpec(BaseModel):
    """One field of a form: where it is on the page, what it holds and how it is checked."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    label: Label
    type: str
    box: tuple[int, int, int, int] = Field(validation_alias=AliasChoices("box", "region"))
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


class Template(BaseModel):
    """A document type: a form with fixed fields, or template-free text lines."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: Label
    kind: Literal["form", "lines"]
    page_size: tuple[int, int] | None = None
    fields: list[FieldSpec] = []
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

    def broken_rules(self, values: dict[str, Captured]) -> list[RuleFailure]:
        """The cross-field rules these captured values break."""
        formats = {f.name: f.formats for f in self.fields if f.type == "date"}
        return check_rules(self.rules, values, formats)


def _check_validators(t: Template, f: FieldSpec) -> None:
    where = f"template {t.name!r}: field {f.name!r}"
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
        if not f.date_formats:
            raise TemplateError(f"{where}: rule date_formats: the list of formats is empty")
        for fmt in f.date_formats:
            try:
                date_format_regex(fmt)
            except ValueError as e:
                raise TemplateError(f"{where}: rule date_formats: {e}") from e
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
            f"and takes no fields and no anchors"
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
    _check_rules(t)


def _where(data: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    # "fields.3.type" tells an agency little; "field 'phone': type" says which one.
    parts = [str(p) for p in loc]
    if len(loc) >= 2 and loc[0] in ("fields", "rules") and isinstance(loc[1], int):
        items = data.get(str(loc[0]))
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        what = "field" if loc[0] == "fields" else "rule"
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
