"""Measure the baselines taskcore's figures are compared with, on this machine, now.

    python bench/baselines_cli.py --n 20000 [--celery-n 5000] [--runs 3] [--json out.json]

RabbitMQ from ``RABBITMQ_URL`` (default amqp://guest:guest@127.0.0.1:5672/); the Celery
result backend on ``MONGO_URL``, or on an nx-27017 stand-in started for the run. With
several runs, the table shows the median of each figure. Every baseline has its own
deadline, and queues, vhosts, databases and subprocesses are removed on the way out, Ctrl-C
included. A baseline that fails is reported in its row and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import celery

# Run as a file (`python bench/baselines_cli.py`) or a module (`python -m bench.baselines_cli`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import (
    broker_version,
    celery_paced_latency,
    celery_with_mongo_backend,
    celery_without_backend,
    confirmed_publish_rate,
    consume_rate,
    format_table,
    median_figures,
    mongo_store,
    paced_latency,
    publish_consume_rate,
)

BROKER_BASELINES = ("publish", "publish-consume", "paced", "consume")
CELERY_BASELINES = ("celery-mongo", "celery-paced", "celery-plain")
Figures = dict[str, Any]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per broker baseline")
    parser.add_argument("--celery-n", type=int, default=5_000, help="tasks per Celery baseline")
    parser.add_argument("--rate", type=float, default=1_000, help="paced publish rate, msgs/s")
    parser.add_argument(
        "--celery-rate", type=float, default=200, help="paced Celery submit rate, tasks/s"
    )
    parser.add_argument("--seconds", type=float, default=5, help="length of each paced run")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    parser.add_argument(
        "--only",
        default=",".join(BROKER_BASELINES + CELERY_BASELINES),
        help="comma-separated subset of: " + ", ".join(BROKER_BASELINES + CELERY_BASELINES),
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(BROKER_BASELINES + CELERY_BASELINES)
    if unknown:
        parser.error(f"unknown baselines: {', '.join(sorted(unknown))}")
    return args


def _failed(name: str, exc: BaseException) -> Figures:
    return {"baseline": name, "note": f"FAILED: {exc.__class__.__name__}: {exc}"}


async def _broker_run(url: str, args: argparse.Namespace) -> list[Figures]:
    planned = {
        "publish": lambda: confirmed_publish_rate(url, args.n),
        "publish-consume": lambda: publish_consume_rate(url, args.n, args.prefetch),
        "paced": lambda: paced_latency(url, args.rate, args.seconds, prefetch=args.prefetch),
        "consume": lambda: consume_rate(url, args.n, args.prefetch),
    }
    figures = []
    for name in BROKER_BASELINES:
        if name in args.only:
            try:
                figures.append(await planned[name]())
            except Exception as exc:
                figures.append(_failed(f"raw_broker.{name}", exc))
    return figures


def _celery_run(url: str, store_url: str | None, args: argparse.Namespace) -> list[Figures]:
    planned: dict[str, Callable[[], Figures]] = {
        "celery-mongo": lambda: celery_with_mongo_backend(url, args.celery_n, store_url),
        "celery-paced": lambda: celery_paced_latency(
            url, args.celery_rate, args.seconds, store_url
        ),
        "celery-plain": lambda: celery_without_backend(url, args.celery_n),
    }
    figures = []
    for name in CELERY_BASELINES:
        if name in args.only:
            try:
                figures.append(planned[name]())
            except Exception as exc:
                figures.append(_failed(name.replace("-", "."), exc))
    return figures


def _environment(url: str, store: str | None) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "broker": asyncio.run(broker_version(url)),
        "celery": celery.__version__,
        "store": store,
        "load_average_at_start": os.getloadavg(),
    }


def _medians(runs: list[list[Figures]]) -> list[Figures]:
    by_name: dict[str, list[Figures]] = {}
    for run in runs:
        for figures in run:
            by_name.setdefault(figures["baseline"], []).append(figures)
    return [median_figures(all_runs) for all_runs in by_name.values()]


def _write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


def _interrupt_on_sigterm() -> None:
    """Clean up on SIGTERM (a CI timeout, ``kill``) exactly as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # Through the SIGINT handler in force: inside asyncio.run, that one cancels the
        # main task, so its async clean-up (queue deletion) still gets to run.
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _interrupt_on_sigterm()
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    mongo_url = os.environ.get("MONGO_URL") or None
    runs: list[list[Figures]] = []
    started = time.time()
    try:
        store = (
            mongo_store(mongo_url) if "celery-mongo" in args.only else contextlib.nullcontext(None)
        )
        with store as store_url:
            environment = _environment(url, "MONGO_URL" if mongo_url else "nx-27017 stand-in")
            for run in range(1, args.runs + 1):
                print(f"run {run}/{args.runs} ...", file=sys.stderr, flush=True)
                runs.append(asyncio.run(_broker_run(url, args)) + _celery_run(url, store_url, args))
    except KeyboardInterrupt:
        print("interrupted; queues, vhosts and subprocesses were cleaned up", file=sys.stderr)
        return 130
    results = _medians(runs)
    load = os.getloadavg()
    environment["load_average_at_end"] = load
    if max(load[0], environment["load_average_at_start"][0]) > (os.cpu_count() or 1):
        print(
            f"warning: the machine was busy (1-min load {load[0]:.1f} at the end); "
            "other work competed with these figures",
            file=sys.stderr,
        )
    print(f"\n{environment['broker']}, Celery {environment['celery']}, {environment['cpus']} CPUs")
    print(format_table(results))
    if args.json:
        _write_json(
            args.json,
            {
                "started_at": started,
                "environment": environment,
                "config": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                },
                "results": results,
                "runs": runs,
            },
        )
    return 1 if any("note" in figures for figures in results) else 0


if __name__ == "__main__":
    sys.exit(main())
