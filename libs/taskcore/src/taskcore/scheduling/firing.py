"""The schedule sweep: creates exactly one task per due time, in any number of replicas.

For each schedule found due, a replica plans (``plan.plan_firing``), reads the previous
run when ``overlap: skip`` asks for it, then advances the schedule with one write that
is conditional on the due time it read: only the replica whose write lands acts on the
plan. The run it decided on is recorded in that same write (``firing``), then the task
is inserted under an id derived from the schedule and the due time, and the record is
cleared. A replica that dies in between leaves the record, and any sweep re-inserts the
same task a little later (the insert dedupes), so a decided run is never lost or doubled.

A run counts against its owner's submission quota like any submission: a due time whose
owner is over quota creates no task (``taskcore_schedule_runs_total{outcome="over_quota"}``).

It sleeps until the earliest next due time, at most ``interval_s``.
"""

from __future__ import annotations

import logging

from taskcore import metrics
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.clock import to_ms
from taskcore.periodic import Periodic, seconds_until
from taskcore.quotas import Grant, QuotaExceeded, QuotaPolicy, Quotas
from taskcore.scheduling.documents import (
    Schedule,
    ScheduleDocuments,
    from_ms,
    schedule_task_id,
)
from taskcore.scheduling.plan import Overlap, plan_firing
from taskcore.submission import submit_tasks
from taskcore.taskdoc import STATE_FIELDS, ExecState

log = logging.getLogger(__name__)

BATCH = 100
# A decided run not confirmed created after this long is created again (deduped).
STALE_FIRING_S = 10.0


class ScheduleFirer:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        interval_s: float,
        misfire_grace_s: float,
        stale_firing_s: float = STALE_FIRING_S,
        quota_policy: QuotaPolicy | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.quotas = Quotas(store, quota_policy or QuotaPolicy.unlimited())
        self.schedules = ScheduleDocuments(store.db["schedules"], store.documents.clock)
        self.interval_s = interval_s
        self.misfire_grace_s = misfire_grace_s
        self.stale_firing_ms = int(stale_firing_s * 1000)
        self._loop = Periodic("The schedule sweep", interval_s)

    def stop(self) -> None:
        self._loop.stop()

    async def run_forever(self) -> None:
        await self.schedules.ensure_indexes()
        await self._loop.run(self._sweep_then_wait)

    async def _sweep_then_wait(self) -> float:
        await self.sweep()
        return await self.until_next()

    async def until_next(self) -> float:
        """Seconds to sleep: until the earliest next run, at most one interval."""
        next_ms = await self.schedules.next_due_ms()
        return seconds_until(next_ms, self.schedules.clock(), self.interval_s)

    async def sweep(self) -> int:
        """Handle every schedule due now; returns how many tasks it created."""
        now_ms = self.schedules.clock()
        created = await self._recover(now_ms - self.stale_firing_ms)
        for doc in await self.schedules.due(now_ms, BATCH):
            try:
                created += await self._fire(Schedule.of(doc), now_ms)
            except Exception:
                log.exception("Schedule %s could not fire; it will be tried again.", doc["_id"])
        return created

    async def _fire(self, schedule: Schedule, now_ms: int) -> int:
        seen = schedule.next_run_ms
        assert seen is not None  # found due
        now = from_ms(now_ms)
        assert now is not None
        plan = plan_firing(
            schedule.cron, from_ms(seen) or now, now, schedule.catch_up, self.misfire_grace_s
        )
        outcome = "missed" if plan.due is None else "created"
        skip_overlap = plan.due is not None and schedule.overlap is Overlap.SKIP
        if skip_overlap and await self._previous_unfinished(schedule):
            outcome = "skipped_overlap"
        run, grant = None, None
        if outcome == "created" and plan.due is not None:
            grant = await self._take_quota(schedule)
            if grant is None:
                outcome = "over_quota"
            else:
                due_ms = to_ms(plan.due)
                run = (due_ms, schedule_task_id(schedule.id, due_ms))
        next_ms = None if plan.next_run is None else to_ms(plan.next_run)
        if not await self.schedules.advance(schedule.id, seen, next_ms, run):
            if grant is not None:
                await self.quotas.give_back(grant)
            return 0  # another replica decided this due time (or it was paused)
        metrics.SCHEDULE_RUNS.labels(outcome).inc()
        if outcome == "missed":
            log.info("Schedule %s skipped a missed run (catch_up: none).", schedule.id)
        if run is None:
            return 0
        await self._create(schedule, run[0])
        return 1

    async def _take_quota(self, schedule: Schedule) -> Grant | None:
        try:
            return await self.quotas.take(schedule.user_id, schedule.run.get("tier") or "paid", 1)
        except QuotaExceeded:
            log.info("Schedule %s skipped a run: its owner is over quota.", schedule.id)
            return None

    async def _previous_unfinished(self, schedule: Schedule) -> bool:
        if schedule.firing is not None:
            return True  # decided, maybe not inserted yet: running as far as we know
        if schedule.last_task_id is None:
            return False
        doc = await self.store.documents.get(schedule.last_task_id, STATE_FIELDS)
        return doc is not None and not ExecState.of(doc).finished

    async def _create(self, schedule: Schedule, due_ms: int) -> None:
        [run] = await submit_tasks(self.store, self.publisher, [schedule.new_task(due_ms)])
        if run.failed is not None:
            # The store refuses the same document every time: trying again cannot help.
            metrics.SCHEDULE_RUNS.labels("refused").inc()
            log.error("The store refused schedule %s's run: %s", schedule.id, run.failed)
        await self.schedules.settle_firing(schedule.id, due_ms)

    async def _recover(self, older_than_ms: int) -> int:
        """Create the runs other replicas decided on and did not confirm."""
        created = 0
        for doc in await self.schedules.stale_firings(older_than_ms, BATCH):
            firing = doc.get("firing") or {}
            due_ms = firing.get("due_ms")
            if isinstance(due_ms, int):
                log.warning("Creating schedule %s's run at %d left pending.", doc["_id"], due_ms)
                try:
                    await self._create(Schedule.of(doc), due_ms)
                except Exception:  # one schedule must not hold back the others' runs
                    log.exception("Schedule %s's pending run could not be created.", doc["_id"])
                    continue
                created += 1
        return created
