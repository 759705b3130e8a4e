"""A MongoDB stand-in whose data survives a restart, for store-outage fault tests.

The test session's stand-in keeps its databases in memory, so restarting it would lose
everything. This one keeps them in files under ``workdir`` and restarts on the same port,
as a real ``mongod`` restart would look to its clients.
"""

from __future__ import annotations

from pathlib import Path

from taskcore.standin import MongoStandin


class DurableStandin:
    def __init__(self, workdir: Path) -> None:
        self.data_dir = workdir / "data"
        self.standin = MongoStandin(workdir=workdir / "run")

    @property
    def url(self) -> str:
        return self.standin.url

    def start(self) -> DurableStandin:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.standin.start(data_dir=str(self.data_dir))
        return self

    def stop(self, *, kill: bool = False) -> None:
        self.standin.stop(kill=kill)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL with ``kill``) and start again on the same port, with
        the same files. (``MongoStandin.restart`` starts in memory.)"""
        self.stop(kill=kill)
        self.start()
