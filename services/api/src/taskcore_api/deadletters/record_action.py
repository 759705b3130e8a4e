"""What every action on a dead-letter record (replay, discard) starts from."""

from __future__ import annotations

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.registry import TaskTypeRegistry

from taskcore_api.deadletters.repository import DeadLetterRepository
from taskcore_api.deadletters.results import DeadLetterNotFound
from taskcore_api.deadletters.settings import DeadLetterSettings


class RecordAction:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        registry: TaskTypeRegistry,
        settings: DeadLetterSettings,
        repo: DeadLetterRepository,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.registry = registry
        self.settings = settings
        self.repo = repo

    async def _get(self, record_id: str) -> Doc:
        record = await self.repo.get(record_id)
        if record is None:
            raise DeadLetterNotFound(record_id)
        return record
