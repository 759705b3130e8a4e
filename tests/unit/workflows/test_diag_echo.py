"""``diag.echo {value}`` completes with ``{"value": <value>}``."""

from __future__ import annotations

from typing import Any, cast

import pytest
from taskcore.plugin import TaskContext
from taskcore.settings import Settings
from taskcore.tasktypes.diag import Echo, EchoParams, task_types


@pytest.mark.parametrize("value", [None, 3, "text", [1, {"a": [True]}], {"nested": {"x": None}}])
async def test_echo_returns_its_value_unchanged(value: Any) -> None:
    params = EchoParams.model_validate({"value": value})

    result = await Echo().execute(params, cast(TaskContext, None))

    assert result.model_dump(mode="json") == {"value": value}


def test_echo_refuses_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        EchoParams.model_validate({"value": 1, "other": 2})


def test_echo_is_registered_with_the_diagnostic_types() -> None:
    names = [t.name for t in task_types(Settings())]

    assert "diag.echo" in names
