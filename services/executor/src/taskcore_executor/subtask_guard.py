"""What bounds a running task's subtasks: the tree limits, the submitter's quota and budgets.

Checked before each ``submit_subtasks``, on the children that do not exist yet (a re-run
parent names the same children, so re-submitting them costs nothing). Over a tree limit
the parent fails with the non-retryable ``TreeLimitExceeded``; over the submitter's
quota it waits for the window to reopen (``RateLimitedError``, which uses no attempt);
while one of the submitter's budgets is used up it fails with ``BudgetExceeded``, as a
submission over budget is refused with a 429 (children would only spend what is gone).
A parent's children are counted by reading (one parent runs at a time); a root's
descendants are reserved on the root's document with a conditional ``$inc``, so parents
of one tree creating children at the same moment cannot pass the limit together. A
parent that dies between its reservation and its inserts leaves those counted: the
limit errs towards refusing, never towards more work.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskcore import metrics
from taskcore.adapters.mongo import Store, count_matching
from taskcore.limits import TreeLimitExceeded, TreeLimits
from taskcore.plugin import RateLimitedError
from taskcore.quotas import Grant, QuotaExceeded, Quotas
from taskcore.submission import NewTask
from taskcore.usage.budgets import Budgets, budget_exceeded


@dataclass
class SubtaskGuard:
    store: Store
    limits: TreeLimits
    quotas: Quotas
    budgets: Budgets | None = None

    async def admit(self, parent_id: str, root_id: str, batch: list[NewTask]) -> Grant | None:
        """Check ``batch`` (children of ``parent_id``) against the limits and take quota
        for the new ones; the grant to give back if they are not created after all."""
        if not batch:
            return None
        ids = [new.task_id for new in batch]
        tasks = self.store.tasks
        already = await count_matching(tasks, {"_id": {"$in": ids}})
        fresh = len(ids) - already
        children = await count_matching(tasks, {"parent_task_id": parent_id})
        self.limits.check(depth=batch[0].depth, children=children + fresh, descendants=0)
        if not fresh:
            return None
        new = batch[0]
        if self.budgets is not None:
            for spent in await self.budgets.exhausted(new.user_id, new.tier):
                metrics.BUDGET_REFUSALS.labels(new.tier, spent.limit.name, "subtasks").inc()
                raise budget_exceeded(spent.limit, spent.used, spent.resets_at, 0)
        # Quota first: a parent told to wait for its quota comes back for the same
        # children, and a reservation taken before the wait would count them twice.
        try:
            grant = await self.quotas.take(new.user_id, new.tier, fresh)
        except QuotaExceeded as exc:
            raise RateLimitedError(
                f"creating {fresh} subtasks would pass {new.user_id}'s {exc.window.name} "
                f"quota of {exc.window.limit}",
                retry_after=exc.retry_after_s,
            ) from exc
        limit = self.limits.max_descendants
        if not await self.store.documents.reserve_descendants(root_id, fresh, limit):
            await self.quotas.give_back(grant)
            raise TreeLimitExceeded(
                f"{fresh} more tasks would pass TASKCORE_MAX_DESCENDANTS ({limit}) under "
                f"root {root_id}"
            )
        return grant
