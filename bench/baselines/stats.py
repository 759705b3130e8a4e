"""Figures shared by every baseline: rates and latency percentiles as plain numbers."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def latency_percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of latencies given in seconds, reported in milliseconds."""
    if len(samples_s) < 2:
        only = samples_s[0] * 1000 if samples_s else 0.0
        return {"p50_ms": only, "p95_ms": only, "p99_ms": only, "max_ms": only}
    # "inclusive" keeps the cut points inside the observed range for small samples.
    cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 3),
        "p95_ms": round(cuts[94] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "max_ms": round(max(samples_s) * 1000, 3),
    }
