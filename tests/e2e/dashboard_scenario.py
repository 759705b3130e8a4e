"""What the live dashboard test does to the stack: the failures it injects (each alert
that can be seen within seconds goes off under one) and the workload that gives every
panel something to draw. test_dashboards_live.py says which alert is checked how.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
from taskcore.messages.topology import task_queue_name
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack

from tests.e2e.conftest import OTHER_KEY, USER_KEY
from tests.e2e.prometheus_harness import PrometheusServer, Series
from tests.integration.promql_exprs import alert_exprs

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS"}
# TaskcoreBacklogGrowing fires above 1000 ready messages.
BACKLOG = 1001


def alert_expr(name: str) -> str:
    (expr,) = [e.expr for e in alert_exprs() if e.source.endswith(f": {name}")]
    return expr


@dataclass
class Api:
    """The few calls the scenario makes, as alice (paid) unless told otherwise."""

    url: str

    def submit(
        self, task_type: str, parameters: Mapping[str, Any] | None = None, key: str = USER_KEY
    ) -> str:
        response = httpx.post(
            f"{self.url}/v1/tasks", headers=_auth(key), timeout=10,
            json={"task_type": task_type, "parameters": dict(parameters or {})},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def reject(self) -> None:
        response = httpx.post(
            f"{self.url}/v1/tasks", headers=_auth(USER_KEY), json={"task_type": "no.such"},
            timeout=10,
        )  # fmt: skip
        assert response.status_code == 422, response.text

    def cancel(self, task_id: str) -> None:
        response = httpx.post(
            f"{self.url}/v1/tasks/{task_id}/cancel", headers=_auth(USER_KEY), timeout=10
        )
        assert response.status_code in (200, 202), response.text

    def status(self, task_id: str, key: str = USER_KEY) -> str:
        response = httpx.get(f"{self.url}/v1/tasks/{task_id}", headers=_auth(key), timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 20) -> None:
        def reached() -> str | None:
            status = self.status(task_id)
            return status if status in statuses else None

        wait_for(reached, timeout=timeout, interval=0.1, message=f"{task_id} {statuses}")

    def wait_terminal(self, ids: Mapping[str, str], timeout: float = 30) -> None:
        """``ids`` maps each task id to the key of its owner."""

        def open_ones() -> list[str]:
            return [i for i, key in ids.items() if self.status(i, key) not in TERMINAL]

        wait_for(lambda: not open_ones(), timeout=timeout, interval=0.2, message="all terminal")

    @contextmanager
    def streaming(self, task_id: str) -> Iterator[None]:
        """An SSE client reading the task's stream (on a thread: a stream nobody reads is
        closed) from before the block until the stream ends, which the block must cause."""
        url = f"{self.url}/v1/tasks/{task_id}/stream"
        first = threading.Event()
        with httpx.stream("GET", url, headers=_auth(USER_KEY), timeout=30) as response:
            assert response.status_code == 200, response.read()

            def read() -> None:
                for _ in response.iter_lines():
                    first.set()

            reader = threading.Thread(target=read, name=f"sse-{task_id}", daemon=True)
            reader.start()
            assert first.wait(10), "the stream sent nothing"
            yield
            reader.join(20)
        assert not reader.is_alive(), "the stream did not end with its task"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Injected:
    """Alerts seen going off, as the rule engine reported them (``ALERTS`` series)."""

    fired: dict[str, list[Series]] = field(default_factory=dict)

    def expect(
        self, prometheus: PrometheusServer, alert: str, labels: Mapping[str, str], timeout: float
    ) -> None:
        """Wait until the alert's expression returns a series with ``labels``, and the
        loaded rule has gone pending or firing on it."""
        prometheus.wait_for_series(alert_expr(alert), timeout, where=labels)
        self.fired[alert] = prometheus.wait_for_series(
            f'ALERTS{{alertname="{alert}"}}', 10, where=labels
        )


async def publish_raw(rabbitmq_url: str, queue: str, bodies: list[bytes]) -> None:
    """Messages straight onto a queue, as a broken producer would send them."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)


async def purge(rabbitmq_url: str, queue: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        await declared.purge()


@dataclass
class Scenario:
    """The stack, the Prometheus watching it, and what has been seen and submitted."""

    stack: Stack
    prometheus: PrometheusServer
    rabbitmq_url: str
    vhost: str
    rabbitmq_scraped: bool  # whether RabbitMQ's own exporter is among the targets
    seen: Injected = field(default_factory=Injected)
    tasks: dict[str, str] = field(default_factory=dict)  # every task id, its owner's key

    @property
    def api(self) -> Api:
        return Api(self.stack.api.url)

    async def stall_consumers(self) -> None:
        """Stop the executor and the aggregator while work arrives, see the alerts go
        off, then start them again."""
        api, prometheus, seen = self.api, self.prometheus, self.seen
        executor, aggregator = (self.stack.processes[s][0] for s in ("executor", "aggregator"))
        executor.stop()
        aggregator.stop()
        seen.expect(prometheus, "TaskcoreServiceDown", {"job": "taskcore-executor"}, timeout=15)
        # Work for the stopped executor, a task cancelled while queued (it never runs, and
        # its message is dropped as a duplicate), and junk from a broken producer.
        self.tasks |= {api.submit("diag.noop"): USER_KEY for _ in range(3)}
        cancelled = api.submit("diag.noop")
        api.cancel(cancelled)
        self.tasks[cancelled] = USER_KEY
        paid, free = task_queue_name("paid"), task_queue_name("free")
        await publish_raw(self.rabbitmq_url, paid, [b"not a task message"])
        if self.rabbitmq_scraped:
            await self._see_queues_stall(paid, free)
        # Events nobody folds stay in the outbox, so the relay sends them again.
        seen.expect(prometheus, "TaskcoreOutboxResending", {}, timeout=20)
        aggregator.start(wait_ready=False)
        executor.start(wait_ready=False)
        aggregator.wait_ready()
        executor.wait_ready()

    async def _see_queues_stall(self, paid: str, free: str) -> None:
        await publish_raw(self.rabbitmq_url, free, [b"backlog"] * BACKLOG)
        # RabbitMQ refreshes its queue statistics every 5 s.
        for alert, queue in (
            ("TaskcoreQueueWithoutConsumers", paid),
            ("TaskcoreQueueStalled", paid),
            ("TaskcoreBacklogGrowing", free),
        ):
            where = {"vhost": self.vhost, "queue": queue}
            self.seen.expect(self.prometheus, alert, where, timeout=30)
        await purge(self.rabbitmq_url, free)  # the backlog was only there to be seen

    def run_workload(self) -> None:
        """Tasks of every kind the panels count, until all are terminal."""
        api, prometheus = self.api, self.prometheus
        self.tasks |= {api.submit("diag.noop"): USER_KEY for _ in range(3)}
        self.tasks |= {api.submit("diag.noop", key=OTHER_KEY): OTHER_KEY for _ in range(2)}
        self.tasks[api.submit("diag.fail", {"times": 1})] = USER_KEY  # a retry, then done
        self.tasks[api.submit("diag.fanout", {"count": 3})] = USER_KEY  # parent, children
        # alice is paid, whose providers are "upstream" (down) and then "offline".
        self.tasks |= {api.submit("generate_summary", {"text": _TEXT}): USER_KEY for _ in range(2)}
        # bob's budget allows no call: refused, the task dead-letters (BudgetExceeded).
        self.tasks[api.submit("generate_summary", {"text": _TEXT}, key=OTHER_KEY)] = OTHER_KEY
        api.reject()
        self._dead_letters()
        # A task running while an SSE client follows it, then cancelled mid-run.
        sleeper = api.submit("diag.sleep", {"seconds": 30})
        self.tasks[sleeper] = USER_KEY
        api.wait_status(sleeper, {"RUNNING"})
        with api.streaming(sleeper):
            prometheus.wait_for_series("sum(taskcore_sse_clients) > 0", 15)
            prometheus.wait_for_series("sum(taskcore_tasks_in_flight) > 0", 15)
            api.cancel(sleeper)  # which ends the stream
        # A fail-fast parent whose children dead-letter ends FAILED (the failed panels).
        failing = {"count": 2, "child_type": "diag.fail",
                   "child_parameters": {"times": 5, "retryable": False}}  # fmt: skip
        self.tasks[api.submit("diag.fanout_fail_fast", failing)] = USER_KEY
        api.wait_terminal(self.tasks)
        self._broker_hiccup()
        self._second_wave()
        # The junk published while the executor was away has been read by now.
        where = {"queue": task_queue_name("paid")}
        self.seen.expect(prometheus, "TaskcoreMalformedMessages", where, timeout=20)

    def _broker_hiccup(self) -> None:
        """RabbitMQ drops every connection of the stack's vhost: each service reconnects
        by itself (the reconnects panel), and the second wave shows work flows again."""
        subprocess.run(
            ["rabbitmqctl", "-q", "close_all_connections", "-p", self.vhost, "dashboard test"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.prometheus.wait_for_series("sum(taskcore_broker_reconnects_total) > 0", 60)

    def _second_wave(self) -> None:
        # A histogram series is born at its first observation, and rate() sees nothing
        # until it grows between scrapes: a series born with all its observations draws a
        # NaN quantile. Once Prometheus has the first wave, a second one makes them grow.
        self.prometheus.wait_for_fresh_scrapes()
        api = self.api
        wave = {api.submit("diag.noop", key=OTHER_KEY): OTHER_KEY}
        wave[api.submit("diag.noop")] = USER_KEY
        wave[api.submit("diag.fail", {"times": 1})] = USER_KEY
        wave[api.submit("generate_summary", {"text": _TEXT})] = USER_KEY
        self.tasks |= wave
        api.wait_terminal(wave)
        self.prometheus.wait_for_fresh_scrapes()

    def _dead_letters(self) -> None:
        # Five at once: TaskcoreDeadLettersRising must count what a series held before its
        # first scrape, which increase() alone does not.
        burst = [self.api.submit("diag.fail", {"times": 5, "retryable": False}) for _ in range(5)]
        self.tasks |= dict.fromkeys(burst, USER_KEY)
        for task_id in burst:
            self.api.wait_status(task_id, {"DEAD_LETTER"})
        where = {"task_type": "diag.fail", "reason": "non_retryable"}
        self.seen.expect(self.prometheus, "TaskcoreDeadLettersRising", where, timeout=30)

    def take_a_job_away(self, targets: Mapping[str, str], job: str) -> None:
        """Leave ``job`` with no target at all: TaskcoreServiceAbsent's case."""
        self.prometheus.reload(targets, emptied={job})
        self.seen.expect(self.prometheus, "TaskcoreServiceAbsent", {"job": job}, timeout=20)


_TEXT = (
    "Prometheus scrapes every service once a second while the test runs. The dashboards "
    "read what it stored. Each panel must show data, or the test says why it cannot."
)
