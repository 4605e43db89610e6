"""The template format: what docs/templates.md promises, validators, checksums and rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kerani.core.errors import TemplateError
from kerani.forms.rules import Captured
from kerani.forms.templates import (
    RESERVED_FIELD_NAMES,
    bundled_template_names,
    load_template,
    parse_template,
)
from kerani.forms.validators import parse_date, validate
from kerani.records.exports import RECORD_COLUMNS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "templates.md"

HEAD = """
name: t
title: {en: T, ms: T}
kind: form
page_size: [1000, 1000]
fields:
"""


def fld(name: str, box: str = "[0, 0, 10, 10]", type_: str = "text", extra: str = "") -> str:
    more = f", {extra}" if extra else ""
    return f"  - {{name: {name}, label: {{en: A, ms: B}}, type: {type_}, region: {box}{more}}}\n"


IC = fld("ic", "[0, 0, 10, 10]", "ic_number")
DOB = fld("dob", "[20, 0, 30, 10]", "date")


def test_documented_examples_are_valid_templates() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    complete = [b for b in blocks if b.startswith("name:")]
    assert len(complete) >= 3
    for block in complete:
        template = parse_template(block, "docs/templates.md")
        assert template.fields or template.key_fields


def test_bundled_templates_are_valid_and_bantuan_form_has_its_rules() -> None:
    for name in bundled_template_names():
        load_template(name)
    form = load_template("bantuan_form")
    assert [r.name for r in form.rules] == ["ic_matches_birth_date", "born_before_applying"]
    assert form.field("ic_number").checksum == "mykad"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (fld("a", type_="colour"), r"field 'a' has unknown type 'colour' \(known: text,"),
        (fld("a", type_="line"), "field 'a' has unknown type 'line'"),
        (fld("a", "[0, 0, 100, 100]") + fld("b", "[50, 50, 150, 150]"), "'a' and 'b' overlap"),
        (fld("a", "[900, 900, 1100, 950]"), r"field 'a' box .* lies outside the page"),
        (fld("a", "[-5, 0, 10, 10]"), r"field 'a' box .* lies outside the page"),
        (fld("a", extra="requird: true"), "field 'a': requird: Extra inputs are not permitted"),
        (fld("page"), "field name 'page' is reserved for export columns"),
        (fld("a__source"), "field name 'a__source' is reserved for export columns"),
        (fld("a", type_="choice"), "field 'a': rule allowed: a choice field needs"),
        (fld("a", extra="pattern: '[a-'"), "field 'a': rule pattern: '\\[a-' is not a regex"),
        (fld("a", extra="range: {min: 1, max: 3}"), "field 'a': rule range applies to number"),
        (
            fld("a", type_="number", extra="range: {min: 5, max: 3}"),
            "field 'a': rule range: min 5 is above max 3",
        ),
        (
            fld("a", type_="date", extra="date_formats: [MM/YYYY]"),
            "field 'a': rule date_formats: .* needs a day, a month and a year",
        ),
        (fld("a", extra="checksum: crc32"), "field 'a': rule checksum: unknown checksum 'crc32'"),
        (fld("a", extra="checksum: mykad"), "field 'a': rule checksum: mykad applies to ic_number"),
        (fld("a", extra="sensitivity: secret"), "field 'a': sensitivity: Input should be"),
        (
            IC + "rules:\n  - {name: r, check: ic_birth_date, ic: ic, date: dob}\n",
            "rule 'r' \\(ic_birth_date\\) names field 'dob', which the template does not have",
        ),
        (
            IC + fld("dob", "[20, 0, 30, 10]") + "rules:\n"
            "  - {name: r, check: ic_birth_date, ic: ic, date: dob}\n",
            "rule 'r' \\(ic_birth_date\\) needs field 'dob' to be of type date, not 'text'",
        ),
        (
            IC + DOB + "rules:\n  - {name: r, check: ic_birth_date, ic: ic, date: dob}\n"
            "  - {name: r, check: date_order, earlier: dob, later: dob}\n",
            "rule 'r' is defined twice",
        ),
        (IC + "rules:\n  - {name: r, check: magic, ic: ic}\n", "rule 'r': .*'magic'"),
        (
            fld("total", type_="amount") + "rules:\n  - {name: s, check: sum, total: total, "
            "items: [item_9]}\n",
            "rule 's' \\(sum\\) names field 'item_9'",
        ),
    ],
)
def test_invalid_templates_are_refused_naming_field_and_rule(body: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_template(HEAD + body, "t.yaml")


def test_reserved_names_are_the_export_columns() -> None:
    assert set(RESERVED_FIELD_NAMES) == set(RECORD_COLUMNS)


def test_lines_templates_take_no_fields_or_rules() -> None:
    head = "name: l\ntitle: {en: L, ms: L}\nkind: lines\n"
    parse_template(head, "l.yaml")
    with pytest.raises(TemplateError, match="takes no fields"):
        parse_template(head + "page_size: [10, 10]\nfields:\n" + fld("a"), "l.yaml")


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("checkbox", "yes", True),
        ("checkbox", "No", True),
        ("checkbox", "maybe", False),
        ("signature", "present", True),
        ("signature", "signed", False),
        ("choice", "B", True),
        ("amount", "12.00", True),
    ],
)
def test_new_types(kind: str, value: str, ok: bool) -> None:
    assert (validate(kind, value) is None) is ok


def test_field_validators_name_their_rule() -> None:
    t = parse_template(
        HEAD
        + fld("n", "[0, 0, 10, 10]", "number", "range: {min: 1, max: 40}")
        + fld("c", "[20, 0, 30, 10]", "choice", "allowed: [Lelaki, Perempuan]")
        + fld("d", "[40, 0, 50, 10]", "date", "date_formats: [D/M/YYYY, YYYY-MM-DD]")
        + fld("k", "[60, 0, 70, 10]", "text", "checksum: luhn, required: false")
        + fld("i", "[80, 0, 90, 10]", "ic_number", "checksum: mykad")
        + fld("x", "[100, 0, 110, 10]", "checkbox")
        + fld("m", "[120, 0, 130, 10]", "text", "checksum: mod11"),
        "t.yaml",
    )

    def rule(name: str, value: str | None, kind: str = "text") -> str | None:
        p = t.field(name).problem(value, kind)
        return None if p is None else p.rule

    assert rule("n", "4") is None and rule("n", "41") == "range" and rule("n", "4.5") == "type"
    assert rule("c", "perempuan") is None and rule("c", "Lain") == "allowed"
    assert rule("d", "2/3/1990") is None and rule("d", "1990-03-02") is None
    assert rule("d", "31/2/1990") == "type" and rule("d", "02.03.1990") == "type"
    assert (
        rule("k", "4539 1488 0343 6467") is None and rule("k", "4539 1488 0343 6468") == "checksum"
    )
    assert rule("k", None, "blank") is None  # not required
    assert rule("i", "900312-14-5568") is None and rule("i", "900312-18-5568") == "checksum"
    assert rule("i", "900231-14-5568") == "checksum"  # 31 February: no such birth date
    assert rule("x", "yes") is None and rule("x", "no") == "required"
    assert rule("m", "0306406152") is None and rule("m", "0306406153") == "checksum"
    assert rule("m", "080442957X") is None
    assert rule("n", None, "unreadable") == "required" and rule("n", "", "text") == "required"


def test_parse_date_formats() -> None:
    assert parse_date("12/03/1990").isoformat() == "1990-03-12"  # type: ignore[union-attr]
    assert parse_date("12/03/90", ["DD/MM/YY"]).isoformat() == "1990-03-12"  # type: ignore[union-attr]
    assert parse_date("12/03/05", ["DD/MM/YY"]).isoformat() == "2005-03-12"  # type: ignore[union-attr]
    assert parse_date("30/02/1990") is None and parse_date("1990-03-12") is None


def test_cross_field_rules() -> None:
    form = load_template("bantuan_form")

    def broken(**values: str | None) -> list[str]:
        captured = {
            k: Captured(v, "text") if v is not None else Captured(None, "unreadable")
            for k, v in values.items()
        }
        return [f.rule for f in form.broken_rules(captured)]

    assert broken(ic_number="900312-14-5568", date_of_birth="12/03/1990") == []
    assert broken(ic_number="900312-14-5568", date_of_birth="13/03/1990") == [
        "ic_matches_birth_date"
    ]
    assert broken(ic_number="050101-10-1234", date_of_birth="01/01/2005") == []  # 20xx births
    assert broken(ic_number="900312-14-5568", date_of_birth=None) == []  # not captured
    assert broken(ic_number="900312-14-5568") == []  # field not on the page
    assert broken(date_of_birth="12/03/1990", application_date="01/01/1980") == [
        "born_before_applying"
    ]
