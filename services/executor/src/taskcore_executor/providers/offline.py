"""The built-in offline provider: deterministic, plausible answers with no network.

It lets a fresh install run real LLM task types end to end. It answers from the
request's structured ``intent`` and ``inputs`` (it cannot read prose): an extractive
summary (the leading sentences within the word budget) for ``summary``, a scene
templated from the outline, characters, setting and style for ``scene``, and, for
``structured``, the simplest value its JSON Schema admits (``example_of``). Anything
else gets the gist of the last user message back. Tokens are counted as
whitespace-separated words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from taskcore_executor.providers.base import ChatRequest, ChatResponse, TokenUsage

# Western and CJK sentence ends (the full-width ones written as escapes for ruff).
_SENTENCE_END = re.compile("(?<=[.!?])\\s+|(?<=[\u3002\uff01\uff1f])\\s*")


def count_words(text: str) -> int:
    return len(text.split())


def extractive_summary(text: str, max_words: int) -> str:
    """The leading sentences of ``text`` that fit in ``max_words`` (at least one, cut to
    fit if the first alone is too long)."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    chosen: list[str] = []
    used = 0
    for sentence in sentences:
        words = count_words(sentence)
        if used + words > max_words:
            break
        chosen.append(sentence)
        used += words
    if not chosen and sentences:
        chosen = [" ".join(sentences[0].split()[:max_words])]
    return " ".join(chosen)


def templated_scene(inputs: dict[str, Any]) -> dict[str, str]:
    outline = str(inputs.get("outline") or "A quiet moment before everything changes.")
    characters = [str(c) for c in inputs.get("characters") or []] or ["the stranger"]
    setting = str(inputs.get("setting") or "an unnamed town")
    style = str(inputs.get("style") or "plain")
    cast = characters[0] if len(characters) == 1 else ", ".join(characters[:-1])
    if len(characters) > 1:
        cast += f" and {characters[-1]}"
    title = inputs.get("title") or f"{characters[0].title()} in {setting.title()}"
    scene = (
        f"In {setting}, {cast} waited while the light shifted. {outline.rstrip('.')}. "
        f"Nobody spoke at first; when {characters[0]} finally did, the words came slowly, "
        f"in a {style} voice, and the others listened. By the end of it, nothing in "
        f"{setting} looked quite the same."
    )
    return {"title": str(title), "scene": scene}


# What one example may cost, whatever the schema asks: the schema is the user's, and
# nested minItems multiply (20 levels of 100 items is 100^20 values).
EXAMPLE_NODES = 10_000
EXAMPLE_CHARS = 100_000


@dataclass
class _Allowance:
    nodes: int = EXAMPLE_NODES
    chars: int = EXAMPLE_CHARS


def example_of(
    schema: Any, text: str = "", depth: int = 0, allowance: _Allowance | None = None
) -> Any:
    """A simple value ``schema`` admits, its strings taken from ``text``: the first
    ``const``/``enum``/``default``, every required property (every property when none is
    required), the fewest items allowed. ``$ref`` is not followed (the repair loop then
    reports what is wrong, as it would for a real model). Bounded: past
    ``EXAMPLE_NODES`` values or ``EXAMPLE_CHARS`` characters the rest is left out (null,
    or shorter), which the repair loop reports like any other wrong answer."""
    allowance = _Allowance() if allowance is None else allowance
    if not isinstance(schema, dict) or depth > 20 or allowance.nodes <= 0:
        return None
    allowance.nodes -= 1
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], text, depth + 1, allowance)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        wanted = schema.get("required") or list(properties)
        return {k: example_of(properties.get(k, {}), text, depth + 1, allowance) for k in wanted}
    if kind == "array":
        count = min(100, allowance.nodes, int(_number(schema.get("minItems"))))
        items = schema.get("items", {})
        return [example_of(items, text, depth + 1, allowance) for _ in range(count)]
    if kind in ("integer", "number"):
        value = max(0, _number(schema.get("minimum")))
        if "exclusiveMinimum" in schema:
            value = max(value, _number(schema["exclusiveMinimum"]) + 1)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "string":
        words = " ".join(text.split()[:12]) or "text"
        words = words[: int(_number(schema.get("maxLength"), len(words)))]
        string = words.ljust(min(allowance.chars, int(_number(schema.get("minLength")))), ".")
        allowance.chars -= len(string)
        return string
    return None


def _number(value: Any, default: float = 0) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else default


class OfflineProvider:
    def __init__(self, name: str = "offline", model: str = "offline-extractive-1") -> None:
        self.name = name
        self.model = model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = self._answer(request)
        prompt_words = sum(count_words(m.content) for m in request.messages)
        return ChatResponse(
            text=text,
            model=request.model or self.model,
            usage=TokenUsage(prompt=prompt_words, completion=count_words(text)),
        )

    def _answer(self, request: ChatRequest) -> str:
        inputs = request.inputs
        if request.intent == "summary":
            max_words = int(inputs.get("max_words") or 60)
            summary = extractive_summary(str(inputs.get("text") or ""), max_words)
            return json.dumps({"summary": summary}, ensure_ascii=False)
        if request.intent == "scene":
            return json.dumps(templated_scene(inputs), ensure_ascii=False)
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if request.intent == "structured":
            return json.dumps(example_of(inputs.get("json_schema"), last_user), ensure_ascii=False)
        echo = extractive_summary(last_user, 60)
        return json.dumps({"text": echo}) if request.response_format == "json" else echo

    async def aclose(self) -> None:
        return None
