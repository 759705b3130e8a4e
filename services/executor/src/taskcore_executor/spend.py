"""What an attempt's provider calls spend: reserved against the user's budgets before each
call, recorded in the task's event log after it (``TaskContext.spend``).

Each answered call becomes one ``task.usage_recorded`` event, with a sequence from the
claim's block: sent at once and awaited (so it counts towards the task's usage, the
ledger and the dashboards within moments, even if the attempt later fails or its
executor dies), and carried in the outcome's outbox entries if the broker did not
confirm it. Its event id is fixed by its sequence, so however often it is delivered it
is one fact in the log, one row in the ledger and one call in the task's usage.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from taskcore import metrics
from taskcore.adapters.mongo import Store
from taskcore.domain.usage import UsageRecorded, units_of
from taskcore.plugin import BudgetExceeded, MeteredCall
from taskcore.settings import Settings
from taskcore.usage.budgets import Budgets

log = logging.getLogger(__name__)

RecordCall = Callable[[UsageRecorded], Awaitable[None]]


@dataclass(frozen=True)
class Accounts:
    """The process's budgets (None when none is configured) and currency."""

    budgets: Budgets | None
    currency: str

    @classmethod
    def of(cls, settings: Settings, store: Store) -> Accounts:
        config = settings.budgets
        budgets = Budgets(store.budgets, store.usage, config) if config.configured else None
        return cls(budgets, settings.currency)


@dataclass(frozen=True)
class Caller:
    """Who an attempt's calls are for: what each usage event names."""

    user_id: str
    team_id: str | None
    task_type: str
    tier: str
    attempt: int


class AttemptSpend:
    """The ``Spend`` of one attempt."""

    def __init__(self, accounts: Accounts, caller: Caller, record: RecordCall) -> None:
        self._accounts = accounts
        self._caller = caller
        self._record = record

    @contextlib.asynccontextmanager
    async def call(
        self, provider: str, *, tokens: int, cost_nanos: int
    ) -> AsyncIterator[MeteredCall]:
        budgets, caller = self._accounts.budgets, self._caller
        hold = None
        if budgets is not None:
            try:
                hold = await budgets.reserve(caller.user_id, caller.tier, tokens, cost_nanos)
            except BudgetExceeded as exc:
                metrics.BUDGET_REFUSALS.labels(caller.tier, exc.budget, "call").inc()
                raise
        metered = _Metered(self, provider)
        try:
            yield metered
        finally:
            if budgets is not None and hold is not None:
                try:
                    await budgets.settle(hold, metered.tokens, metered.cost_nanos)
                except Exception:  # it stays counted at its estimate: the safe side
                    log.warning("Settling a budget reservation failed.", exc_info=True)

    async def recorded(
        self, provider: str, model: str, prompt: int, completion: int, cost: int
    ) -> None:
        caller = self._caller
        call = UsageRecorded(
            provider=provider,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_nanos=cost,
            currency=self._accounts.currency,
            user_id=caller.user_id,
            team_id=caller.team_id,
            task_type=caller.task_type,
            tier=caller.tier,
            attempt=caller.attempt,
        )
        metrics.LLM_CALLS.labels(provider, caller.tier).inc()
        metrics.LLM_COST.labels(provider, caller.tier).inc(units_of(cost))
        await self._record(call)


class _Metered:
    def __init__(self, spend: AttemptSpend, provider: str) -> None:
        self._spend = spend
        self._provider = provider
        self.tokens = 0
        self.cost_nanos = 0

    async def record(
        self, *, model: str, prompt_tokens: int, completion_tokens: int, cost_nanos: int
    ) -> None:
        self.tokens += prompt_tokens + completion_tokens
        self.cost_nanos += cost_nanos
        await self._spend.recorded(
            self._provider, model, prompt_tokens, completion_tokens, cost_nanos
        )
