"""Scaling exponents: ``y ~ a * cells^b`` by least squares on log-log axes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """A fitted ``y = a * x^b``.

    Attributes
    ----------
    a
        Prefactor (``y`` at ``x = 1``).
    b
        Exponent.
    r2
        Coefficient of determination on log-log axes (NaN with fewer than three points).
    n
        Points fitted.
    """

    a: float
    b: float
    r2: float
    n: int

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        """``a * x^b``."""
        return self.a * np.power(x, self.b)


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw | None:
    """Least-squares fit of ``log y = log a + b log x``.

    Parameters
    ----------
    x
        Positive sizes (e.g. cells).
    y
        Positive measurements (seconds, MiB); points where either is not positive and
        finite are left out.

    Returns
    -------
    PowerLaw or None
        The fit, or None when fewer than two distinct sizes remain.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)
    lx, ly = np.log(xa[keep]), np.log(ya[keep])
    if len(np.unique(lx)) < 2:
        return None
    b, log_a = np.polyfit(lx, ly, 1)
    r2 = math.nan
    if len(lx) >= 3:
        resid = ly - (log_a + b * lx)
        total = float(((ly - ly.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else math.nan
    return PowerLaw(a=float(math.exp(log_a)), b=float(b), r2=r2, n=int(keep.sum()))


def projected_seconds(sizes: Sequence[float], seconds: Sequence[float], target: float) -> float:
    """Seconds a stage would take at ``target`` cells, from its times at smaller sizes.

    Uses the fitted exponent when there are two sizes or more, but never less than 1 (a
    stage is assumed at least linear, so the projection errs on the long side), and the
    largest measured size as the anchor.

    Parameters
    ----------
    sizes
        Sizes measured.
    seconds
        Their times.
    target
        The size to project to.

    Returns
    -------
    float
        Projected seconds (NaN without any measurement).
    """
    if not sizes:
        return math.nan
    fit = fit_power_law(sizes, seconds)
    b = max(1.0, fit.b) if fit is not None else 1.0
    i = int(np.argmax(sizes))
    return float(seconds[i] * (target / sizes[i]) ** b)
