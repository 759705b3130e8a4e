"""The MongoDB stand-in restarted mid-run: every service rides out the outage and
reconnects on its own, and nothing is lost or doubled."""

from __future__ import annotations

import pytest
from taskcore.testing.durable_standin import DurableStandin

from tests.faults.actions import restart_store
from tests.faults.harness import SOAK, FaultRun
from tests.faults.workload import wait_terminal

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(1800 if SOAK else 240)]

# (fraction of the run terminal, whether the store is killed rather than stopped)
RESTART_POINTS = ((0.2, False), (0.45, True), (0.7, True)) if SOAK else ((0.25, False), (0.6, True))


async def test_store_restart_mid_run_loses_and_doubles_nothing(
    run_on_own_store: FaultRun, standin: DurableStandin
) -> None:
    run = run_on_own_store
    await run.submit()
    for point, crash in RESTART_POINTS:
        await wait_terminal(run.store, int(run.workload.total * point))
        # When the store goes away mid-run (stopped, or killed) until every service
        # notices, and comes back on the same port with the same data, every service
        # recovers by itself
        await restart_store(run, standin, crash=crash)
    await run.verify()
