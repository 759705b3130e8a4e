"""Generic LLM task types: ``llm.chat`` (a conversation in, the reply out) and
``llm.structured`` (a reply that must validate against a JSON Schema the caller gives).

Both go through the tier's providers like the other LLM types (``ProviderRouter``:
fallback, shared limits, budgets, usage). ``llm.structured`` re-asks with what is wrong
with the reply at most ``MAX_REPAIRS`` times, then fails with ``NonRetryableError``.

A caller's JSON Schema is checked at submission (the meta-schema, and that it compiles
without fetching anything: remote ``$ref`` are refused, so a schema can never make an
executor call an address of the caller's choosing) and bounded in size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import jsonschema_rs
from pydantic import BaseModel, ConfigDict, Field, field_validator
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.domain.usage import units_of
from taskcore.plugin import NonRetryableError, TaskContext, TaskType

from taskcore_executor.providers.base import ChatMessage, ChatRequest
from taskcore_executor.providers.router import ProviderRouter, RoutedResponse

MAX_REPAIRS = 3
MAX_SCHEMA_BYTES = 64 * 1024
MAX_MESSAGES = 200


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class _Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: str | None = Field(
        default=None, min_length=1, max_length=200, description="Overrides the provider's."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)


class ChatParams(_Conversation):
    pass


class StructuredParams(_Conversation):
    json_schema: dict[str, Any] = Field(
        description="The JSON Schema the reply must validate against (no remote $ref)."
    )

    @field_validator("json_schema")
    @classmethod
    def _a_usable_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes")
        try:
            jsonschema_rs.meta.validate(schema)
            compile_schema(schema)
        except jsonschema_rs.ValidationError as exc:
            raise ValueError(f"not a usable JSON Schema: {exc.message}") from None
        return schema


class CallUsage(BaseModel):
    """What this attempt's calls used (the task's ``usage`` counts every attempt)."""

    prompt_tokens: int
    completion_tokens: int
    calls: int
    cost: float


class ChatResult(BaseModel):
    content: str
    provider: str
    model: str
    usage: CallUsage


class StructuredResult(BaseModel):
    data: Any
    provider: str
    model: str
    usage: CallUsage
    repairs: int = Field(description="Re-asks needed before the reply validated.")


def compile_schema(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator that never retrieves anything (``offline``)."""
    return jsonschema_rs.validator_for(schema, offline=True)


def usage_of(calls: Sequence[RoutedResponse]) -> CallUsage:
    return CallUsage(
        prompt_tokens=sum(c.response.usage.prompt for c in calls),
        completion_tokens=sum(c.response.usage.completion for c in calls),
        calls=len(calls),
        cost=units_of(sum(c.cost_nanos for c in calls)),
    )


def _request(params: _Conversation, messages: Sequence[ChatMessage], **extra: Any) -> ChatRequest:
    options: dict[str, Any] = {"model": params.model, "max_tokens": params.max_tokens}
    if params.temperature is not None:
        options["temperature"] = params.temperature
    options = {k: v for k, v in options.items() if v is not None}
    return ChatRequest(messages=tuple(messages), **options, **extra)


def _messages(params: _Conversation) -> list[ChatMessage]:
    return [ChatMessage(role=m.role, content=m.content) for m in params.messages]


class LlmChat(TaskType[ChatParams, ChatResult]):
    name = "llm.chat"
    description = "Send a conversation to the tier's LLM provider; the reply's text is the result."
    Params = ChatParams
    Result = ChatResult
    retry = RetryPolicy(max_attempts=5)

    def __init__(self, router: ProviderRouter) -> None:
        self.router = router

    async def execute(self, params: ChatParams, ctx: TaskContext) -> ChatResult:
        ctx.check_cancelled()
        await ctx.update_progress({"stage": "generating"})
        request = _request(params, _messages(params), response_format="text")
        routed = await self.router.complete(request, tier=ctx.tier, spend=ctx.spend)
        return ChatResult(
            content=routed.response.text,
            provider=routed.provider,
            model=routed.response.model,
            usage=usage_of([routed]),
        )


class LlmStructured(TaskType[StructuredParams, StructuredResult]):
    name = "llm.structured"
    description = (
        "Ask the tier's LLM provider for JSON that validates against json_schema, "
        f"re-asking with the problems at most {MAX_REPAIRS} times."
    )
    Params = StructuredParams
    Result = StructuredResult
    retry = RetryPolicy(max_attempts=5)

    def __init__(self, router: ProviderRouter) -> None:
        self.router = router

    async def execute(self, params: StructuredParams, ctx: TaskContext) -> StructuredResult:
        validator = compile_schema(params.json_schema)
        instruction = (
            "Reply with only one JSON value, no prose or code fence around it, that "
            f"validates against this JSON Schema: {json.dumps(params.json_schema)}"
        )
        messages = [ChatMessage(role="system", content=instruction), *_messages(params)]
        calls: list[RoutedResponse] = []
        problem = ""
        for repairs in range(MAX_REPAIRS + 1):
            ctx.check_cancelled()
            await ctx.update_progress({"stage": "generating", "request": repairs + 1})
            request = _request(
                params,
                messages,
                response_format="json",
                intent="structured",
                inputs={"json_schema": params.json_schema},
            )
            routed = await self.router.complete(request, tier=ctx.tier, spend=ctx.spend)
            calls.append(routed)
            data, problem = parsed(routed.response.text, validator)
            if not problem:
                return StructuredResult(
                    data=data,
                    provider=routed.provider,
                    model=routed.response.model,
                    usage=usage_of(calls),
                    repairs=repairs,
                )
            ctx.log.info("The %s reply needs repair: %s", routed.provider, problem)
            messages += [
                ChatMessage(role="assistant", content=routed.response.text),
                ChatMessage(
                    role="user",
                    content=f"That reply cannot be used because {problem}. {instruction}",
                ),
            ]
        raise NonRetryableError(
            f"no valid reply after {MAX_REPAIRS} repairs; the last one was unusable because "
            f"{problem}"
        )


def parsed(text: str, validator: jsonschema_rs.Validator) -> tuple[Any, str]:
    """The reply's JSON value, and what is wrong with it ("" when nothing is)."""
    try:
        data = json.loads(_unfenced(text))
    except ValueError as exc:
        return None, f"it is not JSON ({exc})"
    errors = [
        f"{'/'.join(str(p) for p in e.instance_path) or 'the value'}: {e.message}"
        for _, e in zip(range(5), validator.iter_errors(data), strict=False)
    ]
    return data, "; ".join(errors)


def _unfenced(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence despite being told not to."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1].rsplit("```", 1)[0]
    return stripped


def generic_task_types(router: ProviderRouter) -> list[TaskType[Any, Any]]:
    return [LlmChat(router), LlmStructured(router)]
