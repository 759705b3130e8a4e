"""``llm.chat`` and ``llm.structured`` outside the executor: overrides reach the provider,
replies are validated against the caller's JSON Schema and repaired at most three
times, and a schema that could fetch anything is refused at submission."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError
from taskcore.domain.usage import Prices
from taskcore.plugin import NonRetryableError, NoSpend, SubtaskSpec
from taskcore_executor.providers.base import ChatRequest, ChatResponse, TokenUsage
from taskcore_executor.providers.offline import (
    EXAMPLE_CHARS,
    EXAMPLE_NODES,
    OfflineProvider,
    example_of,
)
from taskcore_executor.providers.router import ProviderRouter
from taskcore_executor.tasktypes.llm_generic import (
    MAX_REPAIRS,
    ChatParams,
    LlmChat,
    LlmStructured,
    StructuredParams,
)

SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}},
}
MESSAGES = [{"role": "user", "content": "Alice is thirty. Give her name and age."}]


class Context:
    """A TaskContext for running a task type outside the executor."""

    def __init__(self) -> None:
        self.task_id, self.user_id, self.tier = "t1", "alice", "paid"
        self.attempt, self.retry_count = 1, 0
        self.log = logging.LoggerAdapter(logging.getLogger("test"), {})
        self.spend = NoSpend()

    async def update_progress(self, progress: dict[str, Any]) -> None:
        return None

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        raise AssertionError("no subtasks here")

    async def submit_subtask(self, spec: SubtaskSpec) -> str:
        raise AssertionError("no subtasks here")

    def check_cancelled(self) -> None:
        return None

    async def heartbeat(self) -> None:
        return None


class RepliesInTurn:
    """Stands for an external provider answering the scripted texts in turn."""

    name, model = "scripted", "scripted-1"

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        text = self.texts.pop(0)
        return ChatResponse(
            text=text, model=request.model or self.model, usage=TokenUsage(prompt=10, completion=2)
        )

    async def aclose(self) -> None:
        return None


def _router(provider: Any, prices: Prices | None = None) -> ProviderRouter:
    return ProviderRouter(
        {provider.name: provider},
        {"paid": [provider.name]},
        prices={provider.name: prices} if prices else None,
    )


async def test_a_chat_sends_the_conversation_with_its_overrides_and_returns_the_reply() -> None:
    provider = RepliesInTurn("Hello, Alice.")
    params = ChatParams.model_validate(
        {"messages": MESSAGES, "model": "big-1", "temperature": 0.9, "max_tokens": 77}
    )
    prices = Prices(input_per_million=1, output_per_million=2)

    result = await LlmChat(_router(provider, prices)).execute(params, Context())

    [request] = provider.requests
    assert (request.model, request.temperature, request.max_tokens) == ("big-1", 0.9, 77)
    assert request.response_format == "text"
    assert [m.content for m in request.messages] == [MESSAGES[0]["content"]]
    assert (result.content, result.provider, result.model) == ("Hello, Alice.", "scripted", "big-1")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.calls) == (
        10,
        2,
        1,
    )
    assert result.usage.cost == pytest.approx((10 * 1 + 2 * 2) / 1e6)


async def test_a_structured_reply_is_repaired_until_it_validates() -> None:
    provider = RepliesInTurn(
        "Sure! Here it is: {",
        '{"name": "A"}',
        '```json\n{"name": "Alice", "age": 30}\n```',
    )
    params = StructuredParams.model_validate({"messages": MESSAGES, "json_schema": SCHEMA})

    result = await LlmStructured(_router(provider)).execute(params, Context())

    assert result.data == {"name": "Alice", "age": 30}
    assert (result.repairs, result.usage.calls) == (2, 3)
    second = provider.requests[1].messages[-1].content
    assert "not JSON" in second
    third = provider.requests[2].messages[-1].content
    assert "age" in third
    assert "required" in third


async def test_a_structured_reply_that_never_validates_fails_after_three_repairs() -> None:
    provider = RepliesInTurn(*(["[]"] * (MAX_REPAIRS + 1)))
    params = StructuredParams.model_validate({"messages": MESSAGES, "json_schema": SCHEMA})

    with pytest.raises(NonRetryableError, match=f"after {MAX_REPAIRS} repairs"):
        await LlmStructured(_router(provider)).execute(params, Context())
    assert len(provider.requests) == MAX_REPAIRS + 1


async def test_the_offline_provider_answers_structured_requests_with_a_valid_value() -> None:
    params = StructuredParams.model_validate({"messages": MESSAGES, "json_schema": SCHEMA})

    result = await LlmStructured(_router(OfflineProvider())).execute(params, Context())

    assert result.repairs == 0
    assert set(result.data) == {"name", "age"}


def test_the_simplest_value_a_schema_admits() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["x", "y"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "n": {"type": "number", "exclusiveMinimum": 3},
            "ok": {"type": ["null", "boolean"]},
        },
    }
    assert example_of(schema, "some words here") == {
        "kind": "x",
        "tags": ["some words here", "some words here"],
        "n": 4.0,
        "ok": False,
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://169.254.169.254/latest/meta-data"},
        {"type": "no-such-type"},
        {"properties": {"a": {"$ref": "#/nowhere"}}},
    ],
)
def test_a_schema_that_fetches_or_does_not_compile_is_refused_at_submission(
    schema: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="json_schema"):
        StructuredParams.model_validate({"messages": MESSAGES, "json_schema": schema})


def test_a_huge_schema_is_refused() -> None:
    schema = {"description": "x" * 70_000}
    with pytest.raises(ValidationError, match="larger than"):
        StructuredParams.model_validate({"messages": MESSAGES, "json_schema": schema})


def test_a_chat_needs_a_message_with_a_known_role() -> None:
    with pytest.raises(ValidationError):
        ChatParams.model_validate({"messages": []})
    with pytest.raises(ValidationError):
        ChatParams.model_validate({"messages": [{"role": "tool", "content": json.dumps({})}]})


def test_an_example_costs_a_bounded_amount_whatever_the_schema_asks() -> None:
    # 100 x 100 strings of 1,000 characters each: 10 MB from a 100-byte schema (a few
    # levels more and it is terabytes).
    schema: dict[str, Any] = {"type": "string", "minLength": 1000}
    for _ in range(2):
        schema = {"type": "array", "minItems": 100, "items": schema}

    example = example_of(schema, "some words")

    # Past the allowance the rest is null or shorter, which the repair loop reports.
    assert len(example[0][0]) == 1000
    assert len(json.dumps(example)) <= EXAMPLE_CHARS + 20 * EXAMPLE_NODES  # 10 MB unbounded
