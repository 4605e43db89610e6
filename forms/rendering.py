"""Drawing a template's form: its title, bilingual labels and, where given, typed values.

A clean rendering of a template is what its anchor words are read from (ocr.stage), and
what the evaluation harness turns into synthetic scans (kerani.evaluation.synthetic).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from kerani.core.errors import MissingDependencyError, TemplateError
from kerani.forms.templates import FieldSpec, Template

Box = tuple[int, int, int, int]

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_VALUE_FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf")


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = _FONT_DIR / name
    try:
        # Fall back to Pillow's own search of the system font folders.
        return ImageFont.truetype(str(path) if path.is_file() else name, size)
    except OSError as e:
        raise MissingDependencyError(
            f"font {name} not found; install the Debian package 'fonts-dejavu-core'"
        ) from e


def _fit_font(name: str, text: str, height: int, width: int) -> ImageFont.FreeTypeFont:
    size = max(8, height)
    font = _font(name, size)
    # Shrink until the value fits the box width, as a clerk types smaller on a long name.
    while size > 8 and font.getlength(text) > width:
        size -= 1
        font = _font(name, size)
    return font


def _draw_label(
    draw: ImageDraw.ImageDraw, f: FieldSpec, font: ImageFont.FreeTypeFont, unit: float
) -> None:
    """Print the field's label just above its box: "ms / en" on one line, or two if too long."""
    x0, y0, x1, _y1 = f.box
    one_line = f"{f.label.ms} / {f.label.en}"
    bottom = y0 - round(6 * unit)
    if font.getlength(one_line) <= x1 - x0:
        draw.text((x0, bottom), one_line, 50, font, anchor="ld")
        return
    # Too wide for the box: Bahasa Malaysia on top, English under it, as bilingual forms do.
    line_gap = round(font.size * 1.2)
    draw.text((x0, bottom - line_gap), f.label.ms, 50, font, anchor="ld")
    draw.text((x0, bottom), f.label.en, 50, font, anchor="ld")


def draw_form(
    template: Template, values: dict[str, str], rng: random.Random, paper: int
) -> tuple[Image.Image, dict[str, Box]]:
    """Draw the clean form; return it and the tight box of each drawn value."""
    assert template.page_size is not None  # checked by the caller
    width, height = template.page_size
    page = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(page)
    unit = height / 1754  # layout was tuned on A4 at 150 dpi; scale for other sizes

    top = min(f.box[1] for f in template.fields)
    title_font = _font("DejaVuSans-Bold.ttf", round(34 * unit))
    subtitle_font = _font("DejaVuSans.ttf", round(24 * unit))
    label_font = _font("DejaVuSans.ttf", round(19 * unit))
    small_font = _font("DejaVuSans.ttf", round(16 * unit))
    margin = round(60 * unit)
    # Malaysian government forms put Bahasa Malaysia first and English under it.
    if top > 150 * unit:
        draw.text((width / 2, top * 0.33), template.title.ms.upper(), 20, title_font, anchor="mm")
        draw.text((width / 2, top * 0.52), template.title.en, 60, subtitle_font, anchor="mm")
        rule_y = round(top * 0.68)
        draw.line([(margin, rule_y), (width - margin, rule_y)], fill=40, width=3)

    for f in template.fields:
        _draw_label(draw, f, label_font, unit)

    bottom = max(f.box[3] for f in template.fields)
    if bottom + 260 * unit < height:
        y = bottom + round(110 * unit)
        declaration = (
            "Saya mengaku maklumat di atas adalah benar. / "
            "I declare that the information above is true."
        )
        draw.text((margin + 30, y), declaration, 50, label_font, anchor="ls")
        sig_y = y + round(110 * unit)
        draw.line([(margin + 30, sig_y), (margin + 480 * unit, sig_y)], fill=60, width=2)
        draw.text((margin + 30, sig_y + 8), "Tandatangan / Signature", 70, small_font, anchor="la")
    footer = (
        f"{template.name} - contoh sintetik untuk ujian, bukan borang sebenar / "
        "synthetic specimen for testing, not a real form"
    )
    draw.text((width / 2, height - 50 * unit), footer, 110, small_font, anchor="mm")

    font_name = rng.choice(_VALUE_FONTS)
    ink = rng.randint(0, 35)
    tight: dict[str, Box] = {}
    for f in template.fields:
        value = values.get(f.name, "").strip()
        if not value:
            continue  # left blank, as people do with optional fields
        x0, y0, x1, y1 = f.box
        pad = rng.randint(8, 16)
        box_h = y1 - y0
        font = _fit_font(
            font_name, value, round(box_h * rng.uniform(0.44, 0.52)), x1 - x0 - 2 * pad
        )
        anchor_xy = (x0 + pad, (y0 + y1) / 2 + rng.uniform(-2, 2))
        draw.text(anchor_xy, value, ink, font, anchor="lm")
        bx0, by0, bx1, by1 = draw.textbbox(anchor_xy, value, font=font, anchor="lm")
        # A few pixels round the ink, kept inside the field's box.
        tight[f.name] = (
            max(x0, math.floor(bx0) - 4),
            max(y0, math.floor(by0) - 4),
            min(x1, math.ceil(bx1) + 4),
            min(y1, math.ceil(by1) + 4),
        )
    return page, tight


def blank_form(template: Template) -> Image.Image:
    """The template's form as printed, with no values: white paper, labels and title."""
    if template.kind != "form" or template.page_size is None:
        raise TemplateError(f"template {template.name!r} is not a form with a page_size")
    page, _tight = draw_form(template, {}, random.Random(0), 255)
    return page
