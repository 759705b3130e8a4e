"""The ``TaskContext`` a running task sees, and the executor's record of one attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import EventEmitter, Publisher
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.ids import idempotent_task_id
from taskcore.domain.usage import UsageRecorded
from taskcore.messages.envelope import TaskMessage
from taskcore.plugin import (
    MeteredCall,
    NonRetryableError,
    Spend,
    SubtaskSpec,
    TaskCancelled,
    TaskTimeout,
)
from taskcore.registry import TaskTypeRegistry, UnknownTaskType
from taskcore.submission import NewTask, submit_tasks
from taskcore.taskdoc import SEQUENCE_BLOCK

from taskcore_executor.outcomes import Sequencer
from taskcore_executor.spend import Accounts, AttemptSpend, Caller
from taskcore_executor.subtask_guard import SubtaskGuard

# At most one progress event per task per interval; the latest value wins.
PROGRESS_INTERVAL_S = 0.25
# How long a recorded provider call waits for the broker before it rides with the outcome.
USAGE_CONFIRM_TIMEOUT_S = 5.0
# Children are inserted and dispatched in chunks, checking for a cancel between them.
SUBTASK_CHUNK = 500

log = logging.getLogger("taskcore.task")
T = TypeVar("T")


class StartNotice:
    """An attempt's ``task.started``, sent on its own only if the attempt is still running
    after ``delay_s``: a faster attempt carries it in its outcome's message, so the
    aggregator folds both at once (one message, one projection write instead of two).
    Anything else the attempt emits first (progress) sends it at once, so it never
    arrives after the events that follow it."""

    def __init__(self, emitter: EventEmitter, event: TaskEvent, delay_s: float) -> None:
        self.event = event
        self._emitter = emitter
        self._sent: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if delay_s > 0:
            self._timer = asyncio.get_running_loop().call_later(delay_s, self.send)
        else:
            self.send()

    def send(self) -> None:
        """Send it now, unless it went already."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sent is None:
            self._sent = self._emitter.emit(self.event)

    async def sent_alone(self) -> bool:
        """Whether it went out on its own and was confirmed. If it has not gone yet it
        never will: the caller sends it with the outcome."""
        if self._sent is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return False
        try:
            await self._sent
        except Exception:
            return False
        return True

    async def confirmed(self) -> None:
        """Send it if need be and wait for the broker (an attempt that ends without an
        outcome still happened: its start is part of the history)."""
        self.send()
        assert self._sent is not None
        with contextlib.suppress(Exception):
            await self._sent


class RunningTask:
    """One attempt in progress: what the context needs, and the flags that stop it."""

    def __init__(self, msg: TaskMessage, attempt: int, seq: Sequencer, root_task_id: str) -> None:
        self.msg = msg
        self.attempt = attempt
        self.seq = seq
        self.root_task_id = root_task_id
        # What children inherit from the claimed document (set by the attempt).
        self.labels: dict[str, str] = {}
        self.team_id: str | None = None
        self.cancelled = asyncio.Event()  # checked at the task's checkpoints
        self.children: list[str] = []
        self.lost = False  # another executor owns the claim now: drop the outcome
        self.handing_back = False  # shutdown: give the task back unfinished
        self.finishing = False  # the outcome is being recorded: too late to stop
        self.timed_out = False  # past its deadline: checkpoints raise TaskTimeout
        self.execution: asyncio.Task[Any] | None = None
        self.start_notice: StartNotice | None = None
        # Events the broker did not confirm (usage): the outcome carries them durably.
        self.unsent: list[TaskEvent] = []
        self.depth = 0  # levels below its root (from the claimed document)

    def cancel(self) -> None:
        self.cancelled.set()

    def time_out(self) -> None:
        """The attempt is past its deadline: its next checkpoint stops it."""
        self.timed_out = True
        self.cancelled.set()

    def lose(self) -> None:
        if not self.finishing:
            self.lost = True
            self.cancelled.set()

    def hand_back(self) -> None:
        if not self.finishing and self.execution is not None:
            self.handing_back = True
            self.cancelled.set()  # a task in a worker thread stops at its next checkpoint
            self.execution.cancel()


class ExecutionContext:
    def __init__(
        self,
        running: RunningTask,
        *,
        store: Store,
        publisher: Publisher,
        emitter: EventEmitter,
        registry: TaskTypeRegistry,
        node: str,
        lease_s: float,
        guard: SubtaskGuard,
        accounts: Accounts | None = None,
    ) -> None:
        self._guard = guard
        self._running = running
        self._store = store
        self._publisher = publisher
        self._emitter = emitter
        self._registry = registry
        self._node = node
        self._lease_s = lease_s
        self._last_progress = 0.0
        self._pending_progress: dict[str, Any] | None = None
        self._flusher: asyncio.Task[None] | None = None
        msg = running.msg
        self.task_id = msg.task_id
        self.user_id = msg.user_id
        self.tier: str = msg.tier
        self.attempt = running.attempt
        self.retry_count = msg.retry_count
        self.log = logging.LoggerAdapter(
            log, {"task_id": msg.task_id, "task_type": msg.task_type, "attempt": running.attempt}
        )
        caller = Caller(msg.user_id, running.team_id, msg.task_type, msg.tier, running.attempt)
        self.spend: Spend = AttemptSpend(
            accounts or Accounts(None, "USD"), caller, self._record_usage
        )

    # ---- progress: throttled, and never waits on the broker or the store -------------

    async def update_progress(self, progress: dict[str, Any]) -> None:
        self.schedule_progress(progress)

    def schedule_progress(self, progress: dict[str, Any]) -> None:
        self._pending_progress = dict(progress)
        if self._flusher is None:
            wait = PROGRESS_INTERVAL_S - (time.monotonic() - self._last_progress)
            self._flusher = asyncio.get_running_loop().create_task(self._flush_after(wait))

    async def _flush_after(self, wait_s: float) -> None:
        try:
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the throttle window
            await self._emit_pending()
        except Exception:
            self.log.warning("A progress update could not be sent.", exc_info=True)
        finally:
            self._flusher = None
        if self._pending_progress is not None:  # arrived while this one was being sent
            self.schedule_progress(self._pending_progress)

    async def _emit_pending(self) -> None:
        if self._pending_progress is None:
            return
        await self._sequences()
        progress, self._pending_progress = self._pending_progress, None
        self._last_progress = time.monotonic()
        if self._running.start_notice is not None:
            self._running.start_notice.send()  # the start goes first
        event = self._running.seq.event(EventType.PROGRESS, {"progress": progress})
        sent = self._emitter.emit(event)
        sent.add_done_callback(_ignore_outcome)  # best effort: the outcome supersedes it

    async def _sequences(self) -> None:
        """Make sure the block has a sequence to spare besides the outcome's."""
        seq = self._running.seq
        if seq.remaining <= 1:  # keep the block's last sequence for the outcome
            first = await self._store.documents.reserve_sequences(self.task_id, SEQUENCE_BLOCK)
            seq.next, seq.last = first, first + SEQUENCE_BLOCK - 1

    # ---- usage: every answered provider call, recorded durably ---------------------

    async def _record_usage(self, call: UsageRecorded) -> None:
        await self._sequences()
        if self._running.start_notice is not None:
            self._running.start_notice.send()  # the start goes first
        event = self._running.seq.event(EventType.USAGE_RECORDED, call.model_dump(mode="json"))
        sent = self._emitter.emit(event)
        try:
            # Not forever: with the broker away the task goes on, and the outcome carries
            # the event (if this send lands later too, the log keeps one: same event id).
            await asyncio.wait_for(asyncio.shield(sent), USAGE_CONFIRM_TIMEOUT_S)
        except Exception:
            self.log.warning("A usage event goes with the outcome instead.", exc_info=True)
            sent.add_done_callback(_ignore_outcome)
            self._running.unsent.append(event)

    async def flush_progress(self) -> None:
        """Send the latest progress now, before the outcome (the attempt is over)."""
        self.close()
        with contextlib.suppress(Exception):
            await self._emit_pending()

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    # ---- subtasks --------------------------------------------------------------------

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        batch = [self._new_child(spec) for spec in specs]
        keys = [spec.key for spec in specs]
        if len(set(keys)) != len(keys):
            raise NonRetryableError("subtask keys must be unique within a parent")
        grant = await self._guard.admit(self.task_id, self._running.root_task_id, batch)
        try:
            return await self._create(batch)
        except BaseException:
            if grant is not None:
                with contextlib.suppress(Exception):  # best effort: a window ends anyway
                    await self._guard.quotas.give_back(grant)
            raise

    async def _create(self, batch: list[NewTask]) -> list[str]:
        ids: list[str] = []
        if batch and not self._running.children:
            # Recorded before any child exists, so a cancel always looks for them.
            await self._store.documents.mark_parent(self.task_id)
        for start in range(0, len(batch), SUBTASK_CHUNK):
            self.check_cancelled()
            results = await submit_tasks(
                self._store, self._publisher, batch[start : start + SUBTASK_CHUNK]
            )
            chunk = [r.task.id for r in results]
            self._running.children.extend(chunk)  # even if a later chunk fails
            ids.extend(chunk)
        return ids

    async def submit_subtask(self, spec: SubtaskSpec) -> str:
        [task_id] = await self.submit_subtasks([spec])
        return task_id

    def _new_child(self, spec: SubtaskSpec) -> NewTask:
        msg = self._running.msg
        try:
            child_type = self._registry.get(spec.task_type)
        except UnknownTaskType:
            raise NonRetryableError(f"unknown subtask type {spec.task_type!r}") from None
        params = child_type.Params.model_validate(spec.parameters).model_dump(mode="json")
        return NewTask(
            # Deterministic: a re-run of this parent names (and so dedupes) the same child.
            task_id=idempotent_task_id(self.task_id, spec.key),
            user_id=msg.user_id,
            task_type=spec.task_type,
            parameters=params,
            priority=spec.priority if spec.priority is not None else msg.priority,
            max_attempts=spec.max_attempts or child_type.retry.max_attempts,
            tier=msg.tier,
            parent_task_id=self.task_id,
            root_task_id=self._running.root_task_id,
            depth=self._running.depth + 1,
            subtask_policy=child_type.subtask_policy.value,
            failure_threshold=child_type.failure_threshold,
            traceparent=self._running.seq.traceparent,  # children join the parent's trace
            labels=self._running.labels,
            team_id=self._running.team_id,
        )

    # ---- checkpoints -----------------------------------------------------------------

    def check_cancelled(self) -> None:
        if self._running.cancelled.is_set():
            if self._running.timed_out:
                raise TaskTimeout(f"task {self.task_id} ran past its time limit")
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    async def heartbeat(self) -> None:
        await self._store.documents.extend_leases([self.task_id], self._node, self._lease_s)


class ThreadContext:
    """The context of a CPU-bound task running on a worker thread's own event loop.

    Calls that touch the broker or the store run on the executor's loop; progress is
    handed over without waiting; the cancel check reads a flag.
    """

    def __init__(self, ctx: ExecutionContext, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.task_id = ctx.task_id
        self.user_id = ctx.user_id
        self.tier: str = ctx.tier
        self.attempt = ctx.attempt
        self.retry_count = ctx.retry_count
        self.log = ctx.log
        self.spend: Spend = ThreadSpend(ctx.spend, loop)

    async def update_progress(self, progress: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._ctx.schedule_progress, dict(progress))

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        return await self._on_executor_loop(self._ctx.submit_subtasks(specs))

    async def submit_subtask(self, spec: SubtaskSpec) -> str:
        return await self._on_executor_loop(self._ctx.submit_subtask(spec))

    def check_cancelled(self) -> None:
        self._ctx.check_cancelled()

    async def heartbeat(self) -> None:
        await self._on_executor_loop(self._ctx.heartbeat())

    async def _on_executor_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))


class ThreadSpend:
    """A ``Spend`` for a task on a worker thread: the reservations and records happen on
    the executor's loop, where the store and the broker are."""

    def __init__(self, spend: Spend, loop: asyncio.AbstractEventLoop) -> None:
        self._spend = spend
        self._loop = loop

    @contextlib.asynccontextmanager
    async def call(
        self, provider: str, *, tokens: int, cost_nanos: int
    ) -> AsyncIterator[MeteredCall]:
        manager = self._spend.call(provider, tokens=tokens, cost_nanos=cost_nanos)
        metered = await self._there(manager.__aenter__())
        try:
            yield _ThreadMetered(metered, self)
        except BaseException as exc:
            if not await self._there(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            await self._there(manager.__aexit__(None, None, None))

    async def _there(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))


class _ThreadMetered:
    def __init__(self, metered: MeteredCall, spend: ThreadSpend) -> None:
        self._metered = metered
        self._spend = spend

    async def record(
        self, *, model: str, prompt_tokens: int, completion_tokens: int, cost_nanos: int
    ) -> None:
        await self._spend._there(
            self._metered.record(
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_nanos=cost_nanos,
            )
        )


def _ignore_outcome(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log it as never retrieved
