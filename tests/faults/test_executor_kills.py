"""kill -9 of an executor, several times during a run."""

from __future__ import annotations

import pytest

from tests.faults.actions import kill_busiest_executor
from tests.faults.harness import SOAK, FaultRun
from tests.faults.workload import wait_terminal

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(1800 if SOAK else 240)]

# Kill when these fractions of the run's tasks are terminal.
KILL_POINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8) if SOAK else (0.1, 0.25, 0.4, 0.55, 0.7)


async def test_executors_killed_repeatedly_lose_and_double_nothing(run: FaultRun) -> None:
    # Given a mixed workload in flight on two executors
    await run.submit()
    interrupted = 0
    for point in KILL_POINTS:
        await wait_terminal(run.store, int(run.workload.total * point))
        # When the busiest executor is killed outright, and a fresh one takes its place
        interrupted += await kill_busiest_executor(run)
    assert interrupted > 0, "no kill caught a task running"
    # Then every task ends once, as it must, and the log, projections, dead letters and
    # the subscriber all agree
    await run.verify()
