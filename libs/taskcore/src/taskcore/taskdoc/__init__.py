"""The task document's protocol: one module that owns every field of a task document
besides the projection (``exec``, ``seq``, the outbox, cancel flags, recount marks...).

- ``state``: the field names and ``ExecState``, a typed view of them;
- ``operations``: each conditional operation as data (filter + update), with its pure
  twin (``Op.matches`` / ``Op.apply``, evaluated by ``matching``);
- ``documents``: ``TaskDocuments``, the adapter that sends them to MongoDB.

No other module writes a MongoDB filter or update on these fields
(tests/unit/test_taskdoc_ownership.py checks it).
"""

from taskcore.taskdoc.documents import Claim, ClaimRefused, Finish, Inserted, TaskDocuments
from taskcore.taskdoc.operations import (
    SEQUENCE_BLOCK,
    Ending,
    Op,
    Refusal,
    ReplayMode,
    outbox_entries,
)
from taskcore.taskdoc.state import (
    BOOKKEEPING_FIELDS,
    NEVER_DISPATCH,
    STATE_FIELDS,
    WITHOUT_OUTBOX,
    ExecState,
)

__all__ = [
    "BOOKKEEPING_FIELDS",
    "NEVER_DISPATCH",
    "SEQUENCE_BLOCK",
    "STATE_FIELDS",
    "WITHOUT_OUTBOX",
    "Claim",
    "ClaimRefused",
    "Ending",
    "ExecState",
    "Finish",
    "Inserted",
    "Op",
    "Refusal",
    "ReplayMode",
    "TaskDocuments",
    "outbox_entries",
]
