"""Boxes in pixels, [x0, y0, x1, y1], and how two of them overlap: the one copy Kerani has."""

from __future__ import annotations

Box = tuple[int, int, int, int]


def intersection_area(a: Box, b: Box) -> int:
    """The area two boxes share; 0 when they do not meet."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, ix) * max(0, iy)


def area(box: Box) -> int:
    """The box's area (0 for an empty or inverted box)."""
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when two boxes share some area (touching edges do not count)."""
    return intersection_area(a, b) > 0


def coverage(region: Box, content: Box) -> float:
    """Share of the content box's area inside the region (1.0 = fully covered)."""
    return intersection_area(region, content) / max(1, area(content))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0.0 when either is empty."""
    inter = intersection_area(a, b)
    if inter == 0:
        return 0.0
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0
