"""Form templates: named fields with regions and types, loaded from YAML and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError, field_validator

from kerani.exceptions import TemplateError
from records.validators import FIELD_TYPES

BUNDLED_TEMPLATES = Path(__file__).parent / "templates"


class Label(BaseModel):
    """A label in English and Bahasa Malaysia."""

    en: str
    ms: str


class FieldSpec(BaseModel):
    """One field of a form: where it is on the page and what it holds."""

    name: str
    label: Label
    type: str
    box: tuple[int, int, int, int]
    required: bool = True
    sensitivity: Literal["public", "personal", "restricted"] = "personal"
    format_hint: str | None = None
    pattern: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"field name {v!r} must be letters, digits and underscores")
        return v


class Template(BaseModel):
    """A document type: a form with fixed fields, or template-free text lines."""

    name: str
    title: Label
    kind: Literal["form", "lines"]
    page_size: tuple[int, int] | None = None
    fields: list[FieldSpec] = []

    def field(self, name: str) -> FieldSpec:
        """Return the field called `name`."""
        for f in self.fields:
            if f.name == name:
                return f
        raise TemplateError(f"template {self.name!r} has no field {name!r}")


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_template(t: Template) -> None:
    """Raise TemplateError naming the field and the rule when the template is unusable."""
    if t.kind == "form":
        if not t.fields:
            raise TemplateError(f"template {t.name!r}: a form needs at least one field")
        if t.page_size is None:
            raise TemplateError(f"template {t.name!r}: a form needs page_size [width, height]")
    seen: set[str] = set()
    for f in t.fields:
        if f.name in seen:
            raise TemplateError(f"template {t.name!r}: field {f.name!r} is defined twice")
        seen.add(f.name)
        if f.type not in FIELD_TYPES:
            raise TemplateError(
                f"template {t.name!r}: field {f.name!r} has unknown type {f.type!r} "
                f"(known: {', '.join(FIELD_TYPES)})"
            )
        x0, y0, x1, y1 = f.box
        if not (x0 < x1 and y0 < y1):
            raise TemplateError(f"template {t.name!r}: field {f.name!r} has an empty box {f.box}")
        if t.page_size and (x0 < 0 or y0 < 0 or x1 > t.page_size[0] or y1 > t.page_size[1]):
            raise TemplateError(
                f"template {t.name!r}: field {f.name!r} box {f.box} lies outside the page "
                f"{t.page_size}"
            )
    for i, a in enumerate(t.fields):
        for b in t.fields[i + 1 :]:
            if _boxes_overlap(a.box, b.box):
                raise TemplateError(
                    f"template {t.name!r}: fields {a.name!r} and {b.name!r} overlap"
                )


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
        where = ".".join(str(p) for p in first["loc"])
        raise TemplateError(f"{origin}: {where}: {first['msg']}") from e
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
