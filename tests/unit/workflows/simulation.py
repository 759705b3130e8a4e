"""Random workflows run to the end by a random, at-least-once runtime (hypothesis).

``workflows()`` draws a DAG of up to 7 steps (listed in any order), some of them
for_each over an upstream step's list, with references to upstream results (and now and
then one that resolves to nothing). ``simulate`` then plays a runtime whose every choice
is drawn: which order it carries out, which it "crashes" before recording (so decide
repeats it), which it records twice (another replica did too), which open task ends
next and how, redelivered facts of any kind at any later time, and a cancellation of
the whole workflow. It records what happened for the properties to check.

The choices come from a hypothesis-controlled ``Random`` (``st.randoms``), not from
``st.data()`` draws: a run makes dozens of choices, and ``data.draw`` (which records a
description of every value) made the suite several times slower. Option 0 of every
choice is the plain way forward (carry the order out once, complete the task), which
is where hypothesis shrinks the drawn numbers to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows import (
    CancelStep,
    Command,
    Fact,
    FailStep,
    FinishWorkflow,
    SkipStep,
    StartForEach,
    StartStep,
    StepTaskChanged,
    WorkflowCancelRequested,
    WorkflowPlan,
    WorkflowState,
    WorkflowSubmission,
    decide,
    effect,
    evolve,
    initial_state,
    step_key,
)

S = TaskStatus
T = TypeVar("T")
ENDINGS = (S.COMPLETED, S.FAILED, S.DEAD_LETTER, S.CANCELLED, S.COMPLETED_WITH_ERRORS)
# Each kind of mischief is bounded, so every run ends and its smallest form is short.
MAX_MISCHIEF = 12
MAX_ROUNDS = 1_000
CANCEL_NOW = [False] * 40 + [True]


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowPlan:
    n = draw(st.integers(1, 7))
    ids = [f"s{i}" for i in range(n)]
    steps: list[dict[str, Any]] = []
    for i, step_id in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True)) if i else []
        body: dict[str, Any] = {"id": step_id, "task_type": "t", "depends_on": deps}
        if deps:
            source = draw(st.sampled_from(deps))
            body["parameters"] = {"tag": {"$ref": f"{source}.result.tag"}}
            if draw(st.integers(0, 9)) == 0:
                body["parameters"]["oops"] = {"$ref": f"{source}.result.missing"}
            if draw(st.booleans()):
                body["for_each"] = {"$ref": f"{source}.result.items"}
                body["parameters"]["item"] = {"$ref": "item"}
        steps.append(body)
    order = draw(st.permutations(steps))
    on_failure = draw(st.sampled_from(["fail_fast", "continue"]))
    submission = WorkflowSubmission.model_validate({"steps": order, "on_failure": on_failure})
    return WorkflowPlan.of(submission)


@dataclass
class History:
    plan: WorkflowPlan
    state: WorkflowState
    starts: list[str] = field(default_factory=list)
    early_starts: list[str] = field(default_factory=list)  # a dependency not COMPLETED
    starts_after_stop: list[str] = field(default_factory=list)
    repeated_orders: list[Command] = field(default_factory=list)
    unstable_decisions: int = 0
    finishes: list[FinishWorkflow] = field(default_factory=list)
    finished_with_open_tasks: int = 0
    cancelled: bool = False
    own_failures: set[str] = field(default_factory=set)  # steps that failed of themselves
    results: dict[str, Any] = field(default_factory=dict)  # task id -> result
    stuck: bool = False


def scripts() -> st.SearchStrategy[random.Random]:
    return st.randoms(use_true_random=False)


class Script:
    """The runtime's choices, each a pick among options."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


class Simulation:
    def __init__(self, plan: WorkflowPlan, script: random.Random) -> None:
        self.plan = plan
        self.script = Script(script)
        self.state = initial_state(plan.steps)
        self.open: dict[str, tuple[str, int | None]] = {}
        self.cancel_ordered: set[str] = set()
        self.delivered: list[Fact] = []  # every fact recorded, for redelivery
        self.running: set[str] = set()  # tasks already reported RUNNING once
        self.mischief = 0  # crashes before recording, redeliveries
        self.h = History(plan, self.state)

    def pick(self, options: Sequence[T]) -> T:
        return self.script.pick(options)

    def run(self) -> History:
        for _ in range(MAX_ROUNDS):
            commands = decide(self.plan, self.state)
            if decide(self.plan, self.state) != commands:
                self.h.unstable_decisions += 1
            self.note_repeats(commands)
            if self.state.finished is not None and not self.open:
                break
            if not commands and not self.open:
                self.h.stuck = True
                break
            self.act(commands)
        self.h.state = self.state
        return self.h

    def act(self, commands: list[Command]) -> None:
        choices = (["orders"] if commands else []) + (["task"] if self.open else [])
        choices += ["redeliver"] if self.delivered and self.mischief < MAX_MISCHIEF else []
        # A cancellation now and then (about one run in four), at any point of the run.
        if not self.h.cancelled and self.pick(CANCEL_NOW):
            choices = ["cancel"]
        choice = self.pick(choices)
        if choice == "orders":
            for command in commands:
                self.carry_out_at_least_once(command)
        elif choice == "task":
            self.end_a_task()
        elif choice == "redeliver":
            self.mischief += 1
            self.record(self.pick(self.delivered))
        else:
            self.h.cancelled = True
            self.record(WorkflowCancelRequested())

    def carry_out_at_least_once(self, command: Command) -> None:
        """Once; or not at all (a crash before recording: decide orders it again); or
        twice (two replicas both carried it out)."""
        copies = 1
        if self.mischief < MAX_MISCHIEF:
            copies = self.pick([1, 0, 2])
            self.mischief += copies != 1
        for _ in range(copies):
            self.carry_out(command)

    def note_repeats(self, commands: list[Command]) -> None:
        """Orders whose effect is already in the state: decide must never give them."""
        for command in commands:
            if isinstance(command, StartStep | StartForEach | SkipStep | FailStep):
                done = not self.state.steps[command.step_id].pending
            elif isinstance(command, CancelStep):
                done = self.state.steps[command.step_id].cancel_requested
            else:
                done = self.state.finished is not None
            if done:
                self.h.repeated_orders.append(command)

    def carry_out(self, command: Command) -> None:
        task_ids: list[str] = []
        if isinstance(command, StartStep | StartForEach):
            if self.state.steps[command.step_id].pending:
                task_ids = self.start(command)
            else:
                task_ids = list(self.state.steps[command.step_id].task_ids)  # found existing
        elif isinstance(command, CancelStep):
            self.cancel_ordered.update(command.task_ids)
        elif isinstance(command, FailStep):
            if self.state.steps[command.step_id].pending:
                self.h.own_failures.add(command.step_id)
        elif isinstance(command, FinishWorkflow) and self.state.finished is None:
            self.h.finishes.append(command)
            self.h.finished_with_open_tasks += len(self.open)
        self.record(effect(command, task_ids))

    def start(self, command: StartStep | StartForEach) -> list[str]:
        step_id = command.step_id
        self.h.starts.append(step_id)
        if not all(self.state.steps[d].completed for d in self.plan.steps[step_id].depends_on):
            self.h.early_starts.append(step_id)
        if (self.h.own_failures and self.plan.on_failure == "fail_fast") or self.h.cancelled:
            self.h.starts_after_stop.append(step_id)
        if isinstance(command, StartStep):
            self.open[step_key(step_id)] = (step_id, None)
            return [step_key(step_id)]
        keys = [step_key(step_id, n) for n in range(len(command.elements))]
        self.open.update({k: (step_id, n) for n, k in enumerate(keys)})
        return keys

    def end_a_task(self) -> None:
        task_id = self.pick(sorted(self.open))
        step_id, element = self.open[task_id]
        if task_id not in self.running and self.pick([False, True]):
            self.running.add(task_id)
            self.record(StepTaskChanged(step_id, task_id, S.RUNNING, element=element))
            return
        if task_id in self.cancel_ordered:
            status = self.pick([S.CANCELLED, S.CANCELLED, S.COMPLETED, S.FAILED])
        else:
            status = self.pick([S.COMPLETED] * 6 + list(ENDINGS))
        if status in (S.FAILED, S.DEAD_LETTER) or (
            status is S.CANCELLED and task_id not in self.cancel_ordered
        ):
            self.h.own_failures.add(step_id)
        result = {"tag": task_id, "items": list(range(self.pick([2, 0, 1, 3])))}
        error = None if status is S.COMPLETED else TaskError(type="E", message=task_id)
        self.h.results[task_id] = result
        del self.open[task_id]
        self.record(StepTaskChanged(step_id, task_id, status, result, error, element))

    def record(self, fact: Fact) -> None:
        self.delivered.append(fact)
        self.state = evolve(self.state, fact)


def simulate(plan: WorkflowPlan, script: random.Random) -> History:
    return Simulation(plan, script).run()
