"""2-D affine maps between page coordinate systems (scan, cleaned page, template)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kerani.ocr.engine import Box


@dataclass(frozen=True)
class Affine:
    """x' = a*x + b*y + c; y' = d*x + e*y + f."""

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0
    e: float = 1.0
    f: float = 0.0

    @staticmethod
    def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> Affine:
        """Scale and rotate (counter-clockwise on screen, y pointing down) then shift."""
        t = math.radians(angle_deg)
        ca, sa = scale * math.cos(t), scale * math.sin(t)
        # With y pointing down, a counter-clockwise turn on screen is (x, y) -> (c x + s y, ...).
        return Affine(ca, sa, tx, -sa, ca, ty)

    @staticmethod
    def rotation_about(angle_deg: float, cx: float, cy: float) -> Affine:
        """PIL's Image.rotate(angle_deg) without expand: turn about (cx, cy) counter-clockwise."""
        turn = Affine.similarity(1.0, angle_deg, 0.0, 0.0)
        return Affine(1, 0, cx, 0, 1, cy).then_after(turn).then_after(Affine(1, 0, -cx, 0, 1, -cy))

    def then_after(self, first: Affine) -> Affine:
        """The map 'apply `first`, then self'."""
        return Affine(
            self.a * first.a + self.b * first.d,
            self.a * first.b + self.b * first.e,
            self.a * first.c + self.b * first.f + self.c,
            self.d * first.a + self.e * first.d,
            self.d * first.b + self.e * first.e,
            self.d * first.c + self.e * first.f + self.f,
        )

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """Map one point."""
        return self.a * x + self.b * y + self.c, self.d * x + self.e * y + self.f

    def inverse(self) -> Affine:
        """The inverse map (the matrix is never singular for the maps Kerani builds)."""
        det = self.a * self.e - self.b * self.d
        ia, ib, id_, ie = self.e / det, -self.b / det, -self.d / det, self.a / det
        return Affine(ia, ib, -(ia * self.c + ib * self.f), id_, ie, -(id_ * self.c + ie * self.f))

    def box(self, box: Box) -> Box:
        """Axis-aligned bounds of a mapped box, rounded outwards to whole pixels."""
        pts = [self.apply(x, y) for x in (box[0], box[2]) for y in (box[1], box[3])]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return (
            math.floor(min(xs)),
            math.floor(min(ys)),
            math.ceil(max(xs)),
            math.ceil(max(ys)),
        )

    @property
    def scale(self) -> float:
        """The mean scale factor of the map."""
        return math.sqrt(abs(self.a * self.e - self.b * self.d))

    @property
    def is_identity(self) -> bool:
        """True for the map that changes nothing."""
        return self == Affine()


def clip_box(box: Box, width: int, height: int) -> Box:
    """`box` clipped to an image of width x height (never empty: at least one pixel)."""
    x0 = min(max(0, box[0]), width - 1)
    y0 = min(max(0, box[1]), height - 1)
    x1 = max(min(width, box[2]), x0 + 1)
    y1 = max(min(height, box[3]), y0 + 1)
    return (x0, y0, x1, y1)
