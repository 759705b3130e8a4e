"""What ``taskcore watch`` draws for a workflow, from the API's answers (no I/O)."""

from __future__ import annotations

import io
from typing import Any

from taskcore.workflow_watch import Board, Screen
from taskcore.workflows.tree import step_task_id

WF = "w" * 32


def workflow(statuses: dict[str, str], task_ids: dict[str, list[str]] | None = None) -> Any:
    """A workflow task as ``GET /v1/tasks/{id}`` returns it: make -> each (for_each) -> total."""
    task_ids = task_ids or {}
    depends = {"make": [], "each": ["make"], "total": ["each"]}
    return {
        "id": WF,
        "status": "RUNNING",
        "parameters": {
            "steps": [
                {"id": "make", "task_type": "diag.echo"},
                {"id": "each", "task_type": "diag.echo", "for_each": {"$ref": "make.result"}},
                {"id": "total", "task_type": "diag.echo"},
            ]
        },
        "workflow": {
            "name": "pipe",
            "on_failure": "fail_fast",
            "steps": {
                s: {"status": statuses[s], "task_ids": task_ids.get(s, []), "depends_on": d}
                for s, d in depends.items()
            },
        },
    }


def container(total: int, completed: int, failed: int = 0, status: str = "RUNNING") -> Any:
    counts = {"total": total, "completed": completed, "failed": failed, "running": 1}
    return {"id": step_task_id(WF, "each"), "status": status, "subtasks": counts}


def test_each_step_gets_a_line_and_a_pending_step_says_what_it_waits_for() -> None:
    board = Board(workflow({"make": "RUNNING", "each": "PENDING", "total": "PENDING"}))

    assert board.lines() == [
        f"workflow pipe {WF}  RUNNING",
        "  make   RUNNING",
        "  each   PENDING                after make",
        "  total  PENDING                after each",
    ]


def test_a_for_each_step_counts_its_elements_from_the_container() -> None:
    task = workflow(
        {"make": "COMPLETED", "each": "RUNNING", "total": "PENDING"},
        {"each": [f"e{i}" for i in range(10)]},
    )
    board = Board(task)
    assert board.wants_elements()
    assert board.lines()[2] == "  each   RUNNING                starting"

    board.take_containers([container(10, 3, failed=1)])

    assert board.lines()[2] == "  each   RUNNING                4/10 elements, 1 not completed"
    assert board.view_json()["steps"]["each"] == {"status": "RUNNING", "done": 4, "total": 10}
    board.take_containers([container(10, 10, status="COMPLETED")])
    assert not board.wants_elements(), "a finished container is not read again"


def test_a_step_that_failed_before_starting_shows_why_from_its_event() -> None:
    board = Board(workflow({"make": "COMPLETED", "each": "FAILED", "total": "CANCELLED"}))
    assert board.unexplained() == (True, {})

    board.take_event(
        "task.step_failed",
        {
            "status": "RUNNING",
            "data": {"step_id": "each", "error": {"type": "ReferenceError", "message": "x" * 200}},
        },
    )

    line = board.lines()[2]
    assert line.startswith("  each   FAILED                 ReferenceError: xxx")
    assert line.endswith("...")
    assert len(line) == len("  each   FAILED                 ") + 100
    assert board.unexplained() == (False, {})


def test_a_failed_step_task_is_read_once_for_its_error() -> None:
    task = workflow(
        {"make": "DEAD_LETTER", "each": "CANCELLED", "total": "CANCELLED"}, {"make": ["m1"]}
    )
    board = Board(task)
    assert board.unexplained() == (False, {"make": "m1"})

    board.take_step_task("make", {"id": "m1", "error": {"type": "Boom", "message": "it broke"}})

    assert board.lines()[1] == "  make   DEAD_LETTER            Boom: it broke"
    assert board.unexplained() == (False, {})


def test_a_late_poll_does_not_undo_the_terminal_status_of_the_stream() -> None:
    board = Board(workflow({"make": "COMPLETED", "each": "COMPLETED", "total": "RUNNING"}))
    board.take_event("task.completed", {"status": "COMPLETED", "data": {}})

    board.take_task(workflow({"make": "COMPLETED", "each": "COMPLETED", "total": "RUNNING"}))

    assert board.status == "COMPLETED"


def test_on_a_terminal_the_block_is_redrawn_in_place() -> None:
    stream = io.StringIO()
    screen = Screen(stream, redraw=True)

    screen.show(["a", "b"])
    screen.show(["a", "c"])
    screen.show(["a", "c"])

    assert stream.getvalue() == "\x1b[2Ka\n\x1b[2Kb\n\x1b[J" + "\x1b[2F\x1b[2Ka\n\x1b[2Kc\n\x1b[J"


def test_elsewhere_only_the_lines_that_changed_are_printed() -> None:
    stream = io.StringIO()
    screen = Screen(stream, redraw=False)

    screen.show(["head", "a QUEUED", "b PENDING"])
    screen.show(["head", "a COMPLETED", "b PENDING"])

    assert stream.getvalue() == "head\na QUEUED\nb PENDING\na COMPLETED\n"
