"""Templates are stored in the database, versioned; a template whose rules cannot hold is
refused before it is stored, naming the field and the rule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from kerani.core.errors import BadInputError, TemplateError
from kerani.evaluation.synthetic import fake_values
from kerani.forms.catalogue import (
    add_template,
    add_template_file,
    resolve_template,
    stored_template,
    template_content,
    template_versions,
)
from kerani.forms.feasibility import check_rules_can_hold
from kerani.forms.templates import BUNDLED_TEMPLATES, parse_template
from kerani.storage import schema
from kerani.storage.stores import Stores

BANTUAN = (BUNDLED_TEMPLATES / "bantuan_form.yaml").read_text(encoding="utf-8")


def renamed(text: str, name: str, **field_changes: dict[str, object]) -> str:
    """The bundled form under another name, with some fields' keys changed."""
    data = yaml.safe_load(text)
    data["name"] = name
    for f in data["fields"]:
        f.update(field_changes.get(f["name"], {}))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def stored_count(stores: Stores) -> int:
    with stores.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.templates)).scalar_one())


def test_versions_are_made_by_edits_and_found_by_reference(stores: Stores) -> None:
    first = add_template(stores.db, renamed(BANTUAN, "my_form"), "my_form.yaml")
    assert (first.ref, first.created) == ("my_form:1", True)
    again = add_template(stores.db, renamed(BANTUAN, "my_form"), "copy.yaml")
    assert (again.id, again.created) == (first.id, False)  # the same text: no new version
    edited = renamed(BANTUAN, "my_form", city={"required": False})
    second = add_template(stores.db, edited, "my_form.yaml")
    assert second.ref == "my_form:2" and not second.template.field("city").required
    assert stored_template(stores.db, "my_form").id == second.id  # a bare name: the latest
    assert stored_template(stores.db, "my_form:1").template.field("city").required
    assert template_content(stores.db, first.id) == renamed(BANTUAN, "my_form")
    with pytest.raises(TemplateError, match="has no version 7 \\(latest: 2\\)"):
        stored_template(stores.db, "my_form:7")
    with pytest.raises(TemplateError, match="no template 'nope'"):
        stored_template(stores.db, "nope")
    assert [(v.name, v.version) for v in template_versions(stores.db)] == [
        ("my_form", 1),
        ("my_form", 2),
    ]


def test_a_bundled_template_is_stored_the_first_time_it_is_named(stores: Stores) -> None:
    stored = stored_template(stores.db, "bantuan_form")
    assert stored.ref == "bantuan_form:1" and stored.created
    assert stored_template(stores.db, "bantuan_form").id == stored.id
    assert stored_count(stores) == 1


def test_a_file_is_stored_once_and_then_needs_no_file(stores: Stores, tmp_path: Path) -> None:
    path = tmp_path / "diy.yaml"
    path.write_text(renamed(BANTUAN, "diy"), encoding="utf-8")
    stored = resolve_template(stores.db, str(path))
    path.unlink()  # the file is gone: the stored version is what counts now
    assert stored_template(stores.db, "diy:1").template == stored.template
    with pytest.raises(TemplateError, match="no such template file"):
        resolve_template(stores.db, str(path))


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        # A date pattern no date in the accepted format matches.
        (
            {"date_of_birth": {"date_formats": ["DD-MM-YY"], "pattern": r"\d{2}/\d{2}/\d{4}"}},
            "field 'date_of_birth': rule pattern",
        ),
        # Allowed values the pattern refuses.
        (
            {"city": {"allowed": ["Ipoh", "Kuantan"], "pattern": "[0-9]+"}},
            "field 'city': rule allowed",
        ),
        # A range no number of the pattern reaches.
        (
            {"household_size": {"range": {"min": 1, "max": 20}, "pattern": "9[0-9]{2}"}},
            "field 'household_size': rule range",
        ),
        # Born after applying, always: the cross-field rule date_order cannot hold.
        (
            {
                "date_of_birth": {"pattern": r"\d{2}/\d{2}/20[3-9]\d"},
                "application_date": {"pattern": r"\d{2}/\d{2}/20[0-2]\d"},
            },
            "rule 'born_before_applying' \\(date_order\\) cannot hold",
        ),
    ],
)
def test_a_template_whose_rules_cannot_hold_is_refused_and_not_stored(
    stores: Stores, changes: dict[str, dict[str, object]], refused: str
) -> None:
    text = renamed(BANTUAN, "bad_form", **changes)
    parse_template(text, "bad_form.yaml")  # the structure is fine: only the rules clash
    with pytest.raises(TemplateError, match=f"template 'bad_form': {refused}"):
        add_template(stores.db, text, "bad_form.yaml")
    assert stored_count(stores) == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rules_that_can_hold_are_kept_and_synthetic_forms_follow_them(stores: Stores) -> None:
    # A two-digit-year date format is fine: before, the synthetic forms wrote every date as
    # DD/MM/YYYY and "could not make a fake value" for it.
    text = renamed(
        BANTUAN,
        "short_dates",
        application_date={"date_formats": ["DD-MM-YY"]},
        monthly_income={"range": {"min": "0.50", "max": "0.70"}},
    )
    template = add_template(stores.db, text, "short_dates.yaml").template
    values = fake_values(template, random.Random(3))
    assert template.field("application_date").problem(values["application_date"]) is None
    assert values["application_date"][2] == "-" and len(values["application_date"]) == 8
    for bundled in ("bantuan_form", "receipt"):
        check_rules_can_hold(stored_template(stores.db, bundled).template)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_file_that_is_not_a_template_is_one_clear_error(stores: Stores, tmp_path: Path) -> None:
    binary = tmp_path / "scan.yaml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a JPEG renamed")
    with pytest.raises(BadInputError, match=r"scan\.yaml: a template is UTF-8 text"):
        add_template_file(stores.db, binary)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "# padding\n" * 40_000, encoding="utf-8")
    with pytest.raises(TemplateError, match=r"huge\.yaml: a template is at most 256 KiB"):
        add_template_file(stores.db, huge)
