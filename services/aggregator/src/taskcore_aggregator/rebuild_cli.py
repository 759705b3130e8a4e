"""``taskcore rebuild [--task ID]... [--check]``: projections recomputed from the event log.

Reads ``MONGO_URL`` and ``MONGO_DB`` like the services. Exit status: 0 when done (with
``--check``: when every projection already equals the log's fold), 1 when ``--check``
found differences, 2 when the store cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from taskcore.service import StoreUnavailable, open_store
from taskcore.settings import Settings

from taskcore_aggregator.rebuild import rebuild


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = f"taskcore {name}: recompute task projections from the event log."
    parser.add_argument(
        "--task",
        dest="tasks",
        action="append",
        metavar="ID",
        help="rebuild only this task (repeatable); its parent's counters are recounted too",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; list projections that differ from the log and exit 1 if any",
    )
    parser.add_argument("--chunk", type=int, default=500, help="tasks folded per round trip")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except StoreUnavailable as exc:
        print(f"taskcore rebuild: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    store = await open_store(Settings())
    try:
        report = await rebuild(store, task_ids=args.tasks, check=args.check, chunk=args.chunk)
    finally:
        await store.close()
    print(report.summary(args.check))
    for task_id in (
        report.differing[:20] + report.counters_differing[:20] + report.usage_differing[:20]
    ):
        print(f"  {task_id}")
    return 1 if args.check and not report.clean else 0
