"""Validation at submit: every problem, each at the exact field path the contract uses."""

from __future__ import annotations

from typing import Any

import pytest
from taskcore.workflows import (
    InvalidWorkflow,
    Problem,
    WorkflowSubmission,
    parse_submission,
    validate,
)

from .runtime import ref, step


def problems_of(*steps: dict[str, Any]) -> list[tuple[str, str]]:
    submission = WorkflowSubmission.model_validate({"steps": list(steps)})
    return [(p.field, p.reason) for p in validate(submission)]


def fields_of(*steps: dict[str, Any]) -> list[str]:
    return [field for field, _ in problems_of(*steps)]


def test_a_valid_diamond_with_references_has_no_problem() -> None:
    assert (
        problems_of(
            step("a", parameters={"value": [1, 2]}),
            step("b", "a", parameters={"value": ref("a.result.value[0]")}),
            step("c", "a", for_each=ref("a.result.value"), parameters={"value": ref("item")}),
            step("d", "b", "c", parameters={"value": [ref("b.result"), ref("c.result[1]")]}),
        )
        == []
    )


def test_a_duplicate_step_id_is_reported_at_the_second_id() -> None:
    assert problems_of(step("a"), step("b"), step("a")) == [
        ("steps[2].id", "duplicate step id 'a' (steps[0])")
    ]


def test_an_unknown_or_repeated_dependency_is_reported_at_its_entry() -> None:
    assert problems_of(step("a"), step("b", "a", "zz", "a")) == [
        ("steps[1].depends_on[1]", "unknown step id 'zz'"),
        ("steps[1].depends_on[2]", "'a' is listed twice"),
    ]


def test_a_cycle_is_reported_at_the_edge_that_closes_it_naming_its_steps() -> None:
    problems = problems_of(step("a", "c"), step("b", "a"), step("c", "b"), step("d"))

    assert problems == [
        (
            "steps[1].depends_on[0]",
            "dependency cycle: b -> a -> c -> b (each step depends on the next)",
        )
    ]


def test_a_step_that_depends_on_itself_is_a_cycle_of_one() -> None:
    assert problems_of(step("a", "a")) == [
        ("steps[0].depends_on[0]", "dependency cycle: a -> a (each step depends on the next)")
    ]


def test_two_separate_cycles_are_both_reported() -> None:
    assert fields_of(step("a", "b"), step("b", "a"), step("c", "d"), step("d", "c")) == [
        "steps[1].depends_on[0]",
        "steps[3].depends_on[0]",
    ]


def test_a_reference_to_a_step_that_is_not_upstream_is_reported_at_the_reference() -> None:
    problems = problems_of(
        step("a"), step("b"), step("c", "a", parameters={"text": ref("b.result.text")})
    )

    assert problems == [
        (
            "steps[2].parameters.text",
            "'b.result.text' refers to step 'b', which 'c' does not depend on, directly or "
            "transitively: add it to depends_on",
        )
    ]


def test_a_reference_to_a_transitive_upstream_step_is_allowed() -> None:
    assert (
        problems_of(step("a"), step("b", "a"), step("c", "b", parameters={"x": ref("a.result")}))
        == []
    )


def test_references_to_unknown_steps_and_to_the_step_itself_are_reported() -> None:
    assert problems_of(
        step("a", parameters={"x": [ref("a.result"), {"y": ref("nope.result")}]})
    ) == [
        ("steps[0].parameters.x[0]", "'a.result': a step cannot refer to its own result"),
        ("steps[0].parameters.x[1].y", "'nope.result' refers to unknown step 'nope'"),
    ]


def test_an_item_reference_outside_a_for_each_step_is_reported() -> None:
    assert problems_of(step("a", parameters={"messages": [{"content": ref("item.text")}]})) == [
        (
            "steps[0].parameters.messages[0].content",
            "'item.text': 'item' exists only in steps with for_each",
        )
    ]


def test_a_malformed_reference_is_reported_at_its_location_with_the_grammar_error() -> None:
    problems = problems_of(
        step("a"),
        step("b", "a", parameters={"a": {"b": [ref("a.result.x[01]")]}, "c": ref("a")}),
        step("c", "a", parameters={"d": {"$ref": "a.result", "default": 0}}),
    )

    assert [field for field, _ in problems] == [
        "steps[1].parameters.a.b[0]",
        "steps[1].parameters.c",
        "steps[2].parameters.d",
    ]
    assert "malformed at character 11" in problems[0][1]
    assert "does not start with '<step id>.result' or 'item'" in problems[1][1]
    assert problems[2][1] == "a reference object has only the key '$ref' (also: 'default')"


def test_a_key_that_is_not_a_bare_word_is_quoted_in_the_field_path() -> None:
    assert fields_of(step("a", parameters={"a.b": {"c d": ref("item")}})) == [
        'steps[0].parameters["a.b"]["c d"]'
    ]


@pytest.mark.parametrize(
    ("for_each", "reason"),
    [
        ([1, 2], "for_each must be a reference to a list: expected a reference"),
        ("a.result", "for_each must be a reference to a list: expected a reference"),
        (
            {"$ref": "a.result.x["},
            "for_each must be a reference to a list: 'a.result.x[' is malformed",
        ),
        ({"$ref": "item"}, "for_each cannot refer to 'item'"),
        ({"$ref": "b.result"}, "'b.result' refers to step 'b', which 'c' does not depend on"),
    ],
)
def test_a_for_each_that_is_not_a_reference_to_an_upstream_list_is_reported(
    for_each: Any, reason: str
) -> None:
    problems = problems_of(step("a"), step("b"), step("c", "a", for_each=for_each))

    assert len(problems) == 1
    assert problems[0][0] == "steps[2].for_each"
    assert problems[0][1].startswith(reason)


def test_every_problem_is_reported_at_once_grouped_by_step() -> None:
    assert fields_of(
        step("a", "ghost", parameters={"x": ref("item")}),
        step("a", for_each=[1]),
        step("b", "b", parameters={"y": ref("a.result.z[x]")}),
    ) == [
        "steps[0].depends_on[0]",
        "steps[0].parameters.x",
        "steps[1].id",
        "steps[1].for_each",
        "steps[2].depends_on[0]",
        "steps[2].parameters.y",
    ]


def test_more_than_a_hundred_steps_are_refused_at_the_steps_field() -> None:
    body = {"steps": [step(f"s{i}") for i in range(101)]}

    with pytest.raises(InvalidWorkflow) as raised:
        parse_submission(body)

    assert [p.field for p in raised.value.problems] == ["steps"]
    assert "at most 100" in raised.value.problems[0].reason


def test_validate_counts_the_steps_even_of_a_submission_built_without_parsing() -> None:
    steps = [
        WorkflowSubmission.model_validate({"steps": [step(f"s{i}")]}).steps[0] for i in range(101)
    ]
    submission = WorkflowSubmission.model_construct(steps=steps)

    assert Problem(("steps",), "at most 100 steps, got 101") in validate(submission)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": []}, "steps"),
        ({"steps": [{"id": "a.b", "task_type": "x"}]}, "steps[0].id"),
        ({"steps": [{"id": "", "task_type": "x"}]}, "steps[0].id"),
        ({"steps": [{"id": "x" * 65, "task_type": "x"}]}, "steps[0].id"),
        ({"steps": [{"id": "item", "task_type": "x"}]}, "steps[0].id"),
        ({"steps": [{"id": "a"}]}, "steps[0].task_type"),
        ({"steps": [step("a"), step("b", "a.b")]}, "steps[1].depends_on[0]"),
        ({"steps": [step("a", priority=10)]}, "steps[0].priority"),
        ({"steps": [step("a", max_attempts=0)]}, "steps[0].max_attempts"),
        ({"steps": [step("a", parameters=[1])]}, "steps[0].parameters"),
        ({"steps": [step("a", surprise=1)]}, "steps[0].surprise"),
        ({"steps": [step("a")], "on_failure": "retry"}, "on_failure"),
        ({"steps": [step("a")], "labels": {"Bad": "x"}}, "labels.Bad"),
        ({"steps": [step("a")], "labels": {"k": "v" * 257}}, "labels.k"),
        ({"steps": [step("a")], "labels": {f"k{i}": "v" for i in range(21)}}, "labels"),
        ({"steps": [step("a")], "labels": {"k": 1}}, "labels.k"),
    ],
)
def test_a_field_that_is_wrong_on_its_own_is_refused_at_its_path(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        parse_submission(body)

    assert [p.field for p in raised.value.problems] == [field]


def test_a_label_key_that_does_not_match_the_pattern_is_refused_at_that_key() -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        parse_submission({"steps": [step("a")], "labels": {"ok": "1", "Not ok": "2"}})

    [problem] = raised.value.problems
    assert problem.field == 'labels["Not ok"]'
    assert problem.reason.startswith("invalid key: String should match pattern")


def test_parse_submission_returns_the_submission_when_it_is_valid() -> None:
    body = {
        "name": "import",
        "steps": [step("a"), step("b", "a", parameters={"value": ref("a.result")})],
        "on_failure": "continue",
        "labels": {"project_id": "42"},
    }

    submission = parse_submission(body)

    assert submission.name == "import"
    assert [s.id for s in submission.steps] == ["a", "b"]
    assert submission.steps[1].depends_on == ("a",)
    assert submission.labels == {"project_id": "42"}


def test_a_body_that_is_not_an_object_is_refused_as_the_body() -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        parse_submission([1, 2])

    assert [p.as_detail()["field"] for p in raised.value.problems] == ["body"]


def test_invalid_workflow_says_its_first_problem_and_how_many_more() -> None:
    error = InvalidWorkflow([Problem(("steps", 0, "id"), "bad"), Problem(("name",), "worse")])

    assert str(error) == "steps[0].id: bad (and 1 more)"
    assert [p.as_detail() for p in error.problems] == [
        {"field": "steps[0].id", "reason": "bad"},
        {"field": "name", "reason": "worse"},
    ]
