"""Templates: the bundled ones load; invalid ones are refused naming the field and the rule."""

from __future__ import annotations

import pytest

from kerani.core.errors import TemplateError
from kerani.forms.templates import bundled_template_names, load_template, parse_template
from kerani.forms.validators import validate

GOOD_HEAD = """
name: t
title: {en: T, ms: T}
kind: form
page_size: [1000, 1000]
fields:
"""


def field(name: str, box: str, type_: str = "text") -> str:
    return f"  - {{name: {name}, label: {{en: A, ms: B}}, type: {type_}, box: {box}}}\n"


def test_bundled_templates_load() -> None:
    assert {"bantuan_form", "receipt"} <= set(bundled_template_names())
    form = load_template("bantuan_form")
    assert form.kind == "form" and form.field("ic_number").type == "ic_number"
    assert load_template("receipt").kind == "lines"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (field("a", "[0, 0, 10, 10]", "colour"), "field 'a' has unknown type 'colour'"),
        (
            field("a", "[0, 0, 100, 100]") + field("b", "[50, 50, 150, 150]"),
            "fields 'a' and 'b' overlap",
        ),
        (field("a", "[900, 900, 1100, 950]"), "field 'a' box .* lies outside the page"),
        (field("a", "[0, 0, 10, 10]") + field("a", "[20, 20, 30, 30]"), "'a' is defined twice"),
        (field("a", "[10, 10, 5, 20]"), "field 'a' has an empty box"),
        (field("full name", "[0, 0, 10, 10]"), "must be letters, digits and underscores"),
    ],
)
def test_invalid_templates_are_refused(fields: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_template(GOOD_HEAD + fields, "t.yaml")


def test_unknown_template_names_the_choices() -> None:
    with pytest.raises(TemplateError, match="bantuan_form"):
        load_template("no_such_form")


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("date", "29/02/2024", True),
        ("date", "31/02/2024", False),
        ("ic_number", "900312-14-5567", True),
        ("ic_number", "901312-14-5567", False),
        ("amount", "1234.50", True),
        ("amount", "1,234.5", False),
        ("postcode", "40100", True),
        ("postcode", "4O100", False),
        ("phone", "012-3456789", True),
        ("number", "4", True),
        ("text", "   ", False),
    ],
)
def test_validators(kind: str, value: str, ok: bool) -> None:
    assert (validate(kind, value) is None) is ok
