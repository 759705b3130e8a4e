"""Duplicate deliveries of everything, and poison messages for every consumer, mid-run
and after it: no work is done twice, and only the poison becomes dead letters."""

from __future__ import annotations

import pytest

from tests.faults.harness import SOAK, FaultRun
from tests.faults.injectors import (
    dead_letter_reasons,
    duplicate_everything,
    inject_poisons,
    poisons,
)
from tests.faults.workload import wait_terminal

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(1800 if SOAK else 240)]


async def test_duplicates_and_poison_lose_and_double_nothing(run: FaultRun) -> None:
    mid_run, afterwards = poisons(), poisons()
    await run.submit()
    # Given a run under way, when every dispatch, event and hand-off so far is delivered
    # again, and a poison message reaches each consumer
    await wait_terminal(run.store, int(run.workload.total * 0.3))
    early = await duplicate_everything(run)
    await inject_poisons(run, mid_run)
    # and once everything has finished, all of it again
    await wait_terminal(run.store, run.workload.total, within=120)
    late = await duplicate_everything(run)
    await inject_poisons(run, afterwards)
    assert early.dispatches > 0
    # (every task's first dispatch, and each flaky task's retry; the schedule's runs are
    # tasks too)
    assert late.tasks >= run.workload.total
    assert late.dispatches == late.tasks + len(run.submitted.of_kind("flaky"))
    # Then every task still ended once, and only the poison and the doomed tasks are dead
    await run.verify()
    # each poison parked for the reason its consumer gave
    reasons = await dead_letter_reasons(run.store, [p.message_id for p in mid_run + afterwards])
    assert reasons == {p.message_id: (p.reason, p.source) for p in mid_run + afterwards}
    # and the subscriber did see the same CloudEvents more than once, deduplicating them
    assert len(run.subscriber.events) > len(run.subscriber.unique_by_id())
