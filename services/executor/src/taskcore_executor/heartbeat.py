"""The heartbeat: keep running tasks' leases alive, and notice what changed under them.

One tick extends every running task's lease with one ``update_many`` and reads their
claims back with one ``find``. A task whose claim now names another executor (it was
paused past its lease and someone re-ran it) is abandoned: its outcome would be refused
anyway. A task whose ``cancel_requested`` is set is cancelled, so a lost ``control.cancel``
signal costs one tick at most.
"""

from __future__ import annotations

import asyncio
import logging

from taskcore.adapters.mongo import Store

from taskcore_executor.context import RunningTask

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self, store: Store, running: dict[str, RunningTask], node: str, lease_s: float
    ) -> None:
        self.store = store
        self.running = running
        self.node = node
        self.lease_s = lease_s

    @property
    def interval_s(self) -> float:
        # Three beats per lease: one slow store round trip does not lose the lease.
        return max(0.2, self.lease_s / 3)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
            except Exception:
                log.exception("The heartbeat failed; it will try again.")

    async def beat(self) -> None:
        # Snapshot the attempts themselves: an id may be re-registered by a later attempt.
        attempts = list(self.running.items())
        if not attempts:
            return
        ids = [task_id for task_id, _ in attempts]
        await self.store.documents.extend_leases(ids, self.node, self.lease_s)
        states = await self.store.documents.states(ids)
        for task_id, running in attempts:
            state = states.get(task_id)
            if state is None or running.finishing:
                continue
            if state.claimed_by != self.node or state.claim_no != running.msg.dispatch:
                log.warning(
                    "Task %s is claimed by %s now; this executor abandons its attempt.",
                    task_id,
                    state.claimed_by,
                )
                running.lose()
            elif state.cancel_requested:
                running.cancel()
