"""Synthetic scans: filled copies of a form template with scan effects and their ground truth.

Good for demos and for testing alignment and validators; never the only evidence of accuracy
(real scans are messier than anything rendered here).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from statistics import NormalDist

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from kerani.core.errors import BadInputError, TemplateError
from kerani.evaluation.ground_truth import PAGES_DIR, Box, TruthField, TruthPage, write_truth
from kerani.forms.feasibility import passing_values
from kerani.forms.rendering import draw_form
from kerani.forms.templates import FieldSpec, Template
from kerani.forms.validators import format_date, validate

# Mild effects: a decent office scanner. Plain Tesseract reads most fields at these settings.
DEFAULT_NOISE = 0.15
DEFAULT_MAX_SKEW_DEG = 0.8
DEFAULT_MAX_SHIFT_FRAC = 0.015
DEFAULT_MAX_SCALE = 0.02


# ------------------------------------------------------------------------------ fake values

_MALAY_MALE = ("AHMAD", "MUHAMMAD", "MOHD", "AMIRUL", "FAIZAL", "HAFIZ", "IRFAN", "KHAIRUL")
_MALAY_MALE_2 = ("AIMAN", "HAKIM", "IZZAT", "NAZRI", "SYAFIQ", "ZULKIFLI", "FIRDAUS", "ARIF")
_MALAY_FEMALE = ("NUR", "SITI", "NURUL", "AISYAH", "FARAH", "NOR", "ZURAIDA", "HALIMAH")
_MALAY_FEMALE_2 = ("AISYAH", "AMIRA", "SYAZWANI", "FATIMAH", "HASNAH", "AINA", "IZZATI", "SOFEA")
_MALAY_FATHER = (
    "ABDULLAH",
    "ISMAIL",
    "OSMAN",
    "ABDUL RAHMAN",
    "HASSAN",
    "YUSOF",
    "ZAKARIA",
    "IBRAHIM",
    "MOHD NOOR",
    "SULAIMAN",
    "JAAFAR",
    "MOHD RAZALI",
)
_CHINESE_SURNAME = ("TAN", "LIM", "LEE", "WONG", "NG", "CHONG", "CHAN", "ONG", "LOW", "YAP", "TEH")
_CHINESE_MALE = ("WEI", "KAH", "CHEE", "BOON", "KOK", "JUN", "HONG", "SENG", "KEAT", "MING", "HAO")
_CHINESE_FEMALE = ("MEI", "SIEW", "LI", "HUI", "XIN", "YEE", "LING", "PEI", "WEN", "JIA", "YING")
_INDIAN_MALE = ("ARUL", "RAJESH", "SURESH", "KUMAR", "GANESH", "PRAKASH", "VIGNESH", "SIVA")
_INDIAN_FEMALE = ("KAVITHA", "PRIYA", "DEVI", "LAKSHMI", "SHALINI", "MEENA", "REVATHI", "THIVYA")
_INDIAN_FATHER = (
    "SUBRAMANIAM",
    "RAJENDRAN",
    "MUNIANDY",
    "KRISHNAN",
    "GOPAL",
    "RAMASAMY",
    "PERUMAL",
    "SELVARAJ",
)

# Town, postcode range and state, so that town, postcode and IC birth place can agree.
_TOWNS: tuple[tuple[str, int, int, str], ...] = (
    ("SHAH ALAM", 40000, 40470, "SELANGOR"),
    ("PETALING JAYA", 46000, 46350, "SELANGOR"),
    ("KLANG", 41000, 41300, "SELANGOR"),
    ("KUALA LUMPUR", 50050, 59200, "WP KUALA LUMPUR"),
    ("KOTA BHARU", 15000, 16010, "KELANTAN"),
    ("KUALA TERENGGANU", 20000, 21300, "TERENGGANU"),
    ("KUANTAN", 25000, 26100, "PAHANG"),
    ("IPOH", 30000, 31650, "PERAK"),
    ("GEORGE TOWN", 10000, 11000, "PULAU PINANG"),
    ("ALOR SETAR", 5000, 6250, "KEDAH"),
    ("JOHOR BAHRU", 80000, 81300, "JOHOR"),
    ("MELAKA", 75000, 75990, "MELAKA"),
    ("SEREMBAN", 70000, 70990, "NEGERI SEMBILAN"),
    ("KANGAR", 1000, 1990, "PERLIS"),
    ("KOTA KINABALU", 88000, 88999, "SABAH"),
    ("KUCHING", 93000, 93990, "SARAWAK"),
)
# MyKad birth-place codes of the states above (the PB in YYMMDD-PB-NNNN).
_STATE_CODE = {
    "JOHOR": "01",
    "KEDAH": "02",
    "KELANTAN": "03",
    "MELAKA": "04",
    "NEGERI SEMBILAN": "05",
    "PAHANG": "06",
    "PULAU PINANG": "07",
    "PERAK": "08",
    "PERLIS": "09",
    "SELANGOR": "10",
    "TERENGGANU": "11",
    "SABAH": "12",
    "SARAWAK": "13",
    "WP KUALA LUMPUR": "14",
}
_STREETS = (
    "MERANTI",
    "BUNGA RAYA",
    "KENANGA",
    "MELATI",
    "CEMPAKA",
    "SERI PUTRA",
    "IMPIAN",
    "DAMAI",
    "MAHSURI",
    "SETIA",
    "PERDANA",
    "TUN RAZAK",
)
_VILLAGES = ("BARU", "PADANG", "PERMATANG PAUH", "SUNGAI BESI", "BUKIT CHANDAN", "PULAU MELAKA")
_OCCUPATIONS = ("PEKEBUN KECIL", "NELAYAN", "PENIAGA", "SURI RUMAH", "PEMANDU", "BURUH", "TUKANG")
_MOBILE_PREFIXES = ("010", "011", "012", "013", "014", "016", "017", "018", "019")


@dataclass(frozen=True)
class _Person:
    """One applicant, so that name, IC, birth date and town on a form agree."""

    name: str
    male: bool
    birth: date
    town: tuple[str, int, int, str]
    born_in: str


def _person_name(rng: random.Random, male: bool) -> str:
    group = rng.choices(("malay", "chinese", "indian"), weights=(6, 3, 1.5))[0]
    if group == "malay":
        first = rng.choice(_MALAY_MALE if male else _MALAY_FEMALE)
        second = rng.choice(_MALAY_MALE_2 if male else _MALAY_FEMALE_2)
        given = first if rng.random() < 0.3 or first == second else f"{first} {second}"
        return f"{given} {'BIN' if male else 'BINTI'} {rng.choice(_MALAY_FATHER)}"
    if group == "chinese":
        syllables = _CHINESE_MALE if male else _CHINESE_FEMALE
        a, b = rng.sample(syllables, 2)
        return f"{rng.choice(_CHINESE_SURNAME)} {a} {b}"
    given = rng.choice(_INDIAN_MALE if male else _INDIAN_FEMALE)
    return f"{given} {'A/L' if male else 'A/P'} {rng.choice(_INDIAN_FATHER)}"


def _random_date(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


def _make_person(rng: random.Random) -> _Person:
    male = rng.random() < 0.5
    town = rng.choice(_TOWNS)
    # Most people are born in the state they live in; some moved.
    born_in = town[3] if rng.random() < 0.7 else rng.choice(sorted(_STATE_CODE))
    return _Person(
        name=_person_name(rng, male),
        male=male,
        # Fixed range, not "today minus N years", so a seed gives the same form next year.
        birth=_random_date(rng, date(1950, 1, 1), date(2006, 12, 31)),
        town=town,
        born_in=born_in,
    )


def _ic_number(person: _Person, rng: random.Random) -> str:
    # The last digit of a MyKad number is odd for men and even for women.
    serial = rng.randint(0, 999) * 10 + rng.choice(
        (1, 3, 5, 7, 9) if person.male else (0, 2, 4, 6, 8)
    )
    return f"{person.birth:%y%m%d}-{_STATE_CODE[person.born_in]}-{serial:04d}"


def _address(rng: random.Random) -> str:
    n = rng.randint(1, 250)
    style = rng.randrange(3)
    if style == 0:
        return f"NO {n} JALAN {rng.choice(_STREETS)} {rng.randint(1, 12)}"
    if style == 1:
        return f"LOT {rng.randint(100, 4999)} KAMPUNG {rng.choice(_VILLAGES)}"
    lorong, taman = rng.sample(_STREETS, 2)
    return f"NO {n} LORONG {lorong} {rng.randint(1, 9)} TAMAN {taman}"


def _phone(rng: random.Random) -> str:
    prefix = rng.choice(_MOBILE_PREFIXES)
    # 011 numbers have eight digits after the prefix, the others seven.
    digits = 8 if prefix == "011" else 7
    return f"{prefix}-{rng.randint(10 ** (digits - 1), 10**digits - 1)}"


def _amount(rng: random.Random) -> str:
    cents = rng.choice(("00", "00", "50", f"{rng.randint(0, 99):02d}"))
    return f"{rng.randint(300, 9500)}.{cents}"


def _has_word(name: str, *words: str) -> bool:
    return any(w in name for w in words)


def _is_birth_date(f: FieldSpec) -> bool:
    return f.type == "date" and _has_word(f.name.lower(), "birth", "lahir", "dob")


def _text_value(f: FieldSpec, person: _Person, rng: random.Random) -> str:
    name = f.name.lower()
    if _has_word(name, "address", "alamat"):
        return _address(rng)
    if _has_word(name, "city", "town", "bandar"):
        return person.town[0]
    if _has_word(name, "state", "negeri"):
        return person.town[3]
    if _has_word(name, "name", "nama"):
        return person.name
    return rng.choice(_OCCUPATIONS)


def _value_for(f: FieldSpec, person: _Person, rng: random.Random) -> str:
    if f.type in ("text", "line"):
        return _text_value(f, person, rng)
    if f.type == "ic_number":
        return _ic_number(person, rng)
    if f.type == "date":
        if _is_birth_date(f):
            return format_date(person.birth, f.formats[0])
        return format_date(_random_date(rng, date(2023, 1, 1), date(2025, 12, 31)), f.formats[0])
    if f.type == "phone":
        return _phone(rng)
    if f.type == "postcode":
        lo, hi = person.town[1], person.town[2]
        return f"{rng.randrange(lo, hi + 1, 10):05d}"
    if f.type == "amount":
        return _amount(rng)
    if f.type == "number":
        return str(rng.randint(1, 9))
    if f.type == "choice":
        return rng.choice(f.allowed or ["-"])
    if f.type == "checkbox":
        return "yes" if f.required or rng.random() < 0.5 else "no"
    if f.type == "signature":
        return "present" if f.required or rng.random() < 0.8 else "absent"
    raise TemplateError(f"field {f.name!r}: no fake values for type {f.type!r}")


def fake_values(template: Template, rng: random.Random) -> dict[str, str]:
    """Plausible Malaysian values for every field of `template`, consistent with each other."""
    person = _make_person(rng)
    values: dict[str, str] = {}
    for f in template.fields:
        # A template's own validators (pattern, range, allowed values, checksum) may be
        # stricter than the type; retry a few draws.
        for _attempt in range(20):
            value = _value_for(f, person, rng)
            if validate(f.type, value, f.pattern) is None and f.problem(value) is None:
                break
        else:
            # Validators stricter than the plausible values (a narrow range, a pattern):
            # one of the values the template check found to pass them.
            passing, _refused = passing_values(f, rng)
            if not passing:
                problem = validate(f.type, value, f.pattern) or f.problem(value)
                raise TemplateError(
                    f"template {template.name!r}: cannot make a fake value for field "
                    f"{f.name!r} of type {f.type!r} that passes its validation ({problem})"
                )
            value = rng.choice(passing)
        values[f.name] = value
    return values


# --------------------------------------------------------------------------------- drawing


# ------------------------------------------------------------------------------ scan effects


@dataclass(frozen=True)
class _Geometry:
    """Rotation and scale about the page centre, then a shift, in output pixels."""

    angle_deg: float
    scale: float
    dx: float
    dy: float
    cx: float
    cy: float

    def forward(self, x: float, y: float) -> tuple[float, float]:
        """Where the point (x, y) of the clean page lands on the scan."""
        a = math.radians(self.angle_deg)
        u, v = x - self.cx, y - self.cy
        return (
            self.cx + self.scale * (math.cos(a) * u - math.sin(a) * v) + self.dx,
            self.cy + self.scale * (math.sin(a) * u + math.cos(a) * v) + self.dy,
        )

    def inverse_affine(self) -> tuple[float, float, float, float, float, float]:
        """PIL AFFINE coefficients: for each scan pixel, the clean-page point it shows."""
        a = math.radians(self.angle_deg)
        ca, sa = math.cos(a) / self.scale, math.sin(a) / self.scale
        ox, oy = self.cx + self.dx, self.cy + self.dy
        return (ca, sa, self.cx - ca * ox - sa * oy, -sa, ca, self.cy + sa * ox - ca * oy)

    def box(self, b: Box) -> tuple[float, float, float, float]:
        """Axis-aligned bounds of box `b` after the transform."""
        pts = [self.forward(x, y) for x in (b[0], b[2]) for y in (b[1], b[3])]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return (min(xs), min(ys), max(xs), max(ys))


def _clamp(value: float, lo: float, hi: float) -> float:
    return (lo + hi) / 2 if lo > hi else min(max(value, lo), hi)


def _choose_geometry(
    size: tuple[int, int],
    boxes: list[Box],
    rng: random.Random,
    max_skew_deg: float,
    max_shift_frac: float,
    max_scale: float,
) -> _Geometry:
    width, height = size
    still = _Geometry(
        angle_deg=rng.uniform(-max_skew_deg, max_skew_deg),
        scale=1.0 + rng.uniform(-max_scale, max_scale),
        dx=0.0,
        dy=0.0,
        cx=width / 2,
        cy=height / 2,
    )
    dx = rng.uniform(-max_shift_frac, max_shift_frac) * width
    dy = rng.uniform(-max_shift_frac, max_shift_frac) * height
    if boxes:
        # A scanner crops paper margins, not filled-in fields: keep every value on the page.
        moved = [still.box(b) for b in boxes]
        ux0, uy0 = min(m[0] for m in moved), min(m[1] for m in moved)
        ux1, uy1 = max(m[2] for m in moved), max(m[3] for m in moved)
        dx = _clamp(dx, 2 - ux0, width - 2 - ux1)
        dy = _clamp(dy, 2 - uy0, height - 2 - uy1)
    return _Geometry(still.angle_deg, still.scale, dx, dy, still.cx, still.cy)


def _gaussian_noise(size: tuple[int, int], sigma: float, rng: random.Random) -> Image.Image:
    # Pillow's effect_noise uses C rand() and ignores our seed; map seeded uniform bytes
    # through the inverse normal CDF instead, which is deterministic and fast.
    normal = NormalDist()
    lut = [
        min(255, max(0, round(128 + sigma * normal.inv_cdf((u + 0.5) / 256)))) for u in range(256)
    ]
    uniform = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    return uniform.point(lut)


def _scan_effects(
    page: Image.Image,
    boxes: dict[str, Box],
    rng: random.Random,
    paper: int,
    *,
    noise: float,
    max_skew_deg: float,
    max_shift_frac: float,
    max_scale: float,
) -> tuple[Image.Image, dict[str, Box]]:
    width, height = page.size
    geo = _choose_geometry(
        page.size, list(boxes.values()), rng, max_skew_deg, max_shift_frac, max_scale
    )
    out = page
    moved = dict(boxes)
    if geo.angle_deg != 0.0 or geo.scale != 1.0 or geo.dx != 0.0 or geo.dy != 0.0:
        out = page.transform(
            page.size,
            Image.Transform.AFFINE,
            geo.inverse_affine(),
            resample=Image.Resampling.BICUBIC,
            fillcolor=paper,
        )
        moved = {}
        for name, b in boxes.items():
            fx0, fy0, fx1, fy1 = geo.box(b)
            clipped = (
                max(0, math.floor(fx0)),
                max(0, math.floor(fy0)),
                min(width, math.ceil(fx1)),
                min(height, math.ceil(fy1)),
            )
            # A value pushed off the page is not on the scan, so it has no truth.
            if clipped[0] < clipped[2] and clipped[1] < clipped[3]:
                moved[name] = clipped
    if noise > 0:
        out = out.filter(ImageFilter.GaussianBlur(noise * rng.uniform(0.6, 1.4)))
        # Dust and toner specks; small, as on a scanner glass that is mostly clean.
        draw = ImageDraw.Draw(out)
        for _ in range(round(noise * 60)):
            x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.6, 1.8)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=rng.randint(40, 150))
        grain = _gaussian_noise(page.size, noise * 40, rng)
        out = ImageChops.add(out, grain, scale=1.0, offset=-128)
    return out, moved


def render_form(
    template: Template,
    values: dict[str, str],
    rng: random.Random,
    *,
    noise: float = DEFAULT_NOISE,
    max_skew_deg: float = DEFAULT_MAX_SKEW_DEG,
    max_shift_frac: float = DEFAULT_MAX_SHIFT_FRAC,
    max_scale: float = DEFAULT_MAX_SCALE,
) -> tuple[Image.Image, list[TruthField]]:
    """Render a filled form as a greyscale scan; return it and each value's box on the scan."""
    if template.kind != "form" or template.page_size is None:
        raise TemplateError(f"template {template.name!r} is not a form with a page_size")
    unknown = sorted(set(values) - {f.name for f in template.fields})
    if unknown:
        raise TemplateError(
            f"template {template.name!r} has no field {', '.join(repr(u) for u in unknown)}"
        )
    if noise < 0 or max_skew_deg < 0 or max_shift_frac < 0 or not 0 <= max_scale < 1:
        raise BadInputError(
            "scan effects must be >= 0 (and max_scale below 1): "
            f"noise={noise}, max_skew_deg={max_skew_deg}, max_shift_frac={max_shift_frac}, "
            f"max_scale={max_scale}"
        )
    # Paper is not quite white on a noisy scan; a clean render stays pure white.
    paper = 255 - rng.randint(0, round(noise * 25))
    page, tight = draw_form(template, values, rng, paper)
    scan, boxes = _scan_effects(
        page,
        tight,
        rng,
        paper,
        noise=noise,
        max_skew_deg=max_skew_deg,
        max_shift_frac=max_shift_frac,
        max_scale=max_scale,
    )
    truth = [
        TruthField(name=f.name, box=boxes[f.name], text=values[f.name].strip())
        for f in template.fields
        if f.name in boxes
    ]
    return scan, truth


def generate_dataset(
    template: Template, out_dir: Path, count: int, seed: int, **effects: float
) -> int:
    """Write `count` filled forms to out_dir/pages/form_NNN.png plus truth.jsonl; return count.

    `effects` are render_form's keyword arguments (noise, max_skew_deg, ...).
    """
    if count < 1:
        raise BadInputError(f"count must be at least 1, not {count}")
    if template.kind != "form":
        raise TemplateError(f"template {template.name!r} is not a form; cannot render it")
    pages_dir = out_dir / PAGES_DIR
    pages_dir.mkdir(parents=True, exist_ok=True)
    pages: list[TruthPage] = []
    for i in range(1, count + 1):
        # One generator per page: page 7 of seed 1 is the same however many pages are made.
        rng = random.Random(f"kerani-synthetic:{seed}:{i}")
        values = fake_values(template, rng)
        image, fields = render_form(template, values, rng, **effects)
        rel = f"{PAGES_DIR}/form_{i:03d}.png"
        image.save(out_dir / rel)
        pages.append(TruthPage(page=rel, fields=fields))
    write_truth(out_dir, pages)
    return count
