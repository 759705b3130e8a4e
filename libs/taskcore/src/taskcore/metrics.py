"""Every Prometheus metric taskcore exports, in one place (dashboards depend on these names).

Names are prefixed ``taskcore_`` and carry their unit; label sets are bounded (task
types are registered names, reasons and outcomes are fixed vocabularies, never ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)

# API
TASKS_SUBMITTED = Counter(
    "taskcore_tasks_submitted_total", "Tasks accepted for execution.", ["task_type", "tier"]
)
SUBMISSIONS_REJECTED = Counter(
    "taskcore_submissions_rejected_total", "Submissions refused.", ["reason"]
)
SSE_CLIENTS = Gauge(
    "taskcore_sse_clients", "Open Server-Sent Events streams.", multiprocess_mode="livesum"
)
HTTP_REQUEST_SECONDS = Histogram(
    "taskcore_http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)

# Executor
TASKS_STARTED = Counter("taskcore_tasks_started_total", "Task attempts started.", ["task_type"])
TASKS_COMPLETED = Counter("taskcore_tasks_completed_total", "Tasks completed.", ["task_type"])
TASKS_FAILED = Counter("taskcore_tasks_failed_total", "Tasks failed for good.", ["task_type"])
TASKS_RETRIED = Counter(
    "taskcore_tasks_retried_total", "Retries scheduled.", ["task_type", "error_class"]
)
TASKS_DEAD_LETTERED = Counter(
    "taskcore_tasks_dead_lettered_total", "Messages dead-lettered.", ["task_type", "reason"]
)
TASKS_CANCELLED = Counter("taskcore_tasks_cancelled_total", "Tasks cancelled.", ["task_type"])
TASKS_IN_FLIGHT = Gauge(
    "taskcore_tasks_in_flight", "Tasks executing now.", ["task_type"], multiprocess_mode="livesum"
)
QUEUE_WAIT_SECONDS = Histogram(
    "taskcore_task_queue_wait_seconds",
    "From dispatch to the start of an attempt.",
    ["task_type"],
    buckets=_LATENCY_BUCKETS,
)
EXECUTION_SECONDS = Histogram(
    "taskcore_task_execution_seconds",
    "Duration of one attempt.",
    ["task_type", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
FAIR_SHARE_HANDBACKS = Counter(
    "taskcore_fair_share_handbacks_total",
    "Task messages handed back unclaimed because their user held its share of the slots.",
    ["tier"],
)
DUPLICATES_DROPPED = Counter(
    "taskcore_duplicate_deliveries_total",
    "Task messages acked without running (already done, running elsewhere, cancelled).",
    ["reason"],
)
PROVIDER_IN_USE = Gauge(
    "taskcore_provider_concurrency_in_use",
    "Provider slots held.",
    ["provider"],
    multiprocess_mode="livesum",
)
PROVIDER_RATE_LIMIT_WAIT_SECONDS = Counter(
    "taskcore_provider_rate_limit_wait_seconds_total",
    "Time spent waiting for a provider's rate limit.",
    ["provider"],
)
PROVIDER_FALLBACKS = Counter(
    "taskcore_provider_fallbacks_total",
    "Work moved to the next provider.",
    ["from_provider", "to_provider"],
)
PROVIDER_TOKENS = Counter("taskcore_provider_tokens_total", "Tokens used.", ["provider", "kind"])
# Provider health, as every executor reads the shared state (so any replica's value is the
# provider's): ready to be called (a key, not benched after a 401/403, not cooling down
# after a 429), benched, and the concurrency limit after 429 back-off.
PROVIDER_READY = Gauge(
    "taskcore_provider_ready",
    "1 if the provider may be called now, else 0.",
    ["provider"],
    multiprocess_mode="livemin",
)
PROVIDER_BENCHED = Gauge(
    "taskcore_provider_benched",
    "1 while the provider is benched after refusing our key (401/403).",
    ["provider"],
    multiprocess_mode="livemax",
)
PROVIDER_CONCURRENCY_LIMIT = Gauge(
    "taskcore_provider_concurrency_limit",
    "Concurrent calls the provider is allowed now (halved after a 429, recovering).",
    ["provider"],
    multiprocess_mode="livemax",
)
# Spend: answered provider calls and their cost, in TASKCORE_CURRENCY units.
LLM_CALLS = Counter(
    "taskcore_llm_calls_total", "Provider calls answered (each counted once).", ["provider", "tier"]
)
LLM_COST = Counter(
    "taskcore_llm_cost_total",
    "What answered provider calls cost, in the configured currency.",
    ["provider", "tier"],
)
BUDGET_REFUSALS = Counter(
    "taskcore_budget_refusals_total",
    "Work refused by a user's budget: a submission (stage=submission), a provider call "
    "(stage=call) or a running task's subtasks (stage=subtasks).",
    ["tier", "budget", "stage"],
)

# Aggregator
EVENTS_FOLDED = Counter("taskcore_events_folded_total", "Events appended and folded.", ["type"])
EVENTS_DUPLICATE = Counter(
    "taskcore_events_duplicate_total", "Redelivered events recognised by their id."
)
AGGREGATOR_LAG_SECONDS = Histogram(
    "taskcore_aggregator_lag_seconds",
    "From an event's occurrence to its fold.",
    buckets=_LATENCY_BUCKETS,
)
FOLD_BATCH_SIZE = Histogram(
    "taskcore_fold_batch_size",
    "Events per fold batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
SUBMIT_TO_TERMINAL_SECONDS = Histogram(
    "taskcore_task_submit_to_terminal_seconds",
    "From submission to a terminal status, as folded.",
    ["task_type", "status"],
    buckets=_LATENCY_BUCKETS,
)

PARENTS_AWAITING_OLDEST_SECONDS = Gauge(
    "taskcore_parents_awaiting_children_oldest_seconds",
    "Age of the oldest parent waiting for its children (0 when none); the watchdog sets it.",
    multiprocess_mode="livemax",
)

# Event bridge
BRIDGE_PUBLISHED = Counter(
    "taskcore_bridge_events_published_total", "CloudEvents published.", ["type"]
)
BRIDGE_PUBLISH_SECONDS = Histogram(
    "taskcore_bridge_publish_seconds",
    "From commit to confirmed external publish.",
    buckets=_LATENCY_BUCKETS,
)

# Everyone
BROKER_RECONNECTS = Counter(
    "taskcore_broker_reconnects_total", "Reconnections to RabbitMQ.", ["service"]
)
MESSAGES_DEAD_LETTERED_MALFORMED = Counter(
    "taskcore_malformed_messages_total", "Messages no handler could read.", ["queue"]
)
AMQP_PUBLISHED = Counter(
    "taskcore_amqp_messages_published_total",
    "Messages published (and confirmed) by this process.",
    ["exchange"],
)
AMQP_RETURNED = Counter(
    "taskcore_amqp_returned_total",
    "Mandatory publishes the broker returned as unroutable (no queue bound for the key). "
    "handling: error (raised; the sender keeps the message and retries it) or no_listener "
    "(normal there: external events with no subscriber, a cancel signal with no executor).",
    ["exchange", "handling"],
)
STORE_COMMANDS = Counter(
    "taskcore_store_commands_total", "MongoDB commands (round trips) sent.", ["command"]
)
STORE_DOCUMENTS = Counter(
    "taskcore_store_documents_total",
    "Documents the store reported written (inserted, modified, deleted) or read, by collection.",
    ["kind", "collection"],
)
STORE_BYTES_WRITTEN = Counter(
    "taskcore_store_bytes_written_total",
    "BSON size of the write commands sent (only with TASKCORE_STORE_ACCOUNTING).",
)
OUTBOX_REPUBLISHED = Counter(
    "taskcore_outbox_republished_total", "Outbox entries the relay had to re-send."
)

# Dead letters (parked and acted on by the api)
DEAD_LETTERS_PARKED = Counter(
    "taskcore_dead_letters_parked_total",
    "Dead letters parked as inspectable records.",
    ["reason", "task_type"],
)
DEAD_LETTERS_REPLAYED = Counter(
    "taskcore_dead_letters_replayed_total",
    "Dead letters replayed (mode: task, resend or republish).",
    ["reason", "task_type", "mode"],
)
DEAD_LETTERS_DISCARDED = Counter(
    "taskcore_dead_letters_discarded_total", "Dead letters discarded.", ["reason", "task_type"]
)
DEAD_LETTER_REPLAYS_REFUSED = Counter(
    "taskcore_dead_letter_replays_refused_total", "Replays refused.", ["code"]
)

# Time: delayed starts, schedules, timeouts, stalls, retention
DELAYED_DISPATCHED = Counter(
    "taskcore_delayed_dispatched_total",
    "Delayed tasks the due-dispatch sweep sent when they were due.",
)
SCHEDULE_RUNS = Counter(
    "taskcore_schedule_runs_total",
    "Due times of schedules, by what became of them "
    "(created, skipped_overlap, missed, over_quota, refused).",
    ["outcome"],
)
TASK_TIMEOUTS = Counter(
    "taskcore_task_timeouts_total",
    "Attempts stopped at their deadline, by how they stopped (cooperative, abandoned).",
    ["task_type", "how"],
)
ABANDONED_THREADS = Gauge(
    "taskcore_abandoned_threads",
    "Worker threads of timed-out CPU-bound attempts that have not returned yet.",
    multiprocess_mode="livesum",
)
RETENTION_REMOVED = Counter(
    "taskcore_retention_removed_total",
    "What retention removed (kind: tasks, events, dead_letters).",
    ["kind"],
)
