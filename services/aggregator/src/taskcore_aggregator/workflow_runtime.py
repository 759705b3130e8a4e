"""Running workflows: the aggregator carries each workflow forward as its steps change.

A workflow's step tasks are its children, so every change to one marks the workflow for
a recount (``recounts.ParentRefresher``, debounced and crash-safe, with the watchdog
behind it). ``advance`` then derives the workflow's state from its tree
(``taskcore.workflows.tree``), asks the pure state machine what to do
(``taskcore.workflows.decide``), and carries the orders out, each idempotently:

- start a step: insert its task under an id derived from the workflow and the step, so a
  start carried out twice (two replicas, a crash and a retry) creates it once. A
  ``for_each`` step's task is a container whose run creates the elements;
- fail a step that cannot start: a ``task.step_failed`` event in the workflow's log
  (through its outbox), read back by the next derivation;
- cancel a step: the shared ``Canceller`` (repeating it is one read);
- skip a step: nothing to record, it follows from the state;
- finish: the workflow's final event, written once (``parents.close``).

It then writes the ``workflow`` view on the workflow's document (derived, like a parent's
counters; ``taskcore rebuild`` recomputes it the same way).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.cancellation import Canceller
from taskcore.domain.events import EventType
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import SubtaskCounts, Task, TaskError
from taskcore.limits import ResultTooLarge, check_result_size
from taskcore.messages.envelope import OutboxEntry
from taskcore.outbox import deliver_or_defer
from taskcore.plugin import SubtaskPolicy
from taskcore.registry import TaskTypeRegistry
from taskcore.submission import NewTask, submit_tasks
from taskcore.taskdoc import STATE_FIELDS, ExecState, outbox_entries
from taskcore.workflows import (
    CancelStep,
    Command,
    Fact,
    FailStep,
    FinishWorkflow,
    OnFailure,
    Problem,
    SkipStep,
    StartForEach,
    StartStep,
    StepSpec,
    WorkflowPlan,
    WorkflowState,
    WorkflowSubmission,
    decide,
    effect,
    fold,
    parameter_problems,
)
from taskcore.workflows.facts import StepStarted
from taskcore.workflows.tree import (
    FOR_EACH_TASK_TYPE,
    StepTask,
    derive,
    element_task_id,
    for_each_ending,
    settle,
    step_task_id,
    view,
)

from taskcore_aggregator.parents import close, ready_to_close

log = logging.getLogger(__name__)

PLANS_KEPT = 1000
_FINAL_EVENTS = {
    TaskStatus.COMPLETED: EventType.COMPLETED,
    TaskStatus.COMPLETED_WITH_ERRORS: EventType.COMPLETED_WITH_ERRORS,
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.CANCELLED: EventType.CANCELLED,
}


class WorkflowRuntime:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        registry: TaskTypeRegistry,
        *,
        max_elements: int | None = None,
        max_result_bytes: int = 1_048_576,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.registry = registry
        self.max_elements = max_elements
        self.max_result_bytes = max_result_bytes
        self._plans: OrderedDict[str, WorkflowPlan] = OrderedDict()

    async def advance(self, workflow: Task, doc: Doc, counts: SubtaskCounts) -> bool:
        """Start, fail, skip and cancel steps as the state calls for, write the view, and
        close the workflow once its state machine finishes it; whether this closed it."""
        if workflow.status.is_terminal or ExecState.of(doc).children_settled:
            return False
        plan = self.plan_of(workflow)
        tasks = await step_tasks(self.store, workflow.id)
        state = await current_state(self.store, plan, workflow, doc, tasks)
        for _ in range(len(plan.steps) + 2):
            commands = decide(plan, state, self.check_step, max_elements=self.max_elements)
            finish = next((c for c in commands if isinstance(c, FinishWorkflow)), None)
            if finish is not None:
                await self._write_view(plan, workflow, state, tasks)
                closed = await self._finish(workflow, doc, counts, finish)
                if closed:  # again, past any older view a slower runtime wrote meanwhile
                    await self._write_view(plan, workflow, state, tasks, closed=True)
                return closed
            if not commands:
                break
            facts = [await self._carry_out(workflow, plan, c) for c in commands]
            state = fold(state, facts)
        await self._write_view(plan, workflow, settle(plan, state), tasks)
        return False

    def plan_of(self, workflow: Task) -> WorkflowPlan:
        plan = self._plans.get(workflow.id)
        if plan is None:
            plan = WorkflowPlan.of(WorkflowSubmission.model_validate(workflow.parameters))
            self._plans[workflow.id] = plan
            while len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
        return plan

    def check_step(self, step: StepSpec, parameters: Any) -> list[Problem]:
        """The registry's say on a step's resolved parameters (the same check as at submit)."""
        if not self.registry.submittable(step.task_type):
            return [Problem(("task_type",), f"unknown task type {step.task_type!r}")]
        return parameter_problems(self.registry.get(step.task_type).Params, parameters)

    # ---- carrying orders out -------------------------------------------------------

    async def _carry_out(self, workflow: Task, plan: WorkflowPlan, command: Command) -> Fact:
        if isinstance(command, StartStep | StartForEach):
            task = (
                self._step_task(command)
                if isinstance(command, StartStep)
                else self._container(plan, command)
            )
            task_id, refused = await self._start(workflow, command.step_id, task)
            if refused is not None:  # the store will refuse it every time: the step fails
                return await self._carry_out(workflow, plan, FailStep(command.step_id, refused))
            if isinstance(command, StartStep):
                return effect(command, [task_id])
            # The container is the step's one task: its result is the elements' list.
            return StepStarted(command.step_id, task_id)
        if isinstance(command, CancelStep):
            canceller = Canceller(self.store, self.publisher)
            reason = {"reason": f"workflow {workflow.id} cancelled step {command.step_id}"}
            for task_id in command.task_ids:
                await canceller.cancel(task_id, reason)
            return effect(command)
        if isinstance(command, FailStep):
            await self._record_failure(workflow, command)
            return effect(command)
        if isinstance(command, SkipStep):
            return effect(command)
        raise TypeError(f"unexpected order {command!r}")

    def _step_task(self, start: StartStep) -> dict[str, Any]:
        task_type = self.registry.get(start.task_type)
        return {
            "task_type": start.task_type,
            "parameters": start.parameters,
            "priority": start.priority,
            "max_attempts": start.max_attempts or task_type.retry.max_attempts,
            "subtask_policy": task_type.subtask_policy.value,
            "failure_threshold": task_type.failure_threshold,
        }

    def _container(self, plan: WorkflowPlan, start: StartForEach) -> dict[str, Any]:
        fail_fast = plan.on_failure is OnFailure.FAIL_FAST
        policy = SubtaskPolicy.FAIL_FAST if fail_fast else SubtaskPolicy.COLLECT_ALL
        return {
            "task_type": FOR_EACH_TASK_TYPE,
            "parameters": {
                "task_type": start.task_type,
                "elements": list(start.elements),
                "priority": start.priority,
                "max_attempts": start.max_attempts,
            },
            "priority": start.priority,
            "max_attempts": 3,
            "subtask_policy": policy.value,
            "failure_threshold": None,
        }

    async def _start(
        self, workflow: Task, step_id: str, task: dict[str, Any]
    ) -> tuple[str, TaskError | None]:
        """Create the step's task; its id, and the error if the store refused it."""
        task_id = step_task_id(workflow.id, step_id)
        priority = task.pop("priority")
        new = NewTask(
            task_id=task_id,
            user_id=workflow.user_id,
            tier=workflow.tier,
            priority=workflow.priority if priority is None else priority,
            parent_task_id=workflow.id,
            root_task_id=workflow.root_task_id or workflow.id,
            depth=workflow.depth + 1,  # its steps are one level below it, like any child
            labels=dict(workflow.labels),
            team_id=workflow.team_id,
            **task,
        )
        [submitted] = await submit_tasks(self.store, self.publisher, [new])
        if submitted.failed is not None:
            # The reason is the store's own words: logged, not shown to the user.
            log.error(
                "The store refused step %s of workflow %s: %s",
                step_id,
                workflow.id,
                submitted.failed,
            )
            message = "the store refused the step's task (its parameters may be too large)"
            return task_id, TaskError(type="ValidationError", message=message)
        if submitted.created:
            log.info("Workflow %s started step %s (task %s).", workflow.id, step_id, task_id)
        return task_id, None

    async def _record_failure(self, workflow: Task, command: FailStep) -> None:
        data = {"step_id": command.step_id, "error": command.error.model_dump(mode="json")}
        event = await self.store.documents.reserve_event(workflow.id, EventType.STEP_FAILED, data)
        entry = OutboxEntry(event=event)
        await self.store.documents.add_to_outbox(workflow.id, entry)
        await deliver_or_defer(self.publisher, [entry])
        log.info("Workflow %s step %s failed: %s", workflow.id, command.step_id, command.error)

    async def close_for_each(self, container: Task, doc: Doc, counts: SubtaskCounts) -> bool:
        """Close a for_each step's container by its policy, its result the elements'
        results in element order (or ``ResultTooLarge`` if they are too many to keep)."""
        if not ready_to_close(container, doc, counts):
            return False
        elements = await element_tasks(self.store, container.id, counts.total)
        ending = for_each_ending(elements)
        cancelled = ExecState.of(doc).cancel_requested or container.cancel_requested
        type_, data = _FINAL_EVENTS[ending.status], ending.data()
        if cancelled:
            type_, data = EventType.CANCELLED, {"result": None, "reason": "cancel requested"}
        elif ending.status is TaskStatus.COMPLETED:
            try:
                check_result_size(ending.result, self.max_result_bytes)
            except ResultTooLarge as exc:
                error = TaskError(type="ResultTooLarge", message=str(exc), retryable=False)
                type_, data = EventType.FAILED, {"result": None, "error": error.model_dump()}
        return await close(self.store, self.publisher, container, counts, type_, data)

    async def _finish(
        self, workflow: Task, doc: Doc, counts: SubtaskCounts, finish: FinishWorkflow
    ) -> bool:
        if not ready_to_close(workflow, doc, counts):
            return False  # its own run has not ended yet: the next refresh closes it
        try:
            check_result_size(finish.result, self.max_result_bytes)
        except ResultTooLarge as exc:
            error = TaskError(type="ResultTooLarge", message=str(exc), retryable=False)
            finish = FinishWorkflow(TaskStatus.FAILED, None, error)
        data: dict[str, Any] = {"result": finish.result}
        if finish.error is not None:
            data["error"] = finish.error.model_dump(mode="json")
        if finish.status is TaskStatus.CANCELLED:
            data["reason"] = "cancel requested"
        type_ = _FINAL_EVENTS[finish.status]
        return await close(self.store, self.publisher, workflow, counts, type_, data)

    async def _write_view(
        self,
        plan: WorkflowPlan,
        workflow: Task,
        state: WorkflowState,
        tasks: Mapping[str, Any],
        *,
        closed: bool = False,
    ) -> None:
        shown = view(plan, workflow.id, state, tasks)
        if closed or shown != workflow.workflow:  # a for_each lists every element
            await self.store.documents.write_workflow_view(workflow.id, shown, closed=closed)


# ---- reading a workflow's tree (the runtime and taskcore rebuild) ---------------------


async def step_tasks(store: Store, workflow_id: str) -> dict[str, StepTask]:
    """The workflow's children (its steps' tasks) as the state machine reads them.

    A step's first ending is final: a step task dead-lettered and then replayed is read
    as the dead letter it was, so a replay does not resume (or re-route) its workflow.
    """
    fields = {"status": 1, "result": 1, "error": 1, "subtasks": 1, **STATE_FIELDS}
    tasks: dict[str, StepTask] = {}
    async for d in store.tasks.find({"parent_task_id": workflow_id}, fields):
        task = StepTask(
            task_id=d["_id"],
            status=TaskStatus(d["status"]),
            result=d.get("result"),
            error=TaskError.model_validate(d["error"]) if d.get("error") else None,
            children=int((d.get("subtasks") or {}).get("total") or 0),
        )
        if ExecState.of(d).replays and task.status is not TaskStatus.DEAD_LETTER:
            task = await _as_first_dead_letter(store, task)
        tasks[task.task_id] = task
    return tasks


async def _as_first_dead_letter(store: Store, task: StepTask) -> StepTask:
    first = await store.events.find_one(
        {"task_id": task.task_id, "type": EventType.DEAD_LETTERED.value}, sort=[("sequence", 1)]
    )
    raw = ((first or {}).get("data") or {}).get("error")
    error = TaskError.model_validate(raw) if isinstance(raw, dict) else None
    return StepTask(task.task_id, TaskStatus.DEAD_LETTER, None, error, task.children)


async def step_failures(store: Store, workflow_id: str, doc: Doc) -> dict[str, TaskError]:
    """The steps that failed before they had a task: logged, or still in the outbox."""
    found = store.events.find({"task_id": workflow_id, "type": EventType.STEP_FAILED.value})
    data = [d.get("data") or {} async for d in found]
    data += [e.event.data for e in outbox_entries(doc) if e.event.type is EventType.STEP_FAILED]
    return {d["step_id"]: TaskError.model_validate(d["error"]) for d in data}


async def current_state(
    store: Store, plan: WorkflowPlan, workflow: Task, doc: Doc, tasks: Mapping[str, StepTask]
) -> WorkflowState:
    cancelled = ExecState.of(doc).cancel_requested or workflow.cancel_requested
    failures = await step_failures(store, workflow.id, doc)
    return derive(plan, workflow.id, tasks, failures, cancel_requested=cancelled)


async def derived_view(store: Store, workflow: Task, doc: Doc) -> dict[str, Any]:
    """The ``workflow`` view as the runtime writes it, from the tree alone (for rebuild)."""
    plan = WorkflowPlan.of(WorkflowSubmission.model_validate(workflow.parameters))
    tasks = await step_tasks(store, workflow.id)
    state = await current_state(store, plan, workflow, doc, tasks)
    return view(plan, workflow.id, settle(plan, state), tasks)


async def element_tasks(store: Store, container_id: str, count: int) -> list[StepTask]:
    """A for_each container's elements, in element order."""
    fields = {"status": 1, "result": 1, "error": 1}
    cursor = store.tasks.find({"parent_task_id": container_id}, fields)
    found = {d["_id"]: d async for d in cursor}
    elements = []
    for n in range(count):
        task_id = element_task_id(container_id, n)
        d = found.get(task_id, {"status": TaskStatus.CANCELLED.value})
        error = TaskError.model_validate(d["error"]) if d.get("error") else None
        elements.append(StepTask(task_id, TaskStatus(d["status"]), d.get("result"), error))
    return elements
