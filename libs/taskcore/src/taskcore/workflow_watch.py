"""``taskcore watch`` for a workflow: one line per step, kept current until it ends.

A workflow's own stream carries only the workflow's own events (started, the end); its
steps change in their own tasks. So the watcher follows the stream (in a thread,
reconnecting as ``taskcore watch`` does) for the end, and reads ``GET /v1/tasks/{id}``
every ``interval`` seconds (and soon after each event) for the ``workflow`` view, plus,
while a ``for_each`` step runs, its container's ``subtasks`` counters for the elements
done so far (one listing for all of them). A step that failed is explained once: from
the ``task.step_failed`` event in the workflow's log (a failure before it had a task:
the live stream does not carry that internal event), else from its task's error. A poll
that takes long makes the next ones wait longer (at most a tenth of the time is spent
polling), so a huge workflow does not keep the API busy.

On a terminal the lines are redrawn in place; elsewhere (a pipe, a CI log) each line is
printed again only when it changes. The outcome and exit status are ``watch``'s own.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from taskcore.client_cli import (
    EXIT_STATUS,
    TERMINAL,
    ApiRefused,
    SseEvent,
    event_json,
    follow,
    get_json,
)
from taskcore.workflows.tree import FOR_EACH_TASK_TYPE, step_task_id

PENDING = "PENDING"
UNSUCCESSFUL = frozenset({"FAILED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS"})
STEP_FAILED = "task.step_failed"
MIN_INTERVAL = 0.1
SOON_AFTER_EVENT = 0.1  # seconds: the view changes with the event, read it then
MAX_MESSAGE = 100  # characters of a step's error shown on its line

# What the stream's thread hands over: an event, or the exception that ended it.
Item = SseEvent | BaseException | None


@dataclass(frozen=True)
class Elements:
    """A for_each step's elements, from its container's counters."""

    total: int
    done: int
    unsuccessful: int
    container_status: str

    @classmethod
    def of(cls, container: Mapping[str, Any]) -> Elements:
        counts = container.get("subtasks") or {}
        unsuccessful = sum(int(counts.get(k) or 0) for k in ("failed", "cancelled", "dead_letter"))
        return cls(
            total=int(counts.get("total") or 0),
            done=int(counts.get("completed") or 0) + unsuccessful,
            unsuccessful=unsuccessful,
            container_status=str(container.get("status")),
        )


class Board:
    """What the watcher knows of one workflow, and the lines that show it."""

    def __init__(self, task: Mapping[str, Any]) -> None:
        self.task = dict(task)
        self.status = str(task["status"])
        self.errors: dict[str, str] = {}  # step id -> why it did not complete
        self.elements: dict[str, Elements] = {}  # for_each step id -> its elements
        steps = (task.get("parameters") or {}).get("steps") or []
        self.for_each = {
            step_task_id(self.id, s["id"]): s["id"] for s in steps if s.get("for_each") is not None
        }
        self.asked: set[str] = set()  # failed steps' tasks already read for their error

    @property
    def id(self) -> str:
        return str(self.task["id"])

    @property
    def steps(self) -> dict[str, Any]:
        steps: dict[str, Any] = (self.task.get("workflow") or {}).get("steps") or {}
        return steps

    def take_task(self, task: Mapping[str, Any]) -> None:
        self.task = dict(task)
        if task["status"] in TERMINAL or self.status not in TERMINAL:
            self.status = str(task["status"])

    def take_event(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """A stream event (``state`` or a logged event's shape: ``data`` is its payload)."""
        if event_type == "state":
            self.take_task(payload)
            return
        self.status = str(payload.get("status") or self.status)
        data = payload.get("data") or {}
        if event_type == STEP_FAILED and isinstance(data.get("error"), dict):
            self.errors[str(data.get("step_id"))] = _describe(data["error"])

    def take_containers(self, containers: list[Mapping[str, Any]]) -> None:
        for container in containers:
            step_id = self.for_each.get(str(container.get("id")))
            if step_id is not None:
                self.elements[step_id] = Elements.of(container)
                if isinstance(container.get("error"), dict):
                    self.errors[step_id] = _describe(container["error"])

    def take_step_task(self, step_id: str, task: Mapping[str, Any]) -> None:
        self.asked.add(str(task["id"]))
        if isinstance(task.get("error"), dict):
            self.errors[step_id] = _describe(task["error"])

    def wants_elements(self) -> bool:
        """Whether a for_each step has started and its counters may still change."""
        for step_id in self.for_each.values():
            step = self.steps.get(step_id) or {}
            if step.get("status", PENDING) == PENDING:
                continue
            known = self.elements.get(step_id)
            if known is None or known.container_status not in TERMINAL:
                return True
        return False

    def unexplained(self) -> tuple[bool, dict[str, str]]:
        """Failed steps whose error is not known yet: whether one failed before it had a
        task (its error is in the workflow's log), and the plain steps' tasks to read."""
        in_log = False
        tasks: dict[str, str] = {}
        for step_id, step in self.steps.items():
            if step.get("status") not in UNSUCCESSFUL or step_id in self.errors:
                continue
            task_ids = step.get("task_ids") or []
            if not task_ids:
                in_log = True
            elif step_id not in self.for_each.values() and task_ids[0] not in self.asked:
                tasks[step_id] = task_ids[0]
        return in_log, tasks

    def lines(self) -> list[str]:
        view = self.task.get("workflow") or {}
        name = [str(view["name"])] if view.get("name") else []
        header = " ".join(["workflow", *name, self.id]) + f"  {self.status}"
        steps = self.steps
        width = min(30, max((len(s) for s in steps), default=0))
        rows = [header]
        for step_id, step in steps.items():
            status = str(step.get("status", PENDING))
            row = f"  {step_id:<{width}}  {status:<21}  {self._detail(step_id, step)}"
            rows.append(row.rstrip())
        return rows

    def _detail(self, step_id: str, step: Mapping[str, Any]) -> str:
        status = step.get("status", PENDING)
        if status == PENDING:
            after = ", ".join(step.get("depends_on") or [])
            return f"after {after}" if after else ""
        if step_id in self.for_each.values() and step.get("task_ids"):
            return self._elements(step_id, status, len(step["task_ids"]))
        if step_id in self.errors and status != "COMPLETED":
            message = self.errors[step_id]
            return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
        return ""

    def _elements(self, step_id: str, status: str, total: int) -> str:
        elements = self.elements.get(step_id)
        if elements is None or elements.total == 0:
            return f"{total}/{total} elements" if status in TERMINAL else "starting"
        text = f"{elements.done}/{elements.total} elements"
        return text + (f", {elements.unsuccessful} not completed" if elements.unsuccessful else "")

    def view_json(self) -> dict[str, Any]:
        """The board for ``watch --json``: ``{"status", "steps": {id: {"status", "done"?,
        "total"?, "error"?}}}``."""
        steps: dict[str, Any] = {}
        for step_id, step in self.steps.items():
            shown: dict[str, Any] = {"status": step.get("status", PENDING)}
            if step_id in self.elements:
                elements = self.elements[step_id]
                shown |= {"done": elements.done, "total": elements.total}
            if step_id in self.errors and shown["status"] != "COMPLETED":
                shown["error"] = self.errors[step_id]
            steps[step_id] = shown
        return {"status": self.status, "steps": steps}


def _describe(error: Mapping[str, Any]) -> str:
    return f"{error.get('type')}: {error.get('message')}"


class Screen:
    """Where the board is drawn: redrawn in place on a terminal, else changed lines only.

    Plain ANSI cursor movement (up N lines, clear): enough for a block of lines, and no
    terminal library is worth a dependency for it."""

    def __init__(self, stream: TextIO, *, redraw: bool) -> None:
        self.stream = stream
        self.redraw = redraw
        self.shown: list[str] = []

    def show(self, lines: list[str]) -> None:
        if lines == self.shown:
            return
        if self.redraw:
            width = max(20, shutil.get_terminal_size().columns - 1)
            up = f"\x1b[{len(self.shown)}F" if self.shown else ""
            block = "".join(f"\x1b[2K{line[:width]}\n" for line in lines)
            self.stream.write(up + block + "\x1b[J")
        else:
            for i, line in enumerate(lines):
                if i >= len(self.shown) or self.shown[i] != line:
                    self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = lines


class Output:
    """What ``watch`` prints: the board on stderr (``Screen``) and the outcome on stdout;
    with ``--json``, each stream event and each new state of the board on stdout."""

    def __init__(self, out: TextIO, err: TextIO, *, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.screen = Screen(err, redraw=err.isatty() and not as_json)
        self.shown_json: dict[str, Any] | None = None

    def event(self, event: SseEvent) -> None:
        if self.as_json:
            print(json.dumps(event_json(event)), file=self.out, flush=True)

    def board(self, board: Board) -> None:
        if not self.as_json:
            self.screen.show(board.lines())
            return
        current = board.view_json()
        if current != self.shown_json:
            line = {"event": "workflow.steps", "data": current}
            print(json.dumps(line), file=self.out, flush=True)
            self.shown_json = current

    def outcome(self, board: Board) -> None:
        if not self.as_json:
            outcome = {k: board.task.get(k) for k in ("result", "error") if board.task.get(k)}
            print(f"{board.status}" + (f" {json.dumps(outcome)}" if outcome else ""), file=self.out)


def watch_workflow(
    client: httpx.Client,
    task: Mapping[str, Any],
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    interval: float = 1.0,
    reconnects: int = 10,
) -> int:
    """Follow the workflow ``task`` (as just read) until it ends; ``watch``'s exit status."""
    board = Board(task)
    output = Output(out, err, as_json=as_json)
    events = _stream_in_thread(client, board.id, reconnects)
    _follow(client, board, events, output, max(MIN_INTERVAL, interval))
    _poll(client, board)  # the final view: the runtime writes it before the final event
    output.board(board)
    output.outcome(board)
    return EXIT_STATUS[board.status]


def _follow(
    client: httpx.Client, board: Board, events: queue.Queue[Item], output: Output, interval: float
) -> None:
    """Until the stream's terminal event: take events as they come, poll in between."""
    next_poll = time.monotonic() + interval  # the stream's first event brings it forward
    while True:
        item = _next_event(events, next_poll)
        if isinstance(item, BaseException):
            raise item
        if item is not None:
            board.take_event(item.event, json.loads(item.data))
            output.event(item)
            if board.status in TERMINAL:
                return
            next_poll = min(next_poll, time.monotonic() + SOON_AFTER_EVENT)
        if time.monotonic() >= next_poll:
            spent = _poll(client, board)
            next_poll = time.monotonic() + max(interval, 9 * spent)
        output.board(board)


def _stream_in_thread(client: httpx.Client, task_id: str, reconnects: int) -> queue.Queue[Item]:
    """The workflow's stream events, read by a daemon thread into a queue (then an
    exception if it fails). The thread has its own client: httpx clients are not meant to
    be shared between threads."""
    events: queue.Queue[Item] = queue.Queue()
    own = httpx.Client(base_url=client.base_url, headers=client.headers, timeout=client.timeout)

    def read() -> None:
        try:
            with own:
                for event in follow(own, task_id, reconnects=reconnects):
                    events.put(event)
        except BaseException as exc:  # handed to the main thread, which raises it
            events.put(exc)

    threading.Thread(target=read, name=f"watch-{task_id}", daemon=True).start()
    return events


def _next_event(events: queue.Queue[Item], until: float) -> Item:
    try:
        return events.get(timeout=max(0.0, until - time.monotonic()))
    except queue.Empty:
        return None


def _poll(client: httpx.Client, board: Board) -> float:
    """Read the workflow, its running for_each containers and the errors of its failed
    steps; the seconds it took. An unreachable or failing (5xx) API is skipped here: the
    stream's reconnects decide when to give up."""
    began = time.monotonic()
    try:
        board.take_task(get_json(client, f"/v1/tasks/{board.id}", reconnects=0))
        if board.wants_elements():
            query = {"parent_task_id": board.id, "task_type": FOR_EACH_TASK_TYPE, "limit": 100}
            containers = get_json(client, "/v1/tasks", params=query, reconnects=0)["items"]
            board.take_containers(containers)
        in_log, tasks = board.unexplained()
        if in_log:
            query = {"limit": 1000}  # a workflow's own log: a few events per step at most
            log = get_json(client, f"/v1/tasks/{board.id}/events", params=query, reconnects=0)
            for event in log["items"]:
                board.take_event(event["type"], {"data": event.get("data")})
        for step_id, task_id in tasks.items():
            board.take_step_task(step_id, get_json(client, f"/v1/tasks/{task_id}", reconnects=0))
    except httpx.TransportError:
        pass
    except ApiRefused as exc:
        if exc.status < 500:
            raise
    return time.monotonic() - began
