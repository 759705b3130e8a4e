"""``taskcore submit``, ``submit-workflow`` and ``watch``: the HTTP API at a terminal.

The API's address and key come from ``TASKCORE_API_URL`` (default
``http://127.0.0.1:8000``) and ``TASKCORE_API_KEY``, or ``--url`` and ``--key``.

    taskcore submit diag.sleep --param seconds=3 --watch
    taskcore submit-workflow examples/novel_import.json --watch
    taskcore watch 5f0c...

``watch`` follows the task's Server-Sent Events stream with a progress bar until the
task ends (reconnecting with ``Last-Event-ID`` if the connection drops) and exits with
a status that says how it ended (see ``EXIT_STATUS``). A workflow is shown step by step
instead (``taskcore.workflow_watch``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from taskcore.workflows.plan import WORKFLOW_TASK_TYPE

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TASKCORE_API_URL"
KEY_ENV = "TASKCORE_API_KEY"

EXIT_STATUS = {
    "COMPLETED": 0,
    "FAILED": 1,
    "DEAD_LETTER": 1,
    "COMPLETED_WITH_ERRORS": 2,
    "CANCELLED": 3,
}
EXIT_API_ERROR = 4  # the API refused the request (unknown task, bad key, invalid input)
EXIT_UNREACHABLE = 5  # the API could not be reached, even after retrying
TERMINAL = frozenset(EXIT_STATUS)

_EXIT_HELP = (
    "exit status: 0 COMPLETED, 1 FAILED or DEAD_LETTER, 2 COMPLETED_WITH_ERRORS, "
    f"3 CANCELLED, {EXIT_API_ERROR} refused by the API, {EXIT_UNREACHABLE} API unreachable"
)


class ApiRefused(Exception):
    def __init__(self, response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            text = f"{error['message']} ({error['code']})"
            for item in error.get("details") or []:
                if isinstance(item, dict) and "field" in item:
                    text += f"\n  {item['field']}: {item.get('reason', '')}"
        except (ValueError, KeyError, TypeError):
            text = response.text[:500]
        super().__init__(f"HTTP {response.status_code}: {text}")
        self.status = response.status_code


# ---- arguments ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.set_defaults(client_command=name)
    if name == "dlq":
        _dlq_add_arguments(parser)
        return
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help="API URL")
    parser.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"API key (${KEY_ENV})")
    if name == "submit":
        _submit_arguments(parser)
    elif name == "submit-workflow":
        _submit_workflow_arguments(parser)
    elif name == "watch":
        parser.epilog = _EXIT_HELP
        parser.add_argument("task_id")
        parser.add_argument("--json", action="store_true", help="print each event as JSON")
        _interval_argument(parser)


def _interval_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="a workflow's steps are read this often (at least 0.1 s; default 1)",
    )


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "With --watch, " + _EXIT_HELP
    parser.add_argument("task_type", help="a registered task type (see GET /v1/task-types)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter; VALUE is read as JSON when it parses (3, true, [1]), else as a "
        "string; dotted keys nest (a.b=1)",
    )
    parser.add_argument("--params-json", help="all parameters as one JSON object")
    parser.add_argument("--priority", type=int)
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--idempotency-key")
    parser.add_argument("--wait", type=float, help="wait up to SECONDS for the task to end")
    parser.add_argument("--watch", action="store_true", help="follow it until it ends")
    parser.add_argument("--quiet", action="store_true", help="print only the task id")


def _submit_workflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "With --watch, " + _EXIT_HELP
    parser.add_argument(
        "file", metavar="FILE.json", help="the workflow (POST /v1/workflows' body); - for stdin"
    )
    parser.add_argument("--idempotency-key")
    parser.add_argument("--watch", action="store_true", help="follow its steps until it ends")
    parser.add_argument("--quiet", action="store_true", help="print only the workflow's id")
    _interval_argument(parser)


def parse_params(pairs: list[str], params_json: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(params_json) if params_json else {}
    if not isinstance(params, dict):
        raise ValueError("--params-json must be a JSON object")
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        target = params
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--param {pair!r}: {part!r} is not an object")
        target[leaf] = value
    return params


# ---- running -----------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    command = args.client_command
    if command == "dlq":
        return _dlq_run(args)
    client = httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"Authorization": f"Bearer {args.key}"} if args.key else {},
        timeout=httpx.Timeout(30.0, read=90.0),
    )
    try:
        with client:
            if command == "submit":
                return submit(client, args, sys.stdout, sys.stderr)
            if command == "submit-workflow":
                return submit_workflow(client, args, sys.stdout, sys.stderr)
            return watch(
                client,
                args.task_id,
                sys.stdout,
                sys.stderr,
                as_json=args.json,
                interval=args.interval,
            )
    except ApiRefused as exc:
        print(f"taskcore {command}: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    except httpx.TransportError as exc:
        print(f"taskcore {command}: cannot reach the API at {args.url} ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE


def submit(client: httpx.Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        params = parse_params(args.param, args.params_json)
    except ValueError as exc:
        print(f"taskcore submit: {exc}", file=err)
        return EXIT_API_ERROR
    body: dict[str, Any] = {"task_type": args.task_type, "parameters": params}
    if args.priority is not None:
        body["priority"] = args.priority
    if args.max_attempts is not None:
        body["max_attempts"] = args.max_attempts
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    query = {"wait": args.wait} if args.wait else {}
    response = client.post("/v1/tasks", json=body, headers=headers, params=query)
    if response.status_code not in (200, 202):
        raise ApiRefused(response)
    task = response.json()
    print(task["id"] if args.quiet else json.dumps(task, indent=2), file=out)
    if args.watch:
        return watch(client, task["id"], out, err)
    if args.wait and task["status"] in TERMINAL:
        return EXIT_STATUS[task["status"]]
    return 0


def submit_workflow(
    client: httpx.Client, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    try:
        body = read_workflow(args.file, sys.stdin)
    except (OSError, ValueError) as exc:
        print(f"taskcore submit-workflow: {exc}", file=err)
        return EXIT_API_ERROR
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    response = client.post("/v1/workflows", json=body, headers=headers)
    if response.status_code not in (200, 202):
        raise ApiRefused(response)
    task = response.json()
    print(task["id"] if args.quiet else json.dumps(task, indent=2), file=out)
    if args.watch:
        return watch(client, task["id"], out, err, interval=args.interval)
    return 0


def read_workflow(path: str, stdin: TextIO) -> dict[str, Any]:
    """The workflow in the file at ``path`` (``-``: ``stdin``); ValueError if it is not a
    JSON object, OSError if it cannot be read."""
    where = "standard input" if path == "-" else path
    text = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{where} must hold one JSON object (the workflow), not a list or value")
    return body


# ---- watching ------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str = "message"
    id: str | None = None
    data: str = ""


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from a stream of lines (comments, such as keep-alives, skipped)."""
    current = SseEvent()
    data: list[str] = []
    for line in lines:
        if not line:
            if data or current.id is not None:
                current.data = "\n".join(data)
                yield current
            current, data = SseEvent(), []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "data":
            data.append(value)


@dataclass
class Progress:
    """What the watcher knows so far, and how to draw it."""

    status: str = "?"
    progress: dict[str, Any] | None = None
    task: dict[str, Any] = field(default_factory=dict)

    def apply(self, event: SseEvent) -> None:
        payload = json.loads(event.data)
        if event.event == "state":
            self.task = payload
            self.status, self.progress = payload["status"], payload.get("progress")
            return
        self.status = payload["status"]
        data = payload.get("data") or {}
        if "progress" in data:
            self.progress = data["progress"]
        for key in ("result", "error"):
            if key in data:
                self.task[key] = data[key]

    @property
    def fraction(self) -> float | None:
        if self.status == "COMPLETED":
            return 1.0
        p = self.progress or {}
        for done, total in (("done", "total"), ("completed", "total"), ("elapsed_seconds", "of")):
            if isinstance(p.get(done), int | float) and isinstance(p.get(total), int | float):
                return max(0.0, min(1.0, float(p[done]) / p[total])) if p[total] else 1.0
        if isinstance(p.get("percent"), int | float):
            return max(0.0, min(1.0, float(p["percent"]) / 100))
        return None

    def line(self, width: int = 30) -> str:
        fraction = self.fraction
        if fraction is None:
            bar = "[" + "?" * width + "]     "
        else:
            filled = round(fraction * width)
            bar = f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"
        details = " ".join(f"{k}={v}" for k, v in (self.progress or {}).items())
        return f"{bar} {self.status:<22} {details}".rstrip()


def watch(
    client: httpx.Client,
    task_id: str,
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    reconnects: int = 10,
    interval: float = 1.0,
) -> int:
    task = get_json(client, f"/v1/tasks/{task_id}", reconnects=reconnects)
    if task.get("task_type") == WORKFLOW_TASK_TYPE:
        from taskcore.workflow_watch import watch_workflow  # it builds on this module

        return watch_workflow(
            client, task, out, err, as_json=as_json, interval=interval, reconnects=reconnects
        )
    state = Progress()
    tty = err.isatty()
    for event in follow(client, task_id, reconnects=reconnects):
        state.apply(event)
        if as_json:
            print(json.dumps(event_json(event)), file=out)
        else:
            print(("\r" if tty else "") + state.line(), end="" if tty else "\n", file=err)
    return _finish(state, out, err, tty, as_json)


def event_json(event: SseEvent) -> dict[str, Any]:
    """How ``watch --json`` prints a stream event: one JSON object per line."""
    return {"event": event.event, "id": event.id, "data": json.loads(event.data)}


def follow(client: httpx.Client, task_id: str, *, reconnects: int = 10) -> Iterator[SseEvent]:
    """The task's stream, up to and including its terminal event. A dropped connection is
    resumed with ``Last-Event-ID`` (no gap, no repeat), after ``reconnects`` failures in a
    row the ``httpx.TransportError`` is raised; a refusal is ``ApiRefused``."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            for event in _stream(client, task_id, last_id):
                failures = 0
                last_id = event.id or last_id
                yield event
                if json.loads(event.data).get("status") in TERMINAL:
                    return
        except httpx.TransportError:
            failures += 1
            if failures > reconnects:
                raise
            time.sleep(min(5.0, 0.5 * failures))  # back off before reconnecting
        # The stream ended without a terminal event (the API restarted): resume.


def get_json(
    client: httpx.Client,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    reconnects: int = 10,
) -> dict[str, Any]:
    """``GET path``'s JSON, retried like a dropped stream while the API is unreachable."""
    for attempt in Retrying(
        retry=retry_if_exception_type(httpx.TransportError),
        wait=wait_incrementing(start=0.5, increment=0.5, max=5.0),
        stop=stop_after_attempt(reconnects + 1),
        reraise=True,
    ):
        with attempt:
            response = client.get(path, params=params)
    if response.status_code != 200:
        raise ApiRefused(response)
    body: dict[str, Any] = response.json()
    return body


def _stream(client: httpx.Client, task_id: str, last_id: str | None) -> Iterator[SseEvent]:
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    timeout = httpx.Timeout(10.0, read=None)
    with client.stream(
        "GET", f"/v1/tasks/{task_id}/stream", headers=headers, timeout=timeout
    ) as response:
        if response.status_code != 200:
            response.read()
            raise ApiRefused(response)
        yield from parse_sse(response.iter_lines())


def _finish(state: Progress, out: TextIO, err: TextIO, tty: bool, as_json: bool) -> int:
    if tty and not as_json:
        print(file=err)
    if not as_json:
        outcome = {k: state.task.get(k) for k in ("result", "error") if state.task.get(k)}
        print(f"{state.status}" + (f" {json.dumps(outcome)}" if outcome else ""), file=out)
    return EXIT_STATUS[state.status]


# ---- dlq: built by the dead-letter work in taskcore.dlq_cli ------------------------------


def _dlq_module() -> Any:
    try:
        return importlib.import_module("taskcore.dlq_cli")
    except ImportError:
        return None


def _dlq_add_arguments(parser: argparse.ArgumentParser) -> None:
    module = _dlq_module()
    if module is not None:
        module.add_arguments(parser)


def _dlq_run(args: argparse.Namespace) -> int:
    module = _dlq_module()
    if module is None:
        print("taskcore dlq: not available in this installation", file=sys.stderr)
        return EXIT_API_ERROR
    return int(module.run(args))
