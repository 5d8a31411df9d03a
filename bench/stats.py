"""Summaries of repeated measurements: median and spread, ratios, a least-squares slope."""

import statistics
from collections.abc import Sequence
from typing import Any


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of one measurement repeated."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": list(samples),
    }


def ratio(value: float, baseline: float) -> float | None:
    """value / baseline, or None when the baseline is zero."""
    return value / baseline if baseline else None


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ys over xs and its standard error."""
    n = len(xs)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return 0.0, 0.0
    beta = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    if n < 3:
        return beta, 0.0
    alpha = mean_y - beta * mean_x
    residual = sum((y - alpha - beta * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return beta, (residual / (n - 2) / sxx) ** 0.5
