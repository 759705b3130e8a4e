"""Wire contracts: message bodies, CloudEvents, outbox shapes, dispatch headers, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError
from taskcore.domain.events import EventType
from taskcore.messages.cloudevents import from_amqp_body, to_amqp_body, to_cloudevent
from taskcore.messages.envelope import (
    CommittedEvent,
    Dispatch,
    EventBatch,
    OutboxEntry,
    TaskMessage,
)
from taskcore.outbox import amqp_message
from taskcore.settings import MAX_TEAMS, ApiKey, Settings
from taskcore.taskdoc.operations import new_document, outbox_cleared, outbox_fields

from .streams import TASK_ID, at, error_data, event, submitted

TASK_MESSAGE = TaskMessage(
    task_id=TASK_ID,
    task_type="diag.sleep",
    user_id="alice",
    tier="free",
    priority=7,
    parameters={"seconds": 0.5, "tags": ["a", "b"]},
    dispatch=3,
    retry_count=2,
)

# The task fields as the aggregator hands them to the bridge (a JSON-mode projection).
COMMITTED_TASK: dict[str, Any] = {
    "id": TASK_ID,
    "task_type": "diag.sleep",
    "user_id": "alice",
    "status": "COMPLETED",
    "parent_task_id": "p-1",
    "root_task_id": "r-1",
}


def test_a_task_message_survives_a_json_round_trip() -> None:
    assert TaskMessage.model_validate_json(TASK_MESSAGE.model_dump_json()) == TASK_MESSAGE


def test_an_event_batch_survives_a_json_round_trip() -> None:
    batch = EventBatch(
        events=[
            submitted(parameters={"n": 1}),
            event(EventType.RETRYING, 1002, {"retry_count": 1, "error": error_data()}),
            event(EventType.COMPLETED, 1003, {"result": {"nested": [1, None, "x"]}}),
        ]
    )

    back = EventBatch.model_validate_json(batch.model_dump_json())

    assert back == batch
    assert back.events[1].occurred_at == at(1002)
    assert back.events[1].type is EventType.RETRYING


def _cloudevent_round_trip(item: CommittedEvent) -> CloudEvent:
    body, content_type = to_amqp_body(to_cloudevent(item))
    assert content_type == "application/cloudevents+json"
    return from_amqp_body(body, content_type, {})


def test_a_committed_event_becomes_a_cloudevent_that_the_sdk_reads_back() -> None:
    completed = event(EventType.COMPLETED, 1003, {"result": {"answer": 42}})

    received = _cloudevent_round_trip(CommittedEvent(event=completed, task=COMMITTED_TASK))

    assert received.get_specversion() == "1.0"
    assert received.get_id() == completed.event_id
    assert received.get_type() == "io.taskcore.task.completed"
    assert received.get_subject() == TASK_ID
    assert received.get_source() == "/taskcore"
    assert received.get_time() == completed.occurred_at
    assert received.get_datacontenttype() == "application/json"
    assert received.get_data() == {
        "task_id": TASK_ID,
        "task_type": "diag.sleep",
        "user_id": "alice",
        "status": "COMPLETED",
        "parent_task_id": "p-1",
        "root_task_id": "r-1",
        "labels": {},
        "team_id": None,
        "sequence": 1003,
        "result": {"answer": 42},
    }


def test_the_structured_body_is_plain_cloudevents_json() -> None:
    progress = event(EventType.PROGRESS, 1002, {"progress": {"done": 1, "total": 4}})

    body, _ = to_amqp_body(to_cloudevent(CommittedEvent(event=progress, task=COMMITTED_TASK)))
    document = json.loads(body)

    assert set(document) >= {"specversion", "id", "source", "type", "subject", "time", "data"}
    assert document["data"]["progress"] == {"done": 1, "total": 4}


@pytest.mark.parametrize("type_", list(EventType))
def test_the_cloudevent_type_names_the_event(type_: EventType) -> None:
    item = CommittedEvent(event=event(type_, 7), task=COMMITTED_TASK)

    assert to_cloudevent(item).get_type() == f"io.taskcore.task.{type_.value[len('task.') :]}"


def test_the_cloudevent_id_is_the_event_id_so_a_redelivery_is_recognisable() -> None:
    item = CommittedEvent(event=event(EventType.STARTED, 1001), task=COMMITTED_TASK)

    assert to_cloudevent(item).get_id() == to_cloudevent(item).get_id() == f"{TASK_ID}:1001"


def test_an_event_payload_cannot_overwrite_the_task_fields_of_the_data() -> None:
    # A payload may name a task field (a child's id, say); the contract fields must win.
    clashing = event(EventType.AWAITING_CHILDREN, 1002, {"task_id": "child", "status": "x"})

    data = to_cloudevent(CommittedEvent(event=clashing, task=COMMITTED_TASK)).get_data()

    assert isinstance(data, dict)
    assert data["task_id"] == TASK_ID
    assert data["status"] == "COMPLETED"
    assert data["sequence"] == 1002


def _entries() -> list[OutboxEntry]:
    return [
        OutboxEntry(event=submitted(), dispatch=Dispatch(message=TASK_MESSAGE)),
        OutboxEntry(event=event(EventType.CANCEL_REQUESTED, 2)),
    ]


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def test_outbox_fields_set_one_dotted_field_per_event_and_the_outbox_time() -> None:
    before = _now_ms()

    fields = outbox_fields(_entries(), _now_ms())

    assert set(fields) == {f"outbox.{TASK_ID}:1", f"outbox.{TASK_ID}:2", "outbox_at_ms"}
    assert before <= fields["outbox_at_ms"] <= _now_ms()
    assert fields[f"outbox.{TASK_ID}:1"]["dispatch"]["message"]["task_id"] == TASK_ID
    assert fields[f"outbox.{TASK_ID}:2"]["dispatch"] is None


def test_a_new_document_holds_its_entries_in_its_outbox() -> None:
    now = _now_ms()

    doc = new_document({"_id": TASK_ID}, _entries(), request_hash=None, now_ms=now)

    assert set(doc["outbox"]) == {f"{TASK_ID}:1", f"{TASK_ID}:2"}
    assert doc["outbox_at_ms"] == now
    assert doc["seq"] == 2, "sequences continue after the last one its entries use"


def test_a_stored_outbox_entry_reads_back_as_the_same_entry() -> None:
    # The relay re-publishes what it reads from the document, so nothing may be lost.
    for entry in _entries():
        stored = outbox_fields([entry], 0)[f"outbox.{entry.event.event_id}"]

        assert OutboxEntry.model_validate(stored) == entry
        assert json.loads(json.dumps(stored)) == stored, "entries are plain JSON values"


def test_outbox_cleared_unsets_the_folded_events_entries() -> None:
    assert outbox_cleared([f"{TASK_ID}:1", f"{TASK_ID}:1001"]) == {
        f"outbox.{TASK_ID}:1": "",
        f"outbox.{TASK_ID}:1001": "",
    }


def test_a_dispatch_message_carries_the_task_headers_and_is_persistent() -> None:
    message = amqp_message(Dispatch(message=TASK_MESSAGE, traceparent="00-abc-def-01"))

    assert message.headers["x-task-id"] == TASK_ID
    assert message.headers["x-task-type"] == "diag.sleep"
    assert message.headers["x-retry-count"] == 2
    assert message.headers["x-user-id"] == "alice"
    assert message.headers["x-dispatch"] == 3
    assert message.headers["traceparent"] == "00-abc-def-01"
    assert message.message_id == f"{TASK_ID}:3"
    assert message.correlation_id == TASK_ID
    assert message.priority == 7
    assert message.delivery_mode is aio_pika.DeliveryMode.PERSISTENT
    assert TaskMessage.model_validate_json(message.body) == TASK_MESSAGE


def test_a_dispatch_without_a_trace_has_no_traceparent_header() -> None:
    message = amqp_message(Dispatch(message=TASK_MESSAGE))

    assert "traceparent" not in message.headers


def test_a_dispatch_routes_by_tier_unless_told_otherwise() -> None:
    assert Dispatch(message=TASK_MESSAGE).key() == "free"
    assert Dispatch(message=TASK_MESSAGE, routing_key="5s.free").key() == "5s.free"


ENV_NAMES = (
    "RABBITMQ_URL",
    "MONGO_URL",
    "MONGO_DB",
    "PORT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "TASKCORE_API_KEYS",
    "TASKCORE_PLUGINS",
    "TASKCORE_RABBITMQ_URL",
    "TASKCORE_MONGO_URL",
    "TASKCORE_MONGO_DB",
    "TASKCORE_PORT",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment with none of taskcore's variables, whatever the shell exported."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_default_to_a_local_broker_and_the_taskcore_database(
    env: pytest.MonkeyPatch,
) -> None:
    settings = Settings()

    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.mongo_url is None
    assert settings.mongo_db == "taskcore"
    assert settings.api_keys == {}
    assert settings.plugins == []
    assert settings.port is None


def test_settings_read_the_architecture_environment_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("RABBITMQ_URL", "amqp://u:p@broker:5672/prod")
    env.setenv("MONGO_URL", "mongodb://store:27017/")
    env.setenv("MONGO_DB", "tc_prod")
    env.setenv("PORT", "9100")
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")

    settings = Settings()

    assert settings.rabbitmq_url == "amqp://u:p@broker:5672/prod"
    assert settings.mongo_url == "mongodb://store:27017/"
    assert settings.mongo_db == "tc_prod"
    assert settings.port == 9100
    assert settings.otel_exporter_otlp_endpoint == "http://collector:4318"


def test_settings_parse_the_api_keys_json(env: pytest.MonkeyPatch) -> None:
    env.setenv(
        "TASKCORE_API_KEYS",
        json.dumps(
            {
                "k-alice": {"user_id": "alice"},
                "k-root": {"user_id": "ops", "role": "admin", "tier": "free"},
            }
        ),
    )

    settings = Settings()

    assert settings.api_keys == {
        "k-alice": ApiKey(user_id="alice", role="user", tier="paid"),
        "k-root": ApiKey(user_id="ops", role="admin", tier="free"),
    }


def test_an_empty_api_keys_variable_means_no_keys(env: pytest.MonkeyPatch) -> None:
    env.setenv("TASKCORE_API_KEYS", "  ")

    assert Settings().api_keys == {}


def test_a_refused_api_key_entry_is_named_by_position_never_by_its_secret(
    env: pytest.MonkeyPatch,
) -> None:
    secret = "sk-live-0123456789"
    env.setenv(
        "TASKCORE_API_KEYS",
        json.dumps({"k-alice": {"user_id": "alice"}, secret: {"user_id": ""}}),
    )

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert "entry 2, user_id" in str(refused.value)
    assert secret not in str(refused.value)


@pytest.mark.parametrize(
    "value",
    ['{"k": {"user_id": "alice", "role": "root"}}', "not json", '["k"]'],
)
def test_malformed_api_keys_are_refused(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("TASKCORE_API_KEYS", value)

    with pytest.raises(ValidationError, match="api_keys"):
        Settings()


def test_settings_parse_the_plugins_comma_list(env: pytest.MonkeyPatch) -> None:
    env.setenv("TASKCORE_PLUGINS", " acme.tasks , acme.more,, ")

    assert Settings().plugins == ["acme.tasks", "acme.more"]


def test_an_empty_plugins_variable_means_no_plugins(env: pytest.MonkeyPatch) -> None:
    env.setenv("TASKCORE_PLUGINS", "")

    assert Settings().plugins == []


def test_explicit_settings_win_over_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("MONGO_DB", "from_env")

    assert Settings(MONGO_DB="explicit").mongo_db == "explicit"


def test_an_api_key_belongs_to_at_most_max_teams_teams() -> None:
    ApiKey(user_id="alice", teams=[f"t{i}" for i in range(MAX_TEAMS)])
    with pytest.raises(ValidationError, match="teams"):
        ApiKey(user_id="alice", teams=[f"t{i}" for i in range(MAX_TEAMS + 1)])
