"""Cross-field rules of a template: checks that need more than one field of a record.

A rule applies only where its fields were captured: a field that is missing from the page,
blank or unreadable makes the rule silent rather than failed (its own `required` check is
what catches a missing value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from kerani.forms.validators import DEFAULT_DATE_FORMATS, ic_birth_yymmdd, numeric_value, parse_date


@dataclass(frozen=True)
class Captured:
    """A settled field value as rules see it: its text and its kind (text, unreadable, blank)."""

    value: str | None
    kind: str

    @property
    def text(self) -> str | None:
        """The value if the field holds one, else None."""
        return self.value if self.kind == "text" and self.value else None


@dataclass(frozen=True)
class RuleFailure:
    """A rule a record breaks: the rule's name, the fields involved and what is wrong."""

    rule: str
    fields: tuple[str, ...]
    message: str


class _Rule(BaseModel):
    name: str
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"rule name {v!r} must be letters, digits and underscores")
        return v


class IcBirthDateRule(_Rule):
    """The birth date encoded in a MyKad number (YYMMDD) equals a date-of-birth field."""

    check: Literal["ic_birth_date"]
    ic: str
    date: str

    def field_names(self) -> tuple[str, ...]:
        """The fields this rule reads."""
        return (self.ic, self.date)

    def field_types(self) -> dict[str, tuple[str, ...]]:
        """The types each field must have for the rule to make sense."""
        return {self.ic: ("ic_number",), self.date: ("date",)}

    def evaluate(
        self, values: Mapping[str, Captured], formats: Mapping[str, Sequence[str]]
    ) -> RuleFailure | None:
        """The failure, or None when the rule holds or does not apply."""
        ic, dob = values.get(self.ic), values.get(self.date)
        if ic is None or dob is None or ic.text is None or dob.text is None:
            return None
        yymmdd = ic_birth_yymmdd(ic.text)
        born = parse_date(dob.text, formats.get(self.date, DEFAULT_DATE_FORMATS))
        if yymmdd is None or born is None:
            return None  # each field's own validator reports a malformed value
        if born.strftime("%y%m%d") == yymmdd:
            return None
        return RuleFailure(
            self.name,
            self.field_names(),
            f"the birth date in {self.ic} ({ic.text} → {yymmdd[4:]}/{yymmdd[2:4]}/"
            f"{yymmdd[:2]}) does not match {self.date} ({dob.text})",
        )


class DateOrderRule(_Rule):
    """One date field is not later than another (born before applying, say)."""

    check: Literal["date_order"]
    earlier: str
    later: str

    def field_names(self) -> tuple[str, ...]:
        """The fields this rule reads."""
        return (self.earlier, self.later)

    def field_types(self) -> dict[str, tuple[str, ...]]:
        """The types each field must have for the rule to make sense."""
        return {self.earlier: ("date",), self.later: ("date",)}

    def evaluate(
        self, values: Mapping[str, Captured], formats: Mapping[str, Sequence[str]]
    ) -> RuleFailure | None:
        """The failure, or None when the rule holds or does not apply."""
        a, b = values.get(self.earlier), values.get(self.later)
        if a is None or b is None or a.text is None or b.text is None:
            return None
        da = parse_date(a.text, formats.get(self.earlier, DEFAULT_DATE_FORMATS))
        db = parse_date(b.text, formats.get(self.later, DEFAULT_DATE_FORMATS))
        if da is None or db is None or da <= db:
            return None
        return RuleFailure(
            self.name,
            self.field_names(),
            f"{self.earlier} ({a.text}) is after {self.later} ({b.text})",
        )


class SumRule(_Rule):
    """A total equals the sum of its captured items (a receipt's total, a form's subtotal)."""

    check: Literal["sum"]
    total: str
    items: list[str] = Field(min_length=1)
    tolerance: Decimal = Decimal("0")

    def field_names(self) -> tuple[str, ...]:
        """The fields this rule reads."""
        return (self.total, *self.items)

    def field_types(self) -> dict[str, tuple[str, ...]]:
        """The types each field must have for the rule to make sense."""
        return {name: ("amount", "number") for name in self.field_names()}

    def evaluate(
        self, values: Mapping[str, Captured], formats: Mapping[str, Sequence[str]]
    ) -> RuleFailure | None:
        """The failure, or None when the rule holds or does not apply."""
        total = values.get(self.total)
        if total is None or total.text is None:
            return None
        amounts: list[Decimal] = []
        for name in self.items:
            item = values.get(name)
            if item is None or item.kind == "blank":
                continue  # no such line on this document: it adds nothing
            number = numeric_value(item.text) if item.text else None
            if number is None:
                return None  # an unreadable item: the sum cannot be checked
            amounts.append(number)
        expected = numeric_value(total.text)
        if not amounts or expected is None:
            return None
        got = sum(amounts, Decimal("0"))
        if abs(got - expected) <= self.tolerance:
            return None
        return RuleFailure(
            self.name,
            self.field_names(),
            f"{self.total} ({total.text}) is not the sum of {', '.join(self.items)} ({got})",
        )


Rule = Annotated[IcBirthDateRule | DateOrderRule | SumRule, Field(discriminator="check")]
RULE_CHECKS = ("ic_birth_date", "date_order", "sum")


def check_rules(
    rules: Sequence[IcBirthDateRule | DateOrderRule | SumRule],
    values: Mapping[str, Captured],
    formats: Mapping[str, Sequence[str]],
) -> list[RuleFailure]:
    """Every rule the captured values break, in the template's order."""
    return [f for r in rules if (f := r.evaluate(values, formats)) is not None]
