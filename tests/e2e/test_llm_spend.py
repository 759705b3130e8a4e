"""LLM spend through the real services, two executors, against local fake OpenAI-compatible
servers: usage counts every call of every attempt, a parent's is its children's sum, a
budget holds across executor processes, a key-less provider is never called, a refused
key hands the call on, and ``taskcore rebuild`` gives back exactly what live folding made.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from taskcore.testing import wait_for
from taskcore.testing.fake_openai import DEFAULT_REPLY, INVALID_JSON, FakeOpenAI
from taskcore.testing.processes import Stack

from tests.e2e.conftest import ADMIN_KEY, OTHER_KEY, USER_KEY

pytestmark = pytest.mark.e2e

PRICES = {"input_per_million": 2.5, "output_per_million": 10}
GOOD, NOKEY, REVOKED = FakeOpenAI(), FakeOpenAI(), FakeOpenAI()
BUDGET_TOKENS = 490  # bob's daily tokens: five calls of the budget test's size
PROVIDERS = {
    "providers": {
        "nokey": {"kind": "openai", "base_url": NOKEY.base_url, "model": "n",
                  "api_key_env": "SPEND_TEST_UNSET_KEY"},
        "revoked": {"kind": "openai", "base_url": REVOKED.base_url, "model": "r",
                    "api_key_env": "SPEND_TEST_REVOKED_KEY"},
        "fake": {"kind": "openai", "base_url": GOOD.base_url, "model": "m",
                 "api_key_env": "SPEND_TEST_KEY", "max_concurrency": 8, "prices": PRICES},
    },
    "tiers": {"paid": ["nokey", "revoked", "fake"], "free": ["fake"]},
}  # fmt: skip
STACK_ENV = {
    "TASKCORE_PROVIDERS": json.dumps(PROVIDERS),
    "SPEND_TEST_KEY": "good-key",
    "SPEND_TEST_REVOKED_KEY": "a-key-that-was-revoked",
    "TASKCORE_BUDGETS": json.dumps({"users": {"bob": {"daily_tokens": BUDGET_TOKENS}}}),
}
STACK_EXECUTORS = 2
SCHEMA = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}


@pytest.fixture(scope="module", autouse=True)
def fakes() -> Iterator[None]:
    GOOD.start()
    NOKEY.start()
    REVOKED.start()
    GOOD.configure(require_key="good-key")
    REVOKED.configure(require_key="the-right-key")
    yield
    for fake in (GOOD, NOKEY, REVOKED):
        fake.stop()


@pytest.fixture(autouse=True)
def fresh_behaviour() -> None:
    GOOD.reset()
    GOOD.configure(require_key="good-key")


def api(stack: Stack, key: str = USER_KEY) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def submit(stack: Stack, task_type: str, parameters: dict[str, Any], key: str = USER_KEY) -> str:
    with api(stack, key) as client:
        response = client.post("/v1/tasks", json={"task_type": task_type, "parameters": parameters})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finished(stack: Stack, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        with api(stack, ADMIN_KEY) as client:
            task: dict[str, Any] = client.get(f"/v1/tasks/{task_id}").json()
        return None if task["status"] in ("QUEUED", "RUNNING", "RETRYING") else task

    task = wait_for(terminal, timeout=timeout, interval=0.2, message=f"{task_id} terminal")
    assert task is not None
    return task


def words(text: str) -> int:
    return len(text.split())


def cost(prompt: int, completion: int) -> float:
    return (prompt * PRICES["input_per_million"] + completion * PRICES["output_per_million"]) / 1e6


def test_a_task_whose_first_attempt_failed_after_a_call_reports_both_attempts_calls(
    module_stack: Stack,
) -> None:
    # Attempt 1: a reply that is not JSON (answered, so paid for), then a 500 on the
    # repair: the attempt fails and is retried. Attempt 2: a valid reply.
    GOOD.configure(script=["invalid_json", "fail", "ok"])
    messages = [{"role": "user", "content": "Summarise: the river rose and the bridge held."}]
    task_id = submit(module_stack, "llm.structured", {"messages": messages, "json_schema": SCHEMA})

    task = finished(module_stack, task_id)

    assert task["status"] == "COMPLETED", task
    assert task["attempts"] == 2
    assert task["result"]["data"] == DEFAULT_REPLY
    answered = [r for r in GOOD.stats().requests if r.status == 200]
    prompt = sum(words(str(m["content"])) for r in answered for m in r.body["messages"])
    completion = words(INVALID_JSON) + words(json.dumps(DEFAULT_REPLY))
    usage = task["usage"]
    assert (usage["calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (
        2,
        prompt,
        completion,
    )
    assert math.isclose(usage["cost"], cost(prompt, completion), rel_tol=1e-9)
    assert set(usage["by_provider"]) == {"fake"}
    with api(module_stack) as client:
        events = client.get(f"/v1/tasks/{task_id}/events").json()["items"]
    recorded = [e["data"] for e in events if e["type"] == "task.usage_recorded"]
    assert sorted(d["attempt"] for d in recorded) == [1, 2]


def test_a_parents_usage_is_the_sum_of_its_childrens(module_stack: Stack) -> None:
    items = [{"text": f"Text {i}. It has two sentences.", "max_words": 20} for i in range(3)]
    parent_id = submit(module_stack, "batch_generate_summary", {"items": items})

    parent = finished(module_stack, parent_id)

    assert parent["status"] == "COMPLETED", parent
    with api(module_stack) as client:
        listed = client.get("/v1/tasks", params={"parent_task_id": parent_id}).json()["items"]
    children = [finished(module_stack, child["id"]) for child in listed]
    assert len(children) == 3
    summed = {
        field: sum(c["usage"][field] for c in children)
        for field in ("prompt_tokens", "completion_tokens", "calls")
    }
    usage = parent["usage"]
    assert {f: usage[f] for f in summed} == summed
    assert summed["calls"] == 3
    assert math.isclose(usage["cost"], sum(c["usage"]["cost"] for c in children), rel_tol=1e-9)
    assert usage["by_provider"]["fake"]["calls"] == 3


def test_a_key_less_provider_is_never_called_and_a_refused_key_hands_the_call_on(
    module_stack: Stack,
) -> None:
    task = finished(module_stack, submit(module_stack, "llm.chat", {"messages": [
        {"role": "user", "content": "Hello there."}]}))  # fmt: skip

    assert task["status"] == "COMPLETED", task
    assert task["result"]["provider"] == "fake"
    assert NOKEY.stats().total == 0
    assert REVOKED.stats().total >= 1  # asked once (per executor), refused, then benched
    assert {r.status for r in REVOKED.stats().requests} == {401}
    with api(module_stack, ADMIN_KEY) as admin:
        states = {p["name"]: p for p in admin.get("/v1/providers").json()["items"]}
    assert states["nokey"]["state"] == "no_key"
    assert states["revoked"]["state"] == "benched"
    assert "401" in states["revoked"]["bench_reason"]
    assert states["fake"]["state"] == "ready"
    # While benched it is skipped everywhere: another task does not ask it.
    asked = REVOKED.stats().total
    later = finished(module_stack, submit(module_stack, "llm.chat", {"messages": [
        {"role": "user", "content": "Again."}]}))  # fmt: skip
    assert later["status"] == "COMPLETED"
    assert REVOKED.stats().total == asked
    assert NOKEY.stats().total == 0


def test_two_executors_cannot_spend_past_a_budget_by_more_than_one_reservation(
    module_stack: Stack,
) -> None:
    # Each call reserves about 98 tokens (a 7-character prompt and max_tokens 96) and
    # uses 92 (2 prompt words, 90 completion words), slowly enough to overlap.
    GOOD.configure(reply=" ".join(["word"] * 90), delay_s=0.3)
    parameters = {"messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 96}
    reservation = math.ceil(len("Say ok.") / 4) + 96
    # One batch: a submission while reservations fill the budget would be refused (429).
    with api(module_stack, OTHER_KEY) as bob:
        batch = [{"task_type": "llm.chat", "parameters": parameters}] * 12
        results = bob.post("/v1/tasks/batch", json={"tasks": batch}).json()["results"]
    ids = [r["task"]["id"] for r in results]

    tasks = [finished(module_stack, task_id) for task_id in ids]

    done = [t for t in tasks if t["status"] == "COMPLETED"]
    refused = [t for t in tasks if t["status"] == "DEAD_LETTER"]
    assert len(done) + len(refused) == 12
    assert refused, "the budget never refused a call"
    assert {t["error"]["type"] for t in refused} == {"BudgetExceeded"}
    assert len({t["execution_node_id"] for t in tasks}) == 2  # both executors took part
    with api(module_stack, OTHER_KEY) as bob:
        spent = sum(i["prompt_tokens"] + i["completion_tokens"]
                    for i in bob.get("/v1/usage").json()["items"])  # fmt: skip
        budget = bob.get("/v1/quota").json()["budgets"]["daily_tokens"]
    assert spent == sum(t["usage"]["prompt_tokens"] + t["usage"]["completion_tokens"] for t in done)
    assert spent <= BUDGET_TOKENS + reservation
    assert budget["limit"] == BUDGET_TOKENS
    assert budget["used"] == spent  # every reservation settled with what its call used


def rebuild(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGO_URL": stack.env["MONGO_URL"], "MONGO_DB": stack.env["MONGO_DB"]}
    return subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "rebuild", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rebuild_equals_live_for_usage(module_stack: Stack) -> None:
    with api(module_stack, ADMIN_KEY) as admin:
        params = {"group_by": "user,provider,task_type"}
        live_report = admin.get("/v1/usage", params=params).json()
        parents = admin.get("/v1/tasks", params={"task_type": "batch_generate_summary"}).json()
    parent = parents["items"][0]
    assert parent["usage"]["calls"] == 3
    assert live_report["items"], "the earlier tests spent nothing"
    check = rebuild(module_stack, "--check")
    assert check.returncode == 0, check.stdout + check.stderr

    with MongoClient(module_stack.env["MONGO_URL"]) as client:
        db = client[module_stack.env["MONGO_DB"]]
        db.usage_ledger.delete_many({})
        db.tasks.update_one({"_id": parent["id"]}, {"$set": {"descendant_usage": None}})
    assert rebuild(module_stack, "--check").returncode == 1
    assert rebuild(module_stack).returncode == 0

    with api(module_stack, ADMIN_KEY) as admin:
        assert admin.get("/v1/usage", params=params).json() == live_report
        assert admin.get(f"/v1/tasks/{parent['id']}").json()["usage"] == parent["usage"]
    assert rebuild(module_stack, "--check").returncode == 0


def test_a_workflows_usage_is_the_sum_of_its_steps(module_stack: Stack) -> None:
    ask = {"messages": [{"role": "user", "content": "One line, please."}]}
    body = {
        "steps": [
            {"id": "first", "task_type": "llm.chat", "parameters": ask},
            {"id": "second", "task_type": "llm.chat", "parameters": ask, "depends_on": ["first"]},
        ]
    }
    with api(module_stack) as client:
        response = client.post("/v1/workflows", json=body)
    assert response.status_code == 202, response.text

    workflow = finished(module_stack, response.json()["id"])

    assert workflow["status"] == "COMPLETED", workflow
    steps = [
        finished(module_stack, task_id)
        for step in workflow["workflow"]["steps"].values()
        for task_id in step["task_ids"]
    ]
    assert len(steps) == 2
    assert workflow["usage"]["calls"] == 2
    for field in ("prompt_tokens", "completion_tokens", "calls"):
        assert workflow["usage"][field] == sum(s["usage"][field] for s in steps)
