"""``taskcore dlq``: dead letters at a terminal, over the HTTP API (administrators only).

The API's address and key come from ``TASKCORE_API_URL`` (default
``http://127.0.0.1:8000``) and ``TASKCORE_API_KEY``, or ``--url`` and ``--key``.

    taskcore dlq list [--reason non_retryable] [--task-type diag.fail] [--error timeout]
    taskcore dlq show ID
    taskcore dlq replay ID... [--parameters '{"times": 0}']
    taskcore dlq replay --filter --reason attempts_exhausted --dry-run
    taskcore dlq replay --filter --task-type diag.fail --rate 5
    taskcore dlq discard ID... [--note "bad input"]
    taskcore dlq job JOB_ID [--resume]

A bulk replay runs on the server as a resumable job; the command follows it and prints
its report (``--no-wait`` prints the job id instead). Exit status: 0 done, 4 the API
refused something, 5 the API could not be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import httpx

from taskcore.client_cli import (
    DEFAULT_URL,
    EXIT_API_ERROR,
    EXIT_UNREACHABLE,
    KEY_ENV,
    URL_ENV,
    ApiRefused,
)

EXIT_OK = 0
FILTERS = {  # option -> the API's filter field
    "task_type": "task_type",
    "reason": "reason",
    "user": "user_id",
    "task": "task_id",
    "since": "since",
    "until": "until",
    "error": "error_contains",
}
POLL_INTERVAL_S = 0.5


def add_dlq_arguments(parser: argparse.ArgumentParser) -> None:
    _connection_options(parser)
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="list dead letters, newest first")
    _filter_options(listing)
    listing.add_argument(
        "--state",
        default="active",
        choices=["active", "pending", "replaying", "replayed", "discarded", "all"],
        help="active (the default) hides discarded ones",
    )
    listing.add_argument("--limit", type=int, default=50, help="how many (per page)")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = sub.add_parser("show", help="one dead letter: error, traceback, headers, body")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="replay dead letters by id, or by --filter")
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--parameters", help="replace the task's parameters (JSON object)")
    replay.add_argument("--filter", action="store_true", help="replay every pending match")
    _filter_options(replay)
    replay.add_argument("--dry-run", action="store_true", help="only count the matches")
    replay.add_argument("--rate", type=float, help="replays per second (server default 20)")
    replay.add_argument("--max", type=int, help="replay at most this many")
    replay.add_argument(
        "--idempotency-key", help="re-running with the same key resumes the same job"
    )
    replay.add_argument("--no-wait", action="store_true", help="print the job id and return")

    discard = sub.add_parser("discard", help="discard dead letters (kept, never replayed)")
    discard.add_argument("ids", nargs="+", metavar="ID")
    discard.add_argument("--note", help="why")

    job = sub.add_parser("job", help="a bulk replay's progress and report")
    job.add_argument("job_id")
    job.add_argument("--resume", action="store_true", help="resume it if its runner died")
    job.add_argument("--json", action="store_true")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    # The ``taskcore`` client may have declared these on the same parser already.
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help="API URL")
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(
            "--key", default=os.environ.get(KEY_ENV), help=f"admin key (${KEY_ENV})"
        )


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-type")
    parser.add_argument("--reason", help="e.g. non_retryable, attempts_exhausted, malformed")
    parser.add_argument("--user", help="the task's user id")
    parser.add_argument("--task", help="a task id")
    parser.add_argument("--since", help="dead-lettered at or after (ISO 8601 with offset)")
    parser.add_argument("--until", help="dead-lettered before (ISO 8601 with offset)")
    parser.add_argument("--error", help="text in the error (case-insensitive)")


def _filter(args: argparse.Namespace) -> dict[str, str]:
    return {field: getattr(args, opt) for opt, field in FILTERS.items() if getattr(args, opt)}


# ---- running -----------------------------------------------------------------------


def run_dlq(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    client = httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"Authorization": f"Bearer {args.key}"} if args.key else {},
        timeout=httpx.Timeout(30.0),
    )
    command: Callable[[httpx.Client, argparse.Namespace, TextIO], int] = COMMANDS[args.dlq_command]
    try:
        with client:
            return command(client, args, out)
    except ApiRefused as exc:
        print(f"taskcore dlq {args.dlq_command}: {exc}", file=err)
        return EXIT_API_ERROR
    except httpx.TransportError as exc:
        print(f"taskcore dlq: cannot reach the API at {args.url} ({exc})", file=err)
        return EXIT_UNREACHABLE
    except ValueError as exc:
        print(f"taskcore dlq {args.dlq_command}: {exc}", file=err)
        return EXIT_API_ERROR


# The names ``taskcore.client_cli`` calls.
add_arguments = add_dlq_arguments
run = run_dlq


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise ApiRefused(response)
    return response.json()


def list_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {**_filter(args), "state": args.state, "limit": args.limit}
    rows: list[dict[str, Any]] = []
    while True:
        page = _ok(client.get("/v1/dead-letters", params=params))
        rows.extend(page["items"])
        if not (args.all and page["next_cursor"]):
            break
        params["cursor"] = page["next_cursor"]
    if args.json:
        for row in rows:
            print(json.dumps(row), file=out)
    else:
        _table(rows, out)
        if not args.all and page["next_cursor"]:
            print("(more: use --all, or narrow the filter)", file=out)
    return EXIT_OK


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    columns = ("id", "state", "reason", "task_type", "user_id", "dead_lettered_at", "error")
    cells = [
        [
            str(r["id"]),
            str(r["state"]),
            str(r["reason"]),
            str(r["task_type"] or "-"),
            str(r["user_id"] or "-"),
            str(r["dead_lettered_at"])[:19],
            f"{r['error']['type']}: {r['error']['message']}"[:60],
        ]
        for r in rows
    ]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(f"{len(rows)} dead letter(s)", file=out)


def show_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    letter = _ok(client.get(f"/v1/dead-letters/{args.id}"))
    if args.json:
        print(json.dumps(letter, indent=2), file=out)
        return EXIT_OK
    task = letter.get("task")
    for label, value in (
        ("id", letter["id"]),
        ("state", letter["state"]),
        ("reason", letter["reason"]),
        ("source", letter["source"]),
        ("task", f"{letter['task_id']} ({task['status']})" if task else letter["task_id"]),
        ("task type", letter["task_type"]),
        ("user", letter["user_id"]),
        ("dead-lettered at", letter["dead_lettered_at"]),
        ("replayed at", letter["replayed_at"]),
        ("replay of", letter["replay_of"]),
        ("error", f"{letter['error']['type']}: {letter['error']['message']}"),
    ):
        if value is not None:
            print(f"{label:>17}: {value}", file=out)
    if letter["error"].get("traceback"):
        print("\ntraceback:\n" + letter["error"]["traceback"], file=out)
    print("\ndeath history:", file=out)
    for death in letter["death_history"]:
        print("  " + json.dumps(death), file=out)
    print("\nheaders:\n" + json.dumps(letter["headers"], indent=2), file=out)
    print("\nbody:\n" + json.dumps(letter["body"], indent=2), file=out)
    return EXIT_OK


def replay_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.filter == bool(args.ids):
        raise ValueError("give dead letter ids, or --filter (with filter options), not both")
    if args.filter:
        return _bulk_replay(client, args, out)
    body = {"parameters": json.loads(args.parameters)} if args.parameters else {}
    return _each(args.ids, lambda i: client.post(f"/v1/dead-letters/{i}/replay", json=body), out)


def _bulk_replay(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"filter": _filter(args), "dry_run": args.dry_run}
    if args.rate:
        body["rate_per_second"] = args.rate
    if args.max:
        body["max"] = args.max
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    result = _ok(client.post("/v1/dead-letters/replay", json=body, headers=headers))
    if args.dry_run:
        print(
            f"{result['matched']} pending dead letter(s) match; "
            f"a replay would replay {result['would_replay']}.",
            file=out,
        )
        for letter_id in result["sample_ids"]:
            print(f"  {letter_id}", file=out)
        return EXIT_OK
    print(
        f"job {result['id']}: replaying {result['total']} at {result['rate_per_second']:g}/s",
        file=out,
    )
    if args.no_wait:
        return EXIT_OK
    while result["state"] != "done":
        time.sleep(POLL_INTERVAL_S)  # polling the server's job, not synchronising a test
        result = _ok(client.get(f"/v1/dead-letters/replay-jobs/{result['id']}"))
    return _report(result, out)


def _report(job: dict[str, Any], out: TextIO) -> int:
    for item in job["results"]:
        detail = f" ({item['code']}: {item['message']})" if item.get("code") else ""
        print(f"  {item['id']}: {item['outcome']}{detail}", file=out)
    counts = ", ".join(f"{k} {v}" for k, v in job["counts"].items() if v)
    print(
        f"job {job['id']} {job['state']}: {job['position']}/{job['total']} ({counts or 'nothing'})",
        file=out,
    )
    return EXIT_API_ERROR if job["counts"].get("refused") else EXIT_OK


def discard_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    params = {"note": args.note} if args.note else {}
    return _each(args.ids, lambda i: client.delete(f"/v1/dead-letters/{i}", params=params), out)


def _each(ids: list[str], call: Callable[[str], httpx.Response], out: TextIO) -> int:
    """One request per dead letter; a refusal is reported and the rest still go."""
    status = EXIT_OK
    for letter_id in ids:
        try:
            result = _ok(call(letter_id))
        except ApiRefused as exc:
            print(f"{letter_id}: refused: {exc}", file=out)
            status = EXIT_API_ERROR
            continue
        print(f"{letter_id}: {result['outcome']}", file=out)
    return status


def job_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    path = f"/v1/dead-letters/replay-jobs/{args.job_id}"
    job = _ok(client.post(f"{path}/resume") if args.resume else client.get(path))
    if args.json:
        print(json.dumps(job, indent=2), file=out)
        return EXIT_OK
    return _report(job, out)


COMMANDS: dict[str, Callable[[httpx.Client, argparse.Namespace, TextIO], int]] = {
    "list": list_command,
    "show": show_command,
    "replay": replay_command,
    "discard": discard_command,
    "job": job_command,
}
