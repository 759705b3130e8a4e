"""Baseline figures as a readable table, and the median of several runs."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

_COLUMNS = (
    ("baseline", "baseline", 30),
    ("n", "n", 7),
    ("rate/s", "rate", 10),
    ("p50 ms", "p50_ms", 9),
    ("p95 ms", "p95_ms", 9),
    ("p99 ms", "p99_ms", 9),
    ("note", "note", 0),
)


def headline_rate(figures: Mapping[str, Any]) -> float | None:
    """The throughput a figure set is about: tasks/s for Celery, msgs/s for the broker."""
    for key in ("tasks_per_s", "msgs_per_s", "target_tasks_per_s", "target_msgs_per_s"):
        if key in figures:
            return float(figures[key])
    return None


def _cell(figures: Mapping[str, Any], key: str) -> str:
    value = headline_rate(figures) if key == "rate" else figures.get(key)
    if value is None:
        return "" if key == "note" else "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per figure set; a set may carry a ``note`` (for example an error)."""
    header = "  ".join(title.ljust(width) for title, _, width in _COLUMNS).rstrip()
    lines = [header, "-" * len(header)]
    for figures in rows:
        cells = []
        for _, key, width in _COLUMNS:
            text = _cell(figures, key)
            cells.append(text.ljust(width) if key in ("baseline", "note") else text.rjust(width))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def median_figures(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers become the median over the runs; everything else is taken from the first."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
            median = statistics.median(values)
            merged[key] = round(median, 3) if isinstance(median, float) else median
    merged["runs"] = len(runs)
    return merged
