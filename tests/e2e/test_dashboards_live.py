"""Every dashboard panel and alert rule, evaluated by a real Prometheus scraping the four
services (and RabbitMQ's own exporter) while they do real work.

One scenario per module (the ``observed`` fixture), then checks on what it recorded:

1. A ``prometheus`` (Debian package) scrapes the stack every second, with
   deploy/prometheus/alerts.yml loaded.
2. Failures are injected and the alerts they must set off are awaited, each both as its
   expression's result and as the rule engine's ``ALERTS`` series (pending or firing):

   =============================  =====================================================
   alert                          checked how
   =============================  =====================================================
   TaskcoreServiceDown            executor stopped
   TaskcoreQueueWithoutConsumers  executor stopped, tasks waiting in tasks.paid.queue
   TaskcoreQueueStalled           the same, nothing acked on that queue yet
   TaskcoreBacklogGrowing         1001 messages on tasks.free.queue, no consumer
   TaskcoreOutboxResending        aggregator stopped: nothing folds, the relay resends
   TaskcoreDeadLettersRising      five non-retryable diag.fail tasks at once
   TaskcoreMalformedMessages      junk published straight to tasks.paid.queue
   TaskcoreServiceAbsent          the event-bridge job left with no target (reload)
   TaskcoreQueueWaitHigh,         thresholds of minutes or an hour: alerts_test.yml
   TaskcoreParentStuck,           (promtool test rules) shows when they fire; live, the
   TaskcoreAggregatorLagging,     quantity each compares must return data
   TaskcoreSpendRateSpike,
   TaskcoreProviderBenched
   =============================  =====================================================

   After recovery, ServiceDown, ServiceAbsent and QueueWithoutConsumers are quiet again.
3. A workload gives every panel data, the failure panels from failures: retries (a
   flaky diag.fail), dead letters (non-retryable ones), malformed messages (the junk),
   duplicate deliveries (a task cancelled while queued), rejected submissions (an
   unknown type), cancellations (a running diag.sleep), SSE clients (a stream on it),
   provider fallbacks (generate_summary whose first provider is down), budget refusals
   (a generate_summary by bob, whose budget allows no call), outbox re-sends
   (the stopped aggregator). Each panel expression must then return a finite value,
   with Grafana's variables at "All" and at one value of the variable that exists, and
   every metric it names must be scraped.
4. ``promtool check metrics`` passes on each service's /metrics.

A panel whose metric no service exports yet (PENDING) is reported as an expected
failure, with who must export it. Panels reading ``rabbitmq_*`` need the broker's
``rabbitmq_prometheus`` plugin: the test enables it on the local broker, or skips those
panels and alerts, saying why.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import yaml
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack
from taskcore.testing.wait import Timeout

from tests.e2e.dashboard_scenario import Scenario, alert_expr
from tests.e2e.panel_evaluation import Evaluation, evaluate_panels, panel_exprs, variable_values
from tests.e2e.prometheus_harness import (
    RABBITMQ_PROMETHEUS_PORT,
    PrometheusServer,
    Series,
    ensure_rabbitmq_exporter,
    finite,
    missing_tools,
    promtool_check_metrics,
)
from tests.integration.promql_exprs import (
    ALERTS,
    alert_exprs,
    dashboard_exprs,
    metric_names,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Read by tests/e2e/conftest.py's module_stack. Port 9 (discard) has no listener here, so
# every call to "upstream" is refused at once and the router falls back to "offline".
STACK_ENV = {
    "TASKCORE_PROVIDERS": json.dumps({
        "providers": {
            "upstream": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                         "max_concurrency": 4, "timeout_seconds": 5},
            "offline": {"kind": "offline", "max_concurrency": 8, "rpm": 600, "tpm": 100000},
        },
        "tiers": {"paid": ["upstream", "offline"], "free": ["offline"]},
    }),
    # bob's LLM calls are all refused (the budget panels), his other tasks are not.
    "TASKCORE_BUDGETS": json.dumps({"users": {"bob": {"daily_tokens": 10}}}),
}  # fmt: skip

# Metrics that dashboards read but no service updates yet: their panels stay empty, and
# are reported as expected failures until the named service exports them. "HTTP 5xx by
# route" and "Broker reconnects" will still draw only under failure then: the scenario
# must cause one (`rabbitmqctl close_all_connections -p <vhost> <why>` for reconnects).
# Metrics a panel reads that no scenario step produces yet (none today: the scenario
# injects a failed parent and a broker hiccup for the failure-only panels).
PENDING: dict[str, str] = {}
SERVICES = ("api", "executor", "aggregator", "event-bridge")
INJECTED = (
    "TaskcoreServiceDown", "TaskcoreServiceAbsent", "TaskcoreQueueWithoutConsumers",
    "TaskcoreQueueStalled", "TaskcoreBacklogGrowing", "TaskcoreOutboxResending",
    "TaskcoreDeadLettersRising", "TaskcoreMalformedMessages",
)  # fmt: skip
THRESHOLD_ONLY = (
    "TaskcoreQueueWaitHigh", "TaskcoreParentStuck", "TaskcoreAggregatorLagging",
    "TaskcoreSpendRateSpike", "TaskcoreProviderBenched", "TaskcoreUnroutablePublishes",
)  # fmt: skip
# Values of the dashboards' variables the workload is sure to produce.
EXPECTED_VALUES = {"task_type": {"diag.noop", "diag.fail", "generate_summary"},
                   "provider": {"offline", "upstream"}}  # fmt: skip


@dataclass
class Observations:
    rabbitmq: str | None  # why RabbitMQ's exporter is not scraped, or None
    panels: dict[str, Evaluation]
    variable_values: dict[str, list[str]]
    scraped: set[str]  # the metric names (of those the deployment reads) Prometheus has
    fired: dict[str, list[Series]]
    measured: dict[str, list[Series]]  # threshold alerts: the quantity they compare
    quiet: dict[str, list[Series]]  # alerts after recovery: what still came back
    rule_health: dict[str, str]  # each alert's last evaluation by the rule engine
    metrics_text: dict[str, str]


@pytest.fixture(scope="module")
def rabbitmq_exporter() -> str | None:
    """Skips without Prometheus (before any service starts); enables RabbitMQ's exporter
    if it can, else says why not."""
    if missing := missing_tools():
        pytest.skip(f"not installed: {', '.join(missing)} (Debian: apt-get install prometheus)")
    return ensure_rabbitmq_exporter()


@pytest.fixture(scope="module")
async def observed(
    rabbitmq_exporter: str | None, module_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observations]:
    """The whole scenario, once per module: the tests below check what it recorded."""
    rabbitmq = rabbitmq_exporter
    targets = _targets(module_stack, with_rabbitmq=rabbitmq is None)
    prometheus = PrometheusServer.start(targets, tmp_path_factory.mktemp("prometheus"))
    try:
        prometheus.wait_for_targets_up()
        url = module_stack.env["RABBITMQ_URL"]
        vhost = unquote(urlsplit(url).path.lstrip("/"))
        scenario = Scenario(module_stack, prometheus, url, vhost, rabbitmq is None)
        await scenario.stall_consumers()
        scenario.run_workload()
        values = variable_values(prometheus)
        panels = evaluate_panels(prometheus, values, lambda e: bool(_pending(e.expr)))
        scraped = {n for n in _names_read() if prometheus.query(f'count({{__name__="{n}"}})')}
        measured = {a: prometheus.query(_measured(alert_expr(a))) for a in THRESHOLD_ONLY}
        metrics_text = {s: _metrics(module_stack, s) for s in SERVICES}
        quiet = _quiet_after_recovery(prometheus, vhost)
        rule_health = prometheus.rule_health()
        scenario.take_a_job_away(targets, "taskcore-event-bridge")  # last: it stays away
        yield Observations(
            rabbitmq, panels, values, scraped, scenario.seen.fired, measured, quiet,
            rule_health, metrics_text,
        )  # fmt: skip
    finally:
        prometheus.stop()


def _targets(stack: Stack, with_rabbitmq: bool) -> dict[str, str]:
    targets = {f"taskcore-{s}": f"127.0.0.1:{stack.processes[s][0].port}" for s in SERVICES}
    if with_rabbitmq:
        targets["rabbitmq"] = f"127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}"
    return targets


def _names_read() -> set[str]:
    return set().union(*(metric_names(e.expr) for e in dashboard_exprs() + alert_exprs()))


def _pending(expr: str) -> set[str]:
    return metric_names(expr) & set(PENDING)


def _measured(expr: str) -> str:
    """An alert's expression without its final comparison: what the threshold is about."""
    stripped = re.sub(r"\s*(>=|<=|>|<|==|!=)\s*[\d.e+]+\s*$", "", expr.strip())
    assert stripped != expr.strip(), f"no trailing threshold in {expr!r}"
    return stripped


def _metrics(stack: Stack, service: str) -> str:
    response = httpx.get(f"{stack.processes[service][0].url}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def _quiet_after_recovery(prometheus: PrometheusServer, vhost: str) -> dict[str, list[Series]]:
    """The alerts that must clear once the services are back, and what they still return
    (for this stack) at the deadline: nothing, if all is well."""
    ours = {
        "TaskcoreServiceDown": {},
        "TaskcoreServiceAbsent": {},
        "TaskcoreQueueWithoutConsumers": {"vhost": vhost},
    }
    quiet: dict[str, list[Series]] = {}

    def cleared() -> bool:
        for alert, labels in ours.items():
            series = prometheus.query(alert_expr(alert))
            quiet[alert] = [s for s in series if labels.items() <= s["metric"].items()]
        return not any(quiet.values())

    with contextlib.suppress(Timeout):
        wait_for(cleared, timeout=20, interval=0.5, message="alerts cleared")
    return quiet


# ---- checks --------------------------------------------------------------------------

PANEL_SOURCES = [e.source for e in panel_exprs()]


def _skip_without_rabbitmq(observed: Observations, names: set[str]) -> None:
    if observed.rabbitmq and any(n.startswith("rabbitmq_") for n in names):
        pytest.skip(f"needs RabbitMQ's exporter: {observed.rabbitmq}")


@pytest.mark.parametrize("source", PANEL_SOURCES)
def test_panel_returns_data(observed: Observations, source: str) -> None:
    evaluation = observed.panels[source]
    names = metric_names(evaluation.expr.expr)
    _skip_without_rabbitmq(observed, names)
    pending = _pending(evaluation.expr.expr) - observed.scraped
    if not evaluation.has_data() and pending:
        pytest.xfail(
            "no series in this scenario: " + ", ".join(f"{m} ({PENDING[m]})" for m in pending)
        )
    assert evaluation.has_data(), (
        f"{source}: no finite value\n  {evaluation.expr.for_prometheus()}\n"
        f"  at All: {evaluation.at_all}\n  at {evaluation.variables}: none of "
        f"{ {v: observed.variable_values.get(v) for v in evaluation.variables} } shows data"
    )
    # "or vector(0)" and the like draw a line even for a metric that does not exist.
    assert names - observed.scraped - set(PENDING) == set()


def test_dashboard_variables_list_what_ran(observed: Observations) -> None:
    for name, expected in EXPECTED_VALUES.items():
        assert expected <= set(observed.variable_values[name]), name


@pytest.mark.parametrize("alert", INJECTED)
def test_alert_goes_off_under_its_injected_failure(observed: Observations, alert: str) -> None:
    _skip_without_rabbitmq(observed, metric_names(alert_expr(alert)))
    assert observed.fired.get(alert), f"{alert} never went pending or firing"
    assert {s["metric"]["alertstate"] for s in observed.fired[alert]} <= {"pending", "firing"}


@pytest.mark.parametrize("alert", THRESHOLD_ONLY)
def test_threshold_alert_is_unit_tested_and_measures_live_data(
    observed: Observations, alert: str
) -> None:
    tests = yaml.safe_load((ALERTS.parent / "alerts_test.yml").read_text())["tests"]
    firing = [
        case for test in tests for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert and case.get("exp_alerts")
    ]  # fmt: skip
    assert firing, f"alerts_test.yml has no case where {alert} fires"
    assert any(finite(s) for s in observed.measured[alert]), observed.measured[alert]


def test_the_rule_engine_evaluates_every_alert_without_error(observed: Observations) -> None:
    names = {e.source.split(": ", 1)[1] for e in alert_exprs()}
    assert observed.rule_health == dict.fromkeys(names, "ok")


def test_every_alert_is_checked_one_way_or_the_other() -> None:
    names = {e.source.split(": ", 1)[1] for e in alert_exprs()}
    assert names == set(INJECTED) | set(THRESHOLD_ONLY)


def test_the_alert_unit_tests_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_alerts_read_is_scraped(observed: Observations) -> None:
    names = set().union(*(metric_names(e.expr) for e in alert_exprs()))
    if observed.rabbitmq:
        names = {n for n in names if not n.startswith("rabbitmq_")}
    assert names - observed.scraped - set(PENDING) == set()


def test_alerts_clear_once_the_services_are_back(observed: Observations) -> None:
    quiet = dict(observed.quiet)
    if observed.rabbitmq:
        quiet.pop("TaskcoreQueueWithoutConsumers")
    assert set(quiet) >= {"TaskcoreServiceDown", "TaskcoreServiceAbsent"}
    assert not any(quiet.values()), quiet


@pytest.mark.parametrize("service", SERVICES)
def test_promtool_accepts_the_service_metrics(observed: Observations, service: str) -> None:
    text = observed.metrics_text[service]
    assert "# TYPE taskcore_" in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), "promtool has remarks"
