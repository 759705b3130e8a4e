"""Providers against a fake OpenAI-compatible server, and provider limits against the real
store, shared by two processes."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store
from taskcore.plugin import (
    NonRetryableError,
    NoSpend,
    RateLimitedError,
    RetryableError,
    SubtaskSpec,
)
from taskcore.settings import Settings
from taskcore.testing.fake_openai import FakeOpenAI, RecordedRequest
from taskcore_executor.providers.base import ChatMessage, ChatRequest
from taskcore_executor.providers.limits import MongoLimiter, ProviderLimits, ProviderSaturated
from taskcore_executor.providers.offline import OfflineProvider
from taskcore_executor.providers.openai_compat import OpenAICompatProvider
from taskcore_executor.providers.router import ProviderRouter
from taskcore_executor.tasktypes.llm import (
    GenerateSummary,
    GenerateSummaryParams,
    close_task_types,
    create_router,
    registry_task_types,
)

REQUEST = ChatRequest(messages=(ChatMessage(role="user", content="Say something."),))
TEXT = "The river rose overnight. The bridge held. By morning the town was an island."

# The second process: the same limiter over the same database, calling the same fake.
WORKER = """
import asyncio, json, sys
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore_executor.providers.base import ChatMessage, ChatRequest
from taskcore_executor.providers.limits import MongoLimiter, ProviderLimits
from taskcore_executor.providers.openai_compat import OpenAICompatProvider
from taskcore_executor.providers.router import ProviderRouter

async def main(args):
    store = Store(connect_mongo(args["mongo_url"]), args["db"])
    limits = {"fake": ProviderLimits(**args["limits"])}
    limiter = MongoLimiter(store, limits, lease_s=args["lease_s"], rate_window_s=args["window_s"])
    await limiter.ensure("fake")
    if args["mode"] == "hold":
        async with limiter.acquire("fake"):
            print("held", flush=True)
            await asyncio.Event().wait()
    provider = OpenAICompatProvider("fake", base_url=args["base_url"], model="m",
                                    api_key=args["key"])
    router = ProviderRouter({"fake": provider}, {"paid": ["fake"]}, limiter=limiter, max_wait_s=60)
    request = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))
    print("ready", flush=True)
    results = await asyncio.gather(
        *(router.complete(request, tier="paid") for _ in range(args["calls"])),
        return_exceptions=True,
    )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    print(json.dumps({"ok": len(results) - len(errors), "errors": errors}), flush=True)
    await router.aclose()
    await store.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


class TaskContextForTests:
    """A TaskContext for running a task type outside the executor."""

    def __init__(self) -> None:
        self.task_id, self.user_id, self.tier = "t1", "alice", "paid"
        self.attempt, self.retry_count = 1, 0
        self.spend = NoSpend()
        self.log = logging.LoggerAdapter(logging.getLogger("test"), {})
        self.progress: list[dict[str, Any]] = []

    async def update_progress(self, progress: dict[str, Any]) -> None:
        self.progress.append(progress)

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        return [s.key for s in specs]

    def check_cancelled(self) -> None:
        return None

    async def heartbeat(self) -> None:
        return None


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOpenAI) -> FakeOpenAI:
    fake_server.reset()
    return fake_server


MakeProvider = Callable[..., OpenAICompatProvider]


@pytest.fixture
async def make_provider(fake: FakeOpenAI) -> AsyncIterator[MakeProvider]:
    """Clients of the fake, closed after the test whatever happens."""
    made: list[OpenAICompatProvider] = []

    def make(name: str = "fake", **options: Any) -> OpenAICompatProvider:
        made.append(OpenAICompatProvider(name, base_url=fake.base_url, **{"model": "m", **options}))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def client(make_provider: MakeProvider) -> OpenAICompatProvider:
    return make_provider(model="gpt-fake", api_key="sk-test", timeout_s=5)


def _limiter(store: Store, limits: ProviderLimits, **options: Any) -> MongoLimiter:
    return MongoLimiter(store, {"fake": limits, "offline": ProviderLimits()}, **options)


def _fallbacks(src: str, dst: str) -> float:
    labels = {"from_provider": src, "to_provider": dst}
    return REGISTRY.get_sample_value("taskcore_provider_fallbacks_total", labels) or 0.0


# -- the OpenAI-compatible client -------------------------------------------------------


async def test_the_client_gets_a_completion_with_usage(
    fake: FakeOpenAI, client: OpenAICompatProvider
) -> None:
    response = await client.complete(REQUEST)
    assert json.loads(response.text)["summary"]
    assert response.model == "gpt-fake"
    assert response.usage.prompt == 2
    assert response.usage.completion > 0
    [recorded] = fake.stats().requests
    assert recorded.authorization == "Bearer sk-test"
    assert recorded.body["response_format"] == {"type": "json_object"}


async def test_a_5xx_is_retryable(fake: FakeOpenAI, client: OpenAICompatProvider) -> None:
    fake.configure(fail_next=1, fail_status=503)
    with pytest.raises(RetryableError, match="503"):
        await client.complete(REQUEST)
    assert (await client.complete(REQUEST)).text  # the next call is fine


async def test_a_429_is_rate_limited_with_its_retry_after(
    fake: FakeOpenAI, client: OpenAICompatProvider
) -> None:
    fake.configure(rate_limit_next=1, retry_after=2)
    with pytest.raises(RateLimitedError) as caught:
        await client.complete(REQUEST)
    assert caught.value.retry_after == 2.0


async def test_a_provider_slower_than_the_timeout_is_retryable(
    fake: FakeOpenAI, make_provider: MakeProvider
) -> None:
    fake.configure(delay_s=1.0)
    provider = make_provider("slow", timeout_s=0.2)
    with pytest.raises(RetryableError, match="could not be reached"):
        await provider.complete(REQUEST)


async def test_invalid_json_is_repaired_within_the_bound(
    fake: FakeOpenAI, client: OpenAICompatProvider
) -> None:
    fake.configure(invalid_json_next=2)
    router = ProviderRouter({"fake": client}, {"paid": ["fake"]})
    result = await GenerateSummary(router).execute(
        GenerateSummaryParams(text=TEXT), TaskContextForTests()
    )
    assert (result.summary, result.repairs, result.provider) == (
        "A faithful short summary of the text.",
        2,
        "fake",
    )
    assert fake.stats().total == 3
    assert result.usage.prompt == sum(
        len(str(m["content"]).split()) for r in fake.stats().requests for m in r.body["messages"]
    )


async def test_invalid_json_beyond_the_bound_fails_for_good(
    fake: FakeOpenAI, client: OpenAICompatProvider
) -> None:
    fake.configure(invalid_json_next=3)
    router = ProviderRouter({"fake": client}, {"paid": ["fake"]})
    with pytest.raises(NonRetryableError, match="after 2 repairs"):
        await GenerateSummary(router).execute(
            GenerateSummaryParams(text=TEXT), TaskContextForTests()
        )
    assert fake.stats().total == 3


async def test_the_fake_is_controlled_over_http_by_other_processes(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as http:
        told = await http.post(
            f"{fake.control_url}/behaviour", json={"fail_next": 1, "fail_status": 502}
        )
        assert told.json()["fail_next"] == 1
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        first = await http.post(f"{fake.base_url}/chat/completions", json=body)
        second = await http.post(f"{fake.base_url}/chat/completions", json=body)
        stats = (await http.get(f"{fake.control_url}/stats", params={"window_s": 60})).json()
    assert (first.status_code, second.status_code) == (502, 200)
    assert (stats["total"], stats["max_in_flight"]) == (2, 1)
    assert sum(stats["counts_per_window"].values()) == 2


# -- limits shared through the store ----------------------------------------------------


async def _start_worker(args: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    if not first:
        _, err = await proc.communicate()
        raise AssertionError(f"the worker process died: {err.decode()[-2000:]}")
    return proc


def _worker_args(mongo_url: str, store: Store, fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "mongo_url": mongo_url,
        "db": store.db.name,
        "base_url": fake.base_url,
        "lease_s": 30.0,
        "window_s": 60.0,
        "mode": "call",
        **extra,
    }


def _arrivals(requests: list[RecordedRequest], key: str) -> list[float]:
    return sorted(r.arrived_at for r in requests if r.authorization == f"Bearer {key}")


async def test_max_concurrency_holds_across_two_processes(
    fake: FakeOpenAI, store: Store, mongo_url: str, make_provider: MakeProvider
) -> None:
    limits = ProviderLimits(max_concurrency=3)
    fake.configure(delay_s=0.15)
    args = _worker_args(mongo_url, store, fake, limits={"max_concurrency": 3}, calls=10, key="k2")
    worker = await _start_worker(args)

    limiter = _limiter(store, limits)
    provider = make_provider(api_key="k1")
    router = ProviderRouter({"fake": provider}, {"paid": ["fake"]}, limiter=limiter, max_wait_s=60)
    here = await asyncio.gather(*(router.complete(REQUEST, tier="paid") for _ in range(10)))
    out, err = await asyncio.wait_for(worker.communicate(), timeout=60)

    there = json.loads(out.decode().strip().splitlines()[-1])
    assert (len(here), there) == (10, {"ok": 10, "errors": []}), err.decode()[-2000:]
    stats = fake.stats()
    assert stats.total == 20
    assert 2 <= stats.max_in_flight <= 3
    mine, theirs = _arrivals(stats.requests, "k1"), _arrivals(stats.requests, "k2")
    assert theirs[0] < mine[-1]  # the two processes really competed for the slots
    assert mine[0] < theirs[-1]
    assert (await limiter.state("fake"))["slots_held"] == 0


async def test_requests_per_minute_are_respected(
    fake: FakeOpenAI, store: Store, make_provider: MakeProvider
) -> None:
    # 240 rpm counted in 1 s windows: at most 4 requests per window.
    limiter = _limiter(store, ProviderLimits(rpm=240), rate_window_s=1.0)
    provider = make_provider()
    router = ProviderRouter({"fake": provider}, {"paid": ["fake"]}, limiter=limiter, max_wait_s=10)
    await asyncio.gather(*(router.complete(REQUEST, tier="paid") for _ in range(12)))

    arrivals = sorted(r.arrived_at for r in fake.stats().requests)
    assert len(arrivals) == 12
    # 12 requests at 4 per window span at least three windows.
    assert arrivals[-1] - arrivals[0] > 1.0
    # A request reaches the fake a little after its permit; past this margin into a window,
    # every arrival was granted in that window.
    margin = 0.2
    for start in {int(a) for a in arrivals}:
        assert sum(start + margin <= a < start + 1 for a in arrivals) <= 4
    windows = await store.limits.find({"kind": "rate"}).to_list(None)
    assert sorted(w["count"] for w in windows)[-1] <= 4
    assert sum(w["count"] for w in windows) == 12


async def test_tokens_per_minute_are_respected(store: Store) -> None:
    limiter = _limiter(store, ProviderLimits(tpm=600), rate_window_s=60.0)
    async with limiter.acquire("fake", tokens=500):
        pass
    with pytest.raises(ProviderSaturated):
        async with limiter.acquire("fake", tokens=200, max_wait_s=0.1):
            pass
    with pytest.raises(NonRetryableError, match="more than"):
        async with limiter.acquire("fake", tokens=601):
            pass


async def test_a_429_cools_the_provider_down_and_halves_its_concurrency(
    fake: FakeOpenAI, store: Store, make_provider: MakeProvider
) -> None:
    limiter = _limiter(store, ProviderLimits(max_concurrency=4))
    provider = make_provider()
    router = ProviderRouter({"fake": provider}, {"paid": ["fake"]}, limiter=limiter, max_wait_s=5)
    fake.configure(rate_limit_next=1, retry_after=1)
    with pytest.raises(RateLimitedError):
        await router.complete(REQUEST, tier="paid")
    limited_at = time.monotonic()

    state = await limiter.state("fake")
    assert state["effective_concurrency"] == 2
    assert state["cooldown_until"] > time.time()
    with pytest.raises(ProviderSaturated, match="cooling down"):
        async with limiter.acquire("fake", max_wait_s=0.1):
            pass
    await router.complete(REQUEST, tier="paid")  # waits the cooldown out
    assert time.monotonic() - limited_at > 0.7
    assert fake.stats().total == 2  # nothing was sent while cooling down


async def test_concurrency_recovers_one_slot_per_quiet_success(
    fake: FakeOpenAI, store: Store
) -> None:
    limiter = _limiter(store, ProviderLimits(max_concurrency=4), recover_interval_s=0.0)
    await limiter.ensure("fake")
    await limiter.report_rate_limited("fake", retry_after=0.0)
    assert (await limiter.state("fake"))["effective_concurrency"] == 2
    async with limiter.acquire("fake", max_wait_s=1):
        pass
    await limiter.report_success("fake")
    assert (await limiter.state("fake"))["effective_concurrency"] == 3


async def test_a_long_call_keeps_its_slot_by_renewing_the_lease(store: Store) -> None:
    lease_s = 0.6
    limiter = _limiter(store, ProviderLimits(max_concurrency=1), lease_s=lease_s)
    other = _limiter(store, ProviderLimits(max_concurrency=1), lease_s=lease_s)
    async with limiter.acquire("fake"):
        deadline = time.monotonic() + 3 * lease_s
        while time.monotonic() < deadline:  # well past the first lease's end
            with pytest.raises(ProviderSaturated):
                async with other.acquire("fake", max_wait_s=0.05):
                    pass
    async with other.acquire("fake", max_wait_s=0.5) as permit:
        assert permit.slot_id == "slot:fake:0"


async def test_a_saturated_provider_falls_back_to_the_next(
    fake: FakeOpenAI, store: Store, make_provider: MakeProvider
) -> None:
    limiter = _limiter(store, ProviderLimits(max_concurrency=1))
    provider = make_provider()
    router = ProviderRouter(
        {"fake": provider, "offline": OfflineProvider()},
        {"paid": ["fake", "offline"]},
        limiter=limiter,
        fallback_wait_s=0.1,
    )
    before = _fallbacks("fake", "offline")
    async with limiter.acquire("fake"):
        routed = await router.complete(REQUEST, tier="paid")
    assert routed.provider == "offline"
    assert _fallbacks("fake", "offline") == before + 1
    assert fake.stats().total == 0
    assert (await router.complete(REQUEST, tier="paid")).provider == "fake"


async def test_a_crashed_holder_frees_its_slot_when_the_lease_expires(
    fake: FakeOpenAI, store: Store, mongo_url: str
) -> None:
    lease_s = 2.0
    args = _worker_args(
        mongo_url, store, fake, limits={"max_concurrency": 1}, mode="hold", lease_s=lease_s
    )
    holder = await _start_worker(args)
    limiter = _limiter(store, ProviderLimits(max_concurrency=1), lease_s=lease_s)
    holder.kill()
    await holder.wait()
    killed_at = time.monotonic()
    with pytest.raises(ProviderSaturated):
        async with limiter.acquire("fake", max_wait_s=0.1):
            pass
    async with limiter.acquire("fake", max_wait_s=10) as permit:
        assert permit.slot_id == "slot:fake:0"
    assert time.monotonic() - killed_at < lease_s + 1.0


async def test_a_fresh_install_summarises_offline_through_the_store(store: Store) -> None:
    router = create_router(store, env={})
    result = await GenerateSummary(router).execute(
        GenerateSummaryParams(text=TEXT, max_words=8), TaskContextForTests()
    )
    await router.aclose()
    assert (result.summary, result.provider) == (
        "The river rose overnight. The bridge held.",
        "offline",
    )
    assert (await store.limits.count_documents({"kind": "slot"})) == 8


async def test_the_registry_factory_wires_limits_on_its_own_client(
    store: Store, mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKCORE_PROVIDERS", raising=False)
    types = registry_task_types(Settings(MONGO_URL=mongo_url, MONGO_DB=store.db.name))
    summary = next(t for t in types if t.name == "generate_summary")
    try:
        result = await summary.execute(
            GenerateSummaryParams(text=TEXT, max_words=8), TaskContextForTests()
        )
    finally:
        await close_task_types(types)
    assert result.provider == "offline"
    assert await store.limits.count_documents({"kind": "rate"}) == 1
