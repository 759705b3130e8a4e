"""How taskcore's cost grows with the work: throughput, CPU per task and peak memory.

    python -m bench.scale_curve [--quick] [--executors 1] [--json out.json]

Runs ``diag.noop`` at 1k, 10k and 100k tasks, and one ``diag.fanout`` parent with 10k
children (``--quick``: 1k and 10k noop, then the fanout). Noop tasks go flat out but with
at most ``--window`` of them incomplete at a time (``--window 0``: all at once, which
measures the system under the whole backlog instead). Each stage gets a fresh stack (the
four services as processes), a fresh RabbitMQ vhost and a fresh database on one store (an
nx-27017 stand-in unless ``MONGO_URL`` is set), so each service's peak resident memory
belongs to that stage alone. A stage is done when every task's completed CloudEvent has
reached a subscriber and the projection says COMPLETED (see ``bench/e2e.py``). What to look
for: tasks/s and CPU ms per task flat across stages, peak memory roughly constant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

# Also runnable as a script (python bench/<name>.py): the repository root holds `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PeakMemory,
    cancel_on_signals,
    env_assignment,
    fresh_vhost,
    load_average,
    raise_if_cancelling,
    running_stack,
    source_version,
    store_server,
)
from bench.e2e import Figures, Workload, completion_problems, run_workload


def stages(args: argparse.Namespace) -> list[Workload]:
    sizes = args.sizes or ((1_000, 10_000) if args.quick else (1_000, 10_000, 100_000))
    window, timeout_s = args.window or None, args.stage_timeout
    planned = [Workload(f"noop {n:,}", n, window=window, timeout_s=timeout_s) for n in sizes]
    if args.fanout:
        planned.append(
            Workload(
                f"fanout 1 x {args.fanout:,}",
                1,
                "diag.fanout",
                {"child_type": "diag.noop"},
                children=args.fanout,
                timeout_s=timeout_s,
            )
        )
    return planned


async def run_stage(
    stage: Workload, store_url: str, store_pid: int | None, args: argparse.Namespace
) -> Figures:
    """One stage on a fresh stack: its figures plus the peak RSS of every process."""
    with (
        fresh_vhost("bench-scale") as rabbitmq_url,
        running_stack(
            rabbitmq_url,
            store_url,
            executors=args.executors,
            aggregators=args.aggregators,
            env=dict(args.service_env),
        ) as target,
    ):
        extra = {"store": store_pid} if store_pid else {}
        await run_workload(target, Workload("warm-up", 100, batch_size=50), extra_pids=extra)
        memory = PeakMemory({**target.pids(), **extra, "bench": os.getpid()})
        memory.sample()
        after_warm_up = memory.mib()
        async with memory.watching():
            figures = await run_workload(target, stage, extra_pids=extra)
    figures["rss_after_warm_up_mib"] = after_warm_up
    figures["peak_rss_mib"] = memory.mib()
    return figures


def table(results: list[Figures]) -> str:
    processes = sorted({p for f in results for p in f.get("peak_rss_mib", {})})
    head = (
        f"{'stage':<20}{'tasks':>9}{'s':>9}{'tasks/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'retried':>9}"
    )
    lines = ["throughput and latency", head, "-" * len(head)]
    for f in results:
        if "note" in f:
            lines.append(f"{f['baseline']:<20}  {f['note']}")
            continue
        lines.append(
            f"{f['baseline']:<20}{f['n']:>9,}{f['seconds']:>9.1f}{f['tasks_per_s']:>10.1f}"
            f"{f['p50_ms']:>10.0f}{f['p99_ms']:>10.0f}{f['submit_retries']:>9}"
        )
    for title, key in (
        ("CPU ms per task", "cpu_ms_per_task"),
        ("peak RSS, MiB", "peak_rss_mib"),
        ("RSS after warm-up, MiB", "rss_after_warm_up_mib"),
    ):
        head = f"{'stage':<20}" + "".join(f"{p[:12]:>13}" for p in processes)
        lines += ["", title, head, "-" * len(head)]
        for f in results:
            if key in f:
                cells = "".join(f"{f[key].get(p, float('nan')):>13.2f}" for p in processes)
                lines.append(f"{f['baseline']:<20}{cells}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    cancel_on_signals()
    results: list[Figures] = []
    environment = {
        "cpus": os.cpu_count(),
        "load_average": load_average(),
        "source": source_version(),
        "store": "",
    }
    with store_server() as store:
        environment["store"] = store.kind
        for stage in stages(args):
            print(f"{stage.name} ...", file=sys.stderr, flush=True)
            try:
                results.append(await run_stage(stage, store.url, store.pid, args))
            except Exception as exc:  # one failed stage is reported; the others still run
                raise_if_cancelling()
                results.append({"baseline": stage.name, "note": f"FAILED: {exc!r}"})
    print(
        f"taskcore scale curve: {environment['cpus']} CPUs, {environment['store']}, "
        f"{args.executors} executor(s), load average {environment['load_average']} at start, "
        f"source {environment['source']}"
    )
    print(table(results))
    if args.json:
        report: dict[str, Any] = {"environment": environment, "results": results}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    problems = [
        f"{f['baseline']}: {p}"
        for f in results
        for p in ([f["note"]] if "note" in f else completion_problems(f))
    ]
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k noop only, then fanout")
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        help="noop stage sizes instead, e.g. 100000 or 1000,5000",
    )
    parser.add_argument(
        "--fanout", type=int, default=10_000, help="children of the fanout stage (0: skip it)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=2_000,
        help="at most this many tasks submitted and not yet complete (0: submit all at once)",
    )
    parser.add_argument("--executors", type=int, default=1)
    parser.add_argument("--aggregators", type=int, default=1)
    parser.add_argument(
        "--service-env",
        type=env_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service, e.g. TASKCORE_FOLD_FLUSH_MS=20 (repeatable)",
    )
    parser.add_argument(
        "--stage-timeout", type=float, help="seconds per stage (default: scaled to its size)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; stacks, vhosts and the store were cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
