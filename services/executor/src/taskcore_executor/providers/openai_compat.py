"""A client for OpenAI-compatible ``POST {base_url}/chat/completions`` APIs.

OpenAI itself, DeepSeek, Zhipu, vLLM, Ollama and most gateways speak this dialect; only
``base_url``, the key and the model differ.
"""

from __future__ import annotations

from typing import Any

import httpx
from taskcore.plugin import RetryableError

from taskcore_executor.providers.base import (
    ChatRequest,
    ChatResponse,
    TokenUsage,
    error_for_status,
)


class OpenAICompatProvider:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            reply = await self._client.post("chat/completions", json=self._body(request))
        except httpx.TransportError as exc:  # timeouts, refused or reset connections
            raise RetryableError(
                f"{self.name} could not be reached ({exc.__class__.__name__}: {exc})"
            ) from exc
        error = error_for_status(
            self.name, reply.status_code, reply.text, reply.headers.get("retry-after")
        )
        if error is not None:
            raise error
        return self._parse(reply)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        return body

    def _parse(self, reply: httpx.Response) -> ChatResponse:
        # A 200 whose body is not a completion comes from a broken proxy or a provider
        # incident, not from our request, so trying again is the right answer.
        try:
            data = reply.json()
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
            return ChatResponse(
                text=text,
                model=str(data.get("model") or self.model),
                usage=TokenUsage(
                    prompt=int(usage.get("prompt_tokens") or 0),
                    completion=int(usage.get("completion_tokens") or 0),
                ),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RetryableError(
                f"{self.name} answered 200 with a body that is not a chat completion"
            ) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
