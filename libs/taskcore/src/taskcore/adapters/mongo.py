"""MongoDB adapter: the client, the collections, their indexes, and document mapping.

Only MongoDB features the nx-27017 stand-in verifies are used on correctness paths (see
``../shared/MONGO-STANDIN.md``): single-document atomic updates, unique indexes, bulk
writes with per-operation errors. No multi-document transactions anywhere: every
store-then-publish step keeps its pending messages in an outbox inside the same document.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import bson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from taskcore import metrics
from taskcore.domain.clock import to_ms
from taskcore.domain.events import TaskEvent
from taskcore.domain.task import Task
from taskcore.listing import index_fields
from taskcore.taskdoc import state as taskdoc_fields
from taskcore.taskdoc.documents import TaskDocuments
from taskcore.usage import ledger

Doc = dict[str, Any]

# Fields of the task document that the fold owns. Everything else on the document
# (``exec``, ``outbox``, ``seq``, ``request_hash``...) belongs to the task-document protocol
# (``taskcore.taskdoc``) and is never touched by a projection write.
PROJECTION_FIELDS: tuple[str, ...] = tuple(f for f in Task.model_fields if f != "id")
# What a fold writes: a parent's ``subtasks`` counters and ``descendant_usage`` are derived
# from its children by their own updates, so a fold of the parent's events must not
# overwrite them.
# ``created_at`` never changes after the insert, and re-setting it would turn it into a
# string on the stand-in (see EPOCH_MS), breaking created-time filters.
FOLD_FIELDS: tuple[str, ...] = (
    *(
        f
        for f in PROJECTION_FIELDS
        if f not in ("subtasks", "workflow", "descendant_usage", "created_at")
    ),
    "finished_ms",
)

# Times that queries compare (leases, outbox ages) are kept as epoch milliseconds: the
# nx-27017 stand-in stores a datetime written by $set as a string, which then matches no
# range query (inserted datetimes are fine). Integers behave the same on both.
# A lease that expired long ago: documents start with it, so claims need no $exists.
EPOCH_MS = 0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _CommandCounter(monitoring.CommandListener):
    """Counts round trips, and the documents they read and write, so benchmarks report
    them counted rather than estimated. With ``bytes_written`` it also measures each
    write command's size (an extra BSON encoding: for benchmarks, off by default)."""

    _IGNORED = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions"})
    _WRITES = frozenset({"insert", "update", "delete", "findAndModify"})

    def __init__(self, *, bytes_written: bool = False) -> None:
        self._bytes_written = bytes_written
        # The collection of each command in flight: its reply does not name it.
        self._collections: dict[tuple[object, int], str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in self._IGNORED:
            return
        metrics.STORE_COMMANDS.labels(name).inc()
        if self._bytes_written and name in self._WRITES:
            metrics.STORE_BYTES_WRITTEN.inc(len(bson.encode(event.command)))
        collection = event.command.get("collection" if name == "getMore" else name)
        if isinstance(collection, str):
            self._collections[(event.connection_id, event.request_id)] = collection

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        collection = self._collections.pop((event.connection_id, event.request_id), "")
        written, read = documents_touched(event.command_name, event.reply)
        if written:
            metrics.STORE_DOCUMENTS.labels("written", collection).inc(written)
        if read:
            metrics.STORE_DOCUMENTS.labels("read", collection).inc(read)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._collections.pop((event.connection_id, event.request_id), None)


def documents_touched(command: str, reply: Any) -> tuple[int, int]:
    """How many documents a command's reply says it wrote and read."""
    if command in ("insert", "delete"):
        return int(reply.get("n", 0)), 0
    if command == "update":
        return int(reply.get("nModified", 0)), 0
    if command == "findAndModify":
        found = 1 if reply.get("value") is not None else 0
        return found, found
    if command in ("find", "aggregate", "getMore"):
        cursor = reply.get("cursor") or {}
        return 0, len(cursor.get("firstBatch") or cursor.get("nextBatch") or ())
    return 0, 0


# PyMongo's monitor times its heartbeats by connectTimeoutMS, and a heartbeat that times
# out clears the pool and interrupts the operations in flight. A short value turns a store
# that pauses for a few seconds (a checkpoint, an election) into failed writes all over;
# PyMongo's own default keeps them waiting instead.
CONNECT_TIMEOUT_MS = 20_000


def connect_mongo(
    url: str, *, timeout_ms: int = 5000, bytes_written: bool = False
) -> AsyncMongoClient[Doc]:
    """``timeout_ms`` bounds server selection: how long an operation waits for a store
    that cannot be reached at all, before it fails. ``bytes_written`` turns on the
    command-size accounting the benchmarks print."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=CONNECT_TIMEOUT_MS,
        uuidRepresentation="standard",
        event_listeners=[_CommandCounter(bytes_written=bytes_written)],
    )


class Store:
    """The database handle and its collections. Indexes are created by ``ensure_indexes``."""

    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[db_name]
        self.tasks: AsyncCollection[Doc] = self.db["tasks"]
        self.events: AsyncCollection[Doc] = self.db["task_events"]
        self.dead_letters: AsyncCollection[Doc] = self.db["dead_letters"]
        self.quotas: AsyncCollection[Doc] = self.db["quotas"]
        self.limits: AsyncCollection[Doc] = self.db["provider_limits"]
        # One row per provider call, by event id (taskcore.usage.ledger), and the users'
        # budget counters (taskcore.usage.budgets).
        self.usage: AsyncCollection[Doc] = self.db["usage_ledger"]
        self.budgets: AsyncCollection[Doc] = self.db["budgets"]
        # The task documents' bookkeeping goes through here only (taskcore.taskdoc).
        self.documents = TaskDocuments(self.tasks)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def is_standin(self) -> bool:
        """Whether the server is the nx-27017 stand-in rather than MongoDB."""
        info = await self.client.admin.command("buildInfo")
        return bool(info.get("process") == "nx_27017")

    async def ensure_indexes(self) -> None:
        await self.events.create_indexes(
            [
                IndexModel([("task_id", ASCENDING), ("sequence", ASCENDING)], unique=True),
                # Progress events carry expires_at; lifecycle events do not and are kept.
                IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
            ]
        )
        await self.tasks.create_indexes(
            [
                # Every index costs each write of a task document (the stand-in recomputes
                # them all): listing has its own (ensure_listing_indexes), and nothing
                # queries by root or by status alone.
                IndexModel([("parent_task_id", ASCENDING), ("status", ASCENDING)]),
                # The task document protocol's sweeps (taskcore.taskdoc).
                IndexModel([(taskdoc_fields.OUTBOX_AT, ASCENDING)]),
                IndexModel([("awaiting_children", ASCENDING)]),
                IndexModel([(taskdoc_fields.MARKED_AT, ASCENDING)]),
                IndexModel([(taskdoc_fields.DUE_AT, ASCENDING)]),
                # Retention's sweep for roots finished long ago.
                IndexModel([("finished_ms", ASCENDING)]),
            ]
        )
        await self.dead_letters.create_indexes(
            [IndexModel([("dead_lettered_at", DESCENDING)]), IndexModel([("task_id", ASCENDING)])]
        )
        await self.usage.create_indexes(ledger.INDEXES)
        await self.budgets.create_indexes(
            [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]
        )

    async def close(self) -> None:
        await self.client.close()


async def count_matching(collection: AsyncCollection[Doc], query: Doc) -> int:
    """How many documents match ``query``: ``count_documents`` by a ``$count`` stage.

    PyMongo's ``count_documents`` groups on a constant ``_id``, which the nx-27017
    stand-in runs by loading every document of the collection (350 ms at 20,000 tasks,
    whatever the indexes); a ``$count`` stage is served by the index there as on
    MongoDB (1 ms).
    """
    rows = await (await collection.aggregate([{"$match": query}, {"$count": "n"}])).to_list(1)
    return int(rows[0]["n"]) if rows else 0


def task_to_doc(task: Task) -> Doc:
    doc = task.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc["status"] = task.status.value
    # When it finished, as a number retention's range query can use (a $set datetime
    # is a string on the stand-in, see EPOCH_MS); derived, so the fold keeps it right.
    doc["finished_ms"] = to_ms(task.finished_at) if task.finished_at is not None else None
    doc.update(index_fields(task.id, task.created_at, task.labels))  # for listing
    return doc


def projection_of(task: Task) -> Doc:
    """The fold-owned fields, for a ``$set`` that leaves the rest of the document alone."""
    doc = task_to_doc(task)
    return {f: doc[f] for f in FOLD_FIELDS}


def doc_to_task(doc: Doc) -> Task:
    fields = {f: doc[f] for f in PROJECTION_FIELDS if f in doc}
    return Task.model_validate({"id": doc["_id"], **fields})


def event_to_doc(event: TaskEvent, *, expires_at: datetime | None = None) -> Doc:
    doc = event.model_dump(mode="python")
    doc["_id"] = doc.pop("event_id")
    doc["type"] = event.type.value
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def doc_to_event_dict(doc: Doc) -> Doc:
    """A stored event as the raw dict the upcaster takes."""
    raw = {k: v for k, v in doc.items() if k not in ("_id", "expires_at")}
    raw["event_id"] = doc["_id"]
    return raw
