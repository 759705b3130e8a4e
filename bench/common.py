"""What taskcore's bench scripts share: the stack as real processes, counters, CPU and memory.

Everything here starts real things (a RabbitMQ vhost, the MongoDB stand-in, the four
services) and removes them on the way out, Ctrl-C included. Counters are scraped from each
service's ``/metrics``; CPU time and memory are read from ``/proc`` (Linux), so the figures
are counted, never estimated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from taskcore.standin import MongoStandin
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

BENCH_API_KEY = "bench-key"
BENCH_USER = "bench"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"

# The counters the benchmarks divide by the number of tasks, and the labels that split them.
COUNTED: dict[str, tuple[str, ...]] = {
    "taskcore_amqp_messages_published_total": ("exchange",),
    "taskcore_store_commands_total": ("command",),
    "taskcore_store_documents_total": ("kind", "collection"),
    "taskcore_store_bytes_written_total": (),
}
CounterKey = tuple[str, str, str]  # (service, counter, label value)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rabbitmq_base_url() -> str:
    return os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


def env_assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` from the command line, for a setting the services get."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def raise_if_cancelling() -> None:
    """Inside ``except Exception``: re-raise when the run is being interrupted, which a
    library may have turned into an ordinary error (PyMongo does)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def cancel_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM (a CI timeout, ``kill``) cancel the calling task, so every
    clean-up on the way out runs. Installed on the loop rather than left to Python's
    default: a background job (``cmd &``) starts with SIGINT ignored."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)


# ---- the store, the broker and the services ---------------------------------------------


@dataclass(frozen=True)
class StoreServer:
    url: str
    pid: int | None  # the stand-in we started; None for an external MONGO_URL
    kind: str


@contextlib.contextmanager
def store_server(mongo_url: str | None = None) -> Iterator[StoreServer]:
    """``mongo_url`` (or ``MONGO_URL``) when given, else an nx-27017 stand-in for the block."""
    mongo_url = mongo_url or os.environ.get("MONGO_URL") or None
    if mongo_url:
        yield StoreServer(mongo_url, None, "MONGO_URL")
        return
    with tempfile.TemporaryDirectory(prefix="bench-nx-") as workdir:
        standin = MongoStandin(workdir=Path(workdir))
        standin.start()
        try:
            assert standin.process is not None
            yield StoreServer(standin.url, standin.process.pid, "nx-27017 stand-in")
        finally:
            standin.stop()


@contextlib.contextmanager
def fresh_vhost(prefix: str = "bench") -> Iterator[str]:
    """A new RabbitMQ vhost for the block; yields its AMQP URL."""
    vhost = create_vhost(prefix)
    try:
        yield url_for_vhost(rabbitmq_base_url(), vhost)
    finally:
        delete_vhost(vhost)


@dataclass(frozen=True)
class ServiceRef:
    url: str
    pid: int


@dataclass(frozen=True)
class StackTarget:
    """Where a running stack answers: what a benchmark needs to drive and observe it."""

    api_url: str
    api_key: str
    rabbitmq_url: str
    mongo_url: str
    mongo_db: str
    services: dict[str, ServiceRef]  # "api", "executor#1", ...
    log_dir: Path

    def pids(self) -> dict[str, int]:
        return {name: ref.pid for name, ref in self.services.items()}


def stack_env(
    rabbitmq_url: str, mongo_url: str, mongo_db: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db,
        "TASKCORE_API_KEYS": json.dumps(
            {BENCH_API_KEY: {"user_id": BENCH_USER, "role": "admin", "tier": "paid"}}
        ),
        "TASKCORE_ENABLE_DIAG": "1",  # the benchmarks run diag.* tasks
        # Documents and bytes written per task are part of what the benchmarks print.
        "TASKCORE_STORE_ACCOUNTING": "1",
        # Logs are part of the cost being measured; keep them to what an operator would.
        "TASKCORE_LOG_FORMAT": "json",
        "TASKCORE_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }


@contextlib.contextmanager
def running_stack(
    rabbitmq_url: str,
    mongo_url: str,
    *,
    executors: int = 1,
    aggregators: int = 1,
    env: Mapping[str, str] | None = None,
    keep_logs: bool = False,
) -> Iterator[StackTarget]:
    """The four services as processes over a fresh database, stopped and dropped after."""
    mongo_db = f"bench_{uuid.uuid4().hex[:10]}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    stack = Stack(env=stack_env(rabbitmq_url, mongo_url, mongo_db, env), log_dir=log_dir)
    try:
        stack.start(executors=executors, aggregators=aggregators)
        yield StackTarget(
            api_url=stack.api.url,
            api_key=BENCH_API_KEY,
            rabbitmq_url=rabbitmq_url,
            mongo_url=mongo_url,
            mongo_db=mongo_db,
            services=_service_refs(stack),
            log_dir=log_dir,
        )
    except Exception:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        noted = log_levels(log_dir)
        if noted:  # kept for reading
            print(f"service logs in {log_dir}: {noted}", file=sys.stderr)
        with MongoClient[dict[str, object]](mongo_url, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(mongo_db)
        if not keep_logs and not noted:
            shutil.rmtree(log_dir, ignore_errors=True)


def log_levels(log_dir: Path) -> dict[str, int]:
    """How many warning, error and critical lines the services logged, by level."""
    levels: dict[str, int] = defaultdict(int)
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            match = re.search(r'"level": "(warning|error|critical)"', line)
            if match:
                levels[match.group(1)] += 1
    return dict(levels)


def _service_refs(stack: Stack) -> dict[str, ServiceRef]:
    refs = {}
    for service, group in stack.processes.items():
        for i, p in enumerate(group, start=1):
            assert p.process is not None
            name = service if len(group) == 1 else f"{service}#{i}"
            refs[name] = ServiceRef(p.url, p.process.pid)
    return refs


def service_kind(name: str) -> str:
    """``executor#2`` -> ``executor``: figures are summed over replicas of a service."""
    return name.split("#", 1)[0]


# ---- counters from /metrics ------------------------------------------------------------


async def scrape_counters(
    http: httpx.AsyncClient, services: Mapping[str, ServiceRef]
) -> dict[CounterKey, float]:
    """The COUNTED counters of every service, by (service, counter, label)."""
    texts = await asyncio.gather(
        *(http.get(f"{ref.url}/metrics", timeout=10) for ref in services.values())
    )
    values: dict[CounterKey, float] = {}
    for name, response in zip(services, texts, strict=True):
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                labels = COUNTED.get(sample.name)
                if labels is not None:
                    split = " ".join(sample.labels.get(label, "") for label in labels)
                    values[(name, sample.name, split)] = sample.value
    return values


async def settled_counters(
    http: httpx.AsyncClient,
    services: Mapping[str, ServiceRef],
    *,
    within_s: float = 10.0,
    interval: float = 0.25,
) -> dict[CounterKey, float]:
    """Scrape until two scrapes in a row agree: the last confirms of a run have landed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    last = await scrape_counters(http, services)
    while loop.time() < deadline:
        await asyncio.sleep(interval)  # the gap between two scrapes that must agree
        now = await scrape_counters(http, services)
        if now == last:
            return now
        last = now
    return last


def counter_delta(
    before: Mapping[CounterKey, float], after: Mapping[CounterKey, float]
) -> dict[CounterKey, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def per_task_counts(delta: Mapping[CounterKey, float], n: int) -> dict[str, dict[str, float]]:
    """``{counter: {"<service> <label>": per task, ..., "total": per task}}``, replicas summed."""
    grouped: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (service, counter, label), value in delta.items():
        grouped[counter][f"{service_kind(service)} {label}"] += value / n
    counts: dict[str, dict[str, float]] = {}
    for counter, rows in grouped.items():
        ordered = {k: round(v, 3) for k, v in sorted(rows.items())}
        counts[counter] = {**ordered, "total": round(sum(rows.values()), 3)}
    return counts


def format_counts(counts: Mapping[str, Mapping[str, float]], extra: Mapping[str, float]) -> str:
    titles = {
        "taskcore_amqp_messages_published_total": "broker messages published per task",
        "taskcore_store_commands_total": "store round trips per task",
        "taskcore_store_documents_total": "store documents per task",
        "taskcore_store_bytes_written_total": "bytes written to the store per task",
    }
    lines = []
    for counter, rows in counts.items():
        lines.append(f"  {titles.get(counter, counter)}:")
        lines.extend(f"    {key:<44}{value:>9.3f}" for key, value in rows.items())
    lines.extend(f"  {key:<46}{value:>9.3f}" for key, value in extra.items())
    return "\n".join(lines)


# ---- CPU and memory from /proc ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """Resident memory now (``VmRSS``) or at its peak so far (``VmHWM``)."""
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    snapshot = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            snapshot[name] = cpu_seconds(pid)
    return snapshot


def cpu_ms_per_task(
    before: Mapping[str, float], after: Mapping[str, float], n: int
) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for name, seconds in after.items():
        totals[service_kind(name)] += seconds - before.get(name, seconds)
    return {name: round(1000 * s / n, 3) for name, s in totals.items()}


def rabbitmq_pid() -> int | None:
    """The local broker's Erlang VM, if it runs here (its CPU is shared with anyone else)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "beam.smp":
                    return int(proc.name)
    return None


@dataclass
class PeakMemory:
    """Samples each process's resident memory in the background, keeping the peak."""

    pids: Mapping[str, int]
    interval_s: float = 0.2
    peaks: dict[str, int] = field(default_factory=dict)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self.peaks[name] = max(self.peaks.get(name, 0), rss_bytes(pid))

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[PeakMemory]:
        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self.interval_s)  # the sampling period

        sampler = asyncio.create_task(loop())
        try:
            yield self
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self.sample()

    def mib(self) -> dict[str, float]:
        return {name: round(peak / 2**20, 1) for name, peak in self.peaks.items()}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def source_version() -> str:
    """The commit being measured, ``+dirty`` when the working tree has changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip()


# ---- profiling with py-spy -------------------------------------------------------------


@dataclass
class Profiler:
    """``py-spy record`` on each process while the block runs, in collapsed-stack format."""

    pids: Mapping[str, int]
    out_dir: Path
    rate: int = 100
    _running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.out_dir / f"{name.replace('#', '-')}.collapsed.txt"

    @contextlib.contextmanager
    def recording(self) -> Iterator[Profiler]:
        beside = Path(sys.executable).with_name("py-spy")  # the venv's, when not on PATH
        exe = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self._running[name] = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking",
                 "--format", "raw", "--output", str(self.path(name))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            yield self
        finally:
            for proc in self._running.values():
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for proc in self._running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def top(self, name: str, limit: int = 12) -> list[tuple[str, float, float]]:
        """The hottest functions: (function, % of samples on CPU in it, % including callees)."""
        return top_functions(self.path(name), limit)


def print_profiles(out_dir: Path) -> None:
    """The hottest functions of each profile ``Profiler`` wrote to ``out_dir``."""
    for path in sorted(out_dir.glob("*.collapsed.txt")):
        print(f"\npy-spy, {path.name.split('.')[0]}: function, % own, % with callees")
        for function, own, inclusive in top_functions(path):
            print(f"  {own:5.1f} {inclusive:5.1f}  {function}")


def top_functions(path: Path, limit: int = 12) -> list[tuple[str, float, float]]:
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return []
    hottest = sorted(own, key=own.__getitem__, reverse=True)[:limit]
    return [
        (f, round(100 * own[f] / total, 1), round(100 * inclusive[f] / total, 1)) for f in hottest
    ]


def _short_frame(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    parts = Path(path).parts
    return f"{function} ({'/'.join(parts[-2:])})"
