"""Stable keys of step tasks, from which the runtime derives their task ids."""

from __future__ import annotations

import pytest
from taskcore.workflows import parse_step_key, step_key


def test_a_step_key_reads_back_to_its_step_and_element() -> None:
    assert step_key("parse") == "step:parse"
    assert step_key("each", 17) == "step:each:17"
    assert parse_step_key(step_key("parse")) == ("parse", None)
    assert parse_step_key(step_key("a-b_c", 0)) == ("a-b_c", 0)


@pytest.mark.parametrize(
    "key", ["", "step:", "step", "0", "task:a", "step:a:x", "step:a:1:2", "step:a:²", "step:a:-1"]
)
def test_a_string_that_is_not_a_step_key_reads_as_none(key: str) -> None:
    assert parse_step_key(key) is None
