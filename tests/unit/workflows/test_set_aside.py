"""The registry's checks at submit, with references set aside (placeholder strategy)."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from taskcore.workflows import (
    PLACEHOLDER,
    InvalidWorkflow,
    Problem,
    StepSpec,
    WorkflowSubmission,
    parameter_problems,
    parse_submission,
    set_aside,
    validate,
)

from .runtime import ref, step


class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    n: int = 1


class Message(BaseModel):
    role: Literal["system", "user"]
    content: str


class Chat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[Message] = Field(min_length=1)
    tags: list[str] = []


class Strict(BaseModel):
    text: str

    @field_validator("text", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip()  # fails with AttributeError on anything but a string


class EitherOr(BaseModel):
    a: Any = None
    b: int | None = None

    @model_validator(mode="after")
    def _one(self) -> EitherOr:
        if (self.a is None) == (self.b is None):
            raise ValueError("give exactly one of a and b")
        return self


MODELS: dict[str, type[BaseModel]] = {"p": P, "chat": Chat, "strict": Strict, "either": EitherOr}


def check_step(spec: StepSpec, parameters: Any) -> list[Problem]:
    """The hook as the API would write it over its registry."""
    model = MODELS.get(spec.task_type)
    if model is None:
        return [Problem(("task_type",), f"unknown task type {spec.task_type!r}")]
    return parameter_problems(model, parameters)


def problems(*steps: dict[str, Any]) -> list[tuple[str, str]]:
    submission = WorkflowSubmission.model_validate({"steps": list(steps)})
    return [(p.field, p.reason) for p in validate(submission, check_step)]


SOURCE = step("src", task_type="p", parameters={"text": "x"})


def test_a_required_field_given_by_a_reference_does_not_fail() -> None:
    assert (
        problems(SOURCE, step("b", "src", task_type="p", parameters={"text": ref("src.result")}))
        == []
    )


def test_a_field_with_a_default_may_also_be_given_by_a_reference() -> None:
    parameters = {"text": "t", "n": ref("src.result.n")}

    assert problems(SOURCE, step("b", "src", task_type="p", parameters=parameters)) == []


def test_the_fields_not_given_by_references_are_still_checked() -> None:
    parameters = {"text": ref("src.result"), "n": "many", "extra": 1}

    assert problems(SOURCE, step("b", "src", task_type="p", parameters=parameters)) == [
        (
            "steps[1].parameters.n",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("steps[1].parameters.extra", "Extra inputs are not permitted"),
    ]


def test_a_required_field_given_neither_directly_nor_by_a_reference_fails() -> None:
    assert problems(step("a", task_type="p", parameters={"n": 2})) == [
        ("steps[0].parameters.text", "Field required")
    ]


def test_a_reference_inside_a_list_sets_aside_only_that_element() -> None:
    messages = [
        {"role": "user", "content": ref("src.result.text")},
        {"role": "robot", "content": "hi"},
        ref("src.result.message"),
    ]
    parameters = {"messages": messages, "tags": ["a", ref("src.result"), 3]}

    assert problems(SOURCE, step("b", "src", task_type="chat", parameters=parameters)) == [
        ("steps[1].parameters.messages[1].role", "Input should be 'system' or 'user'"),
        ("steps[1].parameters.tags[2]", "Input should be a valid string"),
    ]


def test_parameters_that_are_one_reference_set_every_schema_check_aside() -> None:
    assert problems(SOURCE, step("b", "src", task_type="p", parameters=ref("src.result"))) == []


def test_for_each_item_references_are_set_aside_like_step_references() -> None:
    body = step(
        "b", "src", task_type="p", for_each=ref("src.result.list"), parameters={"text": ref("item")}
    )

    assert problems(SOURCE, body) == []


def test_a_model_validator_that_fails_because_of_a_placeholder_is_set_aside() -> None:
    assert (
        problems(SOURCE, step("b", "src", task_type="either", parameters={"a": ref("src.result")}))
        == []
    )
    assert problems(step("c", task_type="either", parameters={})) == [
        ("steps[0].parameters", "Value error, give exactly one of a and b")
    ]


def test_a_validator_that_crashes_on_a_placeholder_defers_the_check_to_the_start() -> None:
    assert (
        problems(
            SOURCE, step("b", "src", task_type="strict", parameters={"text": ref("src.result")})
        )
        == []
    )


def test_a_validator_that_crashes_on_real_input_is_one_problem_without_its_message() -> None:
    assert parameter_problems(Strict, {"text": 5}) == [
        Problem(("parameters",), "the parameters could not be validated (AttributeError)")
    ]


def test_an_unknown_task_type_is_reported_at_the_step_s_task_type() -> None:
    assert problems(step("a", task_type="nope")) == [
        ("steps[0].task_type", "unknown task type 'nope'")
    ]


def test_a_malformed_reference_is_reported_once_not_again_as_a_schema_error() -> None:
    assert problems(step("a", task_type="p", parameters={"text": ref("bad")})) == [
        (
            "steps[0].parameters.text",
            "'bad' does not start with '<step id>.result' or 'item' "
            "(e.g. 'parse.result.chapters[0]')",
        )
    ]


def test_literals_are_checked_against_the_schema_as_their_content() -> None:
    ok = {"text": {"$literal": "plain"}}
    wrong = {"text": {"$literal": {"$ref": "#/x"}}}

    assert problems(step("a", task_type="p", parameters=ok)) == []
    assert problems(step("a", task_type="p", parameters=wrong)) == [
        ("steps[0].parameters.text", "Input should be a valid string")
    ]


def test_set_aside_gives_the_placeholder_tree_and_the_reference_locations() -> None:
    tree, locations = set_aside({"a": [1, ref("x.result")], "b": {"$literal": {"$ref": "y"}}})

    assert tree == {"a": [1, PLACEHOLDER], "b": {"$ref": "y"}}
    assert locations == (("a", 1),)


def test_parse_submission_raises_the_registry_s_problems_with_the_structural_ones() -> None:
    body = {"steps": [step("a", "zz", task_type="nope")]}

    with pytest.raises(InvalidWorkflow) as raised:
        parse_submission(body, check_step)

    assert [p.field for p in raised.value.problems] == [
        "steps[0].depends_on[0]",
        "steps[0].task_type",
    ]
