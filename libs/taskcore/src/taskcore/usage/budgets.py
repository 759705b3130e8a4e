"""Per-user spending budgets (``TASKCORE_BUDGETS``), held across every process at once.

Each user has one counter document per UTC month in the ``budgets`` collection
(``_id`` ``<YYYY-MM>|<user id>``): the month's tokens and cost, and the same per day::

    {"totals": {"tokens": 1200, "cost": 540000}, "days": {"04": {"tokens": 300, "cost": ...}}}

A provider call first *reserves* its estimated tokens and cost with one conditional
``$inc`` on that document, whose filter is every configured limit minus the estimate
(``totals.tokens <= monthly_tokens - estimate`` ...): of any number of executors reserving
at once, only those that still fit get through, so together they never pass a budget by
more than what calls use beyond their estimates. Once answered, the call *settles*: the
difference between its real usage and the estimate is added (a call that was not
answered gives the whole estimate back). A reservation whose executor died before
settling stays counted at its estimate: a budget errs on the side of spending less.

A month's document starts from the usage ledger (what the user already spent that month,
so a budget introduced mid-month knows it) and expires 40 days after the month ends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from taskcore.domain.clock import to_ms
from taskcore.domain.usage import nanos_of, units_of
from taskcore.plugin import BudgetExceeded
from taskcore.usage.windows import Period, Window

Doc = dict[str, Any]
Kind = Literal["cost", "tokens"]
KEEP_AFTER_MONTH = timedelta(days=40)


class BudgetLimits(BaseModel):
    """Limits in the currency (cost) and in tokens; None or absent: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_cost: float | None = Field(default=None, ge=0)
    monthly_cost: float | None = Field(default=None, ge=0)
    daily_tokens: int | None = Field(default=None, ge=0)
    monthly_tokens: int | None = Field(default=None, ge=0)

    def over(self, base: BudgetLimits) -> BudgetLimits:
        """These limits where given (an explicit null lifts one), ``base``'s elsewhere."""
        given = self.model_dump(include=self.model_fields_set)
        return base.model_copy(update=given)


class BudgetsConfig(BaseModel):
    """``{"free": {...}, "paid": {...}, "users": {"<user id>": {...}}}``: a user's entry
    overrides their tier's limit by limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    free: BudgetLimits = BudgetLimits()
    paid: BudgetLimits = BudgetLimits()
    users: dict[str, BudgetLimits] = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> BudgetsConfig:
        if isinstance(value, str):
            return cls.model_validate(json.loads(value) if value.strip() else {})
        return cls.model_validate(value or {})

    @property
    def configured(self) -> bool:
        """Whether any budget may apply to anyone (else nothing is counted at all)."""
        return bool(self.users) or any(
            v is not None for limits in (self.free, self.paid) for v in limits.model_dump().values()
        )

    def limits_for(self, user_id: str, tier: str) -> tuple[Limit, ...]:
        base = self.free if tier == "free" else self.paid
        user = self.users.get(user_id)
        limits = user.over(base) if user is not None else base
        found = []
        for window in ("daily", "monthly"):
            cost = getattr(limits, f"{window}_cost")
            tokens = getattr(limits, f"{window}_tokens")
            if cost is not None:
                found.append(Limit(window, "cost", nanos_of(cost)))
            if tokens is not None:
                found.append(Limit(window, "tokens", int(tokens)))
        return tuple(found)


@dataclass(frozen=True)
class Limit:
    window: Window
    kind: Kind
    amount: int  # tokens, or nano-units of the currency

    @property
    def name(self) -> str:
        return f"{self.window}_{self.kind}"

    def path(self, period: Period) -> str:
        """The counter this limit is checked against, in a month's document."""
        return (
            f"totals.{self.kind}" if self.window == "monthly" else f"days.{period.day}.{self.kind}"
        )

    def describe(self, amount: int) -> str:
        return f"{units_of(amount):g}" if self.kind == "cost" else f"{amount} tokens"


@dataclass(frozen=True)
class Standing:
    """How much of one limit is used, and when its window starts over."""

    limit: Limit
    used: int
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit.amount


@dataclass(frozen=True)
class Hold:
    """A reservation to settle: which document and day it was counted in, and how much."""

    doc_id: str
    day: str
    tokens: int
    cost_nanos: int


def _counters(tokens: int, cost: int) -> Doc:
    return {"tokens": tokens, "cost": cost}


class Budgets:
    def __init__(
        self,
        budgets: AsyncCollection[Doc],
        ledger: AsyncCollection[Doc],
        config: BudgetsConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._budgets = budgets
        self._ledger = ledger
        self.config = config
        self._clock = clock

    def limits_for(self, user_id: str, tier: str) -> tuple[Limit, ...]:
        return self.config.limits_for(user_id, tier)

    async def reserve(self, user_id: str, tier: str, tokens: int, cost_nanos: int) -> Hold | None:
        """Count a call's estimate against the user's budgets, or raise ``BudgetExceeded``
        (counting nothing). None when no budget applies to the user."""
        limits = self.limits_for(user_id, tier)
        if not limits:
            return None
        period = Period.of(self._clock())
        doc_id = f"{period.month}|{user_id}"
        condition: Doc = {"_id": doc_id}
        for limit in limits:
            asked = tokens if limit.kind == "tokens" else cost_nanos
            condition[limit.path(period)] = {"$lte": limit.amount - asked}
        increment = {"$inc": _increments(period.day, tokens, cost_nanos)}
        for _ in range(3):  # the document, then the day's counters, may need creating
            if await self._budgets.find_one_and_update(condition, increment, {"_id": 1}):
                return Hold(doc_id, period.day, tokens, cost_nanos)
            doc = await self._budgets.find_one({"_id": doc_id})
            if doc is None:
                await self._create(user_id, period)
            elif period.day not in (doc.get("days") or {}):
                new_day = {f"days.{period.day}.{k}": 0 for k in ("tokens", "cost")}
                await self._budgets.update_one({"_id": doc_id}, {"$max": new_day})
            else:
                raise _exceeded(limits, doc, period, tokens, cost_nanos)
        raise RuntimeError(f"the budget counters {doc_id} could not be created")

    async def settle(self, hold: Hold, tokens: int, cost_nanos: int) -> None:
        """Replace a reservation's estimate with what the call really used."""
        delta_tokens, delta_cost = tokens - hold.tokens, cost_nanos - hold.cost_nanos
        if delta_tokens or delta_cost:
            await self._budgets.update_one(
                {"_id": hold.doc_id}, {"$inc": _increments(hold.day, delta_tokens, delta_cost)}
            )

    async def standing(self, user_id: str, tier: str) -> list[Standing]:
        """Each of the user's limits: used so far in its window, and when that ends."""
        limits = self.limits_for(user_id, tier)
        if not limits:
            return []
        period = Period.of(self._clock())
        doc = await self._counters_for(user_id, period)
        return [
            Standing(limit, _used(doc, limit, period), period.ends(limit.window))
            for limit in limits
        ]

    async def exhausted(self, user_id: str, tier: str) -> list[Standing]:
        """The user's budgets that are used up (a submission is refused while any is)."""
        return [s for s in await self.standing(user_id, tier) if s.exhausted]

    async def _counters_for(self, user_id: str, period: Period) -> Doc:
        """The user's document for the month, created from the ledger if need be."""
        doc = await self._budgets.find_one({"_id": f"{period.month}|{user_id}"})
        return doc if doc is not None else await self._create(user_id, period)

    async def _create(self, user_id: str, period: Period) -> Doc:
        doc_id = f"{period.month}|{user_id}"
        doc = {
            "_id": doc_id,
            "user_id": user_id,
            **await self._spent_so_far(user_id, period),
            # Inserted, never $set, so the stand-in keeps it a datetime for the TTL index.
            "expires_at": period.month_ends + KEEP_AFTER_MONTH,
        }
        with contextlib.suppress(DuplicateKeyError):
            await self._budgets.insert_one(doc)
            return doc
        return await self._budgets.find_one({"_id": doc_id}) or doc

    async def _spent_so_far(self, user_id: str, period: Period) -> Doc:
        match = {
            "user_id": user_id,
            "at_ms": {"$gte": to_ms(period.month_starts), "$lt": to_ms(period.month_ends)},
        }
        pipeline = [
            {"$match": match},
            {
                "$group": {
                    "_id": "$day",
                    "tokens": {"$sum": "$tokens"},
                    "cost": {"$sum": "$cost_nanos"},
                }
            },
        ]
        days: Doc = {}
        async for row in await self._ledger.aggregate(pipeline):
            days[str(row["_id"])[-2:]] = _counters(int(row["tokens"]), int(row["cost"]))
        days.setdefault(period.day, _counters(0, 0))
        totals = _counters(
            sum(d["tokens"] for d in days.values()), sum(d["cost"] for d in days.values())
        )
        return {"totals": totals, "days": days}


def _increments(day: str, tokens: int, cost_nanos: int) -> Doc:
    return {
        "totals.tokens": tokens,
        "totals.cost": cost_nanos,
        f"days.{day}.tokens": tokens,
        f"days.{day}.cost": cost_nanos,
    }


def _used(doc: Doc, limit: Limit, period: Period) -> int:
    counters = (
        doc.get("totals") if limit.window == "monthly" else (doc.get("days") or {}).get(period.day)
    )
    return int((counters or {}).get(limit.kind) or 0)


def _exceeded(
    limits: tuple[Limit, ...], doc: Doc, period: Period, tokens: int, cost_nanos: int
) -> BudgetExceeded:
    """The error naming the (first) limit the call would pass."""
    for limit in limits:
        used = _used(doc, limit, period)
        asked = tokens if limit.kind == "tokens" else cost_nanos
        if used + asked > limit.amount:
            return budget_exceeded(limit, used, period.ends(limit.window), asked)
    # Raced with a settlement that gave some back: refused all the same, by the first.
    limit = limits[0]
    return budget_exceeded(limit, _used(doc, limit, period), period.ends(limit.window), 0)


def budget_exceeded(limit: Limit, used: int, resets_at: datetime, asked: int) -> BudgetExceeded:
    message = (
        f"the {limit.name.replace('_', ' ')} budget of {limit.describe(limit.amount)} is used "
        f"up to {limit.describe(used)}"
    )
    if asked:
        message += f"; this call needs about {limit.describe(asked)} more"
    message += f" (it resets at {resets_at.isoformat()})"
    return BudgetExceeded(message, budget=limit.name, resets_at=resets_at)
