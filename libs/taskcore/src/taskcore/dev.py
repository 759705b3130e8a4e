"""``taskcore dev``: the whole system on one machine, in one command.

Starts an embedded MongoDB stand-in when MONGO_URL is unset, checks RabbitMQ, runs the
four services as child processes, and on Ctrl-C (or when any of them dies) stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from taskcore.settings import DEFAULT_PORTS, Settings
from taskcore.standin import MongoStandin, StandinMissing, standin_executable

DEV_KEYS = '{"dev-key": {"user_id": "dev", "role": "admin", "tier": "paid"}}'


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--workdir",
        default=".taskcore-dev",
        help="where the stand-in keeps its pid, log and data files",
    )
    parser.add_argument("--executors", type=int, default=1, help="executor processes")


def broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    if not broker_reachable(settings.rabbitmq_url):
        where = urlsplit(settings.rabbitmq_url)
        print(
            f"taskcore dev: RabbitMQ is not reachable at {where.hostname}:{where.port or 5672} "
            "(RABBITMQ_URL); start it with `rabbitmq-server -detached` and try again.",
            file=sys.stderr,
        )
        return 2
    if not settings.mongo_url:
        try:
            standin_executable()
        except StandinMissing as exc:
            print(f"taskcore dev: {exc}", file=sys.stderr)
            return 2
    env = dict(os.environ)
    env.setdefault("TASKCORE_API_KEYS", DEV_KEYS)
    env.setdefault("TASKCORE_ENABLE_DIAG", "1")  # the diag.* types, for trying things out
    standin = None
    if not settings.mongo_url:
        standin = MongoStandin(workdir=Path(args.workdir).resolve())
        standin.start(data_dir=str(Path(args.workdir).resolve() / "data"))
        env["MONGO_URL"] = standin.url
        print(
            f"taskcore dev: MongoDB stand-in (nx-27017) at {standin.url}, log {standin.log_file}",
            flush=True,
        )
    children = _start_services(env, args.executors)
    api_port = DEFAULT_PORTS["api"]
    print(
        f"taskcore dev: API on http://127.0.0.1:{api_port} "
        + ("(API key: dev-key)" if env["TASKCORE_API_KEYS"] == DEV_KEYS else "")
        + "; Ctrl-C stops everything.",
        flush=True,
    )
    try:
        return _supervise(children)
    finally:
        _stop_all(children)
        if standin:
            standin.stop()


def _start_services(env: dict[str, str], executors: int) -> list[subprocess.Popen[bytes]]:
    children = []
    for service in ("aggregator", "event-bridge", "api"):
        child_env = {**env, "PORT": str(DEFAULT_PORTS[service])}
        children.append(_spawn(service, child_env))
    for i in range(executors):
        child_env = {**env, "PORT": str(DEFAULT_PORTS["executor"] + (10 * i))}
        children.append(_spawn("executor", child_env))
    return children


def _spawn(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "taskcore.cli", service], env=env)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(
                    f"taskcore dev: a service exited with status {child.returncode}; "
                    "stopping the others.",
                    file=sys.stderr,
                )
                return 1
        time.sleep(0.2)  # supervision poll, not synchronisation
    return 0


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
