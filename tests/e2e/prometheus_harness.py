"""A real Prometheus for tests: started on a free port, scraping local processes, queried
over its HTTP API, stopped at the end. Also RabbitMQ's own exporter and ``promtool``.

    with PrometheusServer.start(targets, workdir) as prometheus:
        prometheus.wait_for_targets_up()
        prometheus.query('sum(rate(taskcore_tasks_submitted_total[1m]))')  # list of series

The binaries come from Debian's ``prometheus`` package (scripts/ensure-promtool installs
it in CI); ``missing_tools()`` says what is absent so a test can skip with that reason.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from taskcore.standin import free_port
from taskcore.testing import wait_for

from tests.integration.promql_exprs import prometheus_config_for_targets

RABBITMQ_PROMETHEUS_PORT = 15692
RABBITMQ_PLUGIN = "rabbitmq_prometheus"

Series = dict[str, Any]  # one element of a query's "result": {"metric": {...}, "value": [...]}


def missing_tools() -> list[str]:
    return [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]


def rabbitmq_exporter_answers() -> bool:
    try:
        url = f"http://127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}/metrics/per-object"
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_rabbitmq_exporter() -> str | None:
    """Enable the local broker's Prometheus plugin (idempotent, no restart needed).

    Returns None once it answers on 15692, else why it cannot. Enabling it needs
    ``rabbitmq-plugins`` and the rights to run it (root, or the rabbitmq user).
    """
    if rabbitmq_exporter_answers():
        return None
    if shutil.which("rabbitmq-plugins") is None:
        return f"{RABBITMQ_PLUGIN} is off and rabbitmq-plugins is not installed"
    try:
        result = subprocess.run(
            ["rabbitmq-plugins", "enable", RABBITMQ_PLUGIN],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"rabbitmq-plugins enable {RABBITMQ_PLUGIN} did not finish within 60 s"
    if result.returncode != 0:
        return f"rabbitmq-plugins enable {RABBITMQ_PLUGIN} failed: {result.stderr.strip()}"
    try:
        wait_for(rabbitmq_exporter_answers, timeout=30, interval=0.5, message="port 15692")
    except AssertionError:
        return f"{RABBITMQ_PLUGIN} was enabled but nothing answers on {RABBITMQ_PROMETHEUS_PORT}"
    return None


def promtool_check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on a /metrics body: exit 0 and no output when clean."""
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


class PrometheusError(RuntimeError):
    pass


@dataclass
class PrometheusServer:
    """One ``prometheus`` process with its config and TSDB under ``workdir``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @classmethod
    def start(
        cls, targets: Mapping[str, str], workdir: Path, scrape_interval: str = "1s"
    ) -> PrometheusServer:
        """Scrape ``targets`` (job name to ``host:port``, as prometheus_config_for_targets
        takes them) every ``scrape_interval``, with deploy/prometheus/alerts.yml loaded."""
        server = cls(workdir)
        server.write_config(targets, scrape_interval)
        command = [
            "prometheus",
            f"--config.file={server.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{server.port}",
            "--web.enable-lifecycle",  # POST /-/reload, to take a job away mid-test
            "--storage.tsdb.retention.time=1h",
        ]
        with server.log_path.open("ab") as log:
            server.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(server._ready, timeout=30, interval=0.2, message="prometheus ready")
        except BaseException:
            server.stop()
            raise
        return server

    def write_config(
        self,
        targets: Mapping[str, str],
        scrape_interval: str = "1s",
        emptied: Set[str] = frozenset(),
    ) -> None:
        """The config for ``targets``; the jobs in ``emptied`` stay, with no target left."""
        config = prometheus_config_for_targets(targets, scrape_interval=scrape_interval)
        for job in config["scrape_configs"]:
            if job["job_name"] in emptied:
                job["static_configs"] = [{"targets": []}]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))

    def reload(
        self,
        targets: Mapping[str, str],
        scrape_interval: str = "1s",
        emptied: Set[str] = frozenset(),
    ) -> None:
        """Rewrite the config and have Prometheus load it. A job taken away whole would
        keep its last samples for the 5-minute lookback; a job whose targets are all gone
        gets staleness markers within seconds, which is what a lost replica looks like."""
        self.write_config(targets, scrape_interval, emptied)
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise PrometheusError(f"prometheus exited: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- the HTTP API ------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str | list[str]]) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[Series]:
        """An instant query's series (a scalar result counts as one series)."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[Series] = data["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        values: list[str] = self._get(f"/api/v1/label/{label}/values", {"match[]": [selector]})
        return values

    def rule_health(self) -> dict[str, str]:
        """Each loaded rule's name and its last evaluation's health ("ok", or the error)."""
        groups = self._get("/api/v1/rules", {})["groups"]
        return {
            rule["name"]: rule["health"] if rule["health"] == "ok" else rule.get("lastError", "")
            for group in groups
            for rule in group["rules"]
        }

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets", {})["activeTargets"]
        return active

    def wait_for_targets_up(self, timeout: float = 20) -> None:
        def all_up() -> bool:
            targets = self.targets()
            return bool(targets) and all(t["health"] == "up" for t in targets)

        wait_for(all_up, timeout=timeout, interval=0.3, message="every scrape target up")

    def wait_for_fresh_scrapes(self, timeout: float = 15) -> None:
        """Wait until every target has been scraped again since this call."""
        since = time.time()

        def fresh() -> bool:
            oldest = self.query("min(timestamp(up))")
            return bool(oldest) and float(oldest[0]["value"][1]) > since

        wait_for(fresh, timeout=timeout, interval=0.3, message="a scrape of every target")

    def wait_for_series(
        self, expr: str, timeout: float, *, where: Mapping[str, str] | None = None
    ) -> list[Series]:
        """Wait until ``expr`` returns a series (with the labels in ``where``, if given)."""

        def found() -> list[Series]:
            return [s for s in self.query(expr) if _has_labels(s, where or {})]

        return wait_for(found, timeout=timeout, interval=0.5, message=f"a series for {expr}")


def _has_labels(series: Series, labels: Mapping[str, str]) -> bool:
    return all(series["metric"].get(k) == v for k, v in labels.items())


def finite(series: Series) -> bool:
    """Whether a series' value is a number a panel can draw (not NaN or infinite)."""
    return math.isfinite(float(series["value"][1]))
