"""Claims and outcomes of concurrent attempts, each batch in one or two round trips.

One attempt costs two store round trips (its claim and its outcome); with many attempts
in flight those dominate the store's load. Here the claims of every message that arrived
together become one ``claim_many`` per dispatch number, and their outcomes one
``finish_many`` (``taskcore.taskdoc``). Anything a batch cannot settle (a duplicate in
the same batch, a refused claim) falls back to the single-task claim, which classifies
refusals and takes over stalled claims.
"""

from __future__ import annotations

from collections import defaultdict

from taskcore.taskdoc import Claim, Finish, TaskDocuments

from taskcore_executor.coalescer import Coalescer

ClaimRequest = tuple[str, int]  # task id, dispatch


class ClaimBatches:
    def __init__(self, documents: TaskDocuments, node: str, lease_s: float) -> None:
        self.documents = documents
        self.node = node
        self.lease_s = lease_s
        self._claims: Coalescer[ClaimRequest, Claim | None] = Coalescer(self._claim_many)
        self._finishes: Coalescer[Finish, bool] = Coalescer(self._finish_many)

    async def claim(self, task_id: str, dispatch: int) -> Claim:
        """The claim, or ``ClaimRefused`` saying why not."""
        claimed = await self._claims.submit((task_id, dispatch))
        if claimed is not None:
            return claimed
        return await self.documents.claim(task_id, dispatch, self.node, self.lease_s)

    async def finish(self, finish: Finish) -> bool:
        """Record an outcome; False if the claim was lost meanwhile."""
        return await self._finishes.submit(finish)

    async def close(self) -> None:
        await self._claims.close()
        await self._finishes.close()

    async def _claim_many(self, requests: list[ClaimRequest]) -> list[Claim | None]:
        by_dispatch: dict[int, list[str]] = defaultdict(list)
        for task_id, dispatch in dict.fromkeys(requests):  # a duplicate takes the single path
            by_dispatch[dispatch].append(task_id)
        claimed: dict[ClaimRequest, Claim] = {}
        for dispatch, task_ids in by_dispatch.items():
            if len(task_ids) == 1:
                continue  # one alone: the single path costs the same round trip
            for claim in await self.documents.claim_many(
                task_ids, dispatch, self.node, self.lease_s
            ):
                claimed[(claim.task_id, dispatch)] = claim
        return [claimed.pop(request, None) for request in requests]  # pop: a duplicate gets None

    async def _finish_many(self, finishes: list[Finish]) -> list[bool]:
        return await self.documents.finish_many(self.node, finishes)
