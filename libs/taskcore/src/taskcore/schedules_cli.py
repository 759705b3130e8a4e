"""``taskcore schedules``: recurring schedules at a terminal, over the HTTP API.

The API's address and key come from ``TASKCORE_API_URL`` (default
``http://127.0.0.1:8000``) and ``TASKCORE_API_KEY``, or ``--url`` and ``--key``.

    taskcore schedules list [--all] [--json]
    taskcore schedules show ID [--json]
    taskcore schedules pause ID...
    taskcore schedules resume ID...
    taskcore schedules delete ID...

Schedules are created with ``POST /v1/schedules`` (a JSON body says more than options
would). Exit status: 0 done, 4 the API refused something, 5 the API could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
COLUMNS = ("id", "name", "cron", "timezone", "paused", "next_run_at", "last_task_id")


def add_arguments(parser: argparse.ArgumentParser, name: str = "schedules") -> None:
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help="API URL")
    parser.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"API key (${KEY_ENV})")
    sub = parser.add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="your schedules (and your teams'), newest first")
    listing.add_argument("--limit", type=int, default=50, help="how many (per page)")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="one schedule")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    for action, text in (
        ("pause", "pause schedules (no task is created until resumed)"),
        ("resume", "resume schedules"),
        ("delete", "delete schedules (the tasks they created stay)"),
    ):
        sub.add_parser(action, help=text).add_argument("ids", nargs="+", metavar="ID")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    command: Callable[[httpx.Client, argparse.Namespace, TextIO], int] = COMMANDS[
        args.schedules_command
    ]
    client = httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"Authorization": f"Bearer {args.key}"} if args.key else {},
        timeout=httpx.Timeout(30.0),
    )
    try:
        with client:
            return command(client, args, out)
    except ApiRefused as exc:
        print(f"taskcore schedules {args.schedules_command}: {exc}", file=err)
        return EXIT_API_ERROR
    except httpx.TransportError as exc:
        print(f"taskcore schedules: cannot reach the API at {args.url} ({exc})", file=err)
        return EXIT_UNREACHABLE


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise ApiRefused(response)
    return response.json() if response.content else None


def list_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    cursor: str | None = None
    rows: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": args.limit, **({"cursor": cursor} if cursor else {})}
        page = _ok(client.get("/v1/schedules", params=params))
        rows += page["items"]
        cursor = page["next_cursor"]
        if not (args.all and cursor):
            break
    if args.json:
        for row in rows:
            print(json.dumps(row), file=out)
    else:
        _table(rows, out)
    return EXIT_OK


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    cells = [[_cell(row.get(c)) for c in COLUMNS] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def show_command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
    schedule = _ok(client.get(f"/v1/schedules/{args.id}"))
    if args.json:
        print(json.dumps(schedule), file=out)
        return EXIT_OK
    for key, value in schedule.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else _cell(value)
        print(f"{key + ':':<14} {shown}", file=out)
    return EXIT_OK


def _each(action: str) -> Callable[[httpx.Client, argparse.Namespace, TextIO], int]:
    def command(client: httpx.Client, args: argparse.Namespace, out: TextIO) -> int:
        status = EXIT_OK
        for schedule_id in args.ids:
            if action == "delete":
                response = client.delete(f"/v1/schedules/{schedule_id}")
            else:
                response = client.post(f"/v1/schedules/{schedule_id}/{action}")
            if response.status_code >= 400:
                print(f"{schedule_id}: {ApiRefused(response)}", file=out)
                status = EXIT_API_ERROR
            else:
                print(f"{schedule_id}: {action}d", file=out)
        return status

    return command


COMMANDS: dict[str, Callable[[httpx.Client, argparse.Namespace, TextIO], int]] = {
    "list": list_command,
    "show": show_command,
    "pause": _each("pause"),
    "resume": _each("resume"),
    "delete": _each("delete"),
}
