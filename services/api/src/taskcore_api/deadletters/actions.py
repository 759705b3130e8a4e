"""The actions an administrator takes on dead letters, in one place for the routes, the
bulk-replay jobs and the background sweep."""

from __future__ import annotations

from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.registry import TaskTypeRegistry

from taskcore_api.deadletters.discard import Discarder
from taskcore_api.deadletters.records import RecordState
from taskcore_api.deadletters.replay import Replayer
from taskcore_api.deadletters.repository import DeadLetterRepository
from taskcore_api.deadletters.results import Outcome
from taskcore_api.deadletters.settings import DeadLetterSettings


class DeadLetterActions:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        registry: TaskTypeRegistry,
        settings: DeadLetterSettings,
    ) -> None:
        self.store = store
        self.settings = settings
        self.repo = DeadLetterRepository(store)
        self.replayer = Replayer(store, publisher, registry, settings, self.repo)
        self.discarder = Discarder(store, publisher, registry, settings, self.repo)

    async def replay(
        self,
        record_id: str,
        *,
        by: str,
        parameters: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Outcome:
        """Replay one dead letter (see ``replay``); raises ``ReplayRefused`` or
        ``DeadLetterNotFound``."""
        return await self.replayer.replay(record_id, by=by, parameters=parameters, job_id=job_id)

    async def discard(self, record_id: str, *, by: str, note: str | None = None) -> Outcome:
        return await self.discarder.discard(record_id, by=by, note=note)

    async def resume(self, record_id: str, state: str) -> Outcome | None:
        """Finish a replay or discard whose driver went silent (None: nothing to take)."""
        taken = await self.repo.take_over(
            record_id, state, self.settings.replay_lease_seconds, None
        )
        if taken is None:
            return None
        if state == RecordState.REPLAYING:
            return await self.replayer.drive(taken)
        return await self.discarder.drive(taken)
