"""The ``taskcore`` command: run services, the dev stack, and operator tools."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

SERVICES = {
    "api": "taskcore_api.main",
    "executor": "taskcore_executor.main",
    "aggregator": "taskcore_aggregator.main",
    "event-bridge": "taskcore_event_bridge.main",
}

# Operator commands: each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
TOOLS = {
    "dev": ("taskcore.dev", "run all four services (and a MongoDB stand-in if MONGO_URL is unset)"),
    "rebuild": ("taskcore_aggregator.rebuild_cli", "rebuild projections from the event log"),
    "submit": ("taskcore.client_cli", "submit a task over HTTP"),
    "submit-workflow": ("taskcore.client_cli", "submit a workflow (a JSON file) over HTTP"),
    "watch": (
        "taskcore.client_cli",
        "follow a task's live progress (a workflow's steps) until it ends",
    ),
    "dlq": ("taskcore.client_cli", "inspect and replay dead letters"),
    "schedules": ("taskcore.schedules_cli", "list, show, pause, resume and delete schedules"),
    "topology": ("taskcore.topology_cli", "declare the broker topology (a deployment step)"),
}


def _run_service(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from taskcore.service import run_service

        module = importlib.import_module(SERVICES[name])
        return run_service(name, module.serve)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        p = sub.add_parser(name, help=f"run the {name} service")
        p.set_defaults(func=_run_service(name))
    for name, (module_name, help_text) in TOOLS.items():
        p = sub.add_parser(name, help=help_text)
        try:
            module: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        module.add_arguments(p, name)
        p.set_defaults(func=lambda args, m=module: m.run(args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
