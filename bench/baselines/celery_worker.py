"""A real ``celery worker`` subprocess for the Celery baselines, logging to a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from taskcore.testing.wait import wait_for

from .celery_app import BACKEND_ENV, BROKER_ENV, DATABASE_ENV

CONCURRENCY = 2
_HERE = Path(__file__).resolve().parent
_SUCCEEDED = b"] succeeded in "


class CeleryWorker:
    """A ``celery worker`` subprocess in its own process group, logging to a file."""

    def __init__(self, broker_url: str, backend_url: str | None, database: str | None) -> None:
        fd, log_path = tempfile.mkstemp(prefix="bench-celery-", suffix=".log")
        os.close(fd)  # the worker opens the file itself
        self.log_file = Path(log_path)
        env = {
            **os.environ,
            BROKER_ENV: broker_url,
            BACKEND_ENV: backend_url or "",
            DATABASE_ENV: database or "",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_HERE), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "--pool", "prefork", "--concurrency", str(CONCURRENCY),
                "--loglevel", "INFO", "--logfile", str(self.log_file),
                "--hostname", f"bench-{uuid.uuid4().hex[:8]}@%h",
                # Cluster chatter a single benchmark worker does not need.
                "--without-heartbeat", "--without-gossip", "--without-mingle",
            ],
            cwd=_HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._read_at = 0
        self.succeeded = 0

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"celery worker exited ({self.process.returncode}):\n{self.log_text()}"
            )
        return " ready." in self.log_text()

    def count_succeeded(self) -> int:
        """Count the worker's success lines, reading only what was appended since last time."""
        with self.log_file.open("rb") as log:
            log.seek(self._read_at)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # a half-written line is read next time
        self.succeeded += chunk[:complete].count(_SUCCEEDED)
        self._read_at += complete
        return self.succeeded

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log_file.unlink(missing_ok=True)


@contextlib.contextmanager
def running_worker(
    broker_url: str, backend_url: str | None, database: str | None
) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(broker_url, backend_url, database)
    try:
        wait_for(worker.is_ready, timeout=60, interval=0.1, message="the celery worker to start")
        yield worker
    finally:
        worker.stop()
