"""Refuse a template whose rules cannot hold: a field no value can pass, or a cross-field rule
its fields' own validators rule out.

A template that passes its structural check (forms.templates.check_template) may still fail
every page it meets: a pattern no date matches, allowed values outside the pattern, a range
no amount of the pattern reaches. Before a template is stored, each field is given example
values (the type's own, the allowed values, dates in each accepted format, and strings drawn
from its pattern); if none passes every validator, the template is refused, naming the field
and the rule that rules them out. Then each cross-field rule is tried with values that pass
their fields.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import rstr

from kerani.core.errors import TemplateError
from kerani.forms.rules import Captured, DateOrderRule, IcBirthDateRule, SumRule
from kerani.forms.templates import Template, ValueSpec
from kerani.forms.validators import format_date, numeric_value, parse_date

PATTERN_DRAWS = 60  # strings drawn from a field's pattern; a satisfiable one is hit in a few
_DATES = (date(1990, 5, 17), date(1975, 11, 2), date(2004, 1, 30), date(2025, 6, 9))
_TYPE_EXAMPLES: dict[str, tuple[str, ...]] = {
    "text": ("Aminah binti Ali", "ABC123", "Kuala Lumpur", "x"),
    "number": ("0", "1", "7", "42", "100", "2500"),
    "amount": ("0.00", "1.00", "12.50", "350.00", "9999.99"),
    "ic_number": ("900517-14-5678", "751102-08-1234", "040130-10-4321"),
    "phone": ("012-3456789", "03-79561234", "011-23456789"),
    "postcode": ("50000", "10200", "88000", "01000"),
    "checkbox": ("yes", "no"),
    "signature": ("present", "absent"),
}
_CHECKSUM_EXAMPLES = {
    "luhn": ("79927398713", "4539578763621486"),
    "mod11": ("0306406152", "080442957X"),
    "mykad": (),  # the ic_number examples are real MyKad numbers
}


def _range_examples(f: ValueSpec) -> Iterator[str]:
    if f.range is None:
        return
    for bound in (f.range.min, f.range.max):
        if bound is not None:
            yield f"{bound:.2f}" if f.type == "amount" else str(int(bound))
    if f.range.min is not None and f.range.max is not None:
        middle = (f.range.min + f.range.max) / 2
        yield f"{middle:.2f}" if f.type == "amount" else str(int(middle))


def example_values(f: ValueSpec, draws: random.Random) -> Iterator[str]:
    """Values worth trying on a field: its type's, its allowed ones, its range's bounds,
    its dates in every accepted format, and strings its pattern matches."""
    yield from _TYPE_EXAMPLES.get(f.type, ())
    yield from f.allowed or ()
    yield from _CHECKSUM_EXAMPLES.get(f.checksum or "", ())
    yield from _range_examples(f)
    if f.type == "date":
        for fmt in f.formats:
            for d in _DATES:
                yield format_date(d, fmt)
    if f.pattern:
        maker = rstr.Rstr(draws)
        for _ in range(PATTERN_DRAWS):
            yield maker.xeger(f.pattern)


def passing_values(f: ValueSpec, draws: random.Random) -> tuple[list[str], Counter[str]]:
    """The example values that pass every validator of the field, and how often each rule
    refused the others."""
    passing: list[str] = []
    refused: Counter[str] = Counter()
    for value in dict.fromkeys(example_values(f, draws)):
        problem = f.problem(value)
        if problem is None:
            passing.append(value)
        else:
            refused[problem.rule] += 1
    return passing, refused


def _field_cannot_hold(t: Template, f: ValueSpec, refused: Counter[str]) -> TemplateError:
    # A type refuses most examples of any constrained field: the rule to blame is the one
    # the field adds on top of its type, when it has one.
    added = Counter({rule: n for rule, n in refused.items() if rule != "type"})
    blamed = added.most_common(1)[0][0] if added else "type"
    if blamed == "type" and f.date_formats:
        blamed = "date_formats"
    what = "field" if t.has_field(f.name) else "key field"
    return TemplateError(
        f"template {t.name!r}: {what} {f.name!r}: rule {blamed}: no {f.type} value can pass "
        f"this field's validators together (type {f.type}"
        + "".join(
            f", {r}"
            for r in ("date_formats", "pattern", "allowed", "range", "checksum")
            if getattr(f, r) is not None
        )
        + ")"
    )


def _captured(values: dict[str, str]) -> dict[str, Captured]:
    return {name: Captured(kind="text", value=v) for name, v in values.items()}


def _rule_can_hold(
    t: Template,
    rule: IcBirthDateRule | DateOrderRule | SumRule,
    passing: dict[str, list[str]],
) -> bool:
    """Whether some values that pass their fields make the rule hold."""
    formats = {f.name: f.formats for f in t.fields if f.type == "date"}
    if isinstance(rule, SumRule):
        items = {name: passing[name][0] for name in rule.items}
        got = sum((numeric_value(v) or Decimal(0) for v in items.values()), Decimal(0))
        total_field = t.field(rule.total)
        total = f"{got:.2f}" if total_field.type == "amount" else str(got)
        candidates = [total, *passing[rule.total]]
        tries = [{**items, rule.total: c} for c in candidates]
    elif isinstance(rule, IcBirthDateRule):
        ic_field = t.field(rule.ic)
        tries = []
        for d in passing[rule.date]:
            born = parse_date(d, formats[rule.date])
            # An IC number made from this very date, when the IC field takes it.
            made = [f"{born:%y%m%d}-14-5678"] if born else []
            ics = [ic for ic in made if ic_field.problem(ic) is None] + passing[rule.ic]
            tries += [{rule.ic: ic, rule.date: d} for ic in ics]
    else:
        tries = [
            {rule.earlier: a, rule.later: b}
            for a in passing[rule.earlier]
            for b in passing[rule.later]
        ]
    return any(rule.evaluate(_captured(v), formats) is None for v in tries[:2000])


def check_rules_can_hold(t: Template, seed: int = 0) -> None:
    """Raise TemplateError naming the field (or rule) whose rules no value can satisfy."""
    draws = random.Random(seed)
    passing: dict[str, list[str]] = {}
    # Key fields too: a total no amount can pass would send every receipt's to people.
    for f in (*t.fields, *t.key_fields):
        values, refused = passing_values(f, draws)
        if not values:
            raise _field_cannot_hold(t, f, refused)
        passing[f.name] = values
    for rule in t.rules:
        if not _rule_can_hold(t, rule, passing):
            raise TemplateError(
                f"template {t.name!r}: rule {rule.name!r} ({rule.check}) cannot hold for any "
                f"values that pass the validators of {', '.join(rule.field_names())}"
            )
