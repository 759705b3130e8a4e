"""``GET /v1/usage`` against the real store and the real fold: over random workloads
(users, teams, task types, providers, days, calls redelivered), every grouping sums to
exactly what the tasks' own ``usage`` says, within what each caller may see."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from taskcore.adapters.mongo import Store
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.usage import ledger
from taskcore.usage.ledger import GROUP_FIELDS
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.retention import Retention

from tests.integration.api.support import (
    ALICE,
    API_KEYS,
    BOB,
    CAROL,
    DAVE,
    ROOT,
    RunningApi,
    submit,
)

DAY0 = datetime(2026, 11, 3, tzinfo=UTC)
RANGE = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-10T00:00:00Z"}
SUBMITTERS = [ALICE, BOB, CAROL, DAVE]
PROVIDERS = ["openai", "offline", "odd,name"]

calls = st.lists(
    st.tuples(
        st.sampled_from(PROVIDERS),
        st.integers(0, 5000),  # prompt tokens
        st.integers(0, 2000),  # completion tokens
        st.integers(0, 10**9),  # cost, nano-units
        st.integers(0, 3),  # day
    ),
    min_size=0,
    max_size=4,
)
workloads = st.lists(
    st.tuples(st.sampled_from(SUBMITTERS), st.booleans(), st.booleans(), calls),
    min_size=1,
    max_size=4,
)


class Ledger:
    """What the module's examples have created so far: every task and its calls."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}  # task id -> its view, once folded
        self.calls: list[dict[str, Any]] = []  # every call, with its task's fields


@pytest.fixture(scope="module")
def made() -> Ledger:
    return Ledger()


def usage_event(task: dict[str, Any], seq: int, call: tuple[str, int, int, int, int]) -> TaskEvent:
    provider, prompt, completion, cost, day = call
    return TaskEvent(
        event_id=event_id_for(task["id"], seq),
        task_id=task["id"],
        sequence=seq,
        type=EventType.USAGE_RECORDED,
        occurred_at=DAY0 + timedelta(days=day, minutes=seq),
        data={
            "provider": provider,
            "model": "m",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_nanos": cost,
            "currency": "USD",
            "user_id": task["user_id"],
            "team_id": task["team_id"],
            "task_type": task["task_type"],
            "tier": task["tier"],
        },
    )


async def run_workload(
    api: RunningApi, store: Store, made: Ledger, workload: list[Any], rng: random.Random
) -> None:
    events: list[TaskEvent] = []
    for key, shared, sleepy, task_calls in workload:
        teams = API_KEYS[key].teams
        body: dict[str, Any] = {"team_id": teams[0]} if shared and teams else {}
        task_type = "diag.sleep" if sleepy else "diag.noop"
        async with api.client(key) as client:
            task = await submit(client, task_type, **body)
        for i, call in enumerate(task_calls):
            events.append(usage_event(task, 1001 + i, call))
            made.calls.append({**task, "call": call})
        made.tasks[task["id"]] = task
    # Redelivered calls, in any order and batches: each counts once.
    stream = events + [e for e in events if rng.random() < 0.4]
    rng.shuffle(stream)
    projector = Projector(store, Retention(timedelta(days=7)))
    for start in range(0, len(stream), 3):
        await projector.fold_batch(stream[start : start + 3])
    async with api.client(ROOT) as root:
        for task_id in made.tasks:
            made.tasks[task_id] = (await root.get(f"/v1/tasks/{task_id}")).json()


def expected_groups(
    made: Ledger, group_by: list[str], visible: Any
) -> dict[tuple[Any, ...], list[int]]:
    """Sums per group from the tasks' usage (and, for days, from the calls made)."""
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    if "day" in group_by:
        for c in made.calls:
            if not visible(c):
                continue
            provider, prompt, completion, cost, day = c["call"]
            values = {
                "user": c["user_id"],
                "team": c["team_id"],
                "task_type": c["task_type"],
                "provider": provider,
                "day": (DAY0 + timedelta(days=day)).date().isoformat(),
            }
            add(sums[tuple(values[g] for g in group_by)], prompt, completion, 1, cost)
        return sums
    for task in made.tasks.values():
        usage = task["usage"]
        if usage is None or not visible(task):
            continue
        values = {"user": task["user_id"], "team": task["team_id"], "task_type": task["task_type"]}
        parts = usage["by_provider"].items() if "provider" in group_by else [(None, usage)]
        for provider, part in parts:
            key = tuple(provider if g == "provider" else values[g] for g in group_by)
            cost = round(part["cost"] * 1e9)
            add(sums[key], part["prompt_tokens"], part["completion_tokens"], part["calls"], cost)
    return sums


def add(total: list[int], prompt: int, completion: int, calls_: int, cost: int) -> None:
    for i, n in enumerate((prompt, completion, calls_, cost)):
        total[i] += n


def reported(response: httpx.Response, group_by: list[str]) -> dict[tuple[Any, ...], list[int]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["currency"] == "USD"
    return {
        tuple(item["group"][g] for g in group_by): [
            item["prompt_tokens"],
            item["completion_tokens"],
            item["calls"],
            round(item["cost"] * 1e9),
        ]
        for item in body["items"]
    }


@given(
    workload=workloads,
    group_by=st.lists(st.sampled_from(GROUP_FIELDS), unique=True, max_size=3),
    seed=st.integers(0, 2**16),
)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
async def test_usage_groups_sum_to_what_the_tasks_say_for_each_caller(
    api: RunningApi,
    api_store: Store,
    made: Ledger,
    workload: list[Any],
    group_by: list[str],
    seed: int,
) -> None:
    await run_workload(api, api_store, made, workload, random.Random(seed))
    params = {**RANGE, "group_by": ",".join(group_by)}

    async with api.client(ROOT) as root:
        everyone = reported(await root.get("/v1/usage", params=params), group_by)
    assert everyone == {
        k: v for k, v in expected_groups(made, group_by, lambda t: True).items() if v[2]
    }

    def alices(task: dict[str, Any]) -> bool:
        return task["user_id"] == "alice" or ("team" in group_by and task["team_id"] == "t1")

    async with api.client(ALICE) as alice:
        hers = reported(await alice.get("/v1/usage", params=params), group_by)
    assert hers == {k: v for k, v in expected_groups(made, group_by, alices).items() if v[2]}


async def test_group_by_may_be_repeated_or_comma_separated(api: RunningApi) -> None:
    async with api.client(ROOT) as root:
        repeated = await root.get(
            "/v1/usage", params=[("group_by", "user"), ("group_by", "day"), *RANGE.items()]
        )
        joined = await root.get("/v1/usage", params={**RANGE, "group_by": "user,day"})
    assert repeated.status_code == joined.status_code == 200
    assert repeated.json() == joined.json()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "user,colour"}, "query.group_by"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "query.to"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "query.to"),
        ({"from": "yesterday"}, "query.from"),
    ],
)
async def test_a_bad_usage_query_is_a_422_naming_the_parameter(
    api: RunningApi, params: dict[str, str], field: str
) -> None:
    async with api.client(ALICE) as alice:
        response = await alice.get("/v1/usage", params=params)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_usage_defaults_to_the_current_utc_month(api: RunningApi) -> None:
    async with api.client(BOB) as bob:
        response = await bob.get("/v1/usage")
    assert response.status_code == 200
    assert response.json() == {"items": [], "currency": "USD"}


async def test_a_report_with_too_many_groups_is_a_422_not_an_unbounded_answer(
    api: RunningApi, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = 0
    workload = [(ALICE, False, False, [(p, 1, 1, 1, day) for p in PROVIDERS])]
    await run_workload(api, store, Ledger(), workload, random.Random(7))
    monkeypatch.setattr(ledger, "MAX_GROUPS", len(PROVIDERS) - 1)

    async with api.client(ROOT) as root:
        response = await root.get("/v1/usage", params={"group_by": "provider", **RANGE})

    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["query.group_by"]
