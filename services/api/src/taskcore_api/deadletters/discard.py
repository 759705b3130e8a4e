"""Discarding one dead letter: ``pending -> discarding -> discarded``.

The record is kept (nothing dead is lost) but never replayed. For a stored task the
discard is also a ``task.discarded`` event in the task's log, written once: the task
document carries a per-dispatch marker set by the same update that writes the event to
its outbox, so a resumed discard finds the marker and writes nothing more.
"""

from __future__ import annotations

import logging

from taskcore import metrics
from taskcore.adapters.mongo import Doc, now_ms
from taskcore.domain.events import EventType
from taskcore.messages.envelope import OutboxEntry

from taskcore_api.deadletters.record_action import RecordAction
from taskcore_api.deadletters.records import RecordState
from taskcore_api.deadletters.results import Outcome, ReplayRefused
from taskcore_api.deadletters.task_writes import deliver_committed, reserve_event, type_label

log = logging.getLogger(__name__)


class Discarder(RecordAction):
    async def discard(self, record_id: str, *, by: str, note: str | None = None) -> Outcome:
        record = await self._get(record_id)
        state = record["state"]
        if state == RecordState.DISCARDED:
            return Outcome("already_discarded", record)
        if state in (RecordState.REPLAYING, RecordState.REPLAYED):
            raise ReplayRefused(
                409, "already_replayed", "This dead letter was replayed; it cannot be discarded."
            )
        if state == RecordState.DISCARDING:
            taken = await self.repo.take_over(
                record_id, RecordState.DISCARDING, self.settings.replay_lease_seconds, None
            )
            return await self.drive(taken) if taken else Outcome("in_progress", record)
        started = await self.repo.move(
            record_id,
            {"state": RecordState.PENDING},
            RecordState.DISCARDING,
            {
                "discard": {"by": by, "note": note, "requested_at_ms": now_ms()},
                "lease_until_ms": now_ms() + int(self.settings.replay_lease_seconds * 1000),
            },
        )
        if started is None:
            return await self.discard(record_id, by=by, note=note)
        return await self.drive(started)

    async def drive(self, record: Doc) -> Outcome:
        task_id = record.get("task_id")
        if record.get("is_task_message") and task_id:
            await self._record_discard_event(record, task_id)
        done = await self.repo.move(
            record["_id"],
            {"state": RecordState.DISCARDING},
            RecordState.DISCARDED,
            {"discarded_at_ms": now_ms(), "lease_until_ms": 0},
        )
        if done is None:
            return Outcome("already_discarded", await self._get(record["_id"]))
        metrics.DEAD_LETTERS_DISCARDED.labels(
            record["reason"], type_label(self.registry, record)
        ).inc()
        log.info("Discarded dead letter %s.", record["_id"])
        return Outcome("discarded", done)

    async def _record_discard_event(self, record: Doc, task_id: str) -> None:
        if await self.store.documents.get(task_id, {"_id": 1}) is None:
            return  # a task message whose task was never stored: the record is the history
        discard = record.get("discard") or {}
        event = await reserve_event(
            self.store,
            task_id,
            EventType.DISCARDED,
            {
                "dead_letter_id": record["_id"],
                "discarded_by": discard.get("by"),
                "note": discard.get("note"),
            },
        )
        entry = OutboxEntry(event=event)
        dispatch = int(record.get("dispatch") or 0)
        if await self.store.documents.mark_discarded(task_id, dispatch, record["_id"], entry):
            await deliver_committed(self.publisher, entry)
