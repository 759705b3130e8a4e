"""Per-user caps on long-lived requests (event streams, ``?wait=`` submissions), per API
process: one user cannot hold every connection the process can serve.

A slot is held by an object; the per-user sets are weak, so a slot whose holder is
dropped without releasing it (a stream whose response never started) frees itself when
it is garbage-collected. Holders release explicitly for promptness.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator

from taskcore_api.errors import ApiError

RETRY_AFTER_S = 5


class Slot:
    def __init__(self, owner: UserSlots, user_id: str) -> None:
        self._owner = owner
        self.user_id = user_id

    def release(self) -> None:
        self._owner.release(self)


class UserSlots:
    def __init__(self, what: str, limit: int) -> None:
        self.what = what  # "open event streams"
        self.limit = limit
        self._held: dict[str, weakref.WeakSet[Slot]] = defaultdict(weakref.WeakSet)

    def in_use(self, user_id: str) -> int:
        return len(self._held.get(user_id, ()))

    def acquire(self, user_id: str) -> Slot:
        """A slot, or a 429 when the user holds ``limit`` already."""
        held = self._held[user_id]
        if len(held) >= self.limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"You have {self.limit} {self.what} on this server already; close one first.",
                {"limit": self.limit, "retry_after_seconds": RETRY_AFTER_S},
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        slot = Slot(self, user_id)
        held.add(slot)
        return slot

    def release(self, slot: Slot) -> None:
        held = self._held.get(slot.user_id)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._held[slot.user_id]

    @contextlib.contextmanager
    def hold(self, user_id: str) -> Iterator[Slot]:
        slot = self.acquire(user_id)
        try:
            yield slot
        finally:
            slot.release()
