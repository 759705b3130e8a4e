"""What an attempt ended in, and the messages each outcome must publish.

Pure: builds events and dispatches; the consumer writes them to the outbox and publishes.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.domain.retry_policy import DELAY_TIERS_S, delay_tier
from taskcore.messages import envelope as env
from taskcore.messages.envelope import Dispatch, OutboxEntry, TaskMessage
from taskcore.messages.topology import DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE, retry_routing_key


class DeadReason:
    """Why a message was dead-lettered (a fixed vocabulary: it is a metric label)."""

    NON_RETRYABLE = "non_retryable"
    EXHAUSTED = "attempts_exhausted"
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PARAMETERS = "invalid_parameters"
    UNKNOWN_TASK = "unknown_task"
    MISSING_HEADERS = "missing_headers"
    REPLAY_LIMIT = "replay_limit"
    STALLED = "stalled"  # its attempts kept dying with their executor


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    retryable: bool
    traceback: str | None = None

    @classmethod
    def of(cls, exc: BaseException, retryable: bool) -> ErrorInfo:
        text = "".join(tb.format_exception(exc))[-8000:]
        return cls(type(exc).__name__, str(exc)[:2000], retryable, text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "traceback": self.traceback,
        }


@dataclass(frozen=True)
class Completed:
    result: Any
    awaiting_children: bool = False


@dataclass(frozen=True)
class Retry:
    error: ErrorInfo
    delay_s: float
    # A rate-limit wait uses up no attempt, and must not come back before ``delay_s``
    # (the provider's Retry-After); a backoff goes to the delay tier closest to it.
    rate_limited: bool = False

    @property
    def uses_attempt(self) -> bool:
        return not self.rate_limited

    def retry_count_after(self, retries_so_far: int) -> int:
        """The retry budget used once this retry is scheduled."""
        return retries_so_far + (1 if self.uses_attempt else 0)

    @property
    def delay_tier_s(self) -> int:
        return ceiling_tier(self.delay_s) if self.rate_limited else delay_tier(self.delay_s)


@dataclass(frozen=True)
class Dead:
    reason: str
    error: ErrorInfo


@dataclass(frozen=True)
class Cancelled:
    reason: str = "cancel requested"
    # A parent cancelled after creating children stays open until they are terminal
    # (a parent is never terminal before its children): its run ends as awaiting them.
    awaiting_children: bool = False


Outcome = Completed | Retry | Dead | Cancelled


@dataclass
class Sequencer:
    """Hands out the sequences of the block a claim reserved."""

    task_id: str
    next: int
    last: int
    now: Any = field(default=lambda: datetime.now(UTC))
    # The trace of the attempt, carried by every event it emits.
    traceparent: str | None = None

    def event(self, type_: EventType, data: dict[str, Any]) -> TaskEvent:
        seq = self.next
        self.next += 1
        return TaskEvent(
            event_id=event_id_for(self.task_id, seq),
            task_id=self.task_id,
            sequence=seq,
            type=type_,
            occurred_at=self.now(),
            data=data,
            traceparent=self.traceparent,
        )

    @property
    def remaining(self) -> int:
        return self.last - self.next + 1


def ceiling_tier(delay_s: float) -> int:
    """The shortest delay tier not shorter than ``delay_s`` (the longest if none is)."""
    return next((t for t in DELAY_TIERS_S if t >= delay_s), DELAY_TIERS_S[-1])


def outcome_entries(
    outcome: Outcome, msg: TaskMessage, seq: Sequencer, traceparent: str | None
) -> list[OutboxEntry]:
    if isinstance(outcome, Completed):
        if outcome.awaiting_children:
            return [
                OutboxEntry(
                    event=seq.event(EventType.AWAITING_CHILDREN, {"result": outcome.result})
                )
            ]
        return [OutboxEntry(event=seq.event(EventType.COMPLETED, {"result": outcome.result}))]
    if isinstance(outcome, Cancelled):
        if outcome.awaiting_children:
            data = {"result": None, "reason": outcome.reason}
            return [OutboxEntry(event=seq.event(EventType.AWAITING_CHILDREN, data))]
        return [OutboxEntry(event=seq.event(EventType.CANCELLED, {"reason": outcome.reason}))]
    if isinstance(outcome, Retry):
        return [_retry_entry(outcome, msg, seq, traceparent)]
    return [dead_letter_entry(outcome, msg, seq, traceparent)]


def _retry_entry(
    outcome: Retry, msg: TaskMessage, seq: Sequencer, traceparent: str | None
) -> OutboxEntry:
    retry_count = outcome.retry_count_after(msg.retry_count)
    tier_s = outcome.delay_tier_s
    next_at = seq.now() + timedelta(seconds=tier_s)
    retry_msg = msg.model_copy(update={"dispatch": msg.dispatch + 1, "retry_count": retry_count})
    dispatch = Dispatch(
        message=retry_msg,
        exchange=RETRY_EXCHANGE,
        routing_key=retry_routing_key(tier_s, msg.tier),
        traceparent=traceparent,
    )
    event = seq.event(
        EventType.RETRYING,
        {
            "error": outcome.error.as_dict(),
            "retry_count": retry_count,
            "next_attempt_at": next_at.isoformat(),
            "delay_seconds": tier_s,
            "uses_attempt": outcome.uses_attempt,
        },
    )
    return OutboxEntry(event=event, dispatch=dispatch)


def dead_letter_id(msg: TaskMessage) -> str:
    return f"{msg.task_id}:{msg.dispatch}"


def dead_letter_entry(
    outcome: Dead, msg: TaskMessage, seq: Sequencer, traceparent: str | None
) -> OutboxEntry:
    headers: dict[str, str | int] = {
        env.HEADER_DEAD_REASON: outcome.reason,
        env.HEADER_DEAD_ERROR: f"{outcome.error.type}: {outcome.error.message}"[:4000],
        env.HEADER_DEAD_TRACEBACK: (outcome.error.traceback or "")[-4000:],
        env.HEADER_DEAD_SOURCE: "executor",
    }
    dispatch = Dispatch(
        message=msg,
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key="dead",
        traceparent=traceparent,
        extra_headers=headers,
    )
    event = seq.event(
        EventType.DEAD_LETTERED,
        {
            "error": outcome.error.as_dict(),
            "reason": outcome.reason,
            "retry_count": msg.retry_count,
            "dead_letter_id": dead_letter_id(msg),
        },
    )
    return OutboxEntry(event=event, dispatch=dispatch)
