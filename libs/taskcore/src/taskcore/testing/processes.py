"""The services as real child processes, for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from taskcore.standin import free_port
from taskcore.testing.wait import wait_for

SERVICES = ("api", "executor", "aggregator", "event-bridge")


@dataclass
class ServiceProcess:
    service: str
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.service}-{self.port}.log"

    def start(self, *, wait_ready: bool = True) -> ServiceProcess:
        self.starts += 1
        env = {**os.environ, **self.env, "PORT": str(self.port), "TASKCORE_LOG_FORMAT": "json"}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskcore.cli", self.service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited: {self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=timeout, interval=0.1, message=f"{self.service} ready")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """kill -9: no clean-up, no acks, no goodbyes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """The four services over one broker vhost and one database."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, list[ServiceProcess]] = field(default_factory=dict)

    def start(self, *, executors: int = 1, aggregators: int = 1) -> Stack:
        counts = {"api": 1, "executor": executors, "aggregator": aggregators, "event-bridge": 1}
        for service in ("aggregator", "event-bridge", "executor", "api"):
            self.processes[service] = [
                ServiceProcess(service, self.env, self.log_dir) for _ in range(counts[service])
            ]
        for group in self.processes.values():
            for p in group:
                p.start(wait_ready=False)
        for group in self.processes.values():
            for p in group:
                p.wait_ready()
        return self

    @property
    def api(self) -> ServiceProcess:
        return self.processes["api"][0]

    def all(self) -> list[ServiceProcess]:
        return [p for group in self.processes.values() for p in group]

    def stop(self) -> None:
        for p in self.all():
            if p.process is not None and p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.all():
            if p.process is None:
                continue
            try:
                p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.service}:{p.port}\n{p.log_tail()}" for p in self.all())
