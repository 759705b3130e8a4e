"""The state machine through scenarios: order, fan-out, failure policies, cancellation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows import (
    CancelStep,
    FailStep,
    FinishWorkflow,
    Problem,
    SkipStep,
    StartForEach,
    StartStep,
    StepSpec,
    StepTaskChanged,
    decide,
    evolve,
    parameter_problems,
)

from .runtime import Runner, plan_of, ref, step

S = TaskStatus
BOOM = TaskError(type="ValueError", message="boom")


def diamond(on_failure: str = "fail_fast") -> Runner:
    return Runner(
        plan_of(
            step("a", parameters={"value": {"n": 2}}),
            step("b", "a", parameters={"value": ref("a.result.value.n")}),
            step("c", "a", parameters={"value": [ref("a.result.value")]}),
            step("d", "b", "c", parameters={"value": [ref("b.result.value"), ref("c.result")]}),
            on_failure=on_failure,
        )
    )


def echo(value: Any) -> dict[str, Any]:
    return {"value": value}


# Order and references ---------------------------------------------------------------


def test_steps_without_dependencies_start_at_once_in_submission_order() -> None:
    runner = Runner(plan_of(step("x"), step("y", "x"), step("z")))

    assert runner.settle() == [
        StartStep("x", "diag.echo", {}),
        StartStep("z", "diag.echo", {}),
    ]


def test_the_diamond_passes_values_through_and_completes_with_every_step_result() -> None:
    runner = diamond()
    assert runner.settle() == [StartStep("a", "diag.echo", {"value": {"n": 2}})]

    started = runner.end("a", result=echo({"n": 2}))
    assert started == [
        StartStep("b", "diag.echo", {"value": 2}),
        StartStep("c", "diag.echo", {"value": [{"n": 2}]}),
    ]

    assert runner.end("c", result=echo([{"n": 2}])) == []  # d still waits for b
    started = runner.end("b", result=echo(2))
    assert started == [StartStep("d", "diag.echo", {"value": [2, echo([{"n": 2}])]})]

    finished = runner.end("d", result=echo("done"))
    assert finished == [
        FinishWorkflow(
            S.COMPLETED,
            {
                "steps": {
                    "a": echo({"n": 2}),
                    "b": echo(2),
                    "c": echo([{"n": 2}]),
                    "d": echo("done"),
                }
            },
        )
    ]


def test_a_step_does_not_start_while_a_dependency_is_only_running() -> None:
    runner = diamond()
    runner.settle()

    assert runner.end("a", S.RUNNING) == []
    assert runner.end("a", S.RETRYING) == []
    assert runner.status_of("b") is None


def test_a_start_carries_the_step_s_priority_and_max_attempts() -> None:
    runner = Runner(plan_of(step("a", priority=7, max_attempts=2)))

    assert runner.settle() == [StartStep("a", "diag.echo", {}, priority=7, max_attempts=2)]


# for_each ---------------------------------------------------------------------------


def fan_out() -> Runner:
    return Runner(
        plan_of(
            step("split", parameters={"value": ["x", "y", "z"]}),
            step(
                "each",
                "split",
                for_each=ref("split.result.value"),
                parameters={"value": {"text": ref("item"), "from": ref("split.result.value[0]")}},
            ),
            step("join", "each", parameters={"value": ref("each.result")}),
        )
    )


def test_for_each_starts_one_task_per_element_with_the_item_resolved() -> None:
    runner = fan_out()
    runner.settle()

    assert runner.end("split", result=echo(["x", "y", "z"])) == [
        StartForEach(
            "each",
            "diag.echo",
            (
                {"value": {"text": "x", "from": "x"}},
                {"value": {"text": "y", "from": "x"}},
                {"value": {"text": "z", "from": "x"}},
            ),
        )
    ]


def test_a_for_each_result_is_the_element_results_in_element_order() -> None:
    runner = fan_out()
    runner.settle()
    runner.end("split", result=echo(["x", "y", "z"]))

    assert runner.end("each", result="Z", element=2) == []
    assert runner.end("each", S.RUNNING, element=0) == []
    assert runner.status_of("each") is S.RUNNING
    assert runner.end("each", result="X", element=0) == []
    started = runner.end("each", result="Y", element=1)

    assert runner.state.steps["each"].result == ["X", "Y", "Z"]
    assert started == [StartStep("join", "diag.echo", {"value": ["X", "Y", "Z"]})]


def test_a_for_each_over_an_empty_list_completes_at_once_with_an_empty_list() -> None:
    runner = fan_out()
    runner.settle()

    started = runner.end("split", result=echo([]))

    assert started == [
        StartForEach("each", "diag.echo", ()),
        StartStep("join", "diag.echo", {"value": []}),
    ]
    assert runner.status_of("each") is S.COMPLETED


def test_a_for_each_over_something_not_a_list_fails_the_step_with_reference_error() -> None:
    runner = fan_out()
    runner.settle()

    commands = runner.end("split", result=echo({"not": "a list"}))

    assert commands[0] == FailStep(
        "each",
        TaskError(
            type="ReferenceError", message="for_each: split.result.value is an object, not a list"
        ),
    )


def test_a_for_each_longer_than_the_limit_fails_the_step_with_tree_limit_exceeded() -> None:
    runner = fan_out()
    runner.settle()
    runner.state = evolve(
        runner.state, StepTaskChanged("split", "step:split", S.COMPLETED, echo([1, 2, 3]))
    )

    assert isinstance(decide(runner.plan, runner.state, max_elements=3)[0], StartForEach)
    assert decide(runner.plan, runner.state, max_elements=2) == [
        FailStep(
            "each",
            TaskError(
                type="TreeLimitExceeded", message="for_each: 3 elements, more than the 2 allowed"
            ),
        )
    ]


# Failures: fail_fast ----------------------------------------------------------------


def test_fail_fast_cancels_the_running_siblings_skips_the_rest_and_fails_the_workflow() -> None:
    runner = diamond("fail_fast")
    runner.settle()
    runner.end("a", result=echo({"n": 2}))

    commands = runner.end("b", S.FAILED, error=BOOM)

    assert commands == [CancelStep("c", ("step:c",)), SkipStep("d")]
    assert runner.finish is None  # c is still running: no finish before it ends
    finished = runner.end("c", S.CANCELLED)
    assert finished == [
        FinishWorkflow(
            S.FAILED,
            None,
            TaskError(
                type="StepFailed",
                message="step 'b' ended FAILED (ValueError: boom) "
                "(the other open steps were cancelled)",
            ),
        )
    ]


def test_under_fail_fast_dead_letter_and_cancelled_steps_fail_the_workflow_too() -> None:
    for ending in (S.DEAD_LETTER, S.CANCELLED):
        runner = Runner(plan_of(step("a"), step("b", "a")))
        runner.settle()

        commands = runner.end("a", ending)

        assert commands[0] == SkipStep("b")
        assert runner.finish is not None
        assert runner.finish.status is S.FAILED


def test_a_sibling_that_completes_after_the_cancel_order_keeps_its_result_status() -> None:
    runner = diamond("fail_fast")
    runner.settle()
    runner.end("a", result=echo({"n": 2}))
    runner.end("b", S.FAILED, error=BOOM)

    runner.end("c", result=echo("late"))

    assert runner.status_of("c") is S.COMPLETED
    assert runner.finish is not None
    assert runner.finish.status is S.FAILED


def test_fail_fast_cancels_a_for_each_s_open_elements_when_one_element_fails() -> None:
    runner = fan_out()
    runner.settle()
    runner.end("split", result=echo(["x", "y", "z"]))
    runner.end("each", result="X", element=0)

    commands = runner.end("each", S.FAILED, element=1, error=BOOM)

    assert commands == [CancelStep("each", ("step:each:2",)), SkipStep("join")]
    runner.end("each", S.CANCELLED, element=2)
    assert runner.status_of("each") is S.FAILED
    assert runner.state.steps["each"].error == TaskError(
        type="ForEachFailed",
        message="2 of 3 elements did not complete; the first, element 1, ended FAILED: "
        "ValueError: boom",
    )
    assert runner.finish is not None
    assert runner.finish.status is S.FAILED


# Failures: continue -----------------------------------------------------------------


def test_continue_cancels_only_the_dependents_and_lets_the_others_finish() -> None:
    runner = Runner(
        plan_of(
            step("a"),
            step("b", "a"),
            step("c", "b"),
            step("x"),
            step("y", "x"),
            on_failure="continue",
        )
    )
    runner.settle()

    assert runner.end("a", S.FAILED, error=BOOM) == [SkipStep("b"), SkipStep("c")]
    assert runner.cancel_orders() == []
    assert runner.end("x", result=echo(1)) == [StartStep("y", "diag.echo", {})]
    finished = runner.end("y", result=echo(2))

    assert finished == [
        FinishWorkflow(
            S.COMPLETED_WITH_ERRORS,
            {"steps": {"x": echo(1), "y": echo(2)}},
            TaskError(
                type="StepsFailed",
                message="3 of 5 steps did not complete: 'a' ended FAILED (ValueError: boom); "
                "not run, as a step they depend on did not complete: 'b', 'c'",
            ),
        )
    ]


def test_under_continue_a_for_each_waits_for_every_element_before_it_fails() -> None:
    runner = Runner(
        plan_of(
            step("s"),
            step("each", "s", for_each=ref("s.result")),
            step("after", "each"),
            on_failure="continue",
        )
    )
    runner.settle()
    runner.end("s", result=[1, 2])

    assert runner.end("each", S.DEAD_LETTER, element=0) == []
    assert runner.status_of("each") is S.RUNNING
    assert runner.end("each", result="ok", element=1)[0] == SkipStep("after")
    assert runner.status_of("each") is S.FAILED


def test_a_step_completed_with_errors_stops_its_dependents_but_not_the_workflow() -> None:
    runner = Runner(plan_of(step("a"), step("b", "a"), step("c")))
    runner.settle()

    assert runner.end("a", S.COMPLETED_WITH_ERRORS, result={"partial": 1}) == [SkipStep("b")]
    runner.end("c", result=echo(3))

    assert runner.finish is not None
    assert runner.finish.status is S.COMPLETED_WITH_ERRORS
    assert runner.finish.result == {"steps": {"c": echo(3)}}
    assert runner.cancel_orders() == []


# An unresolvable reference fails only its step ---------------------------------------


def test_a_reference_that_resolves_to_nothing_fails_its_step_with_reference_error() -> None:
    runner = Runner(
        plan_of(
            step("a"),
            step("b", "a", parameters={"value": {"t": ref("a.result.chapters[3]")}}),
            step("c", "a", parameters={"value": ref("a.result.chapters[0]")}),
            step("d", "b"),
            on_failure="continue",
        )
    )
    runner.settle()

    commands = runner.end("a", result={"chapters": ["one"]})

    assert commands == [
        FailStep(
            "b",
            TaskError(
                type="ReferenceError",
                message="parameters.value.t: 'a.result.chapters[3]' resolves to nothing: "
                "index 3 is out of range: a.result.chapters has 1 items",
            ),
        ),
        StartStep("c", "diag.echo", {"value": "one"}),
        SkipStep("d"),
    ]
    assert runner.status_of("b") is S.FAILED
    runner.end("c", result=echo("one"))
    assert runner.finish is not None
    assert runner.finish.status is S.COMPLETED_WITH_ERRORS
    assert runner.finish.result == {"steps": {"a": {"chapters": ["one"]}, "c": echo("one")}}


def test_under_fail_fast_a_step_failing_at_its_start_is_the_only_order_given() -> None:
    runner = Runner(
        plan_of(
            step("a"),
            step("b", "a", parameters={"value": ref("a.result.missing")}),
            step("c", "a"),
        )
    )
    runner.settle()

    commands = runner.end("a", result={})

    assert commands[0] == FailStep(
        "b",
        TaskError(
            type="ReferenceError",
            message="parameters.value: 'a.result.missing' resolves to nothing: "
            "a.result has no key 'missing'",
        ),
    )
    assert commands[1:] == [SkipStep("c"), runner.finish]
    assert [c for c in runner.log if isinstance(c, StartStep)] == [StartStep("a", "diag.echo", {})]


def test_an_element_whose_reference_resolves_to_nothing_fails_the_whole_for_each() -> None:
    runner = Runner(
        plan_of(
            step("s"),
            step("each", "s", for_each=ref("s.result"), parameters={"value": ref("item.text")}),
        )
    )
    runner.settle()

    commands = runner.end("s", result=[{"text": "a"}, {"title": "b"}])

    assert commands[0] == FailStep(
        "each",
        TaskError(
            type="ReferenceError",
            message="element 1: parameters.value: 'item.text' resolves to nothing: "
            "item has no key 'text'",
        ),
    )
    assert runner.finish is not None
    assert runner.finish.status is S.FAILED


class Seconds(BaseModel):
    seconds: float


def seconds_check(spec: StepSpec, parameters: Any) -> list[Problem]:
    if spec.task_type != "diag.sleep":
        return []
    return parameter_problems(Seconds, parameters)


def test_resolved_parameters_that_fail_the_schema_fail_the_step_with_validation_error() -> None:
    runner = Runner(
        plan_of(
            step("a"),
            step("b", "a", task_type="diag.sleep", parameters={"seconds": ref("a.result.s")}),
        ),
        check_step=seconds_check,
    )
    runner.settle()

    commands = runner.end("a", result={"s": "soon"})

    assert commands[0] == FailStep(
        "b",
        TaskError(
            type="ValidationError",
            message="parameters.seconds: Input should be a valid number, "
            "unable to parse string as a number",
        ),
    )


def test_parameters_that_resolve_to_something_not_an_object_fail_with_validation_error() -> None:
    runner = Runner(plan_of(step("a"), step("b", "a", parameters=ref("a.result"))))
    runner.settle()

    commands = runner.end("a", result=[1, 2])

    assert commands[0] == FailStep(
        "b",
        TaskError(type="ValidationError", message="parameters: must be an object, got a list"),
    )


def test_parameters_that_are_one_reference_to_an_object_start_with_that_object() -> None:
    runner = Runner(plan_of(step("a"), step("b", "a", parameters=ref("a.result"))))
    runner.settle()

    assert runner.end("a", result={"value": 1}) == [StartStep("b", "diag.echo", {"value": 1})]


# Cancellation -----------------------------------------------------------------------


def test_cancelling_the_workflow_cancels_running_steps_starts_no_more_and_ends_cancelled() -> None:
    runner = diamond()
    runner.settle()
    runner.end("a", result=echo({"n": 2}))
    runner.end("b", result=echo(2))

    commands = runner.cancel_workflow()

    assert commands == [CancelStep("c", ("step:c",)), SkipStep("d")]
    assert runner.end("c", S.CANCELLED) == [FinishWorkflow(S.CANCELLED)]
    assert runner.status_of("d") is S.CANCELLED


def test_cancelling_a_workflow_before_any_step_ran_skips_them_all() -> None:
    runner = Runner(plan_of(step("a"), step("b", "a")))

    assert runner.cancel_workflow() == [SkipStep("a"), SkipStep("b"), FinishWorkflow(S.CANCELLED)]


def test_cancelling_wins_over_a_failure_policy() -> None:
    runner = Runner(plan_of(step("a"), step("b"), on_failure="continue"))
    runner.settle()
    runner.end("a", S.FAILED, error=BOOM)

    runner.cancel_workflow()
    runner.end("b", S.CANCELLED)

    assert runner.finish == FinishWorkflow(S.CANCELLED)


def test_a_finished_workflow_orders_nothing_more() -> None:
    runner = Runner(plan_of(step("a")))
    runner.settle()
    runner.end("a", result=1)

    assert runner.finish is not None
    assert runner.decide() == []
    assert runner.cancel_workflow() == []
