"""Building a record from a dead message (pure: no broker, no store)."""

from __future__ import annotations

from datetime import UTC, datetime

from taskcore_api.deadletters.records import DeadMessage, body_bytes, body_value, build_record

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
TASK_BODY = (
    b'{"task_id":"t1","task_type":"diag.fail","user_id":"alice","tier":"paid",'
    b'"priority":0,"parameters":{"times":1},"dispatch":3,"retry_count":2}'
)


def build(message: DeadMessage) -> dict[str, object]:
    return build_record(message, now=NOW, max_body_bytes=64 * 1024)


def test_an_executor_dead_letter_keeps_its_reason_error_traceback_and_task() -> None:
    record = build(
        DeadMessage(
            body=TASK_BODY,
            headers={
                "x-task-id": "t1",
                "x-dead-reason": "attempts_exhausted",
                "x-dead-error": "RetryableError: diag.fail: attempt 3 fails",
                "x-dead-traceback": "Traceback (most recent call last):\n  ...",
                "x-dead-source": "executor",
            },
            message_id="t1:3",
            timestamp=NOW,
        )
    )
    assert record["_id"] == "t1:3"
    assert (record["task_id"], record["dispatch"], record["task_type"], record["user_id"]) == (
        "t1",
        3,
        "diag.fail",
        "alice",
    )
    assert record["reason"] == "attempts_exhausted"
    assert record["error"] == {
        "type": "RetryableError",
        "message": "diag.fail: attempt 3 fails",
        "traceback": "Traceback (most recent call last):\n  ...",
    }
    assert record["death_history"] == [{"by": "executor", "reason": "attempts_exhausted"}]
    assert body_value(record)["retry_count"] == 2  # type: ignore[index]


def test_rabbitmq_deaths_map_to_reasons_and_keep_their_history() -> None:
    death = {
        "count": 1,
        "reason": b"maxlen",
        "queue": "tasks.free.queue",
        "time": NOW,
        "exchange": "",
        "routing-keys": ["tasks.free.queue"],
    }
    record = build(DeadMessage(body=b"{}", headers={"x-death": [death]}, message_id="m2"))
    assert record["reason"] == "rejected_by_limit"
    assert record["original"] == {"exchange": "", "routing_key": "tasks.free.queue"}
    assert record["death_history"] == [
        {
            "by": "rabbitmq",
            "reason": "maxlen",
            "queue": "tasks.free.queue",
            "exchange": "",
            "routing_keys": ["tasks.free.queue"],
            "count": 1,
            "time": NOW.isoformat(),
        }
    ]
    assert "tasks.free.queue" in record["error"]["message"]  # type: ignore[index]
    expired = build(DeadMessage(body=b"x", headers={"x-death": [{**death, "reason": "expired"}]}))
    assert expired["reason"] == "expired"


def test_a_binary_body_without_a_message_id_gets_a_content_hash_and_survives_intact() -> None:
    body = b"\x00\xff\xfe not text"
    first = build(DeadMessage(body=body, headers={"x-dead-reason": "malformed"}))
    again = build(DeadMessage(body=body, headers={"x-dead-reason": "malformed"}))
    other = build(DeadMessage(body=body + b"!", headers={"x-dead-reason": "malformed"}))
    assert first["_id"] == again["_id"] != other["_id"]
    assert str(first["_id"]).startswith("dl-")
    assert first["body_encoding"] == "base64"
    assert body_bytes(first) == body


def test_a_message_id_unfit_for_a_url_is_replaced_by_a_hash() -> None:
    record = build(DeadMessage(body=b"{}", headers={}, message_id="a/b c"))
    assert record["_id"] != "a/b c"
    assert record["message_id"] == "a/b c"
    assert record["reason"] == "unknown"


def test_a_body_over_the_limit_is_kept_truncated_and_flagged() -> None:
    record = build_record(DeadMessage(body=b"a" * 5000, headers={}), now=NOW, max_body_bytes=1024)
    assert record["body_truncated"] is True
    assert record["body_size"] == 5000
    assert len(body_bytes(record)) == 1024


def test_a_dead_letter_parked_late_keeps_its_time_of_death() -> None:
    from datetime import timedelta

    from taskcore_api.deadletters.records import death_time

    an_hour_ago = NOW - timedelta(hours=1)
    assert death_time(an_hour_ago, NOW) == an_hour_ago
    # AMQP times are whole seconds: a prompt parking keeps the precise parking time
    assert death_time(NOW.replace(microsecond=0), NOW.replace(microsecond=400_000)) == NOW.replace(
        microsecond=400_000
    )
    assert death_time(None, NOW) == NOW
