"""Discovering task types: the ``taskcore.task_types`` entry points and ``TASKCORE_PLUGINS``.

An entry point (or a plugin module's ``TASK_TYPES`` attribute) is either a sequence of
``TaskType`` instances or a factory ``(settings) -> sequence``; factories let a type take
configuration (a provider router, say) without doing I/O at import.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from taskcore.plugin import TaskType
from taskcore.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "taskcore.task_types"

AnyTaskType = TaskType[Any, Any]


class UnknownTaskType(KeyError):
    pass


class TaskTypeRegistry:
    def __init__(self, types: Iterable[AnyTaskType] = ()) -> None:
        self._types: dict[str, AnyTaskType] = {}
        for t in types:
            self.add(t)

    def add(self, task_type: AnyTaskType) -> None:
        if task_type.name in self._types:
            raise ValueError(f"task type {task_type.name!r} is registered twice")
        self._types[task_type.name] = task_type

    def get(self, name: str) -> AnyTaskType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTaskType(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def submittable(self, name: str) -> bool:
        """Whether clients may submit tasks of this type (see ``TaskType.submittable``)."""
        task_type = self._types.get(name)
        return task_type is not None and task_type.submittable

    def names(self) -> list[str]:
        return sorted(self._types)

    def all(self) -> list[AnyTaskType]:
        return [self._types[n] for n in self.names()]


def _expand(source: Any, settings: Settings) -> list[AnyTaskType]:
    if callable(source) and not isinstance(source, TaskType):
        source = source(settings)
    return list(source)


def load_registry(settings: Settings) -> TaskTypeRegistry:
    registry = TaskTypeRegistry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not settings.enable_diag and ep.name == "diag":
            continue
        for t in _expand(ep.load(), settings):
            registry.add(t)
    for module_name in settings.plugins:
        module = importlib.import_module(module_name)
        for t in _expand(module.TASK_TYPES, settings):
            if t.name not in registry:
                registry.add(t)
    return registry
