"""The LLM task types over the offline provider, and the JSON repair loop."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from taskcore.plugin import NonRetryableError, NoSpend, SubtaskSpec, TaskCancelled
from taskcore_executor.providers.base import ChatRequest, ChatResponse, TokenUsage
from taskcore_executor.providers.offline import OfflineProvider, extractive_summary
from taskcore_executor.providers.router import ProviderRouter
from taskcore_executor.tasktypes.llm import (
    MAX_REPAIRS,
    BatchGenerateSummary,
    BatchGenerateSummaryParams,
    GenerateScene,
    GenerateSceneParams,
    GenerateSummary,
    GenerateSummaryParams,
    task_types,
)

TEXT = (
    "The harbour froze for the first time in forty years. Fishermen walked out on the ice "
    "to look at their boats. By noon the children had built a slide. Nobody went to work."
)


class RecordingContext:
    """A TaskContext for running a task type outside the executor: it records what the
    task reported and submitted."""

    def __init__(self, tier: str = "paid", cancelled: bool = False) -> None:
        self.task_id = "t1"
        self.user_id = "alice"
        self.tier = tier
        self.attempt = 1
        self.retry_count = 0
        self.spend = NoSpend()
        self.log = logging.LoggerAdapter(logging.getLogger("test"), {})
        self.progress: list[dict[str, Any]] = []
        self.submitted: list[SubtaskSpec] = []
        self.cancelled = cancelled

    async def update_progress(self, progress: dict[str, Any]) -> None:
        self.progress.append(progress)

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        self.submitted += specs
        return [f"child-{s.key}" for s in specs]

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelled()

    async def heartbeat(self) -> None:
        return None


class RepliesInOrder:
    """Stands for an external provider that answers with the given texts in turn."""

    def __init__(self, *texts: str) -> None:
        self.name = "scripted"
        self.model = "scripted-1"
        self.texts = list(texts)
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return ChatResponse(
            text=self.texts.pop(0), model=self.model, usage=TokenUsage(prompt=10, completion=5)
        )

    async def aclose(self) -> None:
        return None


def offline_router() -> ProviderRouter:
    return ProviderRouter({"offline": OfflineProvider()}, {"paid": ["offline"]})


def scripted_router(provider: RepliesInOrder) -> ProviderRouter:
    return ProviderRouter({"scripted": provider}, {"paid": ["scripted"]})


def test_the_extractive_summary_keeps_leading_sentences_within_the_budget() -> None:
    summary = extractive_summary(TEXT, 21)
    assert summary == (
        "The harbour froze for the first time in forty years. Fishermen walked out on the ice "
        "to look at their boats."
    )
    assert len(summary.split()) == 21


async def test_generate_summary_offline_is_deterministic_and_within_max_words() -> None:
    params = GenerateSummaryParams(text=TEXT, max_words=12)
    ctx = RecordingContext()
    first = await GenerateSummary(offline_router()).execute(params, ctx)
    second = await GenerateSummary(offline_router()).execute(params, RecordingContext())
    assert first == second
    assert first.summary == "The harbour froze for the first time in forty years."
    assert first.word_count == 10
    assert (first.provider, first.repairs) == ("offline", 0)
    assert first.usage.prompt > 0
    assert first.usage.completion > 0
    assert ctx.progress[0] == {"stage": "generating", "request": 1}


async def test_generate_scene_offline_uses_the_parameters() -> None:
    params = GenerateSceneParams(
        outline="Two sisters argue over a letter",
        characters=["Mira", "Jun"],
        setting="a lighthouse",
    )
    result = await GenerateScene(offline_router()).execute(params, RecordingContext())
    assert "Mira and Jun" in result.scene
    assert "a lighthouse" in result.scene
    assert result.title == "Mira in A Lighthouse"
    assert result.word_count == len(result.scene.split())


async def test_an_invalid_reply_is_repaired_with_the_validation_error() -> None:
    provider = RepliesInOrder("not json", json.dumps({"summary": "Short and right."}))
    result = await GenerateSummary(scripted_router(provider)).execute(
        GenerateSummaryParams(text=TEXT), RecordingContext()
    )
    assert (result.summary, result.repairs) == ("Short and right.", 1)
    assert result.usage.prompt == 20  # both requests counted
    repair_prompt = provider.requests[1].messages[-1].content
    assert "cannot be used because it is not valid" in repair_prompt


async def test_a_reply_over_the_word_budget_is_sent_back() -> None:
    too_long = json.dumps({"summary": " ".join(["word"] * 30)})
    provider = RepliesInOrder(too_long, json.dumps({"summary": "Five words are enough here."}))
    result = await GenerateSummary(scripted_router(provider)).execute(
        GenerateSummaryParams(text=TEXT, max_words=10), RecordingContext()
    )
    assert result.repairs == 1
    assert "has 30 words and may have at most 10" in provider.requests[1].messages[-1].content


async def test_repairs_are_bounded_then_the_task_fails_for_good() -> None:
    provider = RepliesInOrder(*["{}"] * (MAX_REPAIRS + 2))
    with pytest.raises(NonRetryableError, match="no usable answer"):
        await GenerateSummary(scripted_router(provider)).execute(
            GenerateSummaryParams(text=TEXT), RecordingContext()
        )
    assert len(provider.requests) == MAX_REPAIRS + 1


async def test_a_cancelled_task_stops_before_calling_the_provider() -> None:
    provider = RepliesInOrder()
    with pytest.raises(TaskCancelled):
        await GenerateSummary(scripted_router(provider)).execute(
            GenerateSummaryParams(text=TEXT), RecordingContext(cancelled=True)
        )
    assert provider.requests == []


async def test_a_batch_submits_one_child_per_item_with_stable_keys() -> None:
    params = BatchGenerateSummaryParams(
        items=[GenerateSummaryParams(text=f"Text number {i}.") for i in range(3)]
    )
    ctx = RecordingContext()
    result = await BatchGenerateSummary(offline_router()).execute(params, ctx)
    assert result.submitted == 3
    assert [s.key for s in ctx.submitted] == ["item-0", "item-1", "item-2"]
    assert {s.task_type for s in ctx.submitted} == {"generate_summary"}
    assert ctx.submitted[2].parameters["text"] == "Text number 2."
    assert ctx.progress[0] == {"total": 3, "succeeded": 0, "failed": 0}


def test_the_factory_registers_the_llm_types_with_schemas() -> None:
    types = {t.name: t for t in task_types(offline_router())}
    assert set(types) == {
        "generate_summary",
        "generate_scene",
        "batch_generate_summary",
        "batch_generate_scene",
        "llm.chat",
        "llm.structured",
    }
    assert "text" in types["generate_summary"].parameters_schema()["properties"]
