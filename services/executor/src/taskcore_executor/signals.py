"""Cancel signals for tasks this executor was not running when they arrived."""

from __future__ import annotations

import time


class RecentSignals:
    """A signal can land while the claim of that very task is in flight; remembering it for
    a little while lets the task be cancelled as soon as it is registered, instead of at
    the next heartbeat."""

    def __init__(self, keep_s: float = 30.0) -> None:
        self._keep_s = keep_s
        self._seen: dict[str, float] = {}

    def remember(self, task_id: str) -> None:
        now = time.monotonic()
        self._seen = {t: at for t, at in self._seen.items() if now - at < self._keep_s}
        self._seen[task_id] = now

    def __contains__(self, task_id: object) -> bool:
        at = self._seen.get(str(task_id))
        return at is not None and time.monotonic() - at < self._keep_s
