"""Replaying and discarding one dead letter, idempotently and safely across crashes.

A replay moves the record ``pending -> replaying -> replayed``. The first move is
conditional, so of two concurrent replays one drives and the other is told it is in
progress; the driver holds a lease, and a replay whose driver died is taken over once the
lease expires (``resume``). What the replay does depends on what died:

- ``task``: a task the executor dead-lettered at dispatch ``D``. One conditional update
  of the task document (still closed at exactly dispatch ``D``) opens dispatch ``D + 1``
  with a fresh retry budget and writes the ``task.replayed`` event and the new dispatch
  into its outbox (see ``taskcore.outbox``); the update can match once only, so however
  often a half-done replay is resumed, the task is dispatched once. The task document
  remembers the replay (``dlq.last_replay_of``, ``dlq.replays``), which is how a resumed
  replay recognises its own finished work and how the replay limit is counted.
- ``resend``: a task message RabbitMQ dead-lettered before it ran (expired, over a queue
  limit): the task is still waiting for dispatch ``D``, so the same dispatch is sent
  again. A duplicate is harmless: the executor runs one dispatch number once.
- ``republish``: a message with no task behind it (a poison message): the original body
  and headers go back to the original exchange and routing key, with a new message id and
  ``x-replay-of``, so if it dies again it is parked as a new record linked to this one.
  This one is at-least-once: a crash between the broker's confirm and the record update
  republishes it again when resumed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.mongo import Doc, now_ms
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.domain.events import EventType
from taskcore.messages import envelope as env
from taskcore.messages.envelope import Dispatch, OutboxEntry, TaskMessage
from taskcore.outbox import publish_dispatch
from taskcore.taskdoc import STATE_FIELDS, ExecState, ReplayMode
from taskcore.taskdoc.operations import replay_mode

from taskcore_api.deadletters.record_action import RecordAction
from taskcore_api.deadletters.records import HEADER_REPLAY_OF, RecordState, body_bytes
from taskcore_api.deadletters.results import Outcome, ReplayRefused
from taskcore_api.deadletters.task_writes import deliver_committed, reserve_event, type_label

log = logging.getLogger(__name__)

# Headers that describe a past death; a republished message starts its life clean.
_DEATH_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-dead-", "x-original-")


class Replayer(RecordAction):
    async def replay(
        self,
        record_id: str,
        *,
        by: str,
        parameters: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Outcome:
        record = await self._get(record_id)
        state = record["state"]
        if state == RecordState.REPLAYED:
            mine = job_id is not None and (record.get("replay") or {}).get("job_id") == job_id
            return Outcome("replayed" if mine else "already_replayed", record)
        if state in (RecordState.DISCARDING, RecordState.DISCARDED):
            raise ReplayRefused(409, "discarded", "This dead letter was discarded.")
        if state == RecordState.REPLAYING:
            taken = await self.repo.take_over(
                record_id, RecordState.REPLAYING, self.settings.replay_lease_seconds, job_id
            )
            return await self.drive(taken) if taken else Outcome("in_progress", record)
        try:
            plan = await self._plan(record, parameters)
        except ReplayRefused as refused:
            metrics.DEAD_LETTER_REPLAYS_REFUSED.labels(refused.code).inc()
            raise
        plan.update(by=by, job_id=job_id, requested_at_ms=now_ms())
        started = await self.repo.move(
            record_id,
            {"state": RecordState.PENDING},
            RecordState.REPLAYING,
            {
                "replay": plan,
                "lease_until_ms": now_ms() + int(self.settings.replay_lease_seconds * 1000),
            },
        )
        if started is None:  # moved by someone else since we read it: answer from there
            return await self.replay(record_id, by=by, parameters=parameters, job_id=job_id)
        return await self.drive(started)

    async def _plan(self, record: Doc, parameters: dict[str, Any] | None) -> Doc:
        """How to replay this record, or why not (checked before anything moves)."""
        if record.get("body_truncated"):
            raise ReplayRefused(
                409,
                "not_replayable",
                "The body was too large to keep whole; it cannot be replayed.",
            )
        task = None
        if record.get("is_task_message") and record.get("task_id"):
            task = await self.store.documents.get(record["task_id"])
        if task is not None:
            return self._plan_task(record, task, parameters)
        if parameters is not None:
            raise ReplayRefused(
                422,
                "parameters_not_editable",
                "Only a dead letter of a stored task can be replayed with edited parameters.",
                [{"field": "parameters", "reason": "no task to apply them to"}],
            )
        if record.get("original") is None:
            raise ReplayRefused(
                409,
                "not_replayable",
                "Nothing records where this message was going, so there is nowhere to replay it.",
            )
        generation = int(record.get("generation") or 0)
        self._check_limit(generation, f"This message was replayed {generation} times")
        return {"mode": "republish", "message_id": f"{record['_id']}~{generation + 1}"}

    def _plan_task(self, record: Doc, task: Doc, parameters: dict[str, Any] | None) -> Doc:
        task_id, dispatch = record["task_id"], int(record.get("dispatch") or 0)
        replays = ExecState.of(task).replays
        self._check_limit(replays, f"Task {task_id} was replayed {replays} times")
        if ExecState.of(task).cancel_requested:
            raise ReplayRefused(409, "cancel_requested", f"Task {task_id} is being cancelled.")
        mode = replay_mode(task, dispatch)
        if mode is ReplayMode.REOPEN:
            edited = None if parameters is None else self.validate(record["task_type"], parameters)
            return {"mode": "task", "dispatch": dispatch + 1, "parameters": edited}
        if mode is ReplayMode.RESEND:
            if parameters is not None:
                raise ReplayRefused(
                    422,
                    "parameters_not_editable",
                    "The task is still waiting for this dispatch; it is re-sent unchanged.",
                    [{"field": "parameters", "reason": "the task never ran this dispatch"}],
                )
            return {"mode": "resend", "dispatch": dispatch}
        raise ReplayRefused(
            409,
            "task_moved_on",
            f"Task {task_id} has moved past this dead letter (it is {task.get('status')}).",
        )

    def _check_limit(self, replays: int, what: str) -> None:
        limit = self.settings.replay_limit
        if replays >= limit:
            raise ReplayRefused(
                409, "replay_limit", f"{what}; the limit is {limit}.", {"replays": replays}
            )

    def validate(self, task_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Edited parameters, validated as a new submission's would be."""
        if task_type not in self.registry:
            raise ReplayRefused(
                422,
                "unknown_task_type",
                f"Unknown task type {task_type!r}: its parameters cannot be validated.",
                [{"field": "task_type", "reason": "not a registered task type"}],
            )
        try:
            params = self.registry.get(task_type).Params.model_validate(parameters)
        except ValidationError as exc:
            details = [
                {"field": ".".join(["parameters", *map(str, e["loc"])]), "reason": e["msg"]}
                for e in exc.errors()
            ]
            raise ReplayRefused(
                422, "invalid_parameters", "The parameters are not valid.", details
            ) from exc
        dumped: dict[str, Any] = params.model_dump(mode="json")
        return dumped

    async def drive(self, record: Doc) -> Outcome:
        mode = record["replay"]["mode"]
        if mode == "task":
            await self._replay_task(record)
        elif mode == "resend":
            await self._resend(record)
        else:
            await self._republish(record)
        done = await self.repo.move(
            record["_id"],
            {"state": RecordState.REPLAYING},
            RecordState.REPLAYED,
            {"replayed_at_ms": now_ms(), "lease_until_ms": 0},
            replay_count=1,
        )
        if done is None:  # a taker-over finished first
            return Outcome("already_replayed", await self._get(record["_id"]))
        metrics.DEAD_LETTERS_REPLAYED.labels(
            record["reason"], type_label(self.registry, record), mode
        ).inc()
        log.info("Replayed dead letter %s (%s).", record["_id"], mode)
        return Outcome("replayed", done)

    async def _replay_task(self, record: Doc) -> None:
        task_id, dispatch = record["task_id"], int(record["dispatch"])
        plan = record["replay"]
        died = TaskMessage.model_validate_json(body_bytes(record))
        parameters = plan.get("parameters")
        data: dict[str, Any] = {
            "dead_letter_id": record["_id"],
            "replayed_by": plan.get("by"),
            "dispatch": dispatch + 1,
        }
        if parameters is not None:
            data["parameters"] = parameters
        entry = OutboxEntry(
            event=await reserve_event(self.store, task_id, EventType.REPLAYED, data),
            dispatch=Dispatch(
                message=died.model_copy(
                    update={
                        "dispatch": dispatch + 1,
                        "retry_count": 0,
                        "parameters": died.parameters if parameters is None else parameters,
                    }
                ),
                traceparent=_traceparent(record),
            ),
        )
        reopened = await self.store.documents.reopen_for_replay(
            task_id, dispatch, entry, record_id=record["_id"], parameters=parameters
        )
        if reopened:
            await deliver_committed(self.publisher, entry)
            return
        task = await self.store.documents.get(task_id, {**STATE_FIELDS, "status": 1})
        if task is not None and ExecState.of(task).last_replay_of == record["_id"]:
            return  # an earlier driver of this replay got this far before it died
        # The task changed under the replay (cancelled, say): nothing was dispatched.
        await self.repo.move(
            record["_id"],
            {"state": RecordState.REPLAYING},
            RecordState.PENDING,
            {"replay": None, "lease_until_ms": 0},
        )
        status = task.get("status") if task else "gone"
        raise ReplayRefused(409, "task_moved_on", f"Task {task_id} changed meanwhile ({status}).")

    async def _resend(self, record: Doc) -> None:
        dispatch = Dispatch(
            message=TaskMessage.model_validate_json(body_bytes(record)),
            traceparent=_traceparent(record),
        )
        await publish_dispatch(self.publisher, dispatch)

    async def _republish(self, record: Doc) -> None:
        headers = {
            k: v
            for k, v in json.loads(record.get("headers_json") or "{}").items()
            if not k.startswith(_DEATH_HEADER_PREFIXES) and k != HEADER_REPLAY_OF
        }
        headers[HEADER_REPLAY_OF] = record["_id"]
        original = record["original"]
        await self.publisher.publish(
            original["exchange"],
            original["routing_key"],
            amqp_message(
                body_bytes(record),
                headers=headers,
                message_id=record["replay"]["message_id"],
                content_type=record.get("content_type") or "application/octet-stream",
            ),
        )


def _traceparent(record: Doc) -> str | None:
    value = json.loads(record.get("headers_json") or "{}").get(env.HEADER_TRACEPARENT)
    return str(value) if value else None
