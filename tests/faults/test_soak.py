"""The soak (``TASKCORE_SOAK=1``; ``TASKCORE_SOAK_ROUNDS``, default 3): a workload five
times the size, submitted in waves, through every fault in turn, round after round, on a
store that can be restarted too. With ``TASKCORE_SOAK=1`` the other fault tests also run
five times the workload through more faults."""

from __future__ import annotations

import os

import pytest
from taskcore.testing.durable_standin import DurableStandin

from tests.faults.actions import (
    duplicate_and_poison,
    kill_and_restart,
    kill_busiest_executor,
    restart_broker,
    restart_store,
)
from tests.faults.harness import SOAK, FaultRun
from tests.faults.workload import wait_terminal

pytestmark = [
    pytest.mark.faults,
    pytest.mark.e2e,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not SOAK, reason="the soak runs with TASKCORE_SOAK=1"),
]

# How many times every fault is injected (each round with a fresh wave of the workload).
ROUNDS = int(os.environ.get("TASKCORE_SOAK_ROUNDS", "3"))


async def one_round_of_every_fault(run: FaultRun, standin: DurableStandin, n: int) -> None:
    await kill_busiest_executor(run)
    await kill_and_restart(run, "aggregator")
    await restart_broker(run, work_in_hand=False)  # the work may be done by now
    await kill_and_restart(run, "event-bridge")
    await duplicate_and_poison(run)
    await restart_store(run, standin, crash=n % 2 == 1)
    await kill_busiest_executor(run)
    await kill_and_restart(run, "aggregator", "event-bridge", "api")


async def test_soak_every_fault_again_and_again_loses_and_doubles_nothing(
    run_on_own_store: FaultRun, standin: DurableStandin
) -> None:
    run = run_on_own_store
    submitted = 0
    for n, wave in enumerate(run.workload.waves(ROUNDS)):
        await run.submit(wave)
        submitted += wave.total
        await wait_terminal(run.store, submitted - wave.total * 2 // 3, within=300)
        await one_round_of_every_fault(run, standin, n)
    await run.verify(within=600)
