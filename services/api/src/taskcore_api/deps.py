"""What the routes need, built once per process by ``main.serve``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.quotas import QuotaPolicy, Quotas
from taskcore.registry import TaskTypeRegistry
from taskcore.settings import Settings
from taskcore.submission import Deliveries

from taskcore_api.auth import Authenticator
from taskcore_api.identity.jwt_tokens import JwtVerifier
from taskcore_api.identity.keyring import KeyRing
from taskcore_api.identity.stream_tokens import StreamTokens
from taskcore_api.live import LiveEvents
from taskcore_api.user_slots import UserSlots


@dataclass
class Deps:
    settings: Settings
    store: Store
    publisher: Publisher
    registry: TaskTypeRegistry
    keys: KeyRing
    # The process's one subscription to committed events (SSE, ?wait=). Until started
    # it delivers nothing.
    live: LiveEvents = field(default_factory=LiveEvents)
    quota_policy: QuotaPolicy = field(default_factory=QuotaPolicy.unlimited)
    # What submissions publish with; only the test-only fault hook makes it differ.
    submission_publisher: Publisher | None = None
    # Submissions' publishes, which go on after the answer (drained at shutdown).
    deliveries: Deliveries = field(default_factory=Deliveries)
    jwts: JwtVerifier | None = None
    stream_tokens: StreamTokens = field(default_factory=lambda: StreamTokens(None))
    stream_slots: UserSlots = field(default_factory=lambda: UserSlots("open event streams", 100))
    wait_slots: UserSlots = field(default_factory=lambda: UserSlots("waiting submissions", 100))

    authenticator: Authenticator = field(init=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.keys, self.jwts, self.stream_tokens)

    @property
    def quotas(self) -> Quotas:
        return Quotas(self.store, self.quota_policy)

    @property
    def publisher_for_submissions(self) -> Publisher:
        return self.submission_publisher or self.publisher


async def get_deps(request: Request) -> Deps:
    # A coroutine, so FastAPI does not run it in its thread pool.
    deps: Deps = request.app.state.deps
    return deps
