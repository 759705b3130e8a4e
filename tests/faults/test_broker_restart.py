"""RabbitMQ restarted mid-run (``rabbitmqctl stop_app`` / ``start_app``): every service
reconnects on its own, and nothing is lost or doubled."""

from __future__ import annotations

import pytest
from taskcore.testing.broker_control import broker_stopped

from tests.faults.actions import restart_broker
from tests.faults.harness import SOAK, FaultRun
from tests.faults.workload import wait_terminal

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(1800 if SOAK else 240)]

# Restarts after the first, each with a fresh wave of the workload in flight.
LATER_RESTARTS = 3 if SOAK else 1


async def test_broker_restart_mid_run_loses_and_doubles_nothing(run: FaultRun) -> None:
    # Given part of the workload under way
    first, during, *later = run.workload.waves(2 + LATER_RESTARTS)
    await run.submit(first)
    await wait_terminal(run.store, int(first.total * 0.3))
    # When the broker goes down while executors finish what they hold, and a client
    # tries to submit more meanwhile; then the broker comes back, and every service
    # reconnects and consumes again by itself
    await restart_broker(run, submit_during=during)
    # When the client retries its submission, each of its tasks is created once
    await run.submit(during)
    # and the broker restarts again, with more work in flight each time
    for wave in later:
        await run.submit(wave)
        await restart_broker(run)
    assert len(run.submitted.items) == len(run.workload.items)
    # Then nothing was lost or doubled
    await run.verify()


async def test_every_service_reports_unready_while_the_broker_is_down(run: FaultRun) -> None:
    async with broker_stopped():
        await run.wait_readiness(False, within=10)
    await run.wait_recovered()
