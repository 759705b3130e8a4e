"""LLM providers for task types: the port, the OpenAI-compatible and offline providers,
limits shared across executor processes, and the tiered router (see ``config`` for the
``TASKCORE_PROVIDERS`` format)."""

from taskcore_executor.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Provider,
    TokenUsage,
)
from taskcore_executor.providers.config import ProvidersConfig, load_providers_config
from taskcore_executor.providers.limits import MongoLimiter, ProviderLimits, ProviderSaturated
from taskcore_executor.providers.router import ProviderRouter, RoutedResponse, build_router

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "MongoLimiter",
    "Provider",
    "ProviderLimits",
    "ProviderRouter",
    "ProviderSaturated",
    "ProvidersConfig",
    "RoutedResponse",
    "TokenUsage",
    "build_router",
    "load_providers_config",
]
