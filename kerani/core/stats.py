"""The Wilson score interval of a rate: the one copy the calibration, quality and reports use."""

from __future__ import annotations

import math


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Lower and upper end of the Wilson score interval of `hits / n` (z standard deviations).

    With no observations the interval is the whole of [0, 1].
    """
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denominator = 1 + z2 / n
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)
