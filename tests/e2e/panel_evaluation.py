"""Dashboard panels evaluated as Grafana would: each expression with its variables at
"All", and at one value the variable lists, against a live Prometheus."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from taskcore.testing import wait_for
from taskcore.testing.wait import Timeout

from tests.e2e.prometheus_harness import PrometheusServer, Series, finite
from tests.integration.promql_exprs import PromQLExpr, dashboard_exprs

VARIABLE_SOURCE = ": variable "


@dataclass
class Evaluation:
    """One panel expression, evaluated at "All" and, if it has variables, at a value."""

    expr: PromQLExpr
    variables: set[str]  # the dashboard variables it uses
    at_all: list[Series]
    at_value: dict[str, str] = field(default_factory=dict)
    at_value_series: list[Series] = field(default_factory=list)

    def has_data(self) -> bool:
        """A finite value at "All", and at a value of each variable if it has any."""
        at_all = any(finite(s) for s in self.at_all)
        return at_all and (not self.variables or any(finite(s) for s in self.at_value_series))


def panel_exprs() -> list[PromQLExpr]:
    return [e for e in dashboard_exprs() if VARIABLE_SOURCE not in e.source]


def variable_values(prometheus: PrometheusServer) -> dict[str, list[str]]:
    """Each dashboard variable's choices, as Grafana's label_values() would list them."""
    values = {}
    for e in dashboard_exprs():
        if VARIABLE_SOURCE in e.source:
            name = e.source.rsplit(" ", 1)[1]
            values[name] = prometheus.label_values(name, e.expr)
    return values


def as_grafana_regex(value: str) -> str:
    """A value as Grafana writes it into a ``=~"..."`` matcher: regex-escaped, then
    escaped again for the PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


def evaluate(
    prometheus: PrometheusServer, e: PromQLExpr, values: Mapping[str, list[str]]
) -> Evaluation:
    variables = {name for name in values if f"${name}" in e.expr}
    evaluation = Evaluation(e, variables, prometheus.query(e.for_prometheus()))
    # One variable at a time (the others at "All"): the first value that shows data.
    for name in sorted(variables):
        for value in values[name]:
            series = prometheus.query(e.for_prometheus({name: as_grafana_regex(value)}))
            if any(finite(s) for s in series):
                evaluation.at_value, evaluation.at_value_series = {name: value}, series
                return evaluation
    return evaluation


def evaluate_panels(
    prometheus: PrometheusServer,
    values: Mapping[str, list[str]],
    may_stay_empty: Callable[[PromQLExpr], bool],
    timeout: float = 30,
) -> dict[str, Evaluation]:
    """Every panel expression by its source, evaluated again until each has data or
    ``may_stay_empty`` says it need not (or ``timeout`` passes: the caller then names
    the empty ones)."""
    exprs = panel_exprs()
    results: dict[str, Evaluation] = {}

    def all_drawn() -> bool:
        for e in exprs:
            if e.source not in results or not results[e.source].has_data():
                results[e.source] = evaluate(prometheus, e, values)
        return all(r.has_data() or may_stay_empty(r.expr) for r in results.values())

    with contextlib.suppress(Timeout):
        wait_for(all_drawn, timeout=timeout, interval=1, message="every panel drawn")
    return results
