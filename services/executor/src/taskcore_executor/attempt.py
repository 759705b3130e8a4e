"""One delivered task message, from the claim to the ack.

- claim refused: already done (ack, drop), running elsewhere (look again once the
  holder's lease would have expired, then ack), cancelled before it ran (record
  ``task.cancelled``, ack), no such task or a dispatch never issued (dead-letter it);
- claimed: emit ``task.started``, run what the claimed document says (its type, user,
  tier and parameters: the message only names the task and the dispatch), within its
  time limit (``deadline``), record the outcome and its messages in the task's outbox
  with one conditional update, publish them (confirmed), ack;
- taken over from an executor that died, for the ``TASKCORE_MAX_STALLS``-th time: do
  not run it again (it may be what kills executors), dead-letter it as ``stalled``.
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

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import EventEmitter, Publisher
from taskcore.cancellation import Canceller
from taskcore.domain.events import EventType
from taskcore.limits import TreeLimits, check_result_size
from taskcore.messages import envelope as env
from taskcore.messages.envelope import Dispatch, OutboxEntry, TaskMessage
from taskcore.messages.topology import RETRY_EXCHANGE, retry_routing_key
from taskcore.outbox import publish_dispatch
from taskcore.quotas import QuotaPolicy, Quotas
from taskcore.registry import TaskTypeRegistry, UnknownTaskType
from taskcore.settings import Settings
from taskcore.taskdoc import Claim, ClaimRefused, Ending, Finish, Refusal
from taskcore.tracing import start_span, traceparent_of

from taskcore_executor.claim_batches import ClaimBatches
from taskcore_executor.classify import classify
from taskcore_executor.context import ExecutionContext, RunningTask, StartNotice
from taskcore_executor.deadline import within_deadline
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
from taskcore_executor.signals import RecentSignals
from taskcore_executor.spend import Accounts
from taskcore_executor.subtask_guard import SubtaskGuard

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
        recent_cancels: RecentSignals,
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
        self.canceller = Canceller(store, publisher)
        self.accounts = Accounts.of(settings, store)  # budgets and currency of LLM calls
        self.guard = SubtaskGuard(
            store,
            TreeLimits.from_settings(settings),
            Quotas(store, QuotaPolicy.from_settings(settings)),
            self.accounts.budgets,
        )
        # Concurrent attempts share their claims' and outcomes' store round trips.
        self.batches = ClaimBatches(store.documents, node, settings.lease_seconds)

    async def process(self, message: AbstractIncomingMessage, delivered: TaskMessage) -> None:
        try:
            claim = await self.batches.claim(delivered.task_id, delivered.dispatch)
        except ClaimRefused as refused:
            await self._refused(message, delivered, refused)
            return
        msg = claimed_message(claim, delivered)
        seq = Sequencer(msg.task_id, claim.first_sequence, claim.last_sequence)
        if claim.took_over and claim.state.stalls >= self.settings.max_stalls:
            await self._give_up_stalled(message, msg, seq, claim)
            return
        running = RunningTask(msg, claim.attempt, seq, claim.doc.get("root_task_id") or msg.task_id)
        running.labels, running.team_id = claim.doc.get("labels") or {}, claim.doc.get("team_id")
        running.depth = int(claim.doc.get("depth") or 0)
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
        self, message: AbstractIncomingMessage, running: RunningTask, claim: Claim
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
        started = StartNotice(self.emitter, started_event, self.settings.started_delay_ms / 1000)
        running.start_notice = started
        _observe_queue_wait(message, msg)
        running.execution = asyncio.create_task(self._run(running, claim))
        try:
            outcome = await running.execution
        except asyncio.CancelledError:
            running.execution.cancel()
            await started.confirmed()
            await self._hand_back(message, msg)
            if running.handing_back and not _cancelling_me():
                return
            raise
        if running.handing_back:  # the task swallowed the cancellation
            await started.confirmed()
            await self._hand_back(message, msg)
            return
        if running.lost:
            await self._drop_lost(message, msg, started)
            return
        entries = outcome_entries(
            outcome, msg, running.seq, header(message, env.HEADER_TRACEPARENT)
        )
        if not await started.sent_alone():
            # A fast attempt (or a failed send): it goes out with the outcome, through
            # the outbox.
            entries = [OutboxEntry(event=started_event), *entries]
        # Usage the broker did not confirm during the attempt goes durably with the outcome.
        entries = [*(OutboxEntry(event=e) for e in running.unsent), *entries]
        running.finishing = True
        ending, retry_count = _ending(outcome, msg)
        if not await self.batches.finish(Finish(claim, ending, entries, retry_count)):
            await self._drop_lost(message, msg, started)
            return
        await self._publish(entries)
        await message.ack()
        _count_outcome(msg, outcome)
        await self._follow_up(outcome, msg, claim)

    async def _run(self, running: RunningTask, claim: Claim) -> Outcome:
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
            accounts=self.accounts,
            guard=self.guard,
        )
        max_attempts = int(claim.doc.get("max_attempts") or task_type.retry.max_attempts)
        timeout_s = claim.doc.get("timeout_seconds") or task_type.timeout_seconds
        began = time.monotonic()
        metrics.TASKS_IN_FLIGHT.labels(msg.task_type).inc()
        try:
            ctx.check_cancelled()  # cancelled while being claimed: never start
            result = await within_deadline(
                run_task(task_type, params, ctx, self.cpu_pool),
                running,
                timeout_s,
                self.settings.timeout_grace_seconds,
            )
            check_result_size(result, self.settings.max_result_bytes)
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

    async def _give_up_stalled(
        self, message: AbstractIncomingMessage, msg: TaskMessage, seq: Sequencer, claim: Claim
    ) -> None:
        """Dead-letter a task whose attempts keep dying with their executor, instead of
        letting it take down one executor after another."""
        stalls = claim.state.stalls
        log.error(
            "Task %s stalled %d times (its executor died or lost its lease while running "
            "it each time); it is dead-lettered instead of run again.",
            msg.task_id,
            stalls,
        )
        error = ErrorInfo(
            "TaskStalled",
            f"the task's attempts stalled {stalls} times: each time the executor running it "
            "stopped (died, or lost its lease) before it finished",
            False,
        )
        outcome = Dead(DeadReason.STALLED, error)
        entries = outcome_entries(outcome, msg, seq, header(message, env.HEADER_TRACEPARENT))
        # The attempts that died may not have announced their start (it goes out after
        # a few ms): the event says how many there were, every earlier claim of the task.
        [dead] = entries
        data = {**dead.event.data, "attempts": claim.attempt - 1, "stalls": stalls}
        entries = [dead.model_copy(update={"event": dead.event.model_copy(update={"data": data})})]
        if await self.batches.finish(Finish(claim, Ending.DONE, entries)):
            await self._publish(entries)
            _count_outcome(msg, outcome)
        await message.ack()
        await self._follow_up(outcome, msg, claim)

    async def _follow_up(self, outcome: Outcome, msg: TaskMessage, claim: Claim) -> None:
        """Cancellations the outcome calls for; best effort, the outcome is already safe."""
        try:
            parent_id = claim.doc.get("parent_task_id")
            if isinstance(outcome, Dead) and parent_id:
                await self._fail_fast(parent_id, msg.task_id)
            elif isinstance(outcome, Cancelled) and outcome.awaiting_children:
                await self.canceller.cancel_children(msg.task_id, {"reason": "parent cancelled"})
        except Exception:
            log.exception("Cancelling the subtasks related to task %s failed.", msg.task_id)

    async def _fail_fast(self, parent_id: str, failed_child: str) -> None:
        """A child failed: if its parent's policy is ``fail_fast``, cancel its open siblings."""
        parent = await self.store.documents.get(parent_id, {"subtask_policy": 1})
        if parent is None or parent.get("subtask_policy") != "fail_fast":
            return
        reason = {"reason": f"sibling {failed_child} failed (fail_fast)"}
        acted = await self.canceller.cancel_children(parent_id, reason, exclude=failed_child)
        if acted:
            log.info("Cancelled %d open siblings of failed child %s.", acted, failed_child)

    async def _publish(self, entries: list[OutboxEntry]) -> None:
        """Like ``outbox.deliver`` (dispatches confirmed first, then events), but the events
        ride the emitter, so the outcomes of concurrent attempts share broker messages."""
        dispatches = [e.dispatch for e in entries if e.dispatch is not None]
        await asyncio.gather(*(publish_dispatch(self.publisher, d) for d in dispatches))
        await self.emitter.emit(*(e.event for e in entries))

    async def _hand_back(self, message: AbstractIncomingMessage, msg: TaskMessage) -> None:
        log.warning("Task %s is handed back unfinished for another executor.", msg.task_id)
        with contextlib.suppress(Exception):  # best effort: the lease expires anyway
            await self.store.documents.release(msg.task_id, msg.dispatch, self.node)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def _drop_lost(
        self, message: AbstractIncomingMessage, msg: TaskMessage, started: StartNotice
    ) -> None:
        log.warning("Lost the claim on task %s; another executor owns it now.", msg.task_id)
        metrics.DUPLICATES_DROPPED.labels("lease_lost").inc()
        await started.confirmed()
        await message.ack()

    # ---- a refused claim ---------------------------------------------------------------

    async def _refused(
        self, message: AbstractIncomingMessage, msg: TaskMessage, refused: ClaimRefused
    ) -> None:
        metrics.DUPLICATES_DROPPED.labels(refused.reason.value).inc()
        if refused.reason in (Refusal.UNKNOWN_TASK, Refusal.UNKNOWN_DISPATCH):
            what = "no task" if refused.reason is Refusal.UNKNOWN_TASK else "no dispatch"
            error = LookupError(f"{what} {msg.task_id}:{msg.dispatch} in the store")
            await dead_letter_unreadable(self.publisher, message, refused.reason.value, error)
            return
        if refused.reason is Refusal.CANCEL_REQUESTED:
            if await self.canceller.close_cancelled(msg.task_id):
                metrics.TASKS_CANCELLED.labels(msg.task_type).inc()
        elif refused.reason in (Refusal.RUNNING_ELSEWHERE, Refusal.STALLED):
            await self._recheck_later(message, msg, refused.lease_left_s)
        await message.ack()

    async def _recheck_later(
        self, message: AbstractIncomingMessage, msg: TaskMessage, lease_left_s: float
    ) -> None:
        # Someone holds the lease. If they die the task must run again once it expires,
        # so the message comes back through a delay queue then, instead of being dropped
        # (or held unacked); if they finish, the re-check finds it done and drops it.
        await self._send_later(message, msg, lease_left_s + RECHECK_MARGIN_S)

    async def redeliver_later(
        self, message: AbstractIncomingMessage, msg: TaskMessage, delay_s: float
    ) -> None:
        """Hand a message back unclaimed, to come again after about ``delay_s``."""
        await self._send_later(message, msg, delay_s)
        await message.ack()
        metrics.FAIR_SHARE_HANDBACKS.labels(msg.tier).inc()

    async def _send_later(
        self, message: AbstractIncomingMessage, msg: TaskMessage, delay_s: float
    ) -> None:
        tier_s = ceiling_tier(delay_s)
        dispatch = Dispatch(
            message=msg,
            exchange=RETRY_EXCHANGE,
            routing_key=retry_routing_key(tier_s, msg.tier),
            traceparent=header(message, env.HEADER_TRACEPARENT),
        )
        await publish_dispatch(self.publisher, dispatch)


def claimed_message(claim: Claim, delivered: TaskMessage) -> TaskMessage:
    """What to run: the claimed document's type, user, tier, priority, parameters and
    retry budget. The delivered message only named the task and the dispatch; a forged
    or stale body cannot run work as someone else or with other parameters."""
    doc = claim.doc
    return TaskMessage(
        task_id=claim.task_id,
        task_type=doc["task_type"],
        user_id=doc["user_id"],
        tier=doc.get("tier", delivered.tier),
        priority=int(doc.get("priority") or 0),
        parameters=doc.get("parameters") or {},
        dispatch=claim.dispatch,
        retry_count=claim.state.retry_count,
    )


def _ending(outcome: Outcome, msg: TaskMessage) -> tuple[Ending, int | None]:
    """What the outcome leaves the task waiting for, and its retry budget used so far."""
    if isinstance(outcome, Retry):
        return Ending.RETRY, outcome.retry_count_after(msg.retry_count)
    if isinstance(outcome, Completed | Cancelled) and outcome.awaiting_children:
        return Ending.CHILDREN, None
    return Ending.DONE, None


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
