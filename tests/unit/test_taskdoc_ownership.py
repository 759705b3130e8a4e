"""The task-document protocol lives in one module: no other code names its fields.

Every string literal in libs/ and services/ that names a bookkeeping field of the task
document (``exec`` and its keys, the outbox, ``seq``, the cancel and parent flags, the
fold revision, the recount marks, the dead-letter markers) must be inside
``taskcore.taskdoc``. Reading them elsewhere goes through ``ExecState``; writing them
through ``TaskDocuments``' operations.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "libs/taskcore/src/taskcore/taskdoc"
PROTOCOL_FIELD = re.compile(
    r"^(exec|outbox)(\..+)?$|^dlq\..+$"
    r"|^(seq|outbox_at_ms|cancel_cascaded|children_settled|fold_rev|request_hash"
    r"|subtasks_marked|subtasks_counted|subtasks_marked_ms|subtasks_changed_ms)$"
)


def _sources() -> list[Path]:
    return [
        path
        for base in ("libs", "services")
        for path in (ROOT / base).rglob("*.py")
        if OWNER not in path.parents
    ]


def _protocol_literals(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and PROTOCOL_FIELD.match(node.value)
    ]


def test_no_code_outside_the_task_document_module_names_its_fields() -> None:
    offenders = [hit for path in _sources() for hit in _protocol_literals(path)]
    assert offenders == [], "\n".join(offenders)


def test_the_check_recognises_a_protocol_filter(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('q = {"exec.open": True, "seq": 1, "outbox.x": ""}\nname = "execute"\n')
    assert len(_protocol_literals(sample, tmp_path)) == 3
