"""Domain errors: refusals that are never retried."""

from __future__ import annotations


class DomainError(Exception):
    """A command the domain refuses; the caller's fault, never retried."""


class TaskNotFound(DomainError):
    pass


class InvalidTransition(DomainError):
    pass
