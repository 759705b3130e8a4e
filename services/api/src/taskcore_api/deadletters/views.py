"""Request and response bodies of the dead-letter routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from taskcore.adapters.mongo import Doc

from taskcore_api.deadletters.filters import DeadLetterFilter
from taskcore_api.deadletters.jobs import job_results
from taskcore_api.deadletters.records import body_value


def _at(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms else None


class DeadLetterError(BaseModel):
    type: str
    message: str
    traceback: str | None = None


class ReplayInfo(BaseModel):
    mode: str = Field(description="task (a new dispatch), resend (the same dispatch) or republish")
    dispatch: int | None = None
    parameters: dict[str, Any] | None = None
    message_id: str | None = None
    by: str | None = None
    job_id: str | None = None


class DiscardInfo(BaseModel):
    by: str | None = None
    note: str | None = None


class DeadLetterView(BaseModel):
    """A dead letter as the API shows it (the contract's fields first)."""

    id: str
    task_id: str | None
    task_type: str | None
    user_id: str | None
    reason: str
    error: DeadLetterError
    headers: dict[str, Any]
    body: Any
    death_history: list[dict[str, Any]]
    dead_lettered_at: datetime
    replayed_at: datetime | None
    state: str = Field(description="pending, replaying, replayed, discarding or discarded")
    source: str
    dispatch: int | None
    message_id: str | None
    content_type: str | None
    body_encoding: str = Field(description="utf-8, or base64 for a body that is not text")
    body_size: int
    body_truncated: bool
    original_destination: dict[str, str] | None
    replay_of: str | None = Field(description="the dead letter whose replay led to this one")
    generation: int = Field(description="how many replays led to this dead letter")
    replay: ReplayInfo | None
    discard: DiscardInfo | None
    discarded_at: datetime | None

    @classmethod
    def of(cls, doc: Doc) -> DeadLetterView:
        return cls(
            id=doc["_id"],
            task_id=doc.get("task_id"),
            task_type=doc.get("task_type"),
            user_id=doc.get("user_id"),
            reason=doc["reason"],
            error=DeadLetterError.model_validate(doc["error"]),
            headers=json.loads(doc.get("headers_json") or "{}"),
            body=body_value(doc),
            death_history=doc.get("death_history") or [],
            dead_lettered_at=_at(doc["dead_lettered_at_ms"]) or datetime.now(UTC),
            replayed_at=_at(doc.get("replayed_at_ms")),
            state=doc["state"],
            source=doc.get("source") or "unknown",
            dispatch=doc.get("dispatch"),
            message_id=doc.get("message_id"),
            content_type=doc.get("content_type"),
            body_encoding=doc.get("body_encoding") or "utf-8",
            body_size=int(doc.get("body_size") or 0),
            body_truncated=bool(doc.get("body_truncated")),
            original_destination=doc.get("original"),
            replay_of=doc.get("replay_of"),
            generation=int(doc.get("generation") or 0),
            replay=ReplayInfo.model_validate(doc["replay"]) if doc.get("replay") else None,
            discard=DiscardInfo.model_validate(doc["discard"]) if doc.get("discard") else None,
            discarded_at=_at(doc.get("discarded_at_ms")),
        )


class LinkedTask(BaseModel):
    id: str
    status: str
    attempts: int
    retry_count: int
    max_attempts: int
    replays: int = Field(description="how often operators replayed this task")


class DeadLetterDetail(DeadLetterView):
    task: LinkedTask | None = Field(description="the task this dead letter belongs to, if stored")


class DeadLetterList(BaseModel):
    items: list[DeadLetterView]
    next_cursor: str | None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] | None = Field(
        default=None, description="replace the task's parameters (validated like a submission)"
    )


class ReplayResponse(BaseModel):
    outcome: str = Field(description="replayed, already_replayed or in_progress")
    dead_letter: DeadLetterView


class DiscardResponse(BaseModel):
    outcome: str = Field(description="discarded, already_discarded or in_progress")
    dead_letter: DeadLetterView


class BulkReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: DeadLetterFilter = Field(default_factory=DeadLetterFilter)
    dry_run: bool = False
    rate_per_second: float | None = Field(default=None, gt=0, description="replays per second")
    max: int | None = Field(default=None, ge=1, description="replay at most this many")


class DryRunReport(BaseModel):
    dry_run: bool = True
    matched: int = Field(description="pending dead letters matching the filter")
    would_replay: int
    sample_ids: list[str]


class ReplayJobView(BaseModel):
    """A bulk replay: its progress, and the report of what was replayed."""

    id: str
    state: str = Field(description="running or done")
    filter: dict[str, Any]
    rate_per_second: float
    total: int
    position: int
    counts: dict[str, int]
    results: list[dict[str, Any]]
    requested_by: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Doc) -> ReplayJobView:
        return cls(
            id=job["_id"],
            state=job["state"],
            filter=job.get("filter") or {},
            rate_per_second=float(job["rate_per_second"]),
            total=int(job["total"]),
            position=int(job["position"]),
            counts=job.get("counts") or {},
            results=job_results(job),
            requested_by=job.get("requested_by") or "",
            created_at=_at(job["created_at_ms"]) or datetime.now(UTC),
            finished_at=_at(job.get("finished_at_ms")),
        )
