"""Start and stop the nx-27017 MongoDB stand-in (for ``taskcore dev`` and the tests).

Always on a free port and with its own pid and log files: the stand-in's defaults are
fixed paths, so two instances would collide.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class StandinMissing(RuntimeError):
    """The stand-in is an optional extra (``taskcore[standin]``), not a runtime dependency."""


def standin_executable() -> str:
    """The ``nx-27017`` program: on PATH, or beside this interpreter (an unactivated venv)."""
    beside = Path(sys.executable).with_name("nx-27017")
    found = shutil.which("nx-27017") or (str(beside) if beside.exists() else None)
    if found is None:
        raise StandinMissing(
            "the MongoDB stand-in (nx-27017) is not installed: install it with "
            "`pip install 'taskcore[standin]'` (or `make install`), or set MONGO_URL to a MongoDB."
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MongoStandin:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    data_dir: str = "memory"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        return self.workdir / "nx-27017.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "nx-27017.pid"

    def start(self, *, timeout_s: float = 15.0, data_dir: str | None = None) -> None:
        """Start on ``self.port`` (a free one the first time). ``data_dir`` "memory" keeps
        nothing; a directory keeps the data across restarts. Default: what the last start
        used, else memory."""
        self.data_dir = data_dir or self.data_dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.pid_file.unlink(missing_ok=True)
        exe = standin_executable()
        self.process = subprocess.Popen(
            [
                exe,
                "--data-dir",
                self.data_dir,
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--pid-file",
                str(self.pid_file),
                "--log-file",
                str(self.log_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )
        self._wait_listening(timeout_s)

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited at start; see {self.log_file}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port with a deadline
        raise RuntimeError(f"nx-27017 did not listen on {self.port} within {timeout_s}s")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port and data (a fault test: the store goes
        away and comes back)."""
        self.stop()
        self.start()
