"""One delivered task message, from the claim to the ack.

- claim refused: already done (ack, drop), running elsewhere (look again once the
  holder's lease would have expired, then ack), cancelled before it ran (record
  ``task.cancelled``, ack), no such task (dead-letter the message);
- claimed: emit ``task.started``, run the task type, record the outcome and its messages
  in the task's outbox with one conditional update, publish them (confirmed), ack.
- handed back at shutdown: release the claim and requeue the message unfinished;
- lease lost (another executor re-ran it): drop the outcome, ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import EventEmitter, Publisher
from taskcore.domain.events import EventType
from taskcore.messages import envelope as env
from taskcore.messages.envelope import TaskMessage
from taskcore.messages.topology import RETRY_EXCHANGE, retry_routing_key
from taskcore.outbox import Dispatch, OutboxEntry, deliver_or_defer
from taskcore.registry import TaskTypeRegistry, UnknownTaskType
from taskcore.settings import Settings
from taskcore.tracing import start_span, traceparent_of

from taskcore_executor import cancelling, claims
from taskcore_executor.claim_batches import ClaimBatches
from taskcore_executor.classify import classify
from taskcore_executor.context import ExecutionContext, RunningTask
from taskcore_executor.decode import dead_letter_unreadable, header
from taskcore_executor.outcomes import (
    Cancelled,
    Completed,
    Dead,
    DeadReason,
    ErrorInfo,
    Outcome,
    Retry,
    Sequencer,
    ceiling_tier,
    outcome_entries,
)
from taskcore_executor.runner import run_task

log = logging.getLogger(__name__)

# Looking again at a task held elsewhere: this long after the holder's lease would expire.
RECHECK_MARGIN_S = 0.25


class AttemptRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        publisher: Publisher,
        emitter: EventEmitter,
        registry: TaskTypeRegistry,
        node: str,
        running: dict[str, RunningTask],
        recent_cancels: cancelling.RecentSignals,
        cpu_pool: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.emitter = emitter
        self.registry = registry
        self.node = node
        self.running = running
        self.recent_cancels = recent_cancels
        self.cpu_pool = cpu_pool
        # Concurrent attempts share their claims' and outcomes' store round trips.
        self.batches = ClaimBatches(store, node, settings.lease_seconds)

    async def process(self, message: AbstractIncomingMessage, msg: TaskMessage) -> None:
        try:
            claim = await self.batches.claim(msg.task_id, msg.dispatch)
        except claims.ClaimRefused as refused:
            await self._refused(message, msg, refused)
            return
        seq = Sequencer(msg.task_id, claim.first_sequence, claim.last_sequence)
        running = RunningTask(msg, claim.attempt, seq, claim.doc.get("root_task_id") or msg.task_id)
        running.labels, running.team_id = claim.doc.get("labels") or {}, claim.doc.get("team_id")
        self.running[msg.task_id] = running
        if msg.task_id in self.recent_cancels:  # the signal overtook the claim
            running.cancel()
        # The attempt's span is started, not made current across the awaits below: its
        # context travels explicitly, on every event (and child) the attempt produces.
        span = start_span(
            f"execute {msg.task_type}",
            header(message, env.HEADER_TRACEPARENT),
            {"taskcore.task_id": msg.task_id, "taskcore.attempt": claim.attempt},
        )
        seq.traceparent = traceparent_of(span)
        try:
            await self._attempt(message, running, claim)
        finally:
            span.end()
            if self.running.get(msg.task_id) is running:
                del self.running[msg.task_id]

    # ---- a claimed attempt -------------------------------------------------------------

    async def _attempt(
        self, message: AbstractIncomingMessage, running: RunningTask, claim: claims.Claim
    ) -> None:
        msg = running.msg
        started_event = running.seq.event(
            EventType.STARTED,
            {
                "node_id": self.node,
                "attempt": claim.attempt,
                "dispatch": msg.dispatch,
                "retry_count": msg.retry_count,
            },
        )
        started = self.emitter.emit(started_event)
        _observe_queue_wait(message, msg)
        running.execution = asyncio.create_task(self._run(running, claim))
        try:
            outcome = await running.execution
        except asyncio.CancelledError:
            running.execution.cancel()
            await _confirmed(started)
            await self._hand_back(message, msg)
            if running.handing_back and not _cancelling_me():
                return
            raise
        if running.handing_back:  # the task swallowed the cancellation
            await _confirmed(started)
            await self._hand_back(message, msg)
            return
        if running.lost:
            await self._drop_lost(message, msg, started)
            return
        entries = outcome_entries(
            outcome, msg, running.seq, header(message, env.HEADER_TRACEPARENT)
        )
        if not await _confirmed(started):
            # Never published: it goes out with the outcome, through the outbox.
            entries = [OutboxEntry(event=started_event), *entries]
        running.finishing = True
        if not await self.batches.finish(claim, entries, _exec_fields(outcome, msg)):
            await self._drop_lost(message, msg, started)
            return
        await self._publish(entries)
        await message.ack()
        _count_outcome(msg, outcome)
        await self._follow_up(outcome, msg, claim)

    async def _run(self, running: RunningTask, claim: claims.Claim) -> Outcome:
        msg = running.msg
        try:
            task_type = self.registry.get(msg.task_type)
        except UnknownTaskType:
            error = ErrorInfo("UnknownTaskType", f"unknown task type {msg.task_type!r}", False)
            return Dead(DeadReason.UNKNOWN_TYPE, error)
        try:
            params = task_type.Params.model_validate(msg.parameters)
        except ValidationError as exc:
            return Dead(DeadReason.INVALID_PARAMETERS, ErrorInfo.of(exc, False))
        ctx = ExecutionContext(
            running,
            store=self.store,
            publisher=self.publisher,
            emitter=self.emitter,
            registry=self.registry,
            node=self.node,
            lease_s=self.settings.lease_seconds,
        )
        max_attempts = int(claim.doc.get("max_attempts") or task_type.retry.max_attempts)
        began = time.monotonic()
        metrics.TASKS_IN_FLIGHT.labels(msg.task_type).inc()
        try:
            ctx.check_cancelled()  # cancelled while being claimed: never start
            result = await run_task(task_type, params, ctx, self.cpu_pool)
            outcome: Outcome = Completed(result, awaiting_children=bool(running.children))
        except Exception as exc:
            outcome = classify(exc, task_type.retry, msg.retry_count, max_attempts)
            if isinstance(outcome, Cancelled) and running.children:
                outcome = Cancelled(outcome.reason, awaiting_children=True)
        finally:
            ctx.close()
            metrics.TASKS_IN_FLIGHT.labels(msg.task_type).dec()
        await ctx.flush_progress()
        metrics.EXECUTION_SECONDS.labels(msg.task_type, type(outcome).__name__.lower()).observe(
            time.monotonic() - began
        )
        return outcome

    async def _follow_up(self, outcome: Outcome, msg: TaskMessage, claim: claims.Claim) -> None:
        """Cancellations the outcome calls for; best effort, the outcome is already safe."""
        try:
            parent_id = claim.doc.get("parent_task_id")
            if isinstance(outcome, Dead) and parent_id:
                await cancelling.fail_fast(self.store, self.publisher, parent_id, msg.task_id)
            elif isinstance(outcome, Cancelled) and outcome.awaiting_children:
                await cancelling.cancel_open_children(
                    self.store, self.publisher, msg.task_id, "parent cancelled"
                )
        except Exception:
            log.exception("Cancelling the subtasks related to task %s failed.", msg.task_id)

    async def _publish(self, entries: list[OutboxEntry]) -> None:
        """Like ``outbox.deliver`` (dispatches confirmed first, then events), but the events
        ride the emitter, so the outcomes of concurrent attempts share broker messages."""
        dispatches = [e.dispatch for e in entries if e.dispatch is not None]
        await asyncio.gather(
            *(self.publisher.publish(d.exchange, d.key(), d.amqp_message()) for d in dispatches)
        )
        await self.emitter.emit(*(e.event for e in entries))

    async def _hand_back(self, message: AbstractIncomingMessage, msg: TaskMessage) -> None:
        log.warning("Task %s is handed back unfinished for another executor.", msg.task_id)
        with contextlib.suppress(Exception):  # best effort: the lease expires anyway
            await claims.release(self.store, msg.task_id, msg.dispatch, self.node)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def _drop_lost(
        self, message: AbstractIncomingMessage, msg: TaskMessage, started: asyncio.Future[None]
    ) -> None:
        log.warning("Lost the claim on task %s; another executor owns it now.", msg.task_id)
        metrics.DUPLICATES_DROPPED.labels("lease_lost").inc()
        await _confirmed(started)
        await message.ack()

    # ---- a refused claim ---------------------------------------------------------------

    async def _refused(
        self, message: AbstractIncomingMessage, msg: TaskMessage, refused: claims.ClaimRefused
    ) -> None:
        metrics.DUPLICATES_DROPPED.labels(refused.reason).inc()
        if refused.reason == "unknown_task":
            error = LookupError(f"no task {msg.task_id} in the store")
            await dead_letter_unreadable(self.publisher, message, DeadReason.UNKNOWN_TASK, error)
            return
        if refused.reason == "cancel_requested":
            await self._close_cancelled(msg)
        elif refused.reason == "running_elsewhere":
            await self._recheck_later(message, msg, refused.lease_left_s)
        await message.ack()

    async def _close_cancelled(self, msg: TaskMessage) -> None:
        first = await claims.reserve_sequences(self.store, msg.task_id, 1)
        seq = Sequencer(msg.task_id, first, first)
        entry = OutboxEntry(event=seq.event(EventType.CANCELLED, {"reason": "cancel requested"}))
        if await claims.record_cancelled(self.store, msg.task_id, msg.dispatch, entry):
            await deliver_or_defer(self.publisher, [entry])
            metrics.TASKS_CANCELLED.labels(msg.task_type).inc()

    async def _recheck_later(
        self, message: AbstractIncomingMessage, msg: TaskMessage, lease_left_s: float
    ) -> None:
        # Someone holds the lease. If they die the task must run again once it expires,
        # so the message comes back through a delay queue then, instead of being dropped
        # (or held unacked); if they finish, the re-check finds it done and drops it.
        tier_s = ceiling_tier(lease_left_s + RECHECK_MARGIN_S)
        dispatch = Dispatch(
            message=msg,
            exchange=RETRY_EXCHANGE,
            routing_key=retry_routing_key(tier_s, msg.tier),
            traceparent=header(message, env.HEADER_TRACEPARENT),
        )
        await self.publisher.publish(dispatch.exchange, dispatch.key(), dispatch.amqp_message())


def _exec_fields(outcome: Outcome, msg: TaskMessage) -> dict[str, Any]:
    # A retry leaves a dispatch outstanding; every other outcome closes it.
    if isinstance(outcome, Retry):
        return {"exec.open": True, "exec.dispatch_no": msg.dispatch + 1}
    return {"exec.open": False}


async def _confirmed(fut: asyncio.Future[None]) -> bool:
    try:
        await fut
    except Exception:
        return False
    return True


def _cancelling_me() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _observe_queue_wait(message: AbstractIncomingMessage, msg: TaskMessage) -> None:
    if message.timestamp is not None:
        sent = message.timestamp
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
        wait = (datetime.now(UTC) - sent).total_seconds()
        metrics.QUEUE_WAIT_SECONDS.labels(msg.task_type).observe(max(0.0, wait))
    metrics.TASKS_STARTED.labels(msg.task_type).inc()


def _count_outcome(msg: TaskMessage, outcome: Outcome) -> None:
    if isinstance(outcome, Completed) and not outcome.awaiting_children:
        metrics.TASKS_COMPLETED.labels(msg.task_type).inc()
    elif isinstance(outcome, Retry):
        metrics.TASKS_RETRIED.labels(msg.task_type, outcome.error.type).inc()
    elif isinstance(outcome, Dead):
        metrics.TASKS_DEAD_LETTERED.labels(msg.task_type, outcome.reason).inc()
    elif isinstance(outcome, Cancelled) and not outcome.awaiting_children:
        metrics.TASKS_CANCELLED.labels(msg.task_type).inc()
