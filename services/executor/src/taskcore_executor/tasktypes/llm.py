"""LLM task types: ``generate_summary``, ``generate_scene`` and their batch parents (the
generic ``llm.chat`` and ``llm.structured`` are in ``llm_generic``, registered with them).

Each single type asks its tier's providers (through ``ProviderRouter``) for a JSON
object, validates it, and re-asks with the validation error at most ``MAX_REPAIRS``
times before giving up with ``NonRetryableError``. The batch types fan out one child
per item, with keys ``item-<i>`` so a re-run never creates a child twice, and return at
once; the runner waits for the children.

Wiring, either way:

- the registry's entry point / ``TASKCORE_PLUGINS`` factory ``registry_task_types(settings)``
  (the limiter gets its own MongoDB client on ``MONGO_URL``, connected on first use;
  without ``MONGO_URL``, no shared limits); the executor calls
  ``await close_task_types(registry.all())`` at shutdown;
- or explicitly, sharing the executor's store::

    router = create_router(store)          # reads TASKCORE_PROVIDERS
    for task_type in task_types(router):
        registry.add(task_type)
    ...
    await router.aclose()                  # at shutdown
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.plugin import NonRetryableError, SubtaskSpec, TaskContext, TaskType
from taskcore.settings import Settings

from taskcore_executor.providers.base import ChatMessage, ChatRequest, TokenUsage
from taskcore_executor.providers.config import load_providers_config
from taskcore_executor.providers.offline import count_words
from taskcore_executor.providers.router import ProviderRouter, build_router
from taskcore_executor.tasktypes.llm_generic import generic_task_types

MAX_REPAIRS = 2
D = TypeVar("D", bound=BaseModel)


class Usage(BaseModel):
    prompt: int = 0
    completion: int = 0


# -- parameters and results ----------------------------------------------------------


class GenerateSummaryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=200_000)
    max_words: int = Field(default=60, ge=5, le=2000)
    language: str | None = Field(default=None, description="e.g. 'en'; default: the text's")


class GenerateSummaryResult(BaseModel):
    summary: str
    word_count: int
    language: str | None
    provider: str
    model: str
    usage: Usage
    repairs: int = Field(description="re-asks needed before the answer validated")


class GenerateSceneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outline: str = Field(min_length=1, max_length=20_000)
    characters: list[str] = Field(default_factory=list, max_length=50)
    setting: str | None = None
    style: str | None = None
    title: str | None = None
    max_words: int = Field(default=600, ge=20, le=5000)
    language: str | None = None


class GenerateSceneResult(BaseModel):
    title: str
    scene: str
    word_count: int
    provider: str
    model: str
    usage: Usage
    repairs: int


class BatchGenerateSummaryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[GenerateSummaryParams] = Field(min_length=1, max_length=1000)


class BatchGenerateSceneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[GenerateSceneParams] = Field(min_length=1, max_length=1000)


class BatchResult(BaseModel):
    submitted: int
    subtask_ids: list[str]


# -- what the model must answer ------------------------------------------------------


class SummaryDraft(BaseModel):
    summary: str = Field(min_length=1)


class SceneDraft(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    scene: str = Field(min_length=1)


@dataclass(frozen=True)
class Answer(Generic[D]):
    draft: D
    provider: str
    model: str
    usage: TokenUsage
    repairs: int


@dataclass(frozen=True)
class Question(Generic[D]):
    draft_model: type[D]
    messages: list[ChatMessage]
    intent: str
    inputs: dict[str, Any]
    max_tokens: int
    # A problem the schema cannot express (too long...), as a sentence, or None.
    check: Callable[[D], str | None]


def _schema_instruction(draft_model: type[BaseModel]) -> str:
    schema = json.dumps(draft_model.model_json_schema(), ensure_ascii=False)
    return (
        f"Reply with only one JSON object, no prose around it, matching this JSON Schema: {schema}"
    )


def _problem_with(text: str, question: Question[D]) -> tuple[D | None, str | None]:
    try:
        draft = question.draft_model.model_validate_json(text)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors()
        )
        return None, f"it is not valid: {errors}"
    problem = question.check(draft)
    return (None, problem) if problem else (draft, None)


async def ask_for_json(
    router: ProviderRouter, ctx: TaskContext, question: Question[D]
) -> Answer[D]:
    """Ask until the reply validates, re-asking with the problem at most ``MAX_REPAIRS``
    times; provider errors propagate for the runner to retry."""
    messages = list(question.messages)
    usage = TokenUsage()
    problem: str | None = None
    for repairs in range(MAX_REPAIRS + 1):
        ctx.check_cancelled()
        await ctx.update_progress({"stage": "generating", "request": repairs + 1})
        routed = await router.complete(
            ChatRequest(
                messages=tuple(messages),
                max_tokens=question.max_tokens,
                intent=question.intent,
                inputs=question.inputs,
            ),
            tier=ctx.tier,
            spend=ctx.spend,
        )
        usage = usage + routed.response.usage
        draft, problem = _problem_with(routed.response.text, question)
        if draft is not None:
            return Answer(draft, routed.provider, routed.response.model, usage, repairs)
        ctx.log.info("The %s reply needs repair: %s", routed.provider, problem)
        messages += [
            ChatMessage(role="assistant", content=routed.response.text),
            ChatMessage(
                role="user",
                content=f"That reply cannot be used because {problem}. "
                f"{_schema_instruction(question.draft_model)}",
            ),
        ]
    raise NonRetryableError(
        f"no usable answer after {MAX_REPAIRS} repairs; the last one was unusable because {problem}"
    )


def _language_hint(language: str | None) -> str:
    return f" Write it in the language with code {language!r}." if language else ""


# -- the task types ------------------------------------------------------------------


class GenerateSummary(TaskType[GenerateSummaryParams, GenerateSummaryResult]):
    name = "generate_summary"
    description = "Summarise a text in at most max_words words with an LLM provider."
    Params = GenerateSummaryParams
    Result = GenerateSummaryResult
    retry = RetryPolicy(max_attempts=5)

    def __init__(self, router: ProviderRouter) -> None:
        self.router = router

    async def execute(
        self, params: GenerateSummaryParams, ctx: TaskContext
    ) -> GenerateSummaryResult:
        answer = await ask_for_json(self.router, ctx, self.question(params))
        summary = answer.draft.summary.strip()
        return GenerateSummaryResult(
            summary=summary,
            word_count=count_words(summary),
            language=params.language,
            provider=answer.provider,
            model=answer.model,
            usage=Usage(**answer.usage.model_dump()),
            repairs=answer.repairs,
        )

    @staticmethod
    def question(params: GenerateSummaryParams) -> Question[SummaryDraft]:
        def check(draft: SummaryDraft) -> str | None:
            words = count_words(draft.summary)
            if words > params.max_words:
                return f"the summary has {words} words and may have at most {params.max_words}"
            return None

        system = (
            "You write faithful, concise summaries. Never add facts the text does not state. "
            + _schema_instruction(SummaryDraft)
        )
        user = (
            f"Summarise the text below in at most {params.max_words} words."
            f"{_language_hint(params.language)}\n\nText:\n{params.text}"
        )
        return Question(
            draft_model=SummaryDraft,
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
            ],
            intent="summary",
            inputs=params.model_dump(),
            max_tokens=min(4096, params.max_words * 3 + 64),
            check=check,
        )


class GenerateScene(TaskType[GenerateSceneParams, GenerateSceneResult]):
    name = "generate_scene"
    description = "Write a titled scene from an outline, characters, setting and style."
    Params = GenerateSceneParams
    Result = GenerateSceneResult
    retry = RetryPolicy(max_attempts=5)

    def __init__(self, router: ProviderRouter) -> None:
        self.router = router

    async def execute(self, params: GenerateSceneParams, ctx: TaskContext) -> GenerateSceneResult:
        answer = await ask_for_json(self.router, ctx, self.question(params))
        scene = answer.draft.scene.strip()
        return GenerateSceneResult(
            title=answer.draft.title.strip(),
            scene=scene,
            word_count=count_words(scene),
            provider=answer.provider,
            model=answer.model,
            usage=Usage(**answer.usage.model_dump()),
            repairs=answer.repairs,
        )

    @staticmethod
    def question(params: GenerateSceneParams) -> Question[SceneDraft]:
        def check(draft: SceneDraft) -> str | None:
            words = count_words(draft.scene)
            if words > params.max_words:
                return f"the scene has {words} words and may have at most {params.max_words}"
            return None

        system = "You are a careful fiction writer. " + _schema_instruction(SceneDraft)
        details = [f"Outline: {params.outline}"]
        if params.characters:
            details.append(f"Characters: {', '.join(params.characters)}")
        if params.setting:
            details.append(f"Setting: {params.setting}")
        if params.style:
            details.append(f"Style: {params.style}")
        if params.title:
            details.append(f"Title: {params.title}")
        user = (
            f"Write one scene of at most {params.max_words} words, with a short title."
            f"{_language_hint(params.language)}\n" + "\n".join(details)
        )
        return Question(
            draft_model=SceneDraft,
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
            ],
            intent="scene",
            inputs=params.model_dump(),
            max_tokens=min(8192, params.max_words * 3 + 64),
            check=check,
        )


class _Batch(TaskType[Any, BatchResult]):
    child_type: ClassVar[str]
    Result = BatchResult

    def __init__(self, router: ProviderRouter) -> None:
        self.router = router

    async def execute(self, params: Any, ctx: TaskContext) -> BatchResult:
        items: list[BaseModel] = params.items
        ctx.check_cancelled()
        await ctx.update_progress({"total": len(items), "succeeded": 0, "failed": 0})
        specs = [
            SubtaskSpec(task_type=self.child_type, parameters=item.model_dump(), key=f"item-{i}")
            for i, item in enumerate(items)
        ]
        ids = await ctx.submit_subtasks(specs)
        return BatchResult(submitted=len(ids), subtask_ids=ids)


class BatchGenerateSummary(_Batch):
    name = "batch_generate_summary"
    description = "Summarise many texts: one generate_summary subtask per item."
    Params = BatchGenerateSummaryParams
    child_type = GenerateSummary.name


class BatchGenerateScene(_Batch):
    name = "batch_generate_scene"
    description = "Write many scenes: one generate_scene subtask per item."
    Params = BatchGenerateSceneParams
    child_type = GenerateScene.name


# -- registration --------------------------------------------------------------------


def task_types(router: ProviderRouter) -> list[TaskType[Any, Any]]:
    """The LLM task types, sharing ``router``."""
    return [
        GenerateSummary(router),
        GenerateScene(router),
        BatchGenerateSummary(router),
        BatchGenerateScene(router),
        *generic_task_types(router),
    ]


def create_router(store: Store | None, env: Mapping[str, str] | None = None) -> ProviderRouter:
    """The router ``TASKCORE_PROVIDERS`` describes (offline only when unset), with limits
    shared through ``store``. The caller closes it with ``aclose()`` at shutdown."""
    return build_router(load_providers_config(env), store, env)


def registry_task_types(settings: Settings) -> list[TaskType[Any, Any]]:
    """The ``(settings) -> task types`` factory for the ``taskcore.task_types`` entry point
    and ``TASKCORE_PLUGINS``. No I/O here: the limiter's client connects on first use."""
    store = (
        Store(connect_mongo(settings.mongo_url), settings.mongo_db) if settings.mongo_url else None
    )
    config = load_providers_config()
    return task_types(build_router(config, store, own_store=True, node=settings.node_id or ""))


TASK_TYPES = registry_task_types


def start_task_types(types: Iterable[object]) -> None:
    """Start the routers of any LLM types in ``types`` sharing their providers' health, so
    operators see every provider (a missing key, say) before the first call."""
    for task_type in types:
        router = getattr(task_type, "router", None)
        if isinstance(router, ProviderRouter):
            router.start()  # idempotent, so a router shared by several types is fine


async def close_task_types(types: Iterable[object]) -> None:
    """Close the routers (HTTP clients, the limiter's store) of any LLM types in ``types``."""
    for task_type in types:
        router = getattr(task_type, "router", None)
        if isinstance(router, ProviderRouter):
            await router.aclose()  # idempotent, so a router shared by four types is fine
