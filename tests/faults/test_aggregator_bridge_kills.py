"""kill -9 of the aggregator and of the event bridge mid-run, each restarted at once."""

from __future__ import annotations

import pytest

from tests.faults.actions import kill_and_restart
from tests.faults.harness import SOAK, FaultRun
from tests.faults.workload import wait_terminal

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(1800 if SOAK else 240)]

# At these fractions of the run terminal, kill these services.
KILLS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.2, ("aggregator",)),
    (0.4, ("event-bridge",)),
    (0.6, ("aggregator", "event-bridge")),
) + (((0.7, ("event-bridge",)), (0.8, ("aggregator",))) if SOAK else ())


async def test_aggregator_and_bridge_killed_lose_and_double_nothing(run: FaultRun) -> None:
    await run.submit()
    for point, services in KILLS:
        await wait_terminal(run.store, int(run.workload.total * point))
        # When they die mid-batch, with unacked deliveries and uncommitted hand-offs,
        # and come back
        await kill_and_restart(run, *services)
    await run.wait_recovered()
    await run.verify()
