"""Write taskcore's Grafana dashboards as JSON into deploy/grafana/dashboards/.

The JSON is checked in (Grafana provisions it as is); this script is where it comes
from, so every panel shares one layout, one datasource and one way of writing rates and
quantiles. After changing a panel here, run:

    python deploy/grafana/build_dashboards.py           # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check   # exit 1 if they are out of date

Metric names come from ``taskcore.metrics`` and RabbitMQ's ``rabbitmq_prometheus`` plugin
(scraped from /metrics/per-object); tests/integration/test_deploy_config.py checks every
expression against both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# A script beside its helper module, not a package: make the helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grafana_json import (
    Json,
    Panel,
    Query,
    Row,
    dashboard,
    percentiles,
    quantile,
    rate,
    variable,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
# The queues a service consumes; the retry delay queues and the DLQ have no consumer.
CONSUMED_QUEUES = 'queue=~"tasks\\\\.(paid|free|aggregator|bridge)\\\\.queue"'
TASK_QUEUES = 'queue=~"tasks\\\\..+"'
BY_TASK_TYPE = 'task_type=~"$task_type"'
BY_PROVIDER = 'provider=~"$provider"'


def _legend(labels: str) -> str:
    return " ".join(f"{{{{{label.strip()}}}}}" for label in labels.split(","))


def rate_by(
    title: str, counter: str, by: str, selector: str = "", *,
    unit: str = "short", width: int = 8, description: str = "",
) -> Panel:  # fmt: skip
    """Per-second rate of a counter, one series per value of ``by``."""
    query = Query(rate(counter, by, selector), _legend(by))
    return Panel(title, (query,), unit=unit, width=width, description=description)


def sum_by(title: str, gauge: str, by: str, selector: str = "", *, width: int = 8) -> Panel:
    """A gauge summed over replicas, one series per value of ``by``."""
    query = Query(f"sum by ({by}) ({gauge}{{{selector}}})", _legend(by))
    return Panel(title, (query,), width=width)


def p95_by(title: str, histogram: str, by: str, selector: str = "") -> Panel:
    return Panel(title, (Query(quantile(0.95, histogram, by, selector), _legend(by)),), unit="s")


def stat(title: str, expr: str, unit: str = "short", description: str = "") -> Panel:
    return Panel(title, (Query(expr),), unit=unit, kind="stat", width=4, description=description)


def _failure_ratio() -> str:
    # A leaf task that fails for good is dead-lettered (only parents end FAILED), so both
    # count. A counter is absent until its first increment: "or vector(0)" keeps the ratio
    # at 0 instead of "No data" while nothing has failed.
    failed, dead, completed = (
        f"({rate(f'taskcore_tasks_{outcome}_total')} or vector(0))"
        for outcome in ("failed", "dead_lettered", "completed")
    )
    return f"({failed} + {dead}) / clamp_min({failed} + {dead} + {completed}, 1e-9)"


def _now() -> Row:
    return Row("Now", [
        stat("Tasks in flight", "sum(taskcore_tasks_in_flight)"),
        stat("SSE clients", "sum(taskcore_sse_clients)"),
        stat("Ready to consume", f"sum(rabbitmq_queue_messages_ready{{{CONSUMED_QUEUES}}})"),
        stat("Dead-letter queue", 'sum(rabbitmq_queue_messages{queue="tasks.dlq.queue"})'),
        stat("Oldest waiting parent", "max(taskcore_parents_awaiting_children_oldest_seconds)",
             unit="s", description="How long the longest-waiting parent has gone unchanged."),
        stat("Replicas up", 'sum(up{job=~"taskcore-.+"})'),
    ])  # fmt: skip


def _throughput() -> Row:
    outcomes = ("completed", "failed", "cancelled", "dead_lettered")
    return Row("Throughput", [
        rate_by("Submitted", "taskcore_tasks_submitted_total", "tier", unit="reqps"),
        Panel("Outcomes", tuple(
            Query(rate(f"taskcore_tasks_{outcome}_total"), outcome) for outcome in outcomes
        ), unit="reqps"),
        rate_by("Submissions rejected", "taskcore_submissions_rejected_total", "reason",
                unit="reqps"),
    ])  # fmt: skip


def _latency() -> Row:
    return Row("Latency", [
        Panel("Submit to terminal", percentiles("taskcore_task_submit_to_terminal_seconds"),
              unit="s"),
        Panel("Queue wait", percentiles("taskcore_task_queue_wait_seconds"), unit="s"),
        Panel("Execution (one attempt)", percentiles("taskcore_task_execution_seconds"), unit="s"),
        p95_by("HTTP p95 by route", "taskcore_http_request_duration_seconds", "route"),
        Panel("HTTP 5xx by route", (Query(
            rate("taskcore_http_request_duration_seconds_count", "route", 'status=~"5.."')
            # 0, not "No data", while nothing fails (the request counter itself exists)
            + " or sum(rate(taskcore_http_request_duration_seconds_count[$__rate_interval])) * 0",
            _legend("route")),), unit="reqps"),
    ])  # fmt: skip


def _failures() -> Row:
    return Row("Failures and retries", [
        Panel("Failure ratio", (Query(_failure_ratio(), "failed / finished"),),
              unit="percentunit", description="Failed or dead-lettered, of all that finished "
              "(dead letters include unreadable messages)."),
        rate_by("Retries by error class", "taskcore_tasks_retried_total", "error_class",
                unit="reqps"),
        rate_by("Dead letters by reason", "taskcore_tasks_dead_lettered_total", "reason",
                unit="reqps"),
        rate_by("Malformed messages", "taskcore_malformed_messages_total", "queue", unit="reqps"),
        rate_by("Duplicate deliveries dropped", "taskcore_duplicate_deliveries_total", "reason",
                unit="reqps"),
        rate_by("Broker reconnects", "taskcore_broker_reconnects_total", "service", unit="reqps"),
    ])  # fmt: skip


def _queues() -> Row:
    return Row("Queues (RabbitMQ)", [
        sum_by("Ready", "rabbitmq_queue_messages_ready", "queue", TASK_QUEUES),
        sum_by("Unacked", "rabbitmq_queue_messages_unacked", "queue", TASK_QUEUES),
        sum_by("Consumers", "rabbitmq_queue_consumers", "queue", CONSUMED_QUEUES),
        rate_by("Delivered", "rabbitmq_channel_messages_delivered_ack_total", "queue",
                TASK_QUEUES, unit="reqps", width=12),
        rate_by("Acked", "rabbitmq_channel_messages_acked_total", "queue", TASK_QUEUES,
                unit="reqps", width=12),
    ])  # fmt: skip


def _pipeline() -> Row:
    return Row("Pipeline", [
        Panel("Aggregator lag", percentiles("taskcore_aggregator_lag_seconds"), unit="s"),
        Panel("Events folded", (
            Query(rate("taskcore_events_folded_total", "type"), "{{type}}"),
            Query(rate("taskcore_events_duplicate_total"), "duplicates"),
        ), unit="reqps"),
        Panel("Fold batch size", percentiles("taskcore_fold_batch_size")),
        Panel("Bridge publish latency", percentiles("taskcore_bridge_publish_seconds"), unit="s"),
        rate_by("CloudEvents published", "taskcore_bridge_events_published_total", "type",
                unit="reqps"),
        Panel("Outbox re-sent", (Query(rate("taskcore_outbox_republished_total"), "re-sent"),),
              unit="reqps"),
        rate_by("AMQP publishes by exchange", "taskcore_amqp_messages_published_total",
                "exchange", unit="reqps", width=12),
        rate_by("MongoDB round trips by command", "taskcore_store_commands_total", "command",
                unit="reqps", width=12),
    ])  # fmt: skip


def overview() -> Json:
    rows = [_now(), _throughput(), _latency(), _failures(), _queues(), _pipeline()]
    return dashboard("taskcore-overview", "taskcore / Overview", rows, [])


def _task_types() -> Row:
    counters = ("submitted", "started", "completed", "failed", "cancelled")
    return Row("Task types ($task_type)", [
        *(rate_by(name.capitalize(), f"taskcore_tasks_{name}_total", "task_type", BY_TASK_TYPE,
                  unit="reqps") for name in counters),
        sum_by("In flight", "taskcore_tasks_in_flight", "task_type", BY_TASK_TYPE),
        p95_by("Queue wait p95", "taskcore_task_queue_wait_seconds", "task_type", BY_TASK_TYPE),
        p95_by("Execution p95 by outcome", "taskcore_task_execution_seconds",
               "task_type, outcome", BY_TASK_TYPE),
        p95_by("Submit to terminal p95 by status", "taskcore_task_submit_to_terminal_seconds",
               "task_type, status", BY_TASK_TYPE),
        rate_by("Retries", "taskcore_tasks_retried_total", "task_type, error_class",
                BY_TASK_TYPE, unit="reqps", width=12),
        rate_by("Dead letters", "taskcore_tasks_dead_lettered_total", "task_type, reason",
                BY_TASK_TYPE, unit="reqps", width=12),
    ])  # fmt: skip


def _providers() -> Row:
    return Row("Providers ($provider)", [
        sum_by("Concurrency slots in use", "taskcore_provider_concurrency_in_use", "provider",
               BY_PROVIDER, width=12),
        rate_by("Time waiting for rate limits", "taskcore_provider_rate_limit_wait_seconds_total",
                "provider", BY_PROVIDER, width=12,
                description="Seconds waited per second: 2 means two tasks waited all along."),
        rate_by("Fallbacks", "taskcore_provider_fallbacks_total", "from_provider, to_provider",
                'from_provider=~"$provider"', unit="reqps", width=12),
        rate_by("Tokens", "taskcore_provider_tokens_total", "provider, kind", BY_PROVIDER,
                width=12),
    ])  # fmt: skip


def task_types_and_providers() -> Json:
    variables = [
        variable("task_type", "Task type", "taskcore_tasks_submitted_total"),
        variable("provider", "Provider", "taskcore_provider_concurrency_in_use"),
    ]
    rows = [_task_types(), _providers()]
    return dashboard("taskcore-task-types", "taskcore / Task types and providers", rows, variables)


BY_TIER = 'tier=~"$tier"'
SPEND = f"taskcore_llm_cost_total{{{BY_TIER}}}"


def _spend_now() -> Row:
    return Row("Spend now (amounts in TASKCORE_CURRENCY)", [
        stat("Spent in the last 24 h", f"sum(increase({SPEND}[24h]))",
             description="What answered provider calls cost, from the executors' counters."),
        stat("Spent in the last hour", f"sum(increase({SPEND}[1h]))"),
        stat("Spend rate now vs usual",
             f"sum(rate({SPEND}[15m])) / clamp_min(sum(rate({SPEND}[1d] offset 15m))"
             " or vector(0), 0.0000667)",
             description="1 = as over the past day (at least 0.0000667/s); the "
             "TaskcoreSpendRateSpike alert fires above 3."),
        stat("Calls per second", f"sum(rate(taskcore_llm_calls_total{{{BY_TIER}}}[5m]))",
             unit="reqps"),
        stat("Budget refusals (1 h)", "sum(increase(taskcore_budget_refusals_total[1h]))",
             description="Calls and submissions refused because a user's budget was used up."),
        stat("Providers ready", "sum(min by (provider) (taskcore_provider_ready))",
             description="With a key, not benched after a 401/403, not cooling down."),
    ])  # fmt: skip


def _spend() -> Row:
    return Row("Spend ($tier)", [
        rate_by("Spend per second by tier", "taskcore_llm_cost_total", "tier", BY_TIER),
        rate_by("Spend per second by provider", "taskcore_llm_cost_total", "provider", BY_TIER),
        rate_by("Calls by provider and tier", "taskcore_llm_calls_total", "provider, tier",
                BY_TIER, unit="reqps"),
        rate_by("Tokens by provider", "taskcore_provider_tokens_total", "provider, kind",
                width=12),
        Panel("Spend, hour by hour", (Query(
            f"sum by (provider) (increase({SPEND}[1h]))", _legend("provider")),), width=12,
            description="What each provider cost over the hour before each point."),
    ])  # fmt: skip


def _budgets() -> Row:
    return Row("Budgets", [
        rate_by("Refusals by budget", "taskcore_budget_refusals_total", "budget, stage",
                unit="reqps", width=12,
                description="stage=call: a provider call not made (the attempt dead-letters "
                "with BudgetExceeded); stage=submission: a 429 budget_exceeded."),
        rate_by("Refusals by tier", "taskcore_budget_refusals_total", "tier", unit="reqps",
                width=12),
    ])  # fmt: skip


def _provider_health() -> Row:
    return Row("Provider health", [
        Panel("Ready (1) or not (0)", (Query(
            "min by (provider) (taskcore_provider_ready)", _legend("provider")),),
            description="0: no key, benched after refusing our key, or cooling down."),
        Panel("Benched after 401/403", (Query(
            "max by (provider) (taskcore_provider_benched)", _legend("provider")),)),
        Panel("Concurrency: limit and in use", (
            Query("max by (provider) (taskcore_provider_concurrency_limit)",
                  "{{provider}} limit"),
            Query("sum by (provider) (taskcore_provider_concurrency_in_use)",
                  "{{provider}} in use"),
        ), description="The limit halves after a 429 and recovers one slot at a time."),
        rate_by("Fallbacks", "taskcore_provider_fallbacks_total", "from_provider, to_provider",
                unit="reqps", width=12),
        rate_by("Time waiting for rate limits", "taskcore_provider_rate_limit_wait_seconds_total",
                "provider", width=12),
    ])  # fmt: skip


def spend() -> Json:
    variables = [variable("tier", "Tier", "taskcore_llm_calls_total")]
    rows = [_spend_now(), _spend(), _budgets(), _provider_health()]
    return dashboard("taskcore-spend", "taskcore / LLM spend and providers", rows, variables)


def render() -> dict[str, str]:
    """Each dashboard's file name and its JSON text."""
    boards = {
        "overview.json": overview(),
        "task-types.json": task_types_and_providers(),
        "spend.json": spend(),
    }
    return {name: json.dumps(b, indent=2, ensure_ascii=False) + "\n" for name, b in boards.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write taskcore's Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"Out of date: {', '.join(stale)}; run build_dashboards.py.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
