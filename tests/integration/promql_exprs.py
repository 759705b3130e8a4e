"""The PromQL the deployment ships, and a Prometheus config that scrapes local processes.

Dashboards (deploy/grafana/dashboards/*.json) and alert rules
(deploy/prometheus/alerts.yml) are only as good as their expressions. This module reads
every expression out of them, so tests can check them statically (metric names exist;
test_deploy_config.py) and live (each one evaluated against a real Prometheus that
scrapes real services). Usage::

    for e in all_exprs():
        e.source             # "overview.json: Queue wait [B]", "alerts.yml: TaskcoreQueueStalled"
        e.expr               # as written, Grafana variables included
        e.for_prometheus()   # with $__rate_interval, $task_type... replaced: plain PromQL
        metric_names(e.expr) # {"taskcore_task_queue_wait_seconds_bucket"}

    config = prometheus_config_for_targets({"taskcore-api": "127.0.0.1:8000", ...})
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"

# Grafana's interval variables, replaced by values that suit a short test scrape (5 s).
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*\w+\s*\)\s*$", re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*(?!\w)")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan", "atan2"}
)  # fmt: skip


@dataclass(frozen=True)
class PromQLExpr:
    """One expression and where it lives (file, panel or rule, query letter)."""

    source: str
    expr: str

    def for_prometheus(self, variables: Mapping[str, str] | None = None) -> str:
        """The expression with Grafana's variables replaced, ready for Prometheus.

        Interval variables get GRAFANA_INTERVALS; template variables (``$task_type``,
        ``$provider``), which our dashboards only use inside ``=~"..."``, get ``.*``
        (Grafana's "All") unless ``variables`` says otherwise.
        """
        values = {**GRAFANA_INTERVALS, **(variables or {})}
        return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ".*"), self.expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels or keywords).

    A lexical reading, good for the PromQL we write: strings, label matchers, ranges and
    grouping clauses are dropped, and what is left that is not called like a function is
    a metric name.
    """
    text = PromQLExpr("", expr).for_prometheus()
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        called = re.match(r"\s*\(", text[match.end() :]) is not None
        if not called and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows nest their panels when collapsed


def dashboard_exprs(directory: Path = DASHBOARDS_DIR) -> list[PromQLExpr]:
    """Every panel target's ``expr`` and every query variable's metric selector."""
    found = []
    for path in sorted(directory.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    source = f"{path.name}: {panel['title']} [{target.get('refId', '?')}]"
                    found.append(PromQLExpr(source, target["expr"]))
        for variable in board.get("templating", {}).get("list", []):
            found.extend(_variable_exprs(path.name, variable))
    return found


def _variable_exprs(board: str, variable: dict[str, Any]) -> list[PromQLExpr]:
    if variable.get("type") != "query":
        return []
    query = variable["query"]
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    # label_values(<selector>, <label>) lists a label's values over a selector's series.
    match = _LABEL_VALUES.match(text)
    if match is None:
        raise ValueError(f"{board}: variable {variable['name']}: unsupported query {text!r}")
    return [PromQLExpr(f"{board}: variable {variable['name']}", match.group(1))]


def alert_exprs(rules: Path = ALERTS) -> list[PromQLExpr]:
    """Every rule's ``expr`` in a Prometheus rules file, alerting and recording alike."""
    document = yaml.safe_load(rules.read_text())
    return [
        PromQLExpr(f"{rules.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in document["groups"]
        for rule in group["rules"]
    ]


def all_exprs() -> list[PromQLExpr]:
    return dashboard_exprs() + alert_exprs()


def prometheus_config_for_targets(
    targets: Mapping[str, str], rules: Path = ALERTS, scrape_interval: str = "5s"
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job scraping a given address instead.

    ``targets`` maps a job name (``taskcore-api``, ``rabbitmq``...) to ``host:port``; jobs
    not named are dropped, and naming a job the file lacks is an error. Paths, metrics
    paths and rules stay as deployed, so what the test scrapes is what production scrapes.
    Write the result with ``yaml.safe_dump`` and start ``prometheus --config.file=...``.
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    if unknown:
        raise ValueError(f"No such scrape job in {PROMETHEUS_CONFIG.name}: {sorted(unknown)}")
    scrape_configs = []
    for name, address in targets.items():
        job = {k: v for k, v in jobs[name].items() if not k.endswith("_sd_configs")}
        job["static_configs"] = [{"targets": [address]}]
        scrape_configs.append(job)
    config["global"] = {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    config["rule_files"] = [str(rules)]
    config["scrape_configs"] = scrape_configs
    return config
